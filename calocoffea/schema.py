"""coffea NanoEvents schema of calocoffea events files: ``hit_*`` branches become ``events.hits``.

Use it wherever coffea reads an events file (``NanoEventsFactory``, ``processor.Runner``)::

    from coffea.nanoevents import NanoEventsFactory
    events = NanoEventsFactory.from_root(
        {"file.root": "events"}, schemaclass=CaloSchema, mode="eager"
    ).events()
    events.hits.energy      # jagged: one list of hit energies per event
    ak.num(events.hits)     # hits per event
    events.beam_energy      # scalars stay at the top level

Branches ``hit_<field>`` are zipped into a collection ``hits`` of records ``CaloHit``
with fields ``<field>`` (``energy``, ``x``, ``cellid``...). The counter ``nhit`` gives
the collection its offsets and is then dropped: use ``ak.num(events.hits)`` instead
(coffea's NanoAOD schema treats its ``nJet``-style counters the same way).
"""

from __future__ import annotations

from typing import Any, ClassVar

import awkward as ak
import numpy as np
from coffea.nanoevents import transforms
from coffea.nanoevents.methods import base
from coffea.nanoevents.schemas.base import BaseSchema, zip_forms

#: awkward behaviours of calocoffea collections, coffea's base behaviours included.
behavior: dict[Any, Any] = {}
behavior.update(base.behavior)


@ak.mixin_class(behavior)
class CaloHit(base.NanoCollection):
    """One calorimeter hit: cell, position [mm], energy (unit of the file's stage), time [ns]."""

    @property
    def r(self) -> Any:
        """Transverse distance from the beam axis, hypot(x, y) [mm]."""
        return np.hypot(self.x, self.y)


class CaloSchema(BaseSchema):
    """Zips every ``hit_*`` branch into ``events.hits`` (records ``CaloHit``).

    The class-level tables say which branch prefix makes which collection, with
    which record name and which counter; subclass and extend them for other
    jagged collections in the same tree.
    """

    #: branch prefix -> collection name
    collections: ClassVar[dict[str, str]] = {"hit_": "hits"}
    #: collection name -> awkward record name (see :data:`behavior`)
    record_names: ClassVar[dict[str, str]] = {"hits": "CaloHit"}
    #: collection name -> counter branch, consumed as the collection's offsets
    counters: ClassVar[dict[str, str]] = {"hits": "nhit"}

    def __init__(self, base_form: dict[str, Any], *args: Any, **kwargs: Any) -> None:
        super().__init__(base_form, *args, **kwargs)
        branch_forms = dict(zip(self._form["fields"], self._form["contents"], strict=True))
        output = self._build_collections(branch_forms)
        self._form["fields"] = list(output)
        self._form["contents"] = list(output.values())

    def _build_collections(self, branch_forms: dict[str, Any]) -> dict[str, Any]:
        """Top-level forms: untouched scalars, then one zipped form per collection."""
        output = dict(branch_forms)
        for prefix, name in self.collections.items():
            members = {
                key[len(prefix) :]: form
                for key, form in branch_forms.items()
                if key.startswith(prefix) and form["class"].startswith("ListOffsetArray")
            }
            if not members:
                continue
            for key in members:
                del output[prefix + key]
            counter = output.pop(self.counters[name], None) if name in self.counters else None
            output[name] = self._zip(name, members, counter)
        return output

    def _zip(
        self, name: str, members: dict[str, Any], counter: dict[str, Any] | None
    ) -> dict[str, Any]:
        """One jagged record form; offsets from the counter when the tree has one."""
        offsets = None if counter is None else transforms.counts2offsets_form(counter)
        form = zip_forms(members, name, record_name=self.record_names.get(name), offsets=offsets)
        form["content"].setdefault("parameters", {})["collection_name"] = name
        return form

    @classmethod
    def behavior(cls) -> dict[Any, Any]:
        """Behaviours needed by this schema: coffea's base ones and ``CaloHit``."""
        return behavior
