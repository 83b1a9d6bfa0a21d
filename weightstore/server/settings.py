"""Settings of the REST service, passed to :func:`weightstore.server.create_app`."""

from __future__ import annotations

import json
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from weightstore.errors import InvalidInput

UPLOADS = ".uploads"
SETTINGS_ENV = "WEIGHTSTORE_SERVER_SETTINGS"
"""Where ``weightstore serve --workers N`` hands the settings to each worker process (JSON)."""


@dataclass(frozen=True)
class ServerSettings:
    """``store``: the store folder; ``index_url``: its index database when not the folder's own.
    ``public_read``: serve reads without a token. ``max_upload_bytes``: the largest request body
    (a safetensors upload, one encoded object). ``max_object_bytes``: the largest raw size an
    uploaded object may decode to (a small object must not claim terabytes).
    ``max_json_bytes``: the largest JSON body (a manifest, a list of digests), read only once
    the caller's token is checked. ``threads``: the store's worker threads (0: every core).
    ``upload_dir``: where upload bodies are spooled before they are read (default:
    ``.uploads`` in a store folder, the system's temporary folder for a store at a URL such as
    ``s3://``). ``header_timeout`` / ``max_connections``: a connection that sends no request
    head in that many seconds, or one beyond that many, is closed (``server/protocol.py``).
    ``body_timeout``: a request body from which no byte arrives for that many seconds is
    dropped with 408 (``server/uploads.py``), and so is one that, past its first
    ``body_timeout`` seconds, averages under ``min_body_rate`` bytes a second (0: no minimum)."""

    store: str
    index_url: str | None = None
    public_read: bool = False
    max_upload_bytes: int = 64 << 30
    max_object_bytes: int = 64 << 30
    max_json_bytes: int = 64 << 20
    threads: int = 0
    upload_dir: str | None = None
    header_timeout: float = 30.0
    max_connections: int = 2048
    body_timeout: float = 60.0
    min_body_rate: float = 500.0

    def uploads_folder(self) -> Path:
        if self.upload_dir is not None:
            return Path(self.upload_dir)
        if "://" in self.store:  # not a folder: never a folder named "s3:" in the cwd
            return Path(tempfile.gettempdir()) / "weightstore-uploads"
        return Path(self.store) / UPLOADS

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> ServerSettings:
        try:
            return cls(**json.loads(text))
        except (TypeError, ValueError) as e:
            raise InvalidInput(f"invalid server settings {text[:200]!r}: {e}") from e
