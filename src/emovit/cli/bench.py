"""`emovit bench`: emovit's backends side by side with the transformers pipeline."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click

from emovit.cli._common import check_file_option
from emovit.cli._errors import EmovitCommand
from emovit.cli._options import RecognizerOptions, batch_size_option, collect, threads_option

__all__ = ["bench"]


def _backends(ctx: click.Context, param: click.Parameter, value: str) -> tuple[str, ...]:
    """The comma-separated backends, each checked before any model is loaded."""
    from emovit.bench import BENCH_BACKENDS

    names = tuple(name.strip() for name in value.split(",") if name.strip())
    unknown = [name for name in names if name not in BENCH_BACKENDS]
    if unknown or not names:
        raise click.BadParameter(
            f"{', '.join(map(repr, unknown)) or 'none given'}: choose among {', '.join(BENCH_BACKENDS)}"
        )
    return names


@click.command(cls=EmovitCommand)
@click.argument("model", default="default")
@click.option(
    "--images",
    "image_dir",
    default=None,
    help="Folder of images (default: FER2013's test split, $EMOVIT_SHARED/data/fer2013/test, "
    "EMOVIT_SHARED being ../shared unless set).",
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
@collect("recognizer", RecognizerOptions, batch_size_option, threads_option)
@click.option("--repeats", type=click.IntRange(1), default=5, show_default=True)
@click.option(
    "--backends",
    default="torch,onnx-fp32,onnx-int8",
    show_default=True,
    callback=_backends,
    help="Comma-separated: torch, torch-bf16 (GPU or native-bf16 CPU), onnx-fp32, onnx-int8.",
)
@click.option("--no-pipeline", is_flag=True, help="Skip the transformers pipeline baseline.")
@click.option(
    "--crops-batch-size",
    type=click.IntRange(0),
    default=0,
    show_default=True,
    help="Also time faces/s on decoded face crops in memory at this batch (0: skip).",
)
@click.option(
    "--crops",
    type=click.IntRange(1),
    default=2048,
    show_default=True,
    help="Face crops classified per repetition of the faces/s timing.",
)
@click.option("--output", "-o", default=None, help="Write the JSON report here.")
def bench(
    model: str,
    image_dir: str | None,
    count: int,
    agreement: int,
    recognizer: RecognizerOptions,
    repeats: int,
    backends: tuple[str, ...],
    no_pipeline: bool,
    crops_batch_size: int,
    crops: int,
    output: str | None,
) -> None:
    """Compare emovit's backends with the transformers pipeline on the same images.

    The images are classified whole (no face detection), as the pipeline does. MODEL is a
    model with torch weights (a Hub id, a folder, a registry name): the ONNX backends are
    exported from it for the run.
    """
    from emovit.cli._common import require

    require("onnxruntime", "onnx", "emovit bench")
    from emovit.bench import BenchConfig, format_table, run_bench
    from emovit.sources import expand_sources

    shared = Path(os.environ.get("EMOVIT_SHARED", "../shared"))
    root = Path(image_dir) if image_dir else shared / "data" / "fer2013" / "test"
    if not root.is_dir():
        default = (
            ""
            if image_dir
            else " (the default: set EMOVIT_SHARED to the folder holding data/fer2013, or give --images)"
        )
        raise click.BadParameter(f"{root}: no such image folder{default}", param_hint="'--images'")
    paths = expand_sources([str(root)], videos=False)
    if not paths:
        raise click.BadParameter(f"{root}: no images", param_hint="'--images'")
    timed = paths[:: max(1, len(paths) // count)][:count]
    labelled: list[str] = []
    labels: list[str] | None = None
    if agreement:
        from emovit.data import read_samples

        try:
            samples = read_samples(root)
            pick = samples[:: max(1, len(samples) // agreement)][:agreement]
            labelled, labels = [str(s.source) for s in pick], [s.label for s in pick]
        except Exception:  # noqa: BLE001 - an unlabelled folder: agreement without accuracy
            labelled = paths[:: max(1, len(paths) // agreement)][:agreement]
    config = BenchConfig(
        model=model,
        images=timed,
        agreement_images=labelled,
        agreement_labels=labels,
        batch_size=recognizer.batch_size,
        repeats=repeats,
        backends=backends,
        pipeline=not no_pipeline,
        threads=recognizer.threads,
        crops_batch_size=crops_batch_size,
        crops=crops,
    )
    check_file_option(click.get_current_context(), output, "--output")  # before the benchmark runs
    report = run_bench(config, progress=lambda msg: click.echo(msg, err=True))
    click.echo(format_table(report))
    if output:
        from emovit.fileio import atomic_output

        with atomic_output(output, sys.stdout) as stream:
            json.dump(report, stream, indent=2)
            stream.write("\n")
