"""`emovit serve`: the HTTP API and the web page."""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING, Any

import click

from emovit.cli._errors import EmovitCommand
from emovit.cli._options import RecognizerOptions, face_options, recognizer_options

if TYPE_CHECKING:
    from emovit.faces import FaceOptions

__all__ = ["serve"]


@click.command(cls=EmovitCommand)
@click.option(
    "--host", default="127.0.0.1", show_default=True, help="Interface to bind (0.0.0.0 exposes it)."
)
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True)
@recognizer_options(batch_size=False)
@face_options
@click.option(
    "--token", envvar="EMOVIT_TOKEN", default=None, help="Require this bearer token (or EMOVIT_TOKEN)."
)
@click.option(
    "--max-batch",
    type=click.IntRange(1),
    default=32,
    show_default=True,
    help="Faces per model batch (micro-batching across requests).",
)
@click.option(
    "--max-wait-ms",
    type=click.FloatRange(0),
    default=10.0,
    show_default=True,
    help="How long the worker waits to fill a batch.",
)
@click.option(
    "--max-queue", type=click.IntRange(1), default=64, show_default=True, help="Waiting requests before 503."
)
@click.option("--max-body-mb", type=click.FloatRange(0.01), default=10.0, show_default=True)
@click.option(
    "--deadline",
    type=click.FloatRange(0.1),
    default=15.0,
    show_default=True,
    help="Seconds before a request is answered 504.",
)
@click.option(
    "--cors-origin", "cors_origins", multiple=True, help="Allow this browser origin (CORS is off otherwise)."
)
@click.option(
    "--max-video-mb",
    type=click.FloatRange(0.01),
    default=100.0,
    show_default=True,
    help="Largest video upload (POST /v1/video), in MiB.",
)
@click.option(
    "--max-video-seconds",
    type=click.FloatRange(0.1),
    default=60.0,
    show_default=True,
    help="Longest video analysed by POST /v1/video (longer ones answer 413).",
)
@click.option(
    "--video-deadline",
    type=click.FloatRange(0.1),
    default=120.0,
    show_default=True,
    help="Seconds before a video request is answered 504.",
)
@click.option(
    "--max-images",
    type=click.IntRange(1),
    default=16,
    show_default=True,
    help="Images per request (more answer 413).",
)
@click.option(
    "--max-request-megapixels",
    type=click.FloatRange(0.001),
    default=50.0,
    show_default=True,
    help="Pixels of all of a request's images together, read from their headers before decoding "
    "(more answer 413); unless given, at least one image of --max-pixels.",
)
@click.option(
    "--body-timeout",
    type=click.FloatRange(0.1),
    default=30.0,
    show_default=True,
    help="Seconds to receive a whole photo request body before 408.",
)
@click.option(
    "--video-body-timeout",
    type=click.FloatRange(0.1),
    default=300.0,
    show_default=True,
    help="Seconds to receive a whole video upload before 408 (a slow upload holds a video slot this long).",
)
@click.option(
    "--max-video-jobs",
    type=click.IntRange(1),
    default=1,
    show_default=True,
    help="Videos analysed at once (more answer 503 with Retry-After).",
)
@click.option(
    "--max-explain-jobs",
    type=click.IntRange(1),
    default=1,
    show_default=True,
    help="Requests computing explanation maps at once (more answer 503 with Retry-After).",
)
@click.option(
    "--drain-timeout",
    type=click.FloatRange(0),
    default=10.0,
    show_default=True,
    help="On SIGTERM, seconds to finish queued work.",
)
@click.option(
    "--max-connections",
    type=click.IntRange(1),
    default=None,
    help="Open connections and requests at once; more answer 503 (default: no limit; each "
    "upload in flight holds up to --max-body-mb in memory).",
)
def serve(
    host: str,
    port: int,
    recognizer: RecognizerOptions,
    faces: FaceOptions,
    token: str | None,
    max_batch: int,
    max_wait_ms: float,
    max_queue: int,
    max_body_mb: float,
    deadline: float,
    cors_origins: tuple[str, ...],
    max_video_mb: float,
    max_video_seconds: float,
    video_deadline: float,
    max_images: int,
    max_request_megapixels: float,
    body_timeout: float,
    video_body_timeout: float,
    max_video_jobs: int,
    max_explain_jobs: int,
    drain_timeout: float,
    max_connections: int | None,
) -> None:
    """Serve the HTTP API and the web page (upload, live camera, expression capture, video).

    The model loads in the background: /livez answers at once, /readyz once it is ready.
    """
    from emovit.cli._common import load_recognizer, require

    for module in ("fastapi", "uvicorn", "prometheus_client"):
        require(module, "serve", "emovit serve")
    if token is not None and not token.strip():
        raise click.BadParameter(
            "is empty: the server would be open to anyone; leave it unset for that", param_hint="--token"
        )
    if token is not None:  # a token read from a file ends in a newline no header can carry
        token = token.strip()
    _check_bind(host, port)
    import signal

    # uvicorn drains on SIGTERM and raises it again with the handler it found: the default's,
    # so that the process ends by SIGTERM as a supervisor expects (not as an interruption)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    from emovit.serve import ServeSettings, create_app, run_server

    options = recognizer.replace(batch_size=max_batch)

    def factory() -> Any:
        return load_recognizer(options, faces)

    settings = ServeSettings(
        token=token,
        max_body_bytes=int(max_body_mb * 1024 * 1024),
        max_pixels=recognizer.max_pixels,
        max_batch=max_batch,
        max_wait_ms=max_wait_ms,
        max_queue=max_queue,
        deadline_s=deadline,
        cors_origins=list(cors_origins),
        drain_timeout_s=drain_timeout,
        max_connections=max_connections,
        max_video_bytes=int(max_video_mb * 1024 * 1024),
        max_video_seconds=max_video_seconds,
        video_deadline_s=video_deadline,
        max_images=max_images,
        max_request_pixels=_request_pixels(max_request_megapixels, recognizer.max_pixels),
        body_timeout_s=body_timeout,
        video_body_timeout_s=video_body_timeout,
        max_video_jobs=max_video_jobs,
        max_explain_jobs=max_explain_jobs,
    )
    run_server(create_app(factory, settings), host=host, port=port, settings=settings)


def _request_pixels(megapixels: float, max_pixels: int | None) -> int:
    """The request's pixel budget: as given, or by default at least one image at the per-image
    limit (a raised --max-pixels was otherwise refused by the default budget, 50 MP)."""
    from click.core import ParameterSource

    budget = int(megapixels * 1_000_000)
    given = click.get_current_context().get_parameter_source("max_request_megapixels")
    if given is ParameterSource.DEFAULT and max_pixels:
        budget = max(budget, max_pixels)
    return budget


def _check_bind(host: str, port: int) -> None:
    """Fail now, as a usage error naming the option, when `host`:`port` cannot be listened on
    (a port in use, an address not of this machine): uvicorn would only log it and exit 3,
    the code of a bug."""
    import socket

    if not host:
        return  # every interface: asyncio's own choice of addresses
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError) as exc:
        raise click.BadParameter(
            f"{host!r} is not an address of this machine ({exc})", param_hint="'--host'"
        ) from None
    failures: list[OSError] = []
    for family, kind, proto, _, address in found:  # as asyncio: each address, the unavailable skipped
        try:
            probe = socket.socket(family, kind, proto)
        except OSError as exc:  # an address family this system has switched off
            failures.append(exc)
            continue
        with probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
            if family == getattr(socket, "AF_INET6", None):
                probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                probe.bind(address)
            except OSError as exc:
                if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                    raise click.BadParameter(
                        f"cannot listen on {host}:{port} ({exc.strerror or exc})", param_hint="'--port'"
                    ) from None
                failures.append(exc)
    if len(failures) == len(found):
        why = failures[0].strerror or failures[0] if failures else "no address"
        raise click.BadParameter(f"cannot listen on {host}:{port} ({why})", param_hint="'--host'")
