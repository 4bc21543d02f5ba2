"""The exception hierarchy: every error emovit raises on purpose derives from `EmovitError`.

```
EmovitError                      base; `option` names the argument an error concerns, if any
├── InputError (ValueError)      one input failed at one stage: `source`, `code`, `stage`
│   └── ImageError               ... at the decode stage (missing, empty, corrupt, too large)
├── ModelLoadError               a model cannot be found, downloaded or loaded
│   └── DownloadError            a verified download (the YuNet model) failed
├── OptionError (ValueError)     option values that cannot work (together, or on this machine)
├── LabelError (ValueError)      a checkpoint's labels do not map onto the seven emotions
├── NoFaceError                  no face found, with ``no_face="raise"``
├── DependencyError (ImportError) an optional extra is missing: `package`, `extra`
├── DatasetError (ValueError)    a dataset folder, CSV or label file is unusable
├── TrainError                   training cannot start or continue
├── ExportError                  an ONNX export failed or does not match torch
└── StorageError (OSError)       results could not be written where they go (a full disk, S3)
RandomWeightsWarning (UserWarning) a model with random weights was loaded
```

Programs never read messages: `option`, `source`, `code` and `stage` say what an error is
about (the CLI turns `option` into the flag to blame, the server `code` into a status).

Examples:
    >>> from emovit.errors import EmovitError, ImageError
    >>> issubclass(ImageError, EmovitError)
    True
    >>> ImageError("a.jpg", "no such file", "not_found").stage
    'decode'
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

__all__ = [
    "ERROR_CODES",
    "DatasetError",
    "DependencyError",
    "DownloadError",
    "EmovitError",
    "ErrorStage",
    "ExportError",
    "ImageError",
    "InputError",
    "LabelError",
    "ModelLoadError",
    "NoFaceError",
    "OptionError",
    "RandomWeightsWarning",
    "StorageError",
    "TrainError",
    "check_count",
    "check_flag",
    "check_real",
    "first_line",
    "script_exit",
]

#: Where an input failed; ``worker`` only on the Ray engine (the worker died, stage unknown).
ErrorStage = Literal["decode", "detect", "crop", "preprocess", "model", "worker"]

#: Every ``error_code`` a failed input can carry, with its stage and meaning (the README's table).
ERROR_CODES: dict[str, tuple[str, str]] = {
    "not_found": ("decode", "no such file, a folder, or a file that cannot be opened"),
    "not_a_file": ("decode", "a FIFO, socket or device, not a regular file"),
    "empty_file": ("decode", "a file or byte string with no bytes, or an image with no pixels"),
    "unsupported_format": (
        "decode",
        "not an image in a format emovit reads (JPEG, PNG, GIF, WebP, TIFF, BMP, PNM, AVIF, HEIF, JPEG 2000)",
    ),
    "unsupported_input": ("decode", "an input of a kind emovit does not take (text-mode file, ...)"),
    "corrupt_image": ("decode", "truncated or damaged image data"),
    "too_many_pixels": ("decode", "more pixels than max_pixels (decompression bomb guard)"),
    "bad_array": ("decode", "a numpy array of the wrong dtype or shape"),
    "bad_base64": ("decode", "an image of a JSON request to the server that is not valid base64"),
    "detector_failed": ("detect", "the face detector raised on this image"),
    "crop_failed": ("crop", "cropping or aligning a face failed"),
    "preprocess_failed": ("preprocess", "resizing or normalising a face failed"),
    "model_failed": ("model", "the model raised on this input (its batch was retried alone)"),
    "no_face": ("detect", "no face found, with no_face='raise'"),
    "no_video_stream": ("decode", "a media file without a video stream (audio only)"),
    "corrupt_video": (
        "decode",
        "damaged video data: not one frame could be decoded, or a container cut before its index",
    ),
    "start_after_end": (
        "decode",
        "a video whose frames all come before the `start` option: nothing to analyse",
    ),
    "no_frame_rate": ("decode", "a video whose frames carry no timestamps and that has no frame rate"),
    "too_large": ("decode", "a photo URL over the Ray engine's read limit (max_bytes, 256 MiB)"),
    "worker_failed": (
        "worker",
        "the Ray worker died on every try of this input alone (a crash or out of memory)",
    ),
}


class EmovitError(Exception):
    """Base class of every error emovit raises deliberately (catch this to catch them all).

    `option` names the library argument (``model``, ``detector``, ``precision``, …) the
    error concerns, or None."""

    option: str | None = None

    def __init__(self, *args: object, option: str | None = None) -> None:
        super().__init__(*args)
        if option is not None:
            self.option = option


class InputError(EmovitError, ValueError):
    """One input failed at one stage of the pipeline; the others go on.

    Attributes:
        source: the input's name (a path, or ``<bytes #3>``).
        problem: what went wrong, for people.
        code: what went wrong, for programs (a key of `ERROR_CODES`).
        stage: where: ``decode``, ``detect``, ``crop``, ``preprocess`` or ``model``
            (``worker`` on the Ray engine: its worker died, at a stage no one saw).
    """

    def __init__(self, source: str, problem: str, code: str, stage: ErrorStage | None = None) -> None:
        self.source = source
        self.problem = problem
        self.code = code
        self.stage: ErrorStage = stage or ERROR_CODES.get(code, ("decode", ""))[0]  # type: ignore[assignment]
        super().__init__(f"{source}: {problem}")


class ImageError(InputError):
    """An input could not be turned into an RGB image: missing, empty, truncated, not an
    image, too many pixels, or an array of the wrong shape or dtype. The message names the input."""

    def __init__(self, source: str, problem: str, code: str = "corrupt_image") -> None:
        super().__init__(source, problem, code, "decode")


class ModelLoadError(EmovitError):
    """A model could not be found, downloaded or loaded; the message says what to do."""

    option = "model"


class DownloadError(ModelLoadError):
    """A file could not be downloaded or failed its checksum (the YuNet detector model)."""

    option = "detector"


class OptionError(EmovitError, ValueError):
    """Option values that cannot work, together or on this machine (`option` names the one)."""


class LabelError(EmovitError, ValueError):
    """A checkpoint's labels cannot be mapped onto emovit's emotions (e.g. two ids, one emotion)."""


class NoFaceError(EmovitError):
    """No face was found in an image and the caller asked for an error (``no_face="raise"``)."""

    option = "no_face"


class DependencyError(EmovitError, ImportError):
    """An optional dependency is missing; the message gives the `pip install` that adds it."""

    def __init__(self, package: str, extra: str, purpose: str, *, option: str | None = None) -> None:
        self.package = package
        self.extra = extra
        super().__init__(
            f"{purpose} needs the optional package {package!r}: pip install 'emovit[{extra}]'",
            option=option,
        )


class DatasetError(EmovitError, ValueError):
    """A dataset folder, CSV or label file cannot be used (missing, empty, malformed)."""

    option = "data"


class TrainError(EmovitError):
    """Training cannot start or continue (bad options, existing output, missing checkpoint)."""


class ExportError(EmovitError):
    """An ONNX export failed, or the exported model disagrees with torch."""


class StorageError(EmovitError, OSError):
    """Results could not be written where they go (a full disk, a permission, an object store
    refusing): the job stops, what was written before stays (the CLI exits 1, not as a bug)."""


class RandomWeightsWarning(UserWarning):
    """A model with random weights was loaded (built for tests or demos): its output is noise."""


# --------------------------------------------------------------------------- option checks


def _is_bool(value: object) -> bool:
    """Python's bool or a numpy bool scalar."""
    kind = getattr(getattr(value, "dtype", None), "kind", None)
    return isinstance(value, bool) or (kind == "b" and getattr(value, "ndim", 1) == 0)


def check_count(value: object, option: str, minimum: int = 1, *, optional: bool = False) -> None:
    """`value` is a whole number (an int or a numpy integer, not a bool) of at least `minimum`
    (None too, when `optional`), else an `OptionError` naming `option`."""
    import numbers

    if value is None and optional:
        return
    if _is_bool(value) or not isinstance(value, numbers.Integral):
        raise OptionError(f"{option} must be a whole number, got {value!r}", option=option)
    if value < minimum:
        raise OptionError(f"{option} must be at least {minimum}, got {value}", option=option)


def check_real(
    value: object,
    option: str,
    low: float | None = None,
    high: float | None = None,
    *,
    optional: bool = False,
    above_low: bool = False,
) -> None:
    """`value` is a finite real number (not a bool) within [`low`, `high`] (within (`low`,
    `high`] with `above_low`; None too, when `optional`), else an `OptionError` naming `option`."""
    import math
    import numbers

    if value is None and optional:
        return
    if _is_bool(value) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise OptionError(f"{option} must be a finite number, got {value!r}", option=option)
    value = float(value)
    too_low = low is not None and (value <= low if above_low else value < low)
    if too_low or (high is not None and value > high):
        bounds = f"{'(' if above_low else '['}{low}, {high}]"
        if high is None:
            bounds = f"more than {low}" if above_low else f"{low} or more"
        elif low is None:
            bounds = f"{high} or less"
        else:
            bounds = f"in {bounds}"
        raise OptionError(f"{option} must be {bounds}, got {value}", option=option)


def check_flag(value: object, option: str, *, optional: bool = False) -> None:
    """`value` is True or False (None too, when `optional`), else an `OptionError` naming `option`."""
    if value is None and optional:
        return
    if not _is_bool(value):
        raise OptionError(f"{option} must be True or False, got {value!r}", option=option)


def first_line(exc: BaseException) -> str:
    """An error's message on one line (safetensors, torch and the ONNX exporter add context
    lines after the first); its type's name when it has no message."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def script_exit(main: Callable[[], int | None]) -> int:
    """The exit code of a repository script's ``main()`` (``scripts/``, ``benchmarks/``): an
    emovit error or an unreadable file is one line on stderr naming it and exit 2, as the CLI
    says them, not a traceback (``EMOVIT_DEBUG=1`` keeps the traceback)."""
    import os
    import sys

    try:
        return int(main() or 0)
    except (EmovitError, OSError) as exc:
        if os.environ.get("EMOVIT_DEBUG"):
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
