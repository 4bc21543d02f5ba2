"""emovit's preprocessing must equal transformers' image processor (max |diff| <= 1e-5)."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from emovit.errors import ModelLoadError
from emovit.imageio import load_image
from emovit.preprocess import (
    Preprocessor,
    TransformersPreprocessor,
    UnsupportedProcessorError,
    create_preprocessor,
    read_processor_config,
)

from .conftest import FER2013, REFERENCE_FIXTURE, require_shared

VIT_STYLE = {
    "do_normalize": True,
    "do_rescale": True,
    "do_resize": True,
    "image_mean": [0.5, 0.5, 0.5],
    "image_processor_type": "ViTImageProcessor",
    "image_std": [0.5, 0.5, 0.5],
    "resample": 2,
    "rescale_factor": 0.00392156862745098,
    "size": {"height": 224, "width": 224},
}
CONFIGS = {
    "vit-224-bilinear": VIT_STYLE,
    "vit-48-bicubic-imagenet": {
        **VIT_STYLE,
        "size": {"height": 48, "width": 48},
        "resample": 3,
        "image_mean": [0.485, 0.456, 0.406],
        "image_std": [0.229, 0.224, 0.225],
    },
    "vit-64x32-nearest-no-normalize": {
        **VIT_STYLE,
        "size": {"height": 64, "width": 32},
        "resample": 0,
        "do_normalize": False,
    },
    "deit-shortest-edge-center-crop": {
        **VIT_STYLE,
        "image_processor_type": "DeiTImageProcessor",
        "size": {"height": 256, "width": 256},
        "do_center_crop": True,
        "crop_size": {"height": 224, "width": 224},
        "resample": 3,
    },
    "shortest-edge-crop": {
        **VIT_STYLE,
        "image_processor_type": "ConvNextImageProcessor",
        "size": {"shortest_edge": 72},
        "do_center_crop": True,
        "crop_size": {"height": 64, "width": 64},
        "crop_pct": 1.0,
    },
}


def _transformers_processor(config: dict, tmp_path: Path):
    from transformers import AutoImageProcessor

    (tmp_path / "preprocessor_config.json").write_text(json.dumps(config))
    return AutoImageProcessor.from_pretrained(str(tmp_path), backend="pil")


def _reference_output(processor, images: list[Image.Image]) -> list[np.ndarray]:
    # transformers' own path: it converts every image to RGB itself (do_convert_rgb / load_image).
    return [
        np.asarray(processor(images=img.convert("RGB"), return_tensors="np")["pixel_values"][0])
        for img in images
    ]


@pytest.mark.parametrize("name", list(CONFIGS))
def test_equals_transformers_processor(name: str, image_zoo: list[Image.Image], tmp_path: Path) -> None:
    config = CONFIGS[name]
    ours = Preprocessor.from_config(config)
    expected = _reference_output(_transformers_processor(config, tmp_path), image_zoo)
    for image, want in zip(image_zoo, expected, strict=True):
        got = ours([load_image(image)])[0]
        assert got.dtype == np.float32
        assert got.shape == want.shape, (image.mode, image.size)
        assert np.abs(got - want).max() <= 1e-5, (image.mode, image.size)


def test_reference_checkpoint_config_on_fer2013_faces(tmp_path: Path) -> None:
    require_shared(REFERENCE_FIXTURE / "preprocessor_config.json")
    faces = sorted((require_shared(FER2013 / "test" / "happy")).glob("*.jpg"))[:8]
    config = read_processor_config(REFERENCE_FIXTURE)
    processor = _transformers_processor(config, tmp_path)
    batch = Preprocessor.from_config(config)([load_image(p) for p in faces])
    expected = np.stack(_reference_output(processor, [Image.open(p) for p in faces]))
    assert batch.shape == (8, 3, 224, 224)
    assert np.abs(batch - expected).max() <= 1e-5


def test_batch_equals_one_by_one(image_zoo: list[Image.Image]) -> None:
    pre = Preprocessor.from_config(VIT_STYLE)
    arrays = [load_image(img) for img in image_zoo[:6]]
    batch = pre(arrays)
    for i, array in enumerate(arrays):
        np.testing.assert_array_equal(batch[i], pre([array])[0])


def test_unsupported_configs_fall_back_to_transformers(tmp_path: Path, image_zoo: list[Image.Image]) -> None:
    config = {**VIT_STYLE, "image_processor_type": "ConvNextImageProcessor"}
    config.update(size={"shortest_edge": 40}, crop_pct=0.875)
    with pytest.raises(UnsupportedProcessorError):
        Preprocessor.from_config(config)
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(config))
    pre = create_preprocessor(tmp_path)
    assert isinstance(pre, TransformersPreprocessor)
    out = pre([load_image(image_zoo[0])])
    assert out.dtype == np.float32
    assert out.shape == (1, 3, 40, 40)


def test_missing_processor_config_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="no preprocessor_config.json"):
        create_preprocessor(tmp_path)


def test_with_input_size_sets_the_resize_and_the_crop() -> None:
    from emovit.preprocess import with_input_size

    plain = {"size": {"height": 64, "width": 64}, "resample": 2}
    assert with_input_size(plain, 80) == {"size": {"height": 80, "width": 80}, "resample": 2}
    assert plain["size"] == {"height": 64, "width": 64}  # a copy
    cropped = {
        "size": {"shortest_edge": 256},
        "do_center_crop": True,
        "crop_size": {"height": 224, "width": 224},
    }
    resized = Preprocessor.from_config(with_input_size(cropped, 96))
    assert resized.output_size == (96, 96)
    with pytest.raises(ValueError, match="image_size must be a positive"):
        with_input_size(plain, 0)


@pytest.mark.parametrize("name", ["vit-48-bicubic-imagenet", "vit-64x32-nearest-no-normalize"])
def test_a_training_batch_is_the_inference_input(name: str, tmp_path: Path) -> None:
    """One definition of the model input: without augmentation, the trainer's batch (decoded by
    `TrainingInput`, pixels on the device, augmentation off, the preprocessor's normalize in
    torch) equals `Preprocessor(...)(images)` for images of other sizes and aspect ratios."""
    import torch

    from emovit.data import read_samples
    from emovit.training.augment import AugmentConfig, augment_batch, mix_batch
    from emovit.training.inputs import TrainingInput

    rng = np.random.default_rng(7)
    for i, (height, width) in enumerate([(37, 23), (50, 81), (19, 44), (64, 32), (121, 97)]):
        folder = tmp_path / "data" / ("happy" if i % 2 else "sad")
        folder.mkdir(parents=True, exist_ok=True)
        image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        Image.fromarray(image).save(folder / f"{i}.png")
    samples = read_samples(tmp_path / "data")
    config = CONFIGS[name]
    inputs = TrainingInput.from_config(config)
    data = inputs.decode(samples, ["happy", "sad"])
    off = AugmentConfig.off()
    pixels = augment_batch(inputs.pixels(data.images), off, torch.Generator().manual_seed(0), 0, len(data))
    pixels, _ = mix_batch(pixels, torch.from_numpy(data.targets), off, torch.Generator().manual_seed(1))
    batch = inputs.model_input(pixels).numpy()
    expected = Preprocessor.from_config(config)([load_image(s.source) for s in samples])
    assert batch.shape == expected.shape == (5, 3, *inputs.size)
    assert np.abs(batch - expected).max() <= 1e-5


def test_normalize_has_one_implementation_for_numpy_and_torch() -> None:
    import torch

    pre = Preprocessor.from_config(CONFIGS["vit-48-bicubic-imagenet"])
    batch = np.random.default_rng(0).integers(0, 256, (3, 48, 48, 3), dtype=np.uint8)
    from_numpy = pre.normalize(batch)
    np.testing.assert_array_equal(
        pre.normalize_tensor(torch.from_numpy(batch), channels_last=True).numpy(), from_numpy
    )
    nchw = torch.from_numpy(batch).permute(0, 3, 1, 2).float()
    np.testing.assert_array_equal(pre.normalize_tensor(nchw).numpy(), from_numpy)


@pytest.mark.parametrize("resample", range(6))
def test_a_grey_face_resizes_as_its_rgb_image_does(resample: int) -> None:
    """The one-band fast path for grey faces gives Pillow's RGB resize bit for bit, for every
    filter, up and down, square or not; a colour image takes the RGB path."""
    rng = np.random.default_rng(resample)
    for height, width, size in (
        (48, 48, (64, 64)),
        (48, 48, (224, 224)),
        (300, 170, (64, 64)),
        (5, 9, (7, 3)),
    ):
        band = rng.integers(0, 256, (height, width), dtype=np.uint8)
        grey = np.repeat(band[..., None], 3, axis=2)
        pre = Preprocessor(size=size, resample=resample)
        expected = np.asarray(Image.fromarray(grey).resize(size[::-1], resample=resample))
        np.testing.assert_array_equal(pre.resize(grey), expected)
        np.testing.assert_array_equal(pre(grey[None])[0], pre.normalize(expected[None])[0])
    colour = rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)
    np.testing.assert_array_equal(
        Preprocessor(size=(64, 64), resample=resample).resize(colour),
        np.asarray(Image.fromarray(colour).resize((64, 64), resample=resample)),
    )


def test_preprocessing_never_writes_its_input_and_names_a_bad_image() -> None:
    import torch

    pre = Preprocessor(size=(1, 1))
    one_pixel = np.full((2, 1, 1, 3), 255.0, dtype=np.float32)  # its NCHW view needs no copy
    out = pre.normalize(one_pixel)
    assert np.all(one_pixel == 255.0) and out.dtype == np.float32
    pixels = torch.full((2, 3, 1, 1), 255.0)
    pre.normalize_tensor(pixels)
    assert bool((pixels == 255.0).all())
    with pytest.raises(ValueError, match="no images"):
        pre([])
    rgba = np.zeros((1, 1, 4), dtype=np.uint8)
    with pytest.raises(ValueError, match=r"image 1: expected HxWx3 RGB, got shape \(1, 1, 4\)"):
        pre([np.zeros((1, 1, 3), dtype=np.uint8), rgba])
    with pytest.raises(ValueError, match=r"image 0: expected HxWx3 RGB, got shape \(5, 5\)"):
        pre([np.zeros((5, 5), dtype=np.uint8)])  # one band is the inside of the grey path, not an input
    with pytest.raises(ValueError, match="different shapes"):
        Preprocessor(size=None)([np.zeros((2, 2, 3), np.uint8), np.zeros((3, 3, 3), np.uint8)])
    # a grey image that is not uint8 takes the RGB path (Pillow decides what it accepts)
    grey_float = np.full((4, 4, 3), 0.5, dtype=np.float32)
    with pytest.raises(TypeError):
        Preprocessor(size=(2, 2))([grey_float])


def test_centre_crop_of_a_small_image_pads_as_transformers_does() -> None:
    """An image smaller than the crop sits ceil((crop - size) / 2) from the top left, as in
    transformers' `center_crop` (it sat one pixel off for odd differences)."""
    from transformers.image_transforms import center_crop

    from emovit.preprocess import _center_crop

    rng = np.random.default_rng(0)
    for height, width in ((27, 40), (40, 27), (25, 25), (30, 31), (33, 29)):
        for size in ((30, 30), (27, 33)):
            image = rng.integers(1, 255, (height, width, 3)).astype(np.float32)
            expected = center_crop(
                image, size, data_format="channels_last", input_data_format="channels_last"
            )
            np.testing.assert_array_equal(_center_crop(image, size), expected)
