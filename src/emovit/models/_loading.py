"""Find a model folder (local folder, registry name or Hub id) and load it safely.

Only ``*.safetensors`` weights are ever read and custom model code (``auto_map``) is refused:
emovit never passes ``trust_remote_code``. Hub ids go through the normal Hugging Face cache,
so a checkpoint downloaded once works offline (``HF_HUB_OFFLINE=1``) afterwards.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from dataclasses import dataclass, field
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from emovit.errors import ModelLoadError, RandomWeightsWarning
from emovit.labels import LabelMap
from emovit.models._framing import Framing, read_framing
from emovit.models._registry import EMBEDDED, REGISTRY

if TYPE_CHECKING:
    import torch

    from emovit.preprocess import ImagePreprocessor

__all__ = [
    "DEFAULT_MODEL",
    "Device",
    "LoadedModel",
    "ModelInfo",
    "describe_model",
    "load_model",
    "resolve_device",
    "resolve_model",
]

DEFAULT_MODEL = "default"
Device = Literal["auto", "cpu", "cuda", "mps"] | str

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*(/[A-Za-z0-9][\w.\-]*)?$")
_HUB_FILES = ["*.json", "*.safetensors", "README.md", "*.onnx"]
_UNSAFE_WEIGHTS = ("pytorch_model.bin", "tf_model.h5", "flax_model.msgpack", "model.ckpt.index")
RANDOM_WEIGHTS_KEY = "emovit_random_weights"


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


def _embedded_folder() -> Path:
    return Path(str(resources.files("emovit.models").joinpath("default")))


def resolve_model(
    name_or_path: str | os.PathLike[str] = DEFAULT_MODEL,
    *,
    revision: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    local_files_only: bool | None = None,
) -> Path:
    """Return the local folder holding the model's files, downloading a Hub id if needed.

    Args:
        name_or_path: a local folder, a registry name (`emovit.models.list_models`) or a Hub id.
        revision: Hub branch, tag or commit (default ``main``).
        cache_dir: Hugging Face cache folder (default: ``HF_HUB_CACHE`` / ``HF_HOME`` / ~/.cache).
        local_files_only: never touch the network (default: true when ``HF_HUB_OFFLINE=1``).

    Raises:
        ModelLoadError: the folder is missing, the Hub is unreachable and the model is not
            cached, or the id does not exist; the message says what to do.
    """
    ref = os.fspath(name_or_path)
    path = Path(ref).expanduser()
    if path.is_dir():
        return path
    entry = REGISTRY.get(ref)
    if entry is not None and entry.location == EMBEDDED:
        folder = _embedded_folder()
        if not (folder / "config.json").is_file():
            raise ModelLoadError(
                f"the embedded {ref!r} model is not in this installation ({folder}); "
                "build it with `make train-default` or pass --model with a Hub id or folder"
            )
        return folder
    hub_id = entry.location if entry is not None else ref
    looks_like_path = ref.startswith((".", "/", "~")) or os.sep in ref.strip("/").replace("/", "", 1)
    if looks_like_path or not _HUB_ID.match(hub_id):
        raise ModelLoadError(
            f"{ref!r} is not a model folder (no such directory), a registry name "
            f"({', '.join(sorted(REGISTRY))}) or a Hugging Face Hub id (owner/name)"
        )
    return _download(hub_id, revision=revision, cache_dir=cache_dir, local_files_only=local_files_only)


def _download(
    hub_id: str,
    *,
    revision: str | None,
    cache_dir: str | os.PathLike[str] | None,
    local_files_only: bool | None,
) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    offline = _env_flag("HF_HUB_OFFLINE") if local_files_only is None else local_files_only
    if cache_dir is None:
        cache_dir = os.environ.get("HF_HUB_CACHE") or (
            os.path.join(os.environ["HF_HOME"], "hub") if os.environ.get("HF_HOME") else None
        )
    where = cache_dir or "the Hugging Face cache"
    try:
        folder = snapshot_download(
            hub_id,
            revision=revision,
            cache_dir=cache_dir,
            local_files_only=offline,
            allow_patterns=_HUB_FILES,
            endpoint=os.environ.get("HF_ENDPOINT") or None,
        )
    except GatedRepoError:
        raise ModelLoadError(
            f"{hub_id!r} is gated on the Hugging Face Hub: accept its terms on the website "
            "and log in (`hf auth login`) before loading it"
        ) from None
    except RepositoryNotFoundError:
        raise ModelLoadError(
            f"no model {hub_id!r} on the Hugging Face Hub (misspelt, or private: log in with "
            "`hf auth login`), and it is not a local folder or registry name"
        ) from None
    except RevisionNotFoundError:
        raise ModelLoadError(f"{hub_id!r} has no revision {revision!r} on the Hub") from None
    except LocalEntryNotFoundError:
        why = "offline mode is on (HF_HUB_OFFLINE=1)" if offline else "the Hub cannot be reached"
        raise ModelLoadError(
            f"model {hub_id!r} is not in {where} and {why}. Download it once on a machine "
            "with internet (it is cached for offline use afterwards), or pass --model with a "
            "local folder, or use the embedded model (--model default)"
        ) from None
    except (HfHubHTTPError, OSError) as exc:
        raise ModelLoadError(f"cannot download {hub_id!r} from the Hugging Face Hub: {exc}") from None
    return Path(folder)


def _read_config(folder: Path) -> dict[str, Any]:
    try:
        return dict(json.loads((folder / "config.json").read_text(encoding="utf-8")))
    except FileNotFoundError:
        raise ModelLoadError(f"{folder}: no config.json, so this is not a model folder") from None
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"{folder / 'config.json'}: unreadable ({exc})") from None


def _check_folder(folder: Path, config: dict[str, Any]) -> None:
    if "auto_map" in config:
        raise ModelLoadError(
            f"{folder}: the checkpoint needs its own Python code (auto_map); emovit never "
            "runs remote code (trust_remote_code), use a model type transformers ships"
        )
    from transformers import CONFIG_MAPPING

    model_type = config.get("model_type")
    if model_type not in CONFIG_MAPPING:
        raise ModelLoadError(f"{folder}: unknown model_type {model_type!r} in config.json")
    if not any(folder.glob("*.safetensors")) and not (folder / "model.onnx").is_file():
        unsafe = [name for name in _UNSAFE_WEIGHTS if (folder / name).exists()]
        hint = (
            f" It has {', '.join(unsafe)}, which emovit does not load (pickle files can run "
            "code): convert it once with `model.save_pretrained(dir, safe_serialization=True)`."
            if unsafe
            else ""
        )
        raise ModelLoadError(f"{folder}: no *.safetensors weights.{hint}")


def resolve_device(device: str = "auto") -> str:
    """Pick ``cuda``, then ``mps``, then ``cpu`` for ``auto``; check an explicit choice."""
    import torch

    if device == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    kind = device.split(":")[0]
    if kind == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError(f"device {device!r} requested but CUDA is not available")
    if kind == "mps" and not torch.backends.mps.is_available():
        raise ModelLoadError(f"device {device!r} requested but MPS is not available")
    if kind not in {"cpu", "cuda", "mps", "xpu"}:
        raise ModelLoadError(f"unknown device {device!r}; use auto, cpu, cuda[:N] or mps")
    return device


@dataclass
class ModelInfo:
    """What `emovit info` shows: architecture, labels, parameter count and processor settings."""

    name: str
    path: Path
    config: dict[str, Any]
    processor: dict[str, Any]
    parameters: int | None
    label_map: LabelMap = field(repr=False)

    @property
    def random_weights(self) -> bool:
        """True for models emovit built with random weights (their output means nothing)."""
        return bool(self.config.get(RANDOM_WEIGHTS_KEY))

    def to_dict(self) -> dict[str, Any]:
        """The architecture table as a JSON-ready dict."""
        c = self.config
        return {
            "name": self.name,
            "path": str(self.path),
            "architecture": (c.get("architectures") or [c.get("model_type")])[0],
            "model_type": c.get("model_type"),
            "image_size": c.get("image_size"),
            "patch_size": c.get("patch_size"),
            "hidden_size": c.get("hidden_size"),
            "num_hidden_layers": c.get("num_hidden_layers"),
            "num_attention_heads": c.get("num_attention_heads"),
            "intermediate_size": c.get("intermediate_size"),
            "num_channels": c.get("num_channels"),
            "labels": list(self.label_map.names),
            "checkpoint_labels": [c.get("id2label", {}).get(str(i)) for i in range(len(self.label_map))],
            "parameters": self.parameters,
            "processor": {
                k: self.processor.get(k)
                for k in (
                    "size",
                    "resample",
                    "do_rescale",
                    "rescale_factor",
                    "do_normalize",
                    "image_mean",
                    "image_std",
                    "do_center_crop",
                    "crop_size",
                )
                if k in self.processor
            },
            "random_weights": self.random_weights,
        }


def _count_parameters(folder: Path) -> int | None:
    from safetensors import safe_open

    total = 0
    for file in sorted(folder.glob("*.safetensors")):
        with safe_open(str(file), framework="numpy") as f:
            for key in f.keys():  # noqa: SIM118 - safe_open is not a Mapping
                n = 1
                for dim in f.get_slice(key).get_shape():
                    n *= dim
                total += n
    return total or None


def describe_model(name_or_path: str | os.PathLike[str] = DEFAULT_MODEL, **resolve_kw: Any) -> ModelInfo:
    """Read a model's architecture table without loading its weights."""
    from emovit.preprocess import read_processor_config

    folder = resolve_model(name_or_path, **resolve_kw)
    config = _read_config(folder)
    _check_folder(folder, config)
    return ModelInfo(
        name=os.fspath(name_or_path),
        path=folder,
        config=config,
        processor=read_processor_config(folder),
        parameters=_count_parameters(folder),
        label_map=LabelMap.from_id2label(config.get("id2label") or {}),
    )


@dataclass
class LoadedModel:
    """A checkpoint ready for inference: the torch module, its labels and its preprocessing."""

    name: str
    path: Path
    model: torch.nn.Module | None  # None for ONNX-only folders
    config: Any
    label_map: LabelMap
    device: str

    @cached_property
    def preprocessor(self) -> ImagePreprocessor:
        """The checkpoint's image preprocessing (emovit's fast path or transformers')."""
        from emovit.preprocess import create_preprocessor

        return create_preprocessor(self.path)

    @property
    def random_weights(self) -> bool:
        """True for models emovit built with random weights (their output means nothing)."""
        return bool(getattr(self.config, RANDOM_WEIGHTS_KEY, False))

    @cached_property
    def recorded_framing(self) -> Framing | None:
        """The face framing saved with the model (``emovit.json``), or None."""
        return read_framing(self.path)

    @property
    def framing(self) -> Framing:
        """The face framing the model was trained on, or the default for checkpoints that
        record none (margin 0.2, alignment on)."""
        return self.recorded_framing or Framing.default()


def load_model(
    name_or_path: str | os.PathLike[str] = DEFAULT_MODEL,
    *,
    device: str = "auto",
    revision: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    local_files_only: bool | None = None,
    load_weights: bool = True,
) -> LoadedModel:
    """Load an image-classification checkpoint for inference (eval mode, on `device`).

    With ``load_weights=False`` (an ONNX backend will run the model) only the config and
    labels are read; folders that hold just ``model.onnx`` load that way too.

    Examples:
        >>> model = load_model("dima806/facial_emotions_image_detection")  # doctest: +SKIP
        >>> model.label_map.names[:3]  # doctest: +SKIP
        ('sad', 'disgust', 'angry')
    """
    folder = resolve_model(
        name_or_path, revision=revision, cache_dir=cache_dir, local_files_only=local_files_only
    )
    raw = _read_config(folder)
    _check_folder(folder, raw)
    label_map = LabelMap.from_id2label(raw.get("id2label") or {})
    from transformers import AutoConfig, AutoModelForImageClassification

    target = resolve_device(device)
    has_torch_weights = any(folder.glob("*.safetensors"))
    try:
        config = AutoConfig.from_pretrained(folder, trust_remote_code=False)
        model = None
        if load_weights and has_torch_weights:
            model = AutoModelForImageClassification.from_pretrained(
                folder, config=config, use_safetensors=True, trust_remote_code=False
            )
            model.eval().to(target)
    except (OSError, ValueError, KeyError) as exc:
        raise ModelLoadError(f"{folder}: cannot load the model ({exc})") from None
    if raw.get(RANDOM_WEIGHTS_KEY):
        warnings.warn(
            f"{name_or_path}: this model has RANDOM weights; its predictions are meaningless",
            RandomWeightsWarning,
            stacklevel=2,
        )
    return LoadedModel(
        name=os.fspath(name_or_path),
        path=folder,
        model=model,
        config=config,
        label_map=label_map,
        device=target,
    )


def build_random_model(
    out_dir: str | os.PathLike[str],
    preset: str = "vit-base-patch16-224",
    *,
    id2label: dict[int, str] | None = None,
    seed: int = 0,
    **overrides: Any,
) -> Path:
    """Write a model folder with the `preset` architecture and random weights.

    The folder is marked (``emovit_random_weights``) so that every load warns that its
    output is meaningless. Used by tests and by `make demo` before a trained model exists.
    """
    import torch

    from emovit.models._presets import REFERENCE_ID2LABEL, arch_preset

    spec = arch_preset(preset)
    labels = id2label if id2label is not None else REFERENCE_ID2LABEL
    torch.manual_seed(seed)
    model = spec.build_model(labels, **overrides)
    setattr(model.config, RANDOM_WEIGHTS_KEY, True)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    (out / "preprocessor_config.json").write_text(json.dumps(spec.processor, indent=2) + "\n")
    return out
