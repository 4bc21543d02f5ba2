"""Package a trained model as emovit's embedded default: evaluate it honestly on the test
split (plain, flip-TTA, and leak-free), copy its files and write the model card.

Usage: python -m emovit.training.ship RUN_DIR DEST_DIR --data DATA [--speed SPEED.json]
       [--compare OTHER_RUN ...]   (runs of other architectures, for the card's "why this one")
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path
from typing import Any

from emovit.training.card import _table, architecture_rows

__all__ = ["ship"]

_FILES = ("config.json", "model.safetensors", "preprocessor_config.json")


def _run_state(run: Path) -> dict[str, Any]:
    """Epochs, best epoch and training seconds of a run: from its checkpoint, or from
    ``run_state.json`` (all a finished run keeps in git)."""
    checkpoint = run / "checkpoint" / "state.json"
    if checkpoint.is_file():
        return json.loads(checkpoint.read_text())
    done = run / "run_state.json"
    if not done.is_file():
        return {}
    state = json.loads(done.read_text())
    return {
        "epoch": state["epochs_run"],
        "best_epoch": state["best_epoch"],
        "elapsed_s": state["wall_time_s"],
    }


def _stages(run: Path) -> list[tuple[Path, dict[str, Any]]]:
    """The training stages that made `run`, first to last: `run` and, following ``--init``,
    each earlier run it continued from (a run folder with its ``training_config.json``)."""
    stages: list[tuple[Path, dict[str, Any]]] = []
    current: Path | None = run
    while current is not None and (current / "training_config.json").is_file() and len(stages) < 16:
        training = json.loads((current / "training_config.json").read_text())
        stages.insert(0, (current, training))
        init = training["config"].get("init")
        current = Path(init) if init else None
    return stages


def _run_summary(run: Path) -> dict[str, Any]:
    """Architecture, size and validation progress of a training run (for comparisons)."""
    from emovit.models._loading import _count_parameters

    config = json.loads((run / "config.json").read_text())
    history: list[dict[str, Any]] = []
    elapsed = 0.0
    # a run continued from earlier ones (--init) is measured from the first stage's start
    for stage, _ in _stages(run) or [(run, {})]:
        lines = (stage / "metrics.jsonl").read_text().splitlines()
        for line in filter(str.strip, lines):
            h = json.loads(line)
            elapsed += float(h["epoch_time_s"])
            history.append({**h, "epoch": len(history) + 1, "elapsed_s": elapsed})
    return {
        "name": run.name,
        "architecture": (config.get("architectures") or [config.get("model_type", "?")])[0],
        "parameters": _count_parameters(run),
        "image_size": config.get("image_size"),
        "history": history,
    }


def _comparison(runs: list[dict[str, Any]]) -> str:
    """A table of validation accuracy reached after equal training time."""
    horizon = min(r["history"][-1]["elapsed_s"] for r in runs)
    rows = []
    for r in runs:
        within = [h for h in r["history"] if h["elapsed_s"] <= horizon * 1.05] or r["history"][:1]
        best = max(r["history"], key=lambda h: h["val_accuracy"])
        rows.append(
            [
                f"`{r['name']}` ({r['architecture']}, {r['image_size']} px)",
                f"{(r['parameters'] or 0) / 1e6:.2f} M",
                f"{sum(h['epoch_time_s'] for h in r['history']) / len(r['history']):.0f}",
                f"{max(h['val_accuracy'] for h in within):.3f} (epoch {within[-1]['epoch']})",
                f"{best['val_accuracy']:.3f} (epoch {best['epoch']} of {len(r['history'])})",
            ]
        )
    header = ["run", "parameters", "s/epoch (2 cores)", f"val accuracy within {horizon / 60:.0f} min"]
    return _table(rows, [*header, "best val accuracy"])


def ship(
    run: Path,
    dest: Path,
    data: Path,
    speed: Path | None = None,
    compare: list[Path] | None = None,
    onnx: bool = False,
) -> dict[str, Any]:
    """Evaluate `run` on ``data``'s test split and write the default-model folder `dest`
    (with ``onnx``: also an fp32 ``model.onnx``, verified against torch, for the fast backend)."""
    from emovit.evaluation import evaluate

    train_dir = data / "train"
    reports = {
        "plain": evaluate(run, data, dest / "evaluation", split="test"),
        "tta": evaluate(run, data, None, split="test", tta=True),
        "leak_free": evaluate(run, data, None, split="test", exclude_leaks=train_dir),
    }
    dest.mkdir(parents=True, exist_ok=True)
    for name in _FILES:
        shutil.copy(run / name, dest / name)
    from emovit.backends import ONNX_FILE

    if onnx:
        import tempfile

        from emovit.backends.export import export_onnx

        with tempfile.TemporaryDirectory() as tmp:
            export_onnx(str(run), Path(tmp), check_images=64)
            shutil.copy(Path(tmp) / ONNX_FILE, dest / ONNX_FILE)
    else:
        (dest / ONNX_FILE).unlink(missing_ok=True)
    config = json.loads((dest / "config.json").read_text())
    config.pop("emovit_random_weights", None)
    (dest / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    shutil.move(str(dest / "evaluation" / "confusion_matrix.png"), dest / "confusion_matrix.png")
    metrics = {k: r.metrics for k, r in reports.items()}
    (dest / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    shutil.rmtree(dest / "evaluation")
    stages = _stages(run)
    teachers = {Path(t["config"]["teacher"]) for _, t in stages if t["config"].get("teacher")}
    teacher_s = sum(float(_run_state(t).get("elapsed_s", 0.0)) for t in teachers)
    speed_data = json.loads(speed.read_text()) if speed and speed.is_file() else None
    processor = json.loads((dest / "preprocessor_config.json").read_text())
    others = [_run_summary(run)] + [_run_summary(c) for c in compare or [] if (c / "metrics.jsonl").is_file()]
    comparison = _comparison(others) if len(others) > 1 else ""
    card = _card(config, processor, stages, teacher_s, metrics, speed_data, comparison, others[0])
    (dest / "README.md").write_text(card)
    return metrics


_WHY = {
    "vit": (
        "a plain `ViTForImageClassification`, the reference model's family. Vision transformers "
        "trained from scratch on 29k faces sit at chance level for many epochs on these CPUs, "
        "while a CNN learns at once; distillation passes the CNN's inductive bias to the ViT."
    ),
    "mobilevit": (
        "a `MobileViTForImageClassification`: a hybrid of MobileNet-style convolutions and "
        "transformer blocks that attend across the whole face, built for small data and fast CPU "
        "inference. It was chosen over a plain ViT because it clearly wins on accuracy per compute "
        "on these CPUs: a plain ViT trained from scratch (with the same teacher) stays near chance "
        "for many epochs, while the convolutions give the hybrid the locality prior that 29k "
        "low-resolution faces cannot teach a pure transformer in a few CPU-hours (table below)."
    ),
}


def _recipe(run: Path, training: dict[str, Any], state: dict[str, Any]) -> str:
    """One training stage in words."""
    cfg = training["config"]
    if cfg.get("init"):
        start = f"continued from `{Path(cfg['init']).name}` (`--init`)"
    else:
        start = f"from scratch (`--arch {cfg.get('arch')}`)"
    teacher = (
        f"from the labels and, DeiT-style, from the soft predictions of the CNN teacher "
        f"`{Path(cfg['teacher']).name}` (a small transformers ResNet at 64x64, trained first and used only "
        f"in training) on the same augmented batches (distillation weight {cfg['distill_alpha']}, "
        f"temperature {cfg['distill_temperature']})"
        if cfg.get("teacher")
        else "from the labels alone"
    )
    return (
        f"`{run.name}`, {start}, learned {teacher}: AdamW lr {cfg['lr']} (weight decay "
        f"{cfg['weight_decay']}), {cfg['warmup_epochs']} warm-up epoch(s) then cosine decay, batch "
        f"{cfg['batch_size']}, label smoothing {cfg['label_smoothing']}, flip/affine/photometric "
        f"augmentation and random erasing, seed {cfg['seed']}; {state.get('epoch', '?')} epochs, best "
        f"epoch {state.get('best_epoch', '?')} ({float(state.get('elapsed_s', 0.0)) / 3600:.1f} h)."
    )


def _card(
    config: dict[str, Any],
    processor: dict[str, Any],
    stages: list[tuple[Path, dict[str, Any]]],
    teacher_s: float,
    metrics: dict[str, dict[str, Any]],
    speed: dict[str, Any] | None,
    comparison: str = "",
    summary: dict[str, Any] | None = None,
) -> str:
    resolved = stages[-1][1]["resolved"]
    states = [_run_state(run) for run, _ in stages]
    parameters = f"{summary['parameters'] / 1e6:.2f} M" if summary and summary.get("parameters") else "?"
    labels = ", ".join(config["id2label"][str(i)] for i in range(len(config["id2label"])))
    plain, tta, lf = metrics["plain"], metrics["tta"], metrics["leak_free"]
    arch = (config.get("architectures") or [config.get("model_type", "?")])[0]
    kind = config.get("model_type", "vit")
    per_class = [
        [label, f"{c['precision']:.3f}", f"{c['recall']:.3f}", f"{c['f1']:.3f}", c["support"]]
        for label, c in plain["per_class"].items()
    ]
    stage_s = [float(state.get("elapsed_s", 0.0)) for state in states]
    if len(stages) == 1:
        recipe = _recipe(stages[0][0], stages[0][1], states[0])
    else:
        recipe = "\n".join(
            f"{i}. Stage {i}: {_recipe(run, training, state)}"
            for i, ((run, training), state) in enumerate(zip(stages, states, strict=True), start=1)
        )
    times = (["teacher " + f"{teacher_s / 3600:.1f} h"] if teacher_s else []) + [
        (f"stage {i} " if len(stages) > 1 else "model ") + f"{t / 3600:.1f} h"
        for i, t in enumerate(stage_s, start=1)
    ]
    total_s = teacher_s + sum(stage_s)
    size = processor.get("size", {})
    mean, std = processor.get("image_mean", [0.5])[0], processor.get("image_std", [0.5])[0]
    normalize = "no normalization"
    if processor.get("do_normalize"):
        normalize = f"normalize with mean {mean} and std {std}"
    speed_line = "see `benchmarks/` (`emovit bench`)"
    if speed:
        others = ", ".join(f"{k} {v:.0f}" for k, v in speed.get("per_backend", {}).items())
        speed_line = (
            f"{speed['faces_per_s']:.0f} faces/s classifying decoded face crops in batches of "
            f"{speed.get('batch_size', '?')} on 2 CPU cores with `{speed.get('backend', '?')}`, the backend "
            f"`--backend auto` picks for this folder (all backends: {others}); reproduce with "
            f"`{speed.get('command', 'emovit bench')}`"
        )
    why = _WHY.get(kind, f"a `{arch}`.")
    compare_block = (
        f"\nRuns compared (validation split only; same data, seed and 2 cores):\n\n{comparison}\n"
        if comparison
        else ""
    )
    return f"""---
library_name: transformers
pipeline_tag: image-classification
tags: [emovit, facial-expression-recognition, {kind}, fer2013]
---

# emovit default model

The model `emovit predict` uses when no `--model` is given: a `{arch}` trained by
emovit's own tools (`make train-default`) on FER2013, offline, on 2 CPU cores. It loads
with `AutoModelForImageClassification` too.

## Data and splits

FER2013 (48x48 grey faces) in the standard splits: Training ({resolved["train_images"]} images) for
training, PublicTest ({resolved["val_images"]}) for model selection (validation macro-F1) and early
stopping, PrivateTest ({plain["images_in_split"]}) only for the figures below, never for any choice.

## Preprocessing

Grey input is replicated to 3 channels (emovit decodes everything to RGB); resize to
{size.get("height", "?")}x{size.get("width", "?")} (bilinear), rescale 1/255, {normalize}
(`preprocessor_config.json`, equal to what transformers' image processor does). Photos go
through face detection first (YuNet), and each face crop is classified.

## Architecture

Why this architecture: {why}
{compare_block}
{_table(architecture_rows(config), ["field", "value"])}

Parameters: {parameters}. Labels (id order): {labels}.

## Training recipe

{recipe}

Resolved configurations: `training_config.json` of each run (`runs/default/`).

Training wall time on 2 CPU cores: {" + ".join(times)} = {total_s / 3600:.1f} h.

## Metrics on FER2013 test (PrivateTest)

| | accuracy | macro-F1 | images |
|---|---|---|---|
| plain inference | {plain["accuracy"]:.4f} | {plain["macro_f1"]:.4f} | {plain["images"]} |
| flip test-time augmentation | {tta["accuracy"]:.4f} | {tta["macro_f1"]:.4f} | {tta["images"]} |
| leak-free (no copy in train) | {lf["accuracy"]:.4f} | {lf["macro_f1"]:.4f} | {lf["images"]} |

{_table(per_class, ["class", "precision", "recall", "F1", "support"])}

Calibration: ECE {plain["ece"]:.3f}. Confusion matrix:

![confusion matrix](confusion_matrix.png)

Reproduce: `emovit evaluate ../shared/data/fer2013/test --model default -o report
[--exclude-leaks ../shared/data/fer2013/train] [--tta]`.

## Speed

{speed_line}.

## Intended use, limits and biases

For research, demos and aggregate analysis of facial expressions. Facial expression is
not emotion: the model reads the configuration of a face, not what a person feels, and
must not drive decisions about people (hiring, policing, grading, health, security).
FER2013 is noisy (duplicate images with conflicting labels), low-resolution, mostly
frontal, and skewed towards happy and neutral faces with few disgust examples; accuracy
differs by class (above) and, untested here, by age, skin tone and culture.
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("run", type=Path)
    parser.add_argument("dest", type=Path)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--speed", type=Path, default=Path("benchmarks/results/default_speed.json"))
    parser.add_argument("--compare", type=Path, nargs="*", default=[], help="other runs for the card")
    parser.add_argument("--onnx", action="store_true", help="also ship an fp32 model.onnx")
    args = parser.parse_args()
    state_path = args.run / "run_state.json"
    state = json.loads(state_path.read_text()) if state_path.is_file() else {}
    if not state.get("complete"):
        done, total = state.get("epochs_run", 0), state.get("epochs", "?")
        print(
            f"{args.run}: training is not finished ({done} of {total} epochs); run `make train-default` again"
        )
        return
    metrics = ship(args.run, args.dest, args.data, args.speed, args.compare, args.onnx)
    print(json.dumps({k: {m: v[m] for m in ("accuracy", "macro_f1", "images")} for k, v in metrics.items()}))


if __name__ == "__main__":
    main()
