"""The crop a model was trained on, saved beside its weights as ``emovit.json``.

Framing is a property of the model: a model trained on FER2013's tight crops wants tight
crops at inference too. `emovit train` writes the file; every door reads it through the
loaded model and uses it unless the user sets the option explicitly. Folders without the
file (the reference model, exported folders) get `Framing.default()`: margin 0.2,
alignment on, colour kept.

Keys of ``emovit.json`` (all optional; unknown keys are kept and ignored):
``face_margin`` (float, context around the detector's box as a fraction of its larger side),
``face_align`` (bool, level the eyes with the detector's landmarks), ``grey`` (bool, the model
was trained on grey faces: colour crops are converted before preprocessing).

Examples:
    >>> Framing.default().face_margin
    0.2
    >>> Framing.from_dict({"face_margin": 0.05, "grey": True}).grey
    True
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from emovit.errors import ModelLoadError

__all__ = ["FRAMING_FILE", "Framing", "read_framing", "read_framing_notes", "write_framing"]

FRAMING_FILE = "emovit.json"


@dataclass(frozen=True)
class Framing:
    """How faces were cropped for a model: margin, eye alignment, grey."""

    face_margin: float = 0.2
    face_align: bool = True
    grey: bool = False

    @classmethod
    def default(cls) -> Framing:
        """The framing of checkpoints that do not record one."""
        return cls()

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Framing:
        """Read the known keys of an ``emovit.json`` mapping, checking their types."""
        out = cls()
        margin = data.get("face_margin", out.face_margin)
        align = data.get("face_align", out.face_align)
        grey = data.get("grey", out.grey)
        if not isinstance(margin, int | float) or isinstance(margin, bool) or margin < 0:
            raise ValueError(f"face_margin must be a number >= 0, got {margin!r}")
        if not isinstance(align, bool) or not isinstance(grey, bool):
            raise ValueError(f"face_align and grey must be true or false, got {align!r}, {grey!r}")
        return cls(face_margin=float(margin), face_align=align, grey=grey)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def read_framing(folder: str | os.PathLike[str]) -> Framing | None:
    """The framing recorded in `folder`, or None when it records none."""
    path = Path(folder) / FRAMING_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        return Framing.from_dict(data)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"{path}: unreadable framing record ({exc})") from None


def read_framing_notes(folder: str | os.PathLike[str]) -> dict[str, Any]:
    """The keys of `folder`'s ``emovit.json`` other than the framing itself (e.g. ``chosen_by``,
    how the margin was chosen); empty when it records none or cannot be read."""
    path = Path(folder) / FRAMING_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    known = Framing.default().to_dict()
    return {k: v for k, v in data.items() if k not in known}


def write_framing(folder: str | os.PathLike[str], framing: Framing, **extra: Any) -> Path:
    """Write ``emovit.json`` into `folder` (atomically); `extra` keys are recorded too
    (e.g. how the margin was chosen)."""
    from emovit.fileio import write_text_atomic

    path = Path(folder) / FRAMING_FILE
    write_text_atomic(path, json.dumps({**framing.to_dict(), **extra}, indent=2) + "\n")
    return path
