"""Files that are whole or absent: atomic writes of text, bytes and folders.

Every output emovit writes (result files, model folders, checkpoints, downloads) goes
through here: written under a temporary name beside the target, flushed to disk (fsync) and
renamed onto it only when complete, so a crash, Ctrl-C, SIGTERM or power loss never leaves half
a file behind.

Examples:
    >>> import tempfile, pathlib
    >>> target = pathlib.Path(tempfile.mkdtemp()) / "out.txt"
    >>> with atomic_open(target) as handle:
    ...     _ = handle.write("done")
    >>> target.read_text()
    'done'
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any, Literal, TextIO, overload

__all__ = [
    "atomic_dir",
    "atomic_open",
    "atomic_output",
    "check_creatable",
    "check_writable",
    "inherited_descriptor",
    "is_stream_target",
    "make_folders",
    "plain_mode",
    "remove_empty",
    "sha256_of",
    "temporary_prefix",
    "write_image",
    "write_report",
    "write_text_atomic",
]

#: Write failures that are the storage's, not the caller's: a full disk or quota, a file-size
#: limit, a read-only file system, an I/O error.
_STORAGE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EIO})
#: Names of a descriptor the process holds: /dev/stdout, /dev/fd/3, /proc/self/fd/1.
_DESCRIPTOR_NAME = re.compile(r"/dev/(?:std(in|out|err)|fd/(\d+))|/proc/(self|thread-self|\d+)/fd/(\d+)")


@overload
def atomic_open(
    path: str | os.PathLike[str], mode: Literal["w"] = "w", *, durable: bool = True, named: bool = False
) -> contextlib.AbstractContextManager[TextIO]: ...
@overload
def atomic_open(
    path: str | os.PathLike[str], mode: Literal["wb"], *, durable: bool = True, named: bool = False
) -> contextlib.AbstractContextManager[IO[bytes]]: ...
def atomic_open(
    path: str | os.PathLike[str], mode: str = "w", *, durable: bool = True, named: bool = False
) -> contextlib.AbstractContextManager[Any]:
    """Open `path` for writing through a temporary file that replaces it when the block ends
    without an exception (text mode: UTF-8, no newline translation). `durable` flushes it to
    disk first (fsync), so that a power loss never leaves the name on an empty file; outputs
    written by the thousand (a crop or a map per face) pass False: whole or absent still holds
    for a crash or Ctrl-C, and they cost no disk round trip each.

    `named`: the path is one the user gave (``-o``, ``--summary``), so it is taken as the user
    meant it: a descriptor the process holds (``/dev/stdout`` redirected to a log) is written
    through that descriptor, a device, FIFO or socket (``/dev/null``, a pipe) in place, and a
    symbolic link through to the file it names. The names emovit makes itself (in an output
    folder) never are: a link or FIFO planted there is replaced by the file, as always."""
    return _atomic_open(Path(path), mode, durable, named)


def _umask() -> int:
    """The process's umask, read without changing it where Linux reports it (setting it, the
    only portable way to read it, would race with files other threads create meanwhile)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _file_mode(target: Path) -> int:
    """The mode a replaced file keeps, or a new file's (0666 less the umask): the permissions a
    plain ``open`` would give (mkstemp's are private, 0600)."""
    try:
        return target.stat().st_mode & 0o777
    except OSError:
        return 0o666 & ~_umask()


def plain_mode(path: str | os.PathLike[str]) -> None:
    """Give the new file `path` the mode a plain ``open`` gives (0666 less the umask): some
    writers (safetensors' ``save_file``) make their files private (0600), which another user
    resuming or reading the run cannot open."""
    os.chmod(path, 0o666 & ~_umask())


def temporary_prefix(target: Path) -> str:
    """The start of a hidden temporary file's name beside `target`: a dot and the target's name,
    shortened so that what follows (a random part, ``.part``) still fits the 255-byte limit of
    file names whatever the target's length."""
    name = os.fsencode(target.name)
    if len(name) > 200:
        name = name[:200].decode("utf-8", "ignore").encode()  # never half a character
    return f".{os.fsdecode(name)}."


@contextlib.contextmanager
def _atomic_open(target: Path, mode: str, durable: bool = True, named: bool = False) -> Iterator[Any]:
    """`atomic_open`. A failure to create, fill or rename the file (a full disk, a permission,
    a read-only folder) is a `StorageError` naming `target`, not the temporary file. With
    `named`: a descriptor the process holds, a device, a FIFO or a socket is written in place,
    as a stream (a rename would replace it with a file: as root, ``-o /dev/null`` replaced the
    system's, and ``-o /dev/stdout`` a log that standard output was appended to), and a
    symbolic link is written through (the file it names is replaced, the link stays)."""
    kwargs: dict[str, Any] = {} if "b" in mode else {"encoding": "utf-8", "newline": ""}
    fd = inherited_descriptor(target) if named else None
    if named and (fd is not None or is_stream_target(target)):
        yield from _stream(target, mode, kwargs, fd)
        return
    if named and target.is_symlink():
        target = Path(os.path.realpath(target))
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=temporary_prefix(target), suffix=".part", dir=target.parent)
    except OSError as exc:
        raise _storage_error(target, exc) from None
    writing = False  # inside the caller's block: only storage errors are ours to rename there
    try:
        with os.fdopen(fd, mode, **kwargs) as handle:  # closes the descriptor whatever follows
            os.chmod(tmp, _file_mode(target))
            writing = True
            yield handle
            writing = False
            if durable:
                handle.flush()
                os.fsync(handle.fileno())  # the bytes on disk before the name points at them
        os.replace(tmp, target)
        if durable:
            _fsync_dir(target.parent)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        from emovit.errors import EmovitError

        storage = isinstance(exc, OSError) and (not writing or exc.errno in _STORAGE_ERRNOS)
        if storage and not isinstance(exc, EmovitError):
            raise _storage_error(target, exc) from None  # type: ignore[arg-type]
        raise


def _stream(target: Path, mode: str, kwargs: dict[str, Any], fd: int | None) -> Iterator[Any]:
    """`target` opened in place (`fd`, the descriptor the process holds that it names, is
    duplicated, not opened again: opening ``/dev/stdout`` anew truncates the file it was
    redirected to); a write the storage refuses (``/dev/full``) is a `StorageError` naming it."""
    from emovit.errors import EmovitError

    try:
        handle = os.fdopen(os.dup(fd), mode, **kwargs) if fd is not None else open(target, mode, **kwargs)  # noqa: SIM115
    except OSError as exc:
        raise _storage_error(target, exc) from None
    try:
        with handle:
            yield handle
    except OSError as exc:
        if exc.errno in _STORAGE_ERRNOS and not isinstance(exc, EmovitError):
            raise _storage_error(target, exc) from None
        raise


def inherited_descriptor(path: str | os.PathLike[str]) -> int | None:
    """The descriptor of this process that `path` names, by its name alone (``/dev/stdout``:
    1, ``/dev/fd/3``: 3, ``/proc/self/fd/2``: 2), or None; only on POSIX systems.

    Examples:
        >>> inherited_descriptor("/dev/stdout"), inherited_descriptor("out.csv")
        (1, None)
    """
    if os.name != "posix":
        return None
    match = _DESCRIPTOR_NAME.fullmatch(os.path.normpath(os.path.abspath(os.fspath(path))))
    if match is None:
        return None
    std, fd, process, proc_fd = match.groups()
    if process is not None and process not in ("self", "thread-self") and int(process) != os.getpid():
        return None  # another process's descriptor: a path like any other
    if std is not None:
        return ("in", "out", "err").index(std)
    return int(fd if fd is not None else proc_fd)


def is_stream_target(path: str | os.PathLike[str]) -> bool:
    """Whether `path` names (or links to) an existing device, FIFO or socket: an output
    written in place, never replaced by a file."""
    try:
        mode = os.stat(path).st_mode
    except (OSError, ValueError):
        return False
    return not (stat.S_ISREG(mode) or stat.S_ISDIR(mode))


def _storage_error(target: Path, exc: OSError) -> Exception:
    from emovit.errors import StorageError

    return StorageError(f"{target}: cannot be written ({exc.strerror or exc})")


def make_folders(path: str | os.PathLike[str]) -> list[Path]:
    """Create the folder `path` and its missing parents; the folders made, deepest first (what
    `remove_empty` takes away again when the work meant for them fails). Raises `OSError`."""
    folder = Path(path)
    created = [f for f in (folder, *folder.parents) if not f.exists()]
    folder.mkdir(parents=True, exist_ok=True)  # exist_ok: another process (a torchrun rank) too
    return created


def remove_empty(folders: list[Path]) -> None:
    """Remove `folders` (deepest first), stopping at the first that is not empty: a command that
    failed before writing leaves no empty folder behind, and never removes anything written."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            return


def check_writable(folder: str | os.PathLike[str]) -> None:
    """Raise the `OSError` a write into `folder` would meet (read-only, no permission): an
    unnamed temporary file is made there and dropped."""
    with tempfile.TemporaryFile(dir=folder):
        pass


def check_creatable(folder: str | os.PathLike[str]) -> None:
    """Raise the `OSError` making `folder` and writing into it would meet (a file where a folder
    must be, a read-only or foreign folder), creating nothing: its nearest existing ancestor
    must be a folder this process can write."""
    probe = Path(folder).absolute()
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    if not probe.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(probe))
    check_writable(probe)


def write_image(path: str | os.PathLike[str], image: Any, fmt: str, **options: Any) -> Path:
    """Write `image` (a Pillow image or an array) to `path` in Pillow's format `fmt`,
    atomically: encoded in memory first, because Pillow writes some formats (JPEG) straight
    to the file's descriptor and does not notice a short write (a full disk would leave a
    truncated image under the final name)."""
    import io

    from PIL import Image

    pil = image if isinstance(image, Image.Image) else Image.fromarray(image)
    buffer = io.BytesIO()
    pil.save(buffer, format=fmt, **options)
    with atomic_open(path, "wb", durable=False) as handle:
        handle.write(buffer.getbuffer())
    return Path(path)


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike[str] | None, stdout: TextIO) -> Iterator[TextIO]:
    """Yield `stdout`, or an `atomic_open` stream on `path` when one is given."""
    if path is None:
        yield stdout
        return
    with atomic_open(path, named=True) as handle:
        yield handle


def _fsync_dir(folder: Path) -> None:
    """Make a rename in `folder` durable (best effort: not every system can open a folder)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(folder: Path) -> None:
    """fsync every regular file under `folder`, then the folders themselves (best effort, as
    `_fsync_dir`: a system that cannot fsync a read-only descriptor only loses durability)."""
    for root, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(root, name)
            if not os.path.isfile(path) or os.path.islink(path):
                continue
            with contextlib.suppress(OSError):
                fd = os.open(path, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
        _fsync_dir(Path(root))


def write_text_atomic(path: str | os.PathLike[str], text: str, *, named: bool = False) -> None:
    """Write `text` to `path` atomically (`named`: a path the user gave, see `atomic_open`)."""
    with atomic_open(path, named=named) as handle:
        handle.write(text)


def write_report(folder: str | os.PathLike[str], stem: str, record: Any, markdown: str) -> Path:
    """A report as the scripts write one: ``STEM.json`` (`record`, indented) and ``STEM.md``
    (`markdown`) in `folder` (created), each written atomically; returns the ``.md`` path."""
    import json

    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / f"{stem}.json", json.dumps(record, indent=2) + "\n")
    write_text_atomic(out / f"{stem}.md", markdown)
    return out / f"{stem}.md"


def atomic_dir(target: str | os.PathLike[str], write: Callable[[Path], None]) -> None:
    """Fill a fresh folder through ``write(tmp)``, then swap it in for `target`: a crash
    leaves the old folder (or none), never a half-written one (a crash between the swap's two
    renames leaves the old one aside, put back by the next call)."""
    target = Path(target)
    tmp, old = target.with_name(f".{target.name}.tmp"), target.with_name(f".{target.name}.old")
    if old.is_dir() and not target.exists():  # a crash between the two renames of an earlier swap
        old.rename(target)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        write(tmp)
        _fsync_tree(tmp)  # the new folder's bytes on disk before it takes the old one's place
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if target.exists():
        shutil.rmtree(old, ignore_errors=True)
        target.rename(old)
    tmp.rename(target)
    _fsync_dir(target.parent)
    shutil.rmtree(old, ignore_errors=True)


def sha256_of(path: str | os.PathLike[str]) -> str:
    """The sha256 of a file's bytes (hex), read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
