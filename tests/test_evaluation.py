import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("sklearn")

from emovit.evaluation import classification_metrics, evaluate, expected_calibration_error
from emovit.faces import FaceOptions

from .training_data import face_like


def test_metrics_on_a_fixed_prediction_set() -> None:
    labels = ["angry", "happy", "sad"]
    y_true = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2, 2])
    y_pred = np.array([0, 1, 0, 1, 1, 2, 2, 0, 2, 1])
    probs = np.full((10, 3), 0.1)
    probs[np.arange(10), y_pred] = 0.8
    m = classification_metrics(y_true, y_pred, probs, labels)
    assert m["accuracy"] == pytest.approx(0.7)
    # per class: angry P=2/3 R=2/3; happy P=2/4 R=1; sad P=1 R=3/5
    assert m["per_class"]["angry"]["f1"] == pytest.approx(2 / 3)
    assert m["per_class"]["happy"]["f1"] == pytest.approx(2 * 0.5 * 1 / 1.5)
    assert m["per_class"]["sad"]["f1"] == pytest.approx(2 * 1 * 0.6 / 1.6)
    assert m["macro_f1"] == pytest.approx((2 / 3 + 2 / 3 + 0.75) / 3)
    assert m["confusion_matrix"]["rows_true_columns_predicted"] == [[2, 1, 0], [0, 2, 0], [1, 1, 3]]
    assert m["per_class"]["sad"]["support"] == 5
    # every prediction has confidence 0.8 and 70% are right: ECE = |0.8 - 0.7|
    assert m["ece"] == pytest.approx(0.1)


def test_resampled_macro_f1_is_macro_f1_of_each_resample() -> None:
    """Row b of the weights counts each prediction that many times: the score must be
    macro_f1 of the sample repeated so, a class absent from a resample's truth left out."""
    from emovit.evaluation import macro_f1, resampled_macro_f1

    rng = np.random.default_rng(3)
    y_true = rng.integers(0, 4, 40)
    y_pred = np.where(rng.random(40) < 0.6, y_true, rng.integers(0, 5, 40))  # class 4: predicted only
    weights = rng.integers(0, 3, (25, 40)).astype(float)
    weights[0, y_true == 2] = 0  # class 2 absent from this resample's truth
    got = resampled_macro_f1(y_true, y_pred, weights)
    for row, score in zip(weights.astype(int), got, strict=True):
        items = np.repeat(np.arange(40), row)
        assert score == pytest.approx(macro_f1(y_true[items], y_pred[items]))
    assert got.shape == (25,)


def test_ece_perfectly_calibrated_is_zero() -> None:
    confidence = np.array([0.25] * 4 + [0.75] * 4)
    correct = np.array([1, 0, 0, 0, 1, 1, 1, 0], dtype=float)
    assert expected_calibration_error(confidence, correct) == pytest.approx(0.0)


@pytest.fixture
def labelled(tmp_path: Path) -> Path:
    """test/<class> folders named with aliases (anger, happiness) plus a class no model has."""
    rng = np.random.default_rng(0)
    root = tmp_path / "data"
    for ci, name in enumerate(["anger", "happiness", "Sad", "contempt"]):
        for split, count in (("train", 4), ("test", 5)):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                Image.fromarray(face_like(ci, rng)).save(folder / f"{split}{i}.png")
    shutil.copy(root / "train" / "Sad" / "train0.png", root / "test" / "Sad" / "leaked.png")
    return root


def test_evaluate_writes_a_report(tiny_model_dir: Path, labelled: Path, tmp_path: Path) -> None:
    out = tmp_path / "report"
    report = evaluate(
        tiny_model_dir, labelled, out, tta=True, device="cpu", faces=FaceOptions(detector="none")
    )
    m = report.metrics
    assert m["split"] == "test"
    assert m["images_in_split"] == 21
    assert m["images"] == 16  # contempt is not scored...
    assert m["classes_missing_from_model"] == {"contempt": 5}  # ...and is reported
    assert m["per_class"]["angry"]["support"] == 5  # "anger" folder mapped by name
    assert m["per_class"]["sad"]["support"] == 6
    for name in (
        "metrics.json",
        "confusion_matrix.json",
        "confusion_matrix.png",
        "reliability.png",
        "report.md",
    ):
        assert (out / name).stat().st_size > 0, name
    assert json.loads((out / "metrics.json").read_text())["accuracy"] == pytest.approx(report.accuracy)
    assert "macro-F1" in (out / "report.md").read_text()
    rows = (out / "predictions.csv").read_text().splitlines()
    assert len(rows) == 1 + 16


def test_exclude_leaks(tiny_model_dir: Path, labelled: Path) -> None:
    report = evaluate(
        tiny_model_dir,
        labelled,
        exclude_leaks=labelled / "train",
        device="cpu",
        faces=FaceOptions(detector="none"),
    )
    assert report.metrics["leaks_excluded"] == 1
    assert report.metrics["images"] == 15
    # validation drove selection too: its copies are left out as well (several references)
    (labelled / "validation" / "anger").mkdir(parents=True)
    shutil.copy(labelled / "test" / "anger" / "test0.png", labelled / "validation" / "anger" / "v.png")
    both = evaluate(
        tiny_model_dir,
        labelled,
        exclude_leaks=[labelled / "train", labelled / "validation"],
        device="cpu",
        faces=FaceOptions(detector="none"),
    )
    assert (both.metrics["leaks_excluded"], both.metrics["images"]) == (2, 14)
    assert both.metrics["leak_reference"] == f"{labelled / 'train'} + {labelled / 'validation'}"


def test_max_distance_zero_means_exact_copies_only(
    tiny_model_dir: Path, labelled: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--max-distance 0 asked for exact copies and got the default 4 bits (0 read as "not given")."""
    import emovit.data

    asked: list[int] = []
    real = emovit.data.find_leaks

    def spy(*args: Any, max_distance: int, **kwargs: Any) -> Any:
        asked.append(max_distance)
        return real(*args, max_distance=max_distance, **kwargs)

    monkeypatch.setattr(emovit.data, "find_leaks", spy)
    for given in (0, None):
        evaluate(
            tiny_model_dir, labelled, exclude_leaks=labelled / "train", max_distance=given,
            device="cpu", faces=FaceOptions(detector="none"),
        )  # fmt: skip
    assert asked == [0, 4]


def test_cli(tiny_model_dir: Path, labelled: Path, tmp_path: Path) -> None:
    args = [
        "evaluate", str(labelled / "test"), "--model", str(tiny_model_dir), "-o", str(tmp_path / "r"),
        "--detector", "none",
    ]  # fmt: skip
    proc = subprocess.run(
        [sys.executable, "-m", "emovit.cli", *args, "--exclude-leaks", str(labelled / "train"),
         "--exclude-leaks", str(labelled / "train")],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["images"] == 15 and summary["leaks_excluded"] == 1
    assert (tmp_path / "r" / "report.md").is_file()


def test_evaluate_scores_fer_plus_majority_labels(tiny_model_dir: Path, tmp_path: Path) -> None:
    from tests.training_data import write_dataset, write_votes

    root = tmp_path / "tree"
    write_dataset(root, {"train": 3, "validation": 3, "test": 3})
    votes = write_votes(root, tmp_path / "votes.csv")
    faces = FaceOptions(detector="none")
    plain = evaluate(tiny_model_dir, root, split="validation", faces=faces)
    voted = evaluate(tiny_model_dir, root, split="validation", faces=faces, labels=votes)
    # per class: a tie and a contempt majority have no majority label and are left out
    assert voted.metrics["images_without_majority"] == 2 * 4
    assert voted.metrics["images"] == plain.metrics["images"] - 8
    assert voted.metrics["labels"] == str(votes)


def test_a_report_cut_short_leaves_the_previous_one_whole(
    tiny_model_dir: Path, labelled: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A new report is written whole before it replaces the old one: a Ctrl-C or a full disk
    while writing deleted the previous report and left part of the new one (exit 3 on a full
    disk, naming a temporary file); the folder's other files are the user's."""
    import emovit.evaluation
    from emovit.errors import StorageError

    out = labelled.parent / "report"
    faces = FaceOptions(detector="none")
    evaluate(tiny_model_dir, labelled, out, faces=faces)
    (out / "notes.txt").write_text("mine")
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert "report.md" in before and "reliability.png" in before

    def interrupted(*args: object) -> None:
        raise KeyboardInterrupt

    def disk_full(path: Path, *args: object) -> None:
        raise StorageError(f"{path}: cannot be written (No space left on device)")

    monkeypatch.setattr(emovit.evaluation, "_plot_confusion", interrupted)
    with pytest.raises(KeyboardInterrupt):
        evaluate(tiny_model_dir, labelled, out, faces=faces, tta=True)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # nothing half-new, no staging
    monkeypatch.setattr(emovit.evaluation, "_plot_confusion", disk_full)
    said = r"report: the report cannot be written \(No space left on device\); any previous one is kept"
    with pytest.raises(StorageError, match=said):
        evaluate(tiny_model_dir, labelled, out, faces=faces, tta=True)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    monkeypatch.undo()
    evaluate(tiny_model_dir, labelled, out, faces=faces, tta=True)  # then replaced, whole
    assert json.loads((out / "metrics.json").read_text())["tta"] == "flip"
    assert sorted(p.name for p in out.iterdir()) == sorted(before)


def test_a_csvs_bad_rows_are_failure_rows_not_a_failed_run(tiny_model_dir: Path, tmp_path: Path) -> None:
    """A FER2013 CSV with two bad rows among six good ones: six predictions, two rows of
    failures.csv naming each line and why, and the bad rows count as wrong in accuracy_all."""
    rng = np.random.default_rng(1)
    lines = ["emotion,pixels,Usage"]
    for i in range(6):
        lines.append(f"{i % 3},{' '.join(map(str, face_like(i % 3, rng).ravel()))},PrivateTest")
    lines.insert(3, "9,1 2 3 4,PrivateTest")  # line 4: no such emotion id
    lines.insert(6, "0,1 2 3,PrivateTest")  # line 7: not a square image
    data = tmp_path / "fer.csv"
    data.write_text("\n".join(lines) + "\n")
    out = tmp_path / "report"
    report = evaluate(tiny_model_dir, data, out, faces=FaceOptions(detector="none"))
    assert report.metrics["failed"] == {"bad_row": 2}
    assert report.metrics["images_in_split"] == report.metrics["images_evaluated"] == 8
    assert len((out / "predictions.csv").read_text().splitlines()) == 1 + 6
    with (out / "failures.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["image"] for r in rows] == ["fer.csv:4", "fer.csv:7"]
    assert {(r["error_code"], r["error_stage"]) for r in rows} == {("bad_row", "read")}
    assert "emotion 9" in rows[0]["error"] and "not a square image" in rows[1]["error"]
    assert report.metrics["accuracy_all"] == pytest.approx(report.accuracy * 6 / 8)


def test_evaluate_goes_through_the_predictor(tiny_model_dir: Path, labelled: Path) -> None:
    """Broken images are counted, not fatal; TTA is the predictor's; no face at all is a clear error."""
    from emovit.errors import DatasetError
    from emovit.predictor import EmotionRecognizer

    (labelled / "test" / "anger" / "broken.png").write_bytes(b"\x89PNG broken")
    rec = EmotionRecognizer.from_pretrained(tiny_model_dir, detector="none", tta="flip")
    out = labelled.parent / "report"
    out.mkdir()
    (out / "reliability.png").write_bytes(b"a previous run's plot")
    report = evaluate(rec, labelled, out)
    assert report.metrics["failed"] == {"unsupported_format": 1}
    with (out / "failures.csv").open(newline="") as handle:  # the failed image is named
        [row] = list(csv.DictReader(handle))
    assert row["image"].endswith("broken.png") and row["true"] == "angry"
    assert (row["error_code"], row["error_stage"]) == ("unsupported_format", "decode")
    assert "broken.png" in row["error"]
    assert (out / "reliability.png").read_bytes()[:4] == b"\x89PNG"
    assert report.metrics["tta"] == "flip"
    scored = report.metrics["images_evaluated"] - 1  # the broken image is scored as wrong
    assert report.metrics["accuracy_all"] == pytest.approx(report.accuracy * scored / (scored + 1))
    with pytest.raises(DatasetError, match="detector 'none'"):
        evaluate(tiny_model_dir, labelled, faces=FaceOptions(detector="haar"))


def test_what_cannot_be_scored_is_named_for_what_it_is(tiny_model_dir: Path, tmp_path: Path) -> None:
    """Split folders without a test split are not read as classes 'train' and 'validation'; a
    tree of classes the model lacks, or of images that all fail, is said to be that (the
    --detector none hint only where faces were not found); a file name that is not UTF-8 is
    escaped in the CSVs, as predict writes it, not a crash after the model has run."""
    from emovit.errors import DatasetError, OptionError

    rng = np.random.default_rng(2)
    faces = FaceOptions(detector="none")

    def tree(root: Path, files: dict[str, bytes | None]) -> Path:
        for name, data in files.items():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            if data is None:
                Image.fromarray(face_like(0, rng)).save(root / name, format="PNG")
            else:
                (root / name).write_bytes(data)
        return root

    no_test = tree(tmp_path / "no-test", {"train/sad/a.png": None, "validation/sad/b.png": None})
    with pytest.raises(
        DatasetError, match=r"split folders \['train', 'validation'\] but no test split"
    ) as raised:
        evaluate(tiny_model_dir, no_test, faces=faces)
    assert raised.value.option == "split"
    # refused before its report: the report folders it made are gone (empty ones were left)
    with pytest.raises(DatasetError, match="no test split"):
        evaluate(tiny_model_dir, no_test, tmp_path / "new" / "report", faces=faces)
    assert not (tmp_path / "new").exists()
    (tmp_path / "kept").mkdir()  # a folder that was there stays
    with pytest.raises(DatasetError, match="no test split"):
        evaluate(tiny_model_dir, no_test, tmp_path / "kept", faces=faces)
    assert (tmp_path / "kept").is_dir()
    (tmp_path / "a file").write_text("x")
    with pytest.raises(OptionError, match="a file, not a report folder"):
        evaluate(tiny_model_dir, no_test, tmp_path / "a file", faces=faces)
    assert evaluate(tiny_model_dir, no_test, split="validation", faces=faces).metrics["images"] == 1
    other = tree(tmp_path / "other", {"test/contempt/a.png": None})
    with pytest.raises(DatasetError, match="no image of a class the model has .*; found contempt: 1"):
        evaluate(tiny_model_dir, other, faces=faces)
    broken = tree(tmp_path / "broken", {"test/sad/a.png": b"not an image"})
    with pytest.raises(DatasetError, match="none of the 1 images could be scored") as raised:
        evaluate(tiny_model_dir, broken, faces=faces)
    assert "detector 'none'" not in str(raised.value)  # the images failed: no face search to blame
    odd = tmp_path / "odd" / "test" / "sad"
    odd.mkdir(parents=True)
    try:
        (odd / os.fsdecode(b"lat\xe9.png")).write_bytes((tmp_path / "other/test/contempt/a.png").read_bytes())
        (odd / os.fsdecode(b"br\xffoken.png")).write_bytes(b"not an image")
    except (OSError, UnicodeError):
        pytest.skip("this file system refuses names that are not UTF-8")
    out = tmp_path / "report"
    evaluate(tiny_model_dir, odd.parent.parent, out, faces=faces)
    assert "lat\\xe9.png,sad," in (out / "predictions.csv").read_text(encoding="utf-8")
    failures = (out / "failures.csv").read_text(encoding="utf-8")
    assert "br\\xffoken.png,sad,unsupported_format" in failures and (out / "report.md").is_file()
