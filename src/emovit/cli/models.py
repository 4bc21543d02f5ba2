"""`emovit info`, `emovit models` (list), `emovit models fetch` (the face detector, for offline use)."""

from __future__ import annotations

import json

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
    if fmt == "json":
        click.echo(json.dumps(details, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

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
        else:
            table.add_row(key, str(value))
    Console().print(table)
    if details["random_weights"]:
        random_weights_banner(model)


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
            raise Failed(
                f"{exc}. Offline? Copy {remote.filename} here and run "
                f"`emovit models fetch {name} --from PATH`"
            ) from None
    click.echo(str(path))
