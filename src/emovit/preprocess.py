"""Model input from a checkpoint's ``preprocessor_config.json``: resize, crop, rescale, normalize.

emovit reproduces the arithmetic of transformers' own image processor (its PIL backend: a
Pillow resize of the ``uint8`` image with the configured resample, an optional centre crop,
rescale, then normalize) so that a checkpoint sees exactly the input it was trained on, within
1e-5, while batching the arithmetic in one vectorised step. Grey input is already three
channels here (`emovit.imageio` decodes everything to RGB).

Training uses the same definition: images are resized with `Preprocessor.resize` when they are
decoded, and batches (augmented or not) are rescaled and normalized on the training device by
`Preprocessor.normalize_tensor`, which runs the very arithmetic of `Preprocessor.normalize`.

Configurations this module does not cover (``longest_edge``, ``crop_pct``, padding, …) raise
`UnsupportedProcessorError`; `create_preprocessor` then falls back to transformers' processor.

Examples:
    >>> import numpy as np
    >>> pre = Preprocessor.from_config({"size": {"height": 8, "width": 8}})
    >>> pre([np.zeros((20, 30, 3), np.uint8)]).shape
    (1, 3, 8, 8)
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import numpy as np

from emovit.errors import ModelLoadError

if TYPE_CHECKING:
    import torch

__all__ = [
    "ImagePreprocessor",
    "Preprocessor",
    "TransformersPreprocessor",
    "UnsupportedProcessorError",
    "create_preprocessor",
    "read_processor_config",
]

_IMAGENET_STANDARD = (0.5, 0.5, 0.5)
# Keys whose presence (with a non-default value) means the config needs transformers' processor.
_UNSUPPORTED_TRUE = ("do_pad", "do_reduce_labels", "do_flip_channel_order")


_Array = TypeVar("_Array", "np.ndarray", "torch.Tensor")


class UnsupportedProcessorError(ValueError):
    """The processor config uses an option that `Preprocessor` does not implement."""


class ImagePreprocessor(Protocol):
    """Turns RGB ``uint8`` images into a float32 ``NCHW`` batch for the model."""

    def __call__(self, images: Sequence[np.ndarray]) -> np.ndarray: ...


def read_processor_config(folder: str | Path) -> dict[str, Any]:
    """Read ``preprocessor_config.json`` from a model folder (`ModelLoadError` when absent)."""
    path = Path(folder) / "preprocessor_config.json"
    try:
        config = dict(json.loads(path.read_text(encoding="utf-8")))
    except FileNotFoundError:
        raise ModelLoadError(
            f"{folder}: no preprocessor_config.json; emovit needs the checkpoint's image "
            "processor settings (size, resample, mean, std) to prepare its input"
        ) from None
    except (OSError, ValueError, TypeError) as exc:
        raise ModelLoadError(f"{path}: cannot read the processor config ({exc})") from None
    if "auto_map" in config:
        raise ModelLoadError(
            f"{path}: the image processor needs its own Python code (auto_map); emovit never runs "
            "remote code (trust_remote_code), use a processor transformers ships"
        )
    return config


def with_input_size(config: Mapping[str, Any], image_size: int) -> dict[str, Any]:
    """A copy of processor `config` that feeds the model `image_size` x `image_size` pixels: the
    resize target (and the centre crop, when there is one) set to that size. Used when a model's
    input size is overridden (``--set image_size=80``), with or without ``--init``."""
    side = int(image_size)
    if side < 1:
        raise ValueError(f"image_size must be a positive number of pixels, got {image_size!r}")
    config = dict(config)
    config["size"] = {"height": side, "width": side}
    if config.get("do_center_crop") and "crop_size" in config:
        config["crop_size"] = {"height": side, "width": side}
    return config


def _triple(value: Any, name: str) -> tuple[float, float, float]:
    if isinstance(value, int | float):
        return (float(value),) * 3
    values = tuple(float(v) for v in value)
    if len(values) != 3:
        raise UnsupportedProcessorError(f"{name} must have 3 values, got {len(values)}")
    return values


@dataclass(frozen=True)
class Preprocessor:
    """Vectorised equivalent of transformers' image processors for ViT-style configs.

    Attributes:
        size: ``(height, width)`` to resize to, or None when `shortest_edge` is used.
        shortest_edge: resize the short side to this length, keeping the aspect ratio.
        resample: Pillow resample filter id (0 nearest, 2 bilinear, 3 bicubic, …).
        crop_size: ``(height, width)`` of the centre crop, or None for no crop.
        rescale_factor: multiplier applied to the ``uint8`` pixels (None: no rescale).
        mean, std: per-channel normalisation (None: no normalisation).
    """

    size: tuple[int, int] | None = (224, 224)
    shortest_edge: int | None = None
    resample: int = 2
    crop_size: tuple[int, int] | None = None
    rescale_factor: float | None = 1 / 255
    mean: tuple[float, float, float] | None = _IMAGENET_STANDARD
    std: tuple[float, float, float] | None = _IMAGENET_STANDARD

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Preprocessor:
        """Build from a ``preprocessor_config.json`` mapping (transformers' defaults for ViT)."""
        for key in _UNSUPPORTED_TRUE:
            if config.get(key):
                raise UnsupportedProcessorError(f"{key}=true is not implemented")
        if config.get("crop_pct") not in (None, 1.0):
            raise UnsupportedProcessorError("crop_pct is not implemented")
        size: tuple[int, int] | None = None
        shortest: int | None = None
        if config.get("do_resize", True):
            raw = config.get("size", {"height": 224, "width": 224})
            if isinstance(raw, int):
                raw = {"height": raw, "width": raw}
            if set(raw) == {"height", "width"}:
                size = (int(raw["height"]), int(raw["width"]))
            elif set(raw) == {"shortest_edge"}:
                shortest = int(raw["shortest_edge"])
            else:
                raise UnsupportedProcessorError(f"size {raw!r} is not implemented")
        crop: tuple[int, int] | None = None
        if config.get("do_center_crop", False):
            raw_crop = config.get("crop_size", {"height": 224, "width": 224})
            if isinstance(raw_crop, int):
                raw_crop = {"height": raw_crop, "width": raw_crop}
            crop = (int(raw_crop["height"]), int(raw_crop["width"]))
        resample = config.get("resample", 2)
        if not isinstance(resample, int) or not 0 <= resample <= 5:
            raise UnsupportedProcessorError(f"resample {resample!r} is not a Pillow filter id")
        return cls(
            size=size,
            shortest_edge=shortest,
            resample=resample,
            crop_size=crop,
            rescale_factor=float(config.get("rescale_factor", 1 / 255))
            if config.get("do_rescale", True)
            else None,
            mean=_triple(config.get("image_mean", _IMAGENET_STANDARD), "image_mean")
            if config.get("do_normalize", True)
            else None,
            std=_triple(config.get("image_std", _IMAGENET_STANDARD), "image_std")
            if config.get("do_normalize", True)
            else None,
        )

    @property
    def output_size(self) -> tuple[int, int] | None:
        """The ``(height, width)`` of every output image, or None when it depends on the input."""
        return self.crop_size or self.size

    def input_region(self, height: int, width: int) -> tuple[float, float, float, float]:
        """The part of a ``height x width`` image the model input shows, ``(top, left, height,
        width)`` in the image's pixels: all of it, unless a centre crop cuts the resized image
        (or pads it: the region then reaches past the image)."""
        if self.crop_size is None:
            return 0.0, 0.0, float(height), float(width)
        resized = (
            self._resize_target(height, width)
            if self.size is not None or self.shortest_edge is not None
            else (height, width)
        )
        (crop_h, crop_w), (rh, rw) = self.crop_size, resized
        canvas_h, canvas_w = max(crop_h, rh), max(crop_w, rw)  # `_center_crop`'s arithmetic
        top = (canvas_h - crop_h) // 2 - -(-(canvas_h - rh) // 2)
        left = (canvas_w - crop_w) // 2 - -(-(canvas_w - rw) // 2)
        sy, sx = height / rh, width / rw
        return top * sy, left * sx, crop_h * sy, crop_w * sx

    def _resize_target(self, height: int, width: int) -> tuple[int, int]:
        if self.size is not None:
            return self.size
        assert self.shortest_edge is not None
        short, long = (width, height) if width <= height else (height, width)
        new_short, new_long = self.shortest_edge, int(self.shortest_edge * long / short)
        return (new_long, new_short) if width <= height else (new_short, new_long)

    def resize(self, image: np.ndarray) -> np.ndarray:
        """Resize (and centre-crop) one ``HxWx3`` ``uint8`` image; returns ``uint8``."""
        out = self._resize(image)
        return np.repeat(out[..., None], 3, axis=2) if out.ndim == 2 else out

    def _resize(self, image: np.ndarray) -> np.ndarray:
        """`resize`, except that a grey image comes back as its one band (``HxW``)."""
        from PIL import Image

        if image.dtype == np.uint8 and _is_grey(image):
            # Pillow resizes every band alike: one band, resized, is each band of the RGB result
            # bit for bit (tests/test_preprocess.py), at a third of the work
            image = np.ascontiguousarray(image[..., 0])
        if self.size is not None or self.shortest_edge is not None:
            height, width = self._resize_target(image.shape[0], image.shape[1])
            if (height, width) != image.shape[:2]:
                pil = Image.fromarray(image).resize((width, height), resample=self.resample)
                image = np.asarray(pil)
        if self.crop_size is not None:
            image = _center_crop(image, self.crop_size)
        return image

    def normalize(self, batch: np.ndarray) -> np.ndarray:
        """Rescale and normalize an ``NxHxWx3`` ``uint8`` batch into float32 ``NCHW``."""
        return self._normalize_planar(batch.transpose(0, 3, 1, 2))

    def _normalize_planar(self, batch: np.ndarray) -> np.ndarray:
        # one float32 copy of the ``NCHW`` batch (always a copy: the caller's array is never
        # written), then the arithmetic in place on it: the same values as step by step
        planar = np.array(batch, dtype=np.float32, order="C", copy=True)
        return self._rescale_normalize(planar, channel_axis=1, in_place=True)

    def normalize_tensor(self, pixels: torch.Tensor, *, channels_last: bool = False) -> torch.Tensor:
        """`normalize` in torch, on the tensor's device: pixel values (``uint8``, or floats on the
        0..255 scale such as augmented pixels) as ``NCHW`` (``NHWC`` with `channels_last`) into
        the float32 ``NCHW`` model input. The arithmetic is `normalize`'s, step for step.

        Examples:
            >>> import torch
            >>> pre = Preprocessor(size=(2, 2))
            >>> pre.normalize_tensor(torch.full((1, 3, 2, 2), 255, dtype=torch.uint8)).flatten()[:2]
            tensor([1., 1.])
        """
        x = pixels.float()
        if channels_last:
            x = x.permute(0, 3, 1, 2)
        return self._rescale_normalize(x, channel_axis=1)

    def _rescale_normalize(self, x: _Array, channel_axis: int, *, in_place: bool = False) -> _Array:
        """The one implementation of the arithmetic, for float32 numpy arrays and torch tensors:
        ``x * rescale_factor``, then ``(x - mean) / std``, each step rounded to float32
        (`in_place`: overwriting `x`, which the caller owns)."""
        if not in_place:
            x = x.copy() if isinstance(x, np.ndarray) else x.clone()
        if self.rescale_factor is not None:
            x *= _float32_constant(x, [self.rescale_factor], channel_axis)
        if self.mean is not None and self.std is not None:
            x -= _float32_constant(x, self.mean, channel_axis)
            x /= _float32_constant(x, self.std, channel_axis)
        return x

    def __call__(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """Preprocess RGB ``uint8`` images into one float32 ``NCHW`` batch."""
        if not len(images):
            raise ValueError("no images to preprocess")
        for index, image in enumerate(images):
            if image.ndim != 3 or image.shape[2] != 3:
                raise ValueError(f"image {index}: expected HxWx3 RGB, got shape {image.shape}")
        resized = [self._resize(image) for image in images]
        shapes = {r.shape[:2] for r in resized}
        if len(shapes) > 1:
            raise ValueError(
                f"images resize to different shapes ({sorted(shapes)}); batch them one at a time"
            )
        height, width = resized[0].shape[:2]
        batch = np.empty((len(resized), 3, height, width), dtype=np.result_type(*resized))
        for row, image in zip(batch, resized, strict=True):
            row[...] = image if image.ndim == 2 else image.transpose(2, 0, 1)  # a grey face: one band
        return self._normalize_planar(batch)


def _is_grey(image: np.ndarray) -> bool:
    """An ``HxWx3`` image whose three channels are equal (a grey face in RGB)."""
    return (
        image.ndim == 3
        and image.shape[2] == 3
        and bool(np.array_equal(image[..., 0], image[..., 1]))
        and bool(np.array_equal(image[..., 0], image[..., 2]))
    )


def _float32_constant(like: _Array, values: Sequence[float], channel_axis: int) -> _Array:
    """`values` as a float32 array or tensor (on `like`'s device) that broadcasts along
    `channel_axis` of `like`."""
    shape = [1] * like.ndim
    shape[channel_axis] = len(values)
    if isinstance(like, np.ndarray):
        return np.asarray(values, dtype=np.float32).reshape(shape)
    import torch

    return torch.tensor(values, dtype=torch.float32, device=like.device).view(shape)


def _center_crop(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    height, width = image.shape[:2]
    crop_h, crop_w = size
    top, left = (height - crop_h) // 2, (width - crop_w) // 2
    if top >= 0 and left >= 0:
        return image[top : top + crop_h, left : left + crop_w]
    # Smaller than the crop: pad with zeros around the centred image, as transformers does (the
    # image at ceil((padded - size) / 2): -(-n // 2))
    out = np.zeros((max(crop_h, height), max(crop_w, width), *image.shape[2:]), dtype=image.dtype)
    pad_top, pad_left = -(-(out.shape[0] - height) // 2), -(-(out.shape[1] - width) // 2)
    out[pad_top : pad_top + height, pad_left : pad_left + width] = image
    top, left = (out.shape[0] - crop_h) // 2, (out.shape[1] - crop_w) // 2
    return out[top : top + crop_h, left : left + crop_w]


class TransformersPreprocessor:
    """Fallback for processor configs `Preprocessor` does not implement: transformers' own
    image processor (PIL backend, no torchvision needed), one image at a time."""

    def __init__(self, folder: str | Path) -> None:
        from transformers import AutoImageProcessor

        try:
            self._processor = AutoImageProcessor.from_pretrained(
                str(folder), backend="pil", trust_remote_code=False
            )
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ModelLoadError(f"{folder}: transformers cannot build its image processor ({exc})") from None

    def __call__(self, images: Sequence[np.ndarray]) -> np.ndarray:
        # HxWx3 always (left to guess, an image 3 or 1 pixels tall reads as channels-first)
        out = self._processor(images=list(images), return_tensors="np", input_data_format="channels_last")
        return np.ascontiguousarray(np.asarray(out["pixel_values"], dtype=np.float32))


#: Processor types whose missing keys default as `Preprocessor` fills them (ViT's): the fast
#: path is exact for them. Others (CLIP, BiT, ConvNeXt, MobileViT, ...) read some keys their own
#: way (an integer size as the shortest edge, crop_pct, channel flips): checked at load time.
_VIT_PROCESSORS = frozenset({"ViTImageProcessor", "ViTImageProcessorFast", "ViTFeatureExtractor"})


def _probe_images() -> list[np.ndarray]:
    """Two fixed images, of two aspect ratios, to compare processors on."""
    y, x = np.mgrid[0:53, 0:37]
    tall = np.stack([(x * 7) % 256, (y * 5) % 256, ((x + y) * 3) % 256], axis=-1).astype(np.uint8)
    return [tall, np.ascontiguousarray(np.transpose(tall, (1, 0, 2))[::-1])]


def create_preprocessor(folder: str | Path) -> ImagePreprocessor:
    """The fast `Preprocessor` for a model folder, or transformers' processor when needed:
    when the config asks for what the fast one does not implement, or, for a processor type
    other than ViT's, when the two do not answer alike on probe images."""
    config = read_processor_config(folder)
    try:
        fast = Preprocessor.from_config(config)
    except UnsupportedProcessorError:
        return TransformersPreprocessor(folder)
    kind = config.get("image_processor_type") or config.get("feature_extractor_type")
    if kind is None or kind in _VIT_PROCESSORS:
        return fast
    reference = TransformersPreprocessor(folder)
    for image in _probe_images():
        try:
            same = np.allclose(fast([image]), reference([image]), rtol=0, atol=1e-4)
        except (ValueError, TypeError):  # shapes differ, or one of them refused the image
            same = False
        if not same:
            return reference
    return fast
