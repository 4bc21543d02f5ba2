"""Result objects: one `ImageResult` per input, holding one `FaceResult` per face; one
`FrameResult` (an `ImageResult` with ``frame`` and ``time_s``) per analysed video frame.

Without face detection the whole image is one face. `ImageResult.label`, `.score` and
`.probs` are those of its first face (faces are ordered largest first), so the common
single-face case reads naturally.

Examples:
    >>> face = FaceResult(probs={"happy": 0.9, "sad": 0.1})
    >>> ImageResult(source="a.jpg", faces=[face]).label
    'happy'
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from emovit.errors import check_count

__all__ = [
    "EMOTION_COLOURS",
    "FRAME_ROW_FIELDS",
    "Explanation",
    "FaceResult",
    "FrameResult",
    "ImageResult",
    "heat_colours",
]


#: An explanation's plot is scaled up to its `min_side`, but its longer side stays within this.
_PLOT_MAX_SIDE = 2048
#: The plot's label is sized for a crop at most this wide.
_PLOT_LABEL_WIDTH = 448

#: The heat ramp of explanation maps, from 0 (dark blue) to 1 (dark red).
_HEAT = np.array(
    [[0, 0, 130], [0, 70, 255], [0, 220, 255], [150, 255, 100], [255, 220, 0], [255, 70, 0], [150, 0, 0]],
    dtype=np.float32,
)


def heat_colours(values: np.ndarray) -> np.ndarray:
    """RGB ``uint8`` heat colours for values in 0..1 (shape ``values.shape + (3,)``): the
    colours of every explanation map emovit draws."""
    scaled = np.clip(np.nan_to_num(np.asarray(values, dtype=np.float32)), 0.0, 1.0) * (len(_HEAT) - 1)
    low = np.minimum(np.floor(scaled).astype(np.int64), len(_HEAT) - 2)
    frac = (scaled - low)[..., None]
    return np.rint(_HEAT[low] * (1 - frac) + _HEAT[low + 1] * frac).astype(np.uint8)


def _blend(
    pixels: np.ndarray, values: np.ndarray, alpha: float, where: np.ndarray | None = None
) -> np.ndarray:
    """`pixels` (RGB uint8) with the heat colours of `values` laid over them at `alpha`."""
    weight = np.full(values.shape, alpha, dtype=np.float32) if where is None else alpha * where
    mixed = pixels[..., :3] * (1 - weight[..., None]) + heat_colours(values) * weight[..., None]
    return np.rint(mixed).astype(np.uint8)


@dataclass
class Explanation:
    """Where on one face the model looked (`emovit.EmotionRecognizer.explain`).

    Attributes:
        crop_map: float32 ``H x W`` in 0..1 at the face crop's pixel size: how much each pixel
            of the crop counted (1: most).
        method: ``rollout``, ``grad-rollout``, ``gradcam`` or ``smoothgrad``.
        target: the label explained (None for the class-agnostic rollout).
        layer: the layer Grad-CAM read (None for the attention methods).
        matrix: the 2x3 affine map from image pixels to crop pixels (None: the crop is the
            image); `image_map` uses it.
        image_size: ``(width, height)`` of the image the crop was cut from.
    """

    crop_map: np.ndarray = field(repr=False)
    method: str
    target: str | None = None
    layer: str | None = None
    matrix: np.ndarray | None = field(default=None, repr=False)
    image_size: tuple[int, int] | None = None

    def display_map(self) -> np.ndarray:
        """The map as the plots draw it: per-pixel maps (``smoothgrad``) blurred a little
        (Gaussian, sigma 2.5 % of the crop's shorter side) and scaled to 0..1 again, so that the
        regions that count show rather than single pixels; other maps as they are. `crop_map`
        (and the ``.npy`` files) keep the raw map."""
        if self.method != "smoothgrad" or self.crop_map.size == 0:
            return self.crop_map
        from PIL import Image, ImageFilter

        radius = max(1.0, 0.025 * min(self.crop_map.shape))
        grey = Image.fromarray(np.clip(self.crop_map * 255 + 0.5, 0, 255).astype(np.uint8))
        blurred = np.asarray(grey.filter(ImageFilter.GaussianBlur(radius)), dtype=np.float32)
        top = float(blurred.max())
        return blurred / top if top > 0 else blurred

    def crop_to_image(self) -> np.ndarray:
        """The 2x3 affine map from crop pixels to image pixels."""
        if self.matrix is None:
            return np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
        linear = np.linalg.inv(self.matrix[:, :2])
        return np.hstack([linear, -linear @ self.matrix[:, 2:]])

    def image_map(self, image_size: tuple[int, int] | None = None, *, outside: float = 0.0) -> np.ndarray:
        """The map in image coordinates: float32 ``height x width`` (of `image_size`, default
        the image's), `outside` where the crop does not reach (``nan`` gives a mask)."""
        size = image_size or self.image_size
        if size is None:
            raise ValueError("image_map needs the image's size (width, height)")
        width, height = size
        out = np.full((height, width), outside, dtype=np.float32)
        crop_h, crop_w = self.crop_map.shape
        forward = self.matrix if self.matrix is not None else self.crop_to_image()
        corners = np.array([[-0.5, -0.5, 1], [crop_w - 0.5, -0.5, 1], [-0.5, crop_h - 0.5, 1],
                            [crop_w - 0.5, crop_h - 0.5, 1]]) @ self.crop_to_image().T  # fmt: skip
        x0, y0 = np.maximum(np.floor(corners.min(axis=0)).astype(int), 0)
        x1 = min(int(np.ceil(corners[:, 0].max())) + 1, width)
        y1 = min(int(np.ceil(corners[:, 1].max())) + 1, height)
        if x0 >= x1 or y0 >= y1:
            return out
        ys, xs = np.mgrid[y0:y1, x0:x1].astype(np.float64)
        u = forward[0, 0] * xs + forward[0, 1] * ys + forward[0, 2]
        v = forward[1, 0] * xs + forward[1, 1] * ys + forward[1, 2]
        inside = (u >= -0.5) & (u <= crop_w - 0.5) & (v >= -0.5) & (v <= crop_h - 0.5)
        u, v = np.clip(u, 0, crop_w - 1), np.clip(v, 0, crop_h - 1)
        left = np.minimum(np.floor(u).astype(int), max(crop_w - 2, 0))
        top = np.minimum(np.floor(v).astype(int), max(crop_h - 2, 0))
        right, bottom = np.minimum(left + 1, crop_w - 1), np.minimum(top + 1, crop_h - 1)
        fu, fv = u - left, v - top
        m = self.crop_map
        sample = (m[top, left] * (1 - fu) + m[top, right] * fu) * (1 - fv) + (
            m[bottom, left] * (1 - fu) + m[bottom, right] * fu
        ) * fv
        out[y0:y1, x0:x1] = np.where(inside, sample, outside)
        return out

    def png(self) -> bytes:
        """The crop map as an 8-bit grey PNG at the crop's size (0: black, 1: white)."""
        import io

        from PIL import Image

        buffer = io.BytesIO()
        grey = np.rint(np.clip(self.crop_map, 0, 1) * 255).astype(np.uint8)
        Image.fromarray(grey, mode="L").save(buffer, format="PNG")
        return buffer.getvalue()

    def to_dict(self) -> dict[str, Any]:
        """A compact JSON-ready description (not the map: see `crop_map` and `png`)."""
        height, width = self.crop_map.shape
        return {
            "method": self.method,
            "target": self.target,
            "layer": self.layer,
            "size": [width, height],
            "crop_to_image": [[round(float(v), 6) for v in row] for row in self.crop_to_image()],
        }


@dataclass
class FaceResult:
    """The emotion of one face.

    Attributes:
        probs: probability per label, canonical emotions first in `emovit.EMOTIONS` order.
        box: ``(x1, y1, x2, y2)`` in image pixels; the whole image's ``(0, 0, width, height)``
            when it was classified whole (``detector="none"``, ``no_face="whole"``).
        landmarks: five ``(x, y)`` points (eyes, nose, mouth corners) when the detector gives them.
        detection_score: the face detector's confidence, when a detector ran.
        track_id: in a video, the face's track (the same person from frame to frame, from 1).
        raw_probs: in a video, this frame's own probabilities; `probs` are then the smoothed
            ones (over the track's recent frames), and `label` and `score` follow them.
        explanation: where the model looked (`Explanation`), from
            `emovit.EmotionRecognizer.explain`; None otherwise.
    """

    probs: dict[str, float]
    box: tuple[int, int, int, int] | None = None
    landmarks: list[tuple[float, float]] | None = None
    detection_score: float | None = None
    track_id: int | None = None
    raw_probs: dict[str, float] | None = None
    crop: np.ndarray | None = field(default=None, repr=False, compare=False)
    explanation: Explanation | None = field(default=None, repr=False, compare=False)

    @property
    def label(self) -> str:
        """The most probable label."""
        return max(self.probs, key=self.probs.__getitem__)

    @property
    def score(self) -> float:
        """The probability of `label`."""
        return self.probs[self.label]

    def top_k(self, k: int = 3) -> list[tuple[str, float]]:
        """The `k` most probable ``(label, probability)`` pairs, best first."""
        check_count(k, "top_k", 0)
        return sorted(self.probs.items(), key=lambda kv: kv[1], reverse=True)[:k]

    def to_dict(self, top_k: int | None = None) -> dict[str, Any]:
        """A JSON-ready dict (with a ``top_k`` list when `top_k` is given)."""
        out: dict[str, Any] = {
            "label": self.label,
            "score": self.score,
            "probs": dict(self.probs),
            "box": list(self.box) if self.box is not None else None,
            "landmarks": [list(p) for p in self.landmarks] if self.landmarks is not None else None,
            "detection_score": self.detection_score,
        }
        if self.track_id is not None or self.raw_probs is not None:
            out["track_id"] = self.track_id
            out["raw_probs"] = dict(self.raw_probs) if self.raw_probs is not None else None
        if top_k:
            out["top_k"] = [{"label": lab, "score": s} for lab, s in self.top_k(top_k)]
        if self.explanation is not None:
            out["explanation"] = self.explanation.to_dict()
        return out

    def plot_explanation(self, crop: np.ndarray | None = None, *, min_side: int = 224) -> np.ndarray:
        """The face crop with its explanation's heat map laid over it and the label above it
        (an RGB array, scaled up to at least `min_side` pixels on its shorter side, as far as its
        longer side stays within 2048).

        Args:
            crop: the face crop (default: the kept one, `crop`).

        Examples:
            >>> rec.explain("photo.jpg")[0].faces[0].plot_explanation().shape  # doctest: +SKIP
            (248, 224, 3)
        """
        from PIL import Image, ImageDraw, ImageFont

        pixels = crop if crop is not None else self.crop
        if self.explanation is None or pixels is None:
            raise ValueError("plot_explanation needs an explanation and the face crop (from explain)")
        values = self.explanation.display_map()
        if pixels.shape[:2] != values.shape:
            raise ValueError(f"the crop is {pixels.shape[:2]}, the map {values.shape}: not this face's crop")
        # up to min_side on the shorter side, but never past _PLOT_MAX_SIDE on the longer one (a
        # 20000x1 strip classified whole would otherwise make a canvas of millions of pixels a side)
        scale = min(max(1.0, min_side / min(values.shape)), max(1.0, _PLOT_MAX_SIDE / max(values.shape)))
        size = (max(1, round(values.shape[1] * scale)), max(1, round(values.shape[0] * scale)))
        bilinear = Image.Resampling.BILINEAR
        big = np.asarray(Image.fromarray(np.ascontiguousarray(pixels[..., :3])).resize(size, bilinear))
        heat = np.asarray(Image.fromarray(values.astype(np.float32), mode="F").resize(size, bilinear))
        label_width = min(size[0], _PLOT_LABEL_WIDTH)  # the label's size, whatever the crop's width
        font = ImageFont.load_default(size=max(12, label_width // 14))
        explained = self.explanation.target or self.label
        text = f"{self.label} {self.score:.2f}"
        text += f" - why {explained}" if explained != self.label else ""
        bar = max(16, label_width // 14) + 8
        canvas = Image.new("RGB", (size[0], size[1] + bar), EMOTION_COLOURS.get(self.label, (255, 255, 255)))
        canvas.paste(Image.fromarray(_blend(big, heat, 0.45)), (0, bar))
        ImageDraw.Draw(canvas).text((4, 3), text, fill=(0, 0, 0), font=font)
        return np.asarray(canvas)


@dataclass
class ImageResult:
    """Everything emovit found in one input image, or why it failed.

    Attributes:
        source: the input's name (its path, or e.g. ``<bytes #3>``).
        faces: one entry per face, largest first (empty when the input failed or had no face).
        image_size: ``(width, height)`` of the decoded image.
        error: why the input failed, for people (None when it succeeded).
        error_code: why, for programs (`emovit.errors.ERROR_CODES`: ``not_found``,
            ``corrupt_image``, ``detector_failed``, ``model_failed``, …).
        error_stage: the stage that failed: ``decode``, ``detect``, ``crop``, ``preprocess``
            or ``model``.
        timings: milliseconds per stage: decode and detect are this input's own; preprocess
            and inference ran for a whole batch and are its share of the batch's time (by its
            faces), so the inputs of one batch show the same figures. Results that differ only
            in their timings compare equal.
        image: the decoded RGB image, kept only when predicting with ``keep_pixels=True``.
        path: the file the input was read from (None for bytes, arrays, PIL images and file
            objects): what `plot` reads again when no pixels were kept.
    """

    source: str
    faces: list[FaceResult] = field(default_factory=list)
    image_size: tuple[int, int] | None = None
    error: str | None = None
    error_code: str | None = None
    error_stage: str | None = None
    timings: dict[str, float] = field(default_factory=dict, compare=False)  # no two runs time alike
    image: np.ndarray | None = field(default=None, repr=False, compare=False)
    path: str | None = field(default=None, repr=False, compare=False)

    @property
    def ok(self) -> bool:
        """True when the input was decoded and classified."""
        return self.error is None

    def fail(self, error: Exception) -> ImageResult:
        """Mark this result failed by `error` (an `InputError` gives code and stage); its
        faces are dropped. Returns self."""
        from emovit.errors import InputError

        self.faces = []
        if isinstance(error, InputError):
            self.error, self.error_code, self.error_stage = str(error), error.code, error.stage
        else:
            self.error, self.error_code, self.error_stage = f"{self.source}: {error}", "internal", None
        return self

    @property
    def label(self) -> str | None:
        """The first face's label (None when there is no face)."""
        return self.faces[0].label if self.faces else None

    @property
    def score(self) -> float | None:
        """The first face's probability for its label."""
        return self.faces[0].score if self.faces else None

    @property
    def probs(self) -> dict[str, float]:
        """The first face's probabilities (empty when there is no face)."""
        return dict(self.faces[0].probs) if self.faces else {}

    def top_k(self, k: int = 3) -> list[tuple[str, float]]:
        """The first face's `k` most probable labels."""
        check_count(k, "top_k", 0)
        return self.faces[0].top_k(k) if self.faces else []

    def to_dict(self, top_k: int | None = None) -> dict[str, Any]:
        """A JSON-ready dict: the first face's label, score and probs at the top, all faces below."""
        return {
            "source": self.source,
            "ok": self.ok,
            "error": self.error,
            "error_code": self.error_code,
            "error_stage": self.error_stage,
            "image_size": list(self.image_size) if self.image_size else None,
            "label": self.label,
            "score": self.score,
            "probs": self.probs,
            "faces": [face.to_dict(top_k) for face in self.faces],
            "timings_ms": {k: round(v, 3) for k, v in self.timings.items()},
        }

    def to_json(self, top_k: int | None = None, **json_kw: Any) -> str:
        """`to_dict` as a JSON string."""
        return json.dumps(self.to_dict(top_k), **json_kw)

    def _no_pixels(self) -> str:
        """Why there are no pixels to draw on, and how to keep them."""
        return (
            f"{self.source}: the input was read from memory (an image object, an array or bytes), "
            "not from a path, so there is no file to read its pixels from again: pass image= "
            "(the analysed pixels), or predict (or explain) with keep_pixels=True"
        )

    def plot(
        self, image: Any = None, *, font_size: int | None = None, explanations: bool = True
    ) -> np.ndarray:
        """The image with each face's box, label and score drawn on it (an RGB array).

        Args:
            image: the pixels to draw on (the same size as the analysed image); default: the
                kept image (``keep_pixels=True``), else the file the input was read from.
            explanations: lay each face's explanation map (`FaceResult.explanation`, from
                `emovit.EmotionRecognizer.explain`) over its crop's place in the image.

        Raises:
            ValueError: a failed input (nothing was analysed), no pixels to draw on (an
                in-memory input, predicted without ``keep_pixels=True`` and no `image` given),
                or pixels of another size than the analysed image (the boxes would land
                elsewhere).
        """
        from PIL import Image, ImageDraw, ImageFont

        from emovit.imageio import load_image

        if image is None and not self.ok:  # nothing was analysed: no boxes, perhaps no pixels
            raise ValueError(f"{self.source}: the input failed ({self.error}): there is nothing to draw")
        if image is None:
            image = self.image if self.image is not None else self.path
        if image is None:
            raise ValueError(self._no_pixels())
        pixels = load_image(image, max_pixels=None) if not isinstance(image, np.ndarray) else image
        pixels = np.ascontiguousarray(pixels[..., :3])
        if self.image_size is not None and (pixels.shape[1], pixels.shape[0]) != tuple(self.image_size):
            raise ValueError(
                f"{self.source}: the pixels to draw on are {pixels.shape[1]}x{pixels.shape[0]}, the "
                f"analysed image was {self.image_size[0]}x{self.image_size[1]} (the boxes would not fit)"
            )
        for face in self.faces if explanations else []:
            if face.explanation is not None:
                shown = replace(face.explanation, crop_map=face.explanation.display_map())
                heat = shown.image_map((pixels.shape[1], pixels.shape[0]), outside=np.nan)
                pixels = _blend(pixels, np.nan_to_num(heat), 0.45, ~np.isnan(heat))
        canvas = Image.fromarray(pixels)
        draw = ImageDraw.Draw(canvas)
        size = font_size or max(12, round(min(canvas.size) / 30))
        font = ImageFont.load_default(size=size)
        line = max(2, round(min(canvas.size) / 250))
        for index, face in enumerate(self.faces):
            box = face.box or (0, 0, canvas.width - 1, canvas.height - 1)
            colour = EMOTION_COLOURS.get(face.label, (255, 255, 255))
            draw.rectangle(box, outline=colour, width=line)
            name = f"#{face.track_id}" if face.track_id is not None else f"{index}:"
            text = f"{name} {face.label} {face.score:.2f}"
            left, top, right, bottom = draw.textbbox((box[0], box[1]), text, font=font)
            top_y = box[1] - (bottom - top) - 2 * line if box[1] - (bottom - top) - 2 * line >= 0 else box[3]
            draw.rectangle(
                (box[0], top_y, box[0] + right - left + 2 * line, top_y + bottom - top + 2 * line),
                fill=colour,
            )
            draw.text((box[0] + line, top_y + line - (top - box[1])), text, fill=(0, 0, 0), font=font)
            for x, y in face.landmarks or []:
                draw.ellipse((x - line, y - line, x + line, y + line), fill=colour)
        return np.asarray(canvas)

    def save(self, path: str | os.PathLike[str], image: Any = None) -> Path:
        """Write `plot` to `path` (format from the extension)."""
        from PIL import Image

        from emovit.fileio import write_image

        target = Path(path)
        fmt = Image.registered_extensions().get(target.suffix.lower())
        if fmt is None:
            raise ValueError(f"{target}: not an image file extension Pillow writes (use .jpg or .png)")
        return write_image(target, self.plot(image), fmt)  # never half an image (a crash, a full disk)


#: The fields of a video row (`FrameResult.rows`), in order.
FRAME_ROW_FIELDS = (
    "source", "ok", "error", "error_code", "error_stage", "frame", "time_s", "track_id", "box",
    "label", "score", "probs", "raw_probs", "detection_score",
)  # fmt: skip


@dataclass
class FrameResult(ImageResult):
    """One analysed frame of a video: an `ImageResult` (its faces, each with a ``track_id``;
    ``probs``, ``label`` and ``score`` smoothed over time, ``raw_probs`` this frame's own) with
    the frame's position and time.

    A video that cannot be read at all gives one failed `FrameResult` (``frame`` None).

    Attributes:
        frame: the frame's index in the video stream (from 0).
        time_s: its presentation time, in seconds from the start of the stream.
    """

    frame: int | None = None
    time_s: float | None = None

    def _no_pixels(self) -> str:
        return (
            f"{self.source} (frame {self.frame}): a video frame's pixels are not kept unless asked "
            "for: pass image= (the frame's pixels), or predict_video with keep_pixels=True"
        )

    def to_dict(self, top_k: int | None = None) -> dict[str, Any]:
        """`ImageResult.to_dict` with ``frame`` and ``time_s`` (faces carry ``track_id`` and
        ``raw_probs``)."""
        out = {"source": self.source, "frame": self.frame, "time_s": self.time_s}
        out.update(super().to_dict(top_k))
        return out

    def rows(self, top_k: int | None = None) -> list[dict[str, Any]]:
        """Flat rows, one per face (`FRAME_ROW_FIELDS`); a frame without faces (or a failed
        one) gives one row with the face fields None, so that every analysed frame appears."""
        head = {
            "source": self.source,
            "ok": self.ok,
            "error": self.error,
            "error_code": self.error_code,
            "error_stage": self.error_stage,
            "frame": self.frame,
            "time_s": self.time_s,
        }
        if not self.faces:
            return [{**head, **dict.fromkeys(FRAME_ROW_FIELDS[7:])}]
        rows = []
        for face in self.faces:
            data = face.to_dict(top_k)
            row = {**head, "track_id": face.track_id}
            row.update({key: data[key] for key in ("box", "label", "score", "probs")})
            row["raw_probs"] = data.get("raw_probs")
            row["detection_score"] = face.detection_score
            if top_k:
                row["top_k"] = data["top_k"]
            rows.append(row)
        return rows


#: The colour of each emotion in every picture emovit draws (boxes, timelines).
EMOTION_COLOURS: dict[str, tuple[int, int, int]] = {
    "angry": (230, 57, 70),
    "disgust": (106, 153, 78),
    "fear": (155, 93, 229),
    "happy": (255, 200, 50),
    "neutral": (200, 200, 200),
    "sad": (67, 97, 238),
    "surprise": (255, 127, 80),
}
