"""The generated model card (``README.md``) of a trained model folder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from emovit.training.trainer import TrainConfig, TrainResult

__all__ = ["architecture_rows", "write_model_card"]


def _table(rows: list[list[Any]], header: list[str]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


#: The config fields that describe each model family's shape, in table order.
_ARCH_FIELDS: dict[str, tuple[str, ...]] = {
    "vit": (
        *("image_size", "patch_size", "hidden_size", "num_hidden_layers", "num_attention_heads"),
        *("intermediate_size", "num_channels"),
    ),
    "mobilevit": (
        *("image_size", "patch_size", "neck_hidden_sizes", "hidden_sizes", "num_attention_heads"),
        *("mlp_ratio", "expand_ratio", "conv_kernel_size", "num_channels"),
    ),
    "resnet": ("image_size", "embedding_size", "hidden_sizes", "depths", "layer_type", "num_channels"),
}


def architecture_rows(config: dict[str, Any]) -> list[list[Any]]:
    """``[field, value]`` rows describing a model config (known families; a generic set otherwise)."""
    keys = _ARCH_FIELDS.get(config.get("model_type", ""), _ARCH_FIELDS["vit"])
    rows = [["model_type", config.get("model_type")]]
    rows += [["architecture", config["architectures"][0]]] if config.get("architectures") else []
    return rows + [[k, config[k]] for k in keys if k in config]


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in counts.items())


def write_model_card(
    out: Path,
    cfg: TrainConfig,
    result: TrainResult,
    classes: list[str],
    train_counts: dict[str, int],
    val_counts: dict[str, int],
) -> Path:
    """Write ``README.md`` describing data, architecture, recipe and validation metrics."""
    config_path = out / "config.json"
    config = json.loads(config_path.read_text()) if config_path.is_file() else {}
    arch_rows = architecture_rows(config)
    best = result.best_metrics
    history = [
        [
            h["epoch"],
            f"{h['train_loss']:.4f}",
            f"{h['val_accuracy']:.4f}",
            f"{h['val_macro_f1']:.4f}",
            h["epoch_time_s"],
        ]
        for h in result.history
    ]
    start = f"`--init {cfg.init}`" if cfg.init else f"from scratch (`--arch {cfg.arch or 'vit-tiny'}`)"
    aug = cfg.augment
    text = f"""---
library_name: transformers
pipeline_tag: image-classification
tags: [emovit, facial-expression-recognition, vit]
---

# emovit model: {out.name}

A `{(config.get("architectures") or ["?"])[0]}` emotion classifier trained with `emovit train`
{start} on `{cfg.data}`. Labels (id order): {", ".join(classes)}.

## Data

| split | images | per class |
|---|---|---|
| train (`{cfg.train_split}`) | {sum(train_counts.values())} | {_counts(train_counts)} |
| validation (`{cfg.val_split}`) | {sum(val_counts.values())} | {_counts(val_counts)} |

Model selection used validation macro-F1 only; no test data was seen in training.

## Architecture

{_table(arch_rows, ["field", "value"])}

## Training recipe

AdamW (lr {cfg.lr}, weight decay {cfg.weight_decay}), {cfg.warmup_epochs} warm-up epochs then
cosine decay to {cfg.min_lr}; global batch {cfg.batch_size} (gradient accumulation
{cfg.grad_accum}); label smoothing {cfg.label_smoothing}; class balance `{cfg.balance}`;
augmentation: flip {aug.hflip}, rotation ±{aug.rotate_deg}°, scale ±{aug.scale},
translation ±{aug.translate}, brightness ±{aug.brightness}, contrast ±{aug.contrast},
random erasing p={aug.erase_p}, mixup alpha {aug.mixup_alpha}, cutmix alpha {aug.cutmix_alpha};
seed {cfg.seed}; precision `{cfg.precision}`. The full resolved configuration is in
`training_config.json`, the per-epoch metrics in `metrics.jsonl`.

Epochs run: {result.epochs_run} (stopped by: {result.stopped}); total training wall time
{result.wall_time_s / 60:.1f} min.

## Validation metrics (best epoch {result.best_epoch})

accuracy {best.get("val_accuracy", float("nan")):.4f}, macro-F1 {best.get("val_macro_f1", float("nan")):.4f}

{_table(history, ["epoch", "train loss", "val accuracy", "val macro-F1", "seconds"])}

Test-set figures belong in a separate `emovit evaluate` report: validation numbers were used
for selection and are optimistic.

## Intended use and limits

For research and for aggregate analysis of facial expressions. Facial expression is not
emotion: a model like this reads the configuration of a face, not what a person feels, and
must not drive decisions about people (hiring, policing, grading, health). Data such as
FER2013 is noisy, mostly frontal, low-resolution and skewed towards happy and neutral faces;
accuracy differs across classes (see above) and likely across demographic groups.
"""
    path = out / "README.md"
    path.write_text(text)
    return path
