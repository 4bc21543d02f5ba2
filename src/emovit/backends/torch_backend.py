"""PyTorch backend: the transformers model under `torch.inference_mode`."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from emovit.models import LoadedModel

__all__ = ["TorchBackend"]


class TorchBackend:
    """Runs a loaded transformers model on its device, in float32."""

    name = "torch"

    def __init__(self, loaded: LoadedModel) -> None:
        self.loaded = loaded

    def __call__(self, pixel_values: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            batch = torch.from_numpy(pixel_values).to(self.loaded.device)
            logits = self.loaded.model(pixel_values=batch).logits
            return logits.float().cpu().numpy()
