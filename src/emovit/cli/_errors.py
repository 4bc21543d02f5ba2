"""Exit codes, and how exceptions become them.

An `EmovitError` names the library argument it concerns (``exc.option``); a command's click
parameter of that name is the flag to blame (``--model``, ``--detector``, ``DATA``), found by
attribute, never by reading the message. Anything else that escapes a command is an internal
error: one line on stderr (``--debug`` adds the traceback) and exit code 3.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import traceback
from collections.abc import Iterator
from typing import Any, NoReturn

import click

from emovit.errors import EmovitError, ExportError, StorageError

__all__ = [
    "EXIT_BROKEN_PIPE",
    "EXIT_FAILED",
    "EXIT_INTERNAL",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_USAGE",
    "CannotRun",
    "EmovitCommand",
    "EmovitGroup",
    "Failed",
    "to_click_error",
]

EXIT_OK = 0  # every input succeeded
EXIT_FAILED = 1  # the command ran, but some inputs failed (or a download / export check failed)
EXIT_USAGE = 2  # the command could not run as asked: bad option, unloadable model or data, missing extra
EXIT_INTERNAL = 3  # an unexpected exception (a bug): one line, or the traceback with --debug
EXIT_INTERRUPTED = 130  # Ctrl-C, after the outputs were closed (atomic files: none half-written)
EXIT_BROKEN_PIPE = 141  # the reader of stdout went away (`emovit predict ... | head`)


class CannotRun(click.ClickException):
    """The command cannot run as asked (no single flag to blame): exit 2."""

    exit_code = EXIT_USAGE


class Failed(click.ClickException):
    """The command ran and failed at its job (a download, an export check): exit 1."""

    exit_code = EXIT_FAILED


def _one_line(text: str) -> str:
    from emovit.writers import display_name

    return display_name(" ".join(text.splitlines()), controls=True)


def _parameter(ctx: click.Context, option: str | None) -> click.Parameter | None:
    """The parameter of the running command that the library argument `option` came from."""
    if option is None:
        return None
    return next((p for p in ctx.command.params if p.name == option), None)


def to_click_error(exc: EmovitError, ctx: click.Context) -> click.ClickException:
    """The click error (message, flag to blame, exit code) for a deliberate emovit error."""
    from emovit.writers import display_name

    message = display_name(str(exc))
    if isinstance(exc, ExportError | StorageError):
        return Failed(message)
    param = _parameter(ctx, exc.option)
    if param is not None:
        return click.BadParameter(message, ctx=ctx, param=param)
    return CannotRun(message)


def _debug(ctx: click.Context) -> bool:
    return bool(ctx.find_root().params.get("debug"))


class EmovitCommand(click.Command):
    """A command whose `EmovitError`s become usage errors on the flag they concern."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except EmovitError as exc:
            if _debug(ctx):
                traceback.print_exc()
            raise to_click_error(exc, ctx) from None


class EmovitGroup(click.Group):
    """The command group that turns whatever escapes a command into an exit code."""

    command_class = EmovitCommand
    group_class = type  # sub-groups are EmovitGroups too

    def invoke(self, ctx: click.Context) -> Any:
        try:
            with _sigterm_as_interrupt():
                return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except EmovitError as exc:  # from a group's own callback
            raise to_click_error(exc, ctx) from None
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            raise click.exceptions.Exit(EXIT_INTERRUPTED) from None
        except BrokenPipeError:
            _silence_stdout()
            raise click.exceptions.Exit(EXIT_BROKEN_PIPE) from None
        except Exception as exc:  # noqa: BLE001 - the one place that reports bugs
            _internal_error(exc, _debug(ctx))


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM (a supervisor, ``kill``) as Ctrl-C: the command ends through the same cleanup
    (temporary files removed, outputs closed, exit 130) instead of dying where it stands.
    Commands with their own handling (`predict`'s clean stop, the server's drain) install
    theirs inside."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _internal_error(exc: Exception, debug: bool) -> NoReturn:
    if debug:
        traceback.print_exc()
    hint = "" if debug else " (run `emovit --debug COMMAND ...` for the traceback)"
    click.echo(f"error: internal error: {type(exc).__name__}: {_one_line(str(exc))}{hint}", err=True)
    raise click.exceptions.Exit(EXIT_INTERNAL) from None


def _silence_stdout() -> None:
    """Point stdout at /dev/null so that the interpreter's final flush cannot fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # stdout is not a real file (tests)
        pass
