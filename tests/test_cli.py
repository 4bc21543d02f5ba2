"""The real CLI, run as a subprocess on paths that contain spaces."""

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from emovit import EMOTIONS
from emovit.errors import ERROR_CODES, ImageError

from .conftest import encode


def emovit(
    *args: str, stdin: str | None = None, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """Run ``python -m emovit.cli ARGS`` (never the network: the YuNet URL is unreachable)."""
    env = {**os.environ, "COLUMNS": "200", "EMOVIT_YUNET_URL": "http://127.0.0.1:9/offline", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "emovit.cli", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=300,
        check=False,
    )


@pytest.fixture(scope="module")
def photo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with spaces in its name: three good images (one in a sub-folder), four broken."""
    root = tmp_path_factory.mktemp("cli") / "my photos"
    (root / "sub dir").mkdir(parents=True)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(root / "a face.png")
    Image.fromarray(rng.integers(0, 256, (64, 48), dtype=np.uint8)).save(root / "b.jpg")
    Image.fromarray(rng.integers(0, 256, (30, 30, 3), dtype=np.uint8)).save(root / "sub dir" / "c.bmp")
    (root / "empty.jpg").write_bytes(b"")
    (root / "notes.png").write_text("not an image")
    (root / "cut.jpg").write_bytes(encode(Image.new("RGB", (64, 64)), "JPEG")[:150])
    (root / "readme.txt").write_text("ignored: not an image extension")
    return root


GOOD = {"a face.png", "b.jpg", "c.bmp"}
BAD = {"empty.jpg", "notes.png", "cut.jpg"}


def test_json_on_a_folder_with_errors(photo_dir: Path, tiny_model_dir: Path) -> None:
    proc = emovit(
        "predict", str(photo_dir), "--model", str(tiny_model_dir), "--detector", "none", "--format", "json"
    )
    assert proc.returncode == 1, proc.stderr
    rows = json.loads(proc.stdout)
    by_name = {Path(r["source"]).name: r for r in rows}
    assert set(by_name) == GOOD | BAD
    for name in GOOD:
        assert by_name[name]["ok"] and by_name[name]["label"] in EMOTIONS
        assert list(by_name[name]["probs"]) == list(EMOTIONS)
    for name in BAD:
        assert not by_name[name]["ok"]
        assert name in by_name[name]["error"]
        assert by_name[name]["error_code"] in ERROR_CODES and by_name[name]["error_stage"] == "decode"
    assert "3 of 6 images classified, 3 failed" in proc.stderr
    assert "RANDOM WEIGHTS" in proc.stderr


def test_all_good_inputs_exit_zero_csv_to_file(photo_dir: Path, tiny_model_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out dir" / "results.csv"
    proc = emovit(
        "predict", str(photo_dir / "a face.png"), str(photo_dir / "*.jpg"), "--model", str(tiny_model_dir),
        "--detector", "none", "--format", "csv", "--output", str(out), "--quiet",
    )  # fmt: skip
    assert proc.returncode == 1  # the glob also matches the broken jpgs
    rows = list(csv.DictReader(out.read_text().splitlines()))
    assert {Path(r["source"]).name for r in rows} == {"a face.png", "b.jpg", "empty.jpg", "cut.jpg"}
    assert [k for k in rows[0] if k.startswith("prob_")] == [f"prob_{e}" for e in EMOTIONS]
    ok = [r for r in rows if r["status"] == "ok"]
    assert len(ok) == 2 and all(float(r["score"]) > 0 for r in ok)
    assert all(r["error_code"] == r["error_stage"] == "" for r in ok)
    failed = [r for r in rows if r["status"] == "error"]
    assert all(r["error_code"] in ERROR_CODES and r["error_stage"] == "decode" for r in failed)
    assert proc.stdout == ""
    proc = emovit(
        "predict", str(photo_dir / "a face.png"), "--model", str(tiny_model_dir), "--detector", "none", "-q"
    )
    assert proc.returncode == 0, proc.stderr
    assert "a face.png" in proc.stdout


def test_sources_globs_of_folders_and_paths_that_cannot_be_looked_at(photo_dir: Path, tmp_path: Path) -> None:
    from emovit.sources import expand_sources

    by_glob = expand_sources([str(photo_dir / "*")])  # "sub dir" matches: its files, as a folder gives
    assert {Path(p).name for p in by_glob} == GOOD | BAD | {"readme.txt"}  # a matched file is asked for
    assert set(by_glob) == set(expand_sources([str(photo_dir)])) | {str(photo_dir / "readme.txt")}
    deep = expand_sources([str(photo_dir / "**")])  # matches the folder and its sub-folder too
    assert len(deep) == len(set(deep)) and set(deep) == set(by_glob)  # each file once
    (tmp_path / ".hidden.png").write_bytes(b"x")
    (tmp_path / "shown.png").write_bytes(b"x")
    for recursive in (True, False):  # hidden files are skipped either way
        assert [Path(p).name for p in expand_sources([str(tmp_path)], recursive=recursive)] == ["shown.png"]
    (tmp_path / "broken.png").symlink_to(tmp_path / "gone.png")  # an error row either way, not a gap
    for recursive in (True, False):
        listed = [Path(p).name for p in expand_sources([str(tmp_path)], recursive=recursive)]
        assert listed == ["broken.png", "shown.png"], recursive
    too_long = str(tmp_path / ("n" * 300 + ".jpg"))  # OSError: File name too long, when looked at
    assert expand_sources([too_long, str(tmp_path / ("n" * 300 + "*"))]) == [too_long, too_long[:-4] + "*"]
    # a pattern that matches nothing is an error row that says it was a pattern ("no such file")
    from emovit.imageio import load_image

    with pytest.raises(
        ImageError, match=r"nothing/\*\*/\*.png: no such file \(and read as a pattern it matches none\)"
    ):
        load_image(expand_sources([str(tmp_path / "nothing" / "**" / "*.png")])[0])
    with pytest.raises(ImageError, match=r"gone.jpg: no such file$"):
        load_image(str(tmp_path / "gone.jpg"))


def test_a_folder_that_cannot_be_listed_is_an_error_row(
    photo_dir: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sub-folder without read permission was skipped without a word (os.walk's default);
    it is now a source of its own, whose error row says its files are left out. (The tests
    run as root, whom permissions do not stop: the listing is refused by a stand-in.)"""
    from emovit import EmotionRecognizer
    from emovit.sources import expand_sources

    locked = photo_dir / "sub dir"
    scandir, iterdir = os.scandir, Path.iterdir

    def refuse(path: Any = ".") -> Any:
        if Path(path) == locked:
            raise PermissionError(13, "Permission denied", str(path))
        return scandir(path)

    def refuse_iterdir(self: Path) -> Any:
        if self == locked:
            raise PermissionError(13, "Permission denied", str(self))
        return iterdir(self)

    monkeypatch.setattr(os, "scandir", refuse)
    monkeypatch.setattr(Path, "iterdir", refuse_iterdir)
    sources = expand_sources([str(photo_dir)])
    assert str(locked) in sources and not any(s.startswith(f"{locked}{os.sep}") for s in sources)
    assert expand_sources([str(locked)], recursive=False) == [str(locked)]
    rec = EmotionRecognizer.from_pretrained(tiny_model_dir, detector="none")
    (row,) = rec.predict([str(locked)])
    assert row.error_code == "not_found" and "cannot be listed (Permission denied)" in row.error
    assert "files are left out" in row.error


def test_a_name_too_long_is_an_error_row(photo_dir: Path, tiny_model_dir: Path) -> None:
    listing = f"{photo_dir / ('n' * 300 + '.jpg')}\n{photo_dir / 'b.jpg'}\n"
    proc = emovit("predict", "-", "--model", str(tiny_model_dir), "--detector", "none", "--format", "jsonl",
                  stdin=listing)  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [r["ok"] for r in rows] == [False, True] and "n" * 20 in rows[0]["source"]


def test_stdin_list_and_jsonl(photo_dir: Path, tiny_model_dir: Path) -> None:
    listing = f"{photo_dir / 'b.jpg'}\n\n{photo_dir / 'sub dir' / 'c.bmp'}\n{photo_dir / 'gone.jpg'}\n"
    proc = emovit(
        "predict",
        "-",
        "--model",
        str(tiny_model_dir),
        "--detector",
        "none",
        "--format",
        "jsonl",
        "--top-k",
        "2",
        stdin=listing,
    )
    assert proc.returncode == 1
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [Path(r["source"]).name for r in rows] == ["b.jpg", "c.bmp", "gone.jpg"]
    assert len(rows[0]["faces"][0]["top_k"]) == 2
    assert "no such file" in rows[2]["error"]


def test_unloadable_model_is_a_usage_error_and_writes_nothing(photo_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "never.json"
    proc = emovit("predict", str(photo_dir), "--model", str(tmp_path / "no model"), "-o", str(out))
    assert proc.returncode == 2
    assert "not a model folder" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []  # no half-written temporary file either


def test_usage_errors_exit_two(tiny_model_dir: Path, tmp_path: Path, photo_dir: Path) -> None:
    assert emovit("predict", "--no-such-flag", "x.jpg").returncode == 2
    assert emovit("predict", "x.jpg", "--detector", "retina").returncode == 2
    assert emovit("predict").returncode == 2
    proc = emovit(
        "predict", str(tmp_path), "--model", str(tiny_model_dir), "--detector", "none"
    )  # an empty folder
    assert proc.returncode == 2 and "no input images" in proc.stderr
    # an output that cannot be written is named before any input is analysed
    (tmp_path / "a file").write_text("")
    blocked = tmp_path / "a file" / "sub"
    for command in ("predict", "evaluate"):
        proc = emovit(command, str(photo_dir), "--model", str(tiny_model_dir), "-o", str(blocked / "out"))
        assert proc.returncode == 2, proc.stderr
        assert "'--output'" in proc.stderr and "Traceback" not in proc.stderr
    # the results file or the summary named as one of the inputs: the photo was replaced by CSV
    photo = sorted(photo_dir.glob("*.png"))[0]
    before = photo.read_bytes()
    for flag in ("-o", "--summary"):
        proc = emovit("predict", str(photo_dir), "--model", str(tiny_model_dir), flag, str(photo))
        assert proc.returncode == 2 and "is one of the inputs: it is not replaced" in proc.stderr, proc.stderr
    assert photo.read_bytes() == before
    same = tmp_path / "same.json"  # the summary, written last, replaced the rows
    proc = emovit(
        "predict", str(photo_dir), "--model", str(tiny_model_dir), "-o", str(same), "--summary", str(same)
    )
    assert proc.returncode == 2 and "is --output too" in proc.stderr and not same.exists(), proc.stderr
    if os.geteuid() != 0:  # a folder the user cannot write: said before the run (root writes anyway)
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o555)
        proc = emovit("predict", str(photo_dir), "--model", str(tiny_model_dir), "-o", str(locked / "r.csv"))
        assert proc.returncode == 2 and "its folder cannot be written" in proc.stderr, proc.stderr


def test_info_and_version(tiny_model_dir: Path) -> None:
    proc = emovit("info", str(tiny_model_dir), "--format", "json")
    assert proc.returncode == 0, proc.stderr
    details = json.loads(proc.stdout)
    assert details["labels"] == ["sad", "disgust", "angry", "neutral", "fear", "surprise", "happy"]
    assert details["patch_size"] == 2 and details["parameters"] > 0
    # how faces are cropped for it (no record: the default) and what --backend auto runs
    assert details["framing"] == {"face_margin": 0.2, "face_align": True, "grey": False, "recorded": False}
    assert "onnx" not in details and details["backend_auto_cpu"] == "torch"
    table = emovit("info", str(tiny_model_dir))
    assert "labels (id order)" in table.stdout and "0:sad" in table.stdout
    assert "not recorded: the default" in table.stdout and "emovit export" in table.stdout
    version = emovit("--version")
    assert version.returncode == 0 and version.stdout.startswith("emovit, version ")


def test_table_output_lists_every_input(photo_dir: Path, tiny_model_dir: Path) -> None:
    # wide enough for the paths whole, however long the temporary folder's name
    proc = emovit(
        "predict",
        str(photo_dir),
        "--model",
        str(tiny_model_dir),
        "--detector",
        "none",
        env={"COLUMNS": "1000"},
    )
    text = io.StringIO(proc.stdout).read()
    for name in GOOD | BAD:
        assert name in text
    assert text.count("error") >= 3
    assert "empty_file at decode" in text


def test_stdin_names_are_taken_as_written(tmp_path: Path, tiny_model_dir: Path) -> None:
    """stdin was read as UTF-8 text and stripped: a name that is not UTF-8 stopped the run
    (an internal error), a name ending in a space became "no such file", and a file named
    "-" was dropped."""
    image = encode(Image.fromarray(np.full((20, 20, 3), 90, np.uint8)))
    names = [b"odd\xff.png", b"trailing .png", b"-"]
    for name in names:
        (tmp_path / os.fsdecode(name)).write_bytes(image)
    listing = b"".join(name + b"\n" for name in names) + b"\n"
    proc = subprocess.run(
        [sys.executable, "-m", "emovit.cli", "predict", "-", "--model", str(tiny_model_dir),
         "--detector", "none", "--format", "jsonl"],
        input=listing, capture_output=True, cwd=tmp_path, timeout=300, check=False,
        env={**os.environ, "PYTHONIOENCODING": "utf-8", "LC_ALL": "C.UTF-8"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(rows) == 3 and all(r["ok"] for r in rows)


def test_an_unreadable_file_of_unknown_kind_is_an_error_row_not_the_end(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    """A file without a known extension is probed (photo or video?): a PNG header declaring
    20000x20000 pixels made the probe raise, and the whole run ended as an internal error."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 20000, 20000, 8, 2, 0, 0, 0)
    bomb = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(bytes(100)))
    bomb += chunk(b"IEND", b"")
    (tmp_path / "bomb.dat").write_bytes(bomb)
    (tmp_path / "ok.png").write_bytes(encode(Image.fromarray(np.full((20, 20, 3), 90, np.uint8))))
    inputs = [str(tmp_path / "ok.png"), str(tmp_path / "bomb.dat")]
    proc = emovit(
        "predict", *inputs, "--model", str(tiny_model_dir), "--detector", "none", "--format", "jsonl"
    )
    assert proc.returncode == 1, proc.stderr
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [r["ok"] for r in rows] == [True, False] and rows[1]["error_code"] == "too_many_pixels"


def test_a_folder_entry_that_cannot_be_looked_at_is_kept_as_an_error_row(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from emovit.sources import expand_sources

    (tmp_path / "a.png").write_bytes(b"x")
    (tmp_path / "b.png").write_bytes(b"x")
    real = Path.is_file

    def is_file(self: Path) -> bool:
        if self.name == "a.png":
            raise PermissionError(13, "Permission denied")
        return real(self)

    monkeypatch.setattr(Path, "is_file", is_file)
    assert expand_sources([str(tmp_path)], recursive=False) == [
        str(tmp_path / "a.png"),
        str(tmp_path / "b.png"),
    ]


def test_cli_option_mistakes_are_usage_errors_naming_the_flag(
    photo_dir: Path, tiny_model_dir: Path, tmp_path: Path
) -> None:
    """Found by a review: a typo in --backends ran the benchmark until it crashed (exit 3); a
    --summary that cannot be written failed after every input was analysed (exit 3); a bad
    --exclude-leaks folder blamed DATA."""
    from click.testing import CliRunner

    from emovit.cli import main

    runner = CliRunner()
    bench = runner.invoke(main, ["bench", str(tiny_model_dir), "--backends", "torch,onnx-fp16"])
    assert bench.exit_code == 2 and "'onnx-fp16': choose among torch, torch-bf16" in bench.output
    (tmp_path / "afile").write_text("x")
    summary = runner.invoke(
        main,
        ["predict", str(photo_dir / "b.jpg"), "--model", str(tiny_model_dir), "--detector", "none",
         "--summary", str(tmp_path / "afile" / "s.json")],
    )  # fmt: skip
    assert summary.exit_code == 2 and "'--summary'" in summary.output, summary.output
    assert "cannot be written there (Not a directory: " in summary.output and "afile" in summary.output
    from .training_data import write_dataset

    write_dataset(tmp_path / "faces", {"test": 2})
    leaks = runner.invoke(
        main,
        ["evaluate", str(tmp_path / "faces"), "--model", str(tiny_model_dir), "--detector", "none",
         "-o", str(tmp_path / "report"), "--exclude-leaks", str(tmp_path / "nowhere")],
    )  # fmt: skip
    assert leaks.exit_code == 2 and "'--exclude-leaks'" in leaks.output, leaks.output


def test_options_without_effect_on_these_inputs_are_named(
    photo_dir: Path, tiny_model_dir: Path, tmp_path: Path
) -> None:
    from click.testing import CliRunner

    from emovit.cli import main

    args = ["predict", str(photo_dir / "b.jpg"), "--model", str(tiny_model_dir), "--detector", "none", "-q"]
    result = CliRunner().invoke(main, [*args, "--plot", str(tmp_path / "plots")])
    assert result.exit_code == 0, result.output
    assert "warning: --plot describe videos, and no input is a video" in result.stderr
    assert "for videos" not in result.stderr  # the video options' defaults say nothing
    sampled = CliRunner().invoke(main, [*args, "--fps", "3", "--start", "5"])  # silently nothing
    assert (
        sampled.exit_code == 0
        and "warning: --fps, --start: for videos, and no input is a video" in sampled.stderr
    )
    unused = CliRunner().invoke(main, [*args, "--detector-model", str(tmp_path / "yunet.onnx")])
    assert unused.exit_code == 0, unused.output
    assert "--detector-model is for YuNet; --detector none does not read it" in unused.stderr


def test_outputs_that_are_pipes_links_or_empty(photo_dir: Path, tiny_model_dir: Path, tmp_path: Path) -> None:
    """``-o`` on a FIFO (or /dev/null, /dev/stdout) replaced it with a file, and its reader got
    nothing (as root, ``-o /dev/null`` replaced the system's); on a symbolic link it replaced
    the link; ``-o ""`` (an unset shell variable) ran the whole job, then lost it writing to
    ".". Now the FIFO gets the rows, the link's file is updated, and "" is a usage error."""
    import stat
    import threading

    from click.testing import CliRunner

    from emovit.cli import main

    args = ["predict", str(photo_dir / "b.jpg"), "--model", str(tiny_model_dir), "--detector", "none",
            "--format", "csv", "-q"]  # fmt: skip
    fifo = tmp_path / "rows.fifo"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()), daemon=True)
    reader.start()
    result = CliRunner().invoke(main, [*args, "-o", str(fifo)])
    reader.join(timeout=30)
    assert result.exit_code == 0, result.output
    assert stat.S_ISFIFO(os.stat(fifo).st_mode) and b"b.jpg,ok" in got[0]
    real = tmp_path / "kept" / "results.csv"
    real.parent.mkdir()
    real.write_text("old")
    link = tmp_path / "link.csv"
    link.symlink_to(real)
    assert CliRunner().invoke(main, [*args, "-o", str(link)]).exit_code == 0
    assert link.is_symlink() and "b.jpg,ok" in real.read_text()
    for flag in ("-o", "--summary", "--save-crops"):
        empty = CliRunner().invoke(main, [*args, flag, ""])
        assert empty.exit_code == 2 and "is empty" in empty.output, (flag, empty.output)


def test_a_linked_output_is_checked_where_its_file_is(
    photo_dir: Path, tiny_model_dir: Path, tmp_path: Path
) -> None:
    """A link is written through to its file: the up-front check looks at that file's folder
    (it looked at the link's, and the run failed at its end), and a --summary linked to the
    -o file is refused (the summary replaced the rows)."""
    from click.testing import CliRunner

    from emovit.cli import main

    args = ["predict", str(photo_dir / "b.jpg"), "--model", str(tiny_model_dir), "--detector", "none",
            "--format", "csv", "-q"]  # fmt: skip
    blocker = tmp_path / "a file"
    blocker.write_text("")
    dangling = tmp_path / "rows.csv"
    dangling.symlink_to(blocker / "sub" / "rows.csv")  # its folder can never be made
    refused = CliRunner().invoke(main, [*args, "-o", str(dangling)])
    assert refused.exit_code == 2 and "rows.csv" in refused.output and "its folder" in refused.output
    rows = tmp_path / "out.csv"
    alias = tmp_path / "summary.json"
    alias.symlink_to(rows)
    same = CliRunner().invoke(main, [*args, "-o", str(rows), "--summary", str(alias)])
    assert same.exit_code == 2 and "is --output too" in same.output


def test_an_empty_output_folder_is_a_usage_error_everywhere(
    photo_dir: Path, tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``-o "$UNSET"``: train trained into the current folder, evaluate wrote its report there."""
    from click.testing import CliRunner

    from emovit.cli import main

    monkeypatch.chdir(tmp_path)
    for args in (
        ["train", str(photo_dir), "--arch", "vit-test", "--epochs", "1", "-o", ""],
        ["export", str(tiny_model_dir), "-o", ""],
        ["evaluate", str(photo_dir), "--model", str(tiny_model_dir), "--detector", "none", "-o", ""],
    ):
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 2 and "is empty; give a folder" in result.output, (args, result.output)
    assert list(tmp_path.iterdir()) == []


def test_stdin_with_nul_bytes_and_globs_round_a_link_loop(
    photo_dir: Path, tiny_model_dir: Path, tmp_path: Path
) -> None:
    """`find -print0 | emovit predict -` (or an image's bytes piped in) was an internal error
    with no row; a `**` glob through a link to a parent folder gave one photo 40 rows."""
    from click.testing import CliRunner

    from emovit.cli import main

    opts = ["--model", str(tiny_model_dir), "--detector", "none", "--format", "csv", "-q"]
    listing = f"{photo_dir / 'b.jpg'}\0{photo_dir / 'a face.png'}\0".encode()
    nul = CliRunner().invoke(main, ["predict", "-", *opts], input=listing)
    assert nul.exit_code == 2 and "NUL bytes" in nul.output and "find -print" in nul.output, nul.output
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "a.jpg").write_bytes((photo_dir / "b.jpg").read_bytes())
    (tree / "sub" / "up").symlink_to("..")
    looped = CliRunner().invoke(main, ["predict", f"{tree}/**/*.jpg", *opts])
    assert looped.exit_code == 0, looped.output
    assert [line.split(",")[1] for line in looped.output.splitlines() if "a.jpg," in line] == ["ok"], (
        looped.output
    )
