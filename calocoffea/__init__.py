"""calocoffea: calibration and energy reconstruction for highly granular calorimeters.

The flow, one entry point a line:

- ``calocoffea.geometry.get_geometry(name)`` -- a detector as data (sections, layers,
  cell grids, cell ids, X0 / R_M / lambda_I / sampling fraction); built-ins in
  ``calocoffea.geometries``, more through the ``calocoffea.geometries`` entry points.
- ``calocoffea.simulation.Simulation`` / ``calocoffea.simulation.run.simulate`` -- fast
  parametrised showers (GFlash EM, hadrons with f_em and e/h, Landau muons) with MC truth.
- ``calocoffea.io.write_events`` / ``read_events`` / ``open_events`` -- the ROOT TTree
  ``events`` (scalars + ``hit_*`` branches sharing the counter ``nhit``), stage and units
  stored in the file and checked on reading.
- ``calocoffea.schema.CaloSchema`` -- coffea NanoEvents schema: ``events.hits.energy`` etc.
- ``calocoffea.fitting`` -- Gaussian core, RMS/median, resolution a/sqrt(E) (+) b/E (+) c,
  linearity, MIP most probable value (iminuit).
- ``calocoffea.showershape`` -- longitudinal profile, shower maximum, containment radius.
- ``calocoffea.registry`` -- entry-point plugin discovery shared by every plugin family.
- ``calocoffea.exceptions`` -- every error and warning.
- ``calocoffea`` command line: ``simulate``, ``info``, ``geometries``.
"""

from __future__ import annotations

__version__ = "0.1.0"
