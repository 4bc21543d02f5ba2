"""Batch augmentation on float tensors: flip, affine, brightness/contrast, random erasing,
mixup and cutmix.

Random draws are made for the *global* batch from a seeded generator and each process takes
its slice, so a run on N processes sees exactly the augmentations of a 1-process run.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["AugmentConfig", "augment_batch", "mix_batch"]


@dataclass
class AugmentConfig:
    """Augmentation strengths (0 switches one off)."""

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

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    @classmethod
    def off(cls) -> AugmentConfig:
        return cls(0, 0, 0, 0, 0, 0, 0, (0.0, 0.0), 0, 0, 0)


def _uniform(gen: torch.Generator, n: int, low: float, high: float) -> torch.Tensor:
    return torch.rand(n, generator=gen) * (high - low) + low


def augment_batch(
    x: torch.Tensor, cfg: AugmentConfig, gen: torch.Generator, offset: int, total: int
) -> torch.Tensor:
    """Augment ``x`` (``B x C x H x W`` in 0..1), which is rows ``offset..offset+B`` of a
    global batch of `total` rows whose random draws come from `gen`."""
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
        x = x + bright.view(n, 1, 1, 1).to(device, x.dtype)
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
        x = torch.where(inside.unsqueeze(1).to(device), fill.view(n, 1, 1, 1).to(device, x.dtype), x)
    return x.clamp(0.0, 1.0)


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
