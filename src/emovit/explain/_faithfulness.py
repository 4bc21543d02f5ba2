"""Does a map show what the model used? Two checks, used by the tests and
``scripts/explain_faithfulness.py``.

* Deletion (Petsiuk et al., 2018): replace the most-attributed pixels first with the image's
  mean, step by step, and follow the probability of the explained class; a faithful map makes
  it fall faster than the same number of pixels replaced in random order (a smaller area under
  the deletion curve).
* Model randomisation (Adebayo et al., 2018): the maps of the same architecture with
  re-initialised weights must not look like the trained model's (low Spearman rank
  correlation); a method whose maps survive randomisation shows the image, not the model.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from emovit.explain._methods import Explainer

__all__ = [
    "DeletionResult",
    "RandomisationResult",
    "deletion_test",
    "randomisation_test",
    "randomised_copy",
    "spearman",
]


@dataclass
class DeletionResult:
    """Deletion curves: the explained class's probability after deleting each fraction of the
    pixels, in the map's order (``explained``) and in random order (``random``), per face."""

    fractions: np.ndarray
    explained: np.ndarray
    random: np.ndarray
    least_first: np.ndarray | None = None

    @staticmethod
    def _auc(curves: np.ndarray, fractions: np.ndarray) -> np.ndarray:
        widths = np.diff(fractions)
        return ((curves[:, 1:] + curves[:, :-1]) / 2 * widths).sum(axis=1)

    @property
    def auc_explained(self) -> float:
        """Mean area under the deletion curves in the map's order."""
        return float(self._auc(self.explained, self.fractions).mean())

    @property
    def auc_random(self) -> float:
        """Mean area under the deletion curves in random order."""
        return float(self._auc(self.random, self.fractions).mean())

    @property
    def reduction(self) -> float:
        """How much lower the map's area is than random's: ``1 - auc_explained / auc_random``."""
        return 1.0 - self.auc_explained / self.auc_random

    @property
    def auc_least_first(self) -> float | None:
        """Mean area in the map's reverse order (least-attributed pixels first), when measured:
        above `auc_explained` when the map ranks pixels better than chance."""
        return None if self.least_first is None else float(self._auc(self.least_first, self.fractions).mean())

    @property
    def faces_better(self) -> float:
        """The share of faces whose own area is below their random area."""
        own, rand = self._auc(self.explained, self.fractions), self._auc(self.random, self.fractions)
        return float((own < rand).mean())

    def to_dict(self) -> dict[str, Any]:
        least_first = self.auc_least_first
        return {
            "faces": len(self.explained),
            "steps": int(len(self.fractions) - 1),
            "auc_explained": round(self.auc_explained, 4),
            "auc_random": round(self.auc_random, 4),
            "auc_reduction": round(self.reduction, 4),
            "faces_better_than_random": round(self.faces_better, 4),
            "mean_curve_explained": [round(float(v), 4) for v in self.explained.mean(axis=0)],
            "mean_curve_random": [round(float(v), 4) for v in self.random.mean(axis=0)],
            **({"auc_least_first": round(least_first, 4)} if least_first is not None else {}),
        }


def _softmax_probs(net: Any) -> Callable[[np.ndarray], np.ndarray]:
    import torch

    def probabilities(pixels: np.ndarray) -> np.ndarray:
        param = next(net.parameters())
        with torch.inference_mode():
            batch = torch.from_numpy(np.ascontiguousarray(pixels, dtype=np.float32)).to(param.device)
            return torch.softmax(net(pixel_values=batch).logits.float(), dim=-1).cpu().numpy()

    return probabilities


def deletion_test(
    explainer: Explainer,
    pixel_values: np.ndarray,
    *,
    targets: np.ndarray | None = None,
    steps: int = 10,
    batch_size: int = 100,
    seed: int = 0,
    least_first: bool = False,
) -> DeletionResult:
    """Deletion curves for `explainer`'s maps on preprocessed faces.

    Args:
        pixel_values: the model input, ``N x C x H x W``.
        targets: the class id to explain per face (default: the model's top class).
        steps: the curve's points after the first: ``1/steps, 2/steps, …, 1`` of the pixels.
        batch_size: faces per model call.
        seed: the random order (and the tie-breaking among equal map values).
        least_first: also measure the map's reverse order (a map that ranks pixels better
            than chance keeps the probability up longer that way).
    """
    probabilities = _softmax_probs(explainer.net)
    pixels = np.asarray(pixel_values, dtype=np.float32)
    count, channels, height, width = pixels.shape
    if targets is None:
        targets = np.concatenate(
            [probabilities(pixels[i : i + batch_size]).argmax(axis=1) for i in range(0, count, batch_size)]
        )
    targets = np.asarray(targets, dtype=np.int64)
    maps = np.concatenate(
        [
            explainer.maps(pixels[i : i + batch_size], targets[i : i + batch_size], (height, width))
            for i in range(0, count, batch_size)
        ]
    ).reshape(count, -1)
    rng = np.random.default_rng(seed)
    ties = rng.random(maps.shape)
    by_map = np.lexsort((ties, -maps), axis=1)
    at_random = np.argsort(rng.random(maps.shape), axis=1)
    means = pixels.reshape(count, channels, -1).mean(axis=2)
    fractions = np.linspace(0.0, 1.0, steps + 1)

    def curves(order: np.ndarray) -> np.ndarray:
        out = np.empty((count, steps + 1), dtype=np.float64)
        for step, fraction in enumerate(fractions):
            removed = order[:, : round(fraction * height * width)]
            mask = np.zeros((count, height * width), dtype=bool)
            np.put_along_axis(mask, removed, True, axis=1)
            flat = pixels.reshape(count, channels, -1).copy()
            flat = np.where(mask[:, None, :], means[:, :, None], flat)
            edited = flat.reshape(pixels.shape)
            for i in range(0, count, batch_size):
                probs = probabilities(edited[i : i + batch_size])
                out[i : i + batch_size, step] = probs[np.arange(len(probs)), targets[i : i + batch_size]]
        return out

    reverse = curves(np.lexsort((ties, maps), axis=1)) if least_first else None
    return DeletionResult(fractions, curves(by_map), curves(at_random), reverse)


def _ranks(values: np.ndarray) -> np.ndarray:
    """Ranks along the last axis, ties sharing their mean rank (as Spearman's needs)."""
    out = np.empty(values.shape, dtype=np.float64)
    for row, data in enumerate(values.reshape(-1, values.shape[-1])):
        _, inverse, counts = np.unique(data, return_inverse=True, return_counts=True)
        ends = np.cumsum(counts)
        out.reshape(-1, values.shape[-1])[row] = ((ends - (counts - 1) / 2) - 1)[inverse]
    return out


def spearman(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spearman's rank correlation of each pair of maps (``N x ...``); 0 where a map is
    constant (it orders nothing)."""
    ra = _ranks(np.asarray(a, dtype=np.float64).reshape(len(a), -1))
    rb = _ranks(np.asarray(b, dtype=np.float64).reshape(len(b), -1))
    ra -= ra.mean(axis=1, keepdims=True)
    rb -= rb.mean(axis=1, keepdims=True)
    norm = np.sqrt((ra**2).sum(axis=1) * (rb**2).sum(axis=1))
    return np.where(norm > 0, (ra * rb).sum(axis=1) / np.where(norm > 0, norm, 1.0), 0.0)


def randomised_copy(net: Any, seed: int = 0) -> Any:
    """A copy of `net` with every weight drawn afresh (PyTorch's default initialisation per
    layer; parameters no layer resets, such as ViT's [CLS] token and position embeddings, from
    N(0, 0.02)): the model-randomisation baseline. The global random state is left as it was."""
    import torch

    clone = copy.deepcopy(net).eval()
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(seed)
        reset: set[int] = set()
        for module in clone.modules():
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()
                reset.update(id(p) for p in module.parameters(recurse=False))
            elif hasattr(module, "reset_running_stats"):
                module.reset_running_stats()
        for param in clone.parameters():
            if id(param) not in reset:
                torch.nn.init.trunc_normal_(param, std=0.02)
    return clone


@dataclass
class RandomisationResult:
    """Spearman rank correlation between the trained model's maps and the randomised one's."""

    correlations: np.ndarray

    @property
    def mean(self) -> float:
        return float(self.correlations.mean())

    def to_dict(self) -> dict[str, Any]:
        return {
            "faces": len(self.correlations),
            "mean_spearman": round(self.mean, 4),
            "median_spearman": round(float(np.median(self.correlations)), 4),
            "max_spearman": round(float(self.correlations.max()), 4),
        }


def randomisation_test(
    explainer: Explainer,
    pixel_values: np.ndarray,
    *,
    targets: np.ndarray | None = None,
    seed: int = 0,
    batch_size: int = 100,
) -> RandomisationResult:
    """Rank correlation of `explainer`'s maps with those of the same method on a randomised
    copy of its model, for the same faces and the same explained classes (by default the
    trained model's top class)."""
    random_net = randomised_copy(explainer.net, seed)
    other = Explainer(random_net, explainer.method, layer=explainer.layer)
    pixels = np.asarray(pixel_values, dtype=np.float32)
    if targets is None and explainer.class_specific:
        probabilities = _softmax_probs(explainer.net)
        targets = np.concatenate(
            [
                probabilities(pixels[i : i + batch_size]).argmax(axis=1)
                for i in range(0, len(pixels), batch_size)
            ]
        )
    chosen = None if targets is None else np.asarray(targets, dtype=np.int64)

    def run(method: Explainer) -> np.ndarray:
        return np.concatenate(
            [
                method(pixels[i : i + batch_size], None if chosen is None else chosen[i : i + batch_size])
                for i in range(0, len(pixels), batch_size)
            ]
        )

    trained, randomised = run(explainer), run(other)
    return RandomisationResult(spearman(trained, randomised))
