"""`calocoffea plugins`: the installed geometries, calibration methods and reconstructions.

``plugins list`` shows every plugin with its package and whether it loads; ``plugins show
NAME`` shows one in detail, with the typed options of a method. A broken plugin is listed
with its error and does not stop the others (the exit status stays 0).
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import textwrap
from typing import Any

from calocoffea import registry


def add_parser(sub: Any) -> None:
    p = sub.add_parser("plugins", help="list installed plugins", description=__doc__)
    commands = p.add_subparsers(dest="plugins_command", required=True, metavar="COMMAND")

    listing = commands.add_parser("list", help="every installed plugin, one per line")
    listing.add_argument("--family", choices=sorted(registry.GROUPS), help="only this family")
    listing.set_defaults(handler=run_list)

    show = commands.add_parser("show", help="one plugin in detail, with its options")
    show.add_argument("name", help="the plugin's name (as in `calocoffea plugins list`)")
    show.add_argument("--family", choices=sorted(registry.GROUPS), help="only this family")
    show.set_defaults(handler=run_show)


def run_list(args: argparse.Namespace) -> int:
    infos = registry.inventory(args.family)
    rows = [(i.family, i.name, i.status, i.source, i.description) for i in infos]
    header = ("FAMILY", "NAME", "STATUS", "PACKAGE", "DESCRIPTION")
    widths = [max(len(r[k]) for r in [header, *rows]) for k in range(len(header))]
    for row, info in zip([header, *rows], [None, *infos], strict=True):
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
        if info is not None and info.status == "broken":
            print(" " * (widths[0] + 2) + f"error: {info.error}")
    _summary(infos)
    return 0


def run_show(args: argparse.Namespace) -> int:
    infos = registry.find(args.name, args.family)
    for k, info in enumerate(infos):
        if k:
            print()
        _show(info)
    return 0


def _summary(infos: list[registry.PluginInfo]) -> None:
    broken = [f"{i.family}/{i.name}" for i in infos if i.status == "broken"]
    if broken:
        print(
            f"{len(broken)} of {len(infos)} plugins are broken ({', '.join(broken)}): "
            "reinstall the packages that provide them, or uninstall them"
        )
    else:
        print(f"{len(infos)} plugin{'s' * (len(infos) != 1)}, all load")


def _show(info: registry.PluginInfo) -> None:
    print(f"{info.name}  ({registry.SINGULAR.get(info.family, info.family)})")
    obj = info.obj
    rows = {
        "status": info.status,
        "error": info.error,
        "object": info.value,
        "package": info.source,
        "description": info.description,
        "url": info.url,
    }
    if isinstance(obj, type):
        for key in ("run_type", "input_stage", "needs_events"):
            rows[key] = str(getattr(obj, key, ""))
    for key, value in rows.items():
        if value:
            print(f"    {key + ':':<14}{value}")
    options = getattr(obj, "Options", None)
    if isinstance(options, type) and dataclasses.is_dataclass(options):
        fields = dataclasses.fields(options)
        print("    options:" + ("" if fields else "      (none)"))
        docs = _attribute_docs(options)
        for f in fields:
            print(f"      {f.name}: {_type_name(f.type)} = {_default(f)}")
            if f.name in docs:
                print(textwrap.indent(docs[f.name], " " * 10))
    doc = inspect.getdoc(obj) if obj is not None else None
    if doc and doc.strip() != info.description:
        print(textwrap.indent(doc, "    "))


def _type_name(annotation: Any) -> str:
    if isinstance(annotation, str):  # postponed annotations stay strings
        return annotation
    return getattr(annotation, "__name__", repr(annotation))


def _default(f: dataclasses.Field[Any]) -> str:
    if f.default is not dataclasses.MISSING:
        return repr(f.default)
    if f.default_factory is not dataclasses.MISSING:
        return repr(f.default_factory())
    return "(required)"


def _attribute_docs(cls: type) -> dict[str, str]:
    """The documentation of each field of a dataclass and of the dataclasses it inherits
    from (a subclass's own comment wins)."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if klass is not object and dataclasses.is_dataclass(klass):
            docs.update(_own_attribute_docs(klass))
    return docs


def _own_attribute_docs(cls: type) -> dict[str, str]:
    """The documentation of each field a class body declares, as Sphinx reads it: ``#:``
    comments above the field or a string below it; empty when the source is not available."""
    try:
        source = textwrap.dedent(inspect.getsource(cls))
        tree = ast.parse(source)
    except (OSError, TypeError, SyntaxError):
        return {}
    lines = source.splitlines()
    body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
    docs: dict[str, str] = {}
    for node, following in zip(body, [*body[1:], None], strict=True):
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            continue
        comments: list[str] = []
        for line in reversed(lines[: node.lineno - 1]):
            if not line.strip().startswith("#:"):
                break
            comments.insert(0, line.strip()[2:].strip())
        if comments:
            docs[node.target.id] = " ".join(comments)
        elif (
            isinstance(following, ast.Expr)
            and isinstance(following.value, ast.Constant)
            and isinstance(following.value.value, str)
        ):
            docs[node.target.id] = inspect.cleandoc(following.value.value)
    return docs
