"""`emovit train`: fine-tune or train from scratch any transformers ViT image classifier.

Design points:

* **Determinism by construction**: the sample order, augmentation draws and dropout of
  epoch *e* come from generators seeded with (seed, e, step), never from state carried
  across epochs. So ``--resume`` after a crash reproduces an uninterrupted run, and a run on
  N processes (``torchrun`` / ``accelerate launch``) reproduces the 1-process run with the
  same global batch: each process takes its slice of every global batch and DDP averages.
* ``--batch-size`` is the **global** batch per optimizer step, split over processes and
  gradient-accumulation steps.
* One definition of the model input: images are decoded once into memory at the model's
  input size by its own `emovit.preprocess.Preprocessor` (threads), and batches are normalised
  by the same preprocessor on the device (`emovit.training.inputs.TrainingInput`); augmentation
  runs vectorised in torch in between. Without augmentation the model sees exactly the tensors
  inference gives it.
* Targets are one-hot labels, or with ``labels`` (a FER+ vote file) the annotators' vote
  distributions; validation then scores the majority label (`emovit.data.votes`).
* Every epoch writes a resumable checkpoint (atomically) and a line of ``metrics.jsonl``; the
  model that is best on validation macro-F1 is saved as a normal Hugging Face folder with
  ``preprocessor_config.json``, its framing (``emovit.json``), ``training_config.json`` and a
  generated model card.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import math
import os
import shutil
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args

import numpy as np
import torch
import torch.nn.functional as F

from emovit.data import (
    LabelledImages,
    Sample,
    canonical_split,
    list_splits,
    majority_samples,
    read_samples,
    read_vote_labels,
    vote_targets,
)
from emovit.errors import (
    EmovitError,
    LabelError,
    ModelLoadError,
    OptionError,
    TrainError,
    check_real,
    first_line,
)
from emovit.fileio import atomic_dir, make_folders, plain_mode, remove_empty, write_text_atomic
from emovit.labels import EMOTIONS, order_labels
from emovit.models import Framing, resolve_model
from emovit.postprocess import TTA_MODES, TtaMode
from emovit.progress import progress_bar
from emovit.training.augment import AugmentConfig, augment_views, mix_batch
from emovit.training.card import teacher_paths
from emovit.training.inputs import TrainingInput

_T = TypeVar("_T")

__all__ = ["TrainConfig", "TrainError", "TrainResult", "train", "unfinished_run"]

Balance = Literal["none", "loss", "sampler"]
Precision = Literal["auto", "fp32", "bf16", "fp16"]
TeacherInput = Literal["same", "clean"]
TEACHER_INPUTS: tuple[str, ...] = get_args(TeacherInput)
SelectMetric = Literal["macro_f1", "robust_f1"]
SELECT_METRICS: tuple[str, ...] = get_args(SelectMetric)
CHECKPOINT = "checkpoint"
#: The sub-folder of a checkpoint holding its epoch's model when that epoch was the best.
BEST_STAGED = "best"
SCALER = "scaler.pt"  # fp16 training's loss scale, in the checkpoint
RUN_STATE = "run_state.json"  # how the last session of a run ended; "complete" when it is done


@dataclass
class TrainConfig:
    """Everything that defines a training run; saved as ``training_config.json``.

    `labels` is a FER+-style vote file (`emovit.data.read_vote_labels`): the targets become the
    vote distributions and validation scores the majority label. `face_margin`, `face_align` and
    `grey` are the framing recorded with the model (``emovit.json``); None inherits the
    ``--init`` model's record, or the default framing. With `grey` the images are converted to
    grey as they are decoded. Data without a validation split gets one held out from training
    (`val_fraction` of each class), drawn with `holdout_seed`, not `seed`: runs that differ in
    their seed are compared on the same images.
    """

    data: str
    output: str
    init: str | None = None
    arch: str | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    epochs: int = 30
    batch_size: int = 128
    grad_accum: int = 1
    lr: float = 1e-3
    min_lr: float = 1e-5
    weight_decay: float = 0.05
    warmup_epochs: float = 2.0
    label_smoothing: float = 0.1
    balance: Balance | None = None  # None: "loss", or "none" with `logit_adjust`
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    precision: Precision = "auto"
    seed: int = 0
    patience: int = 10
    eval_batch_size: int = 256
    train_split: str = "train"
    val_split: str = "validation"
    val_fraction: float = 0.1
    holdout_seed: int = 0  # which training images are held out without a validation split
    max_train_samples: int | None = None
    grad_clip: float = 1.0
    time_limit_min: float | None = None
    threads: int | None = None
    teacher: str | list[str] | None = None  # one folder, or several (an ensemble)
    teacher_tta: TtaMode = "none"
    teacher_input: TeacherInput = "same"  # "clean": the teacher sees the face before the degradations
    distill_alpha: float = 0.5
    distill_temperature: float = 2.0
    labels: str | None = None
    face_margin: float | None = None
    face_align: bool | None = None
    grey: bool | None = None
    logit_adjust: float = 0.0
    val_leak_free: bool = False  # leave out validation images with a copy in training
    # which validation score keeps an epoch: clean macro-F1, or its mean with the macro-F1 under
    # each photo perturbation of the robustness report (emovit.data.perturb)
    select_metric: SelectMetric = "macro_f1"

    def __post_init__(self) -> None:
        if self.balance is None:  # the logit-adjusted loss corrects for the class prior already
            self.balance = "none" if self.logit_adjust else "loss"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        data = dict(data)
        aug = data.pop("augment", {}) or {}
        for key in ("erase_area", "gamma_range", "jpeg_quality"):
            if key in aug:
                aug[key] = tuple(aug[key])
        known = set(cls.__dataclass_fields__)
        if "holdout_seed" not in data and "seed" in data:  # a run saved before it was its own
            data["holdout_seed"] = data["seed"]
        return cls(**{k: v for k, v in data.items() if k in known}, augment=AugmentConfig(**aug))


@dataclass
class TrainResult:
    """What a run produced: the output folder, the best epoch and its validation metrics."""

    output: Path
    best_epoch: int
    best_metrics: dict[str, float]
    epochs_run: int
    stopped: str
    wall_time_s: float
    history: list[dict[str, Any]]


# --------------------------------------------------------------------------- helpers


def _seed(cfg: TrainConfig, *parts: int) -> int:
    value = cfg.seed
    for part in parts:
        value = (value * 1_000_003 + part + 1) % (2**62)
    return value


def _split_off_validation(
    samples: list[Sample], fraction: float, seed: int
) -> tuple[list[Sample], list[Sample]]:
    rng = np.random.default_rng(seed)
    train, val = [], []
    by_label: dict[str, list[Sample]] = {}
    for s in samples:
        by_label.setdefault(s.label, []).append(s)
    for group in by_label.values():
        order = rng.permutation(len(group))
        cut = max(1, round(len(group) * fraction)) if len(group) > 1 else 0
        val += [group[i] for i in order[:cut]]
        train += [group[i] for i in order[cut:]]
    return train, val


def _param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    decay: list[torch.nn.Parameter] = []
    no_decay: list[torch.nn.Parameter] = []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        skip = param.ndim < 2 or any(k in name for k in ("position_embeddings", "cls_token", "norm"))
        (no_decay if skip else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _lr_lambda(cfg: TrainConfig, steps_per_epoch: int) -> Any:
    total = max(1, cfg.epochs * steps_per_epoch)
    warmup = int(cfg.warmup_epochs * steps_per_epoch)
    floor = cfg.min_lr / cfg.lr if cfg.lr else 0.0

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


# --------------------------------------------------------------------------- model


def _build_model(
    cfg: TrainConfig, classes: list[str]
) -> tuple[torch.nn.Module, list[str], dict[str, Any], Framing | None, dict[str, Any]]:
    """The model to train, the class order it uses, its processor config, the framing the
    ``--init`` model records (None from scratch, or when it records none) and that record's
    notes (e.g. ``chosen_by``; empty from scratch)."""
    torch.manual_seed(_seed(cfg, 999_999))
    try:
        return _built_model(cfg, classes)
    except (ValueError, RuntimeError, ZeroDivisionError, TypeError, IndexError) as exc:
        # `--set` values the config accepts and the model cannot be built with (a negative
        # width, a zero patch size) are an `OptionError` on them, not an internal error
        if not cfg.overrides or isinstance(exc, EmovitError):
            raise
        given = ", ".join(f"{key}={value!r}" for key, value in cfg.overrides.items())
        raise OptionError(
            f"the model cannot be built with --set {given} ({type(exc).__name__}: {exc})", option="overrides"
        ) from None


def _built_model(
    cfg: TrainConfig, classes: list[str]
) -> tuple[torch.nn.Module, list[str], dict[str, Any], Framing | None, dict[str, Any]]:
    """`_build_model`'s work."""
    from emovit.labels import LabelMap
    from emovit.models import (
        arch_preset,
        load_torch_model,
        read_framing,
        read_framing_notes,
        read_model_config,
        resolve_model,
    )
    from emovit.preprocess import read_processor_config, with_input_size

    if cfg.init:
        with _blame("init"):  # a folder that cannot be found or loaded: --init's fault
            folder = resolve_model(cfg.init)
            init_labels = None
            id2label = read_model_config(folder).get("id2label") or {}
            if len(id2label) == len(classes):
                with contextlib.suppress(LabelError):  # labels that do not map: a new task
                    names = list(LabelMap.from_id2label(id2label).names)
                    init_labels = names if set(names) == set(classes) else None
            # the same classes keep the checkpoint's order and head; others get a new head
            order = init_labels or classes
            model = load_torch_model(
                folder,
                id2label=dict(enumerate(order)),
                ignore_mismatched_sizes=True,
                config_overrides=cfg.overrides,
                float32=True,  # trained in float32 (or under autocast) whatever it was saved in
            ).model
            assert model is not None  # load_torch_model always loads the weights
            processor = read_processor_config(folder)
            if "image_size" in cfg.overrides:  # a new input size: the processor feeds it
                processor = with_input_size(processor, cfg.overrides["image_size"])
            return (
                model,
                order,
                processor,
                read_framing(folder),
                read_framing_notes(folder),
            )
    preset = arch_preset(cfg.arch or "vit-tiny")
    model = preset.build_model(dict(enumerate(classes)), **cfg.overrides)
    size = int(getattr(model.config, "image_size", None) or preset.config["image_size"])
    model.config.image_size = size
    return model, classes, preset.processor_config(size), None, {}


def _framing(cfg: TrainConfig, inherited: Framing | None) -> Framing:
    """The framing recorded with the model: the options given, else the ``--init`` model's."""
    base = inherited or Framing.default()
    try:
        return Framing.from_dict(
            {
                "face_margin": base.face_margin if cfg.face_margin is None else cfg.face_margin,
                "face_align": base.face_align if cfg.face_align is None else cfg.face_align,
                "grey": base.grey if cfg.grey is None else cfg.grey,
            }
        )
    except ValueError as exc:
        raise TrainError(str(exc), option="face_margin") from None


def _soft_ce(
    logits: torch.Tensor, targets: torch.Tensor, smoothing: float, class_weights: torch.Tensor | None
) -> torch.Tensor:
    """Per-sample cross-entropy against soft `targets`, with label smoothing and class weights."""
    k = logits.shape[-1]
    smoothed = targets * (1 - smoothing) + smoothing / k
    losses = -(smoothed * F.log_softmax(logits.float(), dim=-1)).sum(dim=-1)
    if class_weights is not None:
        losses = losses * (targets * class_weights).sum(dim=-1)
    return losses


# --------------------------------------------------------------------------- the run


@contextlib.contextmanager
def _blame(option: str) -> Iterator[None]:
    """A model that cannot be found or loaded in here is the fault of the option `option` (the
    command's error names it: ``--init``, ``--teacher``), not of a ``--model``."""
    try:
        yield
    except ModelLoadError as exc:
        exc.option = option
        raise


def _precision(requested: Precision) -> str:
    if requested == "fp32":
        return "no"
    if requested in ("bf16", "fp16"):
        return requested
    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "no"


def _log(accelerator: Any, message: str) -> None:
    if accelerator.is_main_process:
        print(message, file=sys.stderr, flush=True)


def unfinished_run(folder: str | os.PathLike[str]) -> bool:
    """Whether `folder` holds a training run (its ``training_config.json`` or ``run_state.json``)
    that has not finished: a model folder that is not a run, or a finished run, is not."""
    folder = Path(folder)
    state = folder / RUN_STATE
    if state.is_file():
        try:
            record = json.loads(state.read_text())
            return not record.get("complete")
        except (OSError, ValueError, AttributeError) as exc:
            raise TrainError(f"{state}: unreadable run state ({exc})") from None
    return (folder / "training_config.json").is_file()


def how_to_finish(folder: str | os.PathLike[str]) -> str:
    """What finishes an unfinished run: a resume, or, with no checkpoint to resume from (stopped
    before its first epoch ended, or its checkpoint folder removed), training it again."""
    folder = Path(folder)
    # a kill between the two renames of a checkpoint's commit leaves only the old one: --resume
    # takes it up
    if any((folder / name / "state.json").is_file() for name in (CHECKPOINT, f".{CHECKPOINT}.old")):
        return "resume it first with --resume"
    try:
        done = int(json.loads((folder / RUN_STATE).read_text()).get("epochs_run", 0))
    except (OSError, ValueError, TypeError, AttributeError):
        done = 0
    if done > 0:  # its best epoch is there, but nothing to continue the run from
        return (
            f"it stopped after epoch {done} and its checkpoint folder is gone, so it cannot be "
            "resumed: train it again, without --resume"
        )
    return "it stopped before its first epoch ended: train it again, without --resume"


def train(cfg: TrainConfig, *, resume: bool = False, progress: bool | None = None) -> TrainResult:
    """Run (or resume) training as configured; returns the best epoch and where the model is.

    Examples:
        >>> cfg = TrainConfig(data="fer2013/", output="runs/tiny", arch="vit-tiny", epochs=5)
        >>> result = train(cfg)  # doctest: +SKIP
    """
    _check_numbers(cfg)
    out = Path(cfg.output)
    created: list[Path] = []  # the folders this call made, deepest first
    if not resume and not out.exists():  # a folder that cannot be made: said now, not after decoding
        try:
            created = make_folders(out)
        except OSError as exc:
            raise TrainError(
                f"{out}: the run's folder cannot be created ({exc.strerror or exc})", option="output"
            ) from None
    try:
        return _train(cfg, resume=resume, progress=progress)
    except BaseException:
        remove_empty(created)  # still empty (the run failed before writing): none left behind
        raise


def _check_numbers(cfg: TrainConfig) -> None:
    """The optimiser's numbers, checked (an `OptionError` naming the first bad one): a negative
    floor learning rate made the schedule end below zero, climbing the loss."""
    check_real(cfg.lr, "lr", 0)  # 0 is allowed: the initial weights, saved as a run (a baseline)
    check_real(cfg.min_lr, "min_lr", 0)
    check_real(cfg.weight_decay, "weight_decay", 0)
    check_real(cfg.warmup_epochs, "warmup_epochs", 0)
    check_real(cfg.label_smoothing, "label_smoothing", 0, 0.99)


def _checkpoint_file(path: Path, read: Callable[[Path], _T]) -> _T:
    """`read(path)` for one file of a run or its checkpoint; a missing or damaged one (cut
    short by a full disk, edited) is a `TrainError` naming it, not an internal error."""
    try:
        return read(path)
    except Exception as exc:  # noqa: BLE001 - JSON, safetensors, torch.load: each its own errors
        raise TrainError(
            f"{path}: missing or damaged ({first_line(exc)}); restore it, or start a new run in "
            "another -o folder"
        ) from None


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def _train(cfg: TrainConfig, *, resume: bool, progress: bool | None) -> TrainResult:
    """`train`, once the options are checked and the run's folder exists."""
    from accelerate import Accelerator

    from emovit.evaluation import macro_f1

    out = Path(cfg.output)
    ckpt = out / CHECKPOINT
    finished = _finished_run(out, cfg.epochs) if resume else None
    if finished is not None:
        return finished
    if resume:
        if not ckpt.is_dir() and (out / f".{CHECKPOINT}.old").is_dir():
            ckpt = out / f".{CHECKPOINT}.old"
        if not (ckpt / "state.json").is_file():
            raise TrainError(f"{out}: no checkpoint to resume from (run without --resume to start)")
        done = int(_checkpoint_file(ckpt / "state.json", _read_json).get("epoch", 0))
        if cfg.epochs < done:  # it would train nothing and say it finished
            raise TrainError(
                f"{out}: the run has trained {done} epochs; --epochs {cfg.epochs} is fewer (give more "
                "to continue it, or leave --epochs out)",
                option="epochs",
            )
        saved = TrainConfig.from_dict(
            _checkpoint_file(out / "training_config.json", lambda path: _read_json(path)["config"])
        )
        saved.epochs, saved.time_limit_min = cfg.epochs, cfg.time_limit_min
        saved.output = cfg.output
        # the data as named now: the run's own path may be relative to where it started (the
        # images it decodes are checked against the run's counts below)
        saved.data = cfg.data or saved.data
        cfg = saved
    elif ckpt.exists() or (out / "run_state.json").is_file():  # unfinished, or finished
        raise TrainError(f"{out} already holds a training run: pass --resume, or choose another -o folder")
    elif out.exists() and not out.is_dir():
        raise TrainError(f"{out}: a file, not a folder for the run", option="output")
    elif out.is_dir() and (held := sorted(p.name for p in out.iterdir() if p.name in _MODEL_FILES)):
        # a model folder (an export, a copy): its other files would sit beside the run's weights
        raise TrainError(
            f"{out} holds a model ({', '.join(held)}): choose another -o folder", option="output"
        )
    if cfg.teacher_tta not in TTA_MODES:
        raise TrainError(
            f"teacher_tta must be one of {TTA_MODES}, got {cfg.teacher_tta!r}", option="teacher_tta"
        )
    if cfg.select_metric not in SELECT_METRICS:
        raise TrainError(
            f"select_metric must be one of {SELECT_METRICS}, got {cfg.select_metric!r}",
            option="select_metric",
        )
    if cfg.teacher_input not in TEACHER_INPUTS:
        raise TrainError(
            f"teacher_input must be one of {TEACHER_INPUTS}, got {cfg.teacher_input!r}",
            option="teacher_input",
        )
    if cfg.teacher_tta != "none" and not cfg.teacher:
        raise TrainError("--teacher-tta needs a --teacher", option="teacher_tta")
    if cfg.init and cfg.arch:
        raise TrainError("give --init (start from a checkpoint) or --arch (from scratch), not both")
    if cfg.init and unfinished_run(cfg.init):
        raise TrainError(f"--init {cfg.init}: that run has not finished ({how_to_finish(cfg.init)})")
    if cfg.init:  # found before the data is decoded (minutes); the error names the option
        with _blame("init"):
            resolve_model(cfg.init)
    for path in teacher_paths(cfg.teacher):  # a paused teacher would teach half of what it will
        with _blame("teacher"):
            resolve_model(path)
        if unfinished_run(path):
            raise TrainError(
                f"--teacher {path}: that run has not finished ({how_to_finish(path)})", option="teacher"
            )
    if cfg.precision == "fp16" and not torch.cuda.is_available():  # accelerate ignores it on the CPU
        raise TrainError(
            "--precision fp16 trains on a GPU only (on the CPU it would train in fp32 and say fp16): "
            "use fp32, or bf16 (fast on CPUs with AVX512_BF16 or AMX)",
            option="precision",
        )
    if cfg.threads:
        torch.set_num_threads(cfg.threads)

    accelerator = Accelerator(mixed_precision=_precision(cfg.precision), cpu=not torch.cuda.is_available())
    world, rank = accelerator.num_processes, accelerator.process_index
    if cfg.batch_size % (world * cfg.grad_accum):
        raise TrainError(
            f"--batch-size {cfg.batch_size} (global) must divide by processes x --grad-accum = "
            f"{world} x {cfg.grad_accum}"
        )
    device = accelerator.device

    # ---- data
    votes = read_vote_labels(cfg.labels) if cfg.labels else None
    train_split, val_split = canonical_split(cfg.train_split), canonical_split(cfg.val_split)
    if "test" in (train_split, val_split):  # selection and training never see the test split
        raise TrainError(
            f"--train-split {cfg.train_split} / --val-split {cfg.val_split}: the test split is only "
            "for the final figures (emovit evaluate), never trained on or chosen with"
        )
    train_samples = read_samples(cfg.data, train_split)
    found = list_splits(cfg.data)
    if val_split in found and val_split != train_split:
        val_samples = read_samples(cfg.data, val_split)
    elif val_split != canonical_split(TrainConfig.val_split) and val_split != train_split and not resume:
        # a split asked for by name (a typo among them) is not silently replaced by a hold-out
        raise TrainError(
            f"{cfg.data}: no {cfg.val_split!r} split (found {found or 'none'}); leave --val-split out "
            "to hold out part of the training images",
            option="val_split",
        )
    else:
        # held out with a seed of its own: runs of other --seed values are chosen on one set
        train_samples, val_samples = _split_off_validation(train_samples, cfg.val_fraction, cfg.holdout_seed)
        _log(accelerator, f"no {val_split!r} split: holding out {len(val_samples)} training images")
    if cfg.val_leak_free:  # a copy of a training image in validation rewards remembering it
        from emovit.data import find_leaks

        leaked = find_leaks(val_samples, train_samples, threads=cfg.threads)
        val_samples = [sample for i, sample in enumerate(val_samples) if i not in leaked]
        copies = f"{len(leaked)} image{'s' if len(leaked) != 1 else ''}"
        _log(accelerator, f"validation: {copies} with a copy in training left out")
    if cfg.max_train_samples and len(train_samples) > cfg.max_train_samples:
        keep = np.random.default_rng(cfg.seed).permutation(len(train_samples))[: cfg.max_train_samples]
        train_samples = [train_samples[i] for i in sorted(keep)]
    if votes is not None:  # the vote file's classes: the seven emotions
        classes = list(EMOTIONS)
    else:
        classes = order_labels(sorted({s.label for s in train_samples} | {s.label for s in val_samples}))
        for split, samples in (("training", train_samples), ("validation", val_samples)):
            missing = sorted(set(classes) - {s.label for s in samples})
            if missing:  # an output never learned, or a class no choice of epoch looks at
                _log(accelerator, f"warning: no {split} image of {', '.join(missing)}")
    if len(classes) < 2:  # a one-output classifier learns nothing, and no door loads it
        raise TrainError(
            f"{cfg.data}: one class only ({', '.join(classes)}); a classifier needs at least 2",
            option="data",
        )
    model, classes, processor, inherited, notes = _build_model(cfg, classes)
    framing = _framing(cfg, inherited)
    # how the inherited framing was chosen stays with it; a changed framing drops the note
    framing_notes = notes if framing == inherited else {}
    inputs = TrainingInput.from_config(processor, device, grey=framing.grey, model=cfg.init or "the model")
    train_targets = None
    if votes is not None:
        given = len(train_samples), len(val_samples)
        train_samples, train_targets = vote_targets(train_samples, votes, classes)
        val_samples = majority_samples(val_samples, votes)
        _log(
            accelerator,
            f"vote labels {cfg.labels}: training on the vote distributions of {len(train_samples)} of "
            f"{given[0]} images, validating on the majority label of {len(val_samples)} of {given[1]}",
        )
        if not train_samples or not val_samples:
            raise TrainError(f"{cfg.labels}: no training or no validation image has a usable vote")
    start = time.perf_counter()
    train_data = inputs.decode(train_samples, classes, targets=train_targets, threads=cfg.threads)
    val_data = inputs.decode(val_samples, classes, threads=cfg.threads)
    perturbed = _perturbed_sets(val_data) if cfg.select_metric == "robust_f1" else {}
    cfg = _fit_batch_size(cfg, len(train_data), world, accelerator.is_main_process)
    micro = cfg.batch_size // (world * cfg.grad_accum)
    per_rank = cfg.batch_size // world
    _log(
        accelerator,
        f"data: {len(train_data)} train / {len(val_data)} validation images, {len(classes)} classes, "
        f"decoded in {time.perf_counter() - start:.1f}s; {world} process(es), micro-batch {micro}",
    )

    # class balance on the targets (one-hot or soft): expected images per class
    assert train_data.targets is not None  # LabelledImages fills them in
    counts = train_data.targets.sum(axis=0).astype(np.float64)
    class_weights = None
    if cfg.balance == "loss":
        w = counts.sum() / (len(classes) * np.maximum(counts, 1))
        class_weights = torch.tensor(w / (w * counts).sum() * counts.sum(), dtype=torch.float32)
    sample_weights = torch.tensor(
        train_data.targets.astype(np.float64) @ (1.0 / np.maximum(counts, 1)), dtype=torch.float64
    )
    # Logit adjustment (Menon et al. 2021): the loss sees logits + tau * log(prior), so the
    # model's own logits learn the class-balanced posterior (rare classes are not drowned).
    log_prior = torch.tensor(np.log(np.maximum(counts, 1) / counts.sum()), dtype=torch.float32)

    steps_per_epoch = len(train_data) // cfg.batch_size
    optimizer = torch.optim.AdamW(_param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=(0.9, 0.999))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(cfg, steps_per_epoch))
    model, optimizer = accelerator.prepare(model, optimizer)
    if class_weights is not None:
        class_weights = class_weights.to(device)
    log_prior = log_prior.to(device)
    teacher = _load_teacher(cfg, classes, inputs, framing) if cfg.teacher else None

    # ---- state
    state: dict[str, Any] = {
        "epoch": 0,
        "best_f1": -1.0,
        "best_epoch": -1,
        "bad_epochs": 0,
        "elapsed_s": 0.0,
        "f1_over": "present",  # macro-F1 over the classes present in validation (`macro_f1`)
    }
    history: list[dict[str, Any]] = []
    if resume:
        from safetensors.torch import load_file

        recorded = _checkpoint_file(out / "training_config.json", lambda path: _read_json(path)["resolved"])
        saved_classes = recorded["classes"]
        if list(saved_classes) != list(classes):  # a renamed class folder, another --init's labels
            raise TrainError(
                f"{out}: the run was started with the classes {saved_classes} and the data and model "
                f"now give {list(classes)}; resume with the same data, or start a new run"
            )
        run_counts = (recorded.get("train_images"), recorded.get("val_images"))
        if None not in run_counts and run_counts != (len(train_data), len(val_data)):  # another data set
            raise TrainError(
                f"{cfg.data}: {len(train_data)} training and {len(val_data)} validation images; the "
                f"run in {out} trained on {run_counts[0]} and {run_counts[1]}: resume with the data it "
                "started on, or start a new run",
                option="data",
            )
        unwrapped = accelerator.unwrap_model(model)
        # the files read (a damaged one is named), then given to the model built now (a
        # mismatch is the model's, said in full by torch)
        weights = _checkpoint_file(ckpt / "model.safetensors", lambda path: load_file(str(path)))
        optimizer_state = _checkpoint_file(
            ckpt / "optimizer.pt", lambda path: torch.load(path, weights_only=True, map_location=device)
        )
        scheduler_state = _checkpoint_file(
            ckpt / "scheduler.pt", lambda path: torch.load(path, weights_only=True)
        )
        unwrapped.load_state_dict(weights)
        optimizer.load_state_dict(optimizer_state)
        scheduler.load_state_dict(scheduler_state)
        _restore_scaler(getattr(accelerator, "scaler", None), ckpt)
        state = _checkpoint_file(ckpt / "state.json", _read_json)
        if state.get("f1_over") != "present":  # saved when macro-F1 averaged over every class
            present = len(set(val_data.labels.tolist()))
            if 0 < present < len(classes) and state["best_f1"] > 0:  # absent classes scored 0
                state["best_f1"] *= len(classes) / present
            state["f1_over"] = "present"
        history = _checkpoint_file(out / "metrics.jsonl", _read_history)[: state["epoch"]]
        _log(
            accelerator,
            f"resuming {out} after epoch {state['epoch']} (best {cfg.select_metric.replace('_', '-')} "
            f"{state['best_f1']:.4f})",
        )
        if (
            accelerator.is_main_process
            and state["best_epoch"] == state["epoch"]
            and (ckpt / BEST_STAGED).is_dir()
        ):
            _publish_best(out, ckpt / BEST_STAGED)  # killed between the commit and the publishing
    elif accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        (out / "metrics.jsonl").write_text("")
        _write_config(out, cfg, classes, world, accelerator.mixed_precision, processor, train_data, val_data)

    stopped = "epochs"
    if state["bad_epochs"] >= cfg.patience:  # resumed after the epoch that stopped it early
        stopped = "early stopping"
    session_start = time.perf_counter()
    elapsed_before = float(state["elapsed_s"])
    run_state_file = out / RUN_STATE
    if accelerator.is_main_process and stopped == "epochs" and run_state_file.is_file():
        # a run continued (more --epochs): not complete while it trains, so that a crash now
        # never leaves "complete" beside best weights this session may already have replaced
        previous = json.loads(run_state_file.read_text())
        if previous.get("complete"):
            previous |= {"complete": False, "epochs": cfg.epochs, "stopped": "continuing"}
            write_text_atomic(run_state_file, json.dumps(previous, indent=2) + "\n")
    show = (sys.stderr.isatty() if progress is None else progress) and accelerator.is_main_process
    for epoch in range(int(state["epoch"]) if stopped == "epochs" else cfg.epochs, cfg.epochs):
        epoch_start = time.perf_counter()
        gen = torch.Generator().manual_seed(_seed(cfg, epoch))
        torch.manual_seed(_seed(cfg, epoch, 1))
        if cfg.balance == "sampler":
            order = torch.multinomial(sample_weights, len(train_data), replacement=True, generator=gen)
        else:
            order = torch.randperm(len(train_data), generator=gen)
        model.train()
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device)
        seen = 0
        with progress_bar(steps_per_epoch, f"epoch {epoch + 1}/{cfg.epochs}", enabled=show) as advance:
            for step in range(steps_per_epoch):
                batch = order[step * cfg.batch_size : (step + 1) * cfg.batch_size]
                mine = batch[rank * per_rank : (rank + 1) * per_rank]
                step_seed = _seed(cfg, epoch, step, 2)
                for a in range(cfg.grad_accum):
                    rows = mine[a * micro : (a + 1) * micro].numpy()
                    offset = rank * per_rank + a * micro
                    x = inputs.pixels(train_data.images[rows])
                    clean, x = augment_views(
                        x, cfg.augment, torch.Generator().manual_seed(step_seed), offset, cfg.batch_size
                    )
                    labels = torch.from_numpy(train_data.labels[rows]).to(device)
                    targets = torch.from_numpy(train_data.targets[rows]).to(device)
                    mix_gen = torch.Generator().manual_seed(step_seed + a + 7)
                    if teacher is not None and cfg.teacher_input == "clean":
                        # both views mixed alike: stacked as channels, one mixup or cutmix
                        both, targets = mix_batch(torch.cat([x, clean], dim=1), targets, cfg.augment, mix_gen)
                        x, clean = both.split(x.shape[1], dim=1)
                    else:
                        x, targets = mix_batch(x, targets, cfg.augment, mix_gen)
                        clean = x
                    sync = a == cfg.grad_accum - 1
                    context = contextlib.nullcontext() if sync else accelerator.no_sync(model)
                    with context, accelerator.autocast():
                        logits = model(pixel_values=inputs.model_input(x)).logits
                        adjusted = logits + cfg.logit_adjust * log_prior if cfg.logit_adjust else logits
                        losses = _soft_ce(adjusted, targets, cfg.label_smoothing, class_weights)
                        if teacher is not None:
                            kd = _distill_loss(logits, teacher(clean), cfg.distill_temperature)
                            losses = (1 - cfg.distill_alpha) * losses + cfg.distill_alpha * kd
                        loss = losses.sum() / per_rank
                        accelerator.backward(loss)
                    loss_sum += losses.detach().sum()
                    correct += (logits.detach().argmax(-1) == labels).sum()
                    seen += len(rows)
                if cfg.grad_clip:
                    accelerator.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                advance()
        totals = accelerator.reduce(
            torch.stack([loss_sum, correct, torch.tensor(float(seen), device=device)])
        )
        val_logits = _predict(model, accelerator, inputs, val_data, cfg.eval_batch_size)
        val_pred = val_logits.argmax(-1)
        val_loss = float(F.cross_entropy(torch.from_numpy(val_logits), torch.from_numpy(val_data.labels)))
        record: dict[str, Any] = {
            "epoch": epoch + 1,
            "train_loss": float(totals[0] / totals[2]),
            "train_accuracy": float(totals[1] / totals[2]),
            "val_loss": val_loss,
            "val_accuracy": float((val_pred == val_data.labels).mean()),
            "val_macro_f1": macro_f1(val_data.labels, val_pred),
            "lr": float(scheduler.get_last_lr()[0]),
        }
        if perturbed:
            scores = {"clean": record["val_macro_f1"]}
            for condition, images in perturbed.items():
                logits = _predict(model, accelerator, inputs, images, cfg.eval_batch_size)
                scores[condition] = macro_f1(val_data.labels, logits.argmax(-1))
            record["val_perturbed_macro_f1"] = scores
            record["val_robust_f1"] = float(np.mean(list(scores.values())))
        record["epoch_time_s"] = round(time.perf_counter() - epoch_start, 2)
        score = record["val_robust_f1" if perturbed else "val_macro_f1"]
        improved = score > state["best_f1"]
        record["best"] = improved
        history.append(record)
        state.update(
            epoch=epoch + 1,
            elapsed_s=elapsed_before + time.perf_counter() - session_start,
            bad_epochs=0 if improved else state["bad_epochs"] + 1,
        )
        if improved:
            state.update(best_f1=score, best_epoch=epoch + 1)
        if accelerator.is_main_process:
            unwrapped = accelerator.unwrap_model(model)
            # The history first, whole and atomically (a resume keeps the lines of the epochs
            # its checkpoint holds), then the checkpoint that commits the epoch (with the new
            # best model staged inside it), then that best model published: a kill before the
            # commit repeats the epoch and leaves the best model of a committed epoch (a resume
            # with other --epochs may not find this epoch best again); a kill after it is
            # finished by the resume, which publishes the staged model again.
            write_text_atomic(out / "metrics.jsonl", "".join(json.dumps(h) + "\n" for h in history))
            stage = (
                functools.partial(
                    _stage_best, model=unwrapped, processor=processor, framing=framing, notes=framing_notes
                )
                if improved
                else None
            )
            _save_checkpoint(
                out / CHECKPOINT,
                unwrapped,
                optimizer,
                scheduler,
                state,
                best=stage,
                scaler=getattr(accelerator, "scaler", None),
            )
            if improved:
                _publish_best(out, out / CHECKPOINT / BEST_STAGED)
        accelerator.wait_for_everyone()
        _log(
            accelerator,
            f"epoch {epoch + 1}: train loss {record['train_loss']:.4f} acc {record['train_accuracy']:.3f} | "
            f"val acc {record['val_accuracy']:.4f} macro-F1 {record['val_macro_f1']:.4f}"
            f"{f' robust-F1 {score:.4f}' if perturbed else ''}{' (best)' if improved else ''} | "
            f"{record['epoch_time_s']:.0f}s",
        )
        if state["bad_epochs"] >= cfg.patience:
            stopped = "early stopping"
            break
        last = epoch + 1 == cfg.epochs  # the last epoch finishes the run, even one ending past the limit
        if (
            cfg.time_limit_min is not None
            and not last
            and (time.perf_counter() - session_start) / 60 >= cfg.time_limit_min
        ):
            stopped = "time limit (resume with --resume)"
            break

    result = TrainResult(
        output=out,
        best_epoch=int(state["best_epoch"]),
        best_metrics=next((h for h in history if h["epoch"] == state["best_epoch"]), {}),
        epochs_run=int(state["epoch"]),
        stopped=stopped,
        wall_time_s=float(state["elapsed_s"]),
        history=history,
    )
    if accelerator.is_main_process:
        from emovit.training.card import write_model_card

        write_model_card(
            out, cfg, result, classes, _label_counts(train_data), _label_counts(val_data), framing=framing
        )
        complete = not result.stopped.startswith("time limit")
        run_state = {
            "epochs": cfg.epochs,
            "epochs_run": result.epochs_run,
            "best_epoch": result.best_epoch,
            "stopped": result.stopped,
            "complete": complete,
            "wall_time_s": result.wall_time_s,
        }
        write_text_atomic(out / RUN_STATE, json.dumps(run_state, indent=2) + "\n")
    accelerator.wait_for_everyone()
    _log(accelerator, f"{stopped}: best epoch {result.best_epoch}, model in {out}")
    return result


class _Teacher:
    """Trained classifiers used only during training: their answer on the student's augmented
    batch, in the student's class order (DeiT-style soft distillation). One model answers its
    logits; an ensemble (several ``--teacher``), or ``tta="flip"`` (each model also sees the
    mirrored batch), answers the mean of the log-probabilities of every model and view: a
    geometric-mean ensemble (equivalently the mean logits), sharper where the members agree
    than the arithmetic mean of probabilities that flip-TTA answers at inference."""

    def __init__(self, members: list[tuple[Any, TrainingInput, list[int]]], tta: TtaMode = "none") -> None:
        self.members, self.tta = members, tta

    @torch.no_grad()
    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        views = 1 if self.tta == "none" else 2  # the batch and its mirror, in one forward pass
        batch = pixels if views == 1 else torch.cat([pixels, torch.flip(pixels, dims=[-1])])
        answers = [
            answer
            for model, inputs, order in self.members
            for answer in model(pixel_values=_teacher_input(inputs, batch))
            .logits.float()[:, order]
            .chunk(views)
        ]
        if len(answers) == 1:
            return answers[0]
        return torch.stack([F.log_softmax(a, dim=-1) for a in answers]).mean(dim=0)


def _teacher_input(inputs: TrainingInput, pixels: torch.Tensor) -> torch.Tensor:
    """A teacher's model input for the student's ``NCHW`` pixel values: at the teacher's input
    size (resampled bilinearly with antialiasing when the student's differs), as it was trained
    to see them (grey for a grey teacher), through its normalisation."""
    if tuple(pixels.shape[-2:]) != inputs.size:
        pixels = F.interpolate(pixels, size=inputs.size, mode="bilinear", align_corners=False, antialias=True)
    return inputs.model_input(inputs.as_trained(pixels))


def _load_teacher(
    cfg: TrainConfig, classes: list[str], student: TrainingInput, framing: Framing | None = None
) -> _Teacher:
    """The ``--teacher`` model(s), on the student's device. Each sees the student's augmented
    pixels through its own normalisation, resized to its own input size when that differs from
    the student's (a student trained at a larger input than its teachers); a grey teacher sees
    them grey. A teacher whose recorded framing differs from the student's
    `framing` (margin, alignment; colour where the student is grey) is warned about: it sees
    faces framed unlike those it learned from."""
    from emovit.models import load_torch_model
    from emovit.preprocess import read_processor_config

    members = []
    for path in teacher_paths(cfg.teacher):
        with _blame("teacher"):
            loaded = load_torch_model(path, device=str(student.device), float32=True)
        names = list(loaded.label_map.names)
        missing = [c for c in classes if c not in names]
        if missing:
            raise TrainError(f"teacher {path} lacks the classes {missing}", option="teacher")
        taught = loaded.framing
        inputs = TrainingInput.from_config(
            read_processor_config(loaded.path), student.device, grey=taught.grey, model=f"teacher {path}"
        )
        if framing is not None:
            _warn_framing(path, taught, framing)
        assert loaded.model is not None  # load_torch_model always loads the weights
        for param in loaded.model.parameters():
            param.requires_grad_(False)
        members.append((loaded.model, inputs, [names.index(c) for c in classes]))
    return _Teacher(members, cfg.teacher_tta)


def _warn_framing(teacher: str, taught: Framing, student: Framing) -> None:
    """Warn when a teacher learned from faces framed unlike the student's."""
    differences = []
    if abs(taught.face_margin - student.face_margin) > 1e-9:
        differences.append(f"margin {taught.face_margin:g}, the student's {student.face_margin:g}")
    if taught.face_align != student.face_align:
        differences.append(f"alignment {'on' if taught.face_align else 'off'}, the student's "
                           f"{'on' if student.face_align else 'off'}")  # fmt: skip
    if student.grey and not taught.grey:
        differences.append("colour faces, the student's grey ones")
    if differences:
        warnings.warn(
            f"teacher {teacher} learned from faces framed otherwise ({'; '.join(differences)}): "
            "its answers on the student's faces may be worse than its own scores",
            UserWarning,
            stacklevel=3,
        )


def _distill_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """Per-sample KL(teacher || student) at `temperature`, scaled by T^2 (Hinton et al.)."""
    t = temperature
    log_p = F.log_softmax(student.float() / t, dim=-1)
    q = F.softmax(teacher / t, dim=-1)
    return (q * (torch.log(q.clamp_min(1e-12)) - log_p)).sum(dim=-1) * t * t


def _finished_run(out: Path, epochs: int) -> TrainResult | None:
    """The result of a completed run in `out` (same number of epochs), else None: resuming a
    finished run is a no-op and needs no optimizer checkpoint."""
    path = out / RUN_STATE
    if not path.is_file():
        return None
    state = _checkpoint_file(path, _read_json)
    if not state.get("complete") or state.get("epochs") != epochs:
        return None
    history = _checkpoint_file(out / "metrics.jsonl", _read_history)
    return TrainResult(
        output=out,
        best_epoch=int(state["best_epoch"]),
        best_metrics=next((h for h in history if h["epoch"] == state["best_epoch"]), {}),
        epochs_run=int(state["epochs_run"]),
        stopped=str(state["stopped"]),
        wall_time_s=float(state["wall_time_s"]),
        history=history,
    )


def _read_history(path: Path) -> list[dict[str, Any]]:
    """A run's ``metrics.jsonl``: one record per epoch."""
    return [json.loads(line) for line in path.read_text().splitlines() if line]


def _perturbed_sets(val_data: LabelledImages) -> dict[str, LabelledImages]:
    """The validation faces under each photo perturbation of the robustness report, made once
    (they are deterministic), at the size training decoded them to."""
    from emovit.data.perturb import PERTURBATIONS, perturb_images

    return {
        condition: dataclasses.replace(val_data, images=perturb_images(val_data.images, condition))
        for condition, perturb in PERTURBATIONS.items()
        if perturb is not None
    }


@torch.no_grad()
def _predict(
    model: Any, accelerator: Any, inputs: TrainingInput, data: LabelledImages, batch_size: int
) -> np.ndarray:
    """Logits for every row of `data`, computed in shards across processes and gathered."""
    model.eval()
    world, rank = accelerator.num_processes, accelerator.process_index
    n = len(data)
    shard = math.ceil(n / world)
    rows = np.minimum(np.arange(rank * shard, (rank + 1) * shard), n - 1)
    chunks = []
    for i in range(0, len(rows), batch_size):
        part = rows[i : i + batch_size]
        with accelerator.autocast():
            chunks.append(model(pixel_values=inputs(data.images[part])).logits.float())
    logits = torch.cat(chunks) if chunks else torch.zeros(0, device=accelerator.device)
    gathered = accelerator.gather(logits.contiguous())
    return gathered[:n].cpu().numpy()


def _stage_best(
    folder: Path, model: Any, processor: dict[str, Any], framing: Framing, notes: dict[str, Any]
) -> None:
    """Write the model folder's files (weights, config, processor, framing with its `notes`)
    into the new `folder`."""
    from emovit.models import write_framing

    folder.mkdir()
    model.save_pretrained(folder, safe_serialization=True)
    for weights in folder.glob("*.safetensors"):  # safetensors writes them 0600
        plain_mode(weights)
    write_text_atomic(folder / "preprocessor_config.json", json.dumps(processor, indent=2) + "\n")
    write_framing(folder, framing, **notes)


#: Files of a model folder: a new run is not written among them.
_MODEL_FILES = frozenset({"config.json", "model.safetensors", "model.onnx", "preprocessor_config.json"})


def _publish_best(out: Path, staged: Path) -> None:
    """Copy the best model staged in a checkpoint into the run folder, each file replaced
    atomically and durably (the next checkpoint drops the staged copy: the published one must
    survive a power loss; a kill midway is repaired by the resume, which publishes it again)."""
    from emovit.fileio import atomic_open

    for file in sorted(staged.iterdir()):
        with file.open("rb") as source, atomic_open(out / file.name, "wb") as target:
            shutil.copyfileobj(source, target)
    # an earlier session's card describes an earlier best epoch: the session's end writes this
    # one's (a session stopped by Ctrl-C leaves no card rather than one about other weights)
    (out / "README.md").unlink(missing_ok=True)
    from emovit.backends import EXPORT_INFO, ONNX_FILE

    if (out / EXPORT_INFO).is_file():  # an ONNX export of an earlier epoch: not these weights
        for name in (ONNX_FILE, EXPORT_INFO):
            (out / name).unlink(missing_ok=True)
        print(f"{out}: removed the ONNX export of an earlier epoch (emovit export it again)", file=sys.stderr)


def _save_checkpoint(
    target: Path,
    model: Any,
    optimizer: Any,
    scheduler: Any,
    state: dict[str, Any],
    *,
    best: Callable[[Path], None] | None = None,
    scaler: Any = None,
) -> None:
    """Commit an epoch: weights, optimizer, scheduler and state in one folder swapped in
    whole; `best` stages the epoch's model in its ``best/`` sub-folder when it is the new best;
    `scaler` is fp16 training's loss scale (``scaler.pt``: a resume without it would start
    again from 65,536 and skip steps to find the scale)."""
    from safetensors.torch import save_file

    def write(tmp: Path) -> None:
        weights = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        save_file(weights, str(tmp / "model.safetensors"))
        plain_mode(tmp / "model.safetensors")  # safetensors writes it 0600
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
        (tmp / "state.json").write_text(json.dumps(state, indent=2) + "\n")
        if scaler is not None:
            torch.save(scaler.state_dict(), tmp / SCALER)
        if best is not None:
            best(tmp / BEST_STAGED)

    atomic_dir(target, write)


def _restore_scaler(scaler: Any, ckpt: Path) -> None:
    """Load fp16 training's loss scale from a checkpoint (one saved without it keeps the
    scaler's start)."""
    if scaler is not None and (ckpt / SCALER).is_file():
        scaler.load_state_dict(torch.load(ckpt / SCALER, weights_only=True))


def _write_config(
    out: Path,
    cfg: TrainConfig,
    classes: list[str],
    world: int,
    precision: str,
    processor: dict[str, Any],
    train_data: LabelledImages,
    val_data: LabelledImages,
) -> None:
    import transformers

    from emovit import __version__

    resolved = {
        "config": cfg.to_dict(),
        "resolved": {
            "classes": classes,
            "processes": world,
            "mixed_precision": precision,
            "device": "cuda" if torch.cuda.is_available() else "cpu",
            "train_images": len(train_data),
            "val_images": len(val_data),
            # images that could not be read and were left out (named in the warning, kept here)
            "unreadable": {"train": train_data.unreadable, "validation": val_data.unreadable},
            "processor": processor,
            "versions": {
                "emovit": __version__,
                "torch": torch.__version__,
                "transformers": transformers.__version__,
                "python": sys.version.split()[0],
            },
        },
    }
    write_text_atomic(out / "training_config.json", json.dumps(resolved, indent=2) + "\n")


def _label_counts(data: LabelledImages) -> dict[str, int]:
    """Images per class (for soft targets: per most-voted class), in class order."""
    counts = np.bincount(data.labels, minlength=len(data.classes))
    return {name: int(n) for name, n in zip(data.classes, counts, strict=True)}


def _fit_batch_size(cfg: TrainConfig, images: int, world: int, warn: bool) -> TrainConfig:
    """`cfg`, with the batch lowered to the largest usable size when the training set is
    smaller than it (a multiple of processes x gradient-accumulation steps)."""
    if images >= cfg.batch_size:
        return cfg
    unit = world * cfg.grad_accum
    usable = images // unit * unit
    if usable == 0:
        raise TrainError(
            f"{images} training images cannot fill one step of {world} process(es) x "
            f"{cfg.grad_accum} gradient-accumulation step(s)",
            option="batch_size",
        )
    if warn:
        warnings.warn(
            f"--batch-size {cfg.batch_size} exceeds the {images} training images: using a batch of {usable}",
            UserWarning,
            stacklevel=3,
        )
    return dataclasses.replace(cfg, batch_size=usable)
