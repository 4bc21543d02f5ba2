import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from safetensors.numpy import load_file

from emovit import EMOTIONS, EmotionRecognizer
from emovit.data import decode_samples, list_splits, read_samples
from emovit.errors import DatasetError
from emovit.models import Framing, arch_preset, build_random_model, load_model, load_torch_model
from emovit.training import AugmentConfig, TrainConfig, TrainError, train

from .servers import free_port
from .training_data import CLASSES, dataset_fixture, write_dataset, write_votes

pytest.importorskip("accelerate")


dataset = dataset_fixture("data", {"train": 12, "validation": 4, "test": 3})


def _config(dataset: Path, out: Path, **kw: object) -> TrainConfig:
    base = {
        "arch": "vit-test",
        "epochs": 2,
        "batch_size": 8,
        "lr": 3e-3,
        "warmup_epochs": 0.5,
        "eval_batch_size": 16,
        "threads": 1,
        "label_smoothing": 0.0,
    }
    return TrainConfig(data=str(dataset), output=str(out), **{**base, **kw})


def test_csv_and_imagefolder_give_the_same_samples(dataset: Path) -> None:
    assert list_splits(dataset) == ["train", "validation", "test"]
    assert list_splits(dataset.with_suffix(".csv")) == ["train", "validation", "test"]
    for split in ("train", "validation", "test"):
        folder = read_samples(dataset, split)
        table = read_samples(dataset.with_suffix(".csv"), split)
        assert [s.label for s in folder] == [s.label for s in table]
        a = decode_samples(folder, CLASSES)
        b = decode_samples(table, CLASSES)
        np.testing.assert_array_equal(a.images, b.images)
        np.testing.assert_array_equal(a.labels, b.labels)
    single = read_samples(dataset / "train")  # a split folder on its own
    assert len(single) == 12 * len(CLASSES)


def test_dataset_errors(tmp_path: Path, dataset: Path) -> None:
    with pytest.raises(DatasetError, match="no such dataset"):
        read_samples(tmp_path / "nothing")
    with pytest.raises(DatasetError, match="has no 'bogus' split"):
        read_samples(dataset, "bogus")
    flat = tmp_path / "flat"  # photos with no class folder: said so, not only "no labelled images"
    flat.mkdir()
    for image in sorted((dataset / "train" / CLASSES[0]).iterdir())[:3]:
        (flat / image.name).write_bytes(image.read_bytes())
    with pytest.raises(
        DatasetError, match=r"no labelled images found \(3 images lie directly in it: .*<class>/<image>"
    ):
        read_samples(flat)
    bad = tmp_path / "bad.csv"
    for row, says in (
        ("3,1 2 3", "not a square"),
        ("3,1 300 3 4", "outside 0-255"),
        ("-1,1 2 3 4", "not an id 0-6"),  # not Python's last label
        ("7,1 2 3 4", "not an id 0-6"),
        ("happy,1 2 3 4", "bad row"),
        ("3", "bad row"),
    ):
        # a bad row is named and left out; the good rows around it are read
        bad.write_text(f"emotion,pixels,Usage\n3,1 2 3 4,Training\n{row},Training\n0,5 6 7 8,Training\n")
        with pytest.warns(
            UserWarning,
            match=f"1 of 3 rows .* left out: line 3: bad row.*{says if says != 'bad row' else ''}",
        ):
            assert [s.name for s in read_samples(bad)] == ["bad.csv:2", "bad.csv:4"]
        bad.write_text(f"emotion,pixels,Usage\n{row},Training\n")  # nothing left: an error
        with pytest.raises(
            DatasetError,
            match=f"none of its 1 rows could be read \\(line 2: bad row.*{says if says != 'bad row' else ''}",
        ):
            read_samples(bad)
    copy = tmp_path / "copy"  # the fixture is shared: change a copy
    shutil.copytree(dataset, copy)
    unlisted = str(copy / "train" / "happy")
    system = [copy / "train" / name for name in (".Trash-1000", "lost+found")]
    for folder in system:  # a file system's folders: no class, listed or not
        folder.mkdir()
        (folder / "x.png").write_bytes(b"not read")
    real_scandir = os.scandir

    def refuse(path: Any = ".") -> Any:
        if str(path) in {unlisted, *map(str, system)}:
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    labels = {s.label for s in read_samples(copy, "train")}
    with pytest.MonkeyPatch.context() as patch:  # a class folder that cannot be listed
        patch.setattr(os, "scandir", refuse)
        with pytest.raises(DatasetError, match=f"{unlisted}: a dataset folder that cannot be listed"):
            read_samples(copy, "train")
        unlisted = ""  # the system folders alone: no error, no class
        assert {s.label for s in read_samples(copy, "train")} == labels == set(CLASSES)
    bom = tmp_path / "bom.csv"  # a spreadsheet's "CSV UTF-8"
    bom.write_bytes(b"\xef\xbb\xbfemotion,pixels,Usage\n3,1 2 3 4,Training\n")
    assert [s.label for s in read_samples(bom)] == ["happy"] and list_splits(bom) == ["train"]
    photo = tmp_path / "photo.csv"  # not text at all
    photo.write_bytes(b"\xff\xd8\xff\xe0 JFIF \x00\x81")
    for read in (read_samples, list_splits):
        with pytest.raises(DatasetError, match="not a FER2013 CSV"):
            read(photo)


def test_tiny_run_gives_a_loadable_model_that_learned(dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = train(_config(dataset, out, epochs=6, lr=1e-2, augment=AugmentConfig.off()), progress=False)
    assert result.epochs_run == 6
    assert result.best_metrics["val_accuracy"] >= 0.5  # chance is 0.25
    for name in (
        "config.json",
        "model.safetensors",
        "preprocessor_config.json",
        "README.md",
        "training_config.json",
    ):
        assert (out / name).is_file(), name
    history = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in history] == [1, 2, 3, 4, 5, 6]
    assert {"train_loss", "val_accuracy", "val_macro_f1", "lr"} <= set(history[0])
    resolved = json.loads((out / "training_config.json").read_text())
    assert resolved["config"]["seed"] == 0
    assert resolved["resolved"]["classes"] == list(CLASSES)
    card = (out / "README.md").read_text()
    assert "Validation metrics" in card and "must not drive decisions" in card

    trained = EmotionRecognizer.from_pretrained(out, device="cpu", detector="none")
    test_images = sorted((dataset / "test").rglob("*.png"))
    probs = np.array([[r.probs[c] for c in CLASSES] for r in trained.predict(test_images)])
    # The initial weights (same seed, no training) answer differently.
    initial = train(_config(dataset, tmp_path / "init", epochs=1, lr=0.0, min_lr=0.0), progress=False)
    untrained = EmotionRecognizer.from_pretrained(initial.output, device="cpu", detector="none")
    probs0 = np.array([[r.probs[c] for c in CLASSES] for r in untrained.predict(test_images)])
    assert np.abs(probs - probs0).max() > 0.2
    assert trained.labels == CLASSES


def test_resume_equals_an_uninterrupted_run(dataset: Path, tmp_path: Path) -> None:
    whole = train(_config(dataset, tmp_path / "whole", epochs=3), progress=False)
    first = train(_config(dataset, tmp_path / "split", epochs=3, time_limit_min=1e-9), progress=False)
    assert first.epochs_run == 1
    assert "time limit" in first.stopped
    assert not json.loads((first.output / "run_state.json").read_text())["complete"]
    with pytest.raises(TrainError, match="--resume"):
        train(_config(dataset, tmp_path / "split", epochs=3), progress=False)
    # the last epoch ending past the limit finishes the run: nothing is left to resume
    timely = train(_config(dataset, tmp_path / "last", epochs=1, time_limit_min=1e-9), progress=False)
    assert timely.stopped == "epochs"
    assert json.loads((timely.output / "run_state.json").read_text())["complete"]
    with pytest.raises(TrainError, match="has not finished .resume it first"):  # no stage on a paused one
        train(_config(dataset, tmp_path / "next", arch=None, init=str(first.output)), progress=False)
    # one stopped before its first epoch ended has nothing to resume: the message says so
    stopped = tmp_path / "stopped early"
    stopped.mkdir()
    shutil.copy(first.output / "training_config.json", stopped / "training_config.json")
    with pytest.raises(TrainError, match="stopped before its first epoch ended: train it again"):
        train(_config(dataset, tmp_path / "next", arch=None, init=str(stopped)), progress=False)
    # one whose checkpoint folder was removed (copied without it) ran epochs: the message says so
    copied = tmp_path / "copied"
    shutil.copytree(first.output, copied, ignore=shutil.ignore_patterns("checkpoint"))
    with pytest.raises(TrainError, match="stopped after epoch 1 and its checkpoint folder is gone"):
        train(_config(dataset, tmp_path / "next", arch=None, init=str(copied)), progress=False)
    # only the previous checkpoint left (killed between a commit's two renames): --resume takes it up
    shutil.copytree(first.output / "checkpoint", copied / ".checkpoint.old")
    with pytest.raises(TrainError, match="has not finished .resume it first"):
        train(_config(dataset, tmp_path / "next", arch=None, init=str(copied)), progress=False)
    with pytest.raises(TrainError, match="--teacher .* has not finished"):  # nor a paused teacher
        train(_config(dataset, tmp_path / "taught", teacher=str(first.output)), progress=False)
    rest = train(_config(dataset, tmp_path / "split", epochs=3), resume=True, progress=False)
    assert rest.epochs_run == 3
    state = json.loads((rest.output / "run_state.json").read_text())
    assert state["complete"] and state["epochs_run"] == 3
    a = load_file(str(whole.output / "checkpoint" / "model.safetensors"))
    b = load_file(str(rest.output / "checkpoint" / "model.safetensors"))
    # its files are as readable as the run's others (safetensors wrote the weights 0600)
    modes = {
        path.stat().st_mode & 0o777 for path in (rest.output / "checkpoint").rglob("*") if path.is_file()
    }
    assert modes == {(rest.output / "config.json").stat().st_mode & 0o777}
    for key in a:
        np.testing.assert_allclose(a[key], b[key], rtol=0, atol=1e-6, err_msg=key)
    assert [h["val_macro_f1"] for h in whole.history] == pytest.approx(
        [h["val_macro_f1"] for h in rest.history]
    )
    # A finished run resumes as a no-op, even without its optimizer checkpoint.
    shutil.rmtree(tmp_path / "whole" / "checkpoint")
    again = train(_config(dataset, tmp_path / "whole", epochs=3), resume=True, progress=False)
    assert again.epochs_run == 3 and again.best_epoch == whole.best_epoch
    # ... and without --resume a finished run is refused, not trained over
    with pytest.raises(TrainError, match="already holds a training run"):
        train(_config(dataset, tmp_path / "whole", epochs=3), progress=False)


def test_cli_resume_keeps_the_runs_epochs(dataset: Path, tmp_path: Path) -> None:
    """`--resume` without `--epochs` goes on to the run's own last epoch, not the option's
    default (30): a paused 3-epoch run is not stretched, a paused 40-epoch one not cut short."""
    from click.testing import CliRunner

    from emovit.cli import main

    out = tmp_path / "paused"
    args = [
        "train",
        str(dataset),
        "-o",
        str(out),
        "--arch",
        "vit-test",
        "--batch-size",
        "8",
        "--threads",
        "1",
    ]
    first = CliRunner().invoke(main, [*args, "--epochs", "3", "--time-limit", "1e-9"])
    assert first.exit_code == 0, first.output
    assert json.loads(first.output.strip().splitlines()[-1])["epochs_run"] == 1
    rest = CliRunner().invoke(main, [*args, "--resume"])
    assert rest.exit_code == 0, rest.output
    assert "ignored" not in rest.stderr  # the options given are the run's own
    state = json.loads((out / "run_state.json").read_text())
    assert (state["epochs"], state["epochs_run"], state["complete"]) == (3, 3, True)
    # the framing flags answer to predict's names too
    framed = CliRunner().invoke(
        main, ["train", str(dataset), "-o", str(tmp_path / "framed"), "--arch", "vit-test", "-b", "8",
               "--threads", "1", "--epochs", "1", "--margin", "0.05", "--no-align"],
    )  # fmt: skip
    assert framed.exit_code == 0, framed.output
    record = json.loads((tmp_path / "framed" / "emovit.json").read_text())
    assert (record["face_margin"], record["face_align"]) == (0.05, False)
    # options a resume does not apply were taken without a word: they are named now
    other = CliRunner().invoke(main, [*args, "--resume", "--lr", "0.5", "--augment", "robust"])
    assert other.exit_code == 0, other.output
    assert "--resume continues the run as it was started; ignored: --lr (the run has 0.001)" in other.stderr
    assert "--augment (the run has" in other.stderr
    # a finished run continued to more epochs, paused (--time-limit 0: after one epoch), then
    # resumed without --epochs: it goes on to the new target, not the first session's 3
    more = CliRunner().invoke(main, [*args, "--resume", "--epochs", "5", "--time-limit", "0"])
    assert more.exit_code == 0, more.output
    state = json.loads((out / "run_state.json").read_text())
    assert (state["epochs"], state["epochs_run"], state["complete"]) == (5, 4, False)
    # DATA is read as given now (the run's own path may be relative to another folder), and a
    # resume on other data (one more image) is refused, not trained on silently
    import shutil

    other_data = tmp_path / "other data"
    shutil.copytree(dataset, other_data)
    label = sorted((other_data / "train").iterdir())[0]
    shutil.copy(sorted(label.iterdir())[0], label / "one more.png")
    moved = CliRunner().invoke(main, ["train", str(other_data), *args[2:], "--resume"])
    assert moved.exit_code == 2 and "the run in" in moved.output and "resume with the data it" in moved.output
    assert "ignored: DATA" not in moved.stderr
    fewer = CliRunner().invoke(main, [*args, "--resume", "--epochs", "2"])  # 4 trained: nothing to do
    assert fewer.exit_code == 2 and "the run has trained 4 epochs; --epochs 2 is fewer" in fewer.output
    last = CliRunner().invoke(main, [*args, "--resume"])
    assert last.exit_code == 0, last.output
    state = json.loads((out / "run_state.json").read_text())
    assert (state["epochs"], state["epochs_run"], state["complete"]) == (5, 5, True)


def test_a_run_keeps_no_onnx_export_of_other_weights_and_no_other_models_files(
    dataset: Path, tmp_path: Path
) -> None:
    """An ONNX export made of a paused run is removed when the resumed run publishes a new best
    model (it answered as the old weights, and backend auto ran it); a new run is not written
    into a model folder (an export, a copy) nor onto a file."""
    pytest.importorskip("onnxruntime")
    from click.testing import CliRunner

    from emovit.backends.export import export_onnx
    from emovit.cli import main
    from emovit.training.trainer import _publish_best

    out = tmp_path / "run"
    args = ["train", str(dataset), "-o", str(out), "--arch", "vit-test", "-b", "8", "--threads", "1"]
    first = CliRunner().invoke(main, [*args, "--epochs", "1"])
    assert first.exit_code == 0, first.output
    export_onnx(str(out), out, check_images=2)
    staged = tmp_path / "staged"  # a later epoch's best model, as a checkpoint stages it
    staged.mkdir()
    (staged / "model.safetensors").write_bytes((out / "model.safetensors").read_bytes())
    _publish_best(out, staged)
    assert not (out / "model.onnx").exists() and not (out / "export_info.json").exists()
    assert (out / "model.safetensors").is_file()
    exported = tmp_path / "exported"
    export_onnx(str(out), exported, check_images=2)
    into = CliRunner().invoke(main, [*args[:2], "-o", str(exported), *args[4:], "--epochs", "1"])
    assert into.exit_code == 2 and "holds a model (config.json, model.onnx" in into.output
    (tmp_path / "a file").write_text("x")
    onto = CliRunner().invoke(main, [*args[:2], "-o", str(tmp_path / "a file"), *args[4:], "--epochs", "1"])
    assert onto.exit_code == 2 and "a file, not a folder for the run" in onto.output


def test_validation_can_leave_out_copies_of_training_images(dataset: Path, tmp_path: Path) -> None:
    """--val-leak-free: a validation image that is a copy of a training image is not scored
    (FER2013 has 280 such copies; every choice made on validation rewarded remembering them)."""
    import shutil

    from click.testing import CliRunner

    from emovit.cli import main

    data = tmp_path / "data"
    shutil.copytree(dataset, data)
    label = sorted(p.name for p in (data / "train").iterdir())[0]
    copy = sorted((data / "train" / label).iterdir())[0]
    shutil.copy(copy, data / "validation" / label / f"copy{copy.suffix}")

    def validation_images(name: str, *extra: str) -> tuple[int, str]:
        args = ["train", str(data), "-o", str(tmp_path / name), "--arch", "vit-test", "-b", "8",
                "--threads", "1", "--epochs", "1", *extra]  # fmt: skip
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 0, result.output
        resolved = json.loads((tmp_path / name / "training_config.json").read_text())["resolved"]
        return int(resolved["val_images"]), result.stderr

    plain, _ = validation_images("plain")
    leak_free, said = validation_images("leak-free", "--val-leak-free")
    assert plain - leak_free >= 1 and "with a copy in training left out" in said


def test_train_options_that_combine_badly_or_do_nothing_are_handled(dataset: Path, tmp_path: Path) -> None:
    """--logit-adjust already corrects for the class prior: the default balance becomes none (an
    explicit --balance loss is warned about); --mixup works with --no-augment; distillation
    options without a teacher are named as having no effect."""
    from click.testing import CliRunner

    from emovit.cli import main

    def run(name: str, *extra: str) -> tuple[dict, str]:
        args = ["train", str(dataset), "-o", str(tmp_path / name), "--arch", "vit-test", "-b", "8",
                "--threads", "1", "--epochs", "1", *extra]  # fmt: skip
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 0, result.output
        return json.loads((tmp_path / name / "training_config.json").read_text())["config"], result.stderr

    # the library resolves the same default (the CLI passes only a --balance that was given)
    assert TrainConfig(data="d", output="o", logit_adjust=0.5).balance == "none"
    assert TrainConfig(data="d", output="o").balance == "loss"
    assert TrainConfig(data="d", output="o", logit_adjust=0.5, balance="sampler").balance == "sampler"
    robust = ("--augment", "robust", "--augment-set", "blur_p=0.4")
    config, err = run("adjusted", "--logit-adjust", "0.5", *robust)
    assert config["balance"] == "none" and "twice" not in err
    # the run's own card names the flags that reproduce it, the photo degradations among them
    card = (tmp_path / "adjusted" / "README.md").read_text()
    assert "(`--logit-adjust 0.5`)" in card and "(`--augment robust` `--augment-set blur_p=0.4`)" in card
    assert "the degradations of real photos: down-then-up sampling (p 0.3" in card and "blur (p 0.4)" in card
    config, err = run("both", "--logit-adjust", "0.5", "--balance", "loss")
    assert config["balance"] == "loss" and "corrects for the class prior twice" in err
    config, _ = run("plain")
    assert config["balance"] == "loss"
    card = (tmp_path / "plain" / "README.md").read_text()
    assert "(`--augment standard`)" in card and "degradations of real photos" not in card
    assert "logit-adjusted" not in card
    config, err = run("mixed", "--no-augment", "--mixup", "0.4", "--distill-alpha", "0.9")
    assert (config["augment"]["mixup_alpha"], config["augment"]["mix_p"]) == (0.4, 0.5)
    assert "--distill-alpha has no effect without --teacher" in err


def test_a_class_missing_from_a_split_is_warned_about(dataset: Path, tmp_path: Path) -> None:
    """A class with no training image gets an output it never learns, one with no validation
    image is left out of every choice of epoch: both are said, the run goes on."""
    from click.testing import CliRunner

    from emovit.cli import main

    data = tmp_path / "data"
    shutil.copytree(dataset, data)
    gone = sorted((data / "validation").iterdir())[0]
    shutil.rmtree(gone)
    args = ["train", str(data), "-o", str(tmp_path / "run"), "--arch", "vit-test", "-b", "8",
            "--threads", "1", "--epochs", "1"]  # fmt: skip
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert f"warning: no validation image of {gone.name}" in result.stderr
    assert "no training image" not in result.stderr


def test_unknown_presets_and_config_fields_are_usage_errors(dataset: Path, tmp_path: Path) -> None:
    """--arch and --set name the option at fault (exit 2), not an internal error (exit 3); a
    --set key that is not a field of the config (a typo) is refused, not kept unused."""
    from click.testing import CliRunner

    from emovit.cli import main
    from emovit.errors import OptionError
    from emovit.models import arch_preset

    def run(*extra: str) -> tuple[int, str]:
        args = ["train", str(dataset), "-o", str(tmp_path / "x"), "-b", "8", "--threads", "1",
                "--epochs", "1", *extra]  # fmt: skip
        result = CliRunner().invoke(main, args)
        return result.exit_code, result.output

    code, said = run("--arch", "nope")
    assert code == 2 and "'--arch'" in said and "unknown architecture preset 'nope'" in said
    assert "vit-tiny" in said and "internal error" not in said
    code, said = run("--arch", "vit-test", "--set", "hiden_dropout_prob=0.1")
    assert code == 2 and "'--set'" in said and "did you mean hidden_dropout_prob" in said
    code, said = run("--arch", "mobilevit-xxs-64", "--set", "neck_hidden_sizes=[16,16")
    assert code == 2 and "'--set'" in said and "neck_hidden_sizes='[16,16'" in said
    assert "internal error" not in said and not (tmp_path / "x" / "model.safetensors").exists()
    code, said = run("--init", "default", "--set", "hidden_sizes=[64,80")  # a checkpoint's config too
    assert code == 2 and "'--set'" in said and "cannot load the model" not in said
    with pytest.raises(OptionError) as raised:  # the library says the same, for TrainConfig.overrides
        arch_preset("vit-test").build_config(bogus_field=1)
    assert raised.value.option == "overrides"
    assert arch_preset("vit-test").build_config(hidden_dropout_prob=0.25).hidden_dropout_prob == 0.25


def test_resume_checks_the_classes_and_keeps_an_early_stop(dataset: Path, tmp_path: Path) -> None:
    import shutil

    # stopped early after epoch 2 (lr 0: no epoch beats the first), killed before run_state.json
    early = train(
        _config(dataset, tmp_path / "early", epochs=4, lr=0.0, min_lr=0.0, patience=1), progress=False
    )
    assert (early.epochs_run, early.stopped) == (2, "early stopping")
    (early.output / "run_state.json").unlink()
    again = train(_config(dataset, tmp_path / "early", epochs=4), resume=True, progress=False)
    assert (again.epochs_run, again.stopped) == (2, "early stopping")  # no extra epoch trained
    # a class folder renamed between sessions: the saved weights would mean other classes
    data = tmp_path / "data"
    shutil.copytree(dataset, data)
    paused = train(_config(data, tmp_path / "paused", epochs=3, time_limit_min=1e-9), progress=False)
    assert paused.epochs_run == 1
    for split in ("train", "validation", "test"):
        (data / split / "sad").rename(data / split / "neutral")
    with pytest.raises(TrainError, match="started with the classes"):
        train(_config(data, tmp_path / "paused", epochs=3), resume=True, progress=False)


def test_unreadable_training_images_are_left_out_and_named(dataset: Path, tmp_path: Path) -> None:
    samples = read_samples(dataset, "train")
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    from emovit.data import Sample

    bad = Sample(str(broken), samples[1].label, str(broken))
    with pytest.warns(UserWarning, match="1 of 3 images could not be read.*broken.png"):
        decoded = decode_samples([samples[0], bad, samples[1]], CLASSES)
    assert len(decoded) == 2 and decoded.names == [samples[0].name, samples[1].name]
    assert len(decoded.unreadable) == 1 and decoded.unreadable[0].startswith(str(broken))
    with pytest.raises(DatasetError, match="none of the 1 images"):
        decode_samples([bad], CLASSES)
    # a run says so in its card and its config (it said only the counts it used)
    copy = tmp_path / "data"
    shutil.copytree(dataset, copy)
    (copy / "train" / "happy" / "broken.png").write_bytes(b"not a png")
    with pytest.warns(UserWarning, match="could not be read"):
        run = train(_config(copy, tmp_path / "run", epochs=1), progress=False)
    resolved = json.loads((run.output / "training_config.json").read_text())["resolved"]
    assert [Path(name.split(":")[0]).name for name in resolved["unreadable"]["train"]] == ["broken.png"]
    assert resolved["unreadable"]["validation"] == []
    card = (run.output / "README.md").read_text()
    assert "1 train image could not be read and was left out" in card


def test_resume_without_checkpoint_is_an_error(dataset: Path, tmp_path: Path) -> None:
    with pytest.raises(TrainError, match="no checkpoint"):
        train(_config(dataset, tmp_path / "none"), resume=True, progress=False)


def test_bad_options_data_and_outputs_are_named_before_training(dataset: Path, tmp_path: Path) -> None:
    """Each was an internal error, a silent bad run or a model no door loads: a negative
    learning rate (the schedule climbed the loss), a --set value the model cannot be built with,
    one class, a misspelled --val-split (replaced by a hold-out), an -o that cannot be made (said
    after decoding). None leaves a folder behind."""
    from emovit.errors import OptionError

    bad = tmp_path / "new" / "bad"  # a folder this run would make, inside another it would make
    for given, option in [
        ({"lr": -1e-3}, "lr"),
        ({"min_lr": -1.0}, "min_lr"),
        ({"weight_decay": -0.1}, "weight_decay"),
        ({"warmup_epochs": -3.0}, "warmup_epochs"),
        ({"label_smoothing": 1.5}, "label_smoothing"),
    ]:
        with pytest.raises(OptionError) as raised:
            train(_config(dataset, bad, **given), progress=False)
        assert raised.value.option == option, given
    with pytest.raises(OptionError, match=r"cannot be built with --set hidden_size=-5") as raised:
        train(_config(dataset, bad, overrides={"hidden_size": -5}), progress=False)
    assert raised.value.option == "overrides"
    one = tmp_path / "one"
    for split in ("train", "validation"):
        (one / split).mkdir(parents=True)
        (one / split / CLASSES[0]).symlink_to(dataset / split / CLASSES[0])
    with pytest.raises(TrainError, match="one class only .* at least 2") as raised:
        train(_config(one, bad), progress=False)
    assert raised.value.option == "data"
    with pytest.raises(TrainError, match="no 'valdiation' split .*leave --val-split out") as raised:
        train(_config(dataset, bad, val_split="valdiation"), progress=False)
    assert raised.value.option == "val_split"
    assert not (tmp_path / "new").exists()  # every folder it made, taken away again
    (tmp_path / "a file").write_text("")
    with pytest.raises(TrainError, match="the run's folder cannot be created") as raised:
        train(_config(dataset, tmp_path / "a file" / "run"), progress=False)
    assert raised.value.option == "output"


def test_a_damaged_checkpoint_is_named_on_resume(dataset: Path, tmp_path: Path) -> None:
    """A truncated weights file or a broken state.json (a full disk, an edit) was an internal
    error (SafetensorError, JSONDecodeError) naming no file."""
    out = tmp_path / "run"
    train(_config(dataset, out, epochs=3, time_limit_min=1e-9), progress=False)  # paused after 1
    weights = out / "checkpoint" / "model.safetensors"
    whole = weights.read_bytes()
    weights.write_bytes(whole[:1000])
    with pytest.raises(TrainError, match=r"checkpoint/model\.safetensors: missing or damaged .*restore it"):
        train(_config(dataset, out, epochs=3), resume=True, progress=False)
    weights.write_bytes(whole)
    (out / "checkpoint" / "state.json").write_text("{not json")
    with pytest.raises(TrainError, match=r"checkpoint/state\.json: missing or damaged"):
        train(_config(dataset, out, epochs=3), resume=True, progress=False)


def test_a_new_best_published_mid_session_takes_the_earlier_card_away(tmp_path: Path) -> None:
    """A resumed run stopped by Ctrl-C after a new best epoch kept the earlier session's card
    (best epoch 1) beside the new weights (best epoch 2); the session's end writes the card."""
    from emovit.training.trainer import _publish_best

    out, staged = tmp_path / "run", tmp_path / "staged"
    out.mkdir()
    staged.mkdir()
    (out / "README.md").write_text("best epoch 1")
    (out / "model.safetensors").write_bytes(b"epoch 1")
    (staged / "model.safetensors").write_bytes(b"epoch 2")
    _publish_best(out, staged)
    assert (out / "model.safetensors").read_bytes() == b"epoch 2" and not (out / "README.md").exists()


def test_batch_size_must_fit(dataset: Path, tmp_path: Path) -> None:
    with pytest.raises(TrainError, match="must divide"):
        train(_config(dataset, tmp_path / "x", batch_size=9, grad_accum=2), progress=False)


def test_a_batch_larger_than_the_data_is_lowered_with_a_warning(dataset: Path, tmp_path: Path) -> None:
    images = 12 * len(CLASSES)  # the training split
    with pytest.warns(UserWarning, match=f"--batch-size 100 exceeds the {images} training images"):
        result = train(
            _config(dataset, tmp_path / "big", epochs=1, batch_size=100, grad_accum=5), progress=False
        )
    assert result.epochs_run == 1
    saved = json.loads((tmp_path / "big" / "training_config.json").read_text())["config"]
    assert saved["batch_size"] == 45  # the largest multiple of the 5 accumulation steps <= 48


def test_a_trained_folder_records_its_framing(dataset: Path, tmp_path: Path) -> None:
    """From scratch the record says what was given (defaults for the rest); from --init the
    init model's record is inherited unless overridden."""
    scratch = train(
        _config(dataset, tmp_path / "scratch", epochs=1, face_margin=0.05, grey=True), progress=False
    )
    recorded = json.loads((scratch.output / "emovit.json").read_text())
    assert recorded == {"face_margin": 0.05, "face_align": True, "grey": True}
    assert load_model(scratch.output, device="cpu").framing == Framing(0.05, True, True)
    assert load_model(scratch.output, device="cpu").recorded_framing is not None
    again = train(
        _config(dataset, tmp_path / "again", epochs=1, arch=None, init=str(scratch.output), face_align=False),
        progress=False,
    )
    assert load_model(again.output, device="cpu").framing == Framing(0.05, False, True)
    assert "face margin 0.05" in (again.output / "README.md").read_text()


def test_notes_on_the_framing_follow_it_while_it_is_kept(dataset: Path, tmp_path: Path) -> None:
    """How a framing was chosen (``chosen_by``) stays with the model while later stages keep the
    framing, even when they restate it; a stage that changes the framing drops the note."""
    first = train(_config(dataset, tmp_path / "first", epochs=1, face_margin=0.05, grey=True), progress=False)
    record = json.loads((first.output / "emovit.json").read_text())
    (first.output / "emovit.json").write_text(json.dumps({**record, "chosen_by": "a measurement"}))
    kept = train(
        _config(dataset, tmp_path / "kept", epochs=1, arch=None, init=str(first.output), face_margin=0.05),
        progress=False,
    )
    assert json.loads((kept.output / "emovit.json").read_text())["chosen_by"] == "a measurement"
    changed = train(
        _config(dataset, tmp_path / "changed", epochs=1, arch=None, init=str(kept.output), grey=False),
        progress=False,
    )
    assert json.loads((changed.output / "emovit.json").read_text()) == {
        "face_margin": 0.05,
        "face_align": True,
        "grey": False,
    }


def test_grad_accumulation_matches_one_big_batch(dataset: Path, tmp_path: Path) -> None:
    one = train(_config(dataset, tmp_path / "one", epochs=1), progress=False)
    acc = train(_config(dataset, tmp_path / "acc", epochs=1, grad_accum=4), progress=False)
    a = load_file(str(one.output / "checkpoint" / "model.safetensors"))
    b = load_file(str(acc.output / "checkpoint" / "model.safetensors"))
    for key in a:
        if key.endswith("k_proj.bias"):
            # no gradient reaches the key bias (softmax ignores a shift): Adam turns the rounding
            # noise of its zero gradient into steps, whichever way the batch is summed
            continue
        np.testing.assert_allclose(a[key], b[key], rtol=0, atol=1e-5, err_msg=key)


def _cli_train(dataset: Path, out: Path, nproc: int) -> subprocess.CompletedProcess:
    args = ["train", str(dataset), "-o", str(out), "--arch", "vit-test", "--epochs", "2"]
    args += ["--batch-size", "8", "--lr", "3e-3", "--warmup-epochs", "0.5", "--threads", "1"]
    if nproc == 1:
        cmd = [sys.executable, "-m", "emovit.cli", *args]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc)]
        cmd += ["--master_port", str(free_port()), "-m", "emovit.cli", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600, check=False)


@pytest.mark.slow
def test_two_processes_equal_one(dataset: Path, tmp_path: Path) -> None:
    """torchrun with 2 CPU processes (gloo): sharded data, one set of checkpoints, and the
    same weights as the 1-process run with the same global batch."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(2) as pool:  # side by side: each spends seconds starting up
        runs = [
            pool.submit(_cli_train, dataset, tmp_path / name, n) for name, n in (("single", 1), ("double", 2))
        ]
        single, double = (run.result() for run in runs)
    assert single.returncode == 0, single.stderr[-3000:]
    assert double.returncode == 0, double.stderr[-3000:]
    assert "2 process(es), micro-batch 4" in double.stderr
    lines = (tmp_path / "double" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 2  # written once, not once per process
    assert sorted(p.name for p in (tmp_path / "double").iterdir() if p.name.startswith(".")) == []
    a = load_file(str(tmp_path / "single" / "checkpoint" / "model.safetensors"))
    b = load_file(str(tmp_path / "double" / "checkpoint" / "model.safetensors"))
    for key in a:
        # an attention key's bias shifts every score of a query alike: softmax cancels it, so its
        # gradient is rounding noise (it differs with the CPU's vector width), which Adam scales
        # up to steps of lr size; the weights that learn are compared
        if key.endswith("k_proj.bias"):
            continue
        np.testing.assert_allclose(a[key], b[key], rtol=0, atol=2e-5, err_msg=key)
    summary = json.loads(double.stdout.strip().splitlines()[-1])
    assert summary["epochs_run"] == 2


def test_the_test_split_never_stands_in_for_training_or_selection(dataset: Path, tmp_path: Path) -> None:
    """A split folder given as DATA used to answer for any split asked of it: the test folder
    served as validation (early stopping, tau, soups) without a word. And --val-split test was
    taken as asked, --val-split val ignored (10 % of train held out instead)."""
    from emovit.data import read_samples
    from emovit.errors import DatasetError

    with pytest.raises(DatasetError, match="is the 'test' split, not the 'validation' one"):
        read_samples(dataset / "test", "validation")
    assert len(read_samples(dataset / "test", "test")) == len(read_samples(dataset, "test"))
    assert read_samples(dataset, "val") == read_samples(dataset, "validation")
    for split in ({"val_split": "test"}, {"train_split": "PrivateTest"}):
        with pytest.raises(TrainError, match="the test split is only for the final figures"):
            train(_config(dataset, tmp_path / "never", epochs=1, **split), progress=False)


def test_a_finished_run_continued_is_not_complete_while_it_trains(
    dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--resume --epochs N+k on a finished run: a crash during the new epochs left
    run_state.json saying "complete" (soups, teachers and releases took the run as done)."""
    from emovit.training import trainer

    train(_config(dataset, tmp_path / "run", epochs=1), progress=False)
    record = tmp_path / "run" / "run_state.json"
    assert json.loads(record.read_text())["complete"] is True
    write = trainer.write_text_atomic

    def crash_at_epoch_end(path: Any, text: str) -> None:
        if Path(path).name == "metrics.jsonl":
            raise KeyboardInterrupt
        write(path, text)

    monkeypatch.setattr(trainer, "write_text_atomic", crash_at_epoch_end)
    with pytest.raises(KeyboardInterrupt):
        train(_config(dataset, tmp_path / "run", epochs=2), resume=True, progress=False)
    state = json.loads(record.read_text())
    assert (state["complete"], state["epochs"]) == (False, 2)
    assert trainer.unfinished_run(tmp_path / "run")


def test_a_soup_is_released_with_the_stages_of_its_ingredients(
    dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A weight average of two runs continued from one model: the release takes it like a run
    and the card tells the shared stages, each ingredient's own stage and the average."""
    from emovit.training.release import release_model
    from emovit.training.soup import make_soup

    first = train(_config(dataset, tmp_path / "first", epochs=1), progress=False)
    kw = {"epochs": 1, "arch": None, "init": str(first.output)}
    a = train(_config(dataset, tmp_path / "a", seed=1, **kw), progress=False)
    # b learns from a teacher that learned from another: both took time that went into the soup
    t0 = train(_config(dataset, tmp_path / "t0", epochs=1, seed=3), progress=False)
    t1 = train(_config(dataset, tmp_path / "t1", epochs=1, seed=4, teacher=str(t0.output)), progress=False)
    b = train(
        _config(
            dataset, tmp_path / "b", seed=2, augment=AugmentConfig.robust(), teacher=str(t1.output), **kw
        ),
        progress=False,
    )
    soup = make_soup([a.output, b.output], tmp_path / "soup")
    with pytest.raises(TrainError, match="continued from the same model"):  # t1 started from scratch
        make_soup([a.output, t1.output], tmp_path / "mixed")
    dest = tmp_path / "released"
    metrics = release_model(soup, dest, dataset)
    assert metrics["plain"]["images"] == 3 * len(CLASSES)
    assert (dest / "soup.json").is_file() and (dest / "model.safetensors").read_bytes() == (
        soup / "model.safetensors"
    ).read_bytes()
    card = (dest / "README.md").read_text()
    assert "1. Stage 1: `first`, from scratch" in card
    assert "2. Stage 2: `a`, continued from `first`" in card
    assert "3. Stage 2b, beside stage 2: `b`, continued from `first`" in card and "--augment robust" in card
    assert "4. The released weights: the uniform average of `a`, `b` (a model soup" in card
    assert "BatchNorm statistics averaged too" in card
    assert "stage 2b " in card  # its wall time counts
    assert "teacher runs (t0, t1) " in card  # and so does the time of b's teacher and of its teacher
    assert metrics["plain"]["model"] == str(dest)  # scored in a staging folder, named as released
    # a release that stops half-way (here: writing the card) leaves the previous one whole
    before = {p.name: p.read_bytes() for p in dest.iterdir()}

    def stop(*args: Any, **kwargs: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr("emovit.training.release.refresh_card", stop)
    with pytest.raises(KeyboardInterrupt):
        release_model(a.output, dest, dataset)
    assert {p.name: p.read_bytes() for p in dest.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".released")) == []
    # the swap would delete what a release does not write, or an input kept inside the folder
    (dest / "notes.txt").write_text("mine")
    with pytest.raises(TrainError, match=r"holds notes.txt, which a release does not write"):
        release_model(a.output, dest, dataset)
    (dest / "notes.txt").unlink()
    with pytest.raises(TrainError, match=r"run .* is inside the release folder"):
        release_model(dest, dest, dataset)
    assert {p.name: p.read_bytes() for p in dest.iterdir()} == before


def test_distillation_alone_teaches_the_student(dataset: Path, tmp_path: Path) -> None:
    """With alpha=1 the labels are ignored: whatever the student learns comes from the teacher."""
    teacher = train(
        _config(dataset, tmp_path / "teacher", epochs=6, lr=1e-2, augment=AugmentConfig.off()), progress=False
    )
    assert teacher.best_metrics["val_accuracy"] >= 0.5
    kw = {"epochs": 6, "lr": 1e-2, "augment": AugmentConfig.off(), "seed": 1}
    student = train(
        _config(dataset, tmp_path / "student", teacher=str(teacher.output), distill_alpha=1.0, **kw),
        progress=False,
    )
    assert student.best_metrics["val_accuracy"] >= 0.5
    resolved = json.loads((student.output / "training_config.json").read_text())
    assert resolved["config"]["teacher"] == str(teacher.output)


def test_release_packages_a_model_with_card_and_metrics(
    dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from emovit.evaluation import evaluate
    from emovit.faces import FaceOptions
    from emovit.training.release import release_model

    teacher = train(_config(dataset, tmp_path / "teacher", epochs=1), progress=False)
    student = train(
        _config(dataset, tmp_path / "student", epochs=2, teacher=str(teacher.output)), progress=False
    )
    # a second stage continues the student (--init): the card tells both stages and sums their time
    stage2 = train(
        _config(dataset, tmp_path / "stage2", epochs=1, arch=None, init=str(student.output)), progress=False
    )
    dest = tmp_path / "default"
    votes = write_votes(dataset, tmp_path / "votes.csv")
    from emovit.training import adjust

    tune = adjust.tune_prior_adjustment

    def strong(*args: Any, **kwargs: Any) -> adjust.PriorAdjustment:
        found = tune(*args, **kwargs, resamples=50)
        skewed = {c: (i + 1) / 10 for i, c in enumerate(CLASSES)}
        return adjust.PriorAdjustment(1.0, skewed, found.table, found.rule, found.resamples)

    monkeypatch.setattr(adjust, "tune_prior_adjustment", strong)
    robustness = tmp_path / "robustness"
    robustness.mkdir()
    (robustness / "robustness.md").write_text(
        "| condition | before | after |\n|---|---|---|\n| blur | 0.1 | 0.2 |\n"
    )
    metrics = release_model(
        stage2.output,
        dest,
        dataset,
        compare=[teacher.output],
        onnx=True,
        labels=votes,
        robustness=robustness,
        adjust_prior=True,
        tau_rule="resampled",  # the default, `none`, would keep tau 0 whatever the table says
    )
    assert sorted(p.name for p in dest.iterdir()) == [
        "README.md",
        "config.json",
        "confusion_matrix.png",
        "confusion_matrix_ferplus.png",
        "emovit.json",
        "export_info.json",
        "metrics.json",
        "model.onnx",
        "model.safetensors",
        "preprocessor_config.json",
    ]
    assert metrics["plain"]["images"] == 3 * len(CLASSES)
    assert metrics["leak_free"]["leaks_excluded"] == 0
    assert {"ferplus_plain", "ferplus_tta", "ferplus_leak_free"} <= metrics.keys()
    assert 0 < metrics["ferplus_plain"]["images"] <= metrics["plain"]["images"]  # ties etc. left out
    card = (dest / "README.md").read_text()
    for section in ("## Data and splits", "## Architecture", "leak-free", "## Intended use", "wall time"):
        assert section in card
    # both label sets, the vote rule and the robustness table
    assert "## Metrics on FER+ test" in card and "## Metrics on FER2013 test" in card
    # scored on the votes, but trained on the folder labels: the card says so
    assert "votes.csv" in card and "The last stage learns from FER+" not in card
    assert "## Robustness" in card and "| blur | 0.1 | 0.2 |" in card
    # the logit adjustment was chosen on validation; the figures are the released folder's
    # the logit adjustment (forced strong here) is in the released weights, and every figure
    # is the released folder's, not the run's
    assert metrics["prior_adjustment"]["tau"] == 1.0 and "Post-hoc logit adjustment" in card
    # picked by the rule asked for, the bootstrap-averaged macro-F1, and the card says so
    assert metrics["prior_adjustment"]["rule"] == "resampled"
    assert metrics["prior_adjustment"]["resamples"] == 50
    assert "mean macro-F1 over 50 bootstrap resamples" in card
    assert "logits - 1 * log(prior)" in card
    cropped = FaceOptions(detector="none")
    released = evaluate(dest, dataset, split="test", faces=cropped)
    assert released.metrics["log_loss"] == pytest.approx(metrics["plain"]["log_loss"])
    as_trained = evaluate(stage2.output, dataset, split="test", faces=cropped)
    assert abs(as_trained.metrics["log_loss"] - metrics["plain"]["log_loss"]) > 1e-3
    # the card can be rewritten from metrics.json alone (after a robustness report)
    from emovit.training.release import refresh_card

    (robustness / "robustness.md").write_text("| condition | after |\n|---|---|\n| jpeg | 0.3 |\n")
    refresh_card(stage2.output, dest, labels=votes, robustness=robustness)
    assert "| jpeg | 0.3 |" in (dest / "README.md").read_text()
    # a stage trained on a GPU is timed apart from the CPU's hours, and marked in the recipe
    from emovit.training import card as card_module

    def gpu_stage2(training: dict[str, Any]) -> bool:
        return training.get("config", {}).get("init") == str(student.output)

    with monkeypatch.context() as patch:
        patch.setattr(card_module, "on_gpu", gpu_stage2)
        refresh_card(stage2.output, dest, labels=votes, robustness=robustness)
    gpu_card = (dest / "README.md").read_text()
    assert "h on a GPU)." in gpu_card.split("Stage 2: `stage2`")[1].split("\n")[0]
    cpu_line = next(line for line in gpu_card.splitlines() if line.startswith("Training wall time"))
    assert "stage 1 " in cpu_line and "stage 2 " not in cpu_line.split(" On a GPU")[0]
    assert (
        " On a GPU (an NVIDIA H200 lent for minutes, `scripts/gpu_round.py`): stage 2 0 min = 0 min."
        in cpu_line
    )
    assert "on 2 CPU cores (the runs the recipe marks on a GPU lent for minutes)" in gpu_card
    # the comparison table names both runs, with the accuracy each reached in equal time
    assert (
        "Stage 1: `student`, from scratch" in card and "Stage 2: `stage2`, continued from `student`" in card
    )
    assert "teacher `teacher`" in card and "stage 1 " in card and "stage 2 " in card
    assert "Runs compared" in card and "`teacher`" in card and "`stage2`" in card
    assert "val accuracy within" in card
    assert "emovit_random_weights" not in (dest / "config.json").read_text()
    from transformers import AutoModelForImageClassification

    assert AutoModelForImageClassification.from_pretrained(dest).config.num_labels == len(CLASSES)
    # both formats answer alike; `auto` takes onnxruntime when it is installed, torch otherwise
    from emovit import EmotionRecognizer
    from emovit.backends import OnnxBackend, TorchBackend

    faces = sorted(str(f) for f in (dataset / "test").rglob("*.png"))[:6]
    auto = EmotionRecognizer.from_pretrained(dest, detector="none")
    assert isinstance(auto.backend, OnnxBackend)
    torch_rec = EmotionRecognizer.from_pretrained(dest, detector="none", backend="torch")
    assert isinstance(torch_rec.backend, TorchBackend)
    for a, b in zip(auto.predict(faces), torch_rec.predict(faces), strict=True):
        assert a.faces[0].label == b.faces[0].label
        assert max(abs(a.faces[0].probs[k] - b.faces[0].probs[k]) for k in a.faces[0].probs) < 1e-4
    monkeypatch.setattr("emovit.predictor._onnxruntime_installed", lambda: False)
    assert isinstance(EmotionRecognizer.from_pretrained(dest, detector="none").backend, TorchBackend)


def test_architecture_rows_describe_each_family() -> None:
    from emovit.training.card import architecture_rows

    for name, expected in (
        ("vit-student-48", {"patch_size": 6, "hidden_size": 160, "num_hidden_layers": 6}),
        ("vit-student-64", {"patch_size": 8, "image_size": 64, "hidden_size": 160}),
        ("mobilevit-xxs-64", {"hidden_sizes": [64, 80, 96], "image_size": 64}),
        ("resnet-teacher-64", {"depths": [2, 2, 2, 2], "layer_type": "basic"}),
    ):
        rows = dict(architecture_rows(arch_preset(name).build_config().to_dict()))
        assert rows["model_type"] == name.split("-")[0]
        for key, value in expected.items():
            assert rows[key] == value, (name, key)


def test_from_scratch_models_start_with_identity_norms_and_a_live_signal() -> None:
    """transformers 5 initialises MobileViT's BatchNorm scales near 0: its output is then a
    constant and it never learns. `build_model` starts every norm layer as the identity."""
    import torch

    torch.manual_seed(0)
    model = arch_preset("mobilevit-xxs-64").build_model().train()
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert norms and all(bool((m.weight == 1).all()) for m in norms)
    x = torch.rand(8, 3, 64, 64)
    logits = model(pixel_values=x).logits
    # different faces give different outputs (a silenced network answers the same for all)
    assert float(logits.detach().std(dim=0).mean()) > 1e-2
    # and a few optimizer steps on one batch reduce its loss
    labels = torch.arange(8) % 7
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    first = None
    for _ in range(15):
        loss = torch.nn.functional.cross_entropy(model(pixel_values=x).logits, labels)
        first = loss.item() if first is None else first
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.7 * first


def test_a_widened_init_keeps_its_norms_and_starts_the_new_ones_as_identities(tmp_path: Path) -> None:
    """``--init RUN --set hidden_sizes=…`` draws the layers whose shape changed afresh; their
    norms must start as identities like a model built from scratch (transformers' N(0, 0.02)
    BatchNorm scales silence the new stage), while the layers the checkpoint still fits keep
    its trained values."""
    import torch
    from transformers import MobileViTModel

    torch.manual_seed(0)
    base = arch_preset("mobilevit-xxs-64").build_model()
    with torch.no_grad():  # "trained" norms: not identities, so a reset would show
        for module in base.modules():
            if isinstance(module, (torch.nn.BatchNorm2d, torch.nn.LayerNorm)):
                module.weight.uniform_(0.5, 1.5)
    base.save_pretrained(tmp_path / "run")
    before = dict(base.named_modules())

    def norms(model: torch.nn.Module) -> dict[str, torch.nn.Module]:
        kinds = (torch.nn.BatchNorm2d, torch.nn.LayerNorm)
        return {name: m for name, m in model.named_modules() if isinstance(m, kinds)}

    wide = {"neck_hidden_sizes": [16, 16, 24, 48, 64, 128, 512], "hidden_sizes": [64, 80, 192]}
    model = load_torch_model(tmp_path / "run", ignore_mismatched_sizes=True, config_overrides=wide).model
    widened = {n for n, m in norms(model).items() if m.weight.shape != before[n].weight.shape}
    assert (
        "mobilevit.encoder.layer.4.conv_kxk.normalization" in widened
        and "mobilevit.conv_1x1_exp.normalization" in widened
    )
    assert not any(name.startswith("mobilevit.encoder.layer.3.") for name in widened)
    for name, module in norms(model).items():
        expected = torch.ones_like(module.weight) if name in widened else before[name].weight
        torch.testing.assert_close(module.weight, expected, msg=name)
    logits = model.train()(pixel_values=torch.rand(8, 3, 64, 64)).logits
    assert float(logits.detach().std(dim=0).mean()) > 1e-3  # a live signal through the new stage
    # the same checkpoint loaded as it is: nothing reset
    same = load_torch_model(tmp_path / "run", ignore_mismatched_sizes=True).model
    torch.testing.assert_close(same.state_dict(), base.state_dict())
    # a base-model checkpoint (no "mobilevit." prefix, no head), as Hub backbones are saved:
    # transformers maps its keys; only the new head is drawn afresh, every norm keeps its value
    backbone = MobileViTModel(base.config)
    backbone.load_state_dict(base.mobilevit.state_dict())
    backbone.save_pretrained(tmp_path / "backbone")
    headed = load_torch_model(tmp_path / "backbone", ignore_mismatched_sizes=True).model
    for name, module in norms(headed).items():
        torch.testing.assert_close(module.weight, before[name].weight, msg=name)


def test_the_card_names_the_config_changes_of_a_stage() -> None:
    """A stage that widened its ``--init`` model (``--set``) says so, with the options to paste."""
    from emovit.training.card import _recipe

    cfg = {
        "init": "runs/x/distilled",
        "overrides": {"hidden_sizes": [64, 80, 192]},
        "lr": 4e-4,
        "weight_decay": 0.05,
        "warmup_epochs": 1,
        "batch_size": 128,
        "label_smoothing": 0.05,
        "seed": 7,
    }
    state = {"epoch": 12, "best_epoch": 11, "elapsed_s": 3600}
    widened = _recipe(Path("runs/x/wide"), {"config": cfg}, state)
    assert "continued from `distilled` (`--init`) `--set 'hidden_sizes=[64,80,192]'`" in widened
    assert "the layers whose shape changed start afresh" in widened
    plain = _recipe(Path("runs/x/wide"), {"config": {**cfg, "overrides": {}}}, state)
    assert "--set" not in plain and "afresh" not in plain
    assert "mixup" not in plain and "cutmix" not in plain
    # mixing is named with its flag and share of batches (the card reproduces the run)
    mixed = {**cfg, "augment": {"mixup_alpha": 1.0, "cutmix_alpha": 0.0, "mix_p": 0.5}}
    mixed_words = _recipe(Path("runs/x/m"), {"config": mixed}, state)
    assert ", mixup (alpha 1.0, `--mixup 1.0`) on a share 0.5 of the batches, seed 7" in mixed_words
    assert "cutmix" not in mixed_words
    both = {**cfg, "augment": {"mixup_alpha": 0.2, "cutmix_alpha": 1.0, "mix_p": 1.0}}
    assert "mixup (alpha 0.2, `--mixup 0.2`) or cutmix (alpha 1.0, `--cutmix 1.0`) on a share 1.0" in _recipe(
        Path("runs/x/m"), {"config": both}, state
    )
    scratch = _recipe(Path("runs/x/s"), {"config": {**cfg, "init": None, "arch": "mobilevit-xxs-64"}}, state)
    assert "from scratch (`--arch mobilevit-xxs-64` `--set 'hidden_sizes=[64,80,192]'`)" in scratch
    # the comparison table gives both sizes of a run that was widened on the way
    from emovit.training.card import _parameter_words

    assert _parameter_words({"parameters": 1_970_000, "first_parameters": 950_000}) == "0.95 M, then 1.97 M"
    assert _parameter_words({"parameters": 1_970_000, "first_parameters": 1_970_000}) == "1.97 M"


def test_the_card_reads_a_finished_runs_state_without_its_checkpoint(tmp_path: Path) -> None:
    from emovit.training.card import run_state

    assert run_state(tmp_path) == {}
    state = {"epochs": 3, "epochs_run": 3, "best_epoch": 2, "complete": True, "wall_time_s": 12.5}
    (tmp_path / "run_state.json").write_text(json.dumps(state))
    assert run_state(tmp_path) == {"epoch": 3, "best_epoch": 2, "elapsed_s": 12.5}
    (tmp_path / "checkpoint").mkdir()
    (tmp_path / "checkpoint" / "state.json").write_text(json.dumps({"epoch": 3, "elapsed_s": 13.0}))
    assert run_state(tmp_path)["elapsed_s"] == 13.0


def test_the_card_counts_the_runs_only_the_candidates_not_taken_used(tmp_path: Path) -> None:
    """A candidate's own teacher (trained by `make train-default` for it alone) was left out of
    the card's wall time; the released model's runs are not counted twice."""
    from emovit.training.card import untaken_cost

    def run(name: str, seconds: float, init: Path | None = None, teacher: tuple[Path, ...] = ()) -> Path:
        folder = tmp_path / name
        folder.mkdir()
        config = {"init": str(init) if init else None, "teacher": [str(t) for t in teacher] or None}
        (folder / "training_config.json").write_text(json.dumps({"config": config}))
        (folder / "run_state.json").write_text(
            json.dumps({"epochs_run": 1, "best_epoch": 1, "wall_time_s": seconds, "complete": True})
        )
        (folder / "metrics.jsonl").write_text("{}\n")
        return folder

    shared_teacher, own_teacher = run("teacher", 100), run("teacher-wide", 40)
    released = run("wide", 1000, teacher=[shared_teacher])
    candidate = run("wide-more", 7, init=released, teacher=[shared_teacher, own_teacher])
    not_taken, helpers, seconds = untaken_cost([released, candidate], {released, shared_teacher})
    assert (not_taken, helpers, seconds) == ([candidate], ["teacher-wide"], 47.0)


def test_the_card_follows_a_best_epoch_folder_to_its_run_record_and_marks_gpu_runs(tmp_path: Path) -> None:
    """A run stopped before its schedule ended (a GPU lent for minutes) is refused as --init; its
    best epoch copied into a model folder, with the run's record in ``run-record/``, is not. The
    card follows such a folder to the stages before it, reads its time there, and tells a GPU's
    time from the CPU's."""
    from emovit.training.card import _cpu_epoch_seconds, _recipe, record_folder, run_stages, run_state

    def run(folder: Path, init: Path | None, device: str, seconds: float, complete: bool = True) -> Path:
        folder.mkdir(parents=True)
        config = {"init": str(init) if init else None, "arch": "mobilevit-xxs-64", "lr": 1e-4,
                  "weight_decay": 0.05, "warmup_epochs": 1, "batch_size": 128, "label_smoothing": 0.05,
                  "seed": 1}  # fmt: skip
        (folder / "training_config.json").write_text(
            json.dumps({"config": config, "resolved": {"device": device}})
        )
        state = {"epochs_run": 2, "best_epoch": 2, "wall_time_s": seconds, "complete": complete}
        (folder / "run_state.json").write_text(json.dumps(state))
        (folder / "metrics.jsonl").write_text(json.dumps({"epoch_time_s": seconds / 2}) + "\n")
        return folder

    first = run(tmp_path / "first", None, "cpu", 7200)
    gpu = tmp_path / "gpu-best"
    run(gpu / "run-record", first, "cuda", 360, complete=False)  # the record beside the weights
    last = run(tmp_path / "last", gpu, "cpu", 3600)
    assert record_folder(gpu) == gpu / "run-record" and record_folder(last) == last
    assert [stage for stage, _ in run_stages(last)] == [first, gpu, last]
    assert run_state(gpu) == {"epoch": 2, "best_epoch": 2, "elapsed_s": 360}
    stages = dict(run_stages(last))
    assert _recipe(gpu, stages[gpu], run_state(gpu)).endswith("(0.1 h on a GPU).")
    assert _recipe(last, stages[last], run_state(last)).endswith("(1.0 h).")
    # the CPU's seconds an epoch leave the GPU's epochs out
    assert _cpu_epoch_seconds([{"epoch_time_s": 400.0}, {"epoch_time_s": 16.0, "gpu": True}]) == "400"
    assert _cpu_epoch_seconds([{"epoch_time_s": 16.0, "gpu": True}]) == "-"


def test_the_build_script_leaves_an_unfinished_run_alone(tmp_path: Path) -> None:
    script = Path(__file__).resolve().parents[1] / "scripts" / "build_default_model.py"
    state = {"epochs": 3, "epochs_run": 1, "complete": False}
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "run_state.json").write_text(json.dumps(state))
    args = [
        sys.executable,
        str(script),
        str(tmp_path / "run"),
        str(tmp_path / "dest"),
        "--data",
        str(tmp_path),
    ]
    proc = subprocess.run(args, capture_output=True, text=True, check=False, timeout=120)
    assert proc.returncode == 75, proc.stderr  # make stops before measuring the old model
    assert "not finished (1 of 3 epochs)" in proc.stdout
    assert not (tmp_path / "dest").exists()
    typo = subprocess.run(  # a misspelt run is no run still training: make must not wait for it
        [*args[:2], str(tmp_path / "rnu"), *args[3:]],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert typo.returncode == 2 and "no such training run folder" in typo.stderr, typo.stderr


def test_teacher_flip_tta_and_ensembles_answer_the_mean_log_probabilities() -> None:
    import torch

    from emovit.training.inputs import TrainingInput
    from emovit.training.trainer import _Teacher

    gen = torch.Generator().manual_seed(1)

    def linear() -> Any:  # a linear classifier: not mirror-symmetric
        from types import SimpleNamespace

        weights = torch.randn(3 * 30 * 30, 4, generator=gen)
        return lambda pixel_values: SimpleNamespace(logits=pixel_values.flatten(1) @ weights / 30)

    a, b = linear(), linear()
    inputs = TrainingInput.from_config(arch_preset("vit-test").processor, torch.device("cpu"))
    pixels = torch.rand(4, 3, 30, 30, generator=gen)
    mirrored = torch.flip(pixels, dims=[-1])
    order = [0, 1, 2, 3]
    plain = _Teacher([(a, inputs, order)])
    flip = _Teacher([(a, inputs, order)], tta="flip")
    assert not torch.allclose(plain(pixels), plain(mirrored), atol=1e-3)
    torch.testing.assert_close(flip(pixels), flip(mirrored))  # the mirror of a face: the same answer
    logp = torch.log_softmax
    torch.testing.assert_close(flip(pixels), (logp(plain(pixels), -1) + logp(plain(mirrored), -1)) / 2)
    torch.testing.assert_close(
        _Teacher([(a, inputs, [3, 2, 1, 0])], "flip")(pixels), flip(pixels)[:, [3, 2, 1, 0]]
    )
    other = _Teacher([(b, inputs, order)])
    both = _Teacher([(a, inputs, order), (b, inputs, order)])
    torch.testing.assert_close(both(pixels), (logp(plain(pixels), -1) + logp(other(pixels), -1)) / 2)


def test_an_ensemble_of_teachers_teaches_the_student(dataset: Path, tmp_path: Path) -> None:
    """Two teachers (two seeds), each with flip-TTA, and alpha=1: what the student learns comes
    from their ensemble; the card names both and how they are combined."""
    kw = {"epochs": 6, "lr": 1e-2, "augment": AugmentConfig.off()}
    one = train(_config(dataset, tmp_path / "t1", **kw), progress=False)
    two = train(_config(dataset, tmp_path / "t2", seed=3, **kw), progress=False)
    teachers = [str(one.output), str(two.output)]
    student = train(
        _config(
            dataset, tmp_path / "s", teacher=teachers, teacher_tta="flip", distill_alpha=1.0, seed=1, **kw
        ),
        progress=False,
    )
    assert student.best_metrics["val_accuracy"] >= 0.5  # chance is 0.25
    resolved = json.loads((student.output / "training_config.json").read_text())
    assert resolved["config"]["teacher"] == teachers and resolved["config"]["teacher_tta"] == "flip"
    card = (student.output / "README.md").read_text()
    assert (
        "DeiT-style, from the soft predictions of the ensemble of 2 teachers `t1` (a ViT at 30x30); `t2`"
        in card
    )
    assert "mean of its members' log-probabilities over the faces and mirror images" in card
    assert "from the labels and" not in card  # alpha=1: the labels played no part


def test_teacher_options_map_to_the_config_and_old_configs_still_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from click.testing import CliRunner

    import emovit.training
    from emovit.cli import main

    seen: list[TrainConfig] = []

    def capture(config: TrainConfig, resume: bool = False) -> None:
        seen.append(config)
        raise TrainError("captured")

    monkeypatch.setattr(emovit.training, "train", capture)
    base = ["train", str(tmp_path / "data"), "-o", str(tmp_path / "out")]
    for extra, teacher, tta in (
        ([], None, "none"),
        (["--teacher", "a"], "a", "none"),
        (["--teacher", "a", "--teacher", "b", "--teacher-tta", "flip"], ["a", "b"], "flip"),
    ):
        result = CliRunner().invoke(main, [*base, *extra])
        assert "captured" in result.output, result.output
        assert (seen[-1].teacher, seen[-1].teacher_tta) == (teacher, tta)
    assert seen[0].select_metric == "macro_f1"  # the epoch-keeping score maps too (--select)
    result = CliRunner().invoke(main, [*base, "--select", "robust-f1"])
    assert "captured" in result.output and seen[-1].select_metric == "robust_f1", result.output
    result = CliRunner().invoke(main, [*base, "--teacher", "a", "--teacher-input", "clean"])
    assert "captured" in result.output and seen[-1].teacher_input == "clean", result.output
    assert seen[0].teacher_input == "same"
    result = CliRunner().invoke(main, [*base, "--teacher-input", "clean"])
    assert "warning: --teacher-input has no effect without --teacher" in result.output
    result = CliRunner().invoke(main, [*base, "--teacher-tta", "mirror"])
    assert result.exit_code == 2 and "--teacher-tta" in result.output
    # a run saved before ensembles and teacher TTA existed resumes with what it had
    old = TrainConfig.from_dict({"data": "d", "output": "o", "teacher": "runs/teacher", "distill_alpha": 0.5})
    assert (old.teacher, old.teacher_tta, old.teacher_input) == ("runs/teacher", "none", "same")
    from emovit.training.card import teacher_paths

    assert teacher_paths(old.teacher) == ["runs/teacher"] and teacher_paths(None) == []
    assert teacher_paths(["a", "b"]) == ["a", "b"]


def test_teacher_tta_is_checked(dataset: Path, tmp_path: Path) -> None:
    with pytest.raises(TrainError, match="--teacher-tta needs a --teacher"):
        train(_config(dataset, tmp_path / "a", teacher_tta="flip"), progress=False)
    with pytest.raises(TrainError, match="teacher_tta must be one of"):
        train(_config(dataset, tmp_path / "b", teacher_tta="mirror", teacher=str(tmp_path)), progress=False)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


@pytest.mark.parametrize("option", ["--init", "--teacher"])
def test_a_model_option_that_finds_no_model_is_named(dataset: Path, tmp_path: Path, option: str) -> None:
    """ "Error: model '...' is not in the Hugging Face cache" named no option, and --teacher's
    came only after the data had been decoded."""
    from click.testing import CliRunner

    from emovit.cli import main

    missing = str(tmp_path / "nosuch")
    args = ["train", str(dataset), "-o", str(tmp_path / "run"), "--epochs", "1", option, missing]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2 and f"Invalid value for '{option}'" in result.output, result.output
    assert "decoded" not in result.output and not (tmp_path / "run").exists()


def test_fp16_is_refused_on_the_cpu(dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """accelerate ignores fp16 on the CPU: the run trained in fp32 and its config and card said
    fp16."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(TrainError, match="fp16 trains on a GPU only") as caught:
        train(_config(dataset, tmp_path / "run", precision="fp16"), progress=False)
    assert caught.value.option == "precision" and not (tmp_path / "run").exists()


def test_a_teacher_of_another_input_size_teaches_at_its_own_size(dataset: Path, tmp_path: Path) -> None:
    """A 64-px teacher teaches a 30-px student (it sees the batch resized to 64x64)."""
    teacher = build_random_model(tmp_path / "teacher", "mobilevit-xxs-64", id2label=dict(enumerate(CLASSES)))
    result = train(_config(dataset, tmp_path / "student", epochs=1, teacher=str(teacher)), progress=False)
    assert result.epochs_run == 1 and _input_size(result.output) == {"height": 30, "width": 30}


def test_the_teacher_sees_the_batch_at_its_input_size() -> None:
    """A batch at the student's size reaches a teacher of another size resampled to the
    teacher's (bilinear, antialiased: a flat image stays flat), and unchanged at the same size."""
    import torch

    from emovit.training.inputs import TrainingInput
    from emovit.training.trainer import _Teacher

    seen: list[torch.Tensor] = []

    def model(pixel_values: torch.Tensor) -> Any:
        from types import SimpleNamespace

        seen.append(pixel_values)
        return SimpleNamespace(logits=pixel_values.mean(dim=(2, 3)).repeat(1, 2)[:, :4])

    processor = arch_preset("vit-test").processor
    small = TrainingInput.from_config({**processor, "size": {"height": 12, "width": 12}}, torch.device("cpu"))
    student = TrainingInput.from_config(processor, torch.device("cpu"))  # 30x30
    batch = student.pixels(np.full((2, 30, 30, 3), 200, np.uint8))
    _Teacher([(model, small, [0, 1, 2, 3]), (model, student, [0, 1, 2, 3])], tta="flip")(batch)
    assert seen[0].shape == (4, 3, 12, 12) and seen[1].shape == (4, 3, 30, 30)
    torch.testing.assert_close(seen[0], small.model_input(torch.full((4, 3, 12, 12), 200.0)))
    assert torch.equal(seen[1], student.model_input(torch.cat([batch, batch.flip(-1)])))


def test_init_with_a_new_input_size_feeds_that_size(dataset: Path, tmp_path: Path) -> None:
    """``--init`` with ``--set image_size=N``: the run's processor resizes to N (not the
    checkpoint's size), and the saved model takes N x N faces."""
    first = train(_config(dataset, tmp_path / "first", epochs=1), progress=False)
    result = train(
        _config(
            dataset,
            tmp_path / "bigger",
            epochs=1,
            arch=None,
            init=str(first.output),
            overrides={"image_size": 36},
        ),
        progress=False,
    )
    assert _input_size(result.output) == {"height": 36, "width": 36}
    assert json.loads((result.output / "config.json").read_text())["image_size"] == 36
    assert _input_size(first.output) == {"height": 30, "width": 30}
    faces = np.random.default_rng(0).integers(0, 256, (2, 40, 40, 3), dtype=np.uint8)
    assert load_model(result.output).preprocessor(list(faces)).shape == (2, 3, 36, 36)
    # the run starts from the checkpoint's answers at 36 px: its ViT position embeddings are
    # resampled to the larger patch grid, not drawn afresh
    import torch

    from emovit.training.trainer import _build_model

    cfg = _config(dataset, tmp_path / "x", arch=None, init=str(first.output), overrides={"image_size": 36})
    built = _build_model(cfg, list(CLASSES))[0].eval()
    checkpoint = load_torch_model(first.output).model
    pixels = torch.rand(2, 3, 36, 36)
    with torch.no_grad():
        expected = checkpoint(pixel_values=pixels, interpolate_pos_encoding=True).logits
        torch.testing.assert_close(built(pixel_values=pixels).logits, expected)


def _input_size(folder: Path) -> Any:
    return json.loads((folder / "preprocessor_config.json").read_text())["size"]


def test_a_grey_teacher_sees_a_colour_students_batch_grey() -> None:
    """A teacher trained on grey faces was shown the colour student's batch as it was."""
    import torch
    from PIL import Image

    from emovit.training.inputs import TrainingInput
    from emovit.training.trainer import _Teacher

    seen: list[torch.Tensor] = []

    def model(pixel_values: torch.Tensor) -> Any:
        from types import SimpleNamespace

        seen.append(pixel_values)
        return SimpleNamespace(logits=pixel_values.mean(dim=(2, 3)).repeat(1, 2)[:, :4])

    processor = arch_preset("vit-test").processor
    grey = TrainingInput.from_config(processor, torch.device("cpu"), grey=True)
    colour = np.random.default_rng(0).integers(0, 256, (2, 30, 30, 3), dtype=np.uint8)
    _Teacher([(model, grey, [0, 1, 2, 3])])(grey.pixels(colour))
    expected = np.stack([np.asarray(Image.fromarray(image).convert("L")) for image in colour])
    got = seen[0]  # normalised: back to pixel values
    mean, std = grey.preprocessor.mean[0], grey.preprocessor.std[0]
    values = (got * std + mean) / grey.preprocessor.rescale_factor
    assert torch.equal(values[:, 0], values[:, 1]) and torch.equal(values[:, 1], values[:, 2])
    np.testing.assert_allclose(values[:, 0].numpy(), expected, atol=0.51)  # Pillow rounds its luma


def test_a_teacher_framed_otherwise_is_warned_about(dataset: Path, tmp_path: Path) -> None:
    from emovit.models import Framing, write_framing

    teacher = train(_config(dataset, tmp_path / "teacher", epochs=1), progress=False).output
    write_framing(teacher, Framing(face_margin=0.3, face_align=False, grey=False))
    with pytest.warns(UserWarning, match=r"framed otherwise \(margin 0.3, the student's 0.05; alignment off"):
        train(
            _config(
                dataset, tmp_path / "student", epochs=1, teacher=str(teacher), face_margin=0.05, grey=True
            ),
            progress=False,
        )


# --------------------------------------------------------------------------- FER+ vote labels


@pytest.fixture(scope="module")
def votes(dataset: Path) -> Path:
    return write_votes(dataset, dataset.parent / "votes.csv")


def test_vote_rules() -> None:
    from emovit.data import VOTE_CLASSES, majority_label, vote_distribution

    def vote(**counts: int) -> np.ndarray:
        return np.array([counts.get(c, 0) for c in VOTE_CLASSES], dtype=np.float32)

    assert majority_label(vote(happy=6, sad=3, contempt=1)) == "happy"
    assert majority_label(vote(happy=4, sad=4, fear=2)) is None  # a tie
    assert majority_label(vote(contempt=5, happy=4, sad=1)) is None  # contempt's majority
    assert majority_label(vote(unknown=6, happy=4)) is None
    assert majority_label(vote(not_a_face=10)) is None
    assert majority_label(vote(happy=3, contempt=3, sad=1)) is None  # a tie with contempt
    np.testing.assert_allclose(
        vote_distribution(vote(happy=6, sad=2, contempt=1, unknown=1)), [0, 0, 0, 0.75, 0, 0.25, 0]
    )
    assert vote_distribution(vote(not_a_face=10)) is None


def test_vote_file_errors(tmp_path: Path, dataset: Path, votes: Path) -> None:
    from emovit.data import read_vote_labels, sample_votes

    table = read_vote_labels(votes)
    assert sample_votes(read_samples(dataset, "validation"), table).shape == (4 * len(CLASSES), 10)
    with pytest.raises(DatasetError, match="need an ImageFolder tree"):
        sample_votes(read_samples(dataset.with_suffix(".csv"), "validation"), table)
    bad = tmp_path / "bad.csv"
    bad.write_text("split,file,neutral,happiness,surprise,sadness,anger,disgust,fear,hapiness\n")
    with pytest.raises(DatasetError, match="'hapiness' is neither an emotion"):
        read_vote_labels(bad)
    bad.write_text("split,file,neutral,happiness\ntrain,a.png,1,2\n")
    with pytest.raises(DatasetError, match="no vote column for"):
        read_vote_labels(bad)
    # a row short of the header would count its missing votes as 0 (and could flip its label)
    header = "split,file,neutral,happiness,surprise,sadness,anger,disgust,fear,contempt,unknown,NF\n"
    bad.write_text(header + "train,a.png,0,10,0,0,0,0,0,0,0,0\ntrain,b.png,1\n")
    with pytest.raises(DatasetError, match=r"bad.csv, line 3: 3 cells, the header has 12 \(a missing vote"):
        read_vote_labels(bad)
    bad.write_text(header + "train,a.png,0,10,0,0,0,0,0,0,0,0,4\n")
    with pytest.raises(DatasetError, match="line 2: 13 cells, the header has 12"):
        read_vote_labels(bad)
    # a spreadsheet's UTF-8 with a byte-order mark reads the same; another encoding is named
    bom = tmp_path / "bom.csv"
    bom.write_bytes(b"\xef\xbb\xbf" + votes.read_bytes())
    assert read_vote_labels(bom).lookup(read_samples(dataset, "test")[0]) is not None
    latin = tmp_path / "latin.csv"
    latin.write_bytes(votes.read_bytes().replace(b"train,", b"train,\xe9", 1))
    with pytest.raises(DatasetError, match="latin.csv: not a UTF-8 CSV vote file"):
        read_vote_labels(latin)
    partial = tmp_path / "partial.csv"
    lines = votes.read_text().splitlines()
    partial.write_text("\n".join(line for line in lines if not line.startswith("test,angry/000")) + "\n")
    with pytest.raises(DatasetError, match="1 of .* images have no vote row .* the file has no row for them"):
        sample_votes(read_samples(dataset, "test"), read_vote_labels(partial))
    # a split's class folders copied out on their own (no split folder): the file has their rows
    # under "test", which was not said (only "the 'file' column must hold each image's path")
    flat = tmp_path / "flat"
    shutil.copytree(dataset / "test", flat)
    with pytest.raises(
        DatasetError, match="the images have no split, but the file has rows for these paths under split test"
    ):
        sample_votes(read_samples(flat), read_vote_labels(votes))
    # a split folder whose images the file lists under another split: not "no rows for 'test'"
    moved = tmp_path / "moved"
    for image in (dataset / "train").glob("*/*.png"):  # training images the test split has no name of
        if not (dataset / "test" / image.parent.name / image.name).exists():
            (moved / "test" / image.parent.name).mkdir(parents=True, exist_ok=True)
            shutil.copy(image, moved / "test" / image.parent.name / image.name)
    with pytest.raises(
        DatasetError, match="the file lists these paths under split train(, validation)?, not test"
    ):
        sample_votes(read_samples(moved, "test"), read_vote_labels(votes))
    # an empty vote cell is no 0 (read as one, it flipped the majority without a word), and the
    # line named is the file's own, blank lines counted
    bad.write_text(header + "\ntrain,a.png,0,10,0,0,0,0,0,0,0,0\n\ntrain,b.png,4,3,,0,0,0,0,0,0,0\n")
    with pytest.raises(DatasetError, match=r"bad.csv, line 5: surprise must be a vote count >= 0 .*got ''"):
        read_vote_labels(bad)


def test_training_on_vote_distributions(dataset: Path, votes: Path, tmp_path: Path) -> None:
    """Soft targets from the votes; the images whose votes are all not-a-face leave training, and
    those without a clear majority leave validation; the model still learns the classes."""
    kw = {"epochs": 6, "lr": 1e-2, "augment": AugmentConfig.off(), "label_smoothing": 0.1}
    result = train(_config(dataset, tmp_path / "votes", labels=str(votes), **kw), progress=False)
    resolved = json.loads((result.output / "training_config.json").read_text())["resolved"]
    assert resolved["classes"] == list(EMOTIONS)  # the vote file's classes
    assert resolved["train_images"] == 12 * len(CLASSES) - len(CLASSES)  # one NF-only image per class
    assert resolved["val_images"] == 4 * len(CLASSES) - 2 * len(CLASSES)  # a tie and a contempt majority
    assert result.best_metrics["val_accuracy"] >= 0.5  # chance is 0.25
    assert "vote distributions" in (result.output / "README.md").read_text()
    # the sampler balance and distillation take soft targets too
    teacher = build_random_model(tmp_path / "teacher", "vit-test", id2label=dict(enumerate(EMOTIONS)))
    other = train(
        _config(
            dataset, tmp_path / "votes2", labels=str(votes), epochs=1, balance="sampler", teacher=str(teacher)
        ),
        progress=False,
    )
    assert other.epochs_run == 1


def test_robust_augmentation_degrades_like_photos_deterministically() -> None:
    import torch

    from emovit.training.augment import AugmentConfig, augment_batch

    x = torch.rand(16, 3, 32, 32) * 255
    cfg = AugmentConfig.robust()
    a = augment_batch(x, cfg, torch.Generator().manual_seed(3), 0, 16)
    b = augment_batch(x, cfg, torch.Generator().manual_seed(3), 0, 16)
    assert torch.equal(a, b) and a.shape == x.shape
    assert float(a.min()) >= 0 and float(a.max()) <= 255
    assert not torch.allclose(a, x)
    # each degradation alone changes only the images it drew, and keeps the batch's shape
    for name in ("downscale_p", "blur_p", "noise_p", "gamma_p", "jpeg_p"):
        only = AugmentConfig.off()
        setattr(only, name, 1.0)
        out = augment_batch(x, only, torch.Generator().manual_seed(0), 0, 16)
        assert out.shape == x.shape and not torch.allclose(out, x), name
    assert torch.equal(augment_batch(x, AugmentConfig.off(), torch.Generator().manual_seed(0), 0, 16), x)
    assert AugmentConfig.from_name("robust") == cfg
    # noise on grey faces (the grey framing) is grey: the model never sees colour at inference
    grey = x[:, :1].expand(-1, 3, -1, -1).clone()
    only = AugmentConfig.off()
    only.noise_p = 1.0
    noisy = augment_batch(grey, only, torch.Generator().manual_seed(0), 0, 16)
    assert not torch.allclose(noisy, grey)
    assert torch.equal(noisy[:, 0], noisy[:, 1]) and torch.equal(noisy[:, 1], noisy[:, 2])


def test_augment_views_are_the_same_draws_before_and_after_the_degradations() -> None:
    import torch

    from emovit.training.augment import AugmentConfig, augment_batch, augment_views, mix_batch

    x = torch.rand(16, 3, 32, 32) * 255
    cfg = AugmentConfig.robust()
    cfg.downscale_p = 1.0  # every face degraded: the views differ on each
    clean, degraded = augment_views(x, cfg, torch.Generator().manual_seed(3), 0, 16)
    assert torch.equal(degraded, augment_batch(x, cfg, torch.Generator().manual_seed(3), 0, 16))
    undegraded = AugmentConfig.robust()
    for name in ("downscale_p", "blur_p", "noise_p", "gamma_p", "jpeg_p"):
        setattr(undegraded, name, 0.0)
    assert torch.equal(clean, augment_batch(x, undegraded, torch.Generator().manual_seed(3), 0, 16))
    assert all(not torch.allclose(c, d) for c, d in zip(clean, degraded, strict=True))
    # the trainer mixes both views as one tensor (stacked channels): each is mixed as it alone
    # would be with the same draws, mixup and cutmix alike
    targets = torch.eye(7)[torch.arange(16) % 7]
    for mixing in ({"mixup_alpha": 1.0}, {"cutmix_alpha": 1.0}):
        mix = AugmentConfig.off().with_overrides([f"{k}={v}" for k, v in mixing.items()] + ["mix_p=1"])
        both, mixed_targets = mix_batch(
            torch.cat([degraded, clean], 1), targets, mix, torch.Generator().manual_seed(5)
        )
        alone, alone_targets = mix_batch(degraded, targets, mix, torch.Generator().manual_seed(5))
        clean_alone, _ = mix_batch(clean, targets, mix, torch.Generator().manual_seed(5))
        assert not torch.equal(alone, degraded), mixing
        assert torch.equal(both[:, :3], alone) and torch.equal(both[:, 3:], clean_alone), mixing
        assert torch.equal(mixed_targets, alone_targets), mixing


def test_a_clean_teacher_input_shows_the_teacher_the_undegraded_faces(
    dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--teacher-input clean: the teacher answers on the face before the photo degradations that
    the student sees; "same" (the default) shows both the degraded face."""
    import torch

    import emovit.training.trainer as trainer_module

    teacher = train(_config(dataset, tmp_path / "teacher", epochs=1), progress=False)
    views: list[tuple[Any, Any]] = []
    seen_by_teacher: list[Any] = []
    real_views, real_call = trainer_module.augment_views, trainer_module._Teacher.__call__

    def record_views(*args: Any) -> Any:
        views.append(real_views(*args))
        return views[-1]

    def record_teacher(self: Any, pixels: Any) -> Any:
        seen_by_teacher.append(pixels.clone())
        return real_call(self, pixels)

    monkeypatch.setattr(trainer_module, "augment_views", record_views)
    monkeypatch.setattr(trainer_module._Teacher, "__call__", record_teacher)
    degrade = AugmentConfig.off().with_overrides(["downscale_p=1", "downscale_min=0.25", "blur_p=1"])
    for mode in ("clean", "same"):
        views.clear(), seen_by_teacher.clear()
        cfg = _config(dataset, tmp_path / mode, epochs=1, teacher=str(teacher.output), augment=degrade)
        cfg.teacher_input = mode
        train(cfg, progress=False)
        assert len(views) == len(seen_by_teacher) > 0
        for (clean, degraded), taught in zip(views, seen_by_teacher, strict=True):
            assert not torch.allclose(clean, degraded)
            assert torch.equal(taught, clean if mode == "clean" else degraded), mode
    saved = json.loads((tmp_path / "clean" / "training_config.json").read_text())["config"]
    assert saved["teacher_input"] == "clean"
    cfg = _config(dataset, tmp_path / "bad", teacher=str(teacher.output))
    cfg.teacher_input = "blurred"
    with pytest.raises(TrainError, match="teacher_input must be one of"):
        train(cfg, progress=False)
    from emovit.training.card import distillation_words

    assert "`--teacher-input clean`" in distillation_words(saved)
    assert "--teacher-input" not in distillation_words({**saved, "teacher_input": "same"})


def test_select_robust_f1_keeps_the_epoch_best_under_the_perturbations(dataset: Path, tmp_path: Path) -> None:
    """--select robust-f1: each epoch is also scored under the robustness report's perturbations
    (the same functions, emovit.data.perturb) and the epoch with the best mean is kept."""
    from emovit.data.perturb import PERTURBATIONS, perturb_images

    run = train(_config(dataset, tmp_path / "r", epochs=3, select_metric="robust_f1"), progress=False)
    history = [json.loads(line) for line in (run.output / "metrics.jsonl").read_text().splitlines()]
    for record in history:
        scores = record["val_perturbed_macro_f1"]
        assert list(scores) == list(PERTURBATIONS)  # clean first, then the report's conditions
        assert scores["clean"] == record["val_macro_f1"]
        assert record["val_robust_f1"] == pytest.approx(sum(scores.values()) / len(scores))
    best = max(history, key=lambda r: r["val_robust_f1"])
    assert run.best_epoch == best["epoch"] and run.best_metrics["val_robust_f1"] == best["val_robust_f1"]
    card = (run.output / "README.md").read_text()
    assert "Model selection used the mean validation macro-F1 over the clean faces" in card
    # the perturbations change the faces, deterministically, keeping their shape
    faces = (np.random.default_rng(0).random((4, 16, 16, 3)) * 255).astype(np.uint8)
    for condition in list(PERTURBATIONS)[1:]:
        once, again = perturb_images(faces, condition), perturb_images(faces, condition)
        assert once.shape == faces.shape and np.array_equal(once, again), condition
        assert not np.array_equal(once, faces), condition
    assert np.array_equal(perturb_images(faces, "clean"), faces)
    mixing = AugmentConfig(mixup_alpha=0.2, mix_p=0.3)
    plain = train(_config(dataset, tmp_path / "p", epochs=1, augment=mixing), progress=False)
    record = json.loads((plain.output / "metrics.jsonl").read_text().splitlines()[0])
    assert "val_robust_f1" not in record and "val_perturbed_macro_f1" not in record
    card = (plain.output / "README.md").read_text()
    assert "Model selection used validation macro-F1 only" in card
    # the run's card says how often mixing is applied, as the release card does
    assert "mixup alpha 0.2, cutmix alpha 0.0 (on a share 0.3 of the batches)" in card
    with pytest.raises(TrainError, match="select_metric must be one of"):
        train(_config(dataset, tmp_path / "bad", select_metric="accuracy"), progress=False)
    from emovit.training.card import _recipe

    cfg = {
        "lr": 1e-4,
        "weight_decay": 0.05,
        "warmup_epochs": 1,
        "batch_size": 8,
        "label_smoothing": 0,
        "seed": 0,
    }
    state = {"epoch": 3, "best_epoch": 2, "elapsed_s": 60}
    assert "(`--select robust-f1`)" in _recipe(
        Path("r"), {"config": {**cfg, "select_metric": "robust_f1"}}, state
    )
    assert "--select" not in _recipe(Path("r"), {"config": cfg}, state)


def test_augment_set_changes_one_strength_of_a_preset_and_refuses_nonsense(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from emovit.cli import main
    from emovit.training.augment import AugmentConfig

    robust = AugmentConfig.robust()
    changed = robust.with_overrides(["blur_p=0.4", "jpeg_quality=20,90", " downscale_min = 0.2"])
    assert (changed.blur_p, changed.jpeg_quality, changed.downscale_min) == (0.4, (20, 90), 0.2)
    assert changed.noise_p == robust.noise_p and robust.blur_p == 0.2  # a copy; the rest as before
    assert robust.with_overrides([]) == robust
    for bad, says in (
        ("blur", "KEY=VALUE"),
        ("blurp=0.4", "KEY=VALUE"),
        ("blur_p=1.5", "at most 1"),
        ("rotate_deg=-3", ">= 0"),
        ("noise_std=nan", ">= 0"),
        ("jpeg_quality=90", "two comma-separated"),
        ("jpeg_quality=90,30", "above its high end"),
        ("gamma_range=0,2", "above 0"),
        ("gamma_range=0.5,inf", "finite"),
        ("jpeg_quality=20.5,90", "whole numbers"),
        ("jpeg_quality=0,90", "1..100"),
        ("erase_area=0.1,2", "at most 1"),
        ("scale=big", "could not convert"),
        ("scale=1", "below 1"),
        ("blur_sigma=0.1", "at least 0.3"),
    ):
        with pytest.raises(ValueError, match=says):
            robust.with_overrides([bad])
    # a run's card gives the flags that reproduce its strengths
    from emovit.training.card import _augment_flags

    assert _augment_flags(json.loads(json.dumps(robust.to_dict()))) == "`--augment robust`"
    assert _augment_flags(AugmentConfig().to_dict()) == "`--augment standard`"
    flags = _augment_flags(changed.with_overrides(["mix_p=0.9", "mixup_alpha=0.2"]).to_dict())
    assert flags == (
        "`--augment robust` `--augment-set mix_p=0.9` `--augment-set downscale_min=0.2` "
        "`--augment-set blur_p=0.4` `--augment-set jpeg_quality=20,90`"
    )  # in the fields' order; mixup is its own flag, --mixup
    # the CLI names the option and the setting, before any data is read
    result = CliRunner().invoke(
        main, ["train", str(tmp_path / "nowhere"), "-o", str(tmp_path / "out"), "--augment-set", "blur_p=3"]
    )
    assert result.exit_code == 2
    assert "--augment-set" in result.output and "blur_p=3" in result.output
    assert not (tmp_path / "out").exists()


def test_robustness_report_scores_every_condition_and_reuses_same_weights(
    dataset: Path, votes: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    script = _load_script("robustness_report")
    model = build_random_model(tmp_path / "model", "vit-test", id2label=dict(enumerate(CLASSES)))
    out = tmp_path / "report"
    args = ["--model", str(model), "--name", "before", "--data", str(dataset), "--labels", str(votes)]
    assert script.main([*args, "-o", str(out)]) == 0
    [report] = json.loads((out / "robustness.json").read_text())
    assert report["model"] == "before" and report["settings"]["split"] == "test" and report["weights_sha256"]
    assert list(report["conditions"]) == list(script.PERTURBATIONS)
    for scores in report["conditions"].values():
        assert scores["fer2013"]["images"] == 3 * len(CLASSES) == scores["ferplus"]["images"]
        assert 0 <= scores["ferplus"]["accuracy"] <= 1
    table = (out / "robustness.md").read_text()
    assert "| downscale x0.25 |" in table and "before FER+ acc / F1" in table

    def no_measuring(*a: object, **k: object) -> None:
        raise AssertionError("measured again")

    monkeypatch.setattr(script, "measure", no_measuring)
    assert script.main([*args, "-o", str(out), "--reuse"]) == 0  # same name, same weights
    other = build_random_model(tmp_path / "other", "vit-test", id2label=dict(enumerate(CLASSES)), seed=1)
    with pytest.raises(AssertionError, match="measured again"):  # same name, other weights
        script.main(["--model", str(other), "--name", "before", *args[4:], "-o", str(out), "--reuse"])
    with pytest.raises(AssertionError, match="measured again"):  # same weights, a quick look only
        script.main([*args, "-o", str(out), "--reuse", "--limit", "5"])


def test_robustness_report_quick_look_spans_the_classes_and_finds_its_defaults_anywhere(
    dataset: Path, votes: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--limit N took the split's first N images: in folder order, all of one class. The
    default --data and --labels (../shared) were relative to where the script was started."""
    shared = tmp_path / "shared"
    (shared / "data" / "ferplus").mkdir(parents=True)
    (shared / "data" / "fer2013").symlink_to(dataset, target_is_directory=True)
    (shared / "data" / "ferplus" / "labels.csv").symlink_to(votes)
    monkeypatch.setenv("EMOVIT_SHARED", str(shared))
    script = _load_script("robustness_report")
    model = build_random_model(tmp_path / "model", "vit-test", id2label=dict(enumerate(CLASSES)))
    loaded: list[list[str]] = []
    load = script.load_images
    monkeypatch.setattr(script, "load_images", lambda sources: loaded.append(list(sources)) or load(sources))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # no ../shared from here: the defaults come from EMOVIT_SHARED
    assert script.main(["--model", str(model), "--limit", "4", "-o", str(tmp_path / "quick")]) == 0
    assert len(loaded[0]) == 4 and len({Path(source).parent.name for source in loaded[0]}) > 1


def test_teacher_ensembles_scores_every_subset_as_a_flip_teacher_answers(
    dataset: Path, votes: Path, tmp_path: Path
) -> None:
    script = _load_script("teacher_ensembles")
    first = build_random_model(tmp_path / "a", "vit-test", id2label=dict(enumerate(EMOTIONS)))
    second = build_random_model(tmp_path / "b", "vit-test", id2label=dict(enumerate(EMOTIONS)), seed=1)
    out = tmp_path / "ensembles"
    args = ["--data", str(dataset), "--labels", str(votes), "-o", str(out)]
    assert script.main([str(first), str(second), *args]) == 0
    report = json.loads((out / "ensembles.json").read_text())
    assert report["settings"]["split"] == "validation"
    assert [r["members"] for r in report["ensembles"]] == [
        [str(first)],
        [str(second)],
        [str(first), str(second)],
    ]
    # one model alone, plain, is what `emovit evaluate` scores on the same labels
    from emovit.evaluation import evaluate
    from emovit.faces import FaceOptions

    plain = evaluate(first, dataset, split="validation", faces=FaceOptions(detector="none"), labels=votes)
    assert report["models"][str(first)]["plain"]["accuracy"] == pytest.approx(plain.accuracy, abs=1e-4)
    assert report["settings"]["faces"] == plain.metrics["images"]
    assert "Best ensemble of each size" in (out / "ensembles.md").read_text()
    # members and views combine by the mean log-probability (a geometric mean), as the teacher does
    a, b = np.log([[0.8, 0.2, 1e-6]]), np.log([[0.01, 0.3, 0.69]])
    answers = {"a": np.stack([a, a]), "b": np.stack([b, b])}
    rows = script.ensembles(answers, np.array([1]), max_size=2)
    assert [r["accuracy"] for r in rows] == [0.0, 0.0, 1.0]  # the mean probability would say 0
    # teachers are chosen on validation only, and a class missing from a member is refused
    with pytest.raises(SystemExit):
        script.main([str(first), *args, "--split", "test"])
    four = build_random_model(tmp_path / "four", "vit-test", id2label=dict(enumerate(CLASSES)))
    with pytest.raises(SystemExit, match="lacks the classes"):
        script.main([str(four), *args])


def test_prior_adjustment_is_chosen_on_validation_and_folded_into_the_bias(
    dataset: Path, votes: Path, tmp_path: Path
) -> None:
    import shutil

    from emovit.training.adjust import PriorAdjustment, apply_prior_adjustment, tune_prior_adjustment

    model = build_random_model(tmp_path / "model", "vit-test", id2label=dict(enumerate(CLASSES)))
    seven = build_random_model(tmp_path / "seven", "vit-test", id2label=dict(enumerate(EMOTIONS)))
    for folder, labels, classes in ((model, None, CLASSES), (seven, votes, EMOTIONS)):
        found = tune_prior_adjustment(folder, dataset, labels=labels, prior_labels=labels, rule="best")
        best = max(r["macro_f1"] for r in found.table)
        assert (
            found.row(found.tau)["macro_f1"] == best
            and found.row(found.tau)["macro_f1"] >= found.row(0.0)["macro_f1"]
        )
        assert sorted(found.prior) == sorted(classes) and abs(sum(found.prior.values()) - 1) < 1e-4
        assert len(found.table) == 17 and found.row(0.0)["tau"] == 0.0
        # tau 0 is the model as it is: its accuracy is emovit evaluate's on the same labels
        from emovit.evaluation import evaluate
        from emovit.faces import FaceOptions

        plain = evaluate(
            folder, dataset, split="validation", faces=FaceOptions(detector="none"), labels=labels
        )
        assert found.row(0.0)["accuracy"] == pytest.approx(plain.accuracy, abs=1e-4)
    # folding tau into the bias shifts every logit by -tau * log(prior), nothing else
    skewed = {c: (i + 1) / 28 for i, c in enumerate(CLASSES)}
    adjusted = tmp_path / "adjusted"
    shutil.copytree(model, adjusted)
    apply_prior_adjustment(adjusted, PriorAdjustment(0.5, skewed))
    faces = sorted(str(f) for f in (dataset / "test").rglob("*.png"))[:5]
    before = [
        r.faces[0].probs for r in EmotionRecognizer.from_pretrained(model, detector="none").predict(faces)
    ]
    after = [
        r.faces[0].probs for r in EmotionRecognizer.from_pretrained(adjusted, detector="none").predict(faces)
    ]
    for p, q in zip(before, after, strict=True):
        expected = {c: np.log(p[c]) - 0.5 * np.log(skewed[c]) for c in CLASSES}
        norm = np.log(sum(np.exp(v) for v in expected.values()))
        assert all(abs(q[c] - np.exp(expected[c] - norm)) < 1e-4 for c in CLASSES)
    config = json.loads((adjusted / "config.json").read_text())
    assert config["emovit_prior_adjustment"]["tau"] == 0.5
    with pytest.raises(TrainError, match="already adjusted"):  # never shifted twice
        apply_prior_adjustment(adjusted, PriorAdjustment(0.5, skewed))
    with pytest.raises(TrainError, match="labels"):
        apply_prior_adjustment(model, PriorAdjustment(0.5, {"happy": 1.0}))


def test_the_resampled_tau_rule_picks_the_best_mean_over_bootstrap_resamples() -> None:
    from emovit.training.adjust import ValidationScores, score_taus

    rng = np.random.default_rng(0)
    y_true = rng.choice(3, 300, p=[0.6, 0.3, 0.1])
    logits = rng.normal(size=(300, 3)) + 1.5 * np.eye(3)[y_true]
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    scores = ValidationScores(["a", "b", "c"], probs, y_true, np.array([0.6, 0.3, 0.1]))
    found = score_taus(scores, rule="resampled", resamples=300, seed=1)
    means = [r["macro_f1_resampled"] for r in found.table]
    assert found.rule == "resampled" and found.to_dict()["rule"] == "resampled"
    assert found.row(found.tau)["macro_f1_resampled"] == max(means)
    for row in found.table:  # a bootstrap mean is near the figure itself, and it varies
        assert abs(row["macro_f1_resampled"] - row["macro_f1"]) < 0.03 and row["macro_f1_resampled_sd"] > 0
    assert score_taus(scores, rule="resampled", resamples=300, seed=1).table == found.table
    assert score_taus(scores, rule="resampled", resamples=300, seed=2).table != found.table
    plain = score_taus(scores, rule="best")
    assert "macro_f1_resampled" not in plain.table[0]
    assert plain.row(plain.tau)["macro_f1"] == max(r["macro_f1"] for r in plain.table)
    with pytest.raises(TrainError, match="tau rule 'median'"):
        score_taus(scores, rule="median")  # type: ignore[arg-type]
    kept = score_taus(scores, rule="none")
    assert kept.tau == 0.0 and plain.tau != 0.0  # here a shift would have scored higher
    assert len(kept.table) == len(plain.table)  # still scored, for the card and metrics.json
    from emovit.training.card import _adjustment_block

    block = _adjustment_block(kept.to_dict())
    assert "kept as trained" in block and "rule `none`" in block and "(chosen)" not in block
    assert "no shift beat" in _adjustment_block({**plain.to_dict(), "tau": 0.0})
    # confident: the best mean among the taus that beat tau 0 on 90 % of the same resamples
    sure = score_taus(scores, rule="confident", resamples=300, seed=1)
    assert sure.table == found.table  # the same resamples score the same rows
    eligible = [r for r in sure.table if not r["tau"] or r["beats_none_share"] >= 0.9]
    assert sure.row(sure.tau) in eligible
    assert sure.row(sure.tau)["macro_f1_resampled"] == max(r["macro_f1_resampled"] for r in eligible)
    # a tau that wins on fewer resamples is passed over, even with the higher mean
    unsure = [r for r in sure.table if r["tau"] and r["beats_none_share"] < 0.9]
    assert found.row(found.tau) in unsure and sure.tau != found.tau  # here: resampled's pick
    with pytest.raises(TrainError, match="must include 0"):
        score_taus(scores, [0.5, 1.0], rule="confident")


def test_a_prior_adjustment_killed_between_its_two_files_is_finished_not_repeated(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The bias was shifted in the weights, then the config recorded it: killed in between,
    the next call found no record and shifted the bias a second time."""
    from safetensors.torch import load_file

    from emovit.training.adjust import PriorAdjustment, apply_prior_adjustment

    model = build_random_model(tmp_path / "model", "vit-test", id2label=dict(enumerate(CLASSES)))
    skewed = {c: (i + 1) / 28 for i, c in enumerate(CLASSES)}
    key = "classifier.bias"
    original = load_file(str(model / "model.safetensors"))[key].double().numpy()
    shift = -0.5 * np.log([skewed[c] for c in CLASSES])

    def killed(path: Any, text: str) -> None:
        raise KeyboardInterrupt

    import emovit.fileio

    real = emovit.fileio.write_text_atomic
    monkeypatch.setattr(emovit.fileio, "write_text_atomic", killed)
    with pytest.raises(KeyboardInterrupt):
        apply_prior_adjustment(model, PriorAdjustment(0.5, skewed))
    assert "emovit_prior_adjustment" not in json.loads((model / "config.json").read_text())
    monkeypatch.setattr(emovit.fileio, "write_text_atomic", real)
    with pytest.raises(TrainError, match="not this adjustment"):
        apply_prior_adjustment(model, PriorAdjustment(0.25, skewed))
    apply_prior_adjustment(model, PriorAdjustment(0.5, skewed))
    bias = load_file(str(model / "model.safetensors"))[key].double().numpy()
    np.testing.assert_allclose(bias, original + shift, atol=1e-5)  # shifted once
    assert json.loads((model / "config.json").read_text())["emovit_prior_adjustment"]["tau"] == 0.5
    with pytest.raises(TrainError, match="already adjusted"):
        apply_prior_adjustment(model, PriorAdjustment(0.5, skewed))


def test_the_tau_rule_study_tunes_on_one_half_and_scores_the_other(
    dataset: Path, votes: Path, tmp_path: Path
) -> None:
    script = _load_script("tau_rule_study")
    y_true = np.repeat([0, 1, 2], [10, 5, 3])
    tune, check = script.halves(y_true, np.random.default_rng(0))
    assert sorted([*tune, *check]) == list(range(18)) and not set(tune) & set(check)
    for k, size in enumerate((10, 5, 3)):  # every class split evenly (odd sizes: one more on a side)
        assert abs(2 * int((y_true[tune] == k).sum()) - size) <= 1
    model = build_random_model(tmp_path / "run", "vit-test", id2label=dict(enumerate(EMOTIONS)))
    (model / "training_config.json").write_text(json.dumps({"config": {"labels": str(votes)}}))
    out = tmp_path / "study"
    args = [str(dataset), "--labels", str(votes), "--splits", "3", "--resamples", "20", "-o", str(out)]
    assert script.main([*args, "--model", str(model), "--model", str(tmp_path / "missing")]) == 0
    report = json.loads((out / "tau_rule.json").read_text())
    assert [m["path"] for m in report["models"]] == [str(model)]  # the missing one is reported, not fatal
    assert [f["path"] for f in report["failed"]] == [str(tmp_path / "missing")]
    rules = report["models"][0]["rules"]
    assert set(rules) == {"none", "best", "resampled", "confident"}
    assert rules["none"]["tau_sd"] == 0.0 and rules["none"]["tau_on_whole_validation"] == 0.0
    assert "Not scored" in (out / "tau_rule.md").read_text()

    # the decision is the fixed rule: the highest mean held-out F1, ties to the simpler rule
    def result(none: float, best: float, resampled: float, confident: float) -> dict[str, Any]:
        held = {"none": none, "best": best, "resampled": resampled, "confident": confident}
        return {"rules": {rule: {"held_out_macro_f1": f1} for rule, f1 in held.items()}}

    assert script.decide([result(0.7, 0.7, 0.71, 0.70), result(0.7, 0.7, 0.695, 0.70)])["rule"] == "resampled"
    assert script.decide([result(0.7, 0.7, 0.7, 0.71), result(0.7, 0.71, 0.7, 0.70)])["rule"] == "best"
    assert script.decide([result(0.7, 0.7, 0.7, 0.7)])["rule"] == "none"
    assert script.decide([result(0.7, 0.6, 0.6, 0.71)])["models_where_best_of_all"]["confident"] == 1
    assert script.main([*args, "--model", str(tmp_path / "missing")]) == 1


def _load_script(name: str) -> Any:
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "scripts" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _report(model: str, split: str, clean: tuple[float, float], perturbed: tuple[float, float]) -> dict:
    def cond(acc: float, f1: float) -> dict:
        return {"ferplus": {"images": 10, "accuracy": acc, "macro_f1": f1}, "fer2013": {"images": 10}}

    conditions = {
        "clean": cond(*clean),
        "blur": cond(*perturbed),
        "downscale": cond(perturbed[0], perturbed[1] - 0.1),
    }
    return {"model": model, "path": model, "settings": {"split": split}, "conditions": conditions}


def test_augmentation_is_chosen_on_perturbed_validation_by_the_fixed_rule(
    dataset: Path, votes: Path, tmp_path: Path
) -> None:
    chooser = _load_script("choose_augmentation")
    reports = [
        _report("flips only", "validation", (0.82, 0.72), (0.60, 0.50)),
        _report("photo", "validation", (0.815, 0.71), (0.75, 0.65)),
        # the most robust, but it pays 2 points on clean faces: not eligible
        _report("very strong", "validation", (0.80, 0.70), (0.78, 0.69)),
    ]
    result = chooser.choose(reports)
    assert result["chosen"] == "photo" and result["chosen_path"] == "photo"
    assert "macro-F1" in result["rule"] and "clean" in result["rule"]
    assert [row["eligible"] for row in result["rows"]] == [True, True, False]
    photo = result["rows"][1]
    assert photo["mean_macro_f1"] == pytest.approx((0.71 + 0.65 + 0.55) / 3)
    assert photo["worst_condition"] == "downscale"
    assert chooser.choose(reports, max_clean_loss=0.05)["chosen"] == "very strong"
    with pytest.raises(ValueError, match="validation split only"):
        chooser.choose([*reports, _report("peeked", "test", (0.9, 0.9), (0.9, 0.9))])

    # end to end on a report the robustness script measured on validation; a test report is refused
    report_script = _load_script("robustness_report")
    models = [
        build_random_model(tmp_path / name, "vit-test", id2label=dict(enumerate(CLASSES)), seed=seed)
        for seed, name in enumerate(("a", "b"))
    ]
    args = ["--data", str(dataset), "--labels", str(votes)]
    for split in ("validation", "test"):
        pairs = [arg for model in models for arg in ("--model", str(model), "--name", model.name)]
        assert report_script.main([*pairs, *args, "--split", split, "-o", str(tmp_path / split)]) == 0
    assert chooser.main([str(tmp_path / "validation" / "robustness.json")]) == 0
    choice = json.loads((tmp_path / "validation" / "choice.json").read_text())
    assert choice["chosen"] in {"a", "b"} and len(choice["rows"]) == 2
    assert "| a |" in (tmp_path / "validation" / "choice.md").read_text()
    assert chooser.main([str(tmp_path / "test" / "robustness.json")]) == 2
    assert not (tmp_path / "test" / "choice.json").exists()
    # a candidate measured while it was still training: no choice until it has finished
    (models[0] / "run_state.json").write_text(json.dumps({"complete": False}))
    with pytest.raises(ValueError, match="has not finished"):
        chooser.choose(json.loads((tmp_path / "validation" / "robustness.json").read_text()))
    assert chooser.main([str(tmp_path / "validation" / "robustness.json")]) == chooser.NOT_FINISHED
    (models[0] / "run_state.json").write_text("{not json")
    assert chooser.main([str(tmp_path / "validation" / "robustness.json")]) == 2
    with pytest.raises(ValueError, match="without the FER\\+ labels"):
        chooser.choose([{"model": "x", "settings": {"split": "validation"}, "conditions": {"clean": {}}}])
    with pytest.raises(ValueError, match="expected a list"):
        chooser.choose({"model": "x"})  # type: ignore[arg-type]


def _always_better(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every epoch scores a higher validation macro-F1 than the last (so each is the best)."""
    import sklearn.metrics

    calls = iter(range(1, 10_000))
    monkeypatch.setattr(sklearn.metrics, "f1_score", lambda *a, **k: next(calls) / 10_000)


def test_a_kill_before_an_epoch_is_committed_leaves_the_best_model_of_a_committed_epoch(
    dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The best weights were written before the checkpoint that commits their epoch: killed
    in between, the resume repeats the epoch (with other --epochs, another learning rate) and
    may not find it best, leaving the best model of an abandoned attempt."""
    from emovit.training import trainer

    _always_better(monkeypatch)
    run = tmp_path / "run"
    train(_config(dataset, run, epochs=1), progress=False)
    committed = (run / "model.safetensors").read_bytes()
    save = trainer._save_checkpoint

    def killed(*args: Any, **kwargs: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(trainer, "_save_checkpoint", killed)
    with pytest.raises(KeyboardInterrupt):
        train(_config(dataset, run, epochs=3), resume=True, progress=False)
    assert (run / "model.safetensors").read_bytes() == committed  # epoch 2 was never committed
    monkeypatch.setattr(trainer, "_save_checkpoint", save)


def test_a_kill_after_an_epoch_is_committed_is_finished_by_the_resume(
    dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Killed after the checkpoint committed a new best epoch but before its model was
    published: the resume publishes the model staged in the checkpoint."""
    from emovit.training import trainer

    _always_better(monkeypatch)
    run = tmp_path / "run"
    publish, published = trainer._publish_best, []

    def killed_on_epoch_two(out: Path, staged: Path) -> None:
        published.append(staged)
        if len(published) == 2:
            raise KeyboardInterrupt
        publish(out, staged)

    monkeypatch.setattr(trainer, "_publish_best", killed_on_epoch_two)
    with pytest.raises(KeyboardInterrupt):
        train(_config(dataset, run, epochs=2), progress=False)
    staged = run / "checkpoint" / "best" / "model.safetensors"
    assert json.loads((run / "checkpoint" / "state.json").read_text())["best_epoch"] == 2
    assert (run / "model.safetensors").read_bytes() != staged.read_bytes()  # still epoch 1's
    monkeypatch.setattr(trainer, "_publish_best", publish)
    result = train(_config(dataset, run, epochs=2), resume=True, progress=False)
    assert result.best_epoch == 2 and result.epochs_run == 2
    assert (run / "model.safetensors").read_bytes() == staged.read_bytes()
    assert not list(run.glob(".*.part"))  # no temporary file left behind


def test_training_selects_on_the_macro_f1_that_evaluate_reports(tmp_path: Path) -> None:
    """The trainer averaged F1 over every class, `emovit evaluate` over the classes present: on
    a validation split without some class the run chose its best epoch on a smaller number
    than the one reported for it."""
    import shutil

    from emovit.evaluation import evaluate
    from emovit.faces import FaceOptions

    root = tmp_path / "faces"
    write_dataset(root, {"train": 12, "validation": 6, "test": 2})
    shutil.rmtree(root / "validation" / "surprise")
    result = train(_config(root, tmp_path / "run", epochs=1), progress=False)
    report = evaluate(result.output, root, split="validation", faces=FaceOptions(detector="none"))
    assert result.history[0]["val_macro_f1"] == pytest.approx(report.macro_f1, abs=1e-9)
    assert result.history[0]["val_accuracy"] == pytest.approx(report.accuracy, abs=1e-9)


def test_the_held_out_validation_set_does_not_depend_on_the_seed(tmp_path: Path) -> None:
    """Without a validation split, the images held out for it were drawn with the run's
    --seed: runs of two seeds were chosen and compared on different images. The same model
    (lr 0) now scores the same on the held-out set whatever the seed; a run saved before keeps
    its own holdout when resumed."""
    import shutil

    root = tmp_path / "faces"
    write_dataset(root, {"train": 20})
    start = train(_config(root, tmp_path / "start", epochs=1), progress=False)
    kw = {"epochs": 1, "arch": None, "init": str(start.output), "lr": 0.0, "min_lr": 0.0}
    losses = {
        seed: train(_config(root, tmp_path / f"seed{seed}", seed=seed, **kw), progress=False).history[0][
            "val_loss"
        ]
        for seed in (0, 1, 2)
    }
    assert losses[1] == pytest.approx(losses[0], abs=1e-9) and losses[2] == pytest.approx(losses[0], abs=1e-9)
    saved = json.loads((tmp_path / "seed1" / "training_config.json").read_text())["config"]
    assert saved["holdout_seed"] == 0
    del saved["holdout_seed"]
    assert TrainConfig.from_dict(saved).holdout_seed == 1  # an older run: its seed drew its holdout
    shutil.rmtree(tmp_path / "start")


def test_fp16_loss_scale_is_kept_in_the_checkpoint(tmp_path: Path) -> None:
    """fp16 training's loss scale was not checkpointed: a resume started again from 65,536."""
    import torch

    from emovit.training.trainer import _restore_scaler, _save_checkpoint

    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    scaler.scale(torch.ones(()))  # the scale is made on first use
    scaler.update(new_scale=256.0)
    _save_checkpoint(tmp_path / "ckpt", model, optimizer, scheduler, {"epoch": 1}, scaler=scaler)
    fresh = torch.amp.GradScaler("cpu", init_scale=65536.0)
    _restore_scaler(fresh, tmp_path / "ckpt")
    assert fresh.get_scale() == 256.0
    _save_checkpoint(tmp_path / "plain", model, optimizer, scheduler, {"epoch": 1})
    untouched = torch.amp.GradScaler("cpu", init_scale=65536.0)
    _restore_scaler(untouched, tmp_path / "plain")  # saved without fp16: nothing to restore
    assert untouched.get_scale() == 65536.0


def test_a_run_paused_before_macro_f1_changed_resumes_on_the_same_scale(tmp_path: Path) -> None:
    """A checkpoint saved when macro-F1 averaged over every class holds a best score K/P times
    smaller than today's (P classes present in validation): its first resumed epoch counted as
    better and replaced the best model. It is rescaled on resume."""
    import shutil

    root = tmp_path / "faces"
    write_dataset(root, {"train": 12, "validation": 6, "test": 2})
    shutil.rmtree(root / "validation" / "surprise")  # 3 of the 4 classes present
    run = tmp_path / "run"
    first = train(_config(root, run, epochs=1), progress=False)
    state_file = run / "checkpoint" / "state.json"
    state = json.loads(state_file.read_text())
    assert state["f1_over"] == "present" and state["best_f1"] == pytest.approx(
        first.history[0]["val_macro_f1"]
    )
    del state["f1_over"]
    state["best_f1"] *= 3 / 4  # as the older trainer saved it
    state_file.write_text(json.dumps(state))
    (run / "run_state.json").unlink()  # paused, not finished
    kw = {"lr": 0.0, "min_lr": 0.0, "warmup_epochs": 0.0}  # epoch 2 scores as epoch 1 did
    resumed = train(_config(root, run, epochs=2, **kw), resume=True, progress=False)
    assert resumed.history[1]["val_macro_f1"] == pytest.approx(resumed.history[0]["val_macro_f1"])
    assert resumed.best_epoch == 1


def test_the_speed_record_keeps_the_latest_figure_of_every_cpu(tmp_path: Path, monkeypatch: Any) -> None:
    """CPUs differ between machines: benchmarking the default model on one CPU keeps the last
    figure measured on each other CPU, and the card names every CPU with its figure."""
    import importlib.util

    from emovit.training.card import _speed_line

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_backends.py"
    spec = importlib.util.spec_from_file_location("bench_backends_under_test", path)
    assert spec and spec.loader
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    monkeypatch.setattr(bench, "RESULTS", tmp_path)

    def report(cpu: str, flags: list[str], fps: float, cores: int = 2) -> dict[str, Any]:
        backends = {"torch": {"faces_per_s": fps / 3}, "onnx-fp32": {"faces_per_s": fps}}
        machine = {"model": cpu, "flags": flags, "cores": cores}
        return {
            "backends": backends,
            "crops_batch_size": 256,
            "crops": 2048,
            "threads": 2,
            "machine": machine,
        }

    def written() -> dict[str, Any]:
        return json.loads((tmp_path / "default_speed.json").read_text())

    bench.write_default_speed(report("AMD EPYC", ["avx2"], 1000.0))
    bench.write_default_speed(report("Xeon", ["avx2", "avx512f"], 1600.0))
    assert written()["faces_per_s"] == 1600.0
    assert [r["faces_per_s"] for r in written()["other_machines"]] == [1000.0]
    bench.write_default_speed(report("AMD EPYC", ["avx2"], 1100.0))  # the same CPU again: replaced
    record = written()
    assert record["faces_per_s"] == 1100.0
    assert [(r["machine"]["model"], r["faces_per_s"]) for r in record["other_machines"]] == [("Xeon", 1600.0)]
    assert all("other_machines" not in r for r in record["other_machines"])
    bench.write_default_speed(report("Xeon", ["avx2", "avx512f"], 5000.0, cores=16))  # more cores: another
    assert [r["faces_per_s"] for r in written()["other_machines"]] == [1100.0, 1600.0]
    bench.write_default_speed(report("AMD EPYC", ["avx2"], 1100.0))
    line = _speed_line(written())
    assert "1100 faces/s" in line and "(AMD EPYC; avx2)" in line
    table = line.split("\n\n", 2)[-1].splitlines()
    assert table[0].startswith("| CPU | SIMD flags | cores |")
    rows = table[2:]
    assert len(rows) == 3 and rows[0].startswith("| AMD EPYC | avx2 | 2 |")  # this CPU first
    assert "| Xeon | avx2, avx512f | 2 |" in rows[2] and "| 1600 (`onnx-fp32`) |" in rows[2]
    assert "| Xeon | avx2, avx512f | 16 |" in rows[1] and "| 5000 (`onnx-fp32`) |" in rows[1]
    assert _speed_line({**written(), "other_machines": []}).endswith("--only default`.")  # one CPU: no table
    assert _speed_line(None).startswith("see `benchmarks/`")


def test_a_scripts_error_is_one_line_not_a_traceback(capsys: Any, monkeypatch: Any) -> None:
    """A misspelt model or data path ended the repository's scripts in a traceback."""
    from emovit.errors import ModelLoadError, script_exit

    monkeypatch.delenv("EMOVIT_DEBUG", raising=False)

    def missing() -> int:
        raise ModelLoadError("/nowhere: not a model folder")

    assert script_exit(missing) == 2 and capsys.readouterr().err == "error: /nowhere: not a model folder\n"
    assert (script_exit(lambda: None), script_exit(lambda: 75)) == (0, 75)
    script = Path(__file__).resolve().parents[1] / "scripts" / "robustness_report.py"
    proc = subprocess.run(
        [sys.executable, str(script), "--model", "/nowhere", "--limit", "2"],
        capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2 and "/nowhere" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
