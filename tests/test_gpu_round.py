"""scripts/gpu_bundle.py (the data carried to a lent GPU machine, byte for byte) and
scripts/gpu_round.py (its schedule planning and what it brings back)."""

import importlib.util
import io
import json
import lzma
import sys
import tarfile
from argparse import Namespace
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]


def _script(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"{name}_under_test", REPO / "scripts" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _jpeg(seed: int, quality: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (48, 48), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """Two splits of JPEG faces; two qualities, so two distinct headers (quantisation tables)."""
    root = tmp_path / "fer"
    rows = ["split,file,neutral,happiness"]
    for split, n in (("train", 3), ("validation", 2), ("test", 1)):
        for cls in ("happy", "sad"):
            folder = root / split / cls
            folder.mkdir(parents=True)
            for i in range(n):
                (folder / f"{cls}{i}.jpg").write_bytes(_jpeg(len(rows), 75 if i % 2 else 90))
                rows.append(f"{split},{cls}/{cls}{i}.jpg,{i},{10 - i}")
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    return root


def test_a_bundle_unpacks_to_the_same_bytes_and_its_labels(tree: Path, tmp_path: Path) -> None:
    bundle = _script("gpu_bundle")
    bundle.pack(tree, tmp_path / "b", ["train", "validation"], tmp_path / "labels.csv", None)
    meta = json.loads(lzma.decompress((tmp_path / "b" / "index.json.xz").read_bytes()))
    assert len(meta["header_lengths"]) == 2  # each distinct header kept once
    bundle.unpack(tmp_path / "b", tmp_path / "out")
    packed = sorted(p.relative_to(tree) for p in tree.glob("*/*/*.jpg") if p.parts[-3] != "test")
    assert sorted(p.relative_to(tmp_path / "out") for p in (tmp_path / "out").glob("*/*/*.jpg")) == packed
    for rel in packed:
        assert (tmp_path / "out" / rel).read_bytes() == (tree / rel).read_bytes()
    labels = (tmp_path / "out" / "labels.csv").read_text().splitlines()
    assert labels[0] == "split,file,neutral,happiness"
    assert len(labels) == 1 + len(packed)  # the test split's rows are not carried
    assert not any(line.startswith("test,") for line in labels)


def test_a_damaged_bundle_is_refused(tree: Path, tmp_path: Path) -> None:
    bundle = _script("gpu_bundle")
    bundle.pack(tree, tmp_path / "b", ["train"], None, 2)  # at most 2 files a class
    scans = tmp_path / "b" / "scans.bin"
    data = bytearray(scans.read_bytes())
    data[len(data) // 2] ^= 0xFF
    scans.write_bytes(bytes(data))
    with pytest.raises(SystemExit, match="damaged bundle"):
        bundle.unpack(tmp_path / "b", tmp_path / "out")


def test_a_tree_of_other_files_is_refused(tmp_path: Path) -> None:
    (tmp_path / "fer" / "train" / "happy").mkdir(parents=True)
    (tmp_path / "fer" / "train" / "happy" / "a.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(SystemExit, match="not a baseline JPEG"):
        _script("gpu_bundle").pack(tmp_path / "fer", tmp_path / "b", ["train"], None, None)


def test_epochs_are_planned_from_the_warm_up_epoch() -> None:
    plan = _script("gpu_round").plan_epochs
    assert plan(3.0, 300.0, 1.0, 250) == 101  # the warm-up and 100 more
    assert plan(3.0, 300.0, 1.25, 250) == 81  # slower once every run trains
    assert plan(3.0, 300.0, 1.0, 50) == 50  # capped
    assert plan(30.0, 10.0, 1.0, 50) == 1  # no time left: the warm-up is the run
    assert plan(3.0, -5.0, 1.0, 50) == 1


def _run(folder: Path, params: int, complete: bool, f1: float) -> None:
    from safetensors.numpy import save_file

    folder.mkdir(parents=True)
    save_file({"w": np.ones(params, dtype=np.float32)}, str(folder / "model.safetensors"))
    (folder / "metrics.jsonl").write_text(json.dumps({"epoch": 1, "val_macro_f1": f1}) + "\n")
    (folder / "run_state.json").write_text(json.dumps({"complete": complete}))
    if not complete:
        (folder / "checkpoint").mkdir()
        (folder / "checkpoint" / "optimizer.pt").write_bytes(b"o" * 1000)


def test_what_comes_back_fits_the_limits(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    gpu_round = _script("gpu_round")
    work, out = tmp_path / "work", tmp_path / "out"
    names = list(gpu_round.TEACHERS)
    for name, params, f1 in zip(names, (3_000_000, 3_000_000, 1_500_000), (0.70, 0.75, 0.74), strict=True):
        _run(work / name, params, True, f1)  # float16: 6, 6 and 3 MB
    _run(work / "gpu-taught", 1000, False, 0.71)  # stopped by the backstop
    args = Namespace(out=out, work=work, return_mib=10.0, budget=1, reserve=0)
    run = gpu_round.Round(args)
    run.record["teachers"] = [str(work / n) for n in names]
    for name, f1 in zip(names, (0.70, 0.75, 0.74), strict=True):
        run.record["runs"][name] = {"best": {"val_macro_f1": f1}}
    run.pack()
    back = sorted(p.name for p in out.iterdir())
    assert all(p.stat().st_size <= 15 * 2**20 for p in out.iterdir())
    assert sum(p.stat().st_size for p in out.iterdir()) <= 10 * 2**20
    assert len(back) <= 8

    def members(prefix: str) -> list[str]:
        data = b"".join((out / n).read_bytes() for n in back if n.startswith(prefix))
        return tarfile.open(fileobj=io.BytesIO(data)).getnames()

    # the unfinished student comes back with its checkpoint, to be resumed
    assert "gpu-taught/checkpoint/optimizer.pt" in members("student.tar")
    # the best teachers first while they fit: 6 MB + 3 MB; the third (6 MB) left out
    assert members("teachers.tar") == [f"{names[1]}/model.safetensors", f"{names[2]}/model.safetensors"]
    assert f"{names[0]}/metrics.jsonl" in members("runs.tar")  # every run's record
    assert not any(n.endswith("model.safetensors") for n in members("runs.tar"))


def test_an_archive_is_split_into_parts_that_join_again(tmp_path: Path) -> None:
    archive = tmp_path / "big.tar"
    data = np.random.default_rng(0).integers(0, 256, 31 * 2**20 + 5, dtype=np.uint8).tobytes()
    archive.write_bytes(data)
    (tmp_path / "out").mkdir()
    _script("gpu_round").Round.split(archive, tmp_path / "out")
    parts = sorted((tmp_path / "out").iterdir())
    assert [p.name for p in parts] == ["big.tar.part00", "big.tar.part01", "big.tar.part02"]
    assert all(p.stat().st_size <= 15 * 2**20 for p in parts)
    assert b"".join(p.read_bytes() for p in parts) == data


def test_only_teachers_trained_as_planned_teach(tmp_path: Path) -> None:
    gpu_round = _script("gpu_round")
    work = tmp_path / "work"
    a, b, c = list(gpu_round.TEACHERS)
    _run(work / a, 10, True, 0.7)
    _run(work / b, 10, True, 0.7)  # finished, but its plan was the warm-up alone
    _run(work / c, 10, False, 0.7)  # stopped by the backstop
    run = gpu_round.Round(Namespace(out=tmp_path / "out", work=work, return_mib=10.0, budget=1, reserve=0))
    run.record["runs"] = {
        a: {"epochs_planned": 5, "epochs_done": 5},
        b: {"epochs_planned": 1, "epochs_done": 1},
        c: {"epochs_planned": 5, "epochs_done": 3},
    }
    assert [n for n in gpu_round.TEACHERS if run.trained_as_planned(n)] == [a]


def test_a_finished_student_comes_back_without_its_checkpoint_and_given_teachers_stay(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    gpu_round = _script("gpu_round")
    work, out = tmp_path / "work", tmp_path / "out"
    _run(work / "gpu-taught", 1000, True, 0.71)
    (work / "gpu-taught" / "checkpoint").mkdir()
    (work / "gpu-taught" / "checkpoint" / "optimizer.pt").write_bytes(b"o")
    given = work / next(iter(gpu_round.TEACHERS))
    _run(given, 1000, True, 0.7)  # a teacher given with --teacher: no record of this round
    run = gpu_round.Round(Namespace(out=out, work=work, return_mib=10.0, budget=1, reserve=0))
    run.record["teachers"] = [str(given)]
    run.pack()
    with tarfile.open(out / "student.tar.part00") as tar:
        names = tar.getnames()
    assert "gpu-taught/model.safetensors" in names and not any("checkpoint" in n for n in names)
    assert not list(out.glob("teachers.tar.part*"))
