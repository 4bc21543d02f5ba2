"""Post-hoc logit adjustment (Menon et al., 2021), chosen on the validation split.

A model trained with the loss-side adjustment (``--logit-adjust``) or without it can still
lean too far towards (or away from) the frequent classes. Subtracting ``tau * log(prior)``
from its logits moves that balance; `tune_prior_adjustment` picks ``tau`` on the validation
split alone (the macro-F1 of the predictions, through the predictor, as `emovit evaluate`
scores them: by default its mean over bootstrap resamples, see `score_taus` and
``scripts/tau_rule_study.py``) and `apply_prior_adjustment` folds it into the classifier's
bias, so every door (CLI, server, ONNX export, video) sees the adjusted model without any code
of its own.

The prior is the training split's class mass (as the trainer's ``--logit-adjust`` counts it):
the folder labels, or with a FER+-style vote file the summed vote distributions the model was
trained on.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np

from emovit.errors import TrainError

__all__ = [
    "PriorAdjustment",
    "ValidationScores",
    "apply_prior_adjustment",
    "bootstrap_weights",
    "prior_labels_of",
    "score_taus",
    "tune_prior_adjustment",
    "validation_scores",
]

#: The values of tau tried: 0 (no change) and steps of 1/8 on both sides.
TAUS: tuple[float, ...] = tuple(float(t) for t in np.round(np.arange(-1.0, 1.0001, 0.125), 3))
#: How ``tau`` is picked from the validation table (`score_taus`).
TauRule = Literal["none", "best", "resampled", "confident"]
TAU_RULES: tuple[str, ...] = get_args(TauRule)
#: The rule releases use. ``scripts/tau_rule_study.py`` chose it on validation alone
#: (docs/reports/tau-rule/): over 14 candidate models, no rule that shifts the logits scored
#: better on held-out halves than leaving them as trained, so a release keeps tau 0 unless a
#: rule is asked for (the table is still scored and shown on the card).
DEFAULT_TAU_RULE: TauRule = "none"
#: Bootstrap resamples of the ``resampled`` and ``confident`` rules.
RESAMPLES = 1000
#: The share of resamples on which a tau must beat tau 0 for the ``confident`` rule.
CONFIDENT_SHARE = 0.9


@dataclass
class PriorAdjustment:
    """The chosen ``tau``, the prior it scales (label -> share) and what each ``tau`` scored on
    validation (``tau``, accuracy, macro-F1 and per-class recall)."""

    tau: float
    prior: dict[str, float]
    table: list[dict[str, Any]] = field(repr=False, default_factory=list)
    #: how ``tau`` was picked from the table (see `score_taus`), and with how many resamples
    rule: str = "best"
    resamples: int = 0

    def row(self, tau: float) -> dict[str, Any]:
        """The validation row of `tau`."""
        return next(r for r in self.table if abs(r["tau"] - tau) < 1e-9)

    def to_dict(self) -> dict[str, Any]:
        record: dict[str, Any] = {"tau": self.tau, "rule": self.rule, "prior": self.prior}
        if self.resamples:
            record["resamples"] = self.resamples
        return {**record, "validation": self.table}


def _prior(data: Path, classes: Sequence[str], labels: str | os.PathLike[str] | None) -> np.ndarray:
    from emovit.data import read_samples, read_vote_labels, vote_targets

    samples = read_samples(data, "train")
    if labels is not None:
        from emovit.labels import EMOTIONS

        _, targets = vote_targets(samples, read_vote_labels(labels), list(EMOTIONS))
        by_emotion = dict(zip(EMOTIONS, targets.sum(axis=0).astype(np.float64), strict=True))
        mass = np.array([by_emotion.get(c, 0.0) for c in classes])
    else:
        mass = np.array([sum(s.label == c for s in samples) for c in classes], dtype=np.float64)
    mass = np.maximum(mass, 1.0)  # as the trainer's --logit-adjust: an absent class counts one image
    return mass / mass.sum()


@dataclass
class ValidationScores:
    """A model's probabilities on the validation split, the truth (class indices) and the
    training prior, all in the model's class order: what every ``tau`` is scored on."""

    classes: list[str]
    probs: np.ndarray
    y_true: np.ndarray
    prior: np.ndarray


def validation_scores(
    model: str | os.PathLike[str],
    data: str | os.PathLike[str],
    *,
    labels: str | os.PathLike[str] | None = None,
    prior_labels: str | os.PathLike[str] | None = None,
    batch_size: int = 256,
) -> ValidationScores:
    """Run every validation image of `data` through the predictor once (face crops: no
    detection). With `labels`, the truth is the vote file's majority label. The prior is the
    training split's class mass on the labels the model was trained on: the vote mass of
    `prior_labels` (a vote file), else the folder labels. Images that fail are left out."""
    from emovit.data import majority_samples, read_samples, read_vote_labels
    from emovit.predictor import EmotionRecognizer

    data = Path(data)
    rec = EmotionRecognizer.from_pretrained(model, detector="none", batch_size=batch_size)
    classes = list(rec.model.label_map.names)
    prior = _prior(data, classes, prior_labels)
    samples = read_samples(data, "validation")
    if labels is not None:
        samples = majority_samples(samples, read_vote_labels(labels))
    truth = [s.label for s in samples]
    kept = [i for i, t in enumerate(truth) if t in classes]
    if not kept:
        raise TrainError(f"{data}: no validation image with a label among {', '.join(classes)}")
    rows: list[list[float]] = []
    scored: list[int] = []
    for start in range(0, len(kept), batch_size):
        chunk = kept[start : start + batch_size]
        for index, result in zip(chunk, rec.predict([samples[i].source for i in chunk]), strict=True):
            if result.ok and result.faces:
                face = result.faces[0].probs
                rows.append([face[c] for c in classes])
                scored.append(index)
    if not scored:
        raise TrainError(f"{data}: no validation image could be scored")
    y_true = np.array([classes.index(str(truth[i])) for i in scored])
    return ValidationScores(classes, np.asarray(rows, dtype=np.float64), y_true, prior)


def prior_labels_of(run: str | os.PathLike[str], labels: str | os.PathLike[str] | None) -> Path | None:
    """The vote file whose mass is `run`'s prior: the one it was trained on (recorded in its
    ``training_config.json``; a soup's first ingredient's), else `labels` when that record's
    path no longer exists here; None for a run trained on the folder labels."""
    from emovit.training.card import recipe_run

    config = json.loads((recipe_run(Path(run)) / "training_config.json").read_text())["config"]
    trained_on = config.get("labels")
    if not trained_on:
        return None
    if Path(trained_on).is_file():
        return Path(trained_on)
    if labels is None:
        raise TrainError(f"{run} was trained on the votes of {trained_on}: pass that file as labels")
    return Path(labels)


def bootstrap_weights(n: int, resamples: int, seed: int = 0) -> np.ndarray:
    """``(resamples, n)`` counts: how often each of `n` items is drawn in each bootstrap
    resample (`n` draws with replacement), reproducible from `seed`."""
    rng = np.random.default_rng(seed)
    return rng.multinomial(n, np.full(n, 1.0 / n), size=resamples).astype(np.float64)


def score_taus(
    scores: ValidationScores,
    taus: Sequence[float] = TAUS,
    *,
    rule: TauRule = DEFAULT_TAU_RULE,
    resamples: int = RESAMPLES,
    seed: int = 0,
) -> PriorAdjustment:
    """Score each ``tau`` (``log p - tau * log prior`` re-ranks the same probabilities) and
    pick one by `rule`:

    * ``none``: tau 0, the model as trained (the table is still scored, for the card);
    * ``best``: the highest macro-F1 on `scores`;
    * ``resampled``: the highest mean macro-F1 over `resamples` bootstrap resamples of them
      (drawn from `seed`), which a handful of rare-class images swing less than the single figure;
    * ``confident``: as ``resampled``, among the taus that beat no adjustment (tau 0) on at
      least `CONFIDENT_SHARE` of the same resamples; tau 0 when none does.

    Ties: the smallest ``|tau|``.
    """
    if rule not in TAU_RULES:
        raise TrainError(f"tau rule {rule!r}: expected one of {', '.join(TAU_RULES)}")
    if 0 not in taus:
        raise TrainError("the taus tried must include 0 (no adjustment)")
    from emovit.evaluation import macro_f1, resampled_macro_f1

    y_true = scores.y_true
    log_p = np.log(np.maximum(scores.probs, 1e-12))
    log_prior = np.log(scores.prior)
    resampling = rule in ("resampled", "confident")
    weights = bootstrap_weights(len(y_true), resamples, seed) if resampling else None
    none = resampled_macro_f1(y_true, log_p.argmax(axis=1), weights) if weights is not None else None
    table: list[dict[str, Any]] = []
    for tau in taus:
        y_pred = (log_p - tau * log_prior).argmax(axis=1)
        row: dict[str, Any] = {
            "tau": float(tau),
            "accuracy": round(float((y_pred == y_true).mean()), 4),
            "macro_f1": round(macro_f1(y_true, y_pred), 4),
            "recall": {
                c: round(float((y_pred[y_true == k] == k).mean()), 3) if (y_true == k).any() else None
                for k, c in enumerate(scores.classes)
            },
        }
        if weights is not None and none is not None:
            f1 = resampled_macro_f1(y_true, y_pred, weights)
            row["macro_f1_resampled"] = round(float(f1.mean()), 4)
            row["macro_f1_resampled_sd"] = round(float(f1.std()), 4)
            row["beats_none_share"] = round(float((f1 > none).mean()), 4) if tau else None
        table.append(row)
    candidates = table
    if rule == "none":
        candidates = [r for r in table if not r["tau"]]
    elif rule == "confident":
        candidates = [r for r in table if not r["tau"] or r["beats_none_share"] >= CONFIDENT_SHARE]
    key = "macro_f1_resampled" if resampling else "macro_f1"
    chosen = max(candidates, key=lambda r: (r[key], -abs(r["tau"])))
    prior = dict(zip(scores.classes, scores.prior.round(6).tolist(), strict=True))
    return PriorAdjustment(
        float(chosen["tau"]), prior, table, rule=rule, resamples=resamples if resampling else 0
    )


def tune_prior_adjustment(
    model: str | os.PathLike[str],
    data: str | os.PathLike[str],
    *,
    labels: str | os.PathLike[str] | None = None,
    prior_labels: str | os.PathLike[str] | None = None,
    taus: Sequence[float] = TAUS,
    rule: TauRule = DEFAULT_TAU_RULE,
    resamples: int = RESAMPLES,
    batch_size: int = 256,
) -> PriorAdjustment:
    """Pick ``tau`` for `model` on `data`'s validation split: `validation_scores`, then
    `score_taus` with `rule` (see both)."""
    scores = validation_scores(model, data, labels=labels, prior_labels=prior_labels, batch_size=batch_size)
    return score_taus(scores, taus, rule=rule, resamples=resamples)


def _classifier_bias(model: Any, num_labels: int) -> str:
    """The state-dict key of the bias of the layer that produces the logits."""
    import torch

    linear = [
        (name, module)
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear)
        and module.out_features == num_labels
        and module.bias is not None
    ]
    if not linear:
        raise TrainError(f"{type(model).__name__}: no linear classifier with a bias to adjust")
    return f"{linear[-1][0]}.bias"


def apply_prior_adjustment(folder: str | os.PathLike[str], adjustment: PriorAdjustment) -> Path:
    """Fold ``-tau * log(prior)`` into the classifier bias of the model in `folder` (its
    ``model.safetensors`` is rewritten atomically) and record the adjustment in its
    ``config.json`` (``emovit_prior_adjustment``). Returns the weights file.

    The weights' own metadata records the adjustment too, and they are written first: a crash
    between the two files is finished by the next call (the config written, the bias not
    shifted twice), never taken for an unadjusted model.
    """
    from safetensors import safe_open
    from safetensors.torch import load_file, save

    from emovit.fileio import atomic_open, write_text_atomic
    from emovit.models import load_torch_model

    folder = Path(folder)
    config_path = folder / "config.json"
    if "emovit_prior_adjustment" in json.loads(config_path.read_text()):
        raise TrainError(f"{folder}: already adjusted (config.json has emovit_prior_adjustment)")
    record = {"tau": adjustment.tau, "prior": adjustment.prior}
    weights_path = folder / "model.safetensors"
    with safe_open(str(weights_path), framework="pt") as handle:
        written = (handle.metadata() or {}).get("emovit_prior_adjustment")
    if written is not None:  # the weights were adjusted, the config not yet: finish it
        if json.loads(written) != json.loads(json.dumps(record)):
            raise TrainError(
                f"{weights_path}: already adjusted with tau {json.loads(written).get('tau')} "
                "(its metadata), not this adjustment"
            )
        _record_adjustment(config_path, record, write_text_atomic)
        return weights_path
    loaded = load_torch_model(folder)
    classes = list(loaded.label_map.names)
    if set(classes) != set(adjustment.prior):
        raise TrainError(f"{folder}: its labels {classes} are not the adjustment's {list(adjustment.prior)}")
    key = _classifier_bias(loaded.model, len(classes))
    weights = load_file(str(weights_path))
    if key not in weights:
        raise TrainError(f"{weights_path}: no tensor {key!r}")
    shift = -adjustment.tau * np.log([adjustment.prior[c] for c in classes])
    import torch

    bias = weights[key]
    weights[key] = (bias.double() + torch.from_numpy(shift)).to(bias.dtype).contiguous()
    with atomic_open(weights_path, "wb") as handle:
        handle.write(save(weights, metadata={"format": "pt", "emovit_prior_adjustment": json.dumps(record)}))
    _record_adjustment(config_path, record, write_text_atomic)
    return weights_path


def _record_adjustment(config_path: Path, record: dict[str, Any], write: Any) -> None:
    config = json.loads(config_path.read_text())
    config["emovit_prior_adjustment"] = record
    write(config_path, json.dumps(config, indent=2) + "\n")
