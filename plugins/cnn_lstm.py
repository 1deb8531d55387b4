"""``cnn_lstm``: energy from the cell images with a CNN per super-layer and an LSTM along
depth (seed 000), run from ONNX.

What to use when:

- :class:`CnnLstm` (``cnn_lstm``) -- electrons (or photons) in a calorimeter with one
  square-grid section (``cepc_ahcal``): a network that learns from the whole hit pattern how
  the calibrated sum misses the energy (clipped and saturated hits, sampling fluctuations)
  and corrects it event by event. Reconstruct with
  ``calocoffea reconstruct IN --method cnn_lstm --option model=MODEL.onnx`` (or
  ``--method MODEL.onnx``); train a model with
  ``calocoffea train --model cnn_lstm FILES... -o MODEL.onnx [--option key=value ...]``
  (options: :class:`calocoffea.models.cnn_lstm.CnnLstmOptions`; needs the ``train`` extra).
  With ``--option target=DATA1.root,DATA2.root`` the training is domain-adversarial (DANN,
  seed 000): the network also learns from unlabelled calibrated files of the target domain
  (data) to give features that do not tell MC from data; the model file holds the
  regression alone and runs like any other.
- ``sum`` is the baseline it is measured against (the card records both on the test split);
  ``gbr`` learns from layer sums and shower shapes only and runs on any geometry.

Inference is :class:`~calocoffea.models.reconstruction.OnnxReconstruction`: onnxruntime in
batches aligned to global entries; this module and inference never import torch.
"""

from __future__ import annotations

from typing import ClassVar

from calocoffea.models.reconstruction import OnnxReconstruction

#: Hochreiter & Schmidhuber, Long Short-Term Memory (seed 000 gives no reference).
URL = "https://doi.org/10.1162/neco.1997.9.8.1735"


class CnnLstm(OnnxReconstruction):
    """Event energy [GeV] from ``cell_images``: CNN per super-layer, LSTM along depth."""

    description: ClassVar[str] = (
        "CNN on the cell image of each super-layer, LSTM along depth, energy as a learnt "
        "correction of the calibrated sum (seed 000); ONNX model (option model=PATH)"
    )
    url: ClassVar[str] = URL
    model_name: ClassVar[str] = "cnn_lstm"
    trainer: ClassVar[str] = "calocoffea.models.cnn_lstm:train"


__all__ = ["CnnLstm"]
