"""Atomic writes (`emovit.fileio`): whole or absent, with ordinary permissions."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from emovit.fileio import atomic_open, write_text_atomic


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
