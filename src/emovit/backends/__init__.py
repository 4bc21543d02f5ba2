"""Inference backends: a float32 ``NCHW`` batch in, logits out (``N x num_labels``)."""

from emovit.backends._base import Backend
from emovit.backends.onnx_backend import EXPORT_INFO, ONNX_FILE, OnnxBackend, physical_cores
from emovit.backends.torch_backend import TorchBackend

__all__ = ["EXPORT_INFO", "ONNX_FILE", "Backend", "OnnxBackend", "TorchBackend", "physical_cores"]
