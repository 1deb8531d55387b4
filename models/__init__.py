"""Network architectures, their training (torch, the ``train`` extra) and the shipped
ONNX models with their model cards.

Imported as ``calocoffea.models``; the source folder is ``models/``. Inference runs from
ONNX with onnxruntime and never imports torch.
"""
