"""`emovit predict --engine ray`: the same sources and rows as the local engine, analysed by Ray
Data actors (`emovit.ray.predict_to_folder`) into an output folder of Parquet or JSONL files.

Without ``--address`` a local Ray starts on this machine (and stops at the end); with one, the
run joins that cluster. Ray's progress goes to the terminal; the last line says the rows, the
errors, rows/s and the workers. A stopped run goes on with ``--resume``.
"""

from __future__ import annotations

import json
import logging
import signal
import threading
from collections.abc import Sequence
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import click

from emovit.cli._common import require
from emovit.cli._errors import EXIT_FAILED, EXIT_OK

if TYPE_CHECKING:
    from emovit.cli._options import EngineOptions, RecognizerOptions
    from emovit.faces import FaceOptions
    from emovit.video import VideoOptions

__all__ = ["RAY_FORMATS", "run_ray"]

#: The output formats of the ray engine (the first is the default).
RAY_FORMATS = ("parquet", "jsonl")


def _check_videos(paths: Sequence[str]) -> None:
    """Fail (exit 2) when the inputs hold videos and the [video] extra is missing (the workers
    run this environment)."""
    from emovit.cli._video import video_flags
    from emovit.sources import VIDEO_EXTENSIONS, VIDEO_URL_SCHEMES, is_url

    def remote(path: str) -> bool:
        return is_url(path) and urlsplit(path).scheme.lower() not in VIDEO_URL_SCHEMES

    video_flags([path for path in paths if not remote(path)])
    if any(PurePosixPath(urlsplit(p).path).suffix.lower() in VIDEO_EXTENSIONS for p in paths if remote(p)):
        for module in ("av", "scipy", "cv2"):
            require(module, "video", "video analysis")


def _no_auth_on_note(record: logging.LogRecord) -> bool:
    """A logging filter: False for Ray's note that token authentication is enabled."""
    return not record.getMessage().startswith("Token authentication is enabled")


def _check_address(ctx: click.Context, address: str | None) -> None:
    """A ``host:port`` (or ``ray://host:port``) cluster address answers a TCP connection within
    5 s: ray.init retried an unreachable one for ever, without a word."""
    import socket

    if address is None or address in ("auto", "local"):
        return
    if "://" in address and not address.startswith("ray://"):  # another client builder's (anyscale://)
        return
    try:
        parts = urlsplit(address if "://" in address else f"//{address}")
        host, port = parts.hostname, parts.port
    except ValueError:
        host = port = None
    if not host or not port:
        raise click.BadParameter(
            f"{address!r} is not a Ray cluster address (host:port, ray://host:port or auto)",
            ctx,
            param_hint="'--address'",
        )
    try:
        socket.create_connection((host, port), timeout=5).close()
    except OSError as exc:
        raise _unreachable(ctx, address, str(exc.strerror or exc)) from None


def _unreachable(ctx: click.Context, address: str, why: str) -> click.BadParameter:
    """The usage error for a cluster address nothing answers at."""
    return click.BadParameter(
        f"no Ray cluster could be reached at {address!r} ({why})", ctx, param_hint="'--address'"
    )


def _check_resources(ctx: click.Context, resources: dict[str, float], *, cuda: bool, threads: int) -> None:
    """A usage error for an actor the cluster can never place (Ray Data would wait for ever)."""
    if cuda and resources.get("GPU", 0) < 1:
        raise click.BadParameter("the Ray cluster has no GPU", ctx, param_hint="'--device'")
    if threads > resources.get("CPU", 0):
        raise click.BadParameter(
            f"each Ray worker reserves --threads {threads} CPUs; the cluster has {resources.get('CPU', 0):g}",
            ctx,
            param_hint="'--threads'",
        )


def run_ray(
    ctx: click.Context,
    paths: Sequence[str],
    *,
    recognizer: RecognizerOptions,
    faces: FaceOptions,
    video: VideoOptions,
    runner: EngineOptions,
    fmt: str | None,
    output: str | None,
    top_k: int,
    summary: str | None,
    quiet: bool,
    recursive: bool = True,
) -> int:
    """Run `paths` on Ray into the `output` folder; the exit code (1 when some rows are errors)."""
    require("ray", "ray", "--engine ray")
    require("pyarrow", "ray", "--engine ray")
    fmt = fmt or RAY_FORMATS[0]
    if fmt not in RAY_FORMATS:
        raise click.UsageError(f"--engine ray writes parquet or jsonl files, not --format {fmt}", ctx)
    if not output:
        raise click.UsageError("--engine ray writes into a folder: give it with --output DIR", ctx)
    import ray
    from ray.data import DataContext

    from emovit.cli._common import load_recognizer
    from emovit.ray import check_output_folder, expand_remote, predict_to_folder

    cuda = recognizer.device.startswith("cuda")
    # what the rows depend on (and how they are made), as predict_to_folder takes it
    options: dict[str, Any] = {
        "faces": faces,
        "video": video,
        "top_k": top_k,
        "batch_size": recognizer.batch_size,
        "device": "cuda" if cuda else recognizer.device,  # Ray shows each actor its one GPU as cuda:0
        "backend": recognizer.backend,
        "precision": recognizer.precision,
        "threads": recognizer.threads,
        "max_pixels": recognizer.max_pixels,
        "tta": recognizer.tta,
    }
    # before a cluster starts: the folder, and a resume's options against its results'
    check_output_folder(output, fmt, resume=runner.resume, model=recognizer.model, **options)  # type: ignore[arg-type]
    paths = expand_remote(paths, recursive=recursive)
    if not paths:
        raise click.UsageError("no input images found in the given sources", ctx)
    from emovit.video import is_camera

    cameras = [path for path in paths if is_camera(path)]
    if cameras:  # a batch job's worker, maybe on another machine, would open a camera of its own
        raise click.UsageError(
            f"{cameras[0]}: a live camera is read on this machine, not by a batch job: run it "
            "without --engine ray", ctx
        )  # fmt: skip
    _check_videos(paths)
    # fails early, on the flag at fault; the random-weights banner. On the CPU: the driver of a
    # GPU job may have no GPU (`ray job submit` runs it on the head node), the workers have them
    load_recognizer(recognizer.replace(device="cpu", precision="fp32") if cuda else recognizer, faces)
    started = not ray.is_initialized()
    if started:
        _check_address(ctx, runner.address)
        handler = signal.getsignal(signal.SIGTERM)
        # quiet: the local cluster's note that token authentication is on is no news either
        # (the warning that it is off, and anyone on the network may run code, stays)
        auth_log = logging.getLogger("ray._private.authentication.authentication_token_setup")
        if quiet:
            auth_log.addFilter(_no_auth_on_note)
        try:
            ray.init(
                address=runner.address,
                include_dashboard=False if runner.address is None else None,
                logging_level=logging.WARNING if quiet else logging.INFO,
                log_to_driver=not quiet,
            )
        except (ConnectionError, ValueError) as exc:  # no cluster there; ray:// without ray[client]
            if runner.address is None:
                raise
            hint = "; pip install 'ray[client]'" if "ray[client]" in str(exc) else ""
            raise _unreachable(ctx, runner.address, f"{exc}{hint}") from None
        finally:  # ray.init makes SIGTERM exit at once: keep the command's clean stop (exit 130)
            auth_log.removeFilter(_no_auth_on_note)
            if threading.current_thread() is threading.main_thread() and handler is not None:
                signal.signal(signal.SIGTERM, handler)
    _check_resources(ctx, ray.cluster_resources(), cuda=cuda, threads=recognizer.threads or 1)
    context = DataContext.get_current()
    progress, context.enable_progress_bars = context.enable_progress_bars, not quiet
    # quiet: Ray Data's own warning that its bars are off is no news (emovit turned them off)
    bars_log = logging.getLogger("ray.data._internal.progress")
    bars_level = bars_log.level
    # quiet: Ray Data's INFO lines on the console too (its log file in the session keeps them)
    consoles = [h for h in logging.getLogger("ray.data").handlers if isinstance(h, logging.StreamHandler)]
    console_levels = [h.level for h in consoles]
    if quiet:
        bars_log.setLevel(logging.ERROR)
        for console in consoles:
            console.setLevel(max(console.level, logging.WARNING))
    try:
        report = predict_to_folder(
            paths,
            output,
            recognizer.model,
            fmt=fmt,  # type: ignore[arg-type]
            resume=runner.resume,
            workers=runner.workers,
            num_gpus=1 if cuda else 0,
            num_cpus=recognizer.threads or 1,  # an actor's threads are the CPUs it reserves
            expand=False,
            **options,
        )
    except KeyboardInterrupt:  # the committed parts stay: say how to finish
        click.echo(
            f"stopped: parts already written are kept; the same command with --resume finishes {output}",
            err=True,
        )
        raise
    finally:
        bars_log.setLevel(bars_level)
        for console, level in zip(consoles, console_levels, strict=True):
            console.setLevel(level)
        context.enable_progress_bars = progress
        if started:
            ray.shutdown()
    if summary:
        from emovit.fileio import write_text_atomic

        write_text_atomic(summary, json.dumps({"videos": report.summaries}, indent=2) + "\n", named=True)
    if not quiet:
        click.echo(report.line(), err=True)
    # the folder's answer, not only this run's: a resumed run keeps the exit code of the inputs it skipped
    return EXIT_FAILED if report.errors or report.earlier_errors else EXIT_OK
