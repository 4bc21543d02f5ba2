import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from emovit.errors import ImageError
from emovit.imageio import describe_source, load_image

from .conftest import encode


def _rgb(height: int = 8, width: int = 10) -> np.ndarray:
    rng = np.random.default_rng(1)
    return rng.integers(0, 256, (height, width, 3), dtype=np.uint8)


def test_every_input_kind_gives_the_same_pixels(tmp_path: Path) -> None:
    array = _rgb()
    png = encode(Image.fromarray(array))
    path = tmp_path / "dir with space" / "a.png"
    path.parent.mkdir()
    path.write_bytes(png)
    sources = [
        array,
        Image.fromarray(array),
        png,
        bytearray(png),
        memoryview(png),
        io.BytesIO(png),
        path,
        str(path),
    ]
    for source in sources:
        out = load_image(source)
        assert out.dtype == np.uint8
        assert out.flags["C_CONTIGUOUS"]
        np.testing.assert_array_equal(out, array)


def test_grey_and_palette_modes() -> None:
    grey = np.arange(80, dtype=np.uint8).reshape(8, 10)
    for source in (grey, grey[..., None], Image.fromarray(grey, "L")):
        out = load_image(source)
        assert out.shape == (8, 10, 3)
        np.testing.assert_array_equal(out[..., 1], grey)
    palette = Image.fromarray(_rgb()).convert("P")
    np.testing.assert_array_equal(load_image(palette), np.asarray(palette.convert("RGB")))
    cmyk = Image.fromarray(_rgb()).convert("CMYK")
    np.testing.assert_array_equal(load_image(cmyk), np.asarray(cmyk.convert("RGB")))


def test_transparency_is_composited_on_white() -> None:
    rgba = np.zeros((2, 2, 4), dtype=np.uint8)
    rgba[0, 0] = (255, 0, 0, 255)  # opaque red stays red
    rgba[0, 1] = (0, 0, 0, 0)  # transparent black becomes white
    rgba[1, 0] = (0, 0, 0, 128)  # half-transparent black becomes mid-grey
    for source in (rgba, Image.fromarray(rgba, "RGBA"), encode(Image.fromarray(rgba, "RGBA"))):
        out = load_image(source)
        assert tuple(out[0, 0]) == (255, 0, 0)
        assert tuple(out[0, 1]) == (255, 255, 255)
        assert tuple(out[1, 0]) == (127, 127, 127)
    la = Image.fromarray(rgba, "RGBA").convert("LA")
    assert tuple(load_image(la)[0, 1]) == (255, 255, 255)


def test_sixteen_bit_and_float_images_are_scaled() -> None:
    values = np.array([[0, 257 * 100, 65535]], dtype=np.uint16)
    image16 = Image.fromarray(values)
    assert image16.mode.startswith("I;16")
    np.testing.assert_array_equal(load_image(image16)[0, :, 0], [0, 100, 255])
    np.testing.assert_array_equal(load_image(encode(image16))[0, :, 0], [0, 100, 255])
    as_float = Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32), "F")
    np.testing.assert_array_equal(load_image(as_float)[0, :, 0], [0, 128, 255])
    with pytest.raises(ImageError, match="NaN"):
        load_image(Image.fromarray(np.array([[np.nan]], dtype=np.float32), "F"))


def test_exif_orientation_is_applied() -> None:
    array = np.zeros((10, 20, 3), dtype=np.uint8)
    array[:, :10] = 255  # left half white
    image = Image.fromarray(array)
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise for display
    data = encode(image, "JPEG", exif=exif.tobytes(), quality=95)
    out = load_image(data)
    assert out.shape == (20, 10, 3)
    assert out[:10].mean() > 200  # the white half is now on top
    assert out[10:].mean() < 50


def test_animated_image_gives_its_first_frame() -> None:
    frames = [Image.new("RGB", (6, 6), colour) for colour in ((255, 0, 0), (0, 0, 255))]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:], duration=50)
    out = load_image(buffer.getvalue())
    assert tuple(out[0, 0]) == (255, 0, 0)


def test_pixel_limit_refuses_before_decoding(tmp_path: Path) -> None:
    path = tmp_path / "big.png"
    Image.new("L", (4000, 3000)).save(path)
    with pytest.raises(ImageError, match=r"big\.png: image is 4000x3000 = 12,000,000 pixels, over the limit"):
        load_image(path, max_pixels=1_000_000)
    with pytest.raises(ImageError, match="over the limit"):
        load_image(np.zeros((100, 100), np.uint8), max_pixels=99)
    assert load_image(path, max_pixels=None).shape == (3000, 4000, 3)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p.write_bytes(b""), "the file is empty"),
        (lambda p: p.write_text("hello, not an image"), "not an image file"),
        (lambda p: p.write_bytes(encode(Image.new("RGB", (64, 64)), "JPEG")[:200]), "truncated"),
        (lambda p: p.write_bytes(encode(Image.new("RGB", (64, 64)), "PNG")[:60]), "truncated"),
        (lambda p: None, "no such file"),
        (lambda p: p.mkdir(), "is a directory"),
    ],
    ids=["empty", "text", "truncated-jpeg", "truncated-png", "missing", "directory"],
)
def test_bad_files_raise_image_error_naming_the_input(tmp_path: Path, make, message: str) -> None:
    path = tmp_path / "input.jpg"
    make(path)
    with pytest.raises(ImageError, match=message) as info:
        load_image(path)
    assert str(path) in str(info.value)
    assert info.value.source == str(path)


@pytest.mark.parametrize(
    ("source", "message"),
    [
        (b"", "empty"),
        (b"\x89PNG\r\n\x1a\n garbage", "not an image|truncated"),
        (np.zeros((4, 4), dtype=np.float32), "dtype must be uint8"),
        (np.zeros((4, 4, 2), dtype=np.uint8), "shape must be"),
        (np.zeros((0, 4, 3), dtype=np.uint8), "no pixels"),
        (io.StringIO("text"), "binary mode"),
        (12345, "unsupported input type int"),
    ],
)
def test_bad_in_memory_inputs(source: object, message: str) -> None:
    with pytest.raises(ImageError, match=message):
        load_image(source)  # type: ignore[arg-type]


def test_describe_source() -> None:
    assert describe_source("a/b.jpg") == "a/b.jpg"
    assert describe_source(Path("x.png")) == "x.png"
    assert describe_source(b"..", 3) == "<bytes #3>"
    assert describe_source(np.zeros(1), 0) == "<array #0>"
