"""Any file name the OS allows is written by every output format, escaped the way that format
expects; bytes that are not UTF-8 appear backslash-escaped (``bad_\\xff.jpg``)."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from emovit.cli import main
from emovit.writers import display_name

BAD_BYTES = os.fsdecode(b"bad_\xff.jpg")  # what os.listdir gives for a name that is not UTF-8
NEWLINE = "new\nline.jpg"
QUOTES = 'comma, "quote" [red]x.jpg'  # CSV's delimiter and quote, and rich markup
BROKEN = os.fsdecode(b"broken_\xfe.jpg")  # an error row whose message holds the name
SHOWN = {  # the names as every format shows them (after the format's own unescaping)
    BAD_BYTES: "bad_\\xff.jpg",
    NEWLINE: NEWLINE,
    QUOTES: QUOTES,
    BROKEN: "broken_\\xfe.jpg",
}


@pytest.fixture
def odd_names(tmp_path: Path, face_jpeg: Path) -> Path:
    folder = tmp_path / "d"
    folder.mkdir()
    try:
        for name in (BAD_BYTES, NEWLINE, QUOTES):
            shutil.copy(face_jpeg, folder / name)
        (folder / BROKEN).write_bytes(b"not an image")
    except (OSError, UnicodeEncodeError) as exc:
        pytest.skip(f"this file system refuses such names: {exc}")
    return folder


def test_display_name() -> None:
    assert display_name(BAD_BYTES) == "bad_\\xff.jpg"
    assert display_name("caf\u00e9.jpg") == "caf\u00e9.jpg"
    assert display_name(NEWLINE) == NEWLINE
    assert display_name(NEWLINE, controls=True) == "new\\nline.jpg"
    assert display_name("a\x1b[31mb\tc\r", controls=True) == "a\\x1b[31mb\\tc\\r"
    assert display_name("lone \ud800") == "lone \\ud800"  # a surrogate no byte produced


def _names(fmt: str, text: str) -> set[str]:
    if fmt == "csv":
        return {Path(row["source"]).name for row in csv.DictReader(io.StringIO(text, newline=""))}
    if fmt == "json":
        return {Path(row["source"]).name for row in json.loads(text)}
    lines = text.splitlines()
    assert len(lines) == 4  # one line per input: the newline in a name is escaped
    return {Path(json.loads(line)["source"]).name for line in lines}


@pytest.mark.parametrize("fmt", ["csv", "json", "jsonl"])
def test_machine_formats_round_trip_every_name(odd_names: Path, tiny_model_dir: Path, fmt: str) -> None:
    out = odd_names.parent / f"out.{fmt}"
    args = ["predict", str(odd_names), "--model", str(tiny_model_dir), "--detector", "none"]
    result = CliRunner().invoke(main, [*args, "--format", fmt, "-o", str(out), "-q"])
    assert result.exit_code == 1, result.output  # the broken file
    text = out.read_text(encoding="utf-8")
    assert _names(fmt, text) == set(SHOWN.values())
    to_stdout = CliRunner().invoke(main, [*args, "--format", fmt, "-q"])
    assert to_stdout.exit_code == 1 and _names(fmt, to_stdout.stdout) == set(SHOWN.values())


def test_table_shows_every_name_escaped(
    odd_names: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(odd_names.parent)  # short relative names: no folding in the table
    result = CliRunner().invoke(
        main, ["predict", "d", "--model", str(tiny_model_dir), "--detector", "none", "-q"]
    )
    assert result.exit_code == 1, result.output
    table = result.stdout
    for shown in ("d/bad_\\xff.jpg", "d/new\\nline.jpg", 'd/comma, "quote" [red]x.jpg', "d/broken_\\xfe.jpg"):
        assert shown in table
    assert "unsupported_format at decode" in table


def test_saved_images_are_named_after_the_shown_names(odd_names: Path, tiny_model_dir: Path) -> None:
    saved = odd_names.parent / "annotated"
    args = ["predict", str(odd_names), "--model", str(tiny_model_dir), "--detector", "none", "-q"]
    result = CliRunner().invoke(main, [*args, "--format", "csv", "--save-annotated", str(saved)])
    assert result.exit_code == 1, result.output
    assert sorted(p.name for p in saved.iterdir()) == sorted(
        ["bad_\\xff.annotated.jpg", "new\\nline.annotated.jpg", 'comma, "quote" [red]x.annotated.jpg']
    )


def test_the_real_cli_on_a_name_that_is_not_utf8(odd_names: Path, tiny_model_dir: Path) -> None:
    """`emovit predict d --format csv --detector none -o out.csv`, as a user would type it."""
    for name in (NEWLINE, QUOTES, BROKEN):
        (odd_names / name).unlink()
    env = {**os.environ, "EMOVIT_YUNET_URL": "http://127.0.0.1:9/offline"}
    proc = subprocess.run(
        [sys.executable, "-m", "emovit.cli", "predict", "d", "--model", str(tiny_model_dir),
         "--format", "csv", "--detector", "none", "-o", "out dir/out.csv"],
        cwd=odd_names.parent, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    rows = list(csv.DictReader((odd_names.parent / "out dir" / "out.csv").open(newline="")))
    assert [row["source"] for row in rows] == ["d/bad_\\xff.jpg"]
    assert rows[0]["status"] == "ok"
