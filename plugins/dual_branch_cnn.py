"""``dual_branch_cnn``: the EM fractions of hadron showers in the ECAL and the HCAL from 3D
voxel grids (seed 001), and the energy from the e/h formula, run from ONNX.

What to use when:

- :class:`DualBranchCnn` (``dual_branch_cnn``) -- pions (hadrons) in a calorimeter with an
  ECAL and an HCAL section (``calice_siw_ecal_ahcal``): a network reads each section's voxel
  grid around the shower and the section energies, predicts f_em per section, and weights
  each section's energy by e/h / (1 + f_em (e/h - 1)): software compensation with the EM
  fraction learnt from the whole shower. Reconstruct with
  ``calocoffea reconstruct IN --method dual_branch_cnn --option model=MODEL.onnx`` (or
  ``--method MODEL.onnx``); train with
  ``calocoffea train --model dual_branch_cnn FILES... -o MODEL.onnx [--option key=value ...]``
  (options: :class:`calocoffea.models.dual_branch.DualBranchOptions`; needs the ``train``
  extra; the files must carry the simulation's ``fem_ecal`` and ``fem_hcal``).
- ``software_compensation`` weights hits by their energy density with 9 parameters; it
  needs no torch and little data. ``sum`` is the uncompensated baseline.

The model's graph also outputs ``fem_ecal`` and ``fem_hcal``; ``calocoffea reconstruct``
writes the card's output, the energy. Inference is
:class:`~calocoffea.models.reconstruction.OnnxReconstruction`; this module and inference
never import torch.
"""

from __future__ import annotations

from typing import ClassVar

from calocoffea.models.reconstruction import OnnxReconstruction

#: The reference seed 001 cites for E_ECAL + E_HCAL (the seed itself gives no address); the
#: voxel grids and the network follow the seed's ``fill_voxel_vectorized`` and
#: ``TripleHeadFEMNet``.
URL = "https://arxiv.org/abs/2107.10207"


class DualBranchCnn(OnnxReconstruction):
    """Event energy [GeV] from ECAL and HCAL voxel grids: f_em per section, e/h formula."""

    description: ClassVar[str] = (
        "dual-branch 3D CNN on ECAL and HCAL voxel grids predicting f_em per section; energy "
        "from the e/h formula (seed 001); ONNX model (option model=PATH)"
    )
    url: ClassVar[str] = URL
    model_name: ClassVar[str] = "dual_branch_cnn"
    trainer: ClassVar[str] = "calocoffea.models.dual_branch:train"


__all__ = ["DualBranchCnn"]
