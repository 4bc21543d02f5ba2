"""Weight averaging (`emovit.training.soup`): the mean of the weights, BatchNorm statistics
measured again on the training split, and refusals for runs that do not average."""

import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from emovit.errors import DatasetError
from emovit.models import build_random_model, load_model, load_torch_model
from emovit.training import TrainError

from .training_data import CLASSES, dataset_fixture

pytest.importorskip("accelerate")


dataset = dataset_fixture("soup", {"train": 5, "validation": 2, "test": 1})


def _runs(tmp_path: Path, preset: str = "resnet-teacher-64") -> list[Path]:
    labels = dict(enumerate(CLASSES))
    return [
        build_random_model(tmp_path / f"run{seed}", preset, id2label=labels, seed=seed) for seed in (0, 1, 2)
    ]


def test_a_soup_is_the_mean_of_the_weights_with_batchnorm_measured_again(
    dataset: Path, tmp_path: Path
) -> None:
    import torch

    from emovit.training.soup import make_soup

    runs = _runs(tmp_path)
    soup = make_soup(runs, tmp_path / "soup", data=dataset, batch_size=1000)
    weights = load_file(str(soup / "model.safetensors"))
    ingredients = [load_file(str(run / "model.safetensors")) for run in runs]
    for key in ("classifier.1.weight", "resnet.embedder.embedder.convolution.weight"):
        np.testing.assert_allclose(weights[key], np.mean([w[key] for w in ingredients], axis=0), atol=1e-6)
    # BatchNorm statistics are not the mean of the ingredients' (random-init zeros and ones) but
    # the statistics of the averaged network's activations on the training images
    key = "resnet.embedder.embedder.normalization.running_mean"
    assert not np.allclose(weights[key], np.mean([w[key] for w in ingredients], axis=0))
    model = load_torch_model(soup).model
    assert model is not None
    seen: list[torch.Tensor] = []
    handle = model.resnet.embedder.embedder.normalization.register_forward_hook(
        lambda _m, args, _out: seen.append(args[0].detach())
    )
    from emovit.data import read_samples
    from emovit.training.inputs import TrainingInput

    inputs = TrainingInput.from_config(json.loads((soup / "preprocessor_config.json").read_text()))
    decoded = inputs.decode(read_samples(dataset, "train"), CLASSES)
    with torch.no_grad():
        model(pixel_values=inputs(decoded.images))
    handle.remove()
    np.testing.assert_allclose(weights[key], seen[0].mean(dim=(0, 2, 3)).numpy(), rtol=1e-4, atol=1e-5)
    record = json.loads((soup / "soup.json").read_text())
    assert [i["path"] for i in record["ingredients"]] == [str(r) for r in runs]
    assert record["batchnorm_recomputed_on"]["images"] == len(decoded.images) == 5 * len(CLASSES)
    assert load_model(soup).label_map.names == tuple(CLASSES)  # a normal model folder


def test_runs_that_do_not_average_are_refused(tmp_path: Path) -> None:
    from emovit.training.soup import make_soup

    runs = _runs(tmp_path / "a")
    with pytest.raises(TrainError, match="at least two"):
        make_soup(runs[:1], tmp_path / "one")
    other = build_random_model(tmp_path / "vit", "vit-test", id2label=dict(enumerate(CLASSES)))
    with pytest.raises(TrainError, match=r"config\.json differs"):
        make_soup([runs[0], other], tmp_path / "mixed")
    config = json.loads((runs[1] / "config.json").read_text())
    config["emovit_prior_adjustment"] = {"tau": 0.5, "prior": {}}
    (runs[1] / "config.json").write_text(json.dumps(config))
    with pytest.raises(TrainError, match="prior adjustment"):
        make_soup(runs, tmp_path / "adjusted")
    assert not (tmp_path / "mixed").exists() and not (tmp_path / "adjusted").exists()


def test_an_unfinished_run_is_not_an_ingredient(tmp_path: Path) -> None:
    from emovit.training.soup import make_soup

    runs = _runs(tmp_path)
    (runs[2] / "training_config.json").write_text('{"config": {}}')  # a run without run_state.json
    with pytest.raises(TrainError, match="not finished"):
        make_soup(runs, tmp_path / "soup")
    (runs[2] / "run_state.json").write_text(json.dumps({"complete": True}))
    soup = make_soup(runs, tmp_path / "soup")
    assert (soup / "soup.json").is_file()


def test_a_soup_is_current_until_an_ingredient_changes(tmp_path: Path) -> None:
    from emovit.training.soup import make_soup, soup_is_current

    runs = _runs(tmp_path, "vit-test")
    assert not soup_is_current(runs, tmp_path / "soup")
    make_soup(runs, tmp_path / "soup")
    assert soup_is_current(runs, tmp_path / "soup")
    assert not soup_is_current(runs[:2], tmp_path / "soup")  # other ingredients
    build_random_model(runs[1], "vit-test", id2label=dict(enumerate(CLASSES)), seed=7)  # retrained
    assert not soup_is_current(runs, tmp_path / "soup")


def test_a_soup_made_without_data_is_not_current_for_data(dataset: Path, tmp_path: Path) -> None:
    """BatchNorm measured again or averaged are two different soups: asking for the other one
    makes it again."""
    from emovit.training.soup import make_soup, soup_is_current

    runs = _runs(tmp_path)
    make_soup(runs, tmp_path / "soup")
    assert soup_is_current(runs, tmp_path / "soup") and not soup_is_current(runs, tmp_path / "soup", dataset)
    make_soup(runs, tmp_path / "soup", data=dataset, batch_size=1000)
    assert soup_is_current(runs, tmp_path / "soup", dataset) and not soup_is_current(runs, tmp_path / "soup")


def test_a_soup_that_fails_part_way_leaves_the_old_folder(tmp_path: Path) -> None:
    """Measuring BatchNorm on a dataset without a train split fails after the average is made:
    the folder keeps the previous soup, whole, and no half-made one appears."""
    from emovit.training.soup import make_soup

    runs = _runs(tmp_path)
    make_soup(runs, tmp_path / "soup")
    before = {p.name: p.read_bytes() for p in (tmp_path / "soup").iterdir()}
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DatasetError, match="train split"):
        make_soup(runs, tmp_path / "soup", data=empty)
    assert {p.name: p.read_bytes() for p in (tmp_path / "soup").iterdir()} == before
    with pytest.raises(DatasetError, match="train split"):
        make_soup(runs, tmp_path / "new", data=empty)
    assert not (tmp_path / "new").exists()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
