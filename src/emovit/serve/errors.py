"""API errors: one exception type, one JSON shape, and the handlers that produce it.

Every error the service answers is ``{"error": {"code", "message", "request_id"}}`` with a
4xx/5xx status: never a traceback, a server path or a plain-text body.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from fastapi.responses import JSONResponse

if TYPE_CHECKING:
    from fastapi import FastAPI, Request
    from starlette.types import Scope

__all__ = [
    "ApiError",
    "error_response",
    "install_error_handlers",
    "request_id_of",
    "status_for_input_error",
    "validation_message",
]

_STATUS_FOR_CODE = {"too_many_pixels": 413, "unsupported_format": 415, "unsupported_input": 415}
_HTTP_CODES = {404: "not_found", 405: "method_not_allowed"}


class ApiError(Exception):
    """A whole request refused: its status, code (for programs), message (for people), headers."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}

    def response(self, request_id: str | None) -> JSONResponse:
        return error_response(self.status, self.code, self.message, request_id, self.headers)


def status_for_input_error(code: str | None) -> int:
    """The status of a request whose every image failed with `code` (an `error_code`)."""
    return _STATUS_FOR_CODE.get(code or "", 422)


def validation_message(errors: Sequence[Any], where: str = "") -> str:
    """One short line for pydantic's validation errors: the first one's location and message
    (``body.images: List should have at least 1 item``), never the input echoed back or a link."""
    first = errors[0] if errors else {}
    loc = ".".join(str(part) for part in (where, *first.get("loc", ())) if part != "")
    return f"{loc or 'request'}: {first.get('msg', 'invalid request')}"


def request_id_of(scope: Scope) -> str | None:
    """The id `RequestContextMiddleware` gave this request (None outside it)."""
    return scope.get("state", {}).get("request_id")


def error_response(
    status: int, code: str, message: str, request_id: str | None, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    body = {"error": {"code": code, "message": message, "request_id": request_id}}
    return JSONResponse(body, status_code=status, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    """Answer `ApiError`, request validation errors and Starlette's HTTP errors (404, 405)
    in the JSON shape."""
    from fastapi.exceptions import RequestValidationError
    from starlette.exceptions import HTTPException

    async def api_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ApiError)
        return exc.response(request_id_of(request.scope))

    async def validation_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        message = validation_message(exc.errors())
        return error_response(422, "bad_request", message, request_id_of(request.scope))

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, HTTPException)
        code = _HTTP_CODES.get(exc.status_code, "http_error")
        message = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
        return error_response(exc.status_code, code, message, request_id_of(request.scope), exc.headers)

    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(HTTPException, http_error)
