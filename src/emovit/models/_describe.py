"""What `emovit info` shows for any architecture family, read without loading the weights.

Each family describes its shape in its own config fields: a ViT by ``patch_size``,
``hidden_size`` and layers, a MobileViT by ``neck_hidden_sizes`` and ``hidden_sizes``, a ResNet
or ConvNeXt by stage ``hidden_sizes`` and ``depths``, a Swin by ``embed_dim`` and windows. The
description lists the fields of the checkpoint's family that its config sets, and nothing else
(no empty values for fields another family would have).

Examples:
    >>> architecture_fields({"model_type": "resnet", "depths": [2, 2], "hidden_size": None})
    {'depths': [2, 2]}
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from emovit.labels import LabelMap
from emovit.models._loading import DEFAULT_MODEL, RANDOM_WEIGHTS_KEY, read_model_config, resolve_model

__all__ = ["ModelInfo", "architecture_fields", "count_parameters", "describe_model"]

_TRANSFORMER = (
    *("image_size", "patch_size", "hidden_size", "num_hidden_layers", "num_attention_heads"),
    *("intermediate_size", "mlp_ratio", "num_channels"),
)
_STAGES = ("image_size", "patch_size", "hidden_sizes", "depths", "num_attention_heads", "num_channels")
_WINDOWED = (
    *("image_size", "patch_size", "embed_dim", "depths", "num_heads", "window_size", "mlp_ratio"),
    "num_channels",
)
_RESNET = (
    "image_size",
    "embedding_size",
    "hidden_sizes",
    "depths",
    "layer_type",
    "groups_width",
    "num_channels",
)

#: The config fields that describe each family's shape, in display order, by ``model_type``.
FAMILY_FIELDS: dict[str, tuple[str, ...]] = {
    **dict.fromkeys(
        ("vit", "deit", "beit", "data2vec-vision", "dinov2", "dinov2_with_registers", "vit_msn", "vit_mae"),
        _TRANSFORMER,
    ),
    **dict.fromkeys(("ijepa", "vit_hybrid", "yolos"), _TRANSFORMER),
    "mobilevit": (
        *("image_size", "patch_size", "neck_hidden_sizes", "hidden_sizes", "num_attention_heads"),
        *("mlp_ratio", "expand_ratio", "conv_kernel_size", "num_channels"),
    ),
    "mobilevitv2": (
        *("image_size", "patch_size", "width_multiplier", "n_attn_blocks", "base_attn_unit_dims"),
        *("expand_ratio", "num_channels"),
    ),
    **dict.fromkeys(("resnet", "regnet", "bit"), _RESNET),
    **dict.fromkeys(("convnext", "convnextv2"), ("image_size", "patch_size", "num_stages", *_STAGES[2:])),
    **dict.fromkeys(("levit", "pvt", "pvt_v2", "poolformer", "efficientformer", "swiftformer"), _STAGES),
    **dict.fromkeys(("swin", "swinv2", "donut-swin", "focalnet", "dinat", "nat"), _WINDOWED),
    "efficientnet": (
        *("image_size", "width_coefficient", "depth_coefficient", "hidden_dim", "num_hidden_layers"),
        "num_channels",
    ),
}
#: Fields shown for families not listed above, where the config sets them.
GENERIC_FIELDS: tuple[str, ...] = (
    *("image_size", "patch_size", "embed_dim", "hidden_size", "hidden_sizes", "neck_hidden_sizes"),
    *("embedding_size", "depths", "num_hidden_layers", "num_attention_heads", "num_heads"),
    *("intermediate_size", "num_channels"),
)
_BUFFERS = (".running_mean", ".running_var", ".num_batches_tracked")
_PROCESSOR_FIELDS = (
    *("size", "resample", "do_rescale", "rescale_factor", "do_normalize", "image_mean", "image_std"),
    *("do_center_crop", "crop_size"),
)


def architecture_fields(config: Mapping[str, Any]) -> dict[str, Any]:
    """The shape fields of a config (``config.json`` as a dict) for its family, in order,
    leaving out fields the config does not set."""
    keys = FAMILY_FIELDS.get(str(config.get("model_type", "")), GENERIC_FIELDS)
    return {key: config[key] for key in keys if config.get(key) is not None}


def count_parameters(folder: str | os.PathLike[str]) -> int | None:
    """Parameters in a folder's ``*.safetensors`` files, read from their headers, leaving out
    normalisation statistics (BatchNorm's running mean and variance); None without weights."""
    from safetensors import SafetensorError, safe_open

    from emovit.errors import ModelLoadError

    total = 0
    for file in sorted(Path(folder).glob("*.safetensors")):
        try:
            with safe_open(str(file), framework="numpy") as f:
                for key in f.keys():  # noqa: SIM118 - safe_open is not a Mapping
                    if key.endswith(_BUFFERS):
                        continue
                    n = 1
                    for dim in f.get_slice(key).get_shape():
                        n *= dim
                    total += n
        except (SafetensorError, OSError) as exc:  # cut short, or not safetensors at all
            raise ModelLoadError(f"{file}: not readable safetensors weights ({exc})") from None
    return total or None


@dataclass
class ModelInfo:
    """What `emovit info` shows: architecture, labels, parameter count and processor settings."""

    name: str
    path: Path
    config: dict[str, Any]
    processor: dict[str, Any]
    parameters: int | None
    label_map: LabelMap = field(repr=False)

    @property
    def random_weights(self) -> bool:
        """True for models emovit built with random weights (their output means nothing)."""
        return bool(self.config.get(RANDOM_WEIGHTS_KEY))

    def framing(self) -> dict[str, Any]:
        """How faces are cropped for this model: its ``emovit.json`` record (``recorded``
        true) or the default every checkpoint without one gets; an unreadable record is
        reported in ``error`` (loading the model refuses it)."""
        from emovit.errors import ModelLoadError
        from emovit.models._framing import Framing, read_framing

        try:
            framing = read_framing(self.path)
        except ModelLoadError as exc:
            return {"recorded": True, "error": str(exc)}
        return {**(framing or Framing.default()).to_dict(), "recorded": framing is not None}

    def onnx(self) -> dict[str, Any] | None:
        """The folder's ``model.onnx`` as its ``export_info.json`` records it (None without
        one): ``quantize`` (null: fp32), ``opset``, and ``matches_weights``: whether it was
        exported from the safetensors weights beside it (null: not recorded, or no weights;
        false: stale, so ``--backend auto`` runs the weights with torch)."""
        import json

        from emovit.backends.onnx_backend import EXPORT_INFO, ONNX_FILE
        from emovit.models._loading import export_matches_weights

        if not (self.path / ONNX_FILE).is_file():
            return None
        try:
            info = json.loads((self.path / EXPORT_INFO).read_text(encoding="utf-8"))
            info = info if isinstance(info, dict) else {}
        except (OSError, ValueError):
            info = {}
        out: dict[str, Any] = {"file": ONNX_FILE, "exported_by_emovit": bool(info)}
        out |= {"quantize": info.get("quantize"), "opset": info.get("opset")}
        out["matches_weights"] = export_matches_weights(self.path)
        return out

    def to_dict(self) -> dict[str, Any]:
        """The architecture table as a JSON-ready dict: only the fields that apply to the
        model's family (no null values); ``parameters`` is left out for ONNX-only folders;
        ``framing`` (how faces are cropped) and ``onnx`` (left out without a model.onnx) last."""
        c = self.config
        id2label = c.get("id2label") or {}
        out: dict[str, Any] = {
            "name": self.name,
            "path": str(self.path),
            "architecture": (c.get("architectures") or [c["model_type"]])[0],
            "model_type": c["model_type"],
            **architecture_fields(c),
            "labels": list(self.label_map.names),
            "checkpoint_labels": [
                str(id2label.get(str(i), name)) for i, name in enumerate(self.label_map.names)
            ],
        }
        if self.parameters is not None:
            out["parameters"] = self.parameters
        out["processor"] = {
            k: self.processor[k] for k in _PROCESSOR_FIELDS if self.processor.get(k) is not None
        }
        out["random_weights"] = self.random_weights
        out["framing"] = self.framing()
        onnx = self.onnx()
        if onnx is not None:
            out["onnx"] = onnx
        return out


def describe_model(name_or_path: str | os.PathLike[str] = DEFAULT_MODEL, **resolve_kw: Any) -> ModelInfo:
    """Read a model's architecture table without loading its weights.

    Examples:
        >>> describe_model("default").to_dict()["model_type"]  # doctest: +SKIP
        'mobilevit'
    """
    from emovit.preprocess import read_processor_config

    folder = resolve_model(name_or_path, **resolve_kw)
    config = read_model_config(folder)
    return ModelInfo(
        name=os.fspath(name_or_path),
        path=folder,
        config=config,
        processor=read_processor_config(folder),
        parameters=count_parameters(folder),
        label_map=LabelMap.from_id2label(config.get("id2label") or {}),
    )
