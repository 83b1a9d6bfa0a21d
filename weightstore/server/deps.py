"""Dependencies of the routes: the store the app opened, and the caller's scope.

Tokens come as ``Authorization: Bearer <token>``; they are checked against the index (hashed,
constant-time) and never logged. Reads go without a token only when the server runs with
``public_read``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, Request

from weightstore.errors import Forbidden, Unauthorized
from weightstore.server.settings import ServerSettings
from weightstore.store import WeightStore
from weightstore.types import scope_allows


def get_store(request: Request) -> WeightStore:
    store: WeightStore = request.app.state.store
    return store


def get_settings(request: Request) -> ServerSettings:
    settings: ServerSettings = request.app.state.settings
    return settings


_GRANTED = "weightstore.granted"  # the request scope's key: what the token was granted


def _granted(request: Request, token: str) -> str | None:
    """The token's scope, looked up once per request: a guarded route
    (``server.uploads.GuardedBodyRoute``) checks it before reading the body, and the route's
    dependency then checks it again without asking the index twice."""
    if _GRANTED not in request.scope:
        request.scope[_GRANTED] = get_store(request).check_token(token)
    found: str | None = request.scope[_GRANTED]
    return found


def require(scope: str) -> Callable[[Request], str]:
    """A dependency that lets the request through with a token of at least ``scope`` (or,
    for ``read`` on a public-read server, none) and returns the scope granted."""

    def check(request: Request) -> str:
        settings = get_settings(request)
        header = request.headers.get("authorization")
        if header is None:
            if scope == "read" and settings.public_read:
                return "anonymous"
            raise Unauthorized(
                f"this needs a token with {scope!r} scope: send Authorization: Bearer"
            )
        kind, _, token = header.partition(" ")
        granted = _granted(request, token.strip()) if kind.lower() == "bearer" else None
        if granted is None:
            raise Unauthorized("invalid or revoked token")
        if not scope_allows(granted, scope):
            raise Forbidden(f"this needs {scope!r} scope; the token has {granted!r}")
        return granted

    return check


Store = Annotated[WeightStore, Depends(get_store)]
Settings = Annotated[ServerSettings, Depends(get_settings)]
CanRead = Depends(require("read"))
CanWrite = Depends(require("write"))
