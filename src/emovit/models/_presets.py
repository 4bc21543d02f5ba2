"""Architecture presets: a `ViTConfig` and its processor config, by name.

`vit-base-patch16-224` is the reference architecture (ViT-B/16 at 224x224, as in
``dima806/facial_emotions_image_detection``); the others are sized for CPUs and tests.
Any `ViTConfig` field can be overridden.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from emovit.errors import OptionError
from emovit.labels import EMOTIONS

__all__ = ["ARCH_PRESETS", "ArchPreset", "REFERENCE_ID2LABEL", "apply_config_overrides", "arch_preset"]

#: The reference checkpoint's class order.
REFERENCE_ID2LABEL: dict[int, str] = dict(
    enumerate(("sad", "disgust", "angry", "neutral", "fear", "surprise", "happy"))
)


def _processor(size: int, mean: float = 0.5, std: float = 0.5) -> dict[str, Any]:
    return {
        "do_normalize": True,
        "do_rescale": True,
        "do_resize": True,
        "image_mean": [mean] * 3,
        "image_processor_type": "ViTImageProcessor",
        "image_std": [std] * 3,
        "resample": 2,
        "rescale_factor": 1 / 255,
        "size": {"height": size, "width": size},
    }


@dataclass(frozen=True)
class ArchPreset:
    """A named ViT architecture: config fields and the matching processor config."""

    name: str
    description: str
    config: dict[str, Any]
    processor: dict[str, Any] = field(default_factory=dict)
    model_type: str = "vit"

    def processor_config(self, image_size: int | None = None) -> dict[str, Any]:
        """The preset's ``preprocessor_config.json`` content, for `image_size` when the model's
        input size was overridden (``--set image_size=64``)."""
        from emovit.preprocess import with_input_size

        return dict(self.processor) if image_size is None else with_input_size(self.processor, image_size)

    def build_config(self, id2label: dict[int, str] | None = None, **overrides: Any) -> Any:
        """A transformers config for this preset (labels default to the canonical seven)."""
        from transformers import AutoConfig

        labels = id2label if id2label is not None else dict(enumerate(EMOTIONS))
        config = AutoConfig.for_model(
            self.model_type,
            **self.config,
            id2label={int(k): v for k, v in labels.items()},
            label2id={v: int(k) for k, v in labels.items()},
        )
        return apply_config_overrides(config, overrides)

    def build_model(self, id2label: dict[int, str] | None = None, **overrides: Any) -> Any:
        """A randomly initialised model of this preset, ready to train from scratch.

        Normalisation layers start as identities (scale 1, shift 0): transformers 5 draws
        MobileViT's BatchNorm scales from N(0, 0.02), which shrinks the signal ~50x per layer,
        so that the network's output is constant and it never starts to learn.
        """
        from transformers import AutoModelForImageClassification

        model = AutoModelForImageClassification.from_config(self.build_config(id2label, **overrides))
        identity_norms(model)
        return model


def identity_norms(model: Any, names: Collection[str] | None = None) -> None:
    """Set normalisation layers (batch, group, layer norms) to identities: scale 1, shift 0.

    All of them, or only the modules named in `names`. transformers 5 draws MobileViT's
    BatchNorm scales from N(0, 0.02), which shrinks the signal ~50x per layer: a model built
    from scratch, and the layers drawn afresh when ``--init`` widens a checkpoint
    (``--set``), start as identities instead.
    """
    import torch

    norms = (torch.nn.modules.batchnorm._BatchNorm, torch.nn.GroupNorm, torch.nn.LayerNorm)
    with torch.no_grad():
        for name, module in model.named_modules():
            if names is not None and name not in names:
                continue
            if isinstance(module, norms) and getattr(module, "weight", None) is not None:
                module.weight.fill_(1.0)
                if module.bias is not None:
                    module.bias.zero_()


def _vit(**kw: Any) -> dict[str, Any]:
    base = {
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.0,
        "attention_probs_dropout_prob": 0.0,
        "initializer_range": 0.02,
        "layer_norm_eps": 1e-12,
        "num_channels": 3,
        "qkv_bias": True,
    }
    return {**base, **kw}


ARCH_PRESETS: dict[str, ArchPreset] = {
    p.name: p
    for p in (
        ArchPreset(
            "vit-base-patch16-224",
            "the reference architecture: ViT-B/16, 224x224, 86M parameters",
            _vit(
                image_size=224,
                patch_size=16,
                hidden_size=768,
                num_hidden_layers=12,
                num_attention_heads=12,
                intermediate_size=3072,
                encoder_stride=16,
            ),
            _processor(224),
        ),
        ArchPreset(
            "vit-small-48",
            "CPU-sized ViT for 48x48 faces: patch 4, hidden 256, 8 layers, 6M parameters",
            _vit(
                image_size=48,
                patch_size=4,
                hidden_size=256,
                num_hidden_layers=8,
                num_attention_heads=8,
                intermediate_size=768,
                encoder_stride=4,
            ),
            _processor(48),
        ),
        ArchPreset(
            "vit-student-48",
            "a ViT for 48x48 faces: patch 6 (64 tokens), hidden 160, 6 layers, 1.9M parameters",
            _vit(
                image_size=48,
                patch_size=6,
                hidden_size=160,
                num_hidden_layers=6,
                num_attention_heads=4,
                intermediate_size=640,
                encoder_stride=6,
            ),
            _processor(48),
        ),
        ArchPreset(
            "vit-student-64",
            "the plain ViT the default model is compared with: 64x64, patch 8 (64 tokens), hidden 160, "
            "6 layers, 1.9M parameters (the input size of the CNN teacher and of the MobileViT)",
            _vit(
                image_size=64,
                patch_size=8,
                hidden_size=160,
                num_hidden_layers=6,
                num_attention_heads=4,
                intermediate_size=640,
                encoder_stride=8,
            ),
            _processor(64),
        ),
        ArchPreset(
            "vit-tiny",
            "CPU-sized ViT for 48x48 faces: patch 6, hidden 192, 6 layers, 2.7M parameters",
            _vit(
                image_size=48,
                patch_size=6,
                hidden_size=192,
                num_hidden_layers=6,
                num_attention_heads=3,
                intermediate_size=768,
                encoder_stride=6,
            ),
            _processor(48),
        ),
        ArchPreset(
            "vit-mini-64",
            "a small ViT for 64x64 faces (the explanation tests' model): patch 8 (64 tokens), hidden 96, "
            "4 layers, 0.47M parameters",
            _vit(
                image_size=64,
                patch_size=8,
                hidden_size=96,
                num_hidden_layers=4,
                num_attention_heads=4,
                intermediate_size=384,
                encoder_stride=8,
            ),
            _processor(64),
        ),
        ArchPreset(
            "mobilevit-xxs-64",
            "MobileViT-XXS (convolutions + transformer blocks) at 64x64, 1.0M parameters",
            {
                "image_size": 64,
                "num_channels": 3,
                "neck_hidden_sizes": [16, 16, 24, 48, 64, 80, 320],
                "hidden_sizes": [64, 80, 96],
                "expand_ratio": 2.0,
                "hidden_dropout_prob": 0.1,
                "classifier_dropout_prob": 0.1,
            },
            _processor(64, mean=0.0, std=1.0),
            model_type="mobilevit",
        ),
        ArchPreset(
            "resnet-teacher-64",
            "a small ResNet (basic blocks 2-2-2-2, widths 32-256) at 64x64: a CNN teacher for distillation",
            {
                "image_size": 64,
                "num_channels": 3,
                "embedding_size": 32,
                "hidden_sizes": [32, 64, 128, 256],
                "depths": [2, 2, 2, 2],
                "layer_type": "basic",
            },
            _processor(64),
            model_type="resnet",
        ),
        ArchPreset(
            "vit-test",
            "a few-kB ViT for tests: 30x30, patch 2, hidden 32, 2 layers",
            _vit(
                image_size=30,
                patch_size=2,
                hidden_size=32,
                num_hidden_layers=2,
                num_attention_heads=4,
                intermediate_size=37,
                encoder_stride=2,
            ),
            _processor(30),
        ),
    )
}


def arch_preset(name: str) -> ArchPreset:
    """Look up a preset by name (`OptionError` for ``arch``, listing the known ones)."""
    try:
        return ARCH_PRESETS[name]
    except KeyError:
        raise OptionError(
            f"unknown architecture preset {name!r}; known: {', '.join(ARCH_PRESETS)}", option="arch"
        ) from None


def apply_config_overrides(config: Any, overrides: Mapping[str, Any]) -> Any:
    """Set config fields (``--set KEY=VALUE``) on a transformers config, checked: a key that is
    not a field of this model type's config (a typo would otherwise be kept silently as an
    unused attribute) or a value the field refuses is an `OptionError` for ``overrides`` (``--set``)."""
    import difflib

    known = set(config.to_dict())
    for key, value in overrides.items():
        if key not in known:
            close = difflib.get_close_matches(key, sorted(known), n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise OptionError(
                f"{key!r} is not a field of the {config.model_type} config{hint}", option="overrides"
            )
        try:
            setattr(config, key, value)
        except Exception as exc:  # noqa: BLE001 - transformers' strict fields raise their own types
            reason = str(exc).strip().splitlines()[-1].strip() if str(exc).strip() else type(exc).__name__
            raise OptionError(f"{key}={value!r} is refused by the {config.model_type} config: {reason}",
                              option="overrides") from None  # fmt: skip
    return config
