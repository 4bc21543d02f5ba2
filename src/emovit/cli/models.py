"""`emovit info`, `emovit models` (list), `emovit models fetch` (the face detector, for offline use)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from emovit.cli._errors import EmovitCommand, EmovitGroup, Failed

__all__ = ["info", "models"]

_REMOTE_FILES = ("yunet",)


@click.command(cls=EmovitCommand)
@click.argument("model", default="default")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
def info(model: str, fmt: str) -> None:
    """Show a model's architecture, labels, parameter count and preprocessing."""
    from emovit.cli._common import random_weights_banner
    from emovit.models import describe_model

    details = describe_model(model).to_dict()
    details["backend_auto_cpu"] = _auto_backend(details)
    if fmt == "table":  # the table says there is none, and how to make one
        details = {**details, "onnx": details.get("onnx")}
        details["backend_auto_cpu"] = details.pop("backend_auto_cpu")
    if fmt == "json":
        click.echo(json.dumps(details, indent=2))
        return
    from rich.table import Table

    from emovit.cli._common import stdout_console

    table = Table(title=f"emovit info {model}", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    for key, value in details.items():
        if key == "processor":
            for pkey, pvalue in value.items():
                table.add_row(f"processor.{pkey}", json.dumps(pvalue))
        elif key == "labels":
            table.add_row("labels (id order)", ", ".join(f"{i}:{lab}" for i, lab in enumerate(value)))
        elif key == "parameters" and value:
            table.add_row(key, f"{value:,} ({value / 1e6:.1f} M)")
        elif key in ("framing", "onnx"):
            words = _framing_words(value) if key == "framing" else _onnx_words(value, "parameters" in details)
            table.add_row(key, words)
        elif key == "backend_auto_cpu":
            table.add_row("backend auto (CPU)", str(value))
        else:
            table.add_row(key, str(value))
    stdout_console().print(table)
    if details["random_weights"]:
        random_weights_banner(model)


def _auto_backend(details: dict[str, Any]) -> str:
    """What ``--backend auto`` runs on the CPU for this folder (fp32): ``onnx-fp32``,
    ``onnx-int8`` or ``torch``."""
    import warnings

    from emovit.predictor import auto_picks_onnx

    with warnings.catch_warnings():  # a stale export: the onnx row says so
        warnings.simplefilter("ignore")
        onnx = auto_picks_onnx(Path(details["path"]), on_cpu=True)
    if not onnx:
        import importlib.util

        onnx_file = details.get("onnx")
        if (
            onnx_file
            and onnx_file["matches_weights"] is not False
            and not importlib.util.find_spec("onnxruntime")
        ):
            return "torch (onnxruntime is not installed: pip install 'emovit[onnx]')"
        return "torch"
    return "onnx-int8" if details["onnx"].get("quantize") else "onnx-fp32"


def _framing_words(framing: dict[str, Any]) -> str:
    """The framing row: margin, alignment, colour, and where it comes from."""
    if "error" in framing:
        return str(framing["error"])
    words = [f"margin {framing['face_margin']:g}", "eyes aligned" if framing["face_align"] else "not aligned"]
    words.append("grey" if framing["grey"] else "colour")
    source = "recorded in emovit.json" if framing["recorded"] else "not recorded: the default"
    return f"{', '.join(words)} ({source})"


def _onnx_words(onnx: dict[str, Any] | None, weights: bool) -> str:
    """The ONNX row: none, or its precision and whether it belongs to the weights beside it."""
    if onnx is None:
        return "none (create one with `emovit export`)"
    if not weights:
        return f"{onnx['file']} (the only weights: the onnx backend runs it)"
    if not onnx["exported_by_emovit"]:
        return f"{onnx['file']} (not exported by emovit: --backend auto does not trust it)"
    words = [onnx["file"], str(onnx["quantize"] or "fp32")] + (
        [f"opset {onnx['opset']}"] if onnx["opset"] else []
    )
    match = {True: "exported from these weights", False: "STALE: exported from other weights (export again)"}
    words.append(match.get(onnx["matches_weights"], "weights digest not recorded"))
    return ", ".join(words)


@click.group(cls=EmovitGroup, invoke_without_command=True)
@click.pass_context
def models(ctx: click.Context) -> None:
    """List the registry names of known checkpoints (`models fetch` caches the face detector)."""
    if ctx.invoked_subcommand is None:
        _list_models()


@models.command(name="list")
def list_models() -> None:
    """List the registry names of known checkpoints."""
    _list_models()


def _list_models() -> None:
    from emovit.models import REGISTRY

    for name in sorted(REGISTRY):
        entry = REGISTRY[name]
        click.echo(f"{name:10s} {entry.location:45s} {entry.description}")


@models.command(name="fetch")
@click.argument("name", type=click.Choice(_REMOTE_FILES))
@click.option(
    "--from",
    "source",
    type=click.Path(dir_okay=False),
    default=None,
    metavar="PATH",
    help="Install this local copy (checked against the known sha256) instead of downloading.",
)
def fetch(name: str, source: str | None) -> None:
    """Download the YuNet face detector into the cache (sha256-checked), so that later runs
    need no network; prints the cached file.

    \b
    Examples:
      emovit models fetch yunet
      emovit models fetch yunet --from face_detection_yunet_2023mar.onnx   # offline machines
    """
    from emovit.errors import DownloadError
    from emovit.faces import YUNET, fetch, install

    remote = {"yunet": YUNET}[name]
    if source is not None:
        path = install(remote, source)  # a wrong file is the caller's: a usage error on --from
    else:
        try:
            path = fetch(remote)
        except DownloadError as exc:
            if str(exc).startswith("cannot create the cache folder"):  # not the network's fault
                raise Failed(f"{exc} (EMOVIT_HOME sets where the cache is)") from None
            raise Failed(
                f"{exc}. Offline? Copy {remote.filename} here and run "
                f"`emovit models fetch {name} --from PATH`"
            ) from None
    click.echo(str(path))
