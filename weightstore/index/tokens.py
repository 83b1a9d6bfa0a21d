"""Bearer tokens of the REST service, kept in the index as SHA-256 digests of their secrets.

A token reads ``wst_<id>_<secret>``: the id finds the row, the secret's SHA-256 is compared in
constant time (``hmac.compare_digest``). The secret itself is shown once, at creation, and
stored nowhere. Scopes are ordered: ``admin`` includes ``write``, which includes ``read``.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from datetime import datetime, timezone

from sqlalchemy import Engine, delete, insert, select
from sqlalchemy.exc import DBAPIError

from weightstore.errors import InvalidInput, NotFound, StorageError
from weightstore.index.engine import READ_ONLY_OPTION
from weightstore.index.models import TokenRow
from weightstore.types import TOKEN_SCOPES, TokenInfo

SCOPES = TOKEN_SCOPES
_TOKEN_RE = re.compile(r"wst_([0-9a-f]{16})_([A-Za-z0-9_-]{20,100})")


def _sha256(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class Tokens:
    """Create, check, list and revoke tokens in the index database behind ``engine``."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def create(self, scope: str, name: str = "") -> tuple[TokenInfo, str]:
        """A new token of ``scope``: its listing and the full token text (shown once)."""
        if scope not in SCOPES:
            raise InvalidInput(f"invalid scope {scope!r}: use one of {', '.join(SCOPES)}")
        token_id, secret = secrets.token_hex(8), secrets.token_urlsafe(32)
        info = TokenInfo(token_id, name, scope, datetime.now(timezone.utc))
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    insert(TokenRow).values(
                        id=token_id,
                        name=name,
                        scope=scope,
                        secret_sha256=_sha256(secret),
                        created_at=info.created_at,
                    )
                )
        except DBAPIError as exc:
            raise StorageError(f"index database error: {exc.orig}") from exc
        return info, f"wst_{token_id}_{secret}"

    def check(self, token: str) -> str | None:
        """The scope of ``token``, or None if it is malformed, unknown or revoked."""
        m = _TOKEN_RE.fullmatch(token)
        if m is None:
            return None
        try:
            # A read: on SQLite a plain BEGIN, never queued behind a writer.
            with self.engine.connect().execution_options(**{READ_ONLY_OPTION: True}) as conn:
                row = conn.execute(
                    select(TokenRow.secret_sha256, TokenRow.scope).where(TokenRow.id == m[1])
                ).first()
        except DBAPIError as exc:
            raise StorageError(f"index database error: {exc.orig}") from exc
        if row is None or not hmac.compare_digest(row.secret_sha256, _sha256(m[2])):
            return None
        return str(row.scope)

    def list(self) -> list[TokenInfo]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(TokenRow.id, TokenRow.name, TokenRow.scope, TokenRow.created_at).order_by(
                    TokenRow.created_at
                )
            )
            return [TokenInfo(r.id, r.name, r.scope, r.created_at) for r in rows]

    def revoke(self, token_id: str) -> None:
        """Delete the token (by its id, or the whole token text)."""
        m = _TOKEN_RE.fullmatch(token_id)
        key = m[1] if m else token_id
        with self.engine.begin() as conn:
            if conn.execute(delete(TokenRow).where(TokenRow.id == key)).rowcount == 0:
                raise NotFound(f"no token with id {key!r}: `weightstore token list` shows them")
