"""The model input of a training run: the checkpoint's own preprocessing, on the training device.

Training and inference share one definition of the input (`emovit.preprocess.Preprocessor`,
built from the checkpoint's ``preprocessor_config.json``): images are resized by
`Preprocessor.resize` (the same Pillow call) when they are decoded, batches become float pixel
values on the device for augmentation, and `Preprocessor.normalize_tensor` (the arithmetic of
`Preprocessor.normalize`) turns them into the model input.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from emovit.data import LabelledImages, Sample, decode_samples
from emovit.errors import TrainError
from emovit.preprocess import Preprocessor, UnsupportedProcessorError

__all__ = ["TrainingInput"]


class TrainingInput:
    """Decoded images → model input, for one model (the student, or a distillation teacher).

    Without augmentation a batch equals the inference tensors of the same images
    (``Preprocessor(...)(images)``).

    Args:
        preprocessor: the model's preprocessing; its output size must be fixed.
        device: where batches are made.
        grey: the model is trained on grey faces: colour images are converted as they are
            decoded (`emovit.faces.to_grey`, as inference does before preprocessing).

    Examples:
        >>> inputs = TrainingInput(Preprocessor(size=(4, 4)))
        >>> image = inputs.prepare(np.zeros((9, 7, 3), np.uint8))  # as decoded: resized
        >>> inputs(np.stack([image, image])).shape
        torch.Size([2, 3, 4, 4])
    """

    def __init__(
        self, preprocessor: Preprocessor, device: torch.device | str = "cpu", *, grey: bool = False
    ) -> None:
        size = preprocessor.output_size
        if size is None:
            raise TrainError(
                "the model's processor resizes to the image's aspect ratio; training needs a fixed size"
            )
        self.preprocessor = preprocessor
        self.device = torch.device(device)
        self.grey = grey
        self.size: tuple[int, int] = size

    @classmethod
    def from_config(
        cls,
        processor: Mapping[str, Any],
        device: torch.device | str = "cpu",
        *,
        grey: bool = False,
        model: str = "the model",
    ) -> TrainingInput:
        """From a ``preprocessor_config.json`` mapping (`TrainError` for what emovit does not
        implement: training must reproduce the inference input exactly)."""
        try:
            return cls(Preprocessor.from_config(processor), device, grey=grey)
        except UnsupportedProcessorError as exc:
            raise TrainError(
                f"{model}: its preprocessor_config.json uses an option emovit's preprocessing does "
                f"not implement ({exc}), so training could not reproduce its inference input"
            ) from None

    def prepare(self, image: np.ndarray) -> np.ndarray:
        """One decoded ``uint8`` image at the model's input size (grey first for a grey model)."""
        if self.grey:
            from emovit.faces import to_grey

            image = to_grey(image)
        return self.preprocessor.resize(image)

    def decode(
        self,
        samples: Sequence[Sample],
        classes: Sequence[str],
        *,
        targets: np.ndarray | None = None,
        threads: int | None = None,
    ) -> LabelledImages:
        """Decode `samples` once, each through `prepare` (see `emovit.data.decode_samples`)."""
        return decode_samples(samples, classes, transform=self.prepare, targets=targets, threads=threads)

    def pixels(self, images: np.ndarray) -> torch.Tensor:
        """``N x H x W x 3`` ``uint8`` images → float ``NCHW`` pixel values (0..255) on the device,
        what augmentation works on."""
        return torch.from_numpy(np.ascontiguousarray(images)).to(self.device).permute(0, 3, 1, 2).float()

    def as_trained(self, pixels: torch.Tensor) -> torch.Tensor:
        """Pixel values (``NCHW``, augmented or not) as this model was trained to see them: grey
        in three equal channels for a grey model (Pillow's ``L`` luma, unrounded), else as given.
        A grey distillation teacher sees a colour student's batch this way."""
        if not self.grey:
            return pixels
        weights = torch.tensor([0.299, 0.587, 0.114], dtype=pixels.dtype, device=pixels.device)
        luma = (pixels * weights.view(1, 3, 1, 1)).sum(dim=1, keepdim=True)
        return luma.expand(-1, 3, -1, -1)

    def model_input(self, pixels: torch.Tensor) -> torch.Tensor:
        """Pixel values (augmented or not) → the model input: the preprocessor's rescale and
        normalize."""
        return self.preprocessor.normalize_tensor(pixels)

    def __call__(self, images: np.ndarray) -> torch.Tensor:
        """The model input of decoded images, without augmentation."""
        return self.model_input(self.pixels(images))
