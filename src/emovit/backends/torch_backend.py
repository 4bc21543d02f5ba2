"""PyTorch backend: the transformers model under `torch.inference_mode`, in float32 or, opt-in,
with bfloat16 autocast (GPUs, and CPUs with native bf16: AVX512_BF16 or AMX)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

if TYPE_CHECKING:
    from emovit.models import LoadedModel

__all__ = ["Precision", "TorchBackend", "cpu_has_bf16"]

Precision = Literal["fp32", "bf16"]
PRECISIONS = ("fp32", "bf16")


def cpu_has_bf16(cpuinfo: str | Path = "/proc/cpuinfo") -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512_BF16 or AMX-BF16); without it
    bf16 is emulated and slower than float32. False where the flags cannot be read."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return False
    lines = [line for line in text.splitlines() if line.startswith("flags")]
    flags = lines[0].split(":", 1)[1].split() if lines else []
    return "avx512_bf16" in flags or "amx_bf16" in flags


class TorchBackend:
    """Runs a loaded transformers model on its device.

    Args:
        loaded: the model (`emovit.models.load_model`).
        precision: ``fp32`` (default, exact) or ``bf16`` (autocast; opt-in, on a GPU or a
            CPU with native bf16 only, where it is faster; answers can differ slightly).
        fast_vit: for a ``ViTForImageClassification``, compute the last layer for the [CLS]
            token only (the same logits, ~7 % less work for ViT-B/16).
    """

    name = "torch"

    def __init__(self, loaded: LoadedModel, *, precision: Precision = "fp32", fast_vit: bool = True) -> None:
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be fp32 or bf16, got {precision!r}")
        if precision == "bf16" and loaded.device == "cpu" and not cpu_has_bf16():
            raise ValueError(
                "precision bf16 needs a GPU or a CPU with native bfloat16 (AVX512_BF16 or AMX); "
                "this CPU has neither, so bf16 would be slower than fp32 here: use fp32"
            )
        self.loaded = loaded
        self.precision = precision
        self._forward = None
        first = next(loaded.model.parameters(), None) if loaded.model is not None else None
        self._dtype = first.dtype if first is not None and first.is_floating_point() else None
        if fast_vit and loaded.model is not None:
            from emovit.backends._vit import cls_only_last_layer

            self._forward = cls_only_last_layer(loaded.model)

    def __call__(self, pixel_values: np.ndarray) -> np.ndarray:
        import contextlib

        import torch

        device = torch.device(self.loaded.device)
        autocast = (
            torch.autocast(device.type, dtype=torch.bfloat16)
            if self.precision == "bf16"
            else contextlib.nullcontext()
        )
        with torch.inference_mode(), autocast:
            # in the weights' dtype, as transformers' pipeline does (a checkpoint saved in fp16 or
            # bf16 loads as such; float32 pixels would fail its first layer)
            batch = torch.from_numpy(pixel_values).to(device, dtype=self._dtype)
            if self._forward is not None:
                logits = self._forward(batch)
            else:
                assert self.loaded.model is not None  # torch runs only models with loaded weights
                logits = self.loaded.model(pixel_values=batch).logits
            return logits.float().cpu().numpy()
