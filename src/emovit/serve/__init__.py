"""HTTP service and web page (extra ``[serve]``: fastapi, uvicorn, python-multipart, prometheus-client)."""

from emovit.serve.app import ServeSettings, create_app

__all__ = ["ServeSettings", "create_app"]
