"""Weight averaging of fine-tuned runs ("model soups", Wortsman et al., 2022).

Runs fine-tuned from the same model (``--init``) with different settings (augmentation, seed)
usually stay in one basin of the loss, and the average of their weights is one model, as fast
as each, that is often more accurate and more robust than any of them. `make_soup` averages
the weights of such runs into a model folder, BatchNorm running statistics included; with
`data`, those statistics are measured again on the training split instead (a forward pass in
training mode on the decoded, *unaugmented* images, no gradient, nothing else changes).

Measured on the default model's stage 5 (docs/reports/augment-choice): re-measuring on clean
images *hurts* models trained with photo degradations (their statistics were gathered on
degraded batches): the soup of the `robust`, `standard` and `strong` runs with BatchNorm measured
again scored a mean validation FER+ macro-F1 over the report's conditions (clean included) of
0.625, the soup of `robust` and `strong` with it averaged 0.652. Whether a soup is better is
decided like everything else: on the validation split.

The statistics are measured on every image of the train split whose folder label is one of the
model's classes, also for runs trained on vote labels (which skip the few images without an
emotion vote): a difference of well under 1 % of the images.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from emovit.errors import TrainError
from emovit.fileio import atomic_dir, sha256_of

__all__ = ["make_soup", "soup_is_current"]

#: What a soup folder records about its ingredients.
SOUP_FILE = "soup.json"

# config.json fields that may differ between ingredients (bookkeeping, not the architecture)
_FREE_FIELDS = {"emovit_random_weights", "emovit_prior_adjustment", "_name_or_path", "transformers_version"}


def _architecture(folder: Path) -> dict[str, Any]:
    config = json.loads((folder / "config.json").read_text())
    return {k: v for k, v in config.items() if k not in _FREE_FIELDS}


def make_soup(
    runs: Sequence[str | os.PathLike[str]],
    dest: str | os.PathLike[str],
    *,
    data: str | os.PathLike[str] | None = None,
    batch_size: int = 256,
    threads: int | None = None,
) -> Path:
    """Average the weights of `runs` (finished training runs or model folders of one
    architecture, labels, preprocessing and framing) into the model folder `dest`.

    With `data` (a dataset with a train split), the BatchNorm running statistics of the average
    are measured again on the training images, decoded as the trainer decodes them. The folder
    gets the first run's ``config.json``, ``preprocessor_config.json`` and ``emovit.json`` and a
    ``soup.json`` naming every ingredient (path and weights sha256). Returns `dest`.

    Raises:
        TrainError: fewer than two runs, a run without weights or configs, runs that differ in
            architecture, labels, preprocessing, framing or tensors, training runs continued
            from different models, an unfinished training run, or a prior-adjusted run (adjust
            the soup instead).
    """
    import torch
    from safetensors.torch import load_file, save

    from emovit.models import FRAMING_FILE
    from emovit.training.trainer import unfinished_run

    folders = [Path(r) for r in runs]
    if len(folders) < 2:
        raise TrainError(f"a soup needs at least two runs, got {len(folders)}")
    for folder in folders:
        for name in ("model.safetensors", "config.json", "preprocessor_config.json"):
            if not (folder / name).is_file():
                raise TrainError(f"{folder}: no {name}")
        if unfinished_run(folder):
            raise TrainError(f"{folder}: training is not finished")
        if "emovit_prior_adjustment" in json.loads((folder / "config.json").read_text()):
            raise TrainError(f"{folder}: its weights carry a prior adjustment; average the runs, then adjust")
    starts = {str(folder): _init(folder) for folder in folders if (folder / "training_config.json").is_file()}
    if len(set(starts.values())) > 1:  # a soup's card tells one chain of stages, then the average
        raise TrainError(
            "only runs continued from the same model average; these started from "
            + ", ".join(f"{run}: {init or 'scratch'}" for run, init in starts.items())
        )
    first = folders[0]
    for folder in folders[1:]:
        for name, read in (
            ("config.json", _architecture),
            ("preprocessor_config.json", lambda f: json.loads((f / "preprocessor_config.json").read_text())),
            (FRAMING_FILE, lambda f: _framing(f / FRAMING_FILE)),
        ):
            if read(folder) != read(first):
                raise TrainError(f"{folder}: its {name} differs from {first}'s; only alike runs average")
    states = [load_file(str(folder / "model.safetensors")) for folder in folders]
    keys = set(states[0])
    for folder, state in zip(folders[1:], states[1:], strict=True):
        if set(state) != keys or any(state[k].shape != states[0][k].shape for k in keys):
            raise TrainError(f"{folder}: its tensors differ from {first}'s")
    averaged: dict[str, torch.Tensor] = {}
    for key in sorted(keys):
        tensors = [state[key] for state in states]
        if tensors[0].is_floating_point():
            mean = torch.stack([t.double() for t in tensors]).mean(dim=0)
            averaged[key] = mean.to(tensors[0].dtype).contiguous()
        else:  # counters (BatchNorm's num_batches_tracked)
            averaged[key] = tensors[0].clone()

    def write(out: Path) -> None:  # into a fresh folder swapped in whole: no half-made soup
        for name in ("config.json", "preprocessor_config.json", FRAMING_FILE):
            if (first / name).is_file():
                shutil.copy(first / name, out / name)
        config = json.loads((out / "config.json").read_text())
        config.pop("emovit_random_weights", None)
        (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        weights = averaged
        (out / "model.safetensors").write_bytes(save(weights, metadata={"format": "pt"}))
        recomputed = None
        if data is not None:
            weights, recomputed = _recompute_batchnorm(out, weights, Path(data), batch_size, threads)
            if recomputed is not None:
                (out / "model.safetensors").write_bytes(save(weights, metadata={"format": "pt"}))
        record = {
            "ingredients": [
                {"path": str(folder), "weights_sha256": sha256_of(folder / "model.safetensors")}
                for folder in folders
            ],
            "average": "uniform",
            "data": None if data is None else str(data),
            "batchnorm_recomputed_on": recomputed,
        }
        (out / SOUP_FILE).write_text(json.dumps(record, indent=2) + "\n")

    out = Path(dest)
    atomic_dir(out, write)
    return out


def soup_is_current(
    runs: Sequence[str | os.PathLike[str]],
    dest: str | os.PathLike[str],
    data: str | os.PathLike[str] | None = None,
) -> bool:
    """Whether `dest` is already the soup of `runs` as they are now: its ``soup.json`` names the
    same runs, in order, with the same weights (sha256), made with the same `data` (BatchNorm
    measured again on it, or averaged without), and its weights are there."""
    record_path = Path(dest) / SOUP_FILE
    if not record_path.is_file() or not (Path(dest) / "model.safetensors").is_file():
        return False
    try:
        record = json.loads(record_path.read_text())
        recorded = record["ingredients"]
        # records older than the "data" key name it only where BatchNorm was measured again
        made_with = (
            record["data"] if "data" in record else (record["batchnorm_recomputed_on"] or {}).get("data")
        )
        current = [
            {"path": str(Path(r)), "weights_sha256": sha256_of(Path(r) / "model.safetensors")} for r in runs
        ]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False
    return bool(recorded == current) and made_with == (None if data is None else str(data))


def _init(folder: Path) -> str | None:
    """The ``--init`` a training run continued from (None from scratch)."""
    try:
        init = json.loads((folder / "training_config.json").read_text())["config"].get("init")
    except (OSError, ValueError, KeyError, AttributeError) as exc:
        raise TrainError(f"{folder}/training_config.json: unreadable ({exc})") from None
    return str(Path(init)) if init else None


def _framing(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    framing = json.loads(path.read_text())
    framing.pop("chosen_by", None)  # prose, not the framing
    return framing


def _recompute_batchnorm(
    folder: Path, weights: dict[str, Any], data: Path, batch_size: int, threads: int | None
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The averaged weights with BatchNorm running statistics measured on `data`'s train split
    (cumulative averages over one pass, as `torch.nn.BatchNorm2d` with ``momentum=None``)."""
    import torch

    from emovit.data import read_samples
    from emovit.models import load_torch_model, read_framing
    from emovit.training.inputs import TrainingInput

    loaded = load_torch_model(folder, float32=True)  # the average, as written
    model = loaded.model
    assert model is not None  # a folder with model.safetensors has a torch module
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return weights, None
    samples = read_samples(data, "train")
    classes = list(loaded.label_map.names)
    samples = [s for s in samples if s.label in classes]
    framing = read_framing(folder)
    inputs = TrainingInput.from_config(
        json.loads((folder / "preprocessor_config.json").read_text()), grey=bool(framing and framing.grey)
    )
    decoded = inputs.decode(samples, classes, threads=threads)
    model.eval()
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # a cumulative average over the pass
        norm.train()
    with torch.no_grad():
        for start in range(0, len(decoded.images), batch_size):
            model(pixel_values=inputs(decoded.images[start : start + batch_size]))
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    return {k: state.get(k, v) for k, v in weights.items()}, {
        "split": "train",
        "images": len(decoded.images),
        "data": str(data),
    }
