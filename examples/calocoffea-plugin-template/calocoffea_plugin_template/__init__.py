"""Template of a calocoffea plugin package.

- :class:`~calocoffea_plugin_template.calibration.LayerEqualisation` -- calibration method
  ``layer_equalisation``: one constant per layer that equalises the muon response.
- :class:`~calocoffea_plugin_template.reconstruction.HitCount` -- reconstruction
  ``hit_count``: energy from the number of hits (a digital-calorimeter estimator).

calocoffea finds both through the entry points in ``pyproject.toml``; nothing here
registers itself on import.
"""

__version__ = "0.1.0"
