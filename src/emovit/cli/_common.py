"""Helpers the commands share: loading a recognizer from the options, the random-weights
banner, optional extras, and the data modules wherever they live."""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from emovit.errors import DependencyError
from emovit.fileio import check_creatable, inherited_descriptor, is_stream_target

if TYPE_CHECKING:
    from emovit.cli._options import RecognizerOptions
    from emovit.faces import FaceOptions
    from emovit.predictor import EmotionRecognizer

__all__ = [
    "check_file_option",
    "check_folder_option",
    "echo_warning",
    "load_recognizer",
    "non_empty_folder",
    "random_weights_banner",
    "require",
    "stderr_console",
    "stdout_console",
]


def stderr_console() -> Any:
    from rich.console import Console

    return Console(stderr=True)


def stdout_console() -> Any:
    """A rich console for a command's report on stdout. Piped, it wraps no line (a file or
    ``grep`` gets whole lines) and draws tables ``COLUMNS`` or 140 wide; a reader that goes
    away (``| head``) is the commands' exit 141, not rich's own exit 1."""
    from emovit.writers import rich_console

    tty = sys.stdout.isatty()
    return rich_console(is_tty=tty, soft_wrap=not tty)


def random_weights_banner(name: str) -> None:
    line = "!" * 78
    stderr_console().print(
        f"[bold red]{line}\n!! MODEL {name!r} HAS RANDOM WEIGHTS: ITS PREDICTIONS ARE MEANINGLESS.\n"
        f"!! It only exercises the pipeline; use a trained model for real answers.\n{line}[/bold red]",
        markup=True,
        highlight=False,
    )


def require(module: str, extra: str, purpose: str) -> None:
    """Fail with the `pip install` that adds `module` when it is missing (exit 2)."""
    if importlib.util.find_spec(module) is None:
        raise DependencyError(module, extra, purpose)


def load_recognizer(
    options: RecognizerOptions, faces: FaceOptions, *, banner: bool = True
) -> EmotionRecognizer:
    """Build the recognizer the options describe. Errors propagate as `EmovitError`s naming
    the argument at fault (the command maps it to its flag); a random-weights model gets a
    banner on stderr instead of a warning."""
    from emovit.errors import RandomWeightsWarning
    from emovit.predictor import EmotionRecognizer

    # transformers' bars stay on: a Hub download shows its progress (the loader hides the
    # weights' loading bar itself)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomWeightsWarning)
        recognizer = EmotionRecognizer.from_pretrained(
            options.model,
            faces=faces,
            device=options.device,
            backend=options.backend,
            precision=options.precision,
            threads=options.threads,
            batch_size=options.batch_size,
            max_pixels=options.max_pixels,
            tta=options.tta,
        )
    if banner and recognizer.model.random_weights:
        random_weights_banner(options.model)
    return recognizer


def echo_warning(message: Any, category: Any, *args: Any, **kwargs: Any) -> None:
    """Warnings as one plain line on stderr (no source line), for people at a terminal."""
    click.echo(f"warning: {message}", err=True)


def _check_creatable(ctx: click.Context, folder: str | Path, flag: str, what: str) -> None:
    """`fileio.check_creatable` as the usage error of `flag` (`what`: the value as shown)."""
    try:
        check_creatable(folder)
    except OSError as exc:
        reason = f"{exc.strerror}: {exc.filename}" if exc.strerror and exc.filename else str(exc)
        raise click.BadParameter(f"{what} cannot be written there ({reason})",
                                 ctx, param_hint=f"'{flag}'") from None  # fmt: skip


def check_folder_option(ctx: click.Context, path: str | None, flag: str) -> None:
    """A folder the run writes into: found impossible to make, or not writable, now, not when
    the first result is written after the model has run (every image's work then lost). Nothing
    is created (a run refused later for another reason leaves no empty folder)."""
    if path == "":  # an unset shell variable: not "no folder", and not the current one
        raise click.BadParameter("is empty; give a folder", ctx, param_hint=f"'{flag}'")
    if path:
        _check_creatable(ctx, path, flag, f"{path!r}: the folder")


def non_empty_folder(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """A click callback for a folder option: '' (an unset shell variable) is a usage error, not
    the current folder (``train -o ''`` trained into it)."""
    if value == "":
        raise click.BadParameter("is empty; give a folder", ctx, param)
    return value


def check_file_option(ctx: click.Context, path: str | None, flag: str, inputs: Sequence[str] = ()) -> None:
    """A file the run writes at its end: its folder is made (or found impossible, or not
    writable) now, not after every input has been analysed; one of the run's `inputs` is
    refused (the results would replace the photo or video they describe)."""
    if path is None:
        return
    if not path:  # an unset shell variable: the run's work was lost at the end, writing to "."
        raise click.BadParameter("is empty; give a file", ctx, param_hint=f"'{flag}'")
    if Path(path).is_dir():
        raise click.BadParameter(f"{path!r} is a folder; give a file", ctx, param_hint=f"'{flag}'")
    if inherited_descriptor(path) is not None:  # /dev/stdout, /dev/fd/3: written through it
        return
    if is_stream_target(path):  # /dev/null, a FIFO: written in place
        if not os.access(path, os.W_OK):
            raise click.BadParameter(f"{path!r} cannot be written", ctx, param_hint=f"'{flag}'")
        return
    # only an existing file can be an input; only inputs of its name (or the name it links
    # to) are resolved (a run of a million inputs does not resolve each)
    target = os.path.realpath(path) if os.path.exists(path) else None
    names = {os.path.basename(path), os.path.basename(target or "")}
    same = target is not None and any(
        os.path.basename(source) in names and os.path.realpath(source) == target
        for source in inputs
        if "://" not in source
    )
    if same:
        raise click.BadParameter(f"{path!r} is one of the inputs: it is not replaced",
                                 ctx, param_hint=f"'{flag}'")  # fmt: skip
    # a read-only or foreign folder, a file in the way: said now, not after the run (a link's
    # file is replaced where it is: that folder, not the link's)
    folder = Path(os.path.realpath(path)).parent if os.path.islink(path) else Path(path).parent
    _check_creatable(ctx, folder, flag, f"{path!r}: its folder")
