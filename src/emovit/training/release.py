"""Package a trained run as a released model folder (the embedded default model is one):
evaluate it honestly on the test split (plain, flip-TTA and leak-free), copy its files and
framing, optionally add a verified ONNX export, and write its card.

``scripts/build_default_model.py`` (``make train-default``) is the command-line wrapper.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from emovit.errors import TrainError
from emovit.fileio import atomic_dir, write_text_atomic
from emovit.training.card import write_release_card

if TYPE_CHECKING:
    from emovit.training.adjust import TauRule

__all__ = ["refresh_card", "release_model"]

_FILES = ("config.json", "model.safetensors", "preprocessor_config.json")


def release_model(
    run: Path,
    dest: Path,
    data: Path,
    *,
    speed: Path | None = None,
    compare: Sequence[Path] = (),
    onnx: bool = False,
    labels: Path | None = None,
    robustness: Path | None = None,
    adjust_prior: bool = False,
    tau_rule: TauRule | None = None,
    augment_choice: Path | None = None,
) -> dict[str, Any]:
    """Evaluate `run` on ``data``'s test split (face crops: no detection) and write the released
    folder `dest`; returns the metrics (``plain``, ``tta``, ``leak_free``; with `labels`, the
    same three scored on the vote file's majority labels as ``ferplus_plain``, ``ferplus_tta``,
    ``ferplus_leak_free``).

    With `onnx`, an fp32 ``model.onnx`` verified against torch is added for the fast backend.
    `compare` names runs of other architectures for the card's comparison table; `speed` a
    benchmark record (JSON) for its speed line; `robustness` the folder of
    ``scripts/robustness_report.py`` (its ``robustness.md`` becomes a section of the card);
    `augment_choice` the folder of ``scripts/choose_augmentation.py`` (its ``choice.md`` too).
    With `adjust_prior`, a post-hoc logit adjustment chosen on the validation split
    (`emovit.training.adjust`, picked by `tau_rule`, default its ``DEFAULT_TAU_RULE``) is folded
    into the released weights first (``metrics`` then holds ``prior_adjustment``); every figure
    is measured on the released folder.
    """
    from emovit.backends import EXPORT_INFO, ONNX_FILE
    from emovit.evaluation import evaluate
    from emovit.faces import FaceOptions
    from emovit.models import FRAMING_FILE
    from emovit.training.soup import SOUP_FILE

    _check_release_paths(
        dest,
        {"run": run, "data": data, "speed": speed, "labels": labels, "robustness": robustness,
         "augment_choice": augment_choice, **{f"compare[{i}]": c for i, c in enumerate(compare)}},
    )  # fmt: skip
    metrics: dict[str, Any] = {}

    def build(stage: Path) -> None:  # a fresh folder, swapped in for `dest` only when complete
        for name in (*_FILES, FRAMING_FILE, SOUP_FILE):
            if name in _FILES or (run / name).is_file():
                shutil.copy(run / name, stage / name)
        config = json.loads((stage / "config.json").read_text())
        config.pop("emovit_random_weights", None)
        write_text_atomic(stage / "config.json", json.dumps(config, indent=2) + "\n")
        adjustment = None
        if adjust_prior:
            from emovit.training.adjust import (
                DEFAULT_TAU_RULE,
                apply_prior_adjustment,
                prior_labels_of,
                tune_prior_adjustment,
            )

            prior_labels = prior_labels_of(run, labels)
            adjustment = tune_prior_adjustment(
                run, data, labels=labels, prior_labels=prior_labels, rule=tau_rule or DEFAULT_TAU_RULE
            )
            if adjustment.tau != 0:
                apply_prior_adjustment(stage, adjustment)
        if onnx:
            from emovit.backends.export import export_onnx

            with tempfile.TemporaryDirectory() as tmp:
                export_onnx(str(stage), Path(tmp), check_images=64)
                shutil.copy(Path(tmp) / ONNX_FILE, stage / ONNX_FILE)
                info = json.loads((Path(tmp) / EXPORT_INFO).read_text())  # its check's figures
                info["source"] = str(dest)  # exported from the staging folder, released as `dest`
                write_text_atomic(stage / EXPORT_INFO, json.dumps(info, indent=2) + "\n")
        # the released folder itself is scored, with the backend `auto` gives users
        # leak-free: no duplicate of what training (train) or any choice (validation) saw
        seen = [data / "train", data / "validation"]
        cropped = FaceOptions(detector="none")  # the test split holds face crops
        reports = {
            "plain": evaluate(stage, data, stage / "evaluation", split="test", faces=cropped),
            "tta": evaluate(stage, data, None, split="test", faces=cropped, tta=True),
            "leak_free": evaluate(stage, data, None, split="test", faces=cropped, exclude_leaks=seen),
        }
        if labels is not None:
            reports["ferplus_plain"] = evaluate(
                stage, data, stage / "evaluation-ferplus", split="test", faces=cropped, labels=labels
            )
            reports["ferplus_tta"] = evaluate(
                stage, data, None, split="test", faces=cropped, tta=True, labels=labels
            )
            reports["ferplus_leak_free"] = evaluate(
                stage, data, None, split="test", faces=cropped, exclude_leaks=seen, labels=labels
            )
        shutil.move(str(stage / "evaluation" / "confusion_matrix.png"), stage / "confusion_matrix.png")
        (stage / "confusion_matrix_ferplus.png").unlink(missing_ok=True)
        if labels is not None:
            shutil.move(
                str(stage / "evaluation-ferplus" / "confusion_matrix.png"),
                stage / "confusion_matrix_ferplus.png",
            )
            shutil.rmtree(stage / "evaluation-ferplus")
        metrics.update({k: r.metrics for k, r in reports.items()})
        if adjustment is not None:
            metrics["prior_adjustment"] = adjustment.to_dict()
        if labels is not None:
            metrics["labels_file"] = str(labels)
        for report in metrics.values():  # scored in the staging folder, released as `dest`
            if isinstance(report, dict) and "model" in report:
                report["model"] = str(dest)
        write_text_atomic(stage / "metrics.json", json.dumps(metrics, indent=2) + "\n")
        shutil.rmtree(stage / "evaluation")
        refresh_card(
            run,
            stage,
            speed=speed,
            compare=compare,
            labels=labels,
            robustness=robustness,
            augment_choice=augment_choice,
        )

    atomic_dir(dest, build)  # a crash or Ctrl-C leaves the old release whole (weights, card, metrics)
    return metrics


#: What a release writes into its folder (anything else there is refused: the swap would drop it).
RELEASE_FILES = frozenset(
    {*_FILES, "emovit.json", "soup.json", "model.onnx", "export_info.json", "README.md", "metrics.json",
     "confusion_matrix.png", "confusion_matrix_ferplus.png",
     "evaluation", "evaluation-ferplus"}  # the last two: left by a release that stopped, before the swap
)  # fmt: skip


def _check_release_paths(dest: Path, inputs: dict[str, Path | None]) -> None:
    """Refuse a release that would lose files: the new folder replaces `dest` whole, so no
    input may live inside it, and it may hold only what a release writes."""
    target = dest.resolve()
    for name, path in inputs.items():
        if path is not None and path.resolve().is_relative_to(target):
            raise TrainError(f"{name} {path} is inside the release folder {dest}, which is replaced whole")
    if dest.is_dir():
        foreign = sorted(entry.name for entry in dest.iterdir() if entry.name not in RELEASE_FILES)
        if foreign:
            raise TrainError(
                f"{dest} holds {', '.join(foreign[:3])}{', ...' if len(foreign) > 3 else ''}, which a "
                "release does not write and the swap would delete: release into a new or released folder"
            )


def refresh_card(
    run: Path,
    dest: Path,
    *,
    speed: Path | None = None,
    compare: Sequence[Path] = (),
    labels: Path | None = None,
    robustness: Path | None = None,
    augment_choice: Path | None = None,
) -> Path:
    """(Re)write the card of the released folder `dest` from its ``metrics.json``: after a
    robustness report or a speed benchmark of the released model, without evaluating again."""
    from emovit.models import read_framing

    metrics = json.loads((dest / "metrics.json").read_text())
    speed_record = json.loads(speed.read_text()) if speed and speed.is_file() else None
    table = robustness / "robustness.md" if robustness is not None else None
    choice = augment_choice / "choice.md" if augment_choice is not None else None
    chosen_from = augment_choice / "choice.json" if augment_choice is not None else None
    candidates = (
        [Path(row["path"]) for row in json.loads(chosen_from.read_text())["rows"]]
        if chosen_from is not None and chosen_from.is_file()
        else []
    )
    return write_release_card(
        dest,
        run,
        metrics,
        speed=speed_record,
        compare=compare,
        framing=read_framing(dest),
        labels=labels,
        robustness=table.read_text() if table is not None and table.is_file() else None,
        augment_choice=choice.read_text() if choice is not None and choice.is_file() else None,
        candidates=candidates,
    )
