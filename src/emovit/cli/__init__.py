"""The ``emovit`` command line: one grammar, ``emovit COMMAND SOURCE --model ... [options]``.

One module per command group (`predict`, `explain`, `evaluate`, `models`: info / models / models fetch,
`train`: train / audit / export, `bench`, `serve`); the options they share are declared once
in `_options`, and `_errors` turns exceptions into exit codes.

Exit codes:

====  ==========================================================================================
0     success: every input succeeded
1     the command ran, but some inputs failed (predict, evaluate: they are error rows / counted
      in the report; the others are still written), or a download or export check failed
2     usage error: the command could not run as asked (bad or conflicting options, a model or
      dataset that cannot be loaded, a missing optional extra); nothing is written
3     internal error (a bug): one line ``error: internal error: <Type>: <message>`` on stderr;
      ``emovit --debug ...`` prints the traceback
130   interrupted (Ctrl-C or SIGTERM), after the outputs were closed: ``predict`` keeps every
      input analysed up to the first Ctrl-C; other files are written whole or not at all
141   stdout was closed by its reader (``emovit predict ... | head``)
====  ==========================================================================================
"""

from __future__ import annotations

import warnings

import click

from emovit.cli._common import echo_warning
from emovit.cli._errors import EmovitGroup
from emovit.cli.bench import bench
from emovit.cli.evaluate import evaluate
from emovit.cli.explain import explain
from emovit.cli.models import info, models
from emovit.cli.predict import predict
from emovit.cli.serve import serve
from emovit.cli.train import audit, export, train

__all__ = ["main"]


@click.group(
    cls=EmovitGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100}
)
@click.option(
    "--version",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=lambda ctx, _, value: _show_version(ctx) if value and not ctx.resilient_parsing else None,
    help="Show the version and exit.",
)
@click.option("--debug", is_flag=True, help="Show the traceback of errors.")
@click.pass_context
def main(ctx: click.Context, debug: bool) -> None:
    """Tell which emotion each face in a photo, video or camera stream shows."""
    previous = warnings.showwarning
    warnings.showwarning = echo_warning
    ctx.call_on_close(lambda: setattr(warnings, "showwarning", previous))


def _show_version(ctx: click.Context) -> None:
    """``emovit --version``: the version is read only when asked (importlib.metadata, ~50 ms)."""
    from emovit import __version__

    click.echo(f"emovit, version {__version__}")
    ctx.exit()


for _command in (predict, explain, evaluate, info, models, train, audit, export, bench, serve):
    main.add_command(_command)
