"""Turn command-line sources (files, folders, globs, ``-`` for stdin) into a list of paths."""

from __future__ import annotations

import glob
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TextIO

__all__ = ["IMAGE_EXTENSIONS", "expand_sources"]

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".pgm", ".ppm", ".jfif"}
)
_GLOB_CHARS = set("*?[")


def _walk(folder: Path, recursive: bool) -> Iterator[str]:
    if recursive:
        for root, dirs, files in os.walk(folder):
            dirs.sort()
            for name in sorted(files):
                if Path(name).suffix.lower() in IMAGE_EXTENSIONS and not name.startswith("."):
                    yield os.path.join(root, name)
    else:
        for entry in sorted(folder.iterdir()):
            if entry.is_file() and entry.suffix.lower() in IMAGE_EXTENSIONS:
                yield str(entry)


def expand_sources(
    sources: Iterable[str], *, recursive: bool = True, stdin: TextIO | None = None
) -> list[str]:
    """Expand sources in order: a folder gives its image files (sorted, recursive by
    default), a glob its matches, ``-`` the lines of `stdin`; any other string stays as it
    is (a missing file becomes an error row later, never a silent skip)."""
    out: list[str] = []
    for source in sources:
        if source == "-":
            if stdin is None:
                continue
            out.extend(expand_sources((line.strip() for line in stdin if line.strip()), recursive=recursive))
            continue
        path = Path(source)
        if path.is_dir():
            out.extend(_walk(path, recursive))
        elif not path.exists() and _GLOB_CHARS & set(source):
            matches = sorted(glob.glob(source, recursive=True))
            out.extend(m for m in matches if not Path(m).is_dir())
            if not matches:
                out.append(source)
        else:
            out.append(source)
    return out
