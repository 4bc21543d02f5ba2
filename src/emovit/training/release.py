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
from typing import Any

from emovit.fileio import write_text_atomic
from emovit.training.card import write_release_card

__all__ = ["release_model"]

_FILES = ("config.json", "model.safetensors", "preprocessor_config.json")


def release_model(
    run: Path,
    dest: Path,
    data: Path,
    *,
    speed: Path | None = None,
    compare: Sequence[Path] = (),
    onnx: bool = False,
) -> dict[str, Any]:
    """Evaluate `run` on ``data``'s test split (face crops: no detection) and write the released
    folder `dest`; returns the metrics (``plain``, ``tta``, ``leak_free``).

    With `onnx`, an fp32 ``model.onnx`` verified against torch is added for the fast backend.
    `compare` names runs of other architectures for the card's comparison table; `speed` a
    benchmark record (JSON) for its speed line.
    """
    from emovit.backends import ONNX_FILE
    from emovit.evaluation import evaluate
    from emovit.faces import FaceOptions
    from emovit.models import FRAMING_FILE, read_framing

    train_dir = data / "train"
    cropped = FaceOptions(detector="none")  # the test split holds face crops
    reports = {
        "plain": evaluate(run, data, dest / "evaluation", split="test", faces=cropped),
        "tta": evaluate(run, data, None, split="test", faces=cropped, tta=True),
        "leak_free": evaluate(run, data, None, split="test", faces=cropped, exclude_leaks=train_dir),
    }
    dest.mkdir(parents=True, exist_ok=True)
    for name in (*_FILES, FRAMING_FILE):
        if name in _FILES or (run / name).is_file():
            shutil.copy(run / name, dest / name)
    if onnx:
        from emovit.backends.export import export_onnx

        with tempfile.TemporaryDirectory() as tmp:
            export_onnx(str(run), Path(tmp), check_images=64)
            shutil.copy(Path(tmp) / ONNX_FILE, dest / ONNX_FILE)
    else:
        (dest / ONNX_FILE).unlink(missing_ok=True)
    config = json.loads((dest / "config.json").read_text())
    config.pop("emovit_random_weights", None)
    write_text_atomic(dest / "config.json", json.dumps(config, indent=2) + "\n")
    shutil.move(str(dest / "evaluation" / "confusion_matrix.png"), dest / "confusion_matrix.png")
    metrics = {k: r.metrics for k, r in reports.items()}
    write_text_atomic(dest / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    shutil.rmtree(dest / "evaluation")
    speed_record = json.loads(speed.read_text()) if speed and speed.is_file() else None
    write_release_card(dest, run, metrics, speed=speed_record, compare=compare, framing=read_framing(dest))
    return metrics
