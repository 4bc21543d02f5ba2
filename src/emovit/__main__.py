"""The ``emovit`` command (the console script) and ``python -m emovit``.

A thin start that loads the command line itself: a Ctrl-C while Python is still importing
`emovit.cli` (about a third of a second) ends like any other interrupt, with ``interrupted`` and
exit 130, not a traceback. (Python's own start and the light ``emovit`` package, some 60 ms in
all, come before any handler; ``python -m emovit.cli`` loads the command line before it runs.)"""

from __future__ import annotations

import sys

__all__ = ["main"]

#: as the command line's own (`emovit.cli._errors`), which cannot be imported without loading it
EXIT_INTERRUPTED = 130


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
