"""Atomic writes (`emovit.fileio`): whole or absent, with ordinary permissions."""

from __future__ import annotations

import os
from pathlib import Path

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
