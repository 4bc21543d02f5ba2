"""Load models by Hub id, local folder or registry name; the registry and architecture presets.

Examples:
    >>> from emovit.models import list_models
    >>> "default" in list_models()
    True
"""

from emovit.models._describe import ModelInfo, architecture_fields, count_parameters, describe_model
from emovit.models._framing import FRAMING_FILE, Framing, read_framing, read_framing_notes, write_framing
from emovit.models._loading import (
    DEFAULT_MODEL,
    LoadedModel,
    build_random_model,
    export_matches_weights,
    load_model,
    load_torch_model,
    no_weight_loading_bar,
    read_model_config,
    resolve_device,
    resolve_model,
    weights_digest,
)
from emovit.models._presets import ARCH_PRESETS, REFERENCE_ID2LABEL, ArchPreset, arch_preset
from emovit.models._registry import REGISTRY, RegistryEntry, list_models

__all__ = [
    "ARCH_PRESETS",
    "DEFAULT_MODEL",
    "FRAMING_FILE",
    "REFERENCE_ID2LABEL",
    "REGISTRY",
    "ArchPreset",
    "Framing",
    "LoadedModel",
    "ModelInfo",
    "RegistryEntry",
    "arch_preset",
    "architecture_fields",
    "build_random_model",
    "count_parameters",
    "describe_model",
    "list_models",
    "load_model",
    "load_torch_model",
    "no_weight_loading_bar",
    "read_framing",
    "read_framing_notes",
    "read_model_config",
    "resolve_device",
    "resolve_model",
    "export_matches_weights",
    "weights_digest",
    "write_framing",
]
