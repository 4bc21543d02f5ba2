import io
import json
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("imagehash")

from emovit.data import audit, find_leaks, read_samples

from .conftest import FER2013


def _distinct_faces(count: int, seed: int) -> list[np.ndarray]:
    """Real FER2013 faces when available (hard: all faces look alike), else noise images."""
    files = sorted((FER2013 / "test" / "neutral").glob("*.jpg"))
    if len(files) >= count + seed:
        return [np.asarray(Image.open(f).convert("L")) for f in files[seed : seed + count]]
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (48, 48), dtype=np.uint8) for _ in range(count)]


@pytest.fixture
def planted(tmp_path: Path) -> Path:
    """train 12 + test 6 distinct faces; then plant in test: 2 exact copies of train images (one
    with a different label), 1 resized + JPEG re-encoded copy; and 1 exact copy inside train."""
    root = tmp_path / "data"
    faces = _distinct_faces(18, seed=5)
    for i, face in enumerate(faces[:12]):
        folder = root / "train" / ("happy" if i % 2 else "sad")
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(face).save(folder / f"t{i}.png")
    for i, face in enumerate(faces[12:]):
        folder = root / "test" / "happy"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(face).save(folder / f"s{i}.png")
    (root / "test" / "sad").mkdir()
    shutil.copy(root / "train" / "happy" / "t1.png", root / "test" / "happy" / "leak_exact.png")
    shutil.copy(root / "train" / "happy" / "t3.png", root / "test" / "sad" / "leak_conflict.png")
    buffer = io.BytesIO()
    Image.fromarray(faces[4]).resize((96, 96), Image.BICUBIC).save(buffer, "JPEG", quality=85)
    (root / "test" / "sad" / "leak_near.jpg").write_bytes(buffer.getvalue())
    shutil.copy(root / "train" / "sad" / "t0.png", root / "train" / "sad" / "t0_copy.png")
    return root


def test_audit_finds_planted_duplicates_and_no_false_ones(planted: Path) -> None:
    report = audit(planted).to_dict()
    assert report["images"] == {"train": 13, "test": 9}
    pairs = {(p["a"], p["b"]): (p["exact"], p["near"]) for p in report["pairs"]}
    assert pairs[("train", "train")] == (1, 0)
    assert pairs[("train", "test")] == (2, 1)
    assert pairs[("test", "test")] == (0, 0)
    assert report["label_conflicts"] == 1
    kinds = {(Path(e["b"]).name, e["kind"]) for e in report["examples"]}
    assert ("leak_near.jpg", "near") in kinds


def test_find_leaks_marks_the_test_copies(planted: Path) -> None:
    test = read_samples(planted, "test")
    leaked = {Path(test[i].name).name for i in find_leaks(test, read_samples(planted, "train"))}
    assert leaked == {"leak_exact.png", "leak_conflict.png", "leak_near.jpg"}


def test_unreadable_images_are_listed_and_pair_with_nothing(
    planted: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two broken files (the same bytes, in both splits) match neither each other nor anything:
    the audit and the leak search go on over the readable images."""
    good = (planted / "test" / "happy" / "s0.png").read_bytes()
    for split in ("train", "test"):
        (planted / split / "happy" / "broken.png").write_bytes(good[: len(good) // 3])
    import contextlib

    import emovit.progress

    bars: list[list[int]] = []

    @contextlib.contextmanager
    def bar(total: int | None, description: str, **kw: object) -> object:  # [total, advances]
        bars.append([total or 0, 0])
        yield lambda n=1: bars[-1].__setitem__(1, bars[-1][1] + n)

    monkeypatch.setattr(emovit.progress, "progress_bar", bar)
    report = audit(planted).to_dict()
    assert report["images"] == {"train": 14, "test": 10}
    # a progress bar while the images are hashed (a full FER2013 audit said nothing for 30 s),
    # one step per image, readable or not
    assert bars == [[24, 24]]
    assert sorted((u["split"], Path(u["name"]).name) for u in report["unreadable"]) == [
        ("test", "broken.png"),
        ("train", "broken.png"),
    ]
    assert all("broken.png" in u["error"] for u in report["unreadable"])
    pairs = {(p["a"], p["b"]): (p["exact"], p["near"]) for p in report["pairs"]}
    assert pairs[("train", "test")] == (2, 1) and pairs[("train", "train")] == (1, 0)
    test = read_samples(planted, "test")
    leaked = {Path(test[i].name).name for i in find_leaks(test, read_samples(planted, "train"))}
    assert leaked == {"leak_exact.png", "leak_conflict.png", "leak_near.jpg"}


def test_a_csvs_bad_rows_are_unreadable_entries(tmp_path: Path) -> None:
    """A FER2013 CSV's bad rows were only a warning: the JSON said "unreadable": [] and the
    command exited 0, while evaluate counts the same rows as failures (exit 1)."""
    pixels = " ".join(["7"] * 16)
    rows = [f"3,{pixels},Training", "9,1 2 3 4,Training", f"0,{pixels},PrivateTest", "0,1 2 3,PrivateTest"]
    data = tmp_path / "fer.csv"
    data.write_text("emotion,pixels,Usage\n" + "\n".join(rows) + "\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # listed, not warned about
        report = audit(data).to_dict()
    assert report["images"] == {"train": 1, "test": 1}
    assert [(u["split"], u["name"]) for u in report["unreadable"]] == [
        ("train", "fer.csv:3"),
        ("test", "fer.csv:5"),
    ]
    assert (
        "emotion 9" in report["unreadable"][0]["error"] and "not a square" in report["unreadable"][1]["error"]
    )
    command = [sys.executable, "-m", "emovit.cli", "audit", str(data), "--format", "json"]
    proc = subprocess.run(command, capture_output=True, text=True, check=False, timeout=300)
    assert proc.returncode == 1 and len(json.loads(proc.stdout)["unreadable"]) == 2, proc.stderr


def test_cli_json_shape(planted: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "emovit.cli", "audit", str(planted), "--format", "json"],
        capture_output=True, text=True, check=True, timeout=300,
    )  # fmt: skip
    report = json.loads(proc.stdout)
    assert set(report) >= {"images", "pairs", "label_conflicts"}
    assert all(set(p) == {"a", "b", "exact", "near"} for p in report["pairs"])


def test_cli_table_exits_one_with_unreadable_images_and_141_when_its_reader_goes(planted: Path) -> None:
    """Unreadable images were listed with exit 0 (predict and evaluate exit 1); `| head` ended
    in rich's own exit 1; piped, the title and each example wrapped over several lines."""
    good = (planted / "test" / "happy" / "s0.png").read_bytes()
    (planted / "test" / "happy" / "broken.png").write_bytes(good[: len(good) // 3])
    command = [sys.executable, "-m", "emovit.cli", "audit", str(planted)]
    proc = subprocess.run(command, capture_output=True, text=True, check=False, timeout=300)
    assert proc.returncode == 1 and "unreadable images (in no pair): 1" in proc.stdout, proc.stderr
    lines = proc.stdout.splitlines()
    assert any(line.strip().startswith("duplicates (near = perceptual hash within 4 bits)") for line in lines)
    assert any(" ~ " in line and line.rstrip().endswith(")") and "[" not in line for line in lines)
    # the examples have their own heading (they were listed under "label conflicts", same labels too)
    heading = next(i for i, line in enumerate(lines) if line.startswith("examples of duplicate pairs"))
    assert " ~ " in lines[heading + 1] and lines[heading - 1].startswith("label conflicts")
    as_json = subprocess.run([*command, "--format", "json"], capture_output=True, text=True, timeout=300)
    assert as_json.returncode == 1 and json.loads(as_json.stdout)["unreadable"]
    reader = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert reader.stdout is not None
    reader.stdout.close()  # the reader went away before the report
    assert reader.wait(timeout=300) == 141
