"""The explanation methods: attention rollout, its gradient-weighted variant, Grad-CAM and
SmoothGrad.

* ``rollout`` (Abnar & Zuidema, 2020): a ViT's attention, averaged over heads, mixed half and
  half with the identity for the residual path, and multiplied through the layers; the row of
  the [CLS] token says how much each patch reached the classifier. Class-agnostic.
* ``grad-rollout`` (Chefer, Gur & Wolf, 2021, "Generic attention-model explainability"): each
  layer's attention weighted by its gradient for the explained class, ``E_h[(∇A ⊙ A)+]``, and
  accumulated as ``R ← R + Ā·R`` from the identity. Class-specific.
* ``gradcam`` (Selvaraju et al., 2017): a spatial feature map weighted channel by channel by the
  mean gradient of the explained class, summed and rectified. Class-specific. It reads the
  deepest stage of the network whose map is at least `GRADCAM_MIN_SIDE` cells on a side (see
  `gradcam_layer`).
* ``smoothgrad`` (Smilkov et al., 2017, on gradient x input): the gradient of the explained
  class at `SMOOTHGRAD_SAMPLES` noisy copies of the input (Gaussian, `SMOOTHGRAD_SIGMA` of the
  input's range, black to white, as the paper sets it; fixed seed), averaged, times the
  input's difference from its mean, summed over channels and rectified: a first-order
  estimate, per pixel, of how much the class score falls when that pixel is replaced by the
  image's mean. Class-specific, any differentiable model, maps at the model's input
  resolution.

``auto`` picks ``grad-rollout`` for ViTs and ``smoothgrad`` for every other network. Grad-CAM
stays available (``--method gradcam``), but on emovit's 64 px models its coarse maps fail the
deletion test (the default MobileViT's and the ResNet teacher's areas are 23 % and 11 % *above*
random order's; SmoothGrad's 45 % and 55 % below; ``docs/reports/explain``). Every method runs on
the torch model, in float32.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, get_args

import numpy as np

from emovit.errors import OptionError

if TYPE_CHECKING:
    import torch

__all__ = [
    "CLASS_SPECIFIC",
    "GRADCAM_MIN_SIDE",
    "METHODS",
    "SMOOTHGRAD_SAMPLES",
    "SMOOTHGRAD_SIGMA",
    "ExplainMethod",
    "Explainer",
    "gradcam_layer",
    "normalise_maps",
    "resize_map",
    "resolve_method",
]

ExplainMethod = Literal["auto", "rollout", "grad-rollout", "gradcam", "smoothgrad"]
#: Every method name, ``auto`` first.
METHODS: tuple[str, ...] = get_args(ExplainMethod)
#: The methods that explain one class (the predicted one, or a named target).
CLASS_SPECIFIC: tuple[str, ...] = ("grad-rollout", "gradcam", "smoothgrad")
#: Grad-CAM reads the deepest stage whose feature map has at least this many cells on its
#: shorter side: the last stage of a CNN at 224 px (7x7), MobileViT's 8x8 stage at 64 px (its
#: last stage is 2x2 there, too coarse to say where on the face; measured in
#: docs/reports/explain).
GRADCAM_MIN_SIDE = 7
#: SmoothGrad's noisy samples per face, and the noise's standard deviation as a share of the
#: model input's range from black to white (1.0 for the default model's mean 0 / std 1, 2.0 for
#: the 0.5/0.5 normalisation); chosen on the deletion test with the default model
#: (docs/reports/explain): 4 samples give most of the gain of 8 at half the cost.
SMOOTHGRAD_SAMPLES = 4
SMOOTHGRAD_SIGMA = 0.15
#: Faces explained per autograd pass (a batch of many faces is split: grad-rollout keeps every
#: layer's attention and its gradient, SmoothGrad runs several passes).
EXPLAIN_CHUNK = 16


@dataclass(frozen=True)
class _ViT:
    """The parts of a transformers ViT classifier the attention methods walk through."""

    net: Any
    embeddings: Any
    layers: Sequence[Any]
    layernorm: Any
    classifier: Any
    grid: tuple[int, int]


def _vit_parts(net: Any) -> _ViT | None:
    """The ViT layout (transformers 5: ``vit.embeddings``, ``vit.layers[i].attention.q_proj``,
    …), or None when `net` is not a ViT classifier laid out that way."""
    base = getattr(net, "vit", None)
    layers = getattr(base, "layers", None)
    if type(net).__name__ != "ViTForImageClassification" or base is None or not layers:
        return None
    needed = ("q_proj", "k_proj", "v_proj", "o_proj", "head_dim", "scaling")
    for layer in layers:
        att = getattr(layer, "attention", None)
        if att is None or not all(hasattr(att, n) for n in needed):
            return None
        if not all(hasattr(layer, n) for n in ("layernorm_before", "layernorm_after", "mlp")):
            return None
    patches = getattr(base.embeddings, "patch_embeddings", None)
    if patches is None:
        return None
    size, patch = patches.image_size, patches.patch_size
    grid = (int(size[0]) // int(patch[0]), int(size[1]) // int(patch[1]))
    return _ViT(net, base.embeddings, layers, base.layernorm, net.classifier, grid)


def _vit_forward(vit: _ViT, pixels: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The classifier's logits and every layer's attention probabilities (``N x heads x T x
    T``), computed as transformers' eager attention does (the same logits)."""
    import torch

    hidden = vit.embeddings(pixels)
    attentions = []
    for layer in vit.layers:
        att = layer.attention
        normed = layer.layernorm_before(hidden)
        batch, tokens = normed.shape[:2]

        def heads(x: torch.Tensor, batch: int = batch, tokens: int = tokens, att: Any = att) -> torch.Tensor:
            return x.reshape(batch, tokens, -1, att.head_dim).transpose(1, 2)

        query, key, value = heads(att.q_proj(normed)), heads(att.k_proj(normed)), heads(att.v_proj(normed))
        weights = torch.softmax(torch.matmul(query, key.transpose(2, 3)) * att.scaling, dim=-1)
        attentions.append(weights)
        attended = torch.matmul(weights, value).transpose(1, 2).reshape(batch, tokens, -1)
        hidden = att.o_proj(attended) + hidden
        hidden = layer.mlp(layer.layernorm_after(hidden)) + hidden
    return vit.classifier(vit.layernorm(hidden)[:, 0]), attentions


def _stages(net: Any) -> list[tuple[str, Any]]:
    """The named stages of a network's encoder (``mobilevit.encoder.layer.3``, …), in order."""
    prefix = getattr(net, "base_model_prefix", "") or ""
    base = getattr(net, prefix, None) if prefix else None
    encoder = getattr(base, "encoder", None)
    for attr in ("layer", "stages", "layers", "blocks"):
        stages = getattr(encoder, attr, None)
        if stages is not None and hasattr(stages, "__len__") and len(stages):
            return [(f"{prefix}.encoder.{attr}.{i}", stage) for i, stage in enumerate(stages)]
    return []


def _input_shape(net: Any) -> tuple[int, int, int]:
    config = net.config
    size = getattr(config, "image_size", 224)
    height, width = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    return int(getattr(config, "num_channels", 3)), height, width


def gradcam_layer(
    net: Any, min_side: int = GRADCAM_MIN_SIDE, size: tuple[int, int] | None = None
) -> tuple[str, tuple[int, int]]:
    """The stage Grad-CAM reads for `net`, and its feature map's size at the input size `size`
    (default: the model config's): the deepest stage of the encoder whose output has at least
    `min_side` cells on its shorter side (else the stage with the largest map).

    Raises:
        OptionError: `net` has no encoder stages with a spatial feature map (a ViT: use rollout).
    """
    import torch

    stages = _stages(net)
    shapes: dict[str, tuple[int, int]] = {}
    hooks = []

    def recorder(name: str) -> Any:
        def hook(module: Any, inputs: Any, output: Any) -> None:
            out = output[0] if isinstance(output, tuple) else output
            if isinstance(out, torch.Tensor) and out.ndim == 4:
                shapes[name] = (int(out.shape[2]), int(out.shape[3]))

        return hook

    try:
        for name, stage in stages:
            hooks.append(stage.register_forward_hook(recorder(name)))
        if stages:
            param = next(net.parameters())
            channels, height, width = _input_shape(net)
            height, width = size or (height, width)
            probe = torch.zeros((1, channels, height, width), dtype=param.dtype, device=param.device)
            with torch.no_grad():
                net(pixel_values=probe)
    finally:
        for handle in hooks:
            handle.remove()
    if not shapes:
        raise OptionError(
            f"gradcam needs a network with a spatial feature map; {type(net).__name__} has none "
            "(rollout or grad-rollout apply to a ViT)",
            option="method",
        )
    ordered = [name for name, _ in stages if name in shapes]
    fitting = [name for name in ordered if min(shapes[name]) >= min_side]
    name = fitting[-1] if fitting else max(ordered, key=lambda n: shapes[n][0] * shapes[n][1])
    return name, shapes[name]


def resolve_method(net: Any, method: str = "auto") -> str:
    """The method `method` means for `net` (``auto``: grad-rollout for a ViT, else smoothgrad).

    Raises:
        OptionError: an unknown method, or one that does not apply to this architecture.
    """
    if method not in METHODS:
        raise OptionError(f"method must be one of {', '.join(METHODS)}, got {method!r}", option="method")
    is_vit = _vit_parts(net) is not None
    if method == "auto":
        return "grad-rollout" if is_vit else "smoothgrad"
    if method in ("rollout", "grad-rollout") and not is_vit:
        raise OptionError(
            f"{method} needs a ViT (attention between image patches and a [CLS] token); "
            f"{type(net).__name__} is not one: use smoothgrad or gradcam (or auto)",
            option="method",
        )
    return method


def normalise_maps(maps: np.ndarray) -> np.ndarray:
    """Each map scaled to 0..1 (min to 0, max to 1; a constant map becomes zeros), float32;
    non-finite values count as 0."""
    maps = np.nan_to_num(np.asarray(maps, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    flat = maps.reshape(len(maps), -1)
    low = flat.min(axis=1, keepdims=True)
    span = flat.max(axis=1, keepdims=True) - low
    scaled = np.where(span > 0, (flat - low) / np.where(span > 0, span, 1.0), 0.0)
    return np.clip(scaled, 0.0, 1.0).astype(np.float32).reshape(maps.shape)


def resize_map(
    grid: np.ndarray, size: tuple[int, int], region: tuple[float, float, float, float] | None = None
) -> np.ndarray:
    """A map (or a stack of maps) on the model's grid, bilinearly resized to ``(height,
    width)`` and scaled to 0..1 again. `region` ``(top, left, height, width)``, in the output's
    pixels, is the part of it the model saw (a centre crop: `Preprocessor.input_region`): the
    map is laid there, 0 around it."""
    import torch
    import torch.nn.functional as F

    single = grid.ndim == 2
    stack = torch.from_numpy(np.ascontiguousarray(grid[None] if single else grid, dtype=np.float32))
    if region is None or (round(region[0]), round(region[1]), round(region[2]), round(region[3])) == (
        0,
        0,
        *size,
    ):
        resized = F.interpolate(stack[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
        out = normalise_maps(resized.numpy())
        return out[0] if single else out
    top, left = round(region[0]), round(region[1])
    inner = (max(1, round(region[2])), max(1, round(region[3])))
    placed = F.interpolate(stack[:, None], size=inner, mode="bilinear", align_corners=False)[:, 0].numpy()
    canvas = np.zeros((len(placed), *size), dtype=np.float32)
    y0, x0 = max(0, top), max(0, left)
    y1, x1 = min(size[0], top + inner[0]), min(size[1], left + inner[1])
    if y1 > y0 and x1 > x0:
        canvas[:, y0:y1, x0:x1] = placed[:, y0 - top : y1 - top, x0 - left : x1 - left]
    out = normalise_maps(canvas)
    return out[0] if single else out


class Explainer:
    """Explanation maps for a torch image classifier: where in its input it looked.

    Args:
        net: the torch model (a transformers image classifier), in eval mode.
        method: ``auto``, ``rollout``, ``grad-rollout``, ``gradcam`` or ``smoothgrad`` (see
            the module).
        layer: for gradcam, the module to read (a name from ``net.named_modules()``); default
            `gradcam_layer`'s choice.

    Calls are serialised (one at a time per explainer), and Grad-CAM's hook records only its
    own thread's forward pass, so a model that serves inference in other threads meanwhile is
    safe to explain.

    Examples:
        >>> explainer = Explainer(loaded.model, "auto")  # doctest: +SKIP
        >>> explainer(pixel_values, targets=[3]).shape  # smoothgrad: the input's size  # doctest: +SKIP
        (1, 64, 64)
    """

    def __init__(
        self,
        net: Any,
        method: str = "auto",
        *,
        layer: str | None = None,
        input_size: tuple[int, int] | None = None,
        input_range: float = 1.0,
    ) -> None:
        self.net = net
        self.input_range = input_range
        self._input_size = input_size
        self.method = resolve_method(net, method)
        self.class_specific = self.method in CLASS_SPECIFIC
        self._vit = _vit_parts(net) if self.method in ("rollout", "grad-rollout") else None
        self.layer: str | None = None
        self._module: Any = None
        if self.method == "gradcam":
            if layer is None:
                layer, _ = gradcam_layer(net, size=input_size)
            modules = dict(net.named_modules())
            if layer not in modules:
                raise OptionError(f"{type(net).__name__} has no module {layer!r}", option="layer")
            self.layer, self._module = layer, modules[layer]
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        layer = f", layer={self.layer!r}" if self.layer else ""
        return f"Explainer({type(self.net).__name__}, method={self.method!r}{layer})"

    @property
    def input_size(self) -> tuple[int, int]:
        """The model's input ``(height, width)`` (the preprocessor's, when it was given)."""
        if self._input_size is not None:
            return self._input_size
        _, height, width = _input_shape(self.net)
        return height, width

    def __call__(
        self,
        pixel_values: np.ndarray,
        targets: Sequence[int] | np.ndarray | None = None,
        *,
        tta: str = "none",
    ) -> np.ndarray:
        """Maps on the model's grid (``N x h x w``, float32, 0..1) for preprocessed faces: the
        patch grid (rollout), the feature map (gradcam) or the input's pixels (smoothgrad).

        Args:
            pixel_values: the model input, ``N x C x H x W`` float32.
            targets: the class id (the model's output index) to explain per face; None: each
                face's top class. The class-agnostic rollout ignores it.
            tta: ``flip`` when the prediction averaged each face and its mirror image: the map
                is then the mean of both views' maps (the mirror's flipped back), so that it
                explains what the prediction used.
        """
        import torch

        if tta not in ("none", "flip"):
            raise OptionError(f"tta must be 'none' or 'flip', got {tta!r}", option="tta")
        chosen = None if targets is None else np.asarray(targets, dtype=np.int64)
        with self._lock:
            param = next(self.net.parameters())
            chunks = []
            for start in range(0, len(pixel_values), EXPLAIN_CHUNK):
                part = torch.from_numpy(
                    np.ascontiguousarray(pixel_values[start : start + EXPLAIN_CHUNK], dtype=np.float32)
                ).to(device=param.device, dtype=param.dtype)
                ids = None if chosen is None else chosen[start : start + EXPLAIN_CHUNK]
                if ids is None and tta == "flip" and self.class_specific:  # the class both views say
                    with torch.no_grad():
                        views = (part, torch.flip(part, dims=[-1]))
                        probs = torch.stack(
                            [torch.softmax(self.net(pixel_values=v).logits.float(), dim=1) for v in views]
                        ).sum(dim=0)
                    ids = probs.argmax(dim=1).cpu().numpy()
                raw = self._raw(part, ids)
                if tta == "flip":
                    raw = (raw + self._raw(torch.flip(part, dims=[-1]), ids)[..., ::-1]) / 2
                chunks.append(raw)
        maps = np.concatenate(chunks) if chunks else np.zeros((0, 1, 1), np.float32)
        return normalise_maps(maps)

    def _raw(self, pixels: torch.Tensor, targets: np.ndarray | None) -> np.ndarray:
        """The method's maps before normalisation."""
        if self.method == "gradcam":
            return self._gradcam(pixels, targets)
        if self.method == "smoothgrad":
            return self._smoothgrad(pixels, targets)
        if self.method == "rollout":
            return self._rollout(pixels)
        return self._grad_rollout(pixels, targets)

    def maps(
        self,
        pixel_values: np.ndarray,
        targets: Sequence[int] | np.ndarray | None = None,
        size: tuple[int, int] | None = None,
    ) -> np.ndarray:
        """`__call__`'s maps resized to ``size`` (default: the model's input size)."""
        return resize_map(self(pixel_values, targets), size or self.input_size)

    @staticmethod
    def _targets(logits: torch.Tensor, targets: Sequence[int] | np.ndarray | None) -> torch.Tensor:
        import torch

        if targets is None:
            return logits.argmax(dim=1)
        chosen = torch.as_tensor(np.asarray(targets, dtype=np.int64), device=logits.device)
        if chosen.shape != (logits.shape[0],):
            raise OptionError(f"one target per face: {logits.shape[0]} faces, {chosen.shape} targets")
        if bool(((chosen < 0) | (chosen >= logits.shape[1])).any()):
            raise OptionError(f"targets must be class ids below {logits.shape[1]}", option="target")
        return chosen

    def _rollout(self, pixels: torch.Tensor) -> np.ndarray:
        import torch

        assert self._vit is not None
        with torch.no_grad():
            _, attentions = _vit_forward(self._vit, pixels)
            tokens = attentions[0].shape[-1]
            eye = torch.eye(tokens, dtype=pixels.dtype, device=pixels.device)
            rollout = eye.expand(pixels.shape[0], tokens, tokens)
            for weights in attentions:
                mixed = 0.5 * weights.mean(dim=1) + 0.5 * eye
                mixed = mixed / mixed.sum(dim=-1, keepdim=True)
                rollout = torch.bmm(mixed, rollout)
        return self._patch_grid(rollout[:, 0])

    def _grad_rollout(self, pixels: torch.Tensor, targets: Sequence[int] | np.ndarray | None) -> np.ndarray:
        import torch

        assert self._vit is not None
        with torch.enable_grad():
            logits, attentions = _vit_forward(self._vit, pixels.requires_grad_(True))
            chosen = self._targets(logits, targets)
            score = logits.gather(1, chosen[:, None]).sum()
            grads = torch.autograd.grad(score, attentions)
        with torch.no_grad():
            tokens = attentions[0].shape[-1]
            relevance = torch.eye(tokens, dtype=pixels.dtype, device=pixels.device).repeat(len(pixels), 1, 1)
            for weights, grad in zip(attentions, grads, strict=True):
                weighted = (grad * weights).clamp(min=0).mean(dim=1)
                relevance = relevance + torch.bmm(weighted, relevance)
        return self._patch_grid(relevance[:, 0])

    def _patch_grid(self, cls_row: torch.Tensor) -> np.ndarray:
        """The [CLS] token's row, its patch tokens laid out on the patch grid."""
        assert self._vit is not None
        height, width = self._vit.grid
        patches = cls_row[:, cls_row.shape[1] - height * width :]
        return patches.reshape(-1, height, width).detach().float().cpu().numpy()

    def _gradcam(self, pixels: torch.Tensor, targets: Sequence[int] | np.ndarray | None) -> np.ndarray:
        import torch

        owner = threading.get_ident()
        captured: list[torch.Tensor] = []

        def hook(module: Any, inputs: Any, output: Any) -> None:
            if threading.get_ident() == owner:  # not another thread's inference meanwhile
                captured.append(output[0] if isinstance(output, tuple) else output)

        handle = self._module.register_forward_hook(hook)
        try:
            with torch.enable_grad():
                logits = self.net(pixel_values=pixels.requires_grad_(True)).logits
                chosen = self._targets(logits, targets)
                score = logits.gather(1, chosen[:, None]).sum()
                (grad,) = torch.autograd.grad(score, captured[-1])
        finally:
            handle.remove()
        with torch.no_grad():
            features = captured[-1]
            weights = grad.mean(dim=(2, 3), keepdim=True)
            cam = torch.relu((weights * features).sum(dim=1))
        return cam.detach().float().cpu().numpy()

    def _smoothgrad(self, pixels: torch.Tensor, targets: Sequence[int] | np.ndarray | None) -> np.ndarray:
        import torch

        with torch.no_grad():
            chosen = self._targets(self.net(pixel_values=pixels).logits, targets)
        # the same noise for every face, whatever its batch: a face's map depends on it alone
        generator = torch.Generator(device=pixels.device).manual_seed(0)
        shape = (SMOOTHGRAD_SAMPLES, 1, *pixels.shape[1:])
        noises = torch.randn(shape, generator=generator, device=pixels.device, dtype=pixels.dtype)
        total = torch.zeros_like(pixels)
        sigma = SMOOTHGRAD_SIGMA * self.input_range
        for noise in noises:
            noisy = (pixels + sigma * noise).requires_grad_(True)
            with torch.enable_grad():
                logits = self.net(pixel_values=noisy).logits
                (grad,) = torch.autograd.grad(logits.gather(1, chosen[:, None]).sum(), noisy)
            total += grad
        with torch.no_grad():
            reference = pixels.mean(dim=(2, 3), keepdim=True)
            saliency = torch.relu((total / SMOOTHGRAD_SAMPLES * (pixels - reference)).sum(dim=1))
        return saliency.detach().float().cpu().numpy()
