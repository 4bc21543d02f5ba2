"""Named checkpoints emovit knows, like timm's model registry: name → where it lives."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["REGISTRY", "RegistryEntry", "list_models"]

EMBEDDED = "embedded"


@dataclass(frozen=True)
class RegistryEntry:
    """A known checkpoint: its registry name, its location (a Hub id, or ``embedded`` for the
    folder inside the package) and a one-line description."""

    name: str
    location: str
    description: str


REGISTRY: dict[str, RegistryEntry] = {
    e.name: e
    for e in (
        RegistryEntry(
            "default",
            EMBEDDED,
            "the small MobileViT shipped inside emovit (works offline)",
        ),
        RegistryEntry(
            "dima806",
            "dima806/facial_emotions_image_detection",
            "the reference ViT-B/16-224 fine-tuned from google/vit-base-patch16-224-in21k",
        ),
    )
}


def list_models() -> list[str]:
    """Registry names of the known checkpoints, sorted."""
    return sorted(REGISTRY)
