"""Built-in calibration methods and reconstruction methods, registered as entry points.

Imported as ``calocoffea.plugins``; the source folder is ``plugins/``. Each method is
declared in ``pyproject.toml`` exactly as a third-party plugin would be and found through
:mod:`calocoffea.registry`.
"""
