"""Safe decoding: every supported input kind becomes an ``HxWx3`` ``uint8`` RGB array.

Accepted inputs (`ImageSource`):

* a path (``str`` or ``pathlib.Path``) to an image file;
* encoded bytes (``bytes``, ``bytearray``, ``memoryview``) or a binary file object;
* a ``PIL.Image.Image``;
* a ``numpy`` ``uint8`` array, ``HxW`` (grey), ``HxWx1``, ``HxWx3`` (**RGB order**, not
  OpenCV's BGR) or ``HxWx4`` (RGBA).

Encoded images are read in the formats of `IMAGE_FORMATS` only (JPEG, PNG, GIF, WebP, TIFF,
BMP, PNM, and AVIF, HEIF, JPEG 2000 where Pillow reads them): Pillow's other plugins (EPS would
run Ghostscript on an upload) are never tried.

Conversions: the EXIF orientation is applied; animated images give their first frame;
transparent pixels (LA, PA, RGBA, P or RGB with transparency) are composited onto white; 16-bit
images (``I;16``) are scaled from 0..65535, 32-bit integer ones (``I``) likewise, or kept as
they are when every value fits 0..255 (8-bit values in a 32-bit file), or scaled from their
maximum beyond 65535; float images (``F``) from 0..1 (or 0..255 when their values exceed 1);
every other mode goes through Pillow's ``convert("RGB")``. Images with more than `max_pixels`
pixels are refused before they are decoded (decompression bombs). Everything that goes wrong
raises `ImageError` naming the input. A PIL image is decoded by one thread at a time (the
same object may be given twice: Pillow's lazy loading is not thread-safe).

Examples:
    >>> import numpy as np
    >>> load_image(np.zeros((4, 6), dtype=np.uint8)).shape
    (4, 6, 3)
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
import stat
import struct
import threading
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Literal, TypeAlias, TypeVar, overload

import numpy as np

from emovit.errors import ImageError, InputError, check_count
from emovit.sources import has_glob, is_url

if TYPE_CHECKING:
    from PIL import Image

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "IMAGE_FORMATS",
    "ImageSource",
    "check_file",
    "describe_source",
    "load_image",
    "load_images",
    "readable_formats",
]

#: Default pixel limit (width x height) above which an image is refused undecoded.
DEFAULT_MAX_PIXELS = 50_000_000

#: The Pillow formats encoded images are read in (``Image.open(..., formats=...)``).
IMAGE_FORMATS: tuple[str, ...] = (
    "JPEG",  # and MPO, which Pillow's JPEG reader opens
    "PNG",
    "GIF",
    "WEBP",
    "TIFF",
    "BMP",
    "PPM",
    "AVIF",  # what phones send, where Pillow has it
    "HEIF",  # where a plugin (pillow-heif) registered it
    "JPEG2000",
)


def readable_formats() -> list[str]:
    """`IMAGE_FORMATS` that this Pillow can open (asking for another raises); HEIF too where
    pillow-heif is installed (its opener is registered on first use)."""
    from PIL import Image

    Image.init()
    _register_heif()
    return [name for name in IMAGE_FORMATS if name in Image.OPEN]


@functools.cache
def _register_heif() -> None:
    """Register pillow-heif's HEIF/HEIC opener (iPhone photos) when it is installed."""
    try:
        from pillow_heif import register_heif_opener  # type: ignore[import-not-found]

        register_heif_opener()
    except Exception as exc:  # noqa: BLE001 - a broken install (no libheif) must not fail every image
        if not isinstance(exc, ImportError):
            warnings.warn(
                f"pillow-heif is installed but could not be used ({exc}); HEIF photos are not read",
                stacklevel=2,
            )


#: ISO base media brands (bytes 8-12, after ``ftyp``) of still-image formats, by format.
_HEIF_BRANDS = {
    **dict.fromkeys((b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1"), "HEIF"),
    **dict.fromkeys((b"avif", b"avis"), "AVIF"),
}
#: What reads a format this installation cannot.
_HOW_TO_READ = {
    "HEIF": "pip install pillow-heif",
    "AVIF": "a Pillow with AVIF (the wheels of Pillow 11.3 and later)",
}


def _unreadable_photo(stream: Any) -> str | None:
    """The format of a HEIF/HEIC or AVIF photo this Pillow cannot open (None: not one)."""
    try:
        stream.seek(0)
        head = stream.read(12)
    except (OSError, ValueError, AttributeError):
        return None
    kind = _HEIF_BRANDS.get(head[8:12]) if head[4:8] == b"ftyp" else None
    return kind if kind is not None and kind not in readable_formats() else None


#: Serialises what is not thread-safe in Pillow: opening under a warnings filter (the filter
#: list is process-wide) and decoding a PIL image object (its lazy loading).
_PIL_LOCK = threading.RLock()

ImageSource: TypeAlias = (
    "str | os.PathLike[str] | bytes | bytearray | memoryview | BinaryIO | Image.Image | np.ndarray"
)


def describe_source(source: Any, index: int | None = None) -> str:
    """A short human name for an input: its path, its file name, or its kind and position."""
    suffix = "" if index is None else f" #{index}"
    if isinstance(source, str | os.PathLike):
        return os.fspath(source)
    if isinstance(source, bytes | bytearray | memoryview):
        return f"<bytes{suffix}>"
    if isinstance(source, np.ndarray):
        return f"<array{suffix}>"
    name = getattr(source, "filename", None) or getattr(source, "name", None)
    if isinstance(name, str) and name:
        return name
    if hasattr(source, "read"):
        return f"<file{suffix}>"
    return f"<{type(source).__name__}{suffix}>"


def load_image(
    source: ImageSource, *, name: str | None = None, max_pixels: int | None = DEFAULT_MAX_PIXELS
) -> np.ndarray:
    """Decode `source` into a C-contiguous ``HxWx3`` ``uint8`` RGB array.

    Args:
        source: any accepted input kind (see the module docstring).
        name: how errors refer to the input (default: `describe_source`).
        max_pixels: refuse images with more pixels than this; ``None`` for no limit.

    Raises:
        ImageError: the input is missing, empty, truncated, not an image, too large, or an
            array of an unsupported shape or dtype.
        OptionError: `max_pixels` is not a whole number of at least 1.
    """
    check_count(max_pixels, "max_pixels", optional=True)
    label = name or describe_source(source)
    if isinstance(source, np.ndarray):
        return _from_array(source, label, max_pixels)

    from PIL import Image

    if isinstance(source, Image.Image):
        _check_pixels(source.width, source.height, label, max_pixels)
        with _PIL_LOCK:
            return _decoded(lambda: _pil_to_rgb(source, label), label)
    stream = _open_stream(source, label)
    try:
        try:
            image = _open_header(stream)
        except Image.DecompressionBombError as exc:
            raise _bomb(label, exc, max_pixels) from None
        except Image.UnidentifiedImageError:
            known = _signature(stream)
            if known:  # a PNG cut right after its signature is damaged, not of another format
                raise ImageError(
                    label, f"corrupt or truncated image data (a {known} file cut short)"
                ) from None
            photo = _unreadable_photo(stream)
            if photo:  # an iPhone's photos were "not an image file", in a list that named HEIF
                raise ImageError(
                    label,
                    f"a {photo} photo, which this installation cannot read ({_HOW_TO_READ[photo]})",
                    "unsupported_format",
                ) from None
            if _looks_like_video(stream):  # it was "not an image file": no way onwards
                raise ImageError(
                    label,
                    "a video, not a photo (by its content): videos are analysed frame by frame by "
                    "EmotionRecognizer.predict_video, POST /v1/video, and `emovit predict` when the "
                    "file has a video's extension (.mp4, .mov, .mkv, …)",
                    "unsupported_format",
                ) from None
            raise ImageError(
                label,
                f"not an image file in a format emovit reads ({_format_names()})",
                "unsupported_format",
            ) from None
        except _DECODE_ERRORS as exc:
            reason = str(exc) or type(exc).__name__
            raise ImageError(label, f"corrupt or truncated image data ({reason})") from None
        with image:
            _check_pixels(image.width, image.height, label, max_pixels)

            def decode() -> np.ndarray:
                image.seek(0)
                image.load()
                return _pil_to_rgb(image, label)

            return _decoded(decode, label)
    finally:
        if not isinstance(source, io.IOBase) and hasattr(stream, "close"):
            stream.close()


#: The first bytes of the formats emovit reads that no other file starts with.
_SIGNATURES = (
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"\xff\xd8\xff", "JPEG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
)


#: How formats are named to people.
_FORMAT_NAMES = {"WEBP": "WebP", "PPM": "PNM", "JPEG2000": "JPEG 2000"}


def _format_names() -> str:
    """The formats this installation reads, as people name them."""
    return ", ".join(_FORMAT_NAMES.get(name, name) for name in readable_formats())


def _signature(stream: Any) -> str | None:
    """The format whose signature `stream` starts with (None: none, or it cannot be re-read)."""
    try:
        stream.seek(0)
        head = stream.read(16)
    except (OSError, ValueError, AttributeError):
        return None
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WebP"
    return next((name for magic, name in _SIGNATURES if head.startswith(magic)), None)


def _looks_like_video(stream: Any) -> bool:
    """Whether an input no image decoder reads starts as a video does (its content, not its name)."""
    from emovit.sources import VIDEO_HEAD_BYTES, looks_like_video

    try:
        stream.seek(0)
        return looks_like_video(stream.read(VIDEO_HEAD_BYTES))
    except (OSError, ValueError, AttributeError):
        return False


def _decoded(decode: Callable[[], np.ndarray], label: str) -> np.ndarray:
    """Run `decode`, its decoder's errors as the `ImageError` of a corrupt image."""
    from PIL import Image

    try:
        return decode()
    except ImageError:
        raise
    except Image.DecompressionBombError as exc:  # some decoders (TIFF, GIF) check it again
        raise _bomb(label, exc) from None
    except _DECODE_ERRORS as exc:
        reason = str(exc) or type(exc).__name__
        raise ImageError(label, f"corrupt or truncated image data ({reason})") from None


#: What Pillow's decoders raise on malformed files: besides the documented OSError and
#: SyntaxError, fuzzing found TypeError (a TIFF offset tag holding a rational), IndexError and
#: struct.error from broken headers.
_DECODE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    IndexError,
    KeyError,
    TypeError,
    ZeroDivisionError,
    OverflowError,
    struct.error,
)

_T = TypeVar("_T")


@overload
def load_images(
    sources: Sequence[ImageSource],
    *,
    names: Sequence[str | None] | None = None,
    threads: int | None = None,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    then: None = None,
    errors: Literal["raise"] = "raise",
) -> list[np.ndarray]: ...
@overload
def load_images(
    sources: Sequence[ImageSource],
    *,
    names: Sequence[str | None] | None = None,
    threads: int | None = None,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    then: Callable[[np.ndarray], _T],
    errors: Literal["raise"] = "raise",
) -> list[_T]: ...
@overload
def load_images(
    sources: Sequence[ImageSource],
    *,
    names: Sequence[str | None] | None = None,
    threads: int | None = None,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    then: Callable[[np.ndarray], _T] | None = None,
    errors: Literal["collect"],
) -> list[Any]: ...
def load_images(
    sources: Sequence[ImageSource],
    *,
    names: Sequence[str | None] | None = None,
    threads: int | None = None,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    then: Callable[[np.ndarray], Any] | None = None,
    errors: Literal["raise", "collect"] = "raise",
) -> list[Any]:
    """`load_image` over many inputs on a thread pool (Pillow decodes without the GIL), in
    input order. `then` runs on each decoded image in its worker thread (a resize, a hash), so
    that only its result is kept in memory. The first failure raises its `ImageError`; with
    ``errors="collect"`` each failed input's `ImageError` takes its place and the others go on.

    Examples:
        >>> [im.shape for im in load_images([np.zeros((2, 3), np.uint8)] * 2, threads=2)]
        [(2, 3, 3), (2, 3, 3)]
    """
    labels = list(names) if names is not None else [None] * len(sources)
    if len(labels) != len(sources):
        raise ValueError(f"{len(sources)} sources but {len(labels)} names")

    if errors not in ("raise", "collect"):
        raise ValueError(f"errors must be 'raise' or 'collect', got {errors!r}")

    def one(item: tuple[ImageSource, str | None]) -> Any:
        try:
            image = load_image(item[0], name=item[1], max_pixels=max_pixels)
        except ImageError as exc:
            if errors == "raise":
                raise
            return exc
        except Exception as exc:  # one input's surprise never loses the others
            error = ImageError(
                item[1] or describe_source(item[0]), f"cannot decode ({type(exc).__name__}: {exc})"
            )
            if errors == "raise":
                raise error from exc
            return error
        return then(image) if then is not None else image

    workers = max(1, min(threads or min(8, os.cpu_count() or 1), len(sources)))
    if workers == 1:
        return [one(item) for item in zip(sources, labels, strict=True)]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="emovit-load") as pool:
        return list(pool.map(one, zip(sources, labels, strict=True)))


def check_file(
    path: Path, label: str, what: str = "an image file", error: type[InputError] = ImageError
) -> None:
    """Raise `error` (code ``not_found``, ``not_a_file`` or ``empty_file``) unless `path` is a
    readable, non-empty regular file (a FIFO would block, a folder is not a file)."""
    try:
        if path.is_dir():
            try:
                with os.scandir(path) as listing:
                    next(listing, None)
            except OSError as exc:  # a folder source whose listing failed (expand_sources)
                raise error(
                    label,
                    f"a folder that cannot be listed ({exc.strerror or exc}): its files are left out",
                    "not_found",
                ) from None
            raise error(label, f"is a directory, not {what}", "not_found")
        info = path.stat()
    except FileNotFoundError:
        # a glob that matched nothing is kept as a source: said so (read as one, it matches none)
        missing = (
            "no such file (and read as a pattern it matches none)"
            if has_glob(os.fspath(path))
            else "no such file"
        )
        raise error(label, missing, "not_found") from None
    except OSError as exc:
        raise error(label, f"cannot access the file ({exc.strerror or exc})", "not_found") from None
    except InputError:  # a folder, said above (an InputError is a ValueError too)
        raise
    except ValueError as exc:  # a NUL byte in the name
        raise error(label, f"not a valid path ({exc})", "not_found") from None
    if not stat.S_ISREG(info.st_mode):
        raise error(label, "not a regular file (a FIFO, socket or device)", "not_a_file")
    if info.st_size == 0:
        raise error(label, "the file is empty", "empty_file")


def _open_stream(source: Any, label: str) -> BinaryIO:
    if isinstance(source, str | os.PathLike):
        try:
            path = Path(source)
        except TypeError:  # a PathLike whose path is bytes
            raise ImageError(label, "a path given as bytes: give it as str", "unsupported_input") from None
        if not os.fspath(source):  # Path("") is the current folder
            raise ImageError(label or "<empty path>", "an empty path", "not_found")
        if isinstance(source, str) and is_url(source) and not path.exists():
            raise ImageError(  # it said "no such file"
                label,
                "a URL: photos are read from files, bytes or file objects, not downloaded (fetch it "
                "first; `emovit predict --engine ray` reads s3:// and gs:// URLs)",
                "not_found",
            )
        check_file(path, label)
        try:
            return open(path, "rb")
        except OSError as exc:
            raise ImageError(label, f"cannot open the file ({exc.strerror or exc})", "not_found") from None
    if isinstance(source, bytes | bytearray | memoryview):
        if len(source) == 0:
            raise ImageError(label, "no bytes (empty input)", "empty_file")
        return io.BytesIO(bytes(source))
    if hasattr(source, "read"):
        if getattr(source, "closed", False) is True:  # it said "cannot decode (ValueError: ...)"
            raise ImageError(label, "the file object is closed (open it again, or give its path)",
                             "unsupported_input")  # fmt: skip
        try:
            data = source.read()
        except OSError as exc:
            raise ImageError(label, f"cannot read the file object ({exc})") from None
        if not isinstance(data, bytes | bytearray):
            raise ImageError(label, "file object must be opened in binary mode", "unsupported_input")
        if not data:
            at = _position(source)
            if at:  # it said "no bytes", as if the file on disk were empty
                raise ImageError(label, f"no bytes left to read: the file object is at byte {at}, its end "
                                 "(read before; seek(0) first)", "empty_file")  # fmt: skip
            raise ImageError(label, "no bytes (empty input)", "empty_file")
        return io.BytesIO(bytes(data))
    raise ImageError(
        label,
        f"unsupported input type {type(source).__name__}; expected a path, bytes, a binary "
        "file object, a PIL image or a uint8 numpy array",
        "unsupported_input",
    )


def _position(stream: Any) -> int:
    """Where a file object stands (0 when it cannot say: a pipe, a socket)."""
    try:
        return int(stream.tell())
    except (OSError, ValueError, AttributeError, TypeError):
        return 0


def declared_pixels(data: bytes) -> int:
    """An encoded image's pixels as its header declares them, read as `load_image` reads it (the
    same formats only, the same lock, no decompression-bomb warning); 0 when it is not one."""
    try:
        with _open_header(io.BytesIO(data)) as image:
            return int(image.width) * int(image.height)
    except Exception:  # noqa: BLE001 - not a readable header: its own error row says why, after
        return 0


def _open_header(stream: BinaryIO) -> Image.Image:
    """Pillow's lazily opened image of `stream`: its header read, in emovit's formats only,
    under the lock (the warnings filter is process-wide), without a decompression-bomb warning
    (the pixel limits are emovit's own; Pillow's decoder keeps its fixed ceiling, `_bomb`)."""
    from PIL import Image

    with _PIL_LOCK, warnings.catch_warnings():  # the header only: the lock is short
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        return Image.open(stream, formats=readable_formats())


def _bomb(label: str, exc: Exception, max_pixels: int | None = None) -> ImageError:
    """Pillow's own ceiling (twice ``PIL.Image.MAX_IMAGE_PIXELS``, 179 MP), which applies
    whatever ``max_pixels`` allows: emovit leaves the process-wide setting alone. Under a
    lower `max_pixels`, that limit is the one named."""
    from PIL import Image

    ceiling = 2 * (Image.MAX_IMAGE_PIXELS or 0)
    if max_pixels is not None and max_pixels < ceiling:
        return ImageError(
            label, f"image is over {ceiling:,} pixels, over the limit of {max_pixels:,}", "too_many_pixels"
        )
    return ImageError(
        label,
        f"image is over {ceiling:,} pixels, the image decoder's own limit (whatever max_pixels "
        f"allows): scale it down first ({exc})",
        "too_many_pixels",
    )


def _check_pixels(width: int, height: int, label: str, max_pixels: int | None) -> None:
    if width <= 0 or height <= 0:
        raise ImageError(label, f"image has no pixels ({width}x{height})", "empty_file")
    if max_pixels is not None and width * height > max_pixels:
        raise ImageError(
            label,
            f"image is {width}x{height} = {width * height:,} pixels, over the limit of "
            f"{max_pixels:,} (max_pixels; --max-pixels for the CLI and the server)",
            "too_many_pixels",
        )


def _composite_on_white(rgba: np.ndarray, rows: int = 256) -> np.ndarray:
    """RGBA onto white, ``round(rgb * a / 255 + 255 * (1 - a / 255))``, in integers and
    `rows` at a time (a large image needs no float copies of itself)."""
    out = np.empty((*rgba.shape[:2], 3), dtype=np.uint8)
    for top in range(0, rgba.shape[0], rows):
        block = rgba[top : top + rows]
        alpha = block[..., 3:4].astype(np.uint16)
        mixed = block[..., :3].astype(np.uint16) * alpha + 255 * (255 - alpha) + 127
        out[top : top + rows] = mixed // 255  # at most 65,152: fits uint16
    return out


def _pil_to_rgb(image: Image.Image, label: str) -> np.ndarray:
    from PIL import ImageOps

    declared_16 = image.format in ("PPM", "PNG")  # they open 16-bit images as mode I (before a copy loses it)
    with contextlib.suppress(Exception):  # a broken EXIF block must not lose the image
        image = ImageOps.exif_transpose(image) or image
    mode = image.mode
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        mode in ("P", "RGB", "L") and image.has_transparency_data
    ):
        return _composite_on_white(np.asarray(image.convert("RGBA"), dtype=np.uint8))
    if mode == "RGB":
        return np.ascontiguousarray(np.asarray(image, dtype=np.uint8))
    if mode.startswith("I;16") or mode == "I":
        values = np.asarray(image, dtype=np.float64)
        top = float(values.max()) if values.size else 0.0
        if mode.startswith("I;16") or declared_16 or 255.0 < top <= 65535.0:
            scale = 1 / 257.0  # 16-bit values
        elif top <= 255.0:
            scale = 1.0  # 8-bit values in a 32-bit image
        else:
            scale = 255.0 / top  # beyond 16 bits: its own range
        grey = np.clip(np.rint(values * scale), 0, 255).astype(np.uint8)
        return np.ascontiguousarray(np.repeat(grey[..., None], 3, axis=2))
    if mode == "F":
        values = np.asarray(image, dtype=np.float64)
        if not np.isfinite(values).all():
            raise ImageError(label, "float image contains NaN or infinite values")
        scale = 255.0 if values.size and values.max() <= 1.0 else 1.0
        grey = np.clip(np.rint(values * scale), 0, 255).astype(np.uint8)
        return np.ascontiguousarray(np.repeat(grey[..., None], 3, axis=2))
    try:
        return np.ascontiguousarray(np.asarray(image.convert("RGB"), dtype=np.uint8))
    except (ValueError, OSError) as exc:
        raise ImageError(label, f"cannot convert mode {mode!r} to RGB ({exc})") from None


def _from_array(array: np.ndarray, label: str, max_pixels: int | None) -> np.ndarray:
    if array.dtype != np.uint8:
        raise ImageError(label, f"array dtype must be uint8, got {array.dtype}", "bad_array")
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    if array.ndim == 2:
        _check_pixels(array.shape[1], array.shape[0], label, max_pixels)
        return np.ascontiguousarray(np.repeat(array[..., None], 3, axis=2))
    if array.ndim == 3 and array.shape[2] in (3, 4):
        _check_pixels(array.shape[1], array.shape[0], label, max_pixels)
        if array.shape[2] == 4:
            return _composite_on_white(array)
        return np.ascontiguousarray(array)
    raise ImageError(label, f"array shape must be HxW, HxWx1, HxWx3 or HxWx4, got {array.shape}", "bad_array")
