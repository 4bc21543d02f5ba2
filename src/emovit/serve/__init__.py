"""HTTP service and web page (extra ``[serve]``: fastapi, uvicorn, python-multipart, prometheus-client).

Examples:
    >>> from emovit.serve import ServeSettings, create_app, run_server
    >>> rec = EmotionRecognizer.from_pretrained("default")  # doctest: +SKIP
    >>> app = create_app(rec, ServeSettings(token="s3cret"))  # doctest: +SKIP
    >>> run_server(app, host="127.0.0.1", port=8000)  # doctest: +SKIP
"""

try:
    import fastapi  # noqa: F401
    import uvicorn  # noqa: F401
except ImportError as exc:  # pragma: no cover - the extra is missing
    from emovit.errors import DependencyError

    raise DependencyError(exc.name or "fastapi", "serve", "the HTTP service") from None

from emovit.serve.app import create_app
from emovit.serve.server import run_server
from emovit.serve.settings import ServeSettings
from emovit.serve.state import ServeState, get_state

__all__ = ["ServeSettings", "ServeState", "create_app", "get_state", "run_server"]
