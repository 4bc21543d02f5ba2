"""Inference backends: a float32 ``NCHW`` batch in, logits out (``N x num_labels``)."""

from emovit.backends._base import Backend
from emovit.backends.torch_backend import TorchBackend

__all__ = ["Backend", "TorchBackend"]
