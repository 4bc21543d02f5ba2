"""Turn command-line sources (files, folders, globs, ``-`` for stdin, URLs) into a list of paths.

Folders give their photos and videos (by extension); URLs are kept as they are."""

from __future__ import annotations

import glob
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TextIO

__all__ = ["IMAGE_EXTENSIONS", "VIDEO_EXTENSIONS", "VIDEO_URL_SCHEMES", "expand_sources", "is_url"]

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".pgm", ".ppm", ".jfif"}
)
VIDEO_EXTENSIONS = frozenset(
    {".mp4", ".m4v", ".mov", ".qt", ".mkv", ".webm", ".avi", ".wmv", ".flv", ".mpg", ".mpeg", ".m2ts",
     ".mts", ".ts", ".3gp", ".3g2", ".ogv", ".y4m", ".h264", ".h265", ".hevc", ".mjpeg", ".mxf", ".vob"}
)  # fmt: skip
#: URL schemes handed to FFmpeg as video streams.
VIDEO_URL_SCHEMES = frozenset({"http", "https", "rtsp", "rtsps", "rtmp", "rtmps", "srt", "udp", "tcp"})
_MEDIA_EXTENSIONS = IMAGE_EXTENSIONS | VIDEO_EXTENSIONS
_GLOB_CHARS = set("*?[")


def _walk(folder: Path, recursive: bool, videos: bool) -> Iterator[str]:
    extensions = _MEDIA_EXTENSIONS if videos else IMAGE_EXTENSIONS
    if recursive:
        for root, dirs, files in os.walk(folder):
            dirs.sort()
            for name in sorted(files):
                if Path(name).suffix.lower() in extensions and not name.startswith("."):
                    yield os.path.join(root, name)
    else:
        for entry in sorted(folder.iterdir()):
            if entry.is_file() and entry.suffix.lower() in extensions:
                yield str(entry)


def is_url(source: str) -> bool:
    """Whether `source` is a URL (``scheme://...``) rather than a path."""
    scheme, sep, rest = source.partition("://")
    return bool(sep) and scheme.isalpha() and len(scheme) > 1 and bool(rest)


def expand_sources(
    sources: Iterable[str], *, recursive: bool = True, stdin: TextIO | None = None, videos: bool = True
) -> list[str]:
    """Expand sources in order: a folder gives its image and video files (sorted, recursive by
    default), a glob its matches, ``-`` the lines of `stdin`; a URL and any other string stay
    as they are (a missing file becomes an error row later, never a silent skip). `videos`
    False leaves video files out of folders."""
    out: list[str] = []
    for source in sources:
        if source == "-":
            if stdin is None:
                continue
            lines = (line.strip() for line in stdin if line.strip())
            out.extend(expand_sources(lines, recursive=recursive, videos=videos))
            continue
        path = Path(source)
        if is_url(source):
            out.append(source)
        elif path.is_dir():
            out.extend(_walk(path, recursive, videos))
        elif not path.exists() and _GLOB_CHARS & set(source):
            matches = sorted(glob.glob(source, recursive=True))
            out.extend(m for m in matches if not Path(m).is_dir())
            if not matches:
                out.append(source)
        else:
            out.append(source)
    return out
