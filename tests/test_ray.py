"""The Ray engine (`emovit.ray`, ``emovit predict --engine ray``): the same rows as the local
engine on 1,000+ FER2013 images and broken files, nothing lost or written twice when an actor
dies, resume, the CLI's Parquet, and videos as per-video tasks.

One local Ray for the session (2 CPUs, a small object store), the tiny random model and
``detector="none"``: the Ray tests take about a minute together on two cores.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest

pytest.importorskip("ray")
pytest.importorskip("pyarrow")

import pyarrow as pa
import pyarrow.parquet as pq
from click.testing import CliRunner
from PIL import Image

from emovit import EmotionRecognizer
from emovit import ray as emovit_ray
from emovit.cli import main
from emovit.errors import OptionError
from emovit.faces import FaceOptions
from emovit.results import FaceResult, FrameResult, ImageResult
from emovit.writers import result_rows

from .conftest import FER2013, REPO, require_shared
from .ray_faults import DieOnce, DieOnWidth

NONE = FaceOptions(detector="none")


# ---------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def ray_session() -> Iterator[Any]:
    """One local Ray for every test here: 2 CPUs, a 300 MB object store, no dashboard;
    workers import this repository's tests (the fault injector) through PYTHONPATH."""
    import ray

    ray.init(
        num_cpus=2,
        object_store_memory=300 * 1024**2,
        include_dashboard=False,
        log_to_driver=False,
        logging_level=logging.WARNING,
        runtime_env={"env_vars": {"PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}},
    )
    from ray.data import DataContext

    DataContext.get_current().enable_progress_bars = False
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def fer_images() -> list[str]:
    """1,197 FER2013 test images, every class (every third file, sorted)."""
    folder = require_shared(FER2013 / "test")
    return [str(p) for p in sorted(folder.glob("*/*.jpg"))[::3]]


@pytest.fixture(scope="session")
def broken(tmp_path_factory: pytest.TempPathFactory, fer_images: list[str]) -> list[str]:
    """Broken inputs, named with spaces: empty, truncated, not an image, missing, a folder,
    and a good image whose file name is not UTF-8."""
    folder = tmp_path_factory.mktemp("broken inputs")
    good = Path(fer_images[0]).read_bytes()
    (folder / "empty file.jpg").write_bytes(b"")
    (folder / "truncated.jpg").write_bytes(good[: len(good) // 3])
    (folder / "text.jpg").write_text("not an image")
    (folder / "a folder.jpg").mkdir()
    odd = os.fsdecode(os.fsencode(folder) + b"/odd_\xff name.jpg")
    Path(odd).write_bytes(good)
    names = ["empty file.jpg", "truncated.jpg", "text.jpg", "missing.jpg", "a folder.jpg"]
    return [str(folder / name) for name in names] + [odd]


def local_rows(model: Path, paths: list[str], top_k: int | None = None) -> list[dict[str, Any]]:
    """The local engine's jsonl rows."""
    rec = EmotionRecognizer.from_pretrained(model, faces=NONE, device="cpu")
    return [row for result in rec.stream(paths) for row in result_rows(result, top_k)]


def _close(got: Any, want: Any, where: str = "row") -> None:
    """Equal, with floats (probabilities, scores) within 1e-6."""
    if isinstance(want, float) and isinstance(got, float):
        assert abs(got - want) <= 1e-6, (where, got, want)
    elif isinstance(want, dict):
        assert isinstance(got, dict) and set(got) == set(want), (where, got, want)
        for key in want:
            _close(got[key], want[key], f"{where}.{key}")
    elif isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want), (where, got, want)
        for index, (g, w) in enumerate(zip(got, want, strict=True)):
            _close(g, w, f"{where}[{index}]")
    else:
        assert got == want, (where, got, want)


def assert_same_rows(got: list[dict[str, Any]], want: list[dict[str, Any]]) -> None:
    """One row per photo in both, equal but for timings (probabilities within 1e-6)."""
    by_source = {row["source"]: row for row in got}
    assert len(by_source) == len(got) == len(want), "a photo lost or written twice"
    for row in want:
        mine = dict(by_source[row["source"]])
        assert mine["label"] == row["label"], row["source"]
        mine.pop("timings_ms"), (row := dict(row)).pop("timings_ms")
        _close(mine, row, row["source"])


# ---------------------------------------------------------------------------- no cluster


def test_rows_survive_parquet_round_trip(tmp_path: Path) -> None:
    """Photo rows (faces, landmarks, top-k), error rows and video rows (track ids, raw
    probabilities, a frame without faces) come back from Parquet as the jsonl writer wrote them."""
    probs = {"happy": 0.75, "sad": 0.25}
    face = FaceResult(probs=probs, box=(1, 2, 30, 40), landmarks=[(1.5, 2.5)] * 5, detection_score=0.9)
    photo = ImageResult(source="a b.jpg", faces=[face, FaceResult(probs=probs)], image_size=(48, 48))
    photo.timings = {"decode": 1.25}
    failed = ImageResult(source="bad\udcff.jpg").fail(OptionError("broken"))
    tracked = FaceResult(probs=probs, box=(0, 0, 9, 9), track_id=3, raw_probs={"happy": 0.5, "sad": 0.5})
    frame = FrameResult(source="v.mp4", faces=[tracked], image_size=(9, 9), frame=4, time_s=0.16)
    empty = FrameResult(source="v.mp4", image_size=(9, 9), frame=5, time_s=0.2)
    for top_k in (None, 2):
        rows = [row for result in (photo, failed, frame, empty) for row in result_rows(result, top_k)]
        kinds = ["image", "image", "frame", "frame"]
        table = pa.Table.from_pylist(
            [{"kind": kind, **row} for kind, row in zip(kinds, rows, strict=True)],
            schema=emovit_ray.result_schema(),
        )
        pq.write_table(table, tmp_path / "rows.parquet")
        back = pq.read_table(tmp_path / "rows.parquet")
        assert back.schema.equals(emovit_ray.result_schema())
        assert [emovit_ray._from_arrow(row) for row in back.to_pylist()] == json.loads(json.dumps(rows))


def test_parts_are_named_by_their_inputs() -> None:
    """Photos go part_size at a time, each video alone; a part's name is a hash of its inputs,
    so a retried part rewrites the same file."""
    inputs = ["a.jpg", "b.png", "clip.mp4", "c.jpg", "s3://bucket/d.mov", "e.jpg"]
    units = emovit_ray._units(inputs, 2, "parquet")
    assert [[os.fsdecode(x) for x in u["inputs"]] for u in units] == [
        ["a.jpg", "b.png"],
        ["clip.mp4"],
        ["s3://bucket/d.mov"],
        ["c.jpg", "e.jpg"],
    ]
    assert [u["video"] for u in units] == [False, True, True, False]
    assert units == emovit_ray._units(inputs, 2, "parquet")
    assert len({u["part"] for u in units}) == 4 and all(u["part"].endswith(".parquet") for u in units)
    assert emovit_ray._units(["a.jpg", "c.jpg"], 2, "parquet")[0]["part"] != units[0]["part"]


def test_a_folder_with_results_needs_resume(tmp_path: Path) -> None:
    (tmp_path / "_manifest").mkdir()
    (tmp_path / "_manifest" / "part-x.json").write_text(
        json.dumps({"part": "part-x.parquet", "inputs": ["a"]})
    )
    with pytest.raises(OptionError, match="--resume") as caught:
        emovit_ray.predict_to_folder(["a.jpg"], str(tmp_path))
    assert caught.value.option == "output"
    with pytest.raises(OptionError, match="same format"):
        emovit_ray.predict_to_folder(["a.jpg"], str(tmp_path), fmt="jsonl", resume=True)
    assert emovit_ray.done_inputs(str(tmp_path)) == {"a"}


def test_a_new_run_refuses_a_folder_of_other_files_and_the_sweep_spares_them(tmp_path: Path) -> None:
    """`--output clips/` beside `clips/part-01.mp4`: refused, nothing deleted or created; a
    resumed run's sweep removes only the part and temporary names emovit itself writes."""
    import pyarrow.fs as pafs

    mine = tmp_path / "clips" / "part-01.mp4"
    mine.parent.mkdir()
    mine.write_bytes(b"the user's video")
    with pytest.raises(OptionError, match="did not write \\(part-01.mp4\\)") as caught:
        emovit_ray.predict_to_folder([str(mine)], str(mine.parent))
    assert caught.value.option == "output"
    assert sorted(p.name for p in mine.parent.iterdir()) == ["part-01.mp4"]
    browsed = tmp_path / "browsed"  # what file browsers leave is not someone else's work
    browsed.mkdir()
    for name in (".DS_Store", "Thumbs.db", "desktop.ini"):
        (browsed / name).write_bytes(b"")
    assert emovit_ray._foreign(pafs.LocalFileSystem(), str(browsed)) == []
    stray = emovit_ray._part_name(["x.jpg"], "parquet")
    kept = emovit_ray._part_name(["y.jpg"], "parquet")
    temporary = f".{stray}.{'0' * 32}.tmp"
    for name in (stray, kept, temporary, "part-notes.txt"):
        (mine.parent / name).write_bytes(b"")
    assert emovit_ray._sweep(pafs.LocalFileSystem(), str(mine.parent), {kept}) == 2
    assert sorted(p.name for p in mine.parent.iterdir()) == sorted([kept, "part-01.mp4", "part-notes.txt"])


def test_resume_recognises_inputs_however_their_paths_are_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run started with relative paths and resumed from elsewhere with absolute ones (or
    ``./a.jpg`` beside ``a.jpg``) analyses nothing twice."""
    photos = tmp_path / "photos"
    photos.mkdir()
    out = tmp_path / "out"
    (out / "_manifest").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    new = {"part": "part-b.parquet", "inputs": ["photos/b.jpg"], "keys": [str(photos / "b.jpg")]}
    old = {"part": "part-a.parquet", "inputs": ["photos/a.jpg"]}  # written before keys were kept
    for entry in (new, old):
        (out / "_manifest" / entry["part"].replace(".parquet", ".json")).write_text(json.dumps(entry))
    given = ["photos/a.jpg", "./photos/a.jpg", "photos/b.jpg"]
    report = emovit_ray.predict_to_folder(given, str(out), resume=True, expand=False)
    assert (report.inputs, report.skipped, report.duplicates, report.rows) == (2, 2, 1, 0)
    monkeypatch.chdir(photos)  # the new entry's key is absolute: found from any folder
    report = emovit_ray.predict_to_folder([str(photos / "b.jpg")], str(out), resume=True, expand=False)
    assert report.skipped == 1


def test_file_urls_are_listed_like_remote_folders(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    for name in ("sub/b.jpg", "a.png", "notes.txt", "clip.mp4", ".hidden.jpg"):
        (tmp_path / name).write_bytes(b"x")
    listed = emovit_ray.expand_remote([f"file://{tmp_path}", "plain.jpg"])
    assert listed == [f"file://{tmp_path}/{n}" for n in ("a.png", "clip.mp4", "sub/b.jpg")] + ["plain.jpg"]
    assert emovit_ray.expand_remote([f"file://{tmp_path}"], videos=False)[1].endswith("sub/b.jpg")


def test_listed_names_with_spaces_hashes_and_question_marks_are_read(tmp_path: Path) -> None:
    """A listed file's URL is percent-encoded and read decoded (pyarrow lists decoded names): a
    '#' or '?' in a name was taken for a fragment or query, and a percent-encoded URL was read
    as typed; --no-recursive lists the folder alone."""
    folder = tmp_path / "rem 2"
    (folder / "sub").mkdir(parents=True)
    for name in ("my photo.jpg", "a#1.jpg", "b?x.jpg", "sub/c.jpg"):
        (folder / name).write_bytes(name.encode())
    from urllib.parse import quote

    url = f"file://{quote(str(folder))}"  # a URL: its space percent-encoded
    listed = emovit_ray.expand_remote([url])
    assert len(listed) == 4 and all(" " not in url and "#" not in url and "?" not in url for url in listed)
    reader = emovit_ray._Reader()
    read = {url: reader.read(url) for url in listed}
    assert all(not isinstance(data, ImageResult) for data in read.values()), read
    assert sorted(data.getvalue() for data in read.values()) == sorted(  # type: ignore[union-attr]
        n.encode() for n in ("my photo.jpg", "a#1.jpg", "b?x.jpg", "sub/c.jpg")
    )
    assert len(emovit_ray.expand_remote([url], recursive=False)) == 3


def test_a_resume_with_other_options_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Rows of two setups (another model, top-k, detector, sampling) would mix in one folder:
    the run's settings are kept beside its manifest and a resume must match them; options
    that change no row (batch size, threads, device) may change."""
    monkeypatch.setattr(emovit_ray, "_PartRun", _NoCluster)
    out = str(tmp_path / "out")
    faces = FaceOptions(detector="none", margin=0.1)
    emovit_ray.predict_to_folder(["a.jpg"], out, "m", faces=faces, top_k=3, expand=False, batch_size=8)
    assert emovit_ray._manifest(*emovit_ray._filesystem(out)) == []  # the settings are no part
    emovit_ray.predict_to_folder(
        ["a.jpg"], out, "m", faces=faces, top_k=3, expand=False, resume=True, batch_size=64, threads=2
    )
    # the stand-in commits nothing: a folder without results starts afresh with other options
    emovit_ray.predict_to_folder(["a.jpg"], out, "m", faces=faces, top_k=4, expand=False, resume=True)
    fs, base = emovit_ray._filesystem(out)
    entry = {"part": "part-0123456789abcdef01234567.parquet", "inputs": ["b.jpg"]}
    emovit_ray._commit(fs, base, entry)  # now it holds results made with top-k 4
    emovit_ray.predict_to_folder(["a.jpg"], out, "m", faces=faces, top_k=4, expand=False, resume=True)
    # the recognizer's defaults, given (as the command gives them) or not, are the same settings
    emovit_ray.predict_to_folder(
        ["a.jpg"], out, "m", faces=faces, top_k=4, expand=False, resume=True, precision="fp32", tta="none"
    )
    # a folder whose settings were recorded before the defaults were (no precision or tta, no
    # video options) resumes with them: it was refused ("precision: null, now fp32")
    path = Path(out) / "_manifest" / "_settings.json"
    recorded = json.loads(path.read_text())
    path.write_text(
        json.dumps({k: v for k, v in recorded.items() if k not in ("precision", "tta")} | {"video": None})
    )
    emovit_ray.predict_to_folder(
        ["a.jpg"], out, "m", faces=faces, top_k=4, expand=False, resume=True, precision="fp32", tta="none"
    )
    with pytest.raises(OptionError, match=r"tta: \"none\", now \"flip\""):
        emovit_ray.predict_to_folder(
            ["a.jpg"], out, "m", faces=faces, top_k=4, expand=False, resume=True, tta="flip"
        )
    with pytest.raises(OptionError, match=r"other options \(top_k: 4, now 5\)") as caught:
        emovit_ray.predict_to_folder(["a.jpg"], out, "m", faces=faces, top_k=5, expand=False, resume=True)
    assert caught.value.option == "output"
    with pytest.raises(OptionError, match=r"faces.margin: 0.1, now 0.3"):
        emovit_ray.predict_to_folder(
            ["a.jpg"], out, "m", faces=faces.replace(margin=0.3), top_k=4, expand=False, resume=True
        )


def test_a_resume_with_other_options_is_refused_before_ray_starts(
    face_jpeg: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The command compared the options only inside predict_to_folder, after ray.init (~10 s);
    options that change no row (batch size) still may change."""
    import ray

    monkeypatch.setattr(emovit_ray, "_PartRun", _NoCluster)
    out = tmp_path / "rows"
    common = [str(face_jpeg), "--detector", "none", "--model", "default", "--top-k", "3"]
    from emovit.video import VideoOptions

    faces, video = FaceOptions(detector="none"), VideoOptions()  # the command's defaults
    emovit_ray.predict_to_folder(
        common[:1], str(out), "default", faces=faces, video=video, top_k=3, expand=False
    )
    fs, base = emovit_ray._filesystem(str(out))
    emovit_ray._commit(fs, base, {"part": "part-0123456789abcdef01234567.parquet", "inputs": ["b.jpg"]})

    def started(**kwargs: object) -> None:
        raise AssertionError("ray.init was reached")

    monkeypatch.setattr(ray, "init", started)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    args = ["predict", *common[:-1], "4", "--engine", "ray", "-o", str(out), "--resume"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, result.output
    assert "other options (top_k: 3, now 4)" in result.output
    same = ["predict", *common, "--batch-size", "7", "--engine", "ray", "-o", str(out), "--resume"]
    result = CliRunner().invoke(main, same)  # the check lets it through, to Ray
    assert result.exit_code == 3 and "ray.init was reached" in result.output, result.output


class _NoCluster:
    """A stand-in for the part runner: records what it is given, runs nothing."""

    seen: ClassVar[dict[str, Any]] = {}

    def __init__(self, fs: Any, base: str, kwargs: dict[str, Any], *rest: Any) -> None:
        _NoCluster.seen = {**kwargs, "base": base}

    def __call__(self, units: list[dict[str, Any]]) -> list[dict[str, Any]]:
        _NoCluster.seen["inputs"] = [os.fsdecode(name) for unit in units for name in unit["inputs"]]
        return []

    def close(self) -> None:
        pass


def test_workers_the_cluster_cannot_place_are_usage_errors() -> None:
    """A GPU worker on a cluster without GPUs, or more threads per worker than the cluster has
    CPUs, would wait for ever in Ray Data: the flag is blamed at once."""
    import click

    from emovit.cli._ray import _check_resources

    ctx = click.Context(main)
    with pytest.raises(click.BadParameter, match="no GPU") as caught:
        _check_resources(ctx, {"CPU": 8.0}, cuda=True, threads=1)
    assert caught.value.param_hint == "'--device'"
    with pytest.raises(click.BadParameter, match="--threads 4 CPUs; the cluster has 2"):
        _check_resources(ctx, {"CPU": 2.0}, cuda=False, threads=4)
    _check_resources(ctx, {"CPU": 2.0, "GPU": 1.0}, cuda=True, threads=2)


def test_local_paths_reach_the_workers_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Workers on a cluster do not run in the driver's folder: relative inputs, output, model
    and detector model are made absolute before they are sent (results were written where
    the workers ran, and the manifest named files that were not there)."""
    monkeypatch.setattr(emovit_ray, "_PartRun", _NoCluster)
    (tmp_path / "photos").mkdir()
    (tmp_path / "model").mkdir()
    monkeypatch.chdir(tmp_path)
    faces = FaceOptions(detector="yunet", detector_model="yunet.onnx")
    emovit_ray.predict_to_folder(["photos/a.jpg"], "out", "model", faces=faces, expand=False)
    seen = _NoCluster.seen
    assert seen["inputs"] == [str(tmp_path / "photos" / "a.jpg")]
    assert (seen["output"], seen["model"]) == (str(tmp_path / "out"), str(tmp_path / "model"))
    assert seen["faces"].detector_model == str(tmp_path / "yunet.onnx")
    emovit_ray.predict_to_folder(["photos/b.jpg"], "out2", "default", expand=False)
    assert _NoCluster.seen["model"] == "default"  # a registry name or Hub id stays as it is


def test_a_remote_folder_that_cannot_be_listed_is_kept_as_an_input(monkeypatch: pytest.MonkeyPatch) -> None:
    """Listing credentials or network errors ended the run as an internal error; the URL now
    stays an input, whose reading gives its error row."""
    import pyarrow.fs as pafs

    class Refusing:
        @staticmethod
        def from_uri(uri: str) -> None:
            raise OSError("AWS Error ACCESS_DENIED")

    monkeypatch.setattr(pafs, "FileSystem", Refusing)
    assert emovit_ray.expand_remote(["s3://bucket/photos", "a.jpg"]) == ["s3://bucket/photos", "a.jpg"]


def test_an_unfit_output_folder_is_refused_before_a_cluster_starts(
    face_jpeg: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The folder checks ran after Ray's start-up (tens of seconds) and the model's load."""
    import ray

    def never(**kwargs: object) -> None:
        raise AssertionError("ray.init was called")

    monkeypatch.setattr(ray, "init", never)
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    args = ["predict", str(face_jpeg), "--detector", "none", "--engine", "ray", "-o", str(out)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, result.output
    assert "holds files emovit did not write (notes.txt)" in result.output and "--output" in result.output
    (tmp_path / "afile").write_text("x")
    summary = CliRunner().invoke(
        main, [*args[:-1], str(tmp_path / "new"), "--summary", str(tmp_path / "afile" / "s")]
    )
    assert summary.exit_code == 2 and "'--summary'" in summary.output, summary.output


def test_urls_of_schemes_with_digits_are_urls() -> None:
    """`s3://...` was taken for a local path: a URL scheme was required to be letters only."""
    from emovit.sources import is_url

    assert is_url("s3://bucket/photos") and is_url("svn+ssh://host/x") and is_url("gs://b/a.jpg")
    assert not is_url("C://photos/a.jpg") and not is_url("3d://x") and not is_url("photos/a.jpg")
    assert emovit_ray._remote("s3://bucket/photos")


def test_spool_files_of_actors_that_died_are_swept(tmp_path: Path) -> None:
    """A killed actor's part spool stayed in the temporary folder for good. Only this host's
    files of processes that are gone and untouched for an hour go (a container sharing the
    folder has other pids, and a live spool is being written)."""
    import subprocess
    import sys

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    mine = emovit_ray._spool_prefix()
    here = mine.rsplit("-", 2)[0]
    files = {
        "dead": tmp_path / f"{here}-{gone.pid}-abc.tmp",
        "dead, recent": tmp_path / f"{here}-{gone.pid}-def.tmp",
        "alive": tmp_path / f"{here}-{os.getppid()}-abc.tmp",
        "mine": tmp_path / f"{mine}abc.tmp",
        "other host": tmp_path / f".emovit-part-elsewhere-{gone.pid}-abc.tmp",
    }
    for name, path in files.items():
        path.write_bytes(b"rows")
        if name != "dead, recent":
            os.utime(path, (0, 0))  # written long ago
    emovit_ray._sweep_spools(str(tmp_path))
    assert {name for name, path in files.items() if path.exists()} == {
        "dead, recent",
        "alive",
        "mine",
        "other host",
    }


def test_ctrl_c_says_how_to_finish_the_run(
    ray_session: Any, face_jpeg: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It said only "interrupted", though the folder's committed parts are kept for --resume."""

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(emovit_ray, "predict_to_folder", interrupted)
    out = tmp_path / "rows"
    args = ["predict", str(face_jpeg), "--detector", "none", "--engine", "ray", "-o", str(out)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 130, result.output
    assert f"the same command with --resume finishes {out}" in result.output


@pytest.mark.parametrize(
    ("address", "message"),
    [
        ("auto", "no Ray cluster could be reached at 'auto'"),  # ray.init's ConnectionError
        ("127.0.0.1:1", "no Ray cluster could be reached at '127.0.0.1:1'"),  # ray.init retried for ever
        ("bogus:::", "is not a Ray cluster address"),  # an internal error, exit 3
        ("ray://127.0.0.1:1", "no Ray cluster could be reached at 'ray://127.0.0.1:1'"),
    ],
)
def test_an_address_without_a_cluster_is_a_usage_error(
    face_jpeg: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, address: str, message: str
) -> None:
    """An unreachable or malformed address is refused before ray.init (which retried a
    host:port for ever); "auto" without a cluster is ray.init's own ConnectionError."""
    import ray

    def unreachable(**kwargs: object) -> None:
        assert address == "auto", "ray.init was reached"
        raise ConnectionError("Could not find any running Ray instance")

    monkeypatch.setattr(ray, "init", unreachable)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)  # a command's start (another test's Ray runs)
    args = ["predict", str(face_jpeg), "--detector", "none", "--engine", "ray", "--address", address]
    result = CliRunner().invoke(main, [*args, "-o", str(tmp_path / "rows")])
    assert result.exit_code == 2 and message in result.output and "--address" in result.output, result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--format", "parquet"], "only with --engine ray"),
        (["--resume", "--format", "jsonl"], "--resume: only with --engine ray"),
        (["--workers", "2"], "--workers: only with --engine ray"),
        (["--engine", "ray"], "--output DIR"),
        (["--engine", "ray", "--format", "csv", "-o", "out"], "parquet or jsonl"),
        (["--engine", "ray", "--save-annotated", "x", "-o", "out"], "local-engine options"),
    ],
)
def test_engine_flags_are_checked(args: list[str], message: str, face_jpeg: Path) -> None:
    result = CliRunner().invoke(main, ["predict", str(face_jpeg), "--detector", "none", *args])
    assert result.exit_code == 2, result.output
    assert message in result.output


# ---------------------------------------------------------------------------- on Ray


def test_rows_match_the_local_engine(
    ray_session: Any, tiny_model_dir: Path, fer_images: list[str], broken: list[str]
) -> None:
    """1,197 FER2013 images and six broken inputs through `predict_dataset` (2 actors): the
    local engine's rows, labels equal and probabilities within 1e-6; broken files are error
    rows with the local codes."""
    inputs = fer_images + broken
    # Paths as bytes (a name that is not UTF-8); some inputs as their bytes, named by the path
    # (as `read_binary_files(include_paths=True)` gives them).
    as_bytes = set(fer_images[:50] + broken[1:3])
    items = [
        {"path": os.fsencode(path), "bytes": Path(path).read_bytes() if path in as_bytes else None}
        for path in inputs
    ]
    rows = emovit_ray.predict_dataset(
        ray_session.data.from_items(items), str(tiny_model_dir), faces=NONE, workers=2, batch_size=32
    ).take_all()
    got = [emovit_ray._from_arrow(row) for row in rows]
    want = local_rows(tiny_model_dir, inputs)
    assert_same_rows(got, want)
    codes = {Path(row["source"]).name: row["error_code"] for row in got if not row["ok"]}
    assert codes == {
        "empty file.jpg": "empty_file",
        "truncated.jpg": "corrupt_image",
        "text.jpg": "unsupported_format",
        "missing.jpg": "not_found",
        "a folder.jpg": "not_found",
    }
    assert len(fer_images) >= 1000


def test_a_dataset_that_reads_its_files_gets_a_cpu_beside_the_actors(
    ray_session: Any, tiny_model_dir: Path, fer_images: list[str], tmp_path: Path
) -> None:
    """`read_binary_files` reads in tasks of 1 CPU: the default pool (one actor per CPU) and the
    README's workers=8 took both CPUs of this cluster, and the read task waited for ever. The
    default now leaves a CPU free, and a larger pool is lowered with a warning."""
    import shutil
    import threading

    folder = tmp_path / "faces"
    folder.mkdir()
    for i, path in enumerate(fer_images[:6]):
        shutil.copy(path, folder / f"{i}.jpg")
    files = ray_session.data.read_binary_files(str(folder), include_paths=True)
    with pytest.warns(UserWarning, match="would take all 2 CPUs of the Ray cluster"):
        crowded = emovit_ray.predict_dataset(files, str(tiny_model_dir), faces=NONE, workers=8)
    for dataset in (emovit_ray.predict_dataset(files, str(tiny_model_dir), faces=NONE), crowded):
        rows: list[dict[str, Any]] = []
        run = threading.Thread(target=lambda d=dataset, out=rows: out.extend(d.take_all()), daemon=True)
        run.start()
        run.join(180)  # it hung: bounded here, Ray's shutdown at the end stops a stuck job
        assert not run.is_alive(), "the job waits for a CPU its actors hold"
        assert len(rows) == 6 and all(row["ok"] for row in rows)


def test_actors_reserve_what_the_cluster_can_spare(monkeypatch: pytest.MonkeyPatch) -> None:
    """What an actor of predict_dataset reserves, by cluster size (no Ray needed)."""
    import warnings

    fit = emovit_ray._actor_cpus
    for cpus, asked, workers, expected in [(2, 1, None, 1), (4, 2, 3, 2), (1, 1, (1, 4), 1), (1, 1, None, 0),
                                           (1, 1, 2, 0), (2, 2, None, 1), (1, 0.5, None, 0)]:  # fmt: skip
        monkeypatch.setattr(emovit_ray, "_cluster_cpus", lambda c=cpus: float(c))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert fit(asked, 0, spare_cpus=1, workers=workers) == expected, (cpus, asked, workers)
        assert bool(caught) == (expected != asked), (cpus, asked, workers)
    assert fit(1, 1, spare_cpus=1, workers=None) == 1  # a GPU actor: as asked


def test_a_one_cpu_cluster_reads_and_classifies(tiny_model_dir: Path, tmp_path: Path) -> None:
    """On a Ray cluster of 1 CPU the default pool's one actor took that CPU and the dataset's
    read task waited for ever. The actor reserves no CPU there (a warning says so) and shares
    it with the reads. A Ray of its own (1 CPU), in a process bounded in time."""
    import subprocess
    import sys

    folder = tmp_path / "faces"
    folder.mkdir()
    for i in range(4):
        Image.fromarray(np.full((40, 40, 3), 50 * i, np.uint8)).save(folder / f"{i}.png")
    script = f"""
import logging, threading, warnings
import ray
from emovit import ray as emovit_ray
from emovit.faces import FaceOptions
ray.init(num_cpus=1, object_store_memory=100 * 1024**2, include_dashboard=False, log_to_driver=False,
         logging_level=logging.WARNING, runtime_env={{"env_vars": {{"HF_HUB_OFFLINE": "1"}}}})
ray.data.DataContext.get_current().enable_progress_bars = False
files = ray.data.read_binary_files({str(folder)!r}, include_paths=True)
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    rows = emovit_ray.predict_dataset(files, {str(tiny_model_dir)!r}, faces=FaceOptions(detector="none"))
print("warned:", any("has 1 CPU(s)" in str(w.message) for w in caught))
out = []
run = threading.Thread(target=lambda: out.extend(rows.take_all()), daemon=True)
run.start()
run.join(150)
print("rows:", len(out), "ok:", all(row["ok"] for row in out))
ray.shutdown()
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert "warned: True" in done.stdout, done.stdout + done.stderr[-2000:]
    assert "rows: 4 ok: True" in done.stdout, done.stdout + done.stderr[-2000:]  # "rows: 0": it hung


@pytest.fixture(scope="module")
def killed_run(
    ray_session: Any,
    tiny_model_dir: Path,
    fer_images: list[str],
    broken: list[str],
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[list[str], Path, emovit_ray.JobReport, Path]:
    """A folder run (2 actors, parts of 32) during which one actor dies (os._exit) in the
    middle of a part."""
    inputs = fer_images[:288] + broken
    folder = tmp_path_factory.mktemp("killed run")
    marker = folder / "died"
    faces = FaceOptions(detector=DieOnce(str(marker), after=100))
    out = folder / "out put"
    report = emovit_ray.predict_to_folder(
        inputs,
        str(out),
        str(tiny_model_dir),
        faces=faces,
        workers=2,
        part_size=32,
        batch_size=16,
        expand=False,
    )
    return inputs, out, report, marker


def _committed(out: Path) -> set[str]:
    return {json.loads(p.read_text())["part"] for p in (out / "_manifest").glob("part-*.json")}


def test_a_killed_actor_loses_and_duplicates_nothing(
    killed_run: tuple[list[str], Path, emovit_ray.JobReport, Path], tiny_model_dir: Path
) -> None:
    """Ray restarts the dead actor and runs its part again, which rewrites the same file:
    every input's row is there exactly once."""
    inputs, out, report, marker = killed_run
    assert marker.exists(), "no actor died: the test tested nothing"
    assert report.rows == len(inputs) and report.errors == 5 and report.parts == 10
    assert_same_rows(list(emovit_ray.read_results(str(out))), local_rows(tiny_model_dir, inputs))
    assert {p.name for p in out.iterdir() if p.is_file()} == _committed(out)  # no stray, no temporary
    assert "rows/s on 2 workers" in report.line()


def test_resume_skips_done_inputs(
    killed_run: tuple[list[str], Path, emovit_ray.JobReport, Path],
    tiny_model_dir: Path,
    fer_images: list[str],
    tmp_path: Path,
) -> None:
    """A driver stopped mid-run leaves committed parts, a part written but not committed and a
    temporary file; --resume deletes the last two and analyses only what is not committed."""
    import shutil

    inputs, done, _, _ = killed_run
    out = tmp_path / "out"
    shutil.copytree(done, out)
    entry = sorted((out / "_manifest").glob("part-*.json"))[0]
    uncommitted = json.loads(entry.read_text())
    entry.unlink()  # the driver stopped between the part's rename and its commit
    (out / f".{uncommitted['part']}.1234.tmp").write_text("half a file")
    assert emovit_ray.done_inputs(str(out)) == set(inputs) - set(uncommitted["inputs"])

    everything = inputs + fer_images[288:352]
    report = emovit_ray.predict_to_folder(
        everything,
        str(out),
        str(tiny_model_dir),
        faces=NONE,
        workers=1,
        part_size=32,
        resume=True,
        expand=False,
    )
    redo = len(uncommitted["inputs"])  # a full part or the last, shorter one: whichever sorts first
    assert report.skipped == len(inputs) - redo and report.rows == redo + 64
    assert report.errors + report.earlier_errors == 5  # the folder's error rows, this run's or not
    assert f"{len(inputs) - redo} inputs skipped" in report.line()
    assert {p.name for p in out.iterdir() if p.is_file()} == _committed(out)  # swept
    assert_same_rows(list(emovit_ray.read_results(str(out))), local_rows(tiny_model_dir, everything))
    sources = pq.read_table(out, columns=["source"]).column("source").to_pylist()  # what any reader sees
    assert len(sources) == len(set(sources)) == len(everything)


def test_an_input_that_kills_its_worker_every_time_is_one_error_row(
    ray_session: Any,
    tiny_model_dir: Path,
    fer_images: list[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A poison photo (its worker dies on it, however often Ray tries) used to stall the run
    for ever (Ray restarts actors and retries their tasks without limit). Its part is given up
    after PART_TRIES tries, its inputs are tried alone, and only the poison becomes an error
    row; the run ends and every other input has its rows, those after the poison in its part
    too. A resume tries the poison again (the cause may have been passing)."""
    monkeypatch.setattr(emovit_ray, "PART_TRIES", 2)  # each try restarts an actor (seconds): two show it
    poison = tmp_path / "poison.png"
    Image.new("L", (33, 40), 128).save(poison)
    good = fer_images[:15]
    inputs = [*good[:3], str(poison), *good[3:]]  # parts of 8: the poison early in the first
    out = tmp_path / "out"
    faces = FaceOptions(detector=DieOnWidth(33))
    report = emovit_ray.predict_to_folder(
        inputs, str(out), str(tiny_model_dir), faces=faces, workers=2, part_size=8, expand=False
    )
    assert report.failed_inputs == [str(poison)]
    assert (report.rows, report.errors) == (16, 1)
    assert "1 inputs killed their worker on every try" in report.line()
    rows = {row["source"]: row for row in emovit_ray.read_results(str(out))}
    assert set(rows) == set(inputs)
    bad = rows.pop(str(poison))
    assert (bad["ok"], bad["error_code"], bad["error_stage"]) == (False, "worker_failed", "worker")
    assert str(poison) in bad["error"] and "2 tries" in bad["error"]
    assert_same_rows(list(rows.values()), local_rows(tiny_model_dir, good))
    assert {p.name for p in out.iterdir() if p.is_file()} == _committed(out)  # no stray part
    assert emovit_ray.done_inputs(str(out)) == set(good)
    again = emovit_ray.predict_to_folder(
        inputs, str(out), str(tiny_model_dir), faces=NONE, workers=1, part_size=8, resume=True, expand=False
    )
    assert (again.skipped, again.rows, again.errors, again.failed_inputs) == (15, 1, 0, [])
    assert_same_rows(list(emovit_ray.read_results(str(out))), local_rows(tiny_model_dir, inputs))
    assert {p.name for p in out.iterdir() if p.is_file()} == _committed(out)


def test_a_remote_photo_over_the_read_limit_is_an_error_row(
    tiny_model_dir: Path, fer_images: list[str]
) -> None:
    """Remote photos are read whole into the actor's memory: one over `max_bytes` is a
    ``too_large`` row, unread; the others (and local paths, streamed) go on."""
    sizes = {path: Path(path).stat().st_size for path in fer_images[:40]}
    small, big = min(sizes, key=sizes.get), max(sizes, key=sizes.get)  # type: ignore[arg-type]
    predictor = emovit_ray.BatchPredictor(str(tiny_model_dir), faces=NONE, max_bytes=sizes[small])
    urls = [Path(small).as_uri(), Path(big).as_uri(), big]
    rows = predictor(pa.Table.from_pylist([{"path": url} for url in urls])).to_pylist()
    assert [(row["source"], row["ok"]) for row in rows] == [(urls[0], True), (urls[1], False), (big, True)]
    assert rows[1]["error_code"] == "too_large" and f"{sizes[big]:,} bytes" in rows[1]["error"]


def test_a_camera_in_a_dataset_is_an_error_row_not_opened(
    tiny_model_dir: Path, fer_images: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch job never opens a live camera (it would run for ever on whichever machine its
    worker is): ``camera://0`` is an ``unsupported_input`` row, the photos beside it answer."""
    cv2 = pytest.importorskip("cv2")
    pytest.importorskip("av")

    def no_camera(*args: Any) -> Any:
        raise AssertionError("a worker opened a camera")

    monkeypatch.setattr(cv2, "VideoCapture", no_camera)
    predictor = emovit_ray.BatchPredictor(str(tiny_model_dir), faces=NONE)
    inputs = ["camera://0", fer_images[0]]
    rows = predictor(pa.Table.from_pylist([{"path": path} for path in inputs])).to_pylist()
    assert [(row["source"], row["ok"]) for row in rows] == [("camera://0", False), (fer_images[0], True)]
    assert (
        rows[0]["error_code"] == "unsupported_input"
        and "a live camera is not read by a batch job" in rows[0]["error"]
    )


def test_a_part_that_cannot_be_written_stops_the_run_with_the_reason(
    tiny_model_dir: Path, fer_images: list[str], tmp_path: Path
) -> None:
    """A write that fails after the writer's own tries is the storage's fault, not the
    inputs': the part says why (the driver stops the run with it) instead of Ray retrying it."""
    blocked = tmp_path / "a file"
    blocked.write_text("")
    writer = emovit_ray._PartWriter(str(blocked), "jsonl", model=str(tiny_model_dir), faces=NONE)
    units = emovit_ray._units(fer_images[:2], 32, "jsonl")
    (summary,) = writer(pa.Table.from_pylist(units)).to_pylist()
    assert summary["part"] == units[0]["part"] and summary["failure"].startswith(("OSError", "NotADirectory"))


def test_a_manifest_that_cannot_be_written_is_a_storage_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The driver's commit is tried again (an object store's passing refusal), then stops the
    run with a `StorageError`, which the CLI reports as a failed job (exit 1), not a bug."""
    import click

    from emovit.cli._errors import EXIT_FAILED, to_click_error
    from emovit.errors import StorageError

    class Flaky:
        def __init__(self, failures: int) -> None:
            self.failures, self.calls = failures, 0

        def open_output_stream(self, path: str) -> Any:
            self.calls += 1
            if self.calls <= self.failures:
                raise OSError("SlowDown: please reduce your request rate")
            return open(path, "wb")  # closed by the caller's with

        def move(self, src: str, dest: str) -> None:
            os.replace(src, dest)

        def delete_file(self, path: str) -> None:
            Path(path).unlink(missing_ok=True)

    monkeypatch.setattr(emovit_ray.time, "sleep", lambda seconds: None)
    (tmp_path / "_manifest").mkdir()
    entry = {"part": "part-0123456789abcdef01234567.parquet", "inputs": ["a.jpg"]}
    emovit_ray._commit(Flaky(2), str(tmp_path), entry)  # refused twice, then written
    assert json.loads((tmp_path / "_manifest" / "part-0123456789abcdef01234567.json").read_text()) == entry
    with pytest.raises(StorageError, match="manifest entry of part-0123456789abcdef01234567"):
        emovit_ray._commit(Flaky(99), str(tmp_path), entry)
    error = to_click_error(emovit_ray.PartError("out: the disk is full"), click.Context(main))
    assert error.exit_code == EXIT_FAILED


def test_a_video_that_fails_on_ray_is_summarised_as_locally(tiny_model_dir: Path, tmp_path: Path) -> None:
    """The summary of a video that could not be read (or killed its worker) has the fields of
    the local one (`complete`, `error_code`, `tracks`, ...), not three of them."""
    from emovit.errors import InputError

    missing = str(tmp_path / "missing.mp4")
    local = EmotionRecognizer.from_pretrained(str(tiny_model_dir), detector="none").predict_video(missing)
    list(local)
    _, summary = emovit_ray._failed_video(missing, InputError(missing, "no such file", "not_found"), None)
    assert set(summary) == set(local.summary())
    assert (summary["complete"], summary["error_code"], summary["tracks"]) == (False, "not_found", [])


def test_a_part_is_written_as_the_local_jsonl(
    tiny_model_dir: Path, fer_images: list[str], tmp_path: Path
) -> None:
    """The actor's work for one part, run in-process: a JSONL file of the local rows."""
    inputs = fer_images[:20]
    writer = emovit_ray._PartWriter(str(tmp_path), "jsonl", model=str(tiny_model_dir), faces=NONE, top_k=3)
    units = emovit_ray._units(inputs, 32, "jsonl")
    summary = writer(pa.Table.from_pylist(units)).to_pylist()
    assert [(s["part"], s["rows"], s["errors"]) for s in summary] == [(units[0]["part"], 20, 0)]
    lines = (tmp_path / units[0]["part"]).read_text().splitlines()
    assert_same_rows([json.loads(line) for line in lines], local_rows(tiny_model_dir, inputs, top_k=3))
    assert [p.name for p in tmp_path.iterdir()] == [units[0]["part"]]


def _clip(path: Path, frames: int = 12) -> Path:
    av = pytest.importorskip("av")
    face = np.asarray(
        Image.open(sorted(require_shared(FER2013 / "test" / "happy").glob("*.jpg"))[0]).convert("RGB")
    )
    out = av.open(str(path), "w")
    stream = out.add_stream("libx264", rate=10)
    stream.width, stream.height, stream.pix_fmt = 96, 96, "yuv420p"
    stream.options = {"preset": "ultrafast"}
    for index in range(frames):
        canvas = np.full((96, 96, 3), 40 + 10 * index, np.uint8)
        canvas[20:68, 10 + index : 58 + index] = face
        for packet in stream.encode(av.VideoFrame.from_ndarray(canvas, format="rgb24")):
            out.mux(packet)
    for packet in stream.encode():
        out.mux(packet)
    out.close()
    return path


def test_a_videos_rows_go_to_its_part_file_as_they_come(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An actor built a video's rows as one list, then an Arrow table, then a Parquet buffer
    (2 h at 30 fps: ~1.6 GB); they now go to a local file a chunk at a time (Parquet row
    groups), and the part holds every frame once."""
    pytest.importorskip("av")
    monkeypatch.setattr(emovit_ray, "_ROW_CHUNK", 5)
    clip = _clip(tmp_path / "clip.mp4", frames=12)
    out = tmp_path / "out"
    out.mkdir()
    writer = emovit_ray._PartWriter(str(out), "parquet", model=str(tiny_model_dir), faces=NONE)
    units = emovit_ray._units([str(clip)], 32, "parquet")
    (summary,) = writer(pa.Table.from_pylist(units)).to_pylist()
    assert (summary["failure"], summary["rows"], summary["errors"]) == (None, 12, 0)
    assert json.loads(summary["summaries"])[0]["frames_analysed"] == 12
    stored = pq.ParquetFile(out / units[0]["part"])
    assert stored.num_row_groups == 3  # 5 + 5 + 2 rows, written as the frames came
    assert stored.read().column("frame").to_pylist() == list(range(12))
    assert [p.name for p in out.iterdir()] == [units[0]["part"]]


def test_cli_writes_readable_parquet_and_videos(
    ray_session: Any, tiny_model_dir: Path, broken: list[str], tmp_path: Path
) -> None:
    """`emovit predict FOLDER FILES VIDEO --engine ray` (on the session's Ray): Parquet files
    of the documented schema that pyarrow reads as one table; the video as one task whose
    rows and summary are the local ones; the final line; --resume then has nothing to do and exits 1
    as the run did (the folder holds an error row)."""
    disgust = require_shared(FER2013 / "test" / "disgust")
    clip = _clip(tmp_path / "a clip.mp4")
    out, summary = tmp_path / "results", tmp_path / "summary.json"
    args = ["predict", str(disgust), broken[0], str(clip), "--engine", "ray", "--workers", "2"]
    args += ["--model", str(tiny_model_dir), "--detector", "none", "--output", str(out), "--top-k", "2"]
    result = CliRunner().invoke(main, [*args, "--summary", str(summary)])
    assert result.exit_code == 1, result.output  # the broken input is an error row
    assert "rows/s on 2 workers" in result.stderr

    table = pq.read_table(out)  # the whole folder (_manifest and hidden files are skipped)
    assert table.schema.equals(emovit_ray.result_schema())
    rows = [emovit_ray._from_arrow(row) for row in table.to_pylist()]
    photos = [*sorted(str(p) for p in disgust.glob("*.jpg")), broken[0]]
    assert_same_rows(
        [row for row in rows if row["source"] != str(clip)], local_rows(tiny_model_dir, photos, top_k=2)
    )

    rec = EmotionRecognizer.from_pretrained(tiny_model_dir, faces=NONE, device="cpu")
    run = rec.predict_video(clip)
    want = [row for frame in run for row in result_rows(frame, 2)]
    got = [row for row in rows if row["source"] == str(clip)]
    assert len(got) == len(want) == 12
    _close(sorted(got, key=lambda r: r["frame"]), want)
    _close(json.loads(summary.read_text()), {"videos": [json.loads(json.dumps(run.summary()))]})

    again = CliRunner().invoke(main, [*args, "--resume"])
    # nothing left to do, but the folder's answer is still that one input failed (it said 0)
    assert again.exit_code == 1, again.output
    assert f"{len(photos) + 1} inputs skipped" in again.stderr and "ray: 0 rows" in again.stderr
    assert "with 1 error row)" in again.stderr
    refused = CliRunner().invoke(main, args)
    assert refused.exit_code == 2 and "--resume" in refused.output
    quiet = [*args[:3], *args[4:]]  # the photos and the broken file
    quiet[quiet.index(str(out))] = str(tmp_path / "quiet")
    silent = CliRunner().invoke(main, [*quiet, "-q"])
    assert silent.exit_code == 1 and "INFO" not in silent.stderr, silent.stderr  # Ray Data's lines too


def test_a_folder_another_run_is_writing_is_refused_and_a_dead_runs_lock_taken_over(tmp_path: Path) -> None:
    """Two runs into one folder (a --resume started twice): each began by deleting the part
    files no manifest entry commits, the other run's parts under way among them."""
    import socket
    import subprocess
    import sys

    import pyarrow.fs as pafs

    out = tmp_path / "out"
    (out / "_manifest").mkdir(parents=True)
    lock = out / "_manifest" / "_lock.json"
    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]) as other:
        try:
            lock.write_text(json.dumps({"host": socket.gethostname(), "pid": other.pid, "started": 0}))
            with pytest.raises(OptionError, match="being written by another run"):
                emovit_ray.predict_to_folder([str(tmp_path / "a.png")], str(out), "default", expand=False)
            with pytest.raises(OptionError, match="being written by another run"):  # before Ray starts
                emovit_ray.check_output_folder(str(out), resume=True)
        finally:
            other.kill()
    assert lock.is_file()  # the other run's lock is left alone
    # that run died: its lock is taken over, held while the run goes, and removed at its end
    fs, base = pafs.LocalFileSystem(), str(out)
    with emovit_ray._folder_lock(fs, base, str(out)):
        assert json.loads(lock.read_text())["pid"] == os.getpid()
        second = emovit_ray._folder_lock(fs, base, str(out))  # a second run here
        with pytest.raises(OptionError, match="being written by another run"), second:
            pass
        assert lock.is_file()
    assert not lock.exists()
    # a pid used again by another process (a restarted container's driver is pid 1 again)
    lock.write_text(json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "pid_start": "0"}))
    with emovit_ray._folder_lock(fs, base, str(out)):
        assert json.loads(lock.read_text())["pid_start"] != "0"


def test_quiet_hides_only_the_note_that_token_authentication_is_on() -> None:
    """-q drops Ray's note that token authentication is enabled; its warning that it is
    disabled (anyone on the network may run code) still shows."""
    from emovit.cli._ray import _no_auth_on_note

    def record(message: str) -> logging.LogRecord:
        return logging.LogRecord("ray", logging.WARNING, __file__, 1, message, None, None)

    assert not _no_auth_on_note(record("Token authentication is enabled for this Ray cluster. Set ..."))
    assert _no_auth_on_note(record("Token authentication is disabled for this Ray cluster. Anyone ..."))
