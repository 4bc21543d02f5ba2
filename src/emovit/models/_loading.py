"""Find a model folder (local folder, registry name or Hub id) and load it safely.

`load_torch_model` is the one place a checkpoint becomes a torch module: inference
(`load_model`), training (``--init``, the distillation teacher) and the ONNX export all load
through it. Only ``*.safetensors`` weights are ever read and custom model code (``auto_map``)
is refused: emovit never passes ``trust_remote_code``. Hub ids go through the normal Hugging
Face cache, so a checkpoint downloaded once works offline (``HF_HUB_OFFLINE=1``) afterwards.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from emovit.errors import LabelError, ModelLoadError, OptionError, RandomWeightsWarning, first_line
from emovit.labels import LabelMap
from emovit.models._framing import Framing, read_framing
from emovit.models._presets import apply_config_overrides, identity_norms
from emovit.models._registry import EMBEDDED, REGISTRY

if TYPE_CHECKING:
    import torch

    from emovit.preprocess import ImagePreprocessor

__all__ = [
    "DEFAULT_MODEL",
    "Device",
    "LoadedModel",
    "load_model",
    "load_torch_model",
    "no_weight_loading_bar",
    "read_model_config",
    "resolve_device",
    "resolve_model",
]

DEFAULT_MODEL = "default"
Device = Literal["auto", "cpu", "cuda", "mps"] | str

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*(/[A-Za-z0-9][\w.\-]*)?$")
#: What is fetched of a Hub repo: configs, weights, the card, and a top-level ``model.onnx``
#: (not the onnx/ variants some repos carry: quantised, fp16, external data).
_HUB_FILES = ["*.json", "*.safetensors", "README.md", "model.onnx"]
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
    if not isinstance(name_or_path, str | os.PathLike):
        raise ModelLoadError(
            f"a model is a registry name, a Hub id or a folder (a str or a path), got {name_or_path!r}"
        )
    ref = os.fspath(name_or_path)
    path = Path(ref).expanduser()
    if path.is_dir():
        return path
    if path.exists() and ref not in REGISTRY:  # "afile.jpg" would read as a Hub id (owner-less name)
        raise ModelLoadError(
            f"{ref!r} is a file, not a model folder (the folder that holds config.json and the weights)"
        )
    entry = REGISTRY.get(ref)
    if entry is not None and entry.location == EMBEDDED:
        folder = _embedded_folder()
        if not (folder / "config.json").is_file():
            raise ModelLoadError(
                f"the embedded {ref!r} model is not in this installation ({folder}); "
                "build it with `make train-default`, or give a Hub id or a folder as the model"
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
            cache_dir=None if cache_dir is None else os.fspath(cache_dir),
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
            "with internet (it is cached for offline use afterwards), or give a local folder as "
            "the model, or use the embedded model (default)"
        ) from None
    except (HfHubHTTPError, OSError) as exc:
        raise ModelLoadError(f"cannot download {hub_id!r} from the Hugging Face Hub: {exc}") from None
    return Path(folder)


def read_model_config(folder: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a model folder's ``config.json`` after the safety checks (safetensors or ONNX
    weights only, no custom code, a model type transformers ships); loads no weights.

    Raises:
        ModelLoadError: not a model folder, or a checkpoint emovit will not load.
    """
    folder = Path(folder)
    try:
        config = dict(json.loads((folder / "config.json").read_text(encoding="utf-8")))
    except FileNotFoundError:
        raise ModelLoadError(f"{folder}: no config.json, so this is not a model folder") from None
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"{folder / 'config.json'}: unreadable ({exc})") from None
    _check_folder(folder, config)
    return config


def _check_folder(folder: Path, config: dict[str, Any]) -> None:
    if "auto_map" in config:
        raise ModelLoadError(
            f"{folder}: the checkpoint needs its own Python code (auto_map); emovit never "
            "runs remote code (trust_remote_code), use a model type transformers ships"
        )
    from transformers import CONFIG_MAPPING

    model_type = config.get("model_type")
    if model_type is None:
        raise ModelLoadError(
            f"{folder}: config.json names no model_type (a transformers model's config has one)"
        )
    if model_type not in CONFIG_MAPPING:
        raise ModelLoadError(f"{folder}: unknown model_type {model_type!r} in config.json")
    labels = config.get("id2label") or {}
    if config.get("problem_type") == "multi_label_classification" or len(labels) == 1:
        raise ModelLoadError(
            f"{folder}: a multi-label (or one-label) classifier, whose scores transformers' pipeline "
            "reads with a sigmoid each; emovit reads one emotion per face (a softmax over the "
            "classes), so it takes single-label checkpoints only"
        )
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
    usage = "use auto, cpu, cuda[:N] or mps"
    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError, TypeError):
        raise ModelLoadError(f"unknown device {device!r}; {usage}", option="device") from None
    if parsed.type not in {"cpu", "cuda", "mps", "xpu"}:
        raise ModelLoadError(f"unknown device {device!r}; {usage}", option="device")
    if parsed.type == "xpu" and not (hasattr(torch, "xpu") and torch.xpu.is_available()):
        raise ModelLoadError(
            f"device {device!r} requested but no Intel GPU (XPU) is available", option="device"
        )
    if parsed.type == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError(f"device {device!r} requested but CUDA is not available", option="device")
    if parsed.type == "cuda" and parsed.index is not None and parsed.index >= torch.cuda.device_count():
        count = torch.cuda.device_count()
        raise ModelLoadError(f"device {device!r}: this machine has {count} CUDA device(s)", option="device")
    if parsed.type == "mps" and not torch.backends.mps.is_available():
        raise ModelLoadError(f"device {device!r} requested but MPS is not available", option="device")
    return device


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


def load_torch_model(
    name_or_path: str | os.PathLike[str] = DEFAULT_MODEL,
    *,
    device: str = "cpu",
    id2label: Mapping[int, str] | None = None,
    ignore_mismatched_sizes: bool = False,
    config_overrides: Mapping[str, Any] | None = None,
    attn_implementation: str | None = None,
    float32: bool = False,
    revision: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    local_files_only: bool | None = None,
) -> LoadedModel:
    """Load a checkpoint's torch module (eval mode, on `device`) after the safety checks.

    The one loader: inference, training (``--init`` and the distillation teacher) and the ONNX
    export all come here, so every door refuses the same unsafe checkpoints.

    Args:
        name_or_path: a local folder, a registry name or a Hub id (`resolve_model`).
        device: ``cpu``, ``cuda[:N]``, ``mps`` or ``auto``.
        id2label: give the model these labels. When they differ from the checkpoint's (by
            name or by position) the classification head is new: its weights are drawn afresh
            (truncated normal, zero bias), never reused by position.
        ignore_mismatched_sizes: allow weights whose shape changed (a head for another number
            of labels, a ``config_overrides`` change); needed when `id2label` changes the count.
        config_overrides: config fields to set before the weights are loaded (``image_size``
            on a ViT or DeiT: its position embeddings are resampled to the new patch grid).
        attn_implementation: transformers' attention implementation (the export registers one).
        float32: load the weights as float32 whatever dtype they were saved in (training, the
            export, explanations); by default they keep it, as transformers' pipeline does.
        revision, cache_dir, local_files_only: as in `resolve_model`.

    Raises:
        ModelLoadError: the checkpoint cannot be found, is unsafe, holds no ``*.safetensors``
            weights, or its weights do not fit its config.

    Examples:
        >>> loaded = load_torch_model("default")  # doctest: +SKIP
        >>> loaded.model.training  # doctest: +SKIP
        False
    """
    folder = resolve_model(
        name_or_path, revision=revision, cache_dir=cache_dir, local_files_only=local_files_only
    )
    raw = read_model_config(folder)
    if not any(folder.glob("*.safetensors")):
        raise ModelLoadError(
            f"{folder}: no *.safetensors weights (an ONNX-only folder runs on the onnx backend "
            "but cannot be trained or exported again)"
        )
    target = resolve_device(device)
    from safetensors import SafetensorError
    from transformers import AutoConfig, AutoModelForImageClassification

    try:
        config = AutoConfig.from_pretrained(folder, trust_remote_code=False)
        saved_size = getattr(config, "image_size", None)
        apply_config_overrides(config, config_overrides or {})
        # a ViT at another input size loads at its own, then resamples its position embeddings
        regrid = None
        if config.model_type in _POSITION_GRID_TYPES and "image_size" in (config_overrides or {}):
            regrid, config.image_size = int(config.image_size), saved_size
        new_head = False
        if id2label is not None:
            labels = {int(k): str(v) for k, v in id2label.items()}
            new_head = _label_names(labels) != _label_names(raw.get("id2label") or {})
            config.num_labels = len(labels)
            config.id2label = labels
            config.label2id = {name: i for i, name in labels.items()}
        kwargs: dict[str, Any] = {"attn_implementation": attn_implementation} if attn_implementation else {}
        if float32:
            import torch

            kwargs["dtype"] = torch.float32
        with no_weight_loading_bar():
            model, loading = AutoModelForImageClassification.from_pretrained(
                folder,
                config=config,
                ignore_mismatched_sizes=ignore_mismatched_sizes,
                use_safetensors=True,
                trust_remote_code=False,
                output_loading_info=True,
                **kwargs,
            )
    except OptionError:  # a --set the config refuses: the option is to blame, not the folder
        raise
    except (OSError, ValueError, KeyError, RuntimeError, SafetensorError) as exc:  # a damaged file too
        raise ModelLoadError(f"{folder}: cannot load the model ({first_line(exc)})") from None
    if new_head:
        _reinit_head(model)
    if regrid is not None:
        _resize_position_grid(model, regrid)
    # layers the checkpoint did not give (a widened stage, a new head) were drawn afresh: their
    # norms start as identities, as in a model built from scratch (keys in the model's naming)
    fresh = {*loading["missing_keys"], *(key for key, *_ in loading["mismatched_keys"])}
    if fresh and not (new_head or ignore_mismatched_sizes or config_overrides):
        # a model to run as it is (predict, a teacher, an export) would answer with random layers
        shown = sorted(fresh)
        raise ModelLoadError(
            f"{folder}: the checkpoint lacks weights of {len(shown)} tensor(s) the model needs "
            f"({', '.join(shown[:3])}{', ...' if len(shown) > 3 else ''}): they would be random. A "
            "backbone without a classification head is trained first (emovit train --init)"
        )
    if fresh:
        identity_norms(model, {key.rpartition(".")[0] for key in fresh})
    model.eval().to(target)
    return LoadedModel(
        name=os.fspath(name_or_path),
        path=folder,
        model=model,
        config=model.config,
        label_map=LabelMap.from_id2label(model.config.id2label),
        device=target,
    )


#: Model types whose only use of ``image_size`` is their table of absolute position
#: embeddings, one per patch (plus class/distillation tokens): at another input size that table
#: is resampled (`_resize_position_grid`), not drawn afresh.
_POSITION_GRID_TYPES = frozenset({"vit", "deit", "vit_msn"})


def _resize_position_grid(model: Any, size: int) -> None:
    """Make a loaded ViT-style model take `size` x `size` input: its position embeddings are
    resampled bicubically to the new patch grid (as transformers' ``interpolate_pos_encoding``
    does at run time, so the model starts out answering as the checkpoint does at that size),
    the class/distillation token rows kept as they are."""
    import torch

    for module in list(model.modules()):
        table = getattr(module, "position_embeddings", None)
        patches: Any = getattr(module, "patch_embeddings", None)
        if not isinstance(table, torch.nn.Parameter) or table.dim() != 3 or patches is None:
            continue
        if not hasattr(patches, "num_patches"):
            continue
        (old_h, old_w), (ph, pw) = patches.image_size, patches.patch_size
        new_h, new_w = size // ph, size // pw
        if new_h < 1 or new_w < 1:
            raise OptionError(
                f"image_size={size} is smaller than the model's {ph}x{pw} patches", option="overrides"
            )
        prefix = table.shape[1] - (old_h // ph) * (old_w // pw)  # class (and distillation) tokens
        tokens, cells = table.detach()[:, :prefix].float(), table.detach()[:, prefix:].float()
        cells = cells.reshape(1, old_h // ph, old_w // pw, -1).permute(0, 3, 1, 2)
        cells = torch.nn.functional.interpolate(
            cells, size=(new_h, new_w), mode="bicubic", align_corners=False
        )
        cells = cells.permute(0, 2, 3, 1).reshape(1, new_h * new_w, -1)
        module.position_embeddings = torch.nn.Parameter(torch.cat([tokens, cells], dim=1).to(table.dtype))
        patches.image_size = (size, size)
        patches.num_patches = new_h * new_w
        if hasattr(module, "image_size"):
            module.image_size = (size, size)
    model.config.image_size = size


@contextlib.contextmanager
def no_weight_loading_bar() -> Iterator[None]:
    """transformers' "Loading weights" bar off while a folder's weights load: it reached the
    stderr (and logs) of every library user, each time a model loaded. Its other bars (a
    download's) stay as configured; a hook of the caller's own is kept and restored.

    Examples:
        >>> from transformers import pipeline
        >>> with no_weight_loading_bar():  # doctest: +SKIP
        ...     classifier = pipeline("image-classification", model="path/to/model")
    """
    from transformers.utils import logging as hf_logging

    set_hook = getattr(hf_logging, "set_tqdm_hook", None)
    if set_hook is None:  # an older transformers: its bars as they are
        yield
        return
    previous: Any = None

    def hook(factory: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if kwargs.get("desc") == "Loading weights":
            kwargs = {**kwargs, "disable": True}
        return previous(factory, args, kwargs) if previous is not None else factory(*args, **kwargs)

    previous = set_hook(hook)
    try:
        yield
    finally:
        set_hook(previous)


def _label_names(id2label: Mapping[Any, str]) -> tuple[str, ...] | None:
    """Canonical label names in id order (None when they do not map, e.g. ImageNet's two
    "crane" classes)."""
    try:
        return LabelMap.from_id2label(id2label).names
    except LabelError:
        return None


def _reinit_head(model: Any) -> None:
    """Draw the classification head afresh: a new task never reuses a head by position."""
    import torch

    head = getattr(model, "classifier", None)
    if head is None:
        return
    std = float(getattr(model.config, "initializer_range", 0.02))
    with torch.no_grad():
        for module in head.modules() if isinstance(head, torch.nn.Module) else ():
            if isinstance(module, torch.nn.Linear):
                torch.nn.init.trunc_normal_(module.weight, std=std)
                if module.bias is not None:
                    torch.nn.init.zeros_(module.bias)


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
    raw = read_model_config(folder)
    label_map = LabelMap.from_id2label(raw.get("id2label") or {})
    target = resolve_device(device)
    if load_weights and any(folder.glob("*.safetensors")):
        loaded = load_torch_model(folder, device=target)
        loaded.name = os.fspath(name_or_path)
    else:
        from transformers import AutoConfig

        try:
            config = AutoConfig.from_pretrained(folder, trust_remote_code=False)
        except (OSError, ValueError, KeyError) as exc:
            raise ModelLoadError(f"{folder}: cannot load the model ({exc})") from None
        loaded = LoadedModel(
            name=os.fspath(name_or_path),
            path=folder,
            model=None,
            config=config,
            label_map=label_map,
            device=target,
        )
    loaded.preprocessor  # noqa: B018 - a missing or broken processor config fails the load, not every image
    if raw.get(RANDOM_WEIGHTS_KEY):
        warnings.warn(
            f"{name_or_path}: this model has RANDOM weights; its predictions are meaningless",
            RandomWeightsWarning,
            stacklevel=2,
        )
    return loaded


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

    from emovit.fileio import plain_mode
    from emovit.models._presets import REFERENCE_ID2LABEL, arch_preset

    spec = arch_preset(preset)
    labels = id2label if id2label is not None else REFERENCE_ID2LABEL
    torch.manual_seed(seed)
    model = spec.build_model(labels, **overrides)
    setattr(model.config, RANDOM_WEIGHTS_KEY, True)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    for weights in out.glob("*.safetensors"):  # safetensors writes them 0600
        plain_mode(weights)
    (out / "preprocessor_config.json").write_text(json.dumps(spec.processor, indent=2) + "\n")
    return out


def export_matches_weights(
    folder: str | os.PathLike[str], weights: str | os.PathLike[str] | None = None
) -> bool | None:
    """Whether the folder's ONNX export was made from the safetensors weights beside it (or
    those of the folder `weights`), by the digest its ``export_info.json`` records: None when
    nothing is recorded (no export record, an older export without the digest, or no weights);
    False for a record that cannot be read (nothing vouches for the export)."""
    record = Path(folder) / "export_info.json"
    if not record.is_file():
        return None
    try:
        info = json.loads(record.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if not isinstance(info, dict):
        return False
    recorded = info.get("weights_sha256")
    digest = weights_digest(folder if weights is None else weights) if recorded is not None else None
    return None if recorded is None or digest is None else recorded == digest


def weights_digest(folder: str | os.PathLike[str]) -> str | None:
    """One sha256 over a model folder's ``*.safetensors`` files (None without any): what an
    export records, so that an ONNX file is known to belong to the weights beside it."""
    files = sorted(Path(folder).glob("*.safetensors"))
    if not files:
        return None
    # hashed once per state of the files (size, modification time) and process: `emovit info`,
    # the server's /v1/models and the choice of backend all ask
    stamp = tuple((str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files)
    return _digest(stamp)


@functools.lru_cache(maxsize=64)
def _digest(stamp: tuple[tuple[str, int, int], ...]) -> str:
    import hashlib

    from emovit.fileio import sha256_of

    files = [Path(name) for name, *_ in stamp]
    return hashlib.sha256("".join(f"{f.name}:{sha256_of(f)}\n" for f in files).encode()).hexdigest()
