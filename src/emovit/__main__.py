"""The ``emovit`` command (the console script) and ``python -m emovit``.

A thin start that loads the command line itself: a Ctrl-C while Python is still importing it
(about a third of a second) ends like any other interrupt, with ``interrupted`` and exit 130,
not a traceback."""

from __future__ import annotations

import sys

__all__ = ["main"]

EXIT_INTERRUPTED = 130  # as the command line's own (emovit.cli._errors)


def main() -> None:
    """Run the ``emovit`` command line on ``sys.argv``."""
    try:
        from emovit.cli import main as command
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        sys.exit(EXIT_INTERRUPTED)
    command(prog_name="emovit")


if __name__ == "__main__":
    main()
