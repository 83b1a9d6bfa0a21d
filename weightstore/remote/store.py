"""The HTTP client store: a weightstore service used like a local store.

``RemoteStore("http://host:8000", token=...)`` has the read API of :class:`WeightStore`
(``tasks``, ``log``, ``show``, ``diff``, ``restore``, ``export``) and the object exchange that
push and pull use; a :class:`~weightstore.loader.TaskLoader` swaps from it as from a local store.
It is an HTTP snapshot source plus the one reader (:mod:`weightstore.read`) over a remote chain
source: *encoded* objects (the compressed bytes, deltas included) are downloaded into a
content-addressed cache with a size budget and decoded here, and every decoded tensor is checked
against its digest: the one verification rule, on the client's side of the wire.
Errors from the service come back as the same classes of the error tree.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
from collections.abc import Callable, Collection, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import httpx

from weightstore import errors
from weightstore.codec import Codec
from weightstore.codec.layout import U8
from weightstore.errors import InvalidInput, WeightstoreError
from weightstore.exchange import check_digest
from weightstore.files import write_safetensors
from weightstore.forms import diff_from_json, snapshot_from_json, snapshot_json
from weightstore.inputs import check_new_task, check_tags
from weightstore.manifests import check_snapshot_id
from weightstore.objcache import ObjectCache
from weightstore.ports import Progress, Weights, fan_out
from weightstore.rates import MinRate
from weightstore.read import ObjectReader, check_targets
from weightstore.read.fill import fill_new, fill_targets
from weightstore.read.layout import TensorBytes, export_snapshot
from weightstore.refs import check_name, parse_ref
from weightstore.remote.chains import RemoteChains
from weightstore.settings import StoreSettings
from weightstore.sources import source_parts, state_of
from weightstore.store import WeightStore
from weightstore.types import Diff, Snapshot, TensorEntry

if TYPE_CHECKING:  # torch is imported by restore, so push, pull and clone start without it
    import torch

_PAGE = 1000


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/weightstore`` (``~/.cache/weightstore``), looked up when a client opens."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "weightstore"


def _error_class(status: int, kind: str) -> type[WeightstoreError]:
    found = getattr(errors, kind, None)
    if isinstance(found, type) and issubclass(found, WeightstoreError):
        return found
    by_status: dict[int, type[WeightstoreError]] = {
        400: InvalidInput,
        401: errors.Unauthorized,
        403: errors.Forbidden,
        404: errors.NotFound,
        409: errors.Conflict,
        413: errors.PayloadTooLarge,
        423: errors.LockHeld,
    }
    return by_status.get(status, errors.StorageError)


def _path(*parts: str) -> str:
    """A URL path from checked names and refs, each percent-quoted (``/`` in a name stays: the
    routes take names with ``/``, and reserved words keep that unambiguous)."""
    return "/" + "/".join(quote(p, safe="/@:") for p in parts)


def _ref(text: str) -> str:
    return parse_ref(text).text


def raise_for_problem(response: httpx.Response) -> None:
    """Raise the error-tree class the service's problem response names."""
    if response.is_success or response.status_code == 304:
        return
    detail, kind = response.reason_phrase, ""
    try:
        body = response.json()
        detail = str(body.get("detail", detail))
        kind = str(body.get("type", "")).rpartition(":")[2]
    except ValueError:
        pass
    raise _error_class(response.status_code, kind)(f"{response.request.url.path}: {detail}")


class RemoteStore:
    """A weightstore service at ``url``, read (and pushed to) over HTTP."""

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        cache_bytes: int = 8 << 30,
        settings: StoreSettings | None = None,
        timeout: float = 300.0,
        fetchers: int = 8,
        min_rate: float = 64 * 1024,
    ) -> None:
        """``cache_bytes``: the local object cache's budget; ``fetchers``: tensors fetched
        and decoded at a time; ``timeout``: seconds each connect, send or read may take;
        ``min_rate``: past ``timeout`` seconds an answer must average that many bytes a
        second (0: no minimum), or a server trickling bytes inside the read timeout would
        hold a pull for ever."""
        if not url.startswith(("http://", "https://")):
            raise InvalidInput(f"{url!r} is not an http:// or https:// URL")
        self.url = url.rstrip("/")
        self.settings = settings or StoreSettings()
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=f"{self.url}/v1", headers=headers, timeout=timeout)
        self._grace, self._min_rate = timeout, min_rate
        self.codec = Codec(self.settings.codec, threads=self.settings.worker_count())
        # One cache folder per server: encoded objects are what that server encoded (a delta
        # there may be stored plainly elsewhere), so a chain never mixes two servers' objects.
        server = hashlib.sha256(self.url.encode()).hexdigest()[:16]
        root = Path(cache_dir or default_cache_dir()) / "objects" / server
        self.cache = ObjectCache(root, cache_bytes)
        self._fetchers = fetchers
        self._pool = ThreadPoolExecutor(fetchers, "weightstore-remote")
        chains = RemoteChains(self.get_object, self.cache, self._pool, self.url)
        # Always verified: nothing that crossed the wire is trusted.
        self.reader = ObjectReader(chains, self.codec, verify=True)
        self.bytes_sent = 0  # object bytes pushed
        self.bytes_received = 0  # object bytes downloaded (cache misses)

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self._http.close()
        self.codec.close()

    def __enter__(self) -> RemoteStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def describe(self) -> str:
        return self.url

    # ----------------------------------------------------------------------------- HTTP

    def _call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            with self._http.stream(method, path, **kwargs) as streamed:
                body = self._body(streamed, path)
        except httpx.HTTPError as e:
            raise errors.StorageError(f"{self.url}: {e}") from e
        response = httpx.Response(
            streamed.status_code,
            headers=streamed.headers,
            content=body,
            request=streamed.request,
        )
        raise_for_problem(response)
        return response

    def _body(self, response: httpx.Response, path: str) -> bytes:
        """The answer's raw body, as it arrives, as fast as ``rates.MinRate`` asks (the
        client's ``timeout`` its grace, ``min_rate`` its rate)."""
        rule, parts, got = MinRate(self._grace, self._min_rate, time.monotonic()), [], 0
        for piece in response.iter_raw():
            parts.append(piece)
            got += len(piece)
            if rule.left(got, time.monotonic()) < 0:
                raise errors.TransientStorageError(
                    f"{self.url}{path}: the answer arrived slower than {rule.rate:g} bytes/s "
                    f"({got} bytes in {time.monotonic() - rule.start:.1f} s)"
                )
        return b"".join(parts)

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._call(method, path, **kwargs)
        try:
            return response.json()
        except ValueError as e:
            raise errors.CorruptObject(f"{self.url}{path}: the answer is not JSON: {e}") from e

    # ----------------------------------------------------------------------------- reading

    def tasks(self) -> list[str]:
        return [row["task"] for row in self._json("GET", "/tasks")]

    def log(self, task: str | None = None) -> list[Snapshot]:
        """Snapshots newest first, of one task or of all (without their tensor lists: ``show``
        has them)."""
        if task is None:
            snaps = [s for t in self.tasks() for s in self.log(t)]
            return sorted(snaps, key=lambda s: s.created_at, reverse=True)
        out: list[Snapshot] = []
        params: dict[str, Any] = {"limit": _PAGE}
        while True:
            page = self._json("GET", _path("tasks", check_name(task), "snapshots"), params=params)
            out.extend(snapshot_from_json(s) for s in page["items"])
            if page.get("next_cursor") is None:
                return out
            params = {"limit": _PAGE, "cursor": page["next_cursor"]}

    def show(self, ref: str) -> Snapshot:
        """The snapshot's manifest, its id derived again from it (a manifest altered on the
        way raises :class:`~weightstore.errors.ManifestMismatch`)."""
        snap = snapshot_from_json(self._json("GET", _path("snapshots", _ref(ref))))
        check_snapshot_id(snap)
        return snap

    def diff(self, ref_a: str, ref_b: str) -> Diff:
        path = _path("snapshots", _ref(ref_a), "diff", _ref(ref_b))
        found = diff_from_json(self._json("GET", path))
        check_snapshot_id(found.a)
        check_snapshot_id(found.b)
        return found

    def resolve(self, ref: str) -> str:
        return self.show(ref).id

    def snapshot(self, snapshot_id: str) -> Snapshot:
        return self.show(snapshot_id)

    def tensor_reader(self, entries: Collection[TensorEntry]) -> TensorBytes:
        """A function giving the raw bytes of each of ``entries``, decoded here from their
        (cached) objects and verified; their chains are resolved once, here."""
        chains = self.reader.chains({e.digest for e in entries})

        def read(entry: TensorEntry) -> U8:
            return self.reader.read(entry, chains[entry.digest], verify=True)

        return read

    def read_tensor_bytes(self, entry: TensorEntry) -> U8:
        """One tensor's raw bytes, decoded here and verified."""
        return self.tensor_reader([entry])(entry)

    def restore(
        self,
        ref: str,
        *,
        device: str | torch.device = "cpu",
        into: Weights | None = None,
        strict: bool = True,
        progress: Progress | None = None,
    ) -> dict[str, torch.Tensor]:
        """The snapshot's tensors on ``device``; with ``into``, copied into the module's (or
        state dict's) tensors in place, by the same rules as :meth:`WeightStore.restore`."""
        import torch

        snap = self.show(ref)
        chains = self.reader.chains({t.digest for t in snap.weights})
        if into is None:
            dev = torch.device(device)
            return fill_new(self.reader, snap, chains, dev, True, self._run_all, progress)
        target = into.state_dict(keep_vars=False) if isinstance(into, torch.nn.Module) else into
        pairs = check_targets(snap, target, strict, None)
        staging = self.settings.restore_staging_bytes
        fill_targets(self.reader, snap, pairs, chains, True, self._run_all, staging, progress)
        return {entry.name: t for entry, t in pairs}

    def _run_all(self, fn: Callable[[Any], None], items: Iterable[Any]) -> None:
        fan_out(self._pool, fn, items, 2 * self._fetchers)

    def export(
        self,
        ref: str,
        path: str | os.PathLike[str],
        *,
        progress: Progress | None = None,
        overwrite: bool = False,
    ) -> Snapshot:
        """Write the snapshot as a standard safetensors file (or the folder it was saved
        from), decoded here; an existing file is replaced only if ``overwrite``."""
        snap = self.show(ref)
        export_snapshot(snap, path, self.tensor_reader, progress, overwrite=overwrite)
        return snap

    # ----------------------------------------------------------------------------- writing

    def save(
        self,
        task: str,
        weights: Weights,
        *,
        step: int | None = None,
        tags: Iterable[str] = (),
        message: str = "",
    ) -> Snapshot:
        """Upload ``weights`` as a safetensors file (the server encodes it; ``push`` from a
        local store sends only the deltas instead)."""
        task = check_new_task(task)
        state = state_of(weights)
        parts = [(name, *source_parts(name, value)) for name, value in state.items()]
        entries = [(name, dtype, shape, data.size) for name, dtype, shape, data in parts]
        params: dict[str, Any] = {"tag": check_tags(tags), "message": message}
        if step is not None:
            params["step"] = step
        with tempfile.TemporaryDirectory(prefix="weightstore-upload-") as tmp:
            path = Path(tmp) / "weights.safetensors"
            write_safetensors(path, entries, lambda i: memoryview(parts[i][3]))  # type: ignore[arg-type]
            with path.open("rb") as f:
                route = _path("tasks", task, "snapshots")
                body = self._json("PUT", route, params=params, content=f)
        return snapshot_from_json(body)

    def tag(self, ref: str, name: str) -> Snapshot:
        path = _path("snapshots", _ref(ref), "tags", check_name(name, "tag"))
        return snapshot_from_json(self._json("PUT", path))

    def untag(self, task: str, name: str) -> None:
        self._call("DELETE", _path("tasks", check_name(task), "tags", check_name(name, "tag")))

    def delete(self, ref: str) -> Snapshot:
        snap = self.show(ref)
        self._call("DELETE", _path("snapshots", check_digest(snap.id)))
        return snap

    # ----------------------------------------------------------------------------- exchange

    def missing(self, digests: Iterable[str]) -> list[str]:
        wanted = list(digests)
        out: list[str] = []
        for i in range(0, len(wanted), 10_000):
            body = self._json("POST", "/objects/missing", json={"digests": wanted[i : i + 10_000]})
            out.extend(body["missing"])
        return out

    def get_object(self, digest: str, *, cache: bool = False) -> bytes:
        """The encoded object (not verified here: decoding checks its digest)."""
        if cache and (hit := self.cache.get(digest)) is not None:
            return hit
        blob = self._call("GET", _path("objects", check_digest(digest))).content
        self.bytes_received += len(blob)
        if cache:
            self.cache.put(digest, blob)
        return blob

    def put_object(self, digest: str, blob: bytes) -> None:
        self._call(
            "PUT",
            _path("objects", check_digest(digest)),
            content=blob,
            headers={"Content-Type": "application/octet-stream"},
        )
        self.bytes_sent += len(blob)

    def commit_manifest(self, snap: Snapshot) -> Snapshot:
        body = snapshot_json(snap, tensors=True)
        return snapshot_from_json(self._json("POST", "/snapshots", json=body))


def open_store(
    location: str | os.PathLike[str], *, token: str | None = None, **kwargs: Any
) -> RemoteStore | WeightStore:
    """A :class:`RemoteStore` for an ``http(s)://`` URL, else the local :class:`WeightStore`."""
    text = os.fspath(location)
    if text.startswith(("http://", "https://")):
        return RemoteStore(text, token=token, **kwargs)
    return WeightStore.open(text, **kwargs)
