"""One progress bar for every long job (predict, evaluate, train, video): rich, on stderr,
shown only in a terminal unless asked for, and gone when the job ends.

Examples:
    >>> with progress_bar(3, "working", enabled=False) as advance:
    ...     for _ in range(3):
    ...         advance()
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator

__all__ = ["progress_bar"]


@contextlib.contextmanager
def progress_bar(
    total: int | None, description: str, *, enabled: bool | None = None, unit: str = ""
) -> Iterator[Callable[..., None]]:
    """Yield ``advance(n=1)``; draws a bar with count, rate and time left when `enabled`
    (default: when stderr is a terminal). `total` None draws a spinner-style counter."""
    if enabled is None:
        enabled = sys.stderr.isatty()
    if not enabled:
        yield lambda n=1: None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TaskProgressColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = [TextColumn(description), BarColumn(), MofNCompleteColumn(), TaskProgressColumn()]
    columns += [TimeElapsedColumn(), TimeRemainingColumn()]
    if unit:
        columns.append(TextColumn(unit))
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(description, total=total)
        yield lambda n=1: bar.advance(task, n)
