"""`emovit explain`: where on each face the model looked, as a heat map per face."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from emovit.cli._errors import EXIT_FAILED, EXIT_OK, EmovitCommand
from emovit.cli._options import (
    RecognizerOptions,
    explain_method_option,
    explain_target_option,
    face_options,
    recognizer_options,
)

if TYPE_CHECKING:
    from emovit.explain import ExplainMethod
    from emovit.faces import FaceOptions

__all__ = ["explain"]


@click.command(cls=EmovitCommand)
@click.argument("sources", nargs=-1, required=True)
@click.option(
    "--output",
    "-o",
    type=click.Path(file_okay=False),
    required=True,
    help="Folder for the maps: <image stem>.face<i>.png and .npy per face.",
)
@explain_method_option
@explain_target_option
@recognizer_options()
@click.option(
    "--recursive/--no-recursive",
    default=True,
    show_default=True,
    help="Descend into sub-folders of folder sources.",
)
@face_options
@click.option("--quiet", "-q", is_flag=True, help="No progress bar or summary on stderr.")
@click.pass_context
def explain(
    ctx: click.Context,
    sources: tuple[str, ...],
    output: str,
    method: ExplainMethod,
    target: str | None,
    recognizer: RecognizerOptions,
    recursive: bool,
    faces: FaceOptions,
    quiet: bool,
) -> None:
    """Show where on each face the model looked.

    Writes, per face, OUTPUT/<image stem>.face<i>.png (the face crop with the heat map and the
    label) and OUTPUT/<image stem>.face<i>.npy (the raw map: float32, 0 to 1, at the crop's
    pixel size). SOURCES are as in `emovit predict` (photos only). The maps come from the
    model's torch weights, so --backend auto means torch here. A photo that fails is reported
    on stderr and the others go on (exit 1); so is a video among them.

    \b
    Examples:
      emovit explain examples/astronaut.jpg -o why/
      emovit explain faces/ -o why/ --method gradcam --target happy --detector none
    """
    from emovit.cli._common import check_folder_option, load_recognizer
    from emovit.cli.predict import _OutputNames, _reason
    from emovit.errors import OptionError
    from emovit.explain_output import write_explanations
    from emovit.progress import progress_bar
    from emovit.sources import expand_sources
    from emovit.video import is_video
    from emovit.writers import display_name

    paths = expand_sources(sources, recursive=recursive, stdin=sys.stdin if "-" in sources else None)
    if not paths:
        raise click.UsageError("no input images found in the given sources", ctx)
    kinds = [is_video(path) for path in paths]  # once each: an unknown extension is probed with FFmpeg
    videos = [path for path, video in zip(paths, kinds, strict=True) if video]
    if videos and len(videos) == len(paths):
        raise click.UsageError(
            f"emovit explain takes photos; {display_name(videos[0])!r} is {_a_video(videos[0])}", ctx
        )
    real_videos = 0
    if videos:  # a video among photos (a folder holding both): its error, and the photos go on
        paths = [path for path, video in zip(paths, kinds, strict=True) if not video]
        for video in videos:
            what = _a_video(video)
            real_videos += what in ("a video", "a live camera")
            click.echo(f"error: {display_name(video, controls=True)}: {what}; emovit explain takes photos",
                       err=True)  # fmt: skip
    check_folder_option(ctx, output, "--output")  # before any map is computed
    rec = None
    if recognizer.backend == "auto":  # the maps need the torch module: run the model on it too
        try:
            rec = load_recognizer(recognizer.replace(backend="torch"), faces)
        except OptionError as exc:  # no torch weights (an ONNX-only folder): explain says why below
            if exc.option != "backend":
                raise
    if rec is None:
        rec = load_recognizer(recognizer, faces)
    names = _OutputNames(paths)
    failed = explained = 0
    with progress_bar(len(paths), "explaining", enabled=False if quiet else None) as advance:
        for result in rec.explain_stream(paths, method=method, target=target):
            if result.ok:
                try:
                    explained += (
                        len(write_explanations(result, output, names.next(result.source), check=names.check))
                        // 2
                    )
                except Exception as exc:  # noqa: BLE001 - this input's maps (disk, memory): the others go on
                    failed += 1
                    click.echo(f"error: {display_name(result.source, controls=True)}: its maps could "
                               f"not be written ({_reason(exc)})", err=True)  # fmt: skip
            else:
                failed += 1
                click.echo(f"error: {display_name(result.error or result.source, controls=True)}", err=True)
            for face in result.faces:  # written: free the pixels
                face.crop = None
            advance()
    if not quiet:
        report = f"{explained} face(s) explained in {len(paths) - failed} of {len(paths)} images"
        if videos:  # a text file named .mp4 is no video: "other files" (their error lines say why)
            others = len(videos) - real_videos
            kinds_left = [f"{real_videos} video(s)"] * bool(real_videos) + [f"{others} other file(s)"] * bool(
                others
            )
            report += f" ({' and '.join(kinds_left)} left out)"
        where = f"; maps in {output}" if explained else "; no maps written"
        click.echo(report + (f", {failed} failed" if failed else "") + where, err=True)
    ctx.exit(EXIT_FAILED if failed or videos else EXIT_OK)


def _a_video(path: str) -> str:
    """What a source taken for a video is, in words: a file named like a video that FFmpeg
    cannot read either is "not a photo" (a text file saved as ``.mp4`` was called a video)."""
    from emovit.errors import EmovitError, InputError
    from emovit.video import is_camera, probe_video

    if is_camera(path):
        return "a live camera"
    if not Path(path).is_file():  # a URL, a pipe: not opened here
        return "a video"
    try:
        probe_video(path, max_pixels=1)  # the container and its stream, no frame decoded
    except InputError as exc:
        if exc.code in ("unsupported_format", "empty_file"):
            return f"not a photo (named like a video: {exc.problem})"
    except EmovitError:  # PyAV missing: the name is all there is to go by
        pass
    return "a video"
