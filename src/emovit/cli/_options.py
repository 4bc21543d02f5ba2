"""The options shared by every command that runs the model (predict, evaluate, serve, bench,
video), each declared once here with one default.

Each option is a reusable click decorator; `recognizer_options`, `face_options` and
`video_options` apply a group of them and hand the command one typed object instead of a
dozen parameters: `RecognizerOptions` (which model, where and how it runs), the library's
`FaceOptions` (how faces are found and cropped) and `VideoOptions` (which frames of a video are
analysed, tracking, smoothing). Defaults come from those objects, so the CLI and the library
cannot drift apart.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar, get_args

import click

from emovit.explain import METHODS
from emovit.faces import DetectorName, FaceOptions, NoFacePolicy
from emovit.imageio import DEFAULT_MAX_PIXELS
from emovit.models import DEFAULT_MODEL
from emovit.postprocess import TtaMode
from emovit.predictor import BackendName, Precision
from emovit.video import VideoOptions

__all__ = [
    "ENGINE_OPTIONS",
    "FACE_OPTIONS",
    "VIDEO_OPTIONS",
    "EngineOptions",
    "RecognizerOptions",
    "address_option",
    "align_option",
    "backend_option",
    "batch_size_option",
    "collect",
    "det_threshold_option",
    "detect_max_side_option",
    "detector_model_option",
    "detector_option",
    "device_option",
    "end_option",
    "engine_option",
    "engine_options",
    "every_option",
    "explain_method_option",
    "explain_target_option",
    "face_options",
    "face_options_from",
    "fps_option",
    "grey_option",
    "margin_option",
    "max_faces_option",
    "max_pixels_option",
    "min_face_option",
    "model_option",
    "no_face_option",
    "option_names",
    "plot_option",
    "precision_option",
    "recognizer_options",
    "resume_option",
    "smooth_option",
    "start_option",
    "summary_option",
    "threads_option",
    "track_buffer_option",
    "tta_option",
    "video_options",
    "workers_option",
]

F = TypeVar("F", bound=Callable[..., Any])
Decorator = Callable[[F], F]


@dataclass(frozen=True)
class RecognizerOptions:
    """Which model to load, and where and how it runs: everything of an `EmotionRecognizer`
    but its face stage (`FaceOptions`)."""

    model: str = DEFAULT_MODEL
    device: str = "auto"
    backend: BackendName = "auto"
    precision: Precision = "fp32"
    threads: int | None = None
    batch_size: int = 16
    max_pixels: int = DEFAULT_MAX_PIXELS
    tta: TtaMode = "none"

    def replace(self, **changes: Any) -> RecognizerOptions:
        return dataclasses.replace(self, **changes)


_RUN = RecognizerOptions()
_FACES = FaceOptions()
_VIDEO = VideoOptions()


class _TtaChoice(click.Choice):
    """``none`` or ``flip``; a bare ``--tta`` means flip (the old ``evaluate --tta`` flag)."""

    def __init__(self) -> None:
        super().__init__(get_args(TtaMode))

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        try:
            return super().convert(value, param, ctx)
        except click.BadParameter:
            self.fail(
                f"{value!r} is not one of 'none', 'flip' (a bare --tta means flip: write it after the "
                "arguments, or as --tta flip)",
                param,
                ctx,
            )


# ---------------------------------------------------------------------- model and runtime

model_option = click.option(
    "--model",
    "-m",
    default=_RUN.model,
    show_default=True,
    help="Hub id, local model folder, or registry name (see `emovit models`).",
)
device_option = click.option(
    "--device", default=_RUN.device, show_default=True, help="auto, cpu, cuda[:N] or mps."
)
backend_option = click.option(
    "--backend",
    type=click.Choice(get_args(BackendName)),
    default=_RUN.backend,
    show_default=True,
    help="auto: onnxruntime when the model folder has model.onnx (on CPU), else torch.",
)
precision_option = click.option(
    "--precision",
    type=click.Choice(get_args(Precision)),
    default=_RUN.precision,
    show_default=True,
    help="bf16: torch autocast, on a GPU or a CPU with native bf16 (AVX512_BF16/AMX) only.",
)
threads_option = click.option(
    "--threads",
    type=click.IntRange(1),
    default=_RUN.threads,
    help="Intra-op threads (default: physical cores).",
)
batch_size_option = click.option(
    "--batch-size",
    "-b",
    type=click.IntRange(1),
    default=_RUN.batch_size,
    show_default=True,
    help="Images per model batch.",
)
max_pixels_option = click.option(
    "--max-pixels",
    type=click.IntRange(1),
    default=_RUN.max_pixels,
    show_default=True,
    help="Refuse larger images before decoding them (decompression bombs).",
)
tta_option = click.option(
    "--tta",
    type=_TtaChoice(),
    default=_RUN.tta,
    is_flag=False,
    flag_value="flip",
    show_default=True,
    help="Test-time augmentation: flip averages each face with its mirror image (twice the "
    "model work); a bare --tta means flip.",
)

# ---------------------------------------------------------------------- explanations

explain_method_option = click.option(
    "--method",
    type=click.Choice(METHODS),
    default="auto",
    show_default=True,
    help="Explanation map: rollout (a ViT's attention, class-agnostic), grad-rollout (gradient-weighted "
    "attention of the explained class), gradcam (models with a spatial feature map), smoothgrad "
    "(per-pixel gradient x input, any model); auto picks grad-rollout for ViTs, smoothgrad "
    "otherwise (it passes the deletion test where Grad-CAM does not: see the README).",
)
explain_target_option = click.option(
    "--target",
    default=None,
    metavar="LABEL",
    help="Explain this label on every face (e.g. happy) [default: each face's own label].",
)

# ---------------------------------------------------------------------- faces

detector_option = click.option(
    "--detector",
    type=click.Choice(get_args(DetectorName)),
    default=_FACES.detector,
    show_default=True,
    help="auto: YuNet when cached or downloadable, else OpenCV's Haar cascade (with a warning); "
    "none: each image is one face (pre-cropped data).",
)
detector_model_option = click.option(
    "--detector-model",
    type=click.Path(dir_okay=False),
    default=None,
    help="Local YuNet ONNX file (default: the cached one; `emovit models fetch yunet` caches it).",
)
det_threshold_option = click.option(
    "--det-threshold",
    type=click.FloatRange(0, 1),
    default=_FACES.det_threshold,
    show_default=True,
    help="Minimum face detection score.",
)
margin_option = click.option(
    "--margin",
    type=click.FloatRange(0),
    default=None,
    help="Context around each face box, as a fraction of its size (default: the model's framing).",
)
align_option = click.option(
    "--align/--no-align",
    default=None,
    help="Level the eyes with the detector's landmarks (default: the model's framing).",
)
grey_option = click.option(
    "--grey/--no-grey", default=None, help="Grey face crops before the model (default: the model's framing)."
)
min_face_option = click.option(
    "--min-face",
    type=click.IntRange(1),
    default=_FACES.min_face,
    show_default=True,
    help="Ignore faces smaller than this many pixels.",
)
max_faces_option = click.option(
    "--max-faces",
    type=click.IntRange(1),
    default=None,
    help="At most this many faces per image (the largest; default: all, 64 in `emovit serve`).",
)
no_face_option = click.option(
    "--no-face",
    type=click.Choice(get_args(NoFacePolicy)),
    default=_FACES.no_face,
    show_default=True,
    help="Images without a face: report none (skip), classify the whole image, or fail the input.",
)
detect_max_side_option = click.option(
    "--detect-max-side",
    type=click.IntRange(32),
    default=None,
    help="Search faces on a copy scaled down to this longest side, in pixels (boxes stay in the "
    "image's pixels) [default: 1280 for photos, 320 for video frames].",
)

# ---------------------------------------------------------------------- video

fps_option = click.option(
    "--fps",
    type=click.FloatRange(0, min_open=True),
    default=_VIDEO.fps,
    help="Videos: analyse this many frames per second of video time [default: every frame].",
)
every_option = click.option(
    "--every",
    type=click.IntRange(1),
    default=_VIDEO.every,
    help="Videos: analyse every N-th frame (not with --fps).",
)
start_option = click.option(
    "--start",
    type=click.FloatRange(0),
    default=_VIDEO.start,
    show_default=True,
    help="Videos: skip the video before this time (seconds).",
)
end_option = click.option(
    "--end",
    type=click.FloatRange(0, min_open=True),
    default=_VIDEO.end,
    help="Videos: stop at this time (seconds) [default: the end].",
)
smooth_option = click.option(
    "--smooth",
    type=click.FloatRange(0),
    default=_VIDEO.smooth,
    show_default=True,
    help="Videos: time constant (seconds of video) of the exponential smoothing of each face's "
    "probabilities; 0 turns it off. Labels and scores are the smoothed ones.",
)
track_buffer_option = click.option(
    "--track-buffer",
    type=click.IntRange(0),
    default=_VIDEO.track_buffer,
    show_default=True,
    help="Videos: analysed frames a face may go unseen and keep its track id.",
)
summary_option = click.option(
    "--summary",
    type=click.Path(dir_okay=False),
    default=None,
    help="Videos: write a JSON summary (per video: frames, duration, and per track its time span, "
    "dominant emotion and shares) to FILE, atomically.",
)
plot_option = click.option(
    "--plot",
    type=click.Path(file_okay=False),
    default=None,
    help="Videos: draw each video's emotion timeline (one panel per track) into DIR/<stem>.timeline.png.",
)

# ---------------------------------------------------------------------- engine (scale-out)

Engine = Literal["local", "ray"]


@dataclass(frozen=True)
class EngineOptions:
    """Where the pipeline runs: in this process (``local``) or on Ray Data actors (``ray``:
    a local Ray, or the cluster at `address`), with `workers` actors; `resume` skips inputs
    already in the output folder."""

    engine: Engine = "local"
    address: str | None = None
    workers: int | None = None
    resume: bool = False


_ENGINE = EngineOptions()

engine_option = click.option(
    "--engine",
    type=click.Choice(get_args(Engine)),
    default=_ENGINE.engine,
    show_default=True,
    help="local: this process; ray: Ray Data actors, each with its own copy of the model, writing "
    "Parquet or JSONL files into the --output folder (pip install 'emovit[ray]').",
)
address_option = click.option(
    "--address",
    default=_ENGINE.address,
    help="--engine ray: join this Ray cluster ('auto', or ray://HOST:PORT) [default: start a local Ray "
    "on this machine].",
)
workers_option = click.option(
    "--workers",
    type=click.IntRange(1),
    default=_ENGINE.workers,
    help="--engine ray: actors, one model each [default: one per CPU (per GPU with --device cuda) of "
    "the cluster].",
)
resume_option = click.option(
    "--resume",
    is_flag=True,
    default=_ENGINE.resume,
    help="--engine ray: skip the inputs whose rows the --output folder already holds (a stopped run "
    "goes on).",
)


# ---------------------------------------------------------------------- grouping


def option_names(*options: Decorator) -> list[str]:
    """The parameter names of click option decorators."""
    probe: Any = lambda: None  # noqa: E731 - only collects the parameters' names
    for option in options:
        option(probe)
    return [param.name for param in probe.__click_params__]


def collect(into: str, build: Callable[..., Any], *options: Decorator) -> Decorator:
    """Apply click `options` to a command and pass their values to it as one argument,
    ``into=build(**values)`` (option names are `build`'s keyword names); the options appear in
    help in the order given."""

    def decorator(command: F) -> F:
        names = option_names(*options)

        @functools.wraps(command)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            kwargs[into] = build(**{name: kwargs.pop(name) for name in names})
            return command(*args, **kwargs)

        for option in reversed(options):
            wrapper = option(wrapper)
        return wrapper  # type: ignore[return-value]

    return decorator


def recognizer_options(*, model: bool = True, batch_size: bool = True) -> Decorator:
    """--model --device --backend --precision --threads --batch-size --max-pixels --tta, as
    ``recognizer: RecognizerOptions``; `model` / `batch_size` False leaves those out (a
    command whose model is an argument, the server's own batching)."""
    options: list[Decorator] = [model_option, device_option] if model else []
    options += [backend_option, precision_option, threads_option]
    options += [batch_size_option] if batch_size else []
    options += [max_pixels_option, tta_option]
    return collect("recognizer", RecognizerOptions, *options)


def face_options_from(**values: Any) -> FaceOptions:
    """The `FaceOptions` of the face flags' values (None: not given, the library decides);
    a warning when --detector-model is given to a detector that does not read it."""
    if values.get("detector_model") and values.get("detector") in ("haar", "none"):
        click.echo(
            f"warning: --detector-model is for YuNet; --detector {values['detector']} does not read it",
            err=True,
        )
    return FaceOptions().replace(**values)


FACE_OPTIONS: tuple[Decorator, ...] = (
    detector_option,
    detector_model_option,
    det_threshold_option,
    margin_option,
    align_option,
    grey_option,
    min_face_option,
    max_faces_option,
    no_face_option,
    detect_max_side_option,
)

#: --detector --detector-model --det-threshold --margin --align/--no-align --grey/--no-grey
#: --min-face --max-faces --no-face --detect-max-side, as ``faces: FaceOptions``.
face_options: Decorator = collect("faces", face_options_from, *FACE_OPTIONS)


def _video_options_from(**values: Any) -> VideoOptions:
    """The `VideoOptions` of the video flags (a conflict names its flag: exit 2)."""
    from emovit.errors import OptionError

    try:
        return VideoOptions().replace(**values)
    except OptionError as exc:
        raise click.BadParameter(str(exc), param_hint=f"'--{(exc.option or '').replace('_', '-')}'") from None


VIDEO_OPTIONS: tuple[Decorator, ...] = (
    fps_option,
    every_option,
    start_option,
    end_option,
    smooth_option,
    track_buffer_option,
)

#: --fps --every --start --end --smooth --track-buffer, as ``video: VideoOptions``.
video_options: Decorator = collect("video", _video_options_from, *VIDEO_OPTIONS)

ENGINE_OPTIONS: tuple[Decorator, ...] = (engine_option, address_option, workers_option, resume_option)

#: --engine --address --workers --resume, as ``runner: EngineOptions``.
engine_options: Decorator = collect("runner", EngineOptions, *ENGINE_OPTIONS)
