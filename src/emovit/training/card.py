"""Model cards (``README.md``): the card of every training run, and the card of a released
model (the embedded default), which adds honest test figures, the training stages and speed.

Both are written here, from the same parts (front matter, architecture table, limits), so
that a released model describes itself the way its run did.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from emovit.fileio import write_text_atomic

if TYPE_CHECKING:
    from emovit.models import Framing
    from emovit.training.trainer import TrainConfig, TrainResult

__all__ = [
    "RUN_RECORD",
    "architecture_rows",
    "markdown_table",
    "on_gpu",
    "record_folder",
    "run_stages",
    "run_state",
    "run_summary",
    "write_model_card",
    "write_release_card",
]

_LIMITS_INTRO = (
    "Facial expression is not emotion: a model like this reads the configuration of a face, not what a "
    "person feels, and must not drive decisions about people (hiring, policing, grading, health"
)


def markdown_table(rows: Sequence[Sequence[Any]], header: Sequence[str]) -> str:
    """A Markdown table of `rows` under `header`."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def architecture_rows(config: dict[str, Any]) -> list[list[Any]]:
    """``[field, value]`` rows describing a model config: its type, class and the shape fields
    of its family (`emovit.models.architecture_fields`)."""
    from emovit.models import architecture_fields

    rows = [["model_type", config.get("model_type")]]
    rows += [["architecture", config["architectures"][0]]] if config.get("architectures") else []
    return rows + [[k, v] for k, v in architecture_fields(config).items()]


def _front_matter(tags: Sequence[str]) -> str:
    return (
        "---\nlibrary_name: transformers\npipeline_tag: image-classification\n"
        f"tags: [{', '.join(tags)}]\n---\n"
    )


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in counts.items())


def _framing_line(framing: Framing | None) -> str:
    if framing is None:
        return ""
    align = "on" if framing.face_align else "off"
    colour = "grey" if framing.grey else "colour"
    return (
        f"\nFraming (`emovit.json`, used by every emovit door): face margin {framing.face_margin}, "
        f"eye alignment {align}, {colour} crops.\n"
    )


# --------------------------------------------------------------------------- run card


def _unreadable_words(out: Path) -> str:
    """A sentence on the images left out because they could not be read (``training_config.json``
    names them), or nothing."""
    try:
        resolved = json.loads((record_folder(out) / "training_config.json").read_text())["resolved"]
        left = {split: len(names) for split, names in resolved.get("unreadable", {}).items() if names}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return ""
    if not left:
        return ""
    counts = " and ".join(f"{n} {split}" for split, n in left.items())
    many = sum(left.values()) != 1
    return (
        f" {counts} image{'s' if many else ''} could not be read and {'were' if many else 'was'} "
        "left out (named in `training_config.json`)."
    )


def write_model_card(
    out: Path,
    cfg: TrainConfig,
    result: TrainResult,
    classes: list[str],
    train_counts: dict[str, int],
    val_counts: dict[str, int],
    *,
    framing: Framing | None = None,
) -> Path:
    """Write a run's ``README.md``: data, architecture, recipe, framing and validation metrics."""
    config_path = out / "config.json"
    config = json.loads(config_path.read_text()) if config_path.is_file() else {}
    best = result.best_metrics
    selection = (
        "the mean validation macro-F1 over the clean faces and the robustness report's perturbations "
        "(`--select robust-f1`)"
        if cfg.select_metric == "robust_f1"
        else "validation macro-F1"
    )
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
    if cfg.overrides:
        start += f" {override_words(cfg.overrides)}"
    targets = (
        f"Targets: the annotators' vote distributions of `{cfg.labels}` (soft labels; contempt, unknown "
        "and not-a-face votes dropped); validation scored on the majority vote, images without one "
        "left out. Counts per class below are of the most-voted class."
        if cfg.labels
        else "Targets: the folder labels."
    )
    aug = cfg.augment
    distill = f" Learned {distillation_words(cfg.to_dict())}." if cfg.teacher else ""
    photo = f"; {_photo_words(aug.to_dict())}" if aug.downscale_p else ""
    tau = cfg.logit_adjust
    adjust = f"; {_adjust_words(tau)} (`--logit-adjust {tau}`)" if tau else ""
    flags = _augment_flags(aug.to_dict())
    mixes = aug.mixup_alpha or aug.cutmix_alpha
    mix_share = f" (on a share {aug.mix_p} of the batches)" if mixes else ""
    text = f"""{_front_matter(["emovit", "facial-expression-recognition", config.get("model_type", "vit")])}
# emovit model: {out.name}

A `{(config.get("architectures") or ["?"])[0]}` emotion classifier trained with `emovit train`
{start} on `{cfg.data}`. Labels (id order): {", ".join(classes)}.
{_framing_line(framing)}
## Data

| split | images | per class |
|---|---|---|
| train (`{cfg.train_split}`) | {sum(train_counts.values())} | {_counts(train_counts)} |
| validation (`{cfg.val_split}`) | {sum(val_counts.values())} | {_counts(val_counts)} |

{targets}{_unreadable_words(out)} Model selection used {selection} only; no test data was seen in training.

## Architecture

{markdown_table(architecture_rows(config), ["field", "value"])}

## Training recipe

AdamW (lr {cfg.lr}, weight decay {cfg.weight_decay}), {cfg.warmup_epochs} warm-up epochs then
cosine decay to {cfg.min_lr}; global batch {cfg.batch_size} (gradient accumulation
{cfg.grad_accum}); label smoothing {cfg.label_smoothing}; class balance `{cfg.balance}`{adjust};
augmentation ({flags}): flip {aug.hflip}, rotation ±{aug.rotate_deg}°,
scale ±{aug.scale}, translation ±{aug.translate / 2:g} of the side, brightness ±{aug.brightness},
contrast ±{aug.contrast}, random erasing p={aug.erase_p},
mixup alpha {aug.mixup_alpha}, cutmix alpha {aug.cutmix_alpha}{mix_share}{photo};
seed {cfg.seed}; precision `{cfg.precision}`.{distill} The input is the model's own preprocessing
(`preprocessor_config.json`), exactly as at inference. The full resolved configuration is in
`training_config.json`, the per-epoch metrics in `metrics.jsonl`.

Epochs run: {result.epochs_run} (stopped by: {result.stopped}); total training wall time
{result.wall_time_s / 60:.1f} min.

## Validation metrics (best epoch {result.best_epoch})

accuracy {best.get("val_accuracy", float("nan")):.4f}, macro-F1 {best.get("val_macro_f1", float("nan")):.4f}

{markdown_table(history, ["epoch", "train loss", "val accuracy", "val macro-F1", "seconds"])}

Test-set figures belong in a separate `emovit evaluate` report: validation numbers were used
for selection and are optimistic.

## Intended use and limits

For research and for aggregate analysis of facial expressions. {_LIMITS_INTRO}).
Data such as FER2013 is noisy, mostly frontal, low-resolution and skewed towards happy and
neutral faces; accuracy differs across classes (see above) and likely across demographic groups.
"""
    path = out / "README.md"
    write_text_atomic(path, text)
    return path


# --------------------------------------------------------------------------- run history


#: Where a model folder made from a run's best epoch keeps that run's record
#: (``training_config.json``, ``run_state.json``, ``metrics.jsonl``): a run stopped before its
#: schedule ended (a GPU lent for minutes) is refused as ``--init``, its best epoch copied out
#: is not, and the record beside it keeps the recipe and the time.
RUN_RECORD = "run-record"


def record_folder(folder: Path) -> Path:
    """The folder with the training record of `folder`: itself, or its `RUN_RECORD`."""
    if (
        not (folder / "training_config.json").is_file()
        and (folder / RUN_RECORD / "training_config.json").is_file()
    ):
        return folder / RUN_RECORD
    return folder


def on_gpu(training: dict[str, Any]) -> bool:
    """Whether a run (its ``training_config.json``) trained on a GPU."""
    return (training.get("resolved") or {}).get("device") == "cuda"


def _training(run: Path) -> dict[str, Any]:
    """A run's ``training_config.json`` ({} for a folder that is no run)."""
    path = record_folder(run) / "training_config.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def _seconds(runs: Iterable[Path]) -> float:
    """The training seconds of `runs` together."""
    return sum(float(run_state(r).get("elapsed_s", 0.0)) for r in runs)


def run_state(run: Path) -> dict[str, Any]:
    """Epochs, best epoch and training seconds of a run: from its checkpoint, or from
    ``run_state.json`` (all a finished run keeps in git)."""
    run = record_folder(run)
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


def run_stages(run: Path) -> list[tuple[Path, dict[str, Any]]]:
    """The training stages that made `run`, first to last: `run` and, following ``--init``,
    each earlier run it continued from (a run folder with its ``training_config.json``)."""
    stages: list[tuple[Path, dict[str, Any]]] = []
    current: Path | None = run
    while current is not None and (training := _training(current)) and len(stages) < 16:
        stages.insert(0, (current, training))
        init = training["config"].get("init")
        current = Path(init) if init else None
    return stages


def soup_record(folder: Path) -> dict[str, Any] | None:
    """The ``soup.json`` of a weight average (`emovit.training.soup`), or None."""
    path = folder / "soup.json"
    return json.loads(path.read_text()) if path.is_file() else None


def _soup_ingredients(folder: Path) -> list[Path]:
    """The runs a soup averages ([] for a run that is not a soup)."""
    soup = soup_record(folder)
    return [Path(i["path"]) for i in soup["ingredients"]] if soup else []


def _cost_runs(run: Path) -> set[Path]:
    """Every training run whose time went into `run`: its stages (following ``--init``), a
    soup's ingredients, and every teacher of any of them, transitively (a soup stands for its
    ingredients; it took no training time itself)."""
    runs: set[Path] = set()
    visited: set[Path] = set()
    todo = [run]
    while todo:
        folder = todo.pop()
        if folder in visited:
            continue
        visited.add(folder)
        ingredients = _soup_ingredients(folder)
        if ingredients:
            todo.extend(ingredients)
            continue
        for stage, training in run_stages(folder):
            runs.add(stage)
            todo.extend(Path(p) for p in teacher_paths(training["config"].get("teacher")))
    return runs


def untaken_cost(candidates: Sequence[Path], taken: set[Path]) -> tuple[list[Path], list[str], float]:
    """The candidates that are not among the `taken` runs (and have trained), the names of the
    runs only they used (their teachers and earlier stages), and the seconds all of those took."""
    kept = {p.resolve() for p in taken}
    not_taken = sorted(
        {c for c in candidates if c.resolve() not in kept and (record_folder(c) / "metrics.jsonl").is_file()},
        key=str,
    )
    runs = {r.resolve(): r for c in not_taken for r in _cost_runs(c) if r.resolve() not in kept}
    own = {c.resolve() for c in not_taken}
    helpers = sorted({r.name for key, r in runs.items() if key not in own})
    return not_taken, helpers, _seconds(runs.values())


def recipe_run(run: Path) -> Path:
    """The training run whose stages describe `run`: `run` itself, or a soup's first ingredient."""
    soup = soup_record(run)
    return Path(soup["ingredients"][0]["path"]) if soup else run


def run_summary(run: Path) -> dict[str, Any]:
    """Architecture, size and validation progress of a training run (for comparisons); a run
    continued from earlier ones (``--init``) is measured from the first stage's start."""
    from emovit.models import count_parameters

    config = json.loads((run / "config.json").read_text())
    history: list[dict[str, Any]] = []
    elapsed = 0.0
    stages = run_stages(run) or [(run, {})]
    for stage, training in stages:
        # validation scores the labels the stage trained on: a vote file's majority or the folders
        labels = "votes" if training.get("config", {}).get("labels") else "folders"
        gpu = on_gpu(training)
        lines = (record_folder(stage) / "metrics.jsonl").read_text().splitlines()
        for line in filter(str.strip, lines):
            h = json.loads(line)
            elapsed += float(h["epoch_time_s"])
            history.append(
                {**h, "epoch": len(history) + 1, "elapsed_s": elapsed, "labels": labels, "gpu": gpu}
            )
    return {
        "name": run.name,
        "architecture": (config.get("architectures") or [config.get("model_type", "?")])[0],
        "parameters": count_parameters(run),
        # a stage that widened the model (``--set``) changes the count: the first stage's too
        "first_parameters": count_parameters(stages[0][0]),
        "image_size": config.get("image_size"),
        "history": history,
    }


def _parameter_words(run: dict[str, Any]) -> str:
    """The run's parameter count, from its first stage's when a stage changed it."""
    last, first = run["parameters"] or 0, run.get("first_parameters") or run["parameters"] or 0
    return f"{last / 1e6:.2f} M" if first == last else f"{first / 1e6:.2f} M, then {last / 1e6:.2f} M"


def _cpu_epoch_seconds(history: list[dict[str, Any]]) -> str:
    """The mean seconds of an epoch on the CPU (epochs a GPU ran are left out)."""
    cpu = [h["epoch_time_s"] for h in history if not h.get("gpu")]
    return f"{sum(cpu) / len(cpu):.0f}" if cpu else "-"


def _comparison(runs: list[dict[str, Any]]) -> str:
    """A table of validation accuracy reached after equal training time, and the best, each on
    the labels it was measured on (the folders' labels, or a vote file's majority for stages
    trained on votes: the two label sets disagree, so their accuracies are not compared)."""
    horizon = min(r["history"][-1]["elapsed_s"] for r in runs)
    kinds = [k for k in ("folders", "votes") if any(h.get("labels") == k for r in runs for h in r["history"])]

    def best(r: dict[str, Any], kind: str) -> str:
        scored = [h for h in r["history"] if h.get("labels", "folders") == kind]
        if not scored:
            return "-"
        top = max(scored, key=lambda h: h["val_accuracy"])
        return f"{top['val_accuracy']:.3f} (epoch {top['epoch']} of {len(r['history'])})"

    rows = []
    for r in runs:
        within = [h for h in r["history"] if h["elapsed_s"] <= horizon * 1.05] or r["history"][:1]
        kind = within[-1].get("labels", "folders")
        rows.append(
            [
                f"`{r['name']}` ({r['architecture']}, {r['image_size']} px)",
                _parameter_words(r),
                _cpu_epoch_seconds(r["history"]),
                f"{max(h['val_accuracy'] for h in within if h.get('labels', 'folders') == kind):.3f} "
                f"(epoch {within[-1]['epoch']}{', vote majority' if kind == 'votes' else ''})",
                *(best(r, k) for k in kinds or ["folders"]),
            ]
        )
    names = {"folders": "best val accuracy, folder labels", "votes": "best val accuracy, vote majority"}
    header = ["run", "parameters", "s/epoch (2 cores)", f"val accuracy within {horizon / 60:.0f} min"]
    return markdown_table(rows, [*header, *(names[k] for k in kinds or ["folders"])])


# --------------------------------------------------------------------------- release card


def _speed_line(speed: dict[str, Any] | None) -> str:
    """The card's speed paragraph from a benchmark record (``default_speed.json``); with figures
    the same benchmark gave on other CPUs, a table of every CPU follows it."""
    if not speed:
        return "see `benchmarks/` (`emovit bench`)."
    others = ", ".join(f"{k} {v:.0f}" for k, v in speed.get("per_backend", {}).items())
    machine = speed.get("machine") or {}
    speed_line = (
        f"{speed['faces_per_s']:.0f} faces/s classifying decoded face crops in batches of "
        f"{speed.get('batch_size', '?')} on {machine.get('cores', 2)} CPU cores{_cpu_words(machine)} with "
        f"`{speed.get('backend', '?')}`, the backend "
        f"`--backend auto` picks for this folder (all backends: {others}); reproduce with "
        f"`{speed.get('command', 'emovit bench')}`."
    )
    other_machines = speed.get("other_machines", [])
    if not other_machines:
        return speed_line
    records = [speed, *other_machines]  # the latest figure of each CPU, this one first
    backends = list(dict.fromkeys(k for r in records for k in r.get("per_backend", {})))
    rows = []
    for record in records:
        cpu = record.get("machine") or {}
        per_backend = record.get("per_backend", {})
        rows.append(
            [
                cpu.get("model", "?"),
                ", ".join(cpu.get("flags", [])) or "no AVX flags",
                cpu.get("cores", "?"),
                record.get("measured", "-"),
                f"{record['faces_per_s']:.0f} (`{record.get('backend', '?')}`)",
                *(f"{per_backend[k]:.0f}" if k in per_backend else "-" for k in backends),
            ]
        )
    header = ["CPU", "SIMD flags", "cores", "measured", "faces/s (backend auto)", *backends]
    return (
        f"{speed_line}\n\nThe same benchmark on every CPU it has run on (the latest figure of each; "
        f"faces/s at batch {speed.get('batch_size', '?')}):\n\n{markdown_table(rows, header)}"
    )


def _cpu_words(machine: dict[str, Any]) -> str:
    """ " (CPU model; its SIMD flags)" for a benchmark's machine record, or "" without one."""
    if not machine:
        return ""
    return f" ({machine.get('model', '?')}; {', '.join(machine.get('flags', [])) or 'no AVX flags'})"


def _adjustment_block(adjustment: dict[str, Any] | None) -> str:
    """The post-hoc logit adjustment, with what it changed on validation (or nothing)."""
    if not adjustment:
        return ""
    tau = float(adjustment["tau"])
    rows = {float(r["tau"]): r for r in adjustment["validation"]}
    plain, chosen = rows.get(0.0), rows.get(tau)
    if plain is None or chosen is None:
        return ""
    classes = list(plain["recall"])
    table = markdown_table(
        [
            [
                f"{t:+.3f}" + (" (none)" if t == 0 else " (chosen)"),
                f"{r['accuracy']:.4f}",
                f"{r['macro_f1']:.4f}",
            ]
            + [f"{r['recall'][c]:.2f}" if r["recall"][c] is not None else "-" for c in classes]
            for t, r in ((0.0, plain), (tau, chosen))[: 2 if tau else 1]
        ],
        ["tau", "val accuracy", "val macro-F1", *(f"{c} recall" for c in classes)],
    )
    shift = f"- {tau:g}" if tau > 0 else f"+ {-tau:g}"
    rule = adjustment.get("rule", "best")
    if tau:
        what = f"the logits become `logits {shift} * log(prior)` (folded into the classifier's bias)"
    elif rule == "none":
        what = "the model is kept as trained (metrics.json keeps every value's validation scores)"
    else:
        what = "no shift beat the model as trained"
    from emovit.training.adjust import CONFIDENT_SHARE

    resampled = (
        f"for the mean macro-F1 over {adjustment.get('resamples', 'many')} bootstrap resamples of it "
        "(steadier than the single figure, which a few rare-class faces can swing)"
    )
    goal = {
        "none": (
            "by the rule `none`, which `scripts/tau_rule_study.py` chose on validation because no "
            "shift did better on held-out halves of it"
        ),
        "resampled": resampled,
        "confident": f"{resampled}: the best value that beats no shift on {CONFIDENT_SHARE:.0%} of them",
    }.get(rule, "for macro-F1")
    return (
        "Post-hoc logit adjustment (Menon et al., 2021; `emovit.training.adjust`): tau chosen on the "
        f"validation split alone, {goal}, among {len(rows)} values from -1 to 1: {what}; the "
        "prior is the training split's class mass.\n\n" + table + "\n\n"
    )


#: The leak-free figures' reference sets, as `emovit evaluate` flags: train and validation.
_LEAK_FLAGS = "--exclude-leaks ../shared/data/fer2013/train --exclude-leaks ../shared/data/fer2013/validation"


def _test_block(title: str, metrics: dict[str, dict[str, Any]], prefix: str, image: str, command: str) -> str:
    """One label set's test figures: plain, flip-TTA and leak-free, per class, calibration."""
    plain, tta, lf = (metrics[f"{prefix}{k}"] for k in ("plain", "tta", "leak_free"))
    per_class = [
        [label, f"{c['precision']:.3f}", f"{c['recall']:.3f}", f"{c['f1']:.3f}", c["support"]]
        for label, c in plain["per_class"].items()
    ]
    return f"""## Metrics on {title}

| | accuracy | macro-F1 | images |
|---|---|---|---|
| plain inference | {plain["accuracy"]:.4f} | {plain["macro_f1"]:.4f} | {plain["images"]} |
| flip test-time augmentation | {tta["accuracy"]:.4f} | {tta["macro_f1"]:.4f} | {tta["images"]} |
| leak-free (no copy in train or validation) | {lf["accuracy"]:.4f} | {lf["macro_f1"]:.4f} | {lf["images"]} |

{markdown_table(per_class, ["class", "precision", "recall", "F1", "support"])}

Calibration: ECE {plain["ece"]:.3f}. Confusion matrix:

![confusion matrix]({image})

Reproduce: `{command}`.

"""


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


def teacher_paths(teacher: str | Sequence[str] | None) -> list[str]:
    """The ``teacher`` of a `TrainConfig` (or of a saved training config) as a list of folders."""
    if not teacher:
        return []
    return [teacher] if isinstance(teacher, str) else list(teacher)


_FAMILY_WORDS = {"resnet": "a CNN, a transformers ResNet", "mobilevit": "a MobileViT", "vit": "a ViT"}


def distillation_words(cfg: dict[str, Any]) -> str:
    """How a training config learned, in words: from the labels, its teacher(s), or both."""
    teachers = [Path(t) for t in teacher_paths(cfg.get("teacher"))]
    if not teachers:
        return "from the labels alone"
    who = "; ".join(f"`{t.name}` ({_teacher_words(t)})" for t in teachers)
    flip = cfg.get("teacher_tta", "none") == "flip"
    if len(teachers) > 1:
        combined = (
            f", which answers the mean of its members' log-probabilities over the faces"
            f"{' and mirror images' if flip else ''} (a geometric-mean ensemble)"
        )
    elif flip:
        combined = (
            ", which answers the mean of its log-probabilities over the face and its mirror image "
            "(`--teacher-tta flip`)"
        )
    else:
        combined = ""
    alpha = float(cfg["distill_alpha"])
    source = "" if alpha >= 1 else "from the labels and, "
    batches = (
        "the same augmented batches before their photo degradations (`--teacher-input clean`: the "
        "student, shown the down-sampled, blurred, noisy or JPEG face, learns the answer for the "
        "undegraded one)"
        if cfg.get("teacher_input", "same") == "clean"
        else "the same augmented batches"
    )
    return (
        f"{source}DeiT-style, from the soft predictions of the "
        f"{'teacher' if len(teachers) == 1 else f'ensemble of {len(teachers)} teachers'} {who}, trained "
        f"first and used only in training{combined}, on {batches} (distillation weight "
        f"{alpha}, temperature {cfg['distill_temperature']})"
    )


def _teacher_words(teacher: Path) -> str:
    """What the teacher is, read from its folder: family, input size, and whether it is a soup."""
    try:
        config = json.loads((teacher / "config.json").read_text())
    except (OSError, ValueError):
        return "a registry name or Hub id, or a folder no longer there"
    family = _FAMILY_WORDS.get(config.get("model_type", ""), f"a {config.get('model_type', 'model')}")
    size = config.get("image_size")
    words = f"{family} at {size}x{size}" if size else family
    if soup_record(teacher):
        words += ", itself a weight average of runs"
    return words


def override_words(overrides: dict[str, Any]) -> str:
    """The ``--set`` options of a run, ready to paste into a shell."""
    compact = {key: json.dumps(value, separators=(",", ":")) for key, value in overrides.items()}
    return " ".join(f"`--set {shlex.quote(f'{key}={value}')}`" for key, value in compact.items())


def _recipe(run: Path, training: dict[str, Any], state: dict[str, Any]) -> str:
    """One training stage in words."""
    cfg = training["config"]
    sets = f" {override_words(cfg['overrides'])}" if cfg.get("overrides") else ""
    if cfg.get("init"):
        afresh = " (the layers whose shape changed start afresh)" if sets else ""
        start = f"continued from `{Path(cfg['init']).name}` (`--init`){sets}{afresh}"
    else:
        start = f"from scratch (`--arch {cfg.get('arch')}`{sets})"
    teacher = distillation_words(cfg)
    targets = (
        f" (targets: the vote distributions of `{Path(cfg['labels']).name}`)" if cfg.get("labels") else ""
    )
    augment = cfg.get("augment") or {}
    photo = f", and {_photo_words(augment)} ({_augment_flags(augment)})" if augment.get("downscale_p") else ""
    mixing = " or ".join(
        f"{name} (alpha {augment[key]}, `--{name} {augment[key]}`)"
        for name, key in (("mixup", "mixup_alpha"), ("cutmix", "cutmix_alpha"))
        if augment.get(key)
    )
    if mixing:
        mixing = f", {mixing} on a share {augment.get('mix_p', '?')} of the batches"
    adjust = f", {_adjust_words(cfg['logit_adjust'])}" if cfg.get("logit_adjust") else ""
    hours = float(state.get("elapsed_s", 0.0)) / 3600
    chosen = (
        " by the mean validation macro-F1 over the clean faces and the robustness report's "
        "perturbations (`--select robust-f1`)"
        if cfg.get("select_metric") == "robust_f1"
        else ""
    )
    return (
        f"`{run.name}`, {start}, learned {teacher}{targets}: AdamW lr {cfg['lr']} (weight decay "
        f"{cfg['weight_decay']}), {cfg['warmup_epochs']} warm-up epoch(s) then cosine decay, batch "
        f"{cfg['batch_size']}, label smoothing {cfg['label_smoothing']}{adjust}, flip/affine/photometric "
        f"augmentation and random erasing{photo}{mixing}, seed {cfg['seed']}; {state.get('epoch', '?')} "
        f"epochs, best epoch {state.get('best_epoch', '?')}{chosen} ({hours:.1f} h"
        f"{' on a GPU' if on_gpu(training) else ''})."
    )


def _photo_words(augment: dict[str, Any]) -> str:
    """The degradations of real photos an augmentation applies, in words."""
    return (
        f"the degradations of real photos: down-then-up sampling (p {augment['downscale_p']}, "
        f"to x{augment.get('downscale_min', '?')}), blur (p {augment.get('blur_p', 0)}), JPEG quality "
        f"{augment.get('jpeg_quality', '?')} (p {augment.get('jpeg_p', 0)}), "
        f"noise (p {augment.get('noise_p', 0)}), "
        f"gamma {augment.get('gamma_range', '?')} (p {augment.get('gamma_p', 0)})"
    )


def _adjust_words(tau: float) -> str:
    return f"logit-adjusted loss (tau {tau}, Menon et al. 2021)"


def _augment_flags(augment: dict[str, Any]) -> str:
    """The ``--augment`` preset (and any ``--augment-set`` changes) that give these strengths."""
    from emovit.training.augment import AugmentConfig

    def same(a: Any, b: Any) -> bool:
        return list(a) == list(b) if isinstance(a, (list, tuple)) else a == b

    best, changes = "", list(augment)
    for name in ("standard", "robust"):
        preset = AugmentConfig.from_name(name).to_dict()
        differ = [key for key in preset if key in augment and not same(preset[key], augment[key])]
        if not best or len(differ) < len(changes):
            best, changes = name, differ
    flags = f"`--augment {best}`"
    return flags + "".join(
        f" `--augment-set {key}={','.join(map(str, value)) if isinstance(value, (list, tuple)) else value}`"
        for key, value in (
            (key, augment[key]) for key in changes if key not in ("mixup_alpha", "cutmix_alpha")
        )
    )


def _letters(n: int) -> str:
    """The suffix of the n-th ingredient beside a stage: b, c, ..., z, ba, bb, ... (a is the stage)."""
    out = ""
    while True:
        n, digit = divmod(n, 26)
        out = "abcdefghijklmnopqrstuvwxyz"[digit] + out
        if n == 0:
            return out


def _soup_recipe(soup: dict[str, Any], stages: int) -> tuple[str, float, list[str]]:
    """The recipe lines of a weight average whose first ingredient made ``stages`` stages: each
    other ingredient's own last stage, then the average; their seconds and time labels."""
    lines: list[str] = []
    seconds = 0.0
    times: list[str] = []
    names = [f"`{Path(i['path']).name}`" for i in soup["ingredients"]]
    for n, ingredient in enumerate(soup["ingredients"][1:], start=1):
        other = Path(ingredient["path"])
        training = _training(other)
        state = run_state(other)
        label = f"{stages}{_letters(n)}"
        lines.append(f"{stages + n}. Stage {label}, beside stage {stages}: {_recipe(other, training, state)}")
        seconds += float(state.get("elapsed_s", 0.0))
        times.append(f"stage {label} {float(state.get('elapsed_s', 0.0)) / 3600:.1f} h")
    measured = soup.get("batchnorm_recomputed_on")
    norms = (
        f"BatchNorm statistics measured again on the {measured['split']} split ({measured['images']} images)"
        if measured
        else "BatchNorm statistics averaged too"
    )
    lines.append(
        f"{stages + len(soup['ingredients'])}. The released weights: the uniform average of "
        f"{', '.join(names)} (a model soup, Wortsman et al. 2022; `scripts/make_soup.py`), {norms}."
    )
    return "\n".join(lines), seconds, times


def write_release_card(
    dest: Path,
    run: Path,
    metrics: dict[str, dict[str, Any]],
    *,
    speed: dict[str, Any] | None = None,
    compare: Sequence[Path] = (),
    framing: Framing | None = None,
    labels: Path | None = None,
    robustness: str | None = None,
    augment_choice: str | None = None,
    candidates: Sequence[Path] = (),
) -> Path:
    """Write the ``README.md`` of a released model folder `dest` made from training run `run`.

    Args:
        dest: the released folder (its ``config.json`` and ``preprocessor_config.json``).
        run: the last training stage; earlier stages are found through ``--init``.
        metrics: test-split metrics by kind: ``plain``, ``tta`` and ``leak_free``.
        speed: a benchmark record (``faces_per_s``, ``backend``, ``per_backend``, ``command``).
        compare: other runs (other architectures) for the "why this architecture" table.
        framing: the framing the folder records.
        labels: the FER+-style vote file the test split was also scored with (``metrics`` then
            holds ``ferplus_plain``, ``ferplus_tta``, ``ferplus_leak_free``).
        robustness: the robustness table (markdown, ``scripts/robustness_report.py``).
        augment_choice: how the last stage was chosen on validation (markdown,
            ``scripts/choose_augmentation.py``).
        candidates: the runs that choice compared (their training time is counted too).
    """
    config = json.loads((dest / "config.json").read_text())
    processor = json.loads((dest / "preprocessor_config.json").read_text())
    soup = soup_record(run)
    base = recipe_run(run)  # a soup is described by its first ingredient's stages, then the average
    stages = run_stages(base)
    # every other run whose time went into this one: teachers, their own stages and teachers, a
    # soup teacher's ingredients (the recipe's stages and a soup's ingredients are counted there)
    counted = {stage for stage, _ in stages} | set(_soup_ingredients(run))
    teachers = _cost_runs(run) - counted
    summaries = [run_summary(base)] + [run_summary(c) for c in compare if (c / "metrics.jsonl").is_file()]
    comparison = _comparison(summaries) if len(summaries) > 1 else ""
    summary = summaries[0]

    resolved = stages[-1][1]["resolved"]
    states = [run_state(stage) for stage, _ in stages]
    parameters = f"{summary['parameters'] / 1e6:.2f} M" if summary.get("parameters") else "?"
    class_names = ", ".join(config["id2label"][str(i)] for i in range(len(config["id2label"])))
    plain = metrics["plain"]
    arch = (config.get("architectures") or [config.get("model_type", "?")])[0]
    kind = config.get("model_type", "vit")
    fer_block = _test_block(
        "FER2013 test (PrivateTest), original labels",
        metrics,
        "",
        "confusion_matrix.png",
        "emovit evaluate ../shared/data/fer2013/test --model default --detector none -o report "
        f"[{_LEAK_FLAGS}] [--tta flip]",
    )
    if labels is None and metrics.get("labels_file"):
        labels = Path(str(metrics["labels_file"]))
    trained_votes = stages[-1][1]["config"].get("labels")  # what the last stage learned from
    plus_block = ""
    if labels is not None and "ferplus_plain" in metrics:
        plus_block = _test_block(
            "FER+ test (majority label of the 10 annotators)",
            metrics,
            "ferplus_",
            "confusion_matrix_ferplus.png",
            f"emovit evaluate ../shared/data/fer2013/test --model default --detector none --labels {labels} "
            f"-o report [{_LEAK_FLAGS}] [--tta flip]",
        )
        plus_block += (
            "\nThe two label sets disagree on about a third of the test images (mostly FER2013 "
            '"fear" and "sad" faces the annotators call neutral), so a model that follows the '
            "annotators loses points on FER2013's original labels by design: FER+ is the target, "
            "FER2013 is reported beside it.\n\n"
        )
    robust_block = (
        "## Robustness\n\nAccuracy on the test split under the degradations real photos bring, "
        "and on composites (test faces pasted into larger plain, noise or gradient backgrounds, not "
        "photos, found by YuNet and cropped with this model's framing; a face not found counts as "
        "wrong); FER+ accuracy / macro-F1 and FER2013 accuracy per model (the model before this one "
        "beside it), and leak-free (without the test faces that have a copy in train or validation: "
        "a model that trained on a copy under the same degradations remembers it). Reproduce with "
        "`scripts/robustness_report.py` (`docs/reports/robustness`).\n\n" + robustness.strip() + "\n\n"
        if robustness
        else ""
    )
    if augment_choice:
        # the report's own heading becomes a sub-heading of the robustness section
        body = (
            augment_choice.strip().split("\n", 1)[-1].strip()
            if augment_choice.startswith("#")
            else augment_choice
        )
        robust_block += (
            "## How the last stage was chosen\n\nEach candidate is a last stage trained with other "
            "augmentation, teachers, width, starting point or schedule (each run's "
            "`training_config.json` says which); the candidates were added over several rounds, each "
            "after the previous round's results. They were measured under the same perturbations on "
            "the **validation** split (`scripts/robustness_report.py --split validation`, "
            "`scripts/choose_augmentation.py`, `docs/reports/augment-choice`) and the rule below picks "
            "among them; no rule read a test figure, but the model released after each round was "
            "scored on the test split, so those figures were in view when the next candidate was "
            "picked.\n\n" + body.strip() + "\n\n"
        )
    stage_s = [float(state.get("elapsed_s", 0.0)) for state in states]
    run_folders = ", ".join(
        sorted(
            {f"`{folder.parent.as_posix()}/`" for folder in [s for s, _ in stages] + _soup_ingredients(run)}
        )
    )
    if len(stages) == 1:
        recipe = _recipe(stages[0][0], stages[0][1], states[0])
    else:
        recipe = "\n".join(
            f"{i}. Stage {i}: {_recipe(stage, training, state)}"
            for i, ((stage, training), state) in enumerate(zip(stages, states, strict=True), start=1)
        )
    gpu_teachers = {t for t in teachers if on_gpu(_training(t))}
    cpu_teachers = teachers - gpu_teachers
    teacher_s, gpu_teacher_s = _seconds(cpu_teachers), _seconds(gpu_teachers)
    named = (
        "teacher "
        if len(cpu_teachers) == 1
        else f"teacher runs ({', '.join(sorted(t.name for t in cpu_teachers))}) "
    )
    cpu_stages: list[tuple[int, float]] = []
    gpu_stages: list[tuple[int, float]] = []
    for i, ((_, training), seconds) in enumerate(zip(stages, stage_s, strict=True), start=1):
        (gpu_stages if on_gpu(training) else cpu_stages).append((i, seconds))
    times = ([named + f"{teacher_s / 3600:.1f} h"] if teacher_s else []) + [
        (f"stage {i} " if len(stages) > 1 else "model ") + f"{t / 3600:.1f} h" for i, t in cpu_stages
    ]
    gpu_times = (
        [f"teacher runs ({', '.join(sorted(t.name for t in gpu_teachers))}) {gpu_teacher_s / 60:.0f} min"]
        if gpu_teachers
        else []
    ) + [f"stage {i} {t / 60:.0f} min" for i, t in gpu_stages]
    gpu_s = gpu_teacher_s + sum(t for _, t in gpu_stages)
    gpu_line = (
        f" On a GPU (an NVIDIA H200 lent for minutes, `scripts/gpu_round.py`): {' + '.join(gpu_times)}"
        f" = {gpu_s / 60:.0f} min."
        if gpu_times
        else ""
    )
    total_s = teacher_s + sum(t for _, t in cpu_stages)
    # the candidates the choice did not take were trained by `make train-default` too
    taken = {stage for stage, _ in stages} | teachers | set(_soup_ingredients(run))
    not_taken, helpers, other_s = untaken_cost(candidates, taken)
    others_line = (
        f" The candidates the choice did not take ({', '.join(f'`{c.name}`' for c in not_taken)}"
        + (f", and the runs only they used: {', '.join(f'`{h}`' for h in helpers)}" if helpers else "")
        + f") took {other_s / 3600:.1f} h more: `make train-default` trains them too, "
        f"{(total_s + other_s) / 3600:.1f} h in all."
        if other_s
        else ""
    )
    if soup:
        lines, more_s, more_times = _soup_recipe(soup, len(stages))
        recipe = (f"1. Stage 1: {recipe}" if len(stages) == 1 else recipe) + "\n" + lines
        times += more_times
        total_s += more_s
    size = processor.get("size", {})
    mean, std = processor.get("image_mean", [0.5])[0], processor.get("image_std", [0.5])[0]
    normalize = "no normalization"
    if processor.get("do_normalize"):
        normalize = f"normalize with mean {mean} and std {std}"
    speed_line = _speed_line(speed)
    why = _WHY.get(kind, f"a `{arch}`.")
    compare_block = (
        f"\nRuns compared (validation split only; same data, seed and 2 cores; each run's times "
        f"are those of the machine it trained on, whose CPUs may differ):\n\n{comparison}\n"
        if comparison
        else ""
    )
    adjustment_block = _adjustment_block(metrics.get("prior_adjustment"))
    tags = [
        "emovit",
        "facial-expression-recognition",
        kind,
        "fer2013",
        *(["ferplus"] if trained_votes else []),
    ]
    gpu_words = " (the runs the recipe marks on a GPU lent for minutes)" if gpu_line else ""
    trained_on = (
        "FER2013 faces, last with the FER+ annotators' vote distributions as targets"
        if trained_votes
        else "FER2013"
    )
    votes_line = (
        f"\nThe last stage learns from FER+ (`{Path(trained_votes or '').name}`: 10 annotators per "
        "image): each "
        "training image's votes over the seven emotions, normalised, are its soft target; votes for "
        "contempt, unknown and not-a-face are dropped (contempt is not one of the seven classes; the "
        "other two say nothing about the expression), and images with no emotion vote are left out. "
        "Validation and test score the majority label; ties and images whose majority is contempt, "
        "unknown or not-a-face are left out.\n"
        if trained_votes
        else ""
    )
    text = f"""{_front_matter(tags)}
# emovit default model

The model `emovit predict` uses when no `--model` is given: a `{arch}` trained by
emovit's own tools (`make train-default`) on {trained_on}, offline, on 2 CPU cores{gpu_words}. It loads
with `AutoModelForImageClassification` too.

## Data and splits

FER2013 (48x48 grey faces) in the standard splits: Training ({resolved["train_images"]} images in the
last stage) for training, PublicTest ({resolved["val_images"]}) for model selection (the epoch with the
best validation macro-F1 is kept), PrivateTest ({plain["images_in_split"]}) only for the figures below,
never for any choice. Stages that learn from the folder labels use every image of the two splits;
stages that learn from the FER+ votes leave out the images without an emotion vote. FER2013 holds
known duplicates, some across splits: validation images that are copies of training images make
validation scores (and every choice made on them) favour a model that remembers its training faces;
the leak-free test figures below leave such copies out.
{votes_line}
## Preprocessing

Grey input is replicated to 3 channels (emovit decodes everything to RGB); resize to
{size.get("height", "?")}x{size.get("width", "?")} (bilinear), rescale 1/255, {normalize}
(`preprocessor_config.json`, equal to what transformers' image processor does, and the same code
made the training batches). Photos go through face detection first (YuNet), and each face crop
is classified.
{_framing_line(framing)}
## Architecture

Why this architecture: {why}
{compare_block}
{markdown_table(architecture_rows(config), ["field", "value"])}

Parameters: {parameters}. Labels (id order): {class_names}.

## Training recipe

{recipe}

{adjustment_block}Resolved configurations: `training_config.json` of each run ({run_folders}).

Training wall time on 2 CPU cores: {" + ".join(times)} = {total_s / 3600:.1f} h.{gpu_line}{others_line}

{plus_block}{fer_block}{robust_block}## Speed

{speed_line}

## Intended use, limits and biases

For research, demos and aggregate analysis of facial expressions. {_LIMITS_INTRO}, security).
FER2013 is noisy (duplicate images with conflicting labels), low-resolution, mostly
frontal, and skewed towards happy and neutral faces with few disgust examples; accuracy
differs by class (above) and, untested here, by age, skin tone and culture.
"""
    path = dest / "README.md"
    write_text_atomic(path, text)
    return path
