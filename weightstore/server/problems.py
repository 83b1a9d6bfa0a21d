"""Errors as RFC 9457 ``application/problem+json``: the error tree's ``http_status``, the
message, never a traceback."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from http import HTTPStatus

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from weightstore.errors import WeightstoreError

PROBLEM = "application/problem+json"
log = logging.getLogger("weightstore.server")


def problem(
    status: int, detail: str, kind: str = "", headers: Mapping[str, str] | None = None
) -> JSONResponse:
    """A problem response; ``kind`` names the error class (the ``type`` member)."""
    title = HTTPStatus(status).phrase
    body = {
        "type": f"urn:weightstore:error:{kind or title.replace(' ', '')}",
        "title": title,
        "status": status,
        "detail": detail,
    }
    return JSONResponse(body, status, media_type=PROBLEM, headers=headers)


def install(app: FastAPI) -> None:
    """Map every error a route can raise to a problem response."""

    async def weightstore_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, WeightstoreError)
        if exc.http_status >= 500:
            log.error("%s: %s", type(exc).__name__, exc)
        # RFC 9110: a 401 names the scheme the client should use.
        headers = {"WWW-Authenticate": "Bearer"} if exc.http_status == 401 else None
        return problem(exc.http_status, str(exc) or type(exc).__name__, type(exc).__name__, headers)

    async def http_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, HTTPException)
        return problem(exc.status_code, str(exc.detail), headers=exc.headers)

    async def invalid_request(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        where = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}" for e in exc.errors()
        )
        return problem(422, where or "invalid request", "InvalidRequest")

    async def unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.error("unexpected %s: %s", type(exc).__name__, exc)
        return problem(500, f"internal error ({type(exc).__name__}); see the server log")

    app.add_exception_handler(WeightstoreError, weightstore_error)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(RequestValidationError, invalid_request)
    app.add_exception_handler(Exception, unexpected)
