"""Turn command-line sources (files, folders, globs, ``-`` for stdin, URLs) into a list of paths.

Folders give their photos and videos (by extension); URLs are kept as they are."""

from __future__ import annotations

import glob
import os
import stat
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO, TextIO

__all__ = [
    "IMAGE_EXTENSIONS",
    "VIDEO_EXTENSIONS",
    "VIDEO_URL_SCHEMES",
    "VIDEO_HEAD_BYTES",
    "expand_sources",
    "has_glob",
    "is_url",
    "looks_like_video",
    "stdin_paths",
]

#: The extensions of the formats emovit reads (`emovit.imageio.IMAGE_FORMATS`): a folder's files
#: with them are inputs (AVIF, HEIF and JPEG 2000 files where Pillow cannot read them become
#: error rows saying so, rather than being skipped without a word).
IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
    | {".pgm", ".ppm", ".pbm", ".pnm", ".avif", ".heic", ".heif", ".jp2", ".j2k", ".jpx"}
)
VIDEO_EXTENSIONS = frozenset(
    {".mp4", ".m4v", ".mov", ".qt", ".mkv", ".webm", ".avi", ".wmv", ".flv", ".mpg", ".mpeg", ".m2ts",
     ".mts", ".ts", ".3gp", ".3g2", ".ogv", ".y4m", ".h264", ".h265", ".hevc", ".mjpeg", ".mxf", ".vob"}
)  # fmt: skip
#: URL schemes handed to FFmpeg as video streams.
VIDEO_URL_SCHEMES = frozenset(
    {"http", "https", "rtsp", "rtsps", "rtmp", "rtmps", "srt", "udp", "tcp", "camera"}  # camera://0: live
)
_MEDIA_EXTENSIONS = IMAGE_EXTENSIONS | VIDEO_EXTENSIONS
_GLOB_CHARS = set("*?[")
#: ISO media brands that are no video: still images (HEIF, AVIF), sound (M4A, M4B), raw photos (CR3)
_NOT_VIDEO_BRANDS = frozenset(
    {b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1", b"avif", b"avis", b"avio",
     b"M4A ", b"M4B ", b"M4P ", b"crx "}
)  # fmt: skip
#: The bytes `looks_like_video` wants to see (three MPEG-TS packets' sync bytes).
VIDEO_HEAD_BYTES = 377


def has_glob(text: str) -> bool:
    """Whether `text` holds a glob's wildcard (``*``, ``?``, ``[``)."""
    return bool(_GLOB_CHARS & set(text))


def looks_like_video(head: bytes) -> bool:
    """Whether a file's first bytes (`VIDEO_HEAD_BYTES` of them) start a video container: MP4/
    MOV/3GP (an ``ftyp`` box whose brand is no still image or sound), Matroska/WebM, AVI, FLV,
    an MPEG program stream or an MPEG transport stream (three 188-byte packets)."""
    return (
        (head[4:8] == b"ftyp" and head[8:12] not in _NOT_VIDEO_BRANDS)
        or head.startswith((b"\x1a\x45\xdf\xa3", b"FLV\x01", b"\x00\x00\x01\xba", b"\x00\x00\x01\xb3"))
        or (head[:4] == b"RIFF" and head[8:12] == b"AVI ")
        or (len(head) >= VIDEO_HEAD_BYTES and head[0] == head[188] == head[376] == 0x47)
    )


def _walk(folder: Path, recursive: bool, videos: bool) -> Iterator[str]:
    """The media files of `folder`, sorted; a folder (this one or a sub-folder) that cannot be
    listed is given as itself, so that it becomes an error row naming it, not a silent gap."""
    extensions = _MEDIA_EXTENSIONS if videos else IMAGE_EXTENSIONS
    if recursive:
        unlisted: list[str] = []
        for root, dirs, files in os.walk(folder, onerror=lambda exc: unlisted.append(str(exc.filename))):
            yield from unlisted
            unlisted.clear()
            dirs.sort()
            for name in sorted(files):
                if Path(name).suffix.lower() in extensions and not name.startswith("."):
                    yield os.path.join(root, name)
        yield from unlisted
        return
    try:
        entries = sorted(folder.iterdir())
    except OSError:
        yield str(folder)
        return
    for entry in entries:
        if entry.suffix.lower() not in extensions or entry.name.startswith("."):
            continue
        try:  # a file, or a broken link (its error row names it, as the recursive walk's does)
            wanted = entry.is_file() or (entry.is_symlink() and not entry.exists())
        except OSError:  # a folder listed but not entered: the entry becomes an error row
            wanted = True
        if wanted:
            yield str(entry)


def _is_dir(path: Path) -> bool | None:
    """Whether `path` is a folder; None when it does not exist or cannot be looked at (a name
    too long, a folder without permission): such a source stays as it is and becomes an error
    row naming the problem, instead of stopping the run."""
    try:
        return stat.S_ISDIR(path.stat().st_mode)  # one stat call
    except (OSError, ValueError):  # missing, unreadable, too long; ValueError: a NUL byte
        return None


def is_url(source: str) -> bool:
    """Whether `source` is a URL (``scheme://...``) rather than a path."""
    scheme, sep, rest = source.partition("://")
    return (
        bool(sep)
        and len(scheme) > 1  # one letter: a Windows drive (C://...)
        and scheme[0].isascii()
        and scheme[0].isalpha()
        and all(c.isascii() and (c.isalnum() or c in "+-.") for c in scheme)  # RFC 3986: s3, svn+ssh
        and bool(rest)
    )


def stdin_paths(stdin: TextIO | BinaryIO) -> list[str]:
    """The paths of `stdin`, one per line: read as bytes and decoded as the file system does
    (a name that is not UTF-8 survives, as ``os.fsdecode`` gives it), only the line ending
    removed (a name may start or end with spaces), blank lines skipped."""
    raw = getattr(stdin, "buffer", None)
    if raw is None and isinstance(stdin.read(0), bytes):
        raw = stdin
    if raw is not None:
        lines = [_decode_name(line.rstrip(b"\r\n")) for line in raw]
    else:
        lines = [str(line).rstrip("\r\n") for line in stdin]
    if any("\0" in line for line in lines):  # no file name holds one: not a list of paths
        from emovit.errors import OptionError

        raise OptionError(
            "'-': standard input holds NUL bytes: give one path per line (`find -print0` "
            "separates them with NUL bytes: use `find -print`; an image's bytes are not a path)",
            option="sources",
        )
    return [line for line in lines if line.strip()]


def _decode_name(name: bytes) -> str:
    """A file name as bytes → str, as the file system decodes it; where that is strict (Windows:
    UTF-8 only) a name in the console's code page is decoded with it instead."""
    try:
        return os.fsdecode(name)
    except UnicodeDecodeError:
        import locale

        return name.decode(locale.getpreferredencoding(False), errors="replace")


def expand_sources(
    sources: Iterable[str],
    *,
    recursive: bool = True,
    stdin: TextIO | BinaryIO | None = None,
    videos: bool = True,
) -> list[str]:
    """Expand sources in order: a folder gives its image and video files (sorted, recursive by
    default), a glob its matches (a matched folder its files), ``-`` the lines of `stdin`
    (`stdin_paths`; a line ``-`` there is a file of that name); a URL and any other string stay
    as they are (a missing file, or a path that cannot be looked at, becomes an error row
    later, never a silent skip). `videos` False leaves video files out of folders."""
    out: list[str] = []
    for source in sources:
        if source == "-":
            if stdin is None:
                continue
            out.extend(_expand(stdin_paths(stdin), recursive, videos))
            continue
        out.extend(_expand([source], recursive, videos))
    return out


def _expand(sources: Iterable[str], recursive: bool, videos: bool) -> list[str]:
    """`expand_sources` without the ``-`` of stdin: every string is a path, a glob or a URL."""
    out: list[str] = []
    for source in sources:
        path = Path(source)
        kind = None if is_url(source) else _is_dir(path)
        if kind:
            out.extend(_walk(path, recursive, videos))
        elif kind is None and not is_url(source) and has_glob(source) and "\0" not in source:
            matches = sorted(glob.glob(source, recursive=True))
            # each file once: `**` matches a folder and its sub-folders, and follows symbolic
            # links, a link to a parent folder round and round (one photo, 40 paths to it)
            found: dict[str, str] = {}
            for match in matches:  # a matched folder gives its files, like a folder source
                for file in _walk(Path(match), recursive, videos) if _is_dir(Path(match)) else [match]:
                    found.setdefault(os.path.realpath(file), file)
            out.extend(found.values())
            if not matches:
                out.append(source)
        else:
            out.append(source)
    return out
