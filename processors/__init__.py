"""coffea processors of calocoffea (columnar, stateless between chunks).

Imported as ``calocoffea.processors``; the source folder is ``processors/`` at the top of
the repository (the design card's layout). The digitise, calibrate, reconstruct and
histogram processors arrive with the processor issue; the events they read are those of
:mod:`calocoffea.io` through :class:`calocoffea.schema.CaloSchema`.
"""
