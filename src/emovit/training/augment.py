"""Batch augmentation on float tensors: flip, affine (crop jitter), brightness/contrast,
random erasing, mixup and cutmix, and what real photos send through a face detector:
resolution loss (down-then-up sampling), blur, sensor noise, gamma and JPEG artefacts.

Augmentation works on pixel values (floats on the 0..255 scale, ``NCHW``), before the model's
own rescale and normalize (`emovit.preprocess.Preprocessor.normalize_tensor`): with every
strength at 0 a batch is left exactly as decoded, so training sees the inference input.
Random draws are made for the *global* batch from a seeded generator and each process takes
its slice, so a run on N processes sees exactly the augmentations of a 1-process run.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["PIXEL_MAX", "AugmentConfig", "augment_batch", "augment_views", "mix_batch"]

#: The top of the pixel scale augmentation works on (``uint8`` values as floats).
PIXEL_MAX = 255.0


@dataclass
class AugmentConfig:
    """Augmentation strengths (0 switches one off); `brightness` is a fraction of the pixel
    range, `translate` of half the image's side (affine_grid's units: 0.1 shifts by up to 5 %
    of the side). The degradations are switched by their probabilities
    (``*_p``): a blur draws its sigma from 0.3 to `blur_sigma`."""

    hflip: float = 0.5
    rotate_deg: float = 10.0
    scale: float = 0.1
    translate: float = 0.1
    brightness: float = 0.2
    contrast: float = 0.2
    erase_p: float = 0.25
    erase_area: tuple[float, float] = (0.02, 0.15)
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    mix_p: float = 0.5
    # Photo degradations (probability each, then the strength range).
    downscale_p: float = 0.0
    downscale_min: float = 0.25
    blur_p: float = 0.0
    blur_sigma: float = 1.2
    noise_p: float = 0.0
    noise_std: float = 8.0
    gamma_p: float = 0.0
    gamma_range: tuple[float, float] = (0.6, 1.6)
    jpeg_p: float = 0.0
    jpeg_quality: tuple[int, int] = (30, 90)

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    @classmethod
    def off(cls) -> AugmentConfig:
        """No augmentation: a batch is left exactly as decoded."""
        return cls(
            hflip=0, rotate_deg=0, scale=0, translate=0, brightness=0, contrast=0,
            erase_p=0, erase_area=(0.0, 0.0), mixup_alpha=0, cutmix_alpha=0, mix_p=0,
        )  # fmt: skip

    @classmethod
    def robust(cls) -> AugmentConfig:
        """Crop jitter around the recorded framing (position, scale, rotation up to 15°) plus
        the degradations of real photos: for models meant for faces found by a detector."""
        return cls(
            rotate_deg=15.0, scale=0.15, translate=0.1, brightness=0.25, contrast=0.3, erase_p=0.3,
            downscale_p=0.3, blur_p=0.2, noise_p=0.2, gamma_p=0.3, jpeg_p=0.25,
        )  # fmt: skip

    def with_overrides(self, pairs: Iterable[str]) -> AugmentConfig:
        """A copy with ``KEY=VALUE`` strengths replaced, e.g. ``blur_p=0.4`` or
        ``jpeg_quality=20,90`` (a range is two comma-separated numbers)."""
        fields = self.to_dict()
        changed: dict[str, object] = {}
        for pair in pairs:
            key, sep, text = pair.partition("=")
            key = key.strip()
            if not sep or key not in fields:
                raise ValueError(
                    f"augmentation setting {pair!r}: expected KEY=VALUE with KEY one of {sorted(fields)}"
                )
            current = fields[key]
            try:
                if isinstance(current, tuple):
                    parts = [part.strip() for part in text.split(",")]
                    kind = type(current[0])
                    if len(parts) != 2:
                        raise ValueError("a range needs two comma-separated numbers")
                    numbers = [float(part) for part in parts]
                    if not all(math.isfinite(n) and n >= 0 for n in numbers):
                        raise ValueError("a range holds finite numbers >= 0")
                    if kind is int and not all(n.is_integer() for n in numbers):
                        raise ValueError("a range of whole numbers")
                    low, high = (kind(n) for n in numbers)
                    if low > high:
                        raise ValueError(f"the range's low end {low} is above its high end {high}")
                    if key == "gamma_range" and low <= 0:
                        raise ValueError("a gamma is above 0")
                    if key == "jpeg_quality" and not 1 <= low <= high <= 100:
                        raise ValueError("JPEG quality is 1..100")
                    if key == "erase_area" and high > 1:
                        raise ValueError("an area is a share of the image, at most 1")
                    changed[key] = (low, high)
                else:
                    value = float(text)
                    if not math.isfinite(value) or value < 0:
                        raise ValueError("a strength is a finite number >= 0")
                    if (key.endswith("_p") or key in ("hflip", "downscale_min")) and value > 1:
                        raise ValueError(f"{key} is at most 1")
                    if key == "scale" and value >= 1:
                        raise ValueError(
                            "scale is below 1 (the zoom factor is drawn from 1 - scale .. 1 + scale)"
                        )
                    if key == "blur_sigma" and value < 0.3:
                        raise ValueError(
                            "blur_sigma is at least 0.3, the weakest blur drawn (blur_p=0 turns it off)"
                        )
                    changed[key] = value
            except ValueError as error:
                raise ValueError(f"augmentation setting {pair!r}: {error}") from None
        return replace(self, **changed)  # type: ignore[arg-type]

    @classmethod
    def from_name(cls, name: str) -> AugmentConfig:
        """``standard`` (the default), ``robust`` or ``off``."""
        presets: dict[str, Callable[[], AugmentConfig]] = {
            "standard": cls,
            "robust": cls.robust,
            "off": cls.off,
        }
        if name not in presets:
            raise ValueError(f"augmentation must be one of {sorted(presets)}, got {name!r}")
        return presets[name]()


def _uniform(gen: torch.Generator, n: int, low: float, high: float) -> torch.Tensor:
    return torch.rand(n, generator=gen) * (high - low) + low


def augment_batch(
    x: torch.Tensor, cfg: AugmentConfig, gen: torch.Generator, offset: int, total: int
) -> torch.Tensor:
    """Augment ``x`` (``B x C x H x W`` pixel values in 0..255), which is rows
    ``offset..offset+B`` of a global batch of `total` rows whose random draws come from `gen`."""
    return augment_views(x, cfg, gen, offset, total)[1]


def augment_views(
    x: torch.Tensor, cfg: AugmentConfig, gen: torch.Generator, offset: int, total: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """`augment_batch` in two views of the same draws: the face before the photo degradations
    (framing jitter, lighting and erasing only) and after them (what `augment_batch` returns).
    A teacher shown the first tells the student, shown the second, what the face looks like."""
    n = x.shape[0]
    rows = slice(offset, offset + n)
    flip = torch.rand(total, generator=gen)[rows] < cfg.hflip
    angle = _uniform(gen, total, -cfg.rotate_deg, cfg.rotate_deg)[rows] * math.pi / 180
    scale = _uniform(gen, total, 1 - cfg.scale, 1 + cfg.scale)[rows]
    shift = _uniform(gen, 2 * total, -cfg.translate, cfg.translate).view(total, 2)[rows]
    bright = _uniform(gen, total, -cfg.brightness, cfg.brightness)[rows]
    contrast = _uniform(gen, total, 1 - cfg.contrast, 1 + cfg.contrast)[rows]
    erase = torch.rand(total, generator=gen)[rows] < cfg.erase_p
    area = _uniform(gen, total, *cfg.erase_area)[rows]
    aspect = torch.exp(_uniform(gen, total, math.log(0.3), math.log(3.3)))[rows]
    centre = torch.rand(total, 2, generator=gen)[rows]
    fill = torch.rand(total, generator=gen)[rows]

    device = x.device
    if cfg.rotate_deg or cfg.scale or cfg.translate or cfg.hflip:
        cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
        sign = torch.where(flip, -1.0, 1.0)
        theta = torch.stack(
            [
                torch.stack([cos * sign, -sin, shift[:, 0]], dim=1),
                torch.stack([sin * sign, cos, shift[:, 1]], dim=1),
            ],
            dim=1,
        ).to(device, x.dtype)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    if cfg.brightness or cfg.contrast:
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        x = (x - mean) * contrast.view(n, 1, 1, 1).to(device, x.dtype) + mean
        x = x + (bright * PIXEL_MAX).view(n, 1, 1, 1).to(device, x.dtype)
    if cfg.erase_p:
        height, width = x.shape[-2:]
        eh = (torch.sqrt(area * aspect) * height).clamp(max=height)
        ew = (torch.sqrt(area / aspect) * width).clamp(max=width)
        cy, cx = centre[:, 0] * height, centre[:, 1] * width
        ys = torch.arange(height).view(1, height, 1)
        xs = torch.arange(width).view(1, 1, width)
        inside = (
            ((ys - cy.view(n, 1, 1)).abs() < eh.view(n, 1, 1) / 2)
            & ((xs - cx.view(n, 1, 1)).abs() < ew.view(n, 1, 1) / 2)
            & erase.view(n, 1, 1)
        )
        fill_value = (fill * PIXEL_MAX).view(n, 1, 1, 1).to(device, x.dtype)
        x = torch.where(inside.unsqueeze(1).to(device), fill_value, x)
    clean = x.clamp(0.0, PIXEL_MAX)
    return clean, _degrade(clean, cfg, gen, rows, total).clamp(0.0, PIXEL_MAX)


def _degrade(
    x: torch.Tensor, cfg: AugmentConfig, gen: torch.Generator, rows: slice, total: int
) -> torch.Tensor:
    """Resolution loss, blur, gamma, noise and JPEG, each on a random share of the batch."""
    if not (cfg.downscale_p or cfg.blur_p or cfg.noise_p or cfg.gamma_p or cfg.jpeg_p):
        return x
    n, _, height, width = x.shape
    draws = torch.rand(total, 5, generator=gen)[rows]
    factor = _uniform(gen, total, cfg.downscale_min, 1.0)[rows]
    sigma = _uniform(gen, total, 0.3, max(cfg.blur_sigma, 0.3))[rows]
    gamma = torch.exp(_uniform(gen, total, *(math.log(g) for g in cfg.gamma_range)))[rows]
    noise_std = _uniform(gen, total, 0.0, cfg.noise_std)[rows]
    noise = torch.randn(total, *x.shape[1:], generator=gen)[rows]
    quality = torch.randint(cfg.jpeg_quality[0], cfg.jpeg_quality[1] + 1, (total,), generator=gen)[rows]
    out = x.clone()
    for i in torch.nonzero(draws[:, 0] < cfg.downscale_p).flatten().tolist():
        small = (max(4, round(height * float(factor[i]))), max(4, round(width * float(factor[i]))))
        down = F.interpolate(out[i : i + 1], size=small, mode="area")
        out[i : i + 1] = F.interpolate(down, size=(height, width), mode="bilinear", align_corners=False)
    blurred = torch.nonzero(draws[:, 1] < cfg.blur_p).flatten()
    if len(blurred):
        out[blurred] = _gaussian_blur(out[blurred], sigma[blurred])
    chosen = draws[:, 2] < cfg.gamma_p
    if chosen.any():
        g = gamma.view(n, 1, 1, 1).to(x.device, x.dtype)
        gammad = PIXEL_MAX * (out / PIXEL_MAX).clamp(0, 1) ** g
        out = torch.where(chosen.view(n, 1, 1, 1).to(x.device), gammad, out)
    chosen = draws[:, 3] < cfg.noise_p
    if chosen.any():
        noise = noise.to(x.device, x.dtype)
        if x.shape[1] == 3:  # a grey face (equal channels: grey framing) gets grey noise, as at
            # inference it only ever sees grey pixels (per-channel noise made it colour)
            grey = (x[:, 0] == x[:, 1]).flatten(1).all(1) & (x[:, 1] == x[:, 2]).flatten(1).all(1)
            noise = torch.where(grey.view(n, 1, 1, 1), noise[:, :1].expand_as(noise), noise)
        scaled = noise * noise_std.view(n, 1, 1, 1).to(x.device, x.dtype)
        out = out + scaled * chosen.view(n, 1, 1, 1).to(x.device, x.dtype)
    for i in torch.nonzero(draws[:, 4] < cfg.jpeg_p).flatten().tolist():
        out[i] = _jpeg(out[i], int(quality[i]))
    return out


def _gaussian_blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Blur each image of ``x`` with its own Gaussian `sigma`, in one grouped convolution."""
    n, channels, height, width = x.shape
    radius = max(1, math.ceil(2.5 * float(sigma.max())))
    taps = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    kernel = torch.exp(-(taps.view(1, -1) ** 2) / (2 * sigma.view(-1, 1).to(x.device, x.dtype) ** 2))
    kernel = (kernel / kernel.sum(dim=1, keepdim=True)).repeat_interleave(channels, dim=0)
    flat = x.reshape(1, n * channels, height, width)
    flat = F.conv2d(
        F.pad(flat, (radius, radius, 0, 0), mode="reflect"),
        kernel.view(n * channels, 1, 1, -1),
        groups=n * channels,
    )
    flat = F.conv2d(
        F.pad(flat, (0, 0, radius, radius), mode="reflect"),
        kernel.view(n * channels, 1, -1, 1),
        groups=n * channels,
    )
    return flat.view(n, channels, height, width)


def _jpeg(image: torch.Tensor, quality: int) -> torch.Tensor:
    """One ``CxHxW`` image through a JPEG encode and decode at `quality` (Pillow)."""
    import io

    from PIL import Image

    pixels = image.clamp(0, PIXEL_MAX).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    grey = pixels.shape[2] == 3 and bool((pixels[..., 0] == pixels[..., 1]).all())
    pil = Image.fromarray(pixels[..., 0] if grey else pixels)
    buffer = io.BytesIO()
    pil.save(buffer, format="JPEG", quality=quality)
    decoded = np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))
    return torch.from_numpy(decoded.copy()).permute(2, 0, 1).to(image.device, image.dtype)


def mix_batch(
    x: torch.Tensor, targets: torch.Tensor, cfg: AugmentConfig, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mixup or cutmix within the (local) batch; `targets` are one-hot/soft ``B x K``."""
    if not (cfg.mixup_alpha or cfg.cutmix_alpha) or float(torch.rand(1, generator=gen)) >= cfg.mix_p:
        return x, targets
    perm = torch.randperm(x.shape[0], generator=gen).to(x.device)
    use_cutmix = cfg.cutmix_alpha > 0 and (cfg.mixup_alpha == 0 or float(torch.rand(1, generator=gen)) < 0.5)
    alpha = cfg.cutmix_alpha if use_cutmix else cfg.mixup_alpha
    seed = int(torch.randint(2**31 - 1, (1,), generator=gen))
    lam = float(np.random.default_rng(seed).beta(alpha, alpha))
    if use_cutmix:
        height, width = x.shape[-2:]
        cut_h, cut_w = int(height * math.sqrt(1 - lam)), int(width * math.sqrt(1 - lam))
        cy = int(torch.randint(height, (1,), generator=gen))
        cx = int(torch.randint(width, (1,), generator=gen))
        y0, y1 = max(cy - cut_h // 2, 0), min(cy + cut_h // 2, height)
        x0, x1 = max(cx - cut_w // 2, 0), min(cx + cut_w // 2, width)
        x = x.clone()
        x[:, :, y0:y1, x0:x1] = x[perm, :, y0:y1, x0:x1]
        lam = 1 - (y1 - y0) * (x1 - x0) / (height * width)
    else:
        x = lam * x + (1 - lam) * x[perm]
    return x, lam * targets + (1 - lam) * targets[perm]
