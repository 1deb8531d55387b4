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
- ``calocoffea.sources`` -- foreign inputs read as those events: EDM4hep files
  (``calocoffea.edm4hep``, cell IDs decoded by ``calocoffea.cellid``) and flat ntuples through
  a TOML branch map (``calocoffea.branchmap``); ``convert`` and ``native_files``.
- ``calocoffea.schema.CaloSchema`` -- coffea NanoEvents schema: ``events.hits.energy`` etc.
- ``calocoffea.conditions`` -- per-cell detector truth (pedestals, gains, light yield,
  pixels, non-linearity a and b, aging, dead/noisy), drawn once from a seed.
- ``calocoffea.effects`` -- detector effects for pseudo-data on simulated cell energies (seed 003
  biases, seed 002 miscalibration, noise on every cell, bias, zero suppression, dead cells),
  truth kept; ``calocoffea.cellcoords`` gives the rings and angles they depend on.
- ``calocoffea.digitization`` / ``calocoffea.calibration`` -- the SiPM-on-tile chain
  MeV -> p.e. -> pixels -> ADC and back ADC -> MIP -> GeV, on flat hit arrays.
- ``calocoffea.constants`` -- calibration constants with provenance, correctionlib JSON,
  dense per-cell arrays for the hot path.
- ``calocoffea.rng`` -- counter-based random numbers keyed by (seed, file, entry, hit, stream).
- ``calocoffea.processors`` -- coffea processors: digitize, calibrate, histogram, collect,
  reconstruct.
- ``calocoffea.runner`` -- run them on iterative / futures / Dask executors with identical
  results: ``digitize_files``, ``calibrate_files``, ``histogram_files``.
- ``calocoffea.closure`` -- does calibrating digitised hits give back the MC truth?
- ``calocoffea.fitting`` -- Gaussian core, RMS/median, resolution a/sqrt(E) (+) b/E (+) c,
  linearity, MIP most probable value (iminuit).
- ``calocoffea.showershape`` -- longitudinal profile, shower maximum, containment radius.
- ``calocoffea.calibruns`` -- pedestal and LED calibration runs simulated from the conditions.
- ``calocoffea.methods`` -- base classes of calibration methods (``collect`` per chunk, ``fit``
  once) and reconstructions (``predict``), typed options; ``runner.fit_files`` and
  ``runner.reconstruct_files`` run them. Built-ins in ``calocoffea.plugins``: ``pedestal``,
  ``gain_ratio``, ``spe``, ``mip`` (with ``calocoffea.landaugauss``) and ``sum``.
- ``calocoffea.registry`` -- entry-point plugin discovery shared by every plugin family.
- ``calocoffea.scan`` -- per-energy Gaussian cores, resolution and linearity of a beam scan.
- ``calocoffea.plotting`` / ``calocoffea.report`` -- mplhep figures; results.json and a static
  HTML report.
- ``calocoffea.demo`` -- the main job: calibration runs -> constants -> electrons before and
  after calibration and with the true constants -> report.
- ``calocoffea.exceptions`` -- every error and warning.
- ``calocoffea`` command line: ``demo``, ``simulate``, ``effects``, ``calibrun``, ``digitize``,
  ``calibrate apply|fit``, ``histogram``, ``fit resolution``, ``constants nominal``,
  ``conditions draw|show``, ``plugins list|show``, ``convert``, ``info``, ``geometries``.
"""

from __future__ import annotations

__version__ = "0.1.0"
