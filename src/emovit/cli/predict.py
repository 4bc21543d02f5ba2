"""`emovit predict`: classify the faces in images, one result row per input, and in videos,
one row per analysed frame and face (see `emovit.cli._video`)."""

from __future__ import annotations

import itertools
import os
import sys
import unicodedata
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, get_args

import click
from click.core import ParameterSource

from emovit.cli._common import check_file_option, check_folder_option
from emovit.cli._errors import EXIT_FAILED, EXIT_OK, EmovitCommand
from emovit.cli._options import (
    VIDEO_OPTIONS,
    EngineOptions,
    RecognizerOptions,
    engine_options,
    explain_method_option,
    explain_target_option,
    face_options,
    option_names,
    plot_option,
    recognizer_options,
    summary_option,
    video_options,
)
from emovit.writers import OutputFormat

if TYPE_CHECKING:
    from emovit.explain import ExplainMethod
    from emovit.faces import FaceOptions
    from emovit.results import ImageResult
    from emovit.video import VideoOptions

__all__ = ["predict"]


@click.command(cls=EmovitCommand)
@click.argument("sources", nargs=-1, required=True)
@recognizer_options()
@click.option(
    "--format",
    "fmt",
    type=click.Choice([*get_args(OutputFormat), "parquet"]),
    default=None,
    help="Output format [default: table; parquet with --engine ray, which writes parquet or jsonl].",
)
@click.option(
    "--output",
    "-o",
    type=click.Path(),
    default=None,
    help="Write results to FILE (atomically) instead of stdout; with --engine ray, the folder "
    "(a path, s3:// or gs://) that receives the result files.",
)
@click.option(
    "--top-k",
    type=click.IntRange(1),
    default=3,
    show_default=True,
    help="How many top labels to list per face.",
)
@click.option(
    "--recursive/--no-recursive",
    default=True,
    show_default=True,
    help="Descend into sub-folders of folder sources.",
)
@face_options
@click.option(
    "--save-annotated",
    type=click.Path(file_okay=False),
    default=None,
    help="Write each image with boxes, labels and scores drawn on it into DIR (videos: "
    "DIR/<stem>.annotated.mp4, with track ids and smoothed labels).",
)
@click.option(
    "--annotated-audio/--no-annotated-audio",
    default=True,
    show_default=True,
    help="Videos from files: the annotated video keeps the source's sound over the span analysed "
    "(re-encoded to AAC).",
)
@click.option(
    "--save-crops", type=click.Path(file_okay=False), default=None, help="Write each face crop into DIR."
)
@click.option(
    "--explain",
    "explain_dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Photos: also write where on each face the model looked into DIR, as `emovit explain` does "
    "(<stem>.face<i>.png and .npy per face); json and jsonl rows then carry each map's method and target.",
)
@explain_method_option
@explain_target_option
@video_options
@summary_option
@plot_option
@engine_options
@click.option("--quiet", "-q", is_flag=True, help="No progress bar or summary on stderr.")
@click.pass_context
def predict(
    ctx: click.Context,
    sources: tuple[str, ...],
    recognizer: RecognizerOptions,
    faces: FaceOptions,
    fmt: OutputFormat | None,
    output: str | None,
    top_k: int,
    recursive: bool,
    save_annotated: str | None,
    annotated_audio: bool,
    save_crops: str | None,
    explain_dir: str | None,
    method: ExplainMethod,
    target: str | None,
    video: VideoOptions,
    summary: str | None,
    plot: str | None,
    runner: EngineOptions,
    quiet: bool,
) -> None:
    """Classify the emotion of every face in images and videos.

    SOURCES are image or video files, folders (searched recursively), globs ('faces/*.png'),
    http(s)/rtsp URLs of videos, camera://0 (this machine's first camera, live: till --end or
    Ctrl-C), or '-' to read one path per line from stdin. A broken input
    becomes an error row; the run goes on. Videos give one row per analysed frame and face,
    with the face's track id and its probabilities smoothed over time.

    \b
    Examples:
      emovit predict photo.jpg faces/ --format json
      find . -name '*.jpg' | emovit predict - --format csv -o results.csv
      emovit predict clip.mp4 --summary s.json --save-annotated out/ --plot out/
      emovit predict photos/ s3://bucket/clips/ --engine ray --workers 8 --output results/
    """
    from emovit.cli._common import load_recognizer
    from emovit.progress import progress_bar
    from emovit.sources import expand_sources
    from emovit.writers import ResultWriter, atomic_output

    paths = expand_sources(sources, recursive=recursive, stdin=sys.stdin if "-" in sources else None)
    if not paths:
        raise click.UsageError("no input images found in the given sources", ctx)
    check_file_option(ctx, summary, "--summary", paths)  # either engine writes it at the end
    if summary and output and os.path.realpath(summary) == os.path.realpath(output):  # links too
        raise click.BadParameter(  # the summary, written last, replaced the rows without a word
            f"{summary!r} is --output too: give the video summaries a file of their own",
            ctx, param_hint="'--summary'",
        )  # fmt: skip
    if runner.engine == "ray":
        if save_annotated or save_crops or plot or explain_dir:
            raise click.UsageError(
                "--save-annotated, --save-crops, --plot and --explain are local-engine options", ctx
            )
        from emovit.cli._ray import run_ray

        code = run_ray(ctx, paths, recognizer=recognizer, faces=faces, video=video, runner=runner, fmt=fmt,
                       output=output, top_k=top_k, summary=summary, quiet=quiet,
                       recursive=recursive)  # fmt: skip
        ctx.exit(code)
    _check_local(ctx, runner, fmt, output, paths)
    for flag, folder in (("--save-annotated", save_annotated), ("--save-crops", save_crops),
                         ("--plot", plot), ("--explain", explain_dir)):  # fmt: skip
        check_folder_option(ctx, folder, flag)  # made and found writable before the model runs
    if not explain_dir and (target is not None or method != "auto"):
        raise click.UsageError("--method and --target choose the maps of --explain DIR", ctx)
    fmt = fmt or "table"
    from emovit.cli._video import VideoJob, interruptible, video_flags
    from emovit.video import is_camera

    flags = video_flags(paths)
    video_given = [  # the video options the user gave (their defaults say nothing)
        f"--{name.replace('_', '-')}"
        for name in [*option_names(*VIDEO_OPTIONS), "annotated_audio"]
        if ctx.get_parameter_source(name) in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)
    ]
    _warn_unused(
        flags, summary=summary, plot=plot, save_crops=save_crops, explain=explain_dir, video_given=video_given
    )
    rec = load_recognizer(recognizer, faces)
    keep = bool(save_annotated or save_crops)
    names = _OutputNames(paths)
    failed = unsaved = 0
    videos = (
        VideoJob(rec, video, annotated=save_annotated, audio=annotated_audio, plot=plot, check=names.check)
        if any(flags)
        else None
    )
    with atomic_output(output, sys.stdout) as stream:
        live = any(is_camera(path) for path in paths)  # its rows as they come, not at Ctrl-C
        writer = ResultWriter(stream, fmt, rec.labels, top_k, video=videos is not None, live=live)
        with (  # no bar beside a camera's rows: it has no end to measure, and would garble them
            progress_bar(len(paths), "classifying", enabled=False if quiet or live else None) as advance,
            interruptible(True) as stopped,
        ):
            for is_video, group in itertools.groupby(zip(paths, flags, strict=True), key=lambda x: x[1]):
                batch = [path for path, _ in group]
                if stopped.requested:
                    break
                if is_video and videos is not None:
                    for path in batch:
                        failed += videos.run(path, names.next(path), writer, stopped, advance)
                        if stopped.requested:
                            break
                    continue
                results = (
                    rec.explain_stream(batch, method=method, target=target, keep_pixels=keep)
                    if explain_dir
                    else rec.stream(batch, keep_pixels=keep)
                )
                for result in results:
                    failed += not result.ok
                    writer.write(result)
                    if (keep or explain_dir) and result.ok:
                        unsaved += not _save_outputs(result, names, explain_dir, save_annotated, save_crops)
                    advance()
                    if stopped.requested:
                        break
        writer.close()
    if summary:
        (videos or VideoJob(rec, video)).write_summary(summary)
    if stopped.interrupted:
        raise KeyboardInterrupt
    unsaved += videos.unsaved if videos is not None else 0
    if not quiet:
        kind = "images classified" if videos is None else "inputs analysed"
        report = f"{len(paths) - failed} of {len(paths)} {kind}"
        if videos is not None:
            report += f" ({videos.opened} video(s), {videos.frames} frames)"
        if failed:
            report += f", {failed} failed (see the error rows)"
        if unsaved:
            report += f", {unsaved} whose images could not be saved (see the warnings)"
        if output:
            report += f"; results in {output}"
        click.echo(report, err=True)
    ctx.exit(EXIT_FAILED if failed or unsaved else EXIT_OK)


def _check_local(
    ctx: click.Context, runner: EngineOptions, fmt: str | None, output: str | None, paths: Sequence[str]
) -> None:
    """The ray engine's flags and formats are usage errors with the local engine."""
    given = [flag for flag, value in [("--address", runner.address), ("--workers", runner.workers)] if value]
    given += ["--resume"] if runner.resume else []
    if given or fmt == "parquet":
        what = ", ".join(given) or "--format parquet"
        raise click.UsageError(f"{what}: only with --engine ray", ctx)
    if output and Path(output).is_dir():
        raise click.BadParameter(f"{output!r} is a folder; give a file (folders are for --engine ray)",
                                 ctx, param_hint="'--output'")  # fmt: skip
    check_file_option(ctx, output, "--output", paths)


def _warn_unused(
    flags: list[bool],
    *,
    summary: str | None,
    plot: str | None,
    save_crops: str | None,
    explain: str | None = None,
    video_given: Sequence[str] = (),
) -> None:
    """Say which given options the inputs leave without effect (they are not errors: a folder
    may hold photos one day and videos the next)."""
    if not any(flags):
        unused = [flag for flag, value in (("--summary", summary), ("--plot", plot)) if value]
        if unused:
            click.echo(f"warning: {' and '.join(unused)} describe videos, and no input is a video", err=True)
        if video_given:  # --fps 3 on photos was silently nothing
            click.echo(f"warning: {', '.join(video_given)}: for videos, and no input is a video", err=True)
        return
    for flag, value, what in (
        ("--save-crops", save_crops, "saves the faces"),
        ("--explain", explain, "writes the maps"),
    ):
        if value:
            click.echo(f"warning: {flag} {what} of photos; videos get none", err=True)


def _reason(exc: BaseException) -> str:
    """An exception for a message: its text, or its type when it has none (MemoryError)."""
    return str(exc) or type(exc).__name__


class _OutputNames:
    """File stems for saved images: the source's stem, printable, at most `MAX_STEM_BYTES` of
    UTF-8 (a file name must leave room for the suffixes), unique within one run, also where
    the file system ignores case (macOS, Windows: ``Photo`` and ``photo`` are one name)."""

    MAX_STEM_BYTES = 150

    def __init__(self, inputs: Sequence[str] = ()) -> None:
        self.counts: dict[str, int] = {}
        self.used: set[str] = set()
        self.inputs = {os.path.realpath(p) for p in inputs if "://" not in p and "\0" not in p}

    def check(self, target: Path) -> Path:
        """`target`, unless it is one of the run's inputs (an output never replaces a photo)."""
        if os.path.realpath(target) in self.inputs:
            raise OSError(f"{target} is one of the inputs: it is not replaced")
        return target

    def next(self, source: str) -> str:
        from emovit.video import is_camera
        from emovit.writers import display_name

        stem = display_name(Path(source).stem, controls=True) if not source.startswith("<") else "image"
        if is_camera(source):  # camera://0: camera-0.annotated.mp4, not 0.annotated.mp4
            stem = f"camera-{stem}"
        stem = stem.encode()[: self.MAX_STEM_BYTES].decode("utf-8", "ignore") or "image"  # whole characters
        count, candidate = self.counts.get(self._key(stem), 0), stem
        while self._key(candidate) in self.used:  # `a_1` of a.jpg must not overwrite a_1.jpg's
            count += 1
            candidate = f"{stem}_{count}"
        self.counts[self._key(stem)] = count
        self.used.add(self._key(candidate))
        return candidate

    @staticmethod
    def _key(name: str) -> str:
        """The name as a case-blind file system compares it."""
        return unicodedata.normalize("NFC", name).casefold()


def _save_outputs(
    result: ImageResult,
    names: _OutputNames,
    explain_dir: str | None,
    annotated: str | None,
    crops: str | None,
) -> bool:
    """Write one result's explanation maps, annotated image and face crops (each atomically);
    False, with a warning naming the input, when one cannot be written: the other inputs and
    the results file go on."""
    from emovit.explain_output import write_explanations
    from emovit.fileio import write_image

    stem = names.next(result.source)
    try:
        if explain_dir:
            write_explanations(result, explain_dir, stem, check=names.check)
        if annotated:
            result.save(names.check(Path(annotated) / f"{stem}.annotated.jpg"))
        if crops:
            for index, face in enumerate(result.faces):
                if face.crop is not None:
                    target = names.check(Path(crops) / f"{stem}_face{index}_{face.label}.png")
                    write_image(target, face.crop, "PNG")
        return True
    except Exception as exc:  # noqa: BLE001 - this input's files (disk, memory): the others go on
        click.echo(f"warning: {result.source}: its images could not be saved ({_reason(exc)})", err=True)
        return False
    finally:
        result.image = None
        for face in result.faces:
            face.crop = None
