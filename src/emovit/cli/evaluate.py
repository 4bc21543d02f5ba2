"""`emovit evaluate`: score a model on a labelled dataset through the same pipeline as predict."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from emovit.cli._errors import EXIT_FAILED, EXIT_OK, EmovitCommand
from emovit.cli._options import RecognizerOptions, face_options, recognizer_options

if TYPE_CHECKING:
    from emovit.faces import FaceOptions

__all__ = ["evaluate"]


@click.command(cls=EmovitCommand)
@click.argument("data")
@recognizer_options()
@click.option(
    "--output",
    "-o",
    required=True,
    help="Report folder (metrics.json, predictions.csv, failures.csv, plots, report.md; "
    "a previous report's files there are replaced).",
)
@click.option("--split", default=None, help="Split to score (default: test when DATA has splits).")
@face_options
@click.option(
    "--labels",
    type=click.Path(dir_okay=False, exists=True),
    default=None,
    help="FER+ vote file: score each image's majority label instead of its folder's.",
)
@click.option(
    "--exclude-leaks",
    "exclude_leaks",
    multiple=True,
    metavar="DIR",
    help="Score only images with no exact or near duplicate in this folder (a dataset: its train "
    "split); repeat it for every set that training and selection saw (train and validation).",
)
@click.option(
    "--max-distance",
    type=click.IntRange(0, 64),
    default=None,
    help="Perceptual-hash bits (of 64) within which an image is a near duplicate (with --exclude-leaks). "
    "[default: 4, as `emovit audit`]",
)
@click.option("--quiet", "-q", is_flag=True, help="No progress bar on stderr.")
@click.pass_context
def evaluate(
    ctx: click.Context,
    data: str,
    recognizer: RecognizerOptions,
    faces: FaceOptions,
    output: str,
    split: str | None,
    labels: str | None,
    exclude_leaks: tuple[str, ...],
    max_distance: int | None,
    quiet: bool,
) -> None:
    """Score a model on a labelled dataset (ImageFolder or FER2013 CSV) and write a report.

    Images go through the same stages as `emovit predict`, face detection included (use
    --detector none for pre-cropped faces such as FER2013). Exits 1 when some images failed
    (they are counted in the report).

    \b
    Example:
      emovit evaluate ../shared/data/fer2013/test --model default -o reports/default \\
          --detector none --exclude-leaks ../shared/data/fer2013/train
    """
    from emovit.cli._common import check_folder_option, load_recognizer, require

    check_folder_option(ctx, output, "--output")  # '' (an unset variable) is not "here"
    require("sklearn", "train", "emovit evaluate")
    require("matplotlib", "train", "emovit evaluate")
    from emovit.evaluation import evaluate as run_evaluation

    if max_distance is not None and not exclude_leaks:
        click.echo("warning: --max-distance has no effect without --exclude-leaks", err=True)
    rec = load_recognizer(recognizer.replace(tta="none"), faces)
    report = run_evaluation(
        rec,
        data,
        output,
        split=split,
        tta=recognizer.tta == "flip",
        labels=labels,
        exclude_leaks=list(exclude_leaks) or None,
        max_distance=max_distance,
        batch_size=recognizer.batch_size,
        threads=recognizer.threads,
        progress=not quiet and sys.stderr.isatty(),
    )
    metrics = report.metrics
    keys = ("images", "accuracy", "macro_f1", "ece", "leaks_excluded", "failed", "no_face")
    summary = {key: metrics.get(key) for key in keys}
    summary["report"] = str(Path(output) / "report.md")
    click.echo(json.dumps(summary))
    ctx.exit(EXIT_FAILED if metrics.get("failed") else EXIT_OK)
