import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from emovit.errors import ImageError
from emovit.imageio import describe_source, load_image, readable_formats

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
    # a 20000x20000 header (no pixel data): the limit said is emovit's; past it, the decoder's
    # own ceiling (179 MP) is said as such, as too_many_pixels (it was Pillow's raw words, and a
    # TIFF's check at decoding escaped as DecompressionBombError)
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 20_000, 20_000, 8, 2, 0, 0, 0)
    huge = tmp_path / "huge.png"
    huge.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
    )
    with pytest.raises(ImageError, match=r"over 178,956,970 pixels, over the limit of 1,000,000"):
        load_image(huge, max_pixels=1_000_000)
    tiff = tmp_path / "huge.tif"  # one strip, 8-bit grey, header only
    entries = [(256, 4, 1, 20_000), (257, 4, 1, 20_000), (258, 3, 1, 8), (259, 3, 1, 1), (262, 3, 1, 1),
               (273, 4, 1, 8), (277, 3, 1, 1), (278, 4, 1, 20_000), (279, 4, 1, 400_000_000)]  # fmt: skip
    ifd = struct.pack("<H", len(entries)) + b"".join(struct.pack("<HHII", *e) for e in entries) + b"\0" * 4
    tiff.write_bytes(b"II*\x00" + struct.pack("<I", 8) + ifd)
    for image in (huge, tiff):
        with pytest.raises(ImageError) as raised:
            load_image(image, max_pixels=10**9)
        assert raised.value.code == "too_many_pixels" and "decoder's own limit" in str(raised.value)


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
    assert str(path) in str(info.value) and "not a valid path" not in str(info.value)
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


# ----------------------------------------------------------------- review findings (session 13)


def test_only_the_photo_formats_are_parsed(tmp_path: Path) -> None:
    """Pillow tried all its plugins: an upload that is really PostScript went to Ghostscript
    wherever it is installed. Formats outside the photo list are refused unparsed."""
    targa = io.BytesIO()
    Image.fromarray(_rgb()).save(targa, "TGA")
    with pytest.raises(ImageError, match="not an image file in a format emovit reads") as caught:
        load_image(targa.getvalue(), name="x.tga")
    assert caught.value.code == "unsupported_format"
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n"
    with pytest.raises(ImageError) as caught:
        load_image(eps, name="photo.jpg")
    assert caught.value.code == "unsupported_format"
    for fmt in ("JPEG", "PNG", "GIF", "WEBP", "TIFF", "BMP", "PPM"):
        assert load_image(encode(Image.fromarray(_rgb()), fmt)).shape == (8, 10, 3), fmt


def test_one_pil_image_given_several_times_decodes_the_same_each_time(tmp_path: Path) -> None:
    """Decoding threads loaded one lazily opened image object at once: wrong pixels and a
    spurious error."""
    from emovit.imageio import load_images

    path = tmp_path / "big.jpg"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (600, 800, 3), dtype=np.uint8)).save(path, quality=90)
    expected = load_image(path)
    image = Image.open(path)
    for decoded in load_images([image] * 8, threads=8):
        np.testing.assert_array_equal(decoded, expected)


def test_threaded_decoding_leaves_the_warning_filters_as_they_were(tmp_path: Path) -> None:
    import warnings

    from emovit.imageio import load_images

    png = encode(Image.fromarray(_rgb()))
    before = list(warnings.filters)
    load_images([png] * 400, threads=8)
    assert warnings.filters == before


def test_odd_inputs_are_error_rows_not_crashes(tmp_path: Path) -> None:
    """A NUL byte in a path raised ValueError out of load_images(errors="collect"), losing the
    other images; a bytes path raised TypeError."""
    from emovit.imageio import load_images

    good = tmp_path / "ok.png"
    good.write_bytes(encode(Image.fromarray(_rgb())))

    class BytesPath:
        def __fspath__(self) -> bytes:
            return bytes(good)

    out = load_images([str(good), str(tmp_path / "a\x00.png"), BytesPath(), str(good)], errors="collect")  # type: ignore[list-item]
    assert isinstance(out[0], np.ndarray) and isinstance(out[3], np.ndarray)
    assert isinstance(out[1], ImageError) and "not a valid path" in str(out[1])
    assert isinstance(out[2], ImageError) and out[2].code == "unsupported_input"


def test_more_modes_decode_to_the_right_pixels() -> None:
    """32-bit integer images holding 8-bit values came out black; a palette whose colours carry
    alpha (what RGBA.quantize() makes) lost its transparency."""
    values = np.array([[0, 100, 255]], dtype=np.int32)
    decoded = load_image(Image.fromarray(values, mode="I"))
    assert decoded[0, :, 0].tolist() == [0, 100, 255]
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., :3] = (10, 20, 30)  # fully transparent everywhere
    palette = Image.fromarray(rgba, "RGBA").quantize()
    assert palette.mode == "P" and "transparency" not in palette.info
    assert (load_image(palette) == 255).all()


def test_transparency_compositing_is_exact_and_lean() -> None:
    from emovit.imageio import _composite_on_white

    rng = np.random.default_rng(5)
    rgba = rng.integers(0, 256, (700, 33, 4), dtype=np.uint8)
    alpha = rgba[..., 3:4] / 255.0
    expected = np.rint(rgba[..., :3] * alpha + 255.0 * (1.0 - alpha)).astype(np.uint8)
    np.testing.assert_array_equal(_composite_on_white(rgba), expected)


def test_phone_formats_are_read_where_pillow_reads_them() -> None:
    """The allow-list refused AVIF, which Pillow reads (what phones send)."""
    from PIL import Image as PILImage

    from emovit.imageio import readable_formats

    PILImage.init()
    for fmt in ("AVIF", "JPEG2000"):
        if fmt not in PILImage.SAVE or fmt not in readable_formats():
            continue
        decoded = load_image(encode(Image.fromarray(_rgb(16, 16)), fmt))
        assert decoded.shape == (16, 16, 3), fmt


def test_a_folder_lists_every_format_emovit_reads(tmp_path: Path) -> None:
    """A folder of AVIF, JPEG 2000 or PNM photos gave no input at all (their extensions were not
    listed), though each decodes; an RGB PNG with a transparent colour is composited on white
    like a grey one (it came out black)."""
    from emovit.sources import expand_sources

    image = Image.fromarray(_rgb(16, 16))
    names = {"a.avif": "AVIF", "b.jp2": "JPEG2000", "c.pnm": "PPM", "d.jpe": "JPEG"}
    for name, fmt in names.items():
        if fmt in ("AVIF", "JPEG2000") and fmt not in readable_formats():
            (tmp_path / name).write_bytes(b"not readable here: an error row, not a skipped file")
        else:
            image.save(tmp_path / name, fmt)
    assert sorted(Path(p).name for p in expand_sources([str(tmp_path)])) == sorted(names)
    rgb = Image.new("RGB", (2, 1), (10, 20, 30))
    rgb.putpixel((1, 0), (200, 0, 0))
    rgb.info["transparency"] = (10, 20, 30)
    grey = rgb.convert("L")
    grey.info["transparency"] = grey.getpixel((0, 0))
    for transparent in (rgb, grey):
        buffer = io.BytesIO()
        transparent.save(buffer, "PNG", transparency=transparent.info["transparency"])
        assert load_image(buffer.getvalue())[0, 0].tolist() == [255, 255, 255], transparent.mode


def test_a_dark_sixteen_bit_pnm_stays_dark() -> None:
    """Pillow opens a 16-bit PGM as mode I; its values all under 256 were taken for 8-bit ones
    and shown 257 times too bright."""
    values = np.full((4, 4), 200, dtype=">u2")
    pgm = b"P5\n4 4\n65535\n" + values.tobytes()
    assert load_image(pgm).max() <= 1


def test_a_file_cut_right_after_its_signature_is_corrupt_not_of_another_format() -> None:
    """A PNG of 8 bytes (its signature only) was `unsupported_format`, the same PNG cut at
    5,000 bytes `corrupt_image`: both are damaged files of a format emovit reads."""
    from emovit import load_image

    for head, name in ((b"\x89PNG\r\n\x1a\n", "PNG"), (b"\xff\xd8\xff\xe0", "JPEG"), (b"GIF89a", "GIF")):
        with pytest.raises(ImageError, match=f"a {name} file cut short") as raised:
            load_image(head)
        assert raised.value.code == "corrupt_image"
    with pytest.raises(ImageError) as raised:
        load_image(b"plain text, no image")
    assert raised.value.code == "unsupported_format"


def test_a_heic_photo_says_what_reads_it() -> None:
    """An iPhone's HEIC photos were "not an image file in a format emovit reads (..., HEIF, ...)"
    where nothing reads HEIF: every photo of the folder looked broken."""
    import importlib.util

    if importlib.util.find_spec("pillow_heif") is not None:
        pytest.skip("pillow-heif is installed here: HEIF photos are read")
    heic = b"\0\0\0\x18ftypheic\0\0\0\0mif1heic" + bytes(64)
    with pytest.raises(
        ImageError, match=r"a HEIF photo, which this installation cannot read \(pip install pillow-heif\)"
    ) as caught:
        load_image(heic, name="IMG_0001.HEIC")
    assert caught.value.code == "unsupported_format"
    with pytest.raises(ImageError) as other:
        load_image(b"\0\0\0\x18ftypqt  " + bytes(64), name="x.jpg")
    assert "HEIF photo" not in str(other.value)  # a QuickTime brand: not taken for a photo


def test_a_broken_pillow_heif_is_a_warning_not_every_image_failing(monkeypatch: pytest.MonkeyPatch) -> None:
    """pillow-heif installed without a working libheif raised on first use, so every image
    failed to open; now HEIF is left out with one warning and other images read as before."""
    import sys
    import types

    from emovit import imageio

    def broken() -> None:
        raise OSError("libheif.so.1: cannot open shared object file")

    monkeypatch.setitem(sys.modules, "pillow_heif", types.SimpleNamespace(register_heif_opener=broken))
    with pytest.warns(UserWarning, match="pillow-heif is installed but could not be used"):
        imageio._register_heif.__wrapped__()
