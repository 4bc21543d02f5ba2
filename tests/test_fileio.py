"""Atomic writes (`emovit.fileio`): whole or absent, with ordinary permissions."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from emovit.errors import StorageError
from emovit.fileio import atomic_open, write_image, write_text_atomic


def test_a_new_file_gets_the_umask_permissions_and_a_replaced_one_keeps_its_own(tmp_path: Path) -> None:
    mask = os.umask(0o027)
    try:
        fresh = tmp_path / "new.json"
        write_text_atomic(fresh, "{}")
        assert fresh.stat().st_mode & 0o777 == 0o640  # not mkstemp's private 0600
        shared = tmp_path / "shared.txt"
        shared.write_text("old")
        shared.chmod(0o664)
        write_text_atomic(shared, "new")
        assert shared.read_text() == "new" and shared.stat().st_mode & 0o777 == 0o664
    finally:
        os.umask(mask)


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "out.txt"
    write_text_atomic(target, "old")

    def crash() -> None:
        with atomic_open(target) as handle:
            handle.write("half")
            raise RuntimeError("crash")

    with pytest.raises(RuntimeError):
        crash()
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]


def test_a_write_the_storage_refuses_is_a_storage_error_naming_the_target(tmp_path: Path) -> None:
    """A full disk or a read-only folder was an internal error naming the temporary file
    (``.out.csv.l4r37jwl.part``); an error of the caller's own block is left as it is."""
    import errno

    target = tmp_path / "out.csv"
    write_text_atomic(target, "old")

    def fill(error: OSError) -> None:
        with atomic_open(target) as handle:
            handle.write("half")
            raise error

    with pytest.raises(StorageError, match=r"out\.csv: cannot be written \(No space left on device\)"):
        fill(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)))
    with pytest.raises(FileNotFoundError):  # the caller's (an input it reads), not the storage's
        fill(FileNotFoundError(errno.ENOENT, "no such input", "in.jpg"))
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["out.csv"]
    (tmp_path / "a file").write_text("")
    with pytest.raises(StorageError, match=r"a file/out\.csv: cannot be written"):
        write_text_atomic(tmp_path / "a file" / "out.csv", "x")


def test_an_image_cut_short_by_the_file_size_limit_is_not_left_under_its_name(tmp_path: Path) -> None:
    """Pillow writes a JPEG straight to the file descriptor and ignores a short write: a full
    disk (here a file-size limit) left a truncated image under the final name, and no error."""
    import subprocess
    import sys

    script = (
        "import resource, sys, numpy as np\n"
        "from emovit.fileio import write_image\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (30_000, 30_000))\n"
        "noise = np.random.default_rng(0).integers(0, 256, (400, 400, 3), dtype=np.uint8)\n"
        "try:\n"
        "    write_image(sys.argv[1], noise, 'JPEG', quality=95)\n"
        "except OSError as exc:\n"
        "    print(type(exc).__name__, exc)\n"
    )
    target = tmp_path / "big.jpg"
    done = subprocess.run(
        [sys.executable, "-c", script, str(target)], capture_output=True, text=True, check=True
    )
    assert done.stdout.startswith("StorageError") and "big.jpg: cannot be written" in done.stdout, done
    assert list(tmp_path.iterdir()) == []
    small = write_image(tmp_path / "small.png", np.zeros((8, 8, 3), np.uint8), "PNG")
    assert Image.open(small).size == (8, 8)


def test_a_folder_swap_interrupted_between_its_renames_is_put_back(tmp_path: Path) -> None:
    """atomic_dir renames the old folder aside, then the new one in: a crash in between left
    no folder at all; the next swap puts the old one back first (and then replaces it)."""
    from emovit.fileio import atomic_dir

    target = tmp_path / "model"
    atomic_dir(target, lambda out: (out / "a.txt").write_text("first"))
    target.rename(tmp_path / ".model.old")  # where the crash left it

    def fail(out: Path) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_dir(target, fail)
    assert (target / "a.txt").read_text() == "first" and not (tmp_path / ".model.old").exists()
    atomic_dir(target, lambda out: (out / "a.txt").write_text("second"))
    assert (target / "a.txt").read_text() == "second"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_files_and_folders_reach_the_disk_before_they_take_the_target_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The renames were not preceded by fsync: after a power loss the new name could point at
    an empty file (ext4 and XFS may commit the rename before the data)."""
    from emovit import fileio

    events: list[str] = []
    real_fsync, real_replace, real_rename = os.fsync, os.replace, Path.rename

    def fsync(fd: int) -> None:
        events.append(f"fsync {os.path.basename(os.readlink(f'/proc/self/fd/{fd}'))}")
        real_fsync(fd)

    def replace(src: Any, dst: Any) -> None:
        events.append(f"replace -> {os.path.basename(dst)}")
        real_replace(src, dst)

    def rename(self: Path, target: Any) -> Any:
        events.append(f"rename {self.name} -> {Path(target).name}")
        return real_rename(self, target)

    monkeypatch.setattr(fileio.os, "fsync", fsync)
    monkeypatch.setattr(fileio.os, "replace", replace)
    monkeypatch.setattr(Path, "rename", rename)
    fileio.write_text_atomic(tmp_path / "out.txt", "done")
    first = events.index("replace -> out.txt")
    assert any(e.startswith("fsync .out.txt.") for e in events[:first])  # the temporary file's data
    assert f"fsync {tmp_path.name}" in events[first:]  # then the rename itself

    events.clear()
    fileio.atomic_dir(tmp_path / "folder", lambda tmp: (tmp / "weights.bin").write_bytes(b"w"))
    swap = events.index("rename .folder.tmp -> folder")
    assert "fsync weights.bin" in events[:swap] and f"fsync {tmp_path.name}" in events[swap:]
    assert (tmp_path / "folder" / "weights.bin").read_bytes() == b"w"


def test_outputs_written_by_the_thousand_may_skip_the_disk_round_trip(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from emovit import fileio

    synced: list[int] = []
    monkeypatch.setattr(fileio.os, "fsync", synced.append)
    with atomic_open(tmp_path / "crop.png", "wb", durable=False) as handle:
        handle.write(b"png")
    assert synced == [] and (tmp_path / "crop.png").read_bytes() == b"png"
    write_text_atomic(tmp_path / "results.csv", "a,b\n")
    assert len(synced) == 2  # the file, then its folder


@pytest.mark.skipif(os.name != "posix", reason="descriptor names (/dev/fd/N) are POSIX")
def test_a_named_descriptor_is_written_through_not_replaced(tmp_path: Path) -> None:
    """``-o /dev/stdout`` with standard output appended to a log: the rows go after the log's
    lines, through the same open file (a rename replaced the log, and reopening the name
    truncated it)."""
    from emovit.fileio import inherited_descriptor

    log = tmp_path / "run.log"
    log.write_text("earlier line\n")
    inode = log.stat().st_ino
    with log.open("a") as appended:
        for name in (f"/dev/fd/{appended.fileno()}", f"/proc/self/fd/{appended.fileno()}"):
            if not os.path.exists(name):
                continue
            assert inherited_descriptor(name) == appended.fileno()
            with atomic_open(name, named=True) as handle:
                handle.write(f"rows through {name}\n")
    lines = log.read_text().splitlines()
    assert lines[0] == "earlier line" and len(lines) >= 2 and log.stat().st_ino == inode
    assert inherited_descriptor("/dev/stdout") == 1 and inherited_descriptor("/dev/stderr") == 2
    assert (
        inherited_descriptor(tmp_path / "fd" / "3") is None and inherited_descriptor("/proc/1/fd/1") is None
    )


@pytest.mark.skipif(not hasattr(os, "symlink") or os.name != "posix", reason="symbolic links and FIFOs")
def test_only_a_named_path_is_followed_a_planted_link_or_fifo_is_replaced(tmp_path: Path) -> None:
    """A link planted in an output folder (``out/a.annotated.png`` → another file) must not steer
    emovit's own writes: the link is replaced by the file, its target untouched; a FIFO there
    too (its write would block). The path the user named (``-o``) is followed."""
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.annotated.png").symlink_to(victim)
    write_image(out / "a.annotated.png", np.zeros((4, 4, 3), np.uint8), "PNG")
    assert victim.read_text() == "keep me" and not (out / "a.annotated.png").is_symlink()
    os.mkfifo(out / "s.json")
    write_text_atomic(out / "s.json", "{}")
    assert (out / "s.json").is_file() and (out / "s.json").read_text() == "{}"
    named = tmp_path / "named.csv"
    named.symlink_to(victim)
    write_text_atomic(named, "rows\n", named=True)
    assert named.is_symlink() and victim.read_text() == "rows\n"


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="no /dev/full")
def test_a_named_stream_the_storage_refuses_is_a_storage_error() -> None:
    with (
        pytest.raises(StorageError, match="/dev/full: cannot be written"),
        atomic_open("/dev/full", named=True) as f,
    ):
        f.write("x" * 100_000)
