"""`emovit train`, `emovit audit` (duplicates and leaks in a dataset), `emovit export` (ONNX)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource

from emovit.cli._common import non_empty_folder
from emovit.cli._errors import EXIT_FAILED, EmovitCommand
from emovit.cli._options import collect, threads_option

__all__ = ["audit", "export", "train"]


def _parse_overrides(pairs: tuple[str, ...]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected KEY=VALUE, got {pair!r}", param_hint="'--set'")
        try:
            out[key] = json.loads(raw)
        except json.JSONDecodeError:
            out[key] = raw
    return out


# Options named after `TrainConfig` fields: they arrive in the command as one dict, `fields`.
_CONFIG_OPTIONS = (
    click.option("--init", default=None, help="Start from this checkpoint (Hub id, folder, registry name)."),
    click.option(
        "--arch", default=None, help="Train from scratch with this preset (vit-tiny, vit-small-48, ...)."
    ),
    click.option("--epochs", type=click.IntRange(1), default=30, show_default=True),
    click.option(
        "--batch-size",
        "-b",
        type=click.IntRange(1),
        default=128,
        show_default=True,
        help="Global batch per optimizer step (split over processes and --grad-accum).",
    ),
    click.option("--grad-accum", type=click.IntRange(1), default=1, show_default=True),
    click.option("--lr", type=click.FloatRange(0), default=1e-3, show_default=True),
    click.option("--min-lr", type=click.FloatRange(0), default=1e-5, show_default=True),
    click.option("--weight-decay", type=click.FloatRange(0), default=0.05, show_default=True),
    click.option("--warmup-epochs", type=click.FloatRange(0), default=2.0, show_default=True),
    click.option("--label-smoothing", type=click.FloatRange(0, 0.99), default=0.1, show_default=True),
    click.option(
        "--balance",
        type=click.Choice(["none", "loss", "sampler"]),
        default=None,
        show_default="loss; none with --logit-adjust",
        help="Class-imbalance handling: loss weights or weighted sampling (--logit-adjust is another "
        "way: the two together favour rare classes twice).",
    ),
    click.option(
        "--precision",
        type=click.Choice(["auto", "fp32", "bf16", "fp16"]),
        default="auto",
        show_default=True,
        help="auto: bf16/fp16 autocast on GPU, fp32 on CPU. fp16: GPU only.",
    ),
    click.option("--seed", type=int, default=0, show_default=True),
    click.option(
        "--patience",
        type=click.IntRange(1),
        default=10,
        show_default=True,
        help="Early stopping: epochs without a better validation macro-F1.",
    ),
    click.option("--train-split", default="train", show_default=True),
    click.option("--val-split", default="validation", show_default=True),
    click.option("--max-train-samples", type=click.IntRange(1), default=None),
    click.option(
        "--time-limit",
        "time_limit_min",
        type=click.FloatRange(0),
        default=None,
        help="Stop after the epoch that passes this many minutes (0: after one epoch); --resume continues.",
    ),
    threads_option,
    click.option(
        "--teacher",
        multiple=True,
        help="Distil from this trained model (training-time only); repeat for an ensemble of teachers.",
    ),
    click.option(
        "--teacher-tta",
        type=click.Choice(["none", "flip"]),
        default="none",
        show_default=True,
        help="flip: each teacher also sees the mirror image (mean of the log-probabilities).",
    ),
    click.option(
        "--select",
        "select_metric",
        type=click.Choice(["macro-f1", "robust-f1"]),
        default="macro-f1",
        show_default=True,
        callback=lambda _ctx, _param, value: value.replace("-", "_"),
        help="Which validation score keeps an epoch: macro-F1 on the clean faces, or robust-f1, its "
        "mean with the macro-F1 under each photo perturbation of scripts/robustness_report.py "
        "(down-sampling, blur, JPEG, rotation, shift, brightness; 7 more validation passes an epoch).",
    ),
    click.option(
        "--teacher-input",
        type=click.Choice(["same", "clean"]),
        default="same",
        show_default=True,
        help="clean: the teacher sees each face before the photo degradations (down-sampling, blur, "
        "noise, gamma, JPEG) that the student sees, so the student learns the answer for the "
        "undegraded face; framing jitter, lighting, erasing and mixing are shared.",
    ),
    click.option(
        "--distill-alpha",
        type=click.FloatRange(0, 1),
        default=0.5,
        show_default=True,
        help="Weight of the distillation loss (1 - alpha goes to the labels).",
    ),
    click.option("--distill-temperature", type=click.FloatRange(0.1), default=2.0, show_default=True),
    click.option(
        "--val-leak-free",
        is_flag=True,
        help="Leave out validation images that have an exact or near copy in training (FER2013 has "
        "such copies: they reward a model that remembers its training faces, in every choice).",
    ),
    click.option(
        "--logit-adjust",
        type=click.FloatRange(0),
        default=0.0,
        show_default=True,
        help="Logit-adjusted loss (tau x log class prior): favours rare classes; 0 = off.",
    ),
)

# Labels and framing: passed only when given (framing not given is inherited from --init).
_LABEL_AND_FRAMING_OPTIONS = (
    click.option(
        "--labels",
        type=click.Path(dir_okay=False, exists=True),
        default=None,
        help="FER+ vote file: train on the votes' distribution instead of the folder labels.",
    ),
    click.option(
        "--face-margin",
        "--margin",
        "face_margin",
        type=click.FloatRange(0),
        default=None,
        help="The context around each face in the training images, recorded as the model's framing "
        "(the images must already be cropped that way: training does not detect faces).",
    ),
    click.option(
        "--face-align/--no-face-align",
        "--align/--no-align",
        "face_align",
        default=None,
        help="Whether the training faces have level eyes, recorded as the model's framing (the "
        "images must already be aligned: training does not detect faces).",
    ),
    click.option(
        "--grey/--no-grey",
        default=None,
        help="Train on grey crops (recorded as the model's framing).",
    ),
)


def _given(**values: Any) -> dict[str, Any]:
    return {key: value for key, value in values.items() if value is not None}


@click.command(cls=EmovitCommand)
@click.argument("data")
@click.option(
    "--output",
    "-o",
    required=True,
    callback=non_empty_folder,
    help="Folder for the model, checkpoints and metrics.",
)
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a model config field (image_size also sets the input size, with or without --init; "
    "a ViT continued at another size keeps its position embeddings, resampled).",
)
@collect("fields", dict, *_CONFIG_OPTIONS)
@collect("newer", _given, *_LABEL_AND_FRAMING_OPTIONS)
@click.option(
    "--mixup", type=click.FloatRange(0), default=0.0, show_default=True, help="Mixup alpha (0 = off)."
)
@click.option(
    "--cutmix", type=click.FloatRange(0), default=0.0, show_default=True, help="CutMix alpha (0 = off)."
)
@click.option(
    "--augment",
    "augment_name",
    type=click.Choice(["standard", "robust", "off"]),
    default="standard",
    show_default=True,
    help="robust: crop jitter plus real-photo degradations (downscale, blur, noise, gamma, JPEG).",
)
@click.option(
    "--augment-set",
    "augment_overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Change one strength of the --augment preset, e.g. blur_p=0.4 or jpeg_quality=20,90 (repeatable).",
)
@click.option("--no-augment", is_flag=True, help="Switch augmentation off (same as --augment off).")
@click.option("--resume", is_flag=True, help="Continue the run in --output from its last checkpoint.")
@click.pass_context
def train(
    ctx: click.Context,
    data: str,
    output: str,
    overrides: tuple[str, ...],
    fields: dict[str, Any],
    newer: dict[str, Any],
    mixup: float,
    cutmix: float,
    augment_name: str,
    augment_overrides: tuple[str, ...],
    no_augment: bool,
    resume: bool,
) -> None:
    """Train an emotion classifier on an ImageFolder tree or a FER2013 CSV.

    \b
    Examples:
      emovit train ../shared/data/fer2013 -o runs/tiny --arch vit-tiny --epochs 40
      emovit train data/ -o runs/ft --init google/vit-base-patch16-224-in21k --batch-size 64
      torchrun --nproc_per_node 4 -m emovit.cli train data/ -o runs/ddp --arch vit-small-48
    """
    from emovit.cli._common import require

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # torchrun ends its ranks: no per-rank cleanup
        import signal

        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    require("accelerate", "train", "emovit train")
    require("sklearn", "train", "emovit train")
    from transformers.utils import logging as hf_logging

    from emovit.training import AugmentConfig, TrainConfig
    from emovit.training import train as run_training
    from emovit.training.trainer import CHECKPOINT, how_to_finish, unfinished_run

    hf_logging.disable_progress_bar()
    augment = AugmentConfig.from_name("off" if no_augment else augment_name)
    augment.mixup_alpha, augment.cutmix_alpha = mixup, cutmix
    if (mixup or cutmix) and not augment.mix_p:  # the `off` preset mixes no batch: --mixup asks for it
        augment.mix_p = AugmentConfig().mix_p
    try:
        augment = augment.with_overrides(augment_overrides)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--augment-set") from None
    teachers = fields.pop("teacher")
    fields["teacher"] = None if not teachers else teachers[0] if len(teachers) == 1 else list(teachers)
    if resume and ctx.get_parameter_source("epochs") is ParameterSource.DEFAULT:
        fields["epochs"] = _saved_epochs(output, fields["epochs"])  # not the default's 30
    config = TrainConfig(
        data=data,
        output=output,
        overrides=_parse_overrides(overrides),
        augment=augment,
        **fields,
        **newer,
    )
    _warn_without_effect(ctx, config)
    if resume:
        ignored = _ignored_on_resume(ctx, output, config)
        if ignored and int(os.environ.get("RANK", "0")) == 0:
            click.echo(
                f"warning: --resume continues the run as it was started; ignored: {'; '.join(ignored)} "
                "(only --epochs and --time-limit apply; start a new run in another -o folder to "
                "change the rest)",
                err=True,
            )
    try:
        result = run_training(config, resume=resume)
    except KeyboardInterrupt:  # Ctrl-C, SIGTERM: what goes on from here (then "interrupted", exit 130)
        if int(os.environ.get("RANK", "0")) == 0 and unfinished_run(output):
            resumable = any(  # the checkpoint, or the one set aside while the next is swapped in
                (Path(output) / name / "state.json").is_file() for name in (CHECKPOINT, f".{CHECKPOINT}.old")
            )
            click.echo(f"{output}: the run is unfinished; " + (
                "go on with the same command and --resume" if resumable else how_to_finish(output)
            ), err=True)  # fmt: skip
        raise
    if int(os.environ.get("RANK", "0")) != 0:
        return
    best = result.best_metrics
    report = {
        "output": str(result.output),
        "best_epoch": result.best_epoch,
        "val_accuracy": best.get("val_accuracy"),
        "val_macro_f1": best.get("val_macro_f1"),
        "epochs_run": result.epochs_run,
        "stopped": result.stopped,
        "wall_time_s": round(result.wall_time_s, 1),
    }
    click.echo(json.dumps(report))


#: Options that feed one `TrainConfig` field under another name.
_FIELD_OF = {
    "augment_name": "augment",
    "augment_overrides": "augment",
    "no_augment": "augment",
    "mixup": "augment",
    "cutmix": "augment",
}


def _ignored_on_resume(ctx: click.Context, output: str, config: Any) -> list[str]:
    """The options given on the command line that a resume does not apply (the run keeps the
    configuration it was started with), each with the run's own value."""
    try:
        saved = json.loads((Path(output) / "training_config.json").read_text())["config"]
    except (OSError, ValueError, KeyError, TypeError):
        return []  # no run there: `train` says so
    current = json.loads(json.dumps(config.to_dict(), default=str))
    given = (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)
    ignored: list[str] = []
    for param in ctx.command.params:
        name = param.name or ""
        key = _FIELD_OF.get(name, name)
        if (
            key in ("epochs", "time_limit_min", "output", "resume", "data")  # DATA: checked by train
            or ctx.get_parameter_source(name) not in given
        ):
            continue
        if key in current and current[key] != saved.get(key):
            flag = param.opts[0] if isinstance(param, click.Option) else name.upper()
            ignored.append(f"{flag} (the run has {json.dumps(saved.get(key))})")
    return ignored


def _saved_epochs(output: str, default: int) -> int:
    """The epochs a run in `output` is to reach (a resume without --epochs keeps them): the last
    session's target (`run_state.json`, which a resume with --epochs changes), else the first's."""
    for name, key in (("run_state.json", ("epochs",)), ("training_config.json", ("config", "epochs"))):
        try:
            value: Any = json.loads((Path(output) / name).read_text())
            for part in key:
                value = value[part]
            return int(value)
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return default  # no run there: `train` says so


def _warn_without_effect(ctx: click.Context, config: Any) -> None:
    """Say which given options this run leaves without effect (not errors: a script may pass them)."""
    if int(os.environ.get("RANK", "0")) != 0:
        return  # one warning, not one per process
    given = (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)
    if not config.teacher:
        for name, flag in (
            ("distill_alpha", "--distill-alpha"),
            ("distill_temperature", "--distill-temperature"),
            ("teacher_input", "--teacher-input"),
        ):
            if ctx.get_parameter_source(name) in given:
                click.echo(f"warning: {flag} has no effect without --teacher", err=True)
    if config.logit_adjust and config.balance != "none":
        click.echo(
            f"warning: --balance {config.balance} with --logit-adjust corrects for the class prior twice "
            "(rare classes are favoured beyond balance); --balance none is the usual pairing",
            err=True,
        )


@click.command(cls=EmovitCommand)
@click.argument("data")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@click.option(
    "--max-distance",
    type=click.IntRange(0, 64),
    default=4,
    show_default=True,
    help="Perceptual-hash bits (of 64) within which two images are near duplicates.",
)
@click.option(
    "--examples",
    type=click.IntRange(0),
    default=5,
    show_default=True,
    help="Example pairs listed per split pair.",
)
def audit(data: str, fmt: str, max_distance: int, examples: int) -> None:
    """Find exact and near-duplicate images within and across the splits of DATA."""
    from emovit.cli._common import require
    from emovit.data import audit as run_audit

    require("imagehash", "train", "emovit audit")
    report = run_audit(data, max_distance=max_distance, examples_per_pair=examples)
    if fmt == "json":
        click.echo(json.dumps(report.to_dict(), indent=2))
    else:
        _print_audit(report, max_distance)
    if report.unreadable:  # inputs that failed: exit 1, as predict and evaluate
        raise click.exceptions.Exit(EXIT_FAILED)


def _print_audit(report: Any, max_distance: int) -> None:
    from rich.table import Table

    from emovit.cli._common import stdout_console

    console = stdout_console()
    console.print("images: " + ", ".join(f"{k} {v}" for k, v in report.images.items()), markup=False)
    table = Table(title=f"duplicates (near = perceptual hash within {max_distance} bits)")
    for column in ("a", "b", "exact", "near"):
        table.add_column(column, justify="right" if column in ("exact", "near") else "left")
    for pair in report.pairs:
        table.add_row(pair["a"], pair["b"], str(pair["exact"]), str(pair["near"]))
    console.print(table)
    console.print(f"label conflicts (duplicate pairs with different labels): {report.label_conflicts}")
    if report.examples:  # they were listed under the conflicts, same-label pairs among them
        console.print(f"examples of duplicate pairs ({len(report.examples)}; labels a / b):")
    for ex in report.examples:
        labels = " / ".join(map(str, ex["labels"])) if isinstance(ex["labels"], list) else ex["labels"]
        console.print(
            f"  {ex['kind']:5s} d={ex['distance']:2d} {ex['a']} ~ {ex['b']} ({labels})", markup=False
        )
    if report.unreadable:
        console.print(f"unreadable images (in no pair): {len(report.unreadable)}", markup=False)
        for bad in report.unreadable[:20]:
            console.print(f"  {bad['error']}", markup=False)


@click.command(cls=EmovitCommand)
@click.argument("model")
@click.option("--format", "fmt", type=click.Choice(["onnx"]), default="onnx", show_default=True)
@click.option(
    "--quantize", type=click.Choice(["int8"]), default=None, help="Dynamic int8 quantization of MatMuls."
)
@click.option("--output", "-o", required=True, callback=non_empty_folder, help="The model folder to write.")
@click.option("--opset", type=click.IntRange(13), default=17, show_default=True)
@click.option("--no-optimize", is_flag=True, help="Skip onnxruntime's transformer fusions.")
@click.option(
    "--tolerance",
    type=click.FloatRange(0),
    default=None,
    help="Fail beyond this difference to torch (fp32: max |logit diff| 1e-3; int8: max |prob diff| 0.15).",
)
def export(
    model: str,
    fmt: str,
    quantize: str | None,
    output: str,
    opset: int,
    no_optimize: bool,
    tolerance: float | None,
) -> None:
    """Export MODEL to ONNX (optionally int8) as a model folder that `predict --model` loads.

    After exporting, onnxruntime is checked against torch on sample inputs; the command
    fails loudly (exit 1) beyond the tolerance.
    """
    from emovit.cli._common import require

    require("onnxruntime", "onnx", "emovit export")
    require("onnx", "onnx", "emovit export")
    from emovit.backends.export import export_onnx

    result = export_onnx(
        model,
        output,
        quantize=quantize,  # type: ignore[arg-type]
        opset=opset,
        optimize=not no_optimize,
        tolerance=tolerance,
    )
    report = {
        "output": str(result.output),
        "quantize": result.quantize,
        "max_abs_logit_diff": result.max_abs_logit_diff,
        "max_abs_prob_diff": result.max_abs_prob_diff,
        "top1_agreement": result.top1_agreement,
        "check_images": result.check_images,
    }
    click.echo(json.dumps(report))
