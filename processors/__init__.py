"""coffea processors of calocoffea (columnar, stateless between chunks).

Imported as ``calocoffea.processors``; the source folder is ``processors/`` at the top of
the repository (the design card's layout). Run them with :mod:`calocoffea.runner`.

- :class:`~calocoffea.processors.effects.EffectsProcessor` -- detector effects on simulated
  cell energies (MeV -> MeV, truth kept), per-chunk shards.
- :class:`~calocoffea.processors.digitize.DigitizeProcessor` -- MeV -> ADC, per-chunk shards.
- :class:`~calocoffea.processors.calibrate.CalibrateProcessor` -- ADC -> MIP or GeV.
- :class:`~calocoffea.processors.histogram.HistogramProcessor` -- histograms with named axes
  and a cutflow, optionally calibrating raw input on the fly.
- :class:`~calocoffea.processors.collect.CollectProcessor` -- a calibration method's ``collect``
  (or per-chunk event shards for methods that need whole events).
- :class:`~calocoffea.processors.reconstruct.ReconstructProcessor` -- one energy per event.
- :mod:`~calocoffea.processors.common` -- the output layout they share (cutflow, counts,
  ordered, shards).
"""
