"""The exception hierarchy: every error emovit raises on purpose derives from `EmovitError`.

Examples:
    >>> from emovit.errors import EmovitError, ImageError
    >>> issubclass(ImageError, EmovitError)
    True
"""

from __future__ import annotations

__all__ = [
    "DependencyError",
    "EmovitError",
    "ImageError",
    "LabelError",
    "ModelLoadError",
    "NoFaceError",
    "RandomWeightsWarning",
]


class EmovitError(Exception):
    """Base class of every error emovit raises deliberately (catch this to catch them all)."""


class ImageError(EmovitError, ValueError):
    """An input could not be turned into an RGB image: missing, empty, truncated, not an
    image, too many pixels, or an array of the wrong shape or dtype. The message names the input."""

    #: Values of `kind`: what went wrong, for programs (the HTTP server maps them to status codes).
    KINDS = ("missing", "empty", "not_image", "corrupt", "too_large", "bad_array", "unsupported_input")

    def __init__(self, source: str, problem: str, kind: str = "corrupt") -> None:
        self.source = source
        self.problem = problem
        self.kind = kind
        super().__init__(f"{source}: {problem}")


class ModelLoadError(EmovitError):
    """A model could not be found, downloaded or loaded; the message says what to do."""


class LabelError(EmovitError, ValueError):
    """A checkpoint's labels cannot be mapped onto emovit's emotions (e.g. two ids, one emotion)."""


class NoFaceError(EmovitError):
    """No face was found where one was required (only raised when the caller asks for it)."""


class DependencyError(EmovitError, ImportError):
    """An optional dependency is missing; the message gives the `pip install` that adds it."""

    def __init__(self, package: str, extra: str, purpose: str) -> None:
        self.package = package
        self.extra = extra
        super().__init__(f"{purpose} needs the optional package {package!r}: pip install 'emovit[{extra}]'")


class RandomWeightsWarning(UserWarning):
    """A model with random weights was loaded (built for tests or demos): its output is noise."""
