"""The ``emovit`` command line: one grammar, ``emovit COMMAND SOURCE --model ... [options]``.

Exit codes: 0 when every input succeeded, 1 when some inputs failed (they appear as error
rows; the others are still written), 2 on usage errors (bad options, unloadable model).
"""

from __future__ import annotations

import json
import os
import sys
import warnings
from pathlib import Path
from typing import Any

import click

from emovit import __version__

__all__ = ["main"]

_FORMATS = ("table", "json", "jsonl", "csv")


def _stderr_console() -> Any:
    from rich.console import Console

    return Console(stderr=True)


def _random_weights_banner(name: str) -> None:
    console = _stderr_console()
    line = "!" * 78
    console.print(
        f"[bold red]{line}\n!! MODEL {name!r} HAS RANDOM WEIGHTS: ITS PREDICTIONS ARE MEANINGLESS.\n"
        f"!! It only exercises the pipeline; use a trained model for real answers.\n{line}[/bold red]"
    )


def _load(model: str, device: str, batch_size: int, threads: int | None, **options: Any) -> Any:
    from transformers.utils import logging as hf_logging

    from emovit.errors import DependencyError, EmovitError, RandomWeightsWarning
    from emovit.predictor import EmotionRecognizer

    hf_logging.disable_progress_bar()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RandomWeightsWarning)  # the CLI prints a banner
            return EmotionRecognizer.from_pretrained(
                model, device=device, batch_size=batch_size, threads=threads, **options
            )
    except EmovitError as exc:
        missing_faces_extra = isinstance(exc, DependencyError) and exc.extra == "faces"
        about_faces = missing_faces_extra or any(word in str(exc).lower() for word in ("detector", "yunet"))
        hint = "'--detector'" if about_faces else "'--model'"
        raise click.BadParameter(str(exc), param_hint=hint) from None
    except ValueError as exc:  # options that cannot work together, or not on this machine
        hint = "'--precision'" if "precision" in str(exc) else None
        raise click.BadParameter(str(exc), param_hint=hint) from None


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, "--version", prog_name="emovit")
def main() -> None:
    """Tell which emotion each face in a photo or camera stream shows."""
    warnings.showwarning = _show_warning


def _show_warning(message: Any, category: Any, *args: Any, **kwargs: Any) -> None:
    """Warnings as one plain line on stderr (no source line), for people at a terminal."""
    click.echo(f"warning: {message}", err=True)


@main.command()
@click.argument("sources", nargs=-1, required=True)
@click.option(
    "--model",
    "-m",
    default="default",
    show_default=True,
    help="Hub id, local model folder, or registry name (see `emovit models`).",
)
@click.option(
    "--format", "fmt", type=click.Choice(_FORMATS), default="table", show_default=True, help="Output format."
)
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False),
    default=None,
    help="Write results to FILE (atomically) instead of stdout.",
)
@click.option(
    "--top-k",
    type=click.IntRange(1),
    default=3,
    show_default=True,
    help="How many top labels to list per face.",
)
@click.option("--batch-size", "-b", type=click.IntRange(1), default=16, show_default=True)
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda[:N] or mps.")
@click.option(
    "--backend",
    type=click.Choice(["auto", "torch", "onnx"]),
    default="auto",
    show_default=True,
    help="auto: onnxruntime when the model folder has model.onnx, else torch.",
)
@click.option(
    "--precision",
    type=click.Choice(["fp32", "bf16"]),
    default="fp32",
    show_default=True,
    help="bf16: torch autocast, on a GPU or a CPU with native bf16 (AVX512_BF16/AMX) only.",
)
@click.option(
    "--threads", type=click.IntRange(1), default=None, help="Intra-op threads (default: physical cores)."
)
@click.option(
    "--recursive/--no-recursive",
    default=True,
    show_default=True,
    help="Descend into sub-folders of folder sources.",
)
@click.option(
    "--detector",
    type=click.Choice(["yunet", "haar", "auto", "none"]),
    default="yunet",
    show_default=True,
    help="Face detector; none: each image is one face (pre-cropped data).",
)
@click.option(
    "--detector-model",
    type=click.Path(dir_okay=False),
    default=None,
    help="Local YuNet ONNX file (else the cached or downloaded one).",
)
@click.option(
    "--det-threshold",
    type=click.FloatRange(0, 1),
    default=0.5,
    show_default=True,
    help="Minimum face detection score.",
)
@click.option(
    "--margin",
    type=click.FloatRange(0),
    default=0.2,
    show_default=True,
    help="Context around each face box, as a fraction of its size.",
)
@click.option("--align/--no-align", default=True, show_default=True, help="Level the eyes (yunet landmarks).")
@click.option(
    "--min-face", type=click.IntRange(1), default=20, show_default=True, help="Smallest face, pixels."
)
@click.option("--max-faces", type=click.IntRange(1), default=None, help="At most this many faces per image.")
@click.option(
    "--no-face",
    type=click.Choice(["skip", "whole"]),
    default="skip",
    show_default=True,
    help="Images without a face: report no face, or classify the whole image.",
)
@click.option(
    "--save-annotated",
    type=click.Path(file_okay=False),
    default=None,
    help="Write each image with boxes, labels and scores drawn on it into DIR.",
)
@click.option(
    "--save-crops", type=click.Path(file_okay=False), default=None, help="Write each face crop into DIR."
)
@click.option("--quiet", "-q", is_flag=True, help="No progress bar or summary on stderr.")
def predict(
    sources: tuple[str, ...],
    model: str,
    fmt: str,
    output: str | None,
    top_k: int,
    batch_size: int,
    device: str,
    backend: str,
    precision: str,
    threads: int | None,
    recursive: bool,
    detector: str,
    detector_model: str | None,
    det_threshold: float,
    margin: float,
    align: bool,
    min_face: int,
    max_faces: int | None,
    no_face: str,
    save_annotated: str | None,
    save_crops: str | None,
    quiet: bool,
) -> None:
    """Classify the emotion in images.

    SOURCES are image files, folders (searched recursively), globs ('faces/*.png'), or '-'
    to read one path per line from stdin. A broken input becomes an error row; the run goes on.

    \b
    Examples:
      emovit predict photo.jpg faces/ --format json
      find . -name '*.jpg' | emovit predict - --format csv -o results.csv
    """
    from emovit.sources import expand_sources
    from emovit._writers import ResultWriter, atomic_output

    paths = expand_sources(sources, recursive=recursive, stdin=sys.stdin if "-" in sources else None)
    if not paths:
        raise click.UsageError("no input images found in the given sources")
    recognizer = _load(
        model, device, batch_size, threads, backend=backend, detector=detector, detector_model=detector_model,
        det_threshold=det_threshold, margin=margin, align=align, min_face=min_face,
        max_faces=max_faces, no_face=no_face, precision=precision,
    )  # fmt: skip
    if recognizer.model.random_weights:
        _random_weights_banner(model)
    keep = bool(save_annotated or save_crops)
    names = _OutputNames()
    failed = 0
    show_progress = not quiet and sys.stderr.isatty() and len(paths) > batch_size
    with atomic_output(output, sys.stdout) as stream:
        writer = ResultWriter(stream, fmt, recognizer.labels, top_k)  # type: ignore[arg-type]
        with _Progress(show_progress, len(paths)) as advance:
            for result in recognizer.stream(paths, keep_pixels=keep):
                failed += not result.ok
                writer.write(result)
                if keep and result.ok:
                    _save_pixels(result, names.next(result.source), save_annotated, save_crops)
                advance()
        writer.close()
    if not quiet:
        summary = f"{len(paths) - failed} of {len(paths)} images classified"
        if failed:
            summary += f", {failed} failed (see the error rows)"
        if output:
            summary += f"; results in {output}"
        click.echo(summary, err=True)
    sys.exit(1 if failed else 0)


class _OutputNames:
    """File stems for saved images: the source's stem, made unique within one run."""

    def __init__(self) -> None:
        self.seen: dict[str, int] = {}

    def next(self, source: str) -> str:
        stem = Path(source).stem if not source.startswith("<") else "image"
        count = self.seen.get(stem, 0)
        self.seen[stem] = count + 1
        return stem if count == 0 else f"{stem}_{count}"


def _save_pixels(result: Any, stem: str, annotated: str | None, crops: str | None) -> None:
    from PIL import Image

    if annotated:
        result.save(Path(annotated) / f"{stem}.jpg")
    if crops:
        Path(crops).mkdir(parents=True, exist_ok=True)
        for index, face in enumerate(result.faces):
            if face.crop is not None:
                Image.fromarray(face.crop).save(Path(crops) / f"{stem}_face{index}_{face.label}.png")
    result.image = None
    for face in result.faces:
        face.crop = None


class _Progress:
    """A rich progress bar on stderr, or nothing."""

    def __init__(self, enabled: bool, total: int) -> None:
        self.enabled, self.total, self._bar = enabled, total, None

    def __enter__(self) -> Any:
        if not self.enabled:
            return lambda: None
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )

        self._bar = Progress(
            TextColumn("classifying"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=_stderr_console(),
            transient=True,
        )
        self._bar.__enter__()
        task = self._bar.add_task("predict", total=self.total)
        return lambda: self._bar.advance(task)  # type: ignore[union-attr]

    def __exit__(self, *exc: Any) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)


@main.command()
@click.argument("model", default="default")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
def info(model: str, fmt: str) -> None:
    """Show a model's architecture, labels, parameter count and preprocessing."""
    from emovit.errors import EmovitError
    from emovit.models import describe_model

    try:
        details = describe_model(model).to_dict()
    except EmovitError as exc:
        raise click.BadParameter(str(exc), param_hint="'MODEL'") from None
    if fmt == "json":
        click.echo(json.dumps(details, indent=2))
        return
    from rich.table import Table

    table = Table(title=f"emovit info {model}", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    for key, value in details.items():
        if key == "processor":
            for pkey, pvalue in value.items():
                table.add_row(f"processor.{pkey}", json.dumps(pvalue))
        elif key == "labels":
            table.add_row("labels (id order)", ", ".join(f"{i}:{lab}" for i, lab in enumerate(value)))
        elif key == "parameters" and value:
            table.add_row(key, f"{value:,} ({value / 1e6:.1f} M)")
        else:
            table.add_row(key, str(value))
    from rich.console import Console

    Console().print(table)
    if details["random_weights"]:
        _random_weights_banner(model)


@main.command(name="models")
def models_cmd() -> None:
    """List the registry names of known checkpoints."""
    from emovit.models import REGISTRY

    for name in sorted(REGISTRY):
        entry = REGISTRY[name]
        click.echo(f"{name:10s} {entry.location:45s} {entry.description}")


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


def _require(module: str, extra: str, purpose: str) -> None:
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise click.ClickException(f"{purpose} needs {module!r}: pip install 'emovit[{extra}]'")


@main.command(name="train")
@click.argument("data")
@click.option("--output", "-o", required=True, help="Folder for the model, checkpoints and metrics.")
@click.option("--init", default=None, help="Start from this checkpoint (Hub id, folder, registry name).")
@click.option(
    "--arch", default=None, help="Train from scratch with this preset (vit-tiny, vit-small-48, ...)."
)
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a ViTConfig field.")
@click.option("--epochs", type=click.IntRange(1), default=30, show_default=True)
@click.option(
    "--batch-size",
    type=click.IntRange(1),
    default=128,
    show_default=True,
    help="Global batch per optimizer step (split over processes and --grad-accum).",
)
@click.option("--grad-accum", type=click.IntRange(1), default=1, show_default=True)
@click.option("--lr", type=float, default=1e-3, show_default=True)
@click.option("--min-lr", type=float, default=1e-5, show_default=True)
@click.option("--weight-decay", type=float, default=0.05, show_default=True)
@click.option("--warmup-epochs", type=float, default=2.0, show_default=True)
@click.option("--label-smoothing", type=float, default=0.1, show_default=True)
@click.option(
    "--balance",
    type=click.Choice(["none", "loss", "sampler"]),
    default="loss",
    show_default=True,
    help="Class-imbalance handling: loss weights or weighted sampling.",
)
@click.option("--mixup", type=float, default=0.0, show_default=True, help="Mixup alpha (0 = off).")
@click.option("--cutmix", type=float, default=0.0, show_default=True, help="CutMix alpha (0 = off).")
@click.option("--no-augment", is_flag=True, help="Switch augmentation off.")
@click.option(
    "--precision",
    type=click.Choice(["auto", "fp32", "bf16", "fp16"]),
    default="auto",
    show_default=True,
    help="auto: bf16/fp16 autocast on GPU, fp32 on CPU.",
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--patience",
    type=click.IntRange(1),
    default=10,
    show_default=True,
    help="Early stopping: epochs without a better validation macro-F1.",
)
@click.option("--train-split", default="train", show_default=True)
@click.option("--val-split", default="validation", show_default=True)
@click.option("--max-train-samples", type=click.IntRange(1), default=None)
@click.option(
    "--time-limit", type=float, default=None, help="Stop after the epoch that passes this many minutes."
)
@click.option("--threads", type=click.IntRange(1), default=None)
@click.option("--teacher", default=None, help="Distil from this trained model (training-time only).")
@click.option(
    "--distill-alpha",
    type=click.FloatRange(0, 1),
    default=0.5,
    show_default=True,
    help="Weight of the distillation loss (1 - alpha goes to the labels).",
)
@click.option("--distill-temperature", type=click.FloatRange(0.1), default=2.0, show_default=True)
@click.option("--resume", is_flag=True, help="Continue the run in --output from its last checkpoint.")
def train_cmd(data: str, output: str, **opts: Any) -> None:
    """Train an emotion classifier on an ImageFolder tree or a FER2013 CSV.

    \b
    Examples:
      emovit train ../shared/data/fer2013 -o runs/tiny --arch vit-tiny --epochs 40
      emovit train data/ -o runs/ft --init google/vit-base-patch16-224-in21k --batch-size 64
      torchrun --nproc_per_node 4 -m emovit.cli train data/ -o runs/ddp --arch vit-small-48
    """
    _require("accelerate", "train", "emovit train")
    _require("sklearn", "train", "emovit train")
    from transformers.utils import logging as hf_logging

    from emovit.errors import EmovitError
    from emovit.training import AugmentConfig, TrainConfig, train

    hf_logging.disable_progress_bar()

    augment = AugmentConfig.off() if opts.pop("no_augment") else AugmentConfig()
    augment.mixup_alpha, augment.cutmix_alpha = opts.pop("mixup"), opts.pop("cutmix")
    cfg = TrainConfig(
        data=data,
        output=output,
        init=opts.pop("init"),
        arch=opts.pop("arch"),
        overrides=_parse_overrides(opts.pop("overrides")),
        augment=augment,
        time_limit_min=opts.pop("time_limit"),
        **{k: v for k, v in opts.items() if k != "resume"},
    )
    try:
        result = train(cfg, resume=opts["resume"])
    except EmovitError as exc:
        raise click.ClickException(str(exc)) from None
    best = result.best_metrics
    if int(os.environ.get("RANK", "0")) != 0:
        return
    click.echo(
        json.dumps(
            {
                "output": str(result.output),
                "best_epoch": result.best_epoch,
                "val_accuracy": best.get("val_accuracy"),
                "val_macro_f1": best.get("val_macro_f1"),
                "epochs_run": result.epochs_run,
                "stopped": result.stopped,
                "wall_time_s": round(result.wall_time_s, 1),
            }
        )
    )


@main.command(name="evaluate")
@click.argument("data")
@click.option("--model", "-m", default="default", show_default=True)
@click.option("--output", "-o", required=True, help="Report folder (metrics.json, plots, report.md).")
@click.option("--split", default=None, help="Split to score (default: test when DATA has splits).")
@click.option(
    "--detector",
    type=click.Choice(["none"]),
    default="none",
    show_default=True,
    help="Face detection before classifying (none: images are face crops, as in FER2013).",
)
@click.option("--tta", is_flag=True, help="Flip test-time augmentation (average with the mirrored image).")
@click.option(
    "--exclude-leaks",
    "exclude_leaks",
    default=None,
    metavar="TRAIN_DIR",
    help="Score only images with no exact or near duplicate in this training set.",
)
@click.option("--batch-size", "-b", type=click.IntRange(1), default=64, show_default=True)
@click.option("--device", default="auto", show_default=True)
@click.option("--quiet", "-q", is_flag=True)
def evaluate_cmd(
    data: str,
    model: str,
    output: str,
    split: str | None,
    detector: str,
    tta: bool,
    exclude_leaks: str | None,
    batch_size: int,
    device: str,
    quiet: bool,
) -> None:
    """Score a model on a labelled dataset (ImageFolder or FER2013 CSV) and write a report.

    \b
    Example:
      emovit evaluate ../shared/data/fer2013/test --model default -o reports/default \\
          --exclude-leaks ../shared/data/fer2013/train
    """
    _require("sklearn", "train", "emovit evaluate")
    _require("matplotlib", "train", "emovit evaluate")
    from emovit.errors import EmovitError
    from emovit.evaluation import evaluate

    recognizer = _load(model, device, batch_size, None, detector="none")
    if recognizer.model.random_weights:
        _random_weights_banner(model)
    try:
        report = evaluate(
            recognizer,
            data,
            output,
            split=split,
            tta=tta,
            exclude_leaks=exclude_leaks,
            batch_size=batch_size,
            progress=not quiet and sys.stderr.isatty(),
        )
    except EmovitError as exc:
        raise click.ClickException(str(exc)) from None
    m = report.metrics
    summary = {k: m[k] for k in ("images", "accuracy", "macro_f1", "ece", "leaks_excluded")}
    summary["report"] = str(Path(output) / "report.md")
    click.echo(json.dumps(summary))


@main.command(name="audit")
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
def audit_cmd(data: str, fmt: str, max_distance: int, examples: int) -> None:
    """Find exact and near-duplicate images within and across the splits of DATA."""
    _require("imagehash", "train", "emovit audit")
    from emovit.errors import EmovitError
    from emovit.training.audit import audit

    try:
        report = audit(data, max_distance=max_distance, examples_per_pair=examples)
    except EmovitError as exc:
        raise click.ClickException(str(exc)) from None
    if fmt == "json":
        click.echo(json.dumps(report.to_dict(), indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.print("images: " + ", ".join(f"{k} {v}" for k, v in report.images.items()))
    table = Table(title=f"duplicates (near = perceptual hash within {max_distance} bits)")
    for column in ("a", "b", "exact", "near"):
        table.add_column(column, justify="right" if column in ("exact", "near") else "left")
    for pair in report.pairs:
        table.add_row(pair["a"], pair["b"], str(pair["exact"]), str(pair["near"]))
    console.print(table)
    console.print(f"label conflicts (duplicate pairs with different labels): {report.label_conflicts}")
    for ex in report.examples:
        console.print(f"  {ex['kind']:5s} d={ex['distance']:2d} {ex['a']} ~ {ex['b']} {ex['labels']}")


@main.command(name="export")
@click.argument("model")
@click.option("--format", "fmt", type=click.Choice(["onnx"]), default="onnx", show_default=True)
@click.option(
    "--quantize", type=click.Choice(["int8"]), default=None, help="Dynamic int8 quantization of MatMuls."
)
@click.option("--output", "-o", required=True, help="The model folder to write.")
@click.option("--opset", type=click.IntRange(13), default=17, show_default=True)
@click.option("--no-optimize", is_flag=True, help="Skip onnxruntime's transformer fusions.")
@click.option(
    "--tolerance",
    type=float,
    default=None,
    help="Fail beyond this difference to torch (fp32: max |logit diff| 1e-3; int8: max |prob diff| 0.15).",
)
def export_cmd(
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
    fails loudly beyond the tolerance.
    """
    _require("onnxruntime", "onnx", "emovit export")
    _require("onnx", "onnx", "emovit export")
    from emovit.backends.export import export_onnx
    from emovit.errors import EmovitError

    try:
        result = export_onnx(
            model,
            output,
            quantize=quantize,
            opset=opset,
            optimize=not no_optimize,  # type: ignore[arg-type]
            tolerance=tolerance,
        )
    except EmovitError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(
        json.dumps(
            {
                "output": str(result.output),
                "quantize": result.quantize,
                "max_abs_logit_diff": result.max_abs_logit_diff,
                "max_abs_prob_diff": result.max_abs_prob_diff,
                "top1_agreement": result.top1_agreement,
                "check_images": result.check_images,
            }
        )
    )


@main.command(name="bench")
@click.argument("model", default="default")
@click.option(
    "--images", "image_dir", default=None, help="Folder of images (default: FER2013 test beside the repo)."
)
@click.option(
    "--count", type=click.IntRange(1), default=32, show_default=True, help="Images timed per repetition."
)
@click.option(
    "--agreement",
    type=click.IntRange(0),
    default=200,
    show_default=True,
    help="Labelled images for agreement and accuracy (0: skip).",
)
@click.option("--batch-size", "-b", type=click.IntRange(1), default=8, show_default=True)
@click.option("--repeats", type=click.IntRange(1), default=5, show_default=True)
@click.option(
    "--backends",
    default="torch,onnx-fp32,onnx-int8",
    show_default=True,
    help="Comma-separated: torch, torch-bf16 (GPU or native-bf16 CPU), onnx-fp32, onnx-int8.",
)
@click.option("--no-pipeline", is_flag=True, help="Skip the transformers pipeline baseline.")
@click.option(
    "--crops-batch-size",
    type=click.IntRange(0),
    default=0,
    help="Also time faces/s on decoded face crops in memory at this batch (0: skip).",
)
@click.option("--output", "-o", default=None, help="Write the JSON report here.")
def bench_cmd(
    model: str,
    image_dir: str | None,
    count: int,
    agreement: int,
    batch_size: int,
    repeats: int,
    backends: str,
    no_pipeline: bool,
    crops_batch_size: int,
    output: str | None,
) -> None:
    """Compare emovit's backends with the transformers pipeline on the same images."""
    _require("onnxruntime", "onnx", "emovit bench")
    from emovit.sources import expand_sources
    from emovit.bench import BenchConfig, format_table, run_bench
    from emovit.training.datasets import read_samples

    shared = Path(os.environ.get("EMOVIT_SHARED", "../shared"))
    root = Path(image_dir) if image_dir else shared / "data" / "fer2013" / "test"
    if not root.is_dir():
        raise click.UsageError(f"{root}: no such image folder (pass --images DIR)")
    paths = expand_sources([str(root)])
    if not paths:
        raise click.UsageError(f"{root}: no images")
    step = max(1, len(paths) // count)
    timed = paths[::step][:count]
    labelled: list[str] = []
    labels: list[str] | None = None
    if agreement:
        try:
            samples = read_samples(root)
            pick = samples[:: max(1, len(samples) // agreement)][:agreement]
            labelled, labels = [str(s.source) for s in pick], [s.label for s in pick]
        except Exception:  # noqa: BLE001 - an unlabelled folder: agreement without accuracy
            labelled = paths[:: max(1, len(paths) // agreement)][:agreement]
    report = run_bench(
        BenchConfig(
            model=model,
            images=timed,
            agreement_images=labelled,
            agreement_labels=labels,
            batch_size=batch_size,
            repeats=repeats,
            backends=tuple(backends.split(",")),
            pipeline=not no_pipeline,
            crops_batch_size=crops_batch_size,
        ),
        progress=lambda msg: click.echo(msg, err=True),
    )
    click.echo(format_table(report))
    if output:
        from emovit._writers import atomic_output

        with atomic_output(output, sys.stdout) as stream:
            json.dump(report, stream, indent=2)
            stream.write("\n")


@main.command(name="serve")
@click.option(
    "--host", default="127.0.0.1", show_default=True, help="Interface to bind (0.0.0.0 exposes it)."
)
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True)
@click.option("--model", "-m", default="default", show_default=True)
@click.option(
    "--token", envvar="EMOVIT_TOKEN", default=None, help="Require this bearer token (or EMOVIT_TOKEN)."
)
@click.option(
    "--detector", type=click.Choice(["yunet", "haar", "auto", "none"]), default="auto", show_default=True
)
@click.option("--detector-model", type=click.Path(dir_okay=False), default=None)
@click.option("--backend", type=click.Choice(["auto", "torch", "onnx"]), default="auto", show_default=True)
@click.option("--device", default="auto", show_default=True)
@click.option(
    "--max-batch",
    type=click.IntRange(1),
    default=32,
    show_default=True,
    help="Faces per model batch (micro-batching across requests).",
)
@click.option(
    "--max-wait-ms",
    type=click.FloatRange(0),
    default=10.0,
    show_default=True,
    help="How long the worker waits to fill a batch.",
)
@click.option(
    "--max-queue", type=click.IntRange(1), default=64, show_default=True, help="Waiting requests before 503."
)
@click.option("--max-body-mb", type=click.FloatRange(0.01), default=10.0, show_default=True)
@click.option("--max-pixels", type=click.IntRange(1), default=25_000_000, show_default=True)
@click.option(
    "--deadline",
    type=click.FloatRange(0.1),
    default=15.0,
    show_default=True,
    help="Seconds before a request is answered 504.",
)
@click.option(
    "--cors-origin", "cors_origins", multiple=True, help="Allow this browser origin (CORS is off otherwise)."
)
@click.option(
    "--drain-timeout",
    type=click.FloatRange(0),
    default=10.0,
    show_default=True,
    help="On SIGTERM, seconds to finish queued work.",
)
def serve_cmd(
    host: str,
    port: int,
    model: str,
    token: str | None,
    detector: str,
    detector_model: str | None,
    backend: str,
    device: str,
    max_batch: int,
    max_wait_ms: float,
    max_queue: int,
    max_body_mb: float,
    max_pixels: int,
    deadline: float,
    cors_origins: tuple[str, ...],
    drain_timeout: float,
) -> None:
    """Serve the HTTP API and the web page (upload, live camera, expression capture)."""
    _require("fastapi", "serve", "emovit serve")
    _require("uvicorn", "serve", "emovit serve")
    _require("prometheus_client", "serve", "emovit serve")
    import uvicorn

    from emovit.predictor import EmotionRecognizer
    from emovit.serve import ServeSettings, create_app

    def factory() -> Any:
        return EmotionRecognizer.from_pretrained(
            model, device=device, backend=backend, detector=detector, detector_model=detector_model,
            batch_size=max_batch,
        )  # fmt: skip

    settings = ServeSettings(
        token=token, max_body_bytes=int(max_body_mb * 1024 * 1024), max_pixels=max_pixels,
        max_batch=max_batch, max_wait_ms=max_wait_ms, max_queue=max_queue, deadline_s=deadline,
        cors_origins=list(cors_origins), drain_timeout_s=drain_timeout,
    )  # fmt: skip
    app = create_app(factory, settings)
    config = uvicorn.Config(app, host=host, port=port, timeout_graceful_shutdown=int(drain_timeout) + 1,
                            log_level="info", server_header=False)  # fmt: skip

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            app.state.emovit["shutting_down"] = True  # /readyz answers 503 while draining
            super().handle_exit(sig, frame)

    if host not in ("127.0.0.1", "localhost", "::1"):
        click.echo(f"warning: listening on {host}: reachable from other machines", err=True)
    Server(config).run()


if __name__ == "__main__":  # pragma: no cover
    main()
