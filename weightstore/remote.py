"""The HTTP client store: a weightstore service used like a local store.

``RemoteStore("http://host:8000", token=...)`` has the read API of :class:`WeightStore`
(``tasks``, ``log``, ``show``, ``diff``, ``restore``, ``export``) and the object exchange that
push and pull use. It downloads *encoded* objects (the compressed bytes, deltas included) and
decodes them locally, through a content-addressed cache with a size budget, and checks every
decoded tensor against its digest: the one verification rule, on the client's side of the wire.
Errors from the service come back as the same classes of the error tree.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import torch
from safetensors.torch import save_file

from weightstore import errors
from weightstore.codec import Codec, read_header
from weightstore.codec.layout import U8
from weightstore.errors import CorruptObject, InvalidInput, WeightstoreError
from weightstore.forms import diff_from_json, snapshot_from_json, snapshot_json
from weightstore.objcache import ObjectCache
from weightstore.settings import StoreSettings
from weightstore.store import WeightStore, write_snapshot_file
from weightstore.targets import check_targets
from weightstore.tensors import byte_view, empty_tensor
from weightstore.types import Diff, Snapshot, TensorEntry

Progress = Callable[[int], None]
_PAGE = 1000
_MAX_CHAIN = 10_000


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
    ) -> None:
        """``cache_bytes``: the local object cache's budget; ``fetchers``: tensors fetched
        and decoded at a time."""
        if not url.startswith(("http://", "https://")):
            raise InvalidInput(f"{url!r} is not an http:// or https:// URL")
        self.url = url.rstrip("/")
        self.settings = settings or StoreSettings()
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=f"{self.url}/v1", headers=headers, timeout=timeout)
        self.codec = Codec(self.settings.codec, threads=self.settings.worker_count())
        self.cache = ObjectCache(Path(cache_dir or default_cache_dir()) / "objects", cache_bytes)
        self._fetchers = fetchers
        self.bytes_sent = 0  # object bytes pushed
        self.bytes_received = 0  # object bytes downloaded (cache misses)

    def close(self) -> None:
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
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as e:
            raise errors.StorageError(f"{self.url}: {e}") from e
        raise_for_problem(response)
        return response

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        return self._call(method, path, **kwargs).json()

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
        offset: int | None = 0
        while offset is not None:
            page = self._json(
                "GET", f"/tasks/{task}/snapshots", params={"offset": offset, "limit": _PAGE}
            )
            out.extend(snapshot_from_json(s) for s in page["items"])
            offset = page["next_offset"]
        return out

    def show(self, ref: str) -> Snapshot:
        return snapshot_from_json(self._json("GET", f"/snapshots/{ref}"))

    def diff(self, ref_a: str, ref_b: str) -> Diff:
        return diff_from_json(self._json("GET", f"/snapshots/{ref_a}/diff/{ref_b}"))

    def read_tensor_bytes(self, entry: TensorEntry, out: U8 | None = None) -> U8:
        """The tensor's raw bytes, decoded here from its (cached) objects and verified."""
        for attempt in (0, 1):
            names, blobs = self._chain(entry.digest)
            try:
                return self.codec.decode_verified(blobs, names, out)
            except CorruptObject:
                # A damaged cache file: drop the chain and fetch it once more.
                for d in names:
                    self.cache.discard(d)
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def _chain(self, digest: str) -> tuple[list[str], list[bytes]]:
        names, blobs = [digest], [self.get_object(digest, cache=True)]
        while (base := read_header(blobs[-1], names[-1]).base) is not None:
            if len(names) > _MAX_CHAIN:
                raise CorruptObject(f"object {digest}: delta chain loops")
            names.append(base)
            blobs.append(self.get_object(base, cache=True))
        return names, blobs

    def restore(
        self,
        ref: str,
        *,
        device: str | torch.device = "cpu",
        into: torch.nn.Module | Mapping[str, torch.Tensor] | None = None,
        strict: bool = True,
        progress: Progress | None = None,
    ) -> dict[str, torch.Tensor]:
        """The snapshot's tensors on ``device``; with ``into``, copied into the module's (or
        state dict's) tensors in place, after every name, shape and dtype was checked."""
        snap = self.show(ref)
        if into is None:
            dev = torch.device(device)

            def load(entry: TensorEntry) -> torch.Tensor:
                t = self._tensor(entry)
                if progress:
                    progress(entry.nbytes)
                return t if dev.type == "cpu" else t.to(dev)

            with ThreadPoolExecutor(self._fetchers) as pool:
                names = [t.name for t in snap.tensors]
                return dict(zip(names, pool.map(load, snap.tensors), strict=True))
        target = into.state_dict(keep_vars=False) if isinstance(into, torch.nn.Module) else into
        pairs = check_targets(snap, target, strict, None)
        self._restore_into(pairs, progress)
        return {entry.name: t for entry, t in pairs}

    def _restore_into(
        self, pairs: list[tuple[TensorEntry, torch.Tensor]], progress: Progress | None
    ) -> None:
        """Nothing is written unless every object arrived and decoded: each tensor is decoded
        (and verified) once, into staging memory, then copied. Beyond the staging budget
        (``StoreSettings.restore_staging_bytes``) every object is fetched into the cache
        first, then decoded straight into its target."""
        with ThreadPoolExecutor(self._fetchers) as pool:
            if sum(entry.nbytes for entry, _ in pairs) <= self.settings.restore_staging_bytes:

                def stage(entry: TensorEntry) -> torch.Tensor:
                    t = self._tensor(entry)
                    if progress:
                        progress(entry.nbytes)
                    return t

                staged = list(pool.map(stage, [entry for entry, _ in pairs]))
                with torch.no_grad():
                    for (_, t), s in zip(pairs, staged, strict=True):
                        t.copy_(s)
                return

            def copy(pair: tuple[TensorEntry, torch.Tensor]) -> None:
                with torch.no_grad():
                    pair[1].copy_(self._tensor(pair[0]))
                if progress:
                    progress(pair[0].nbytes)

            list(pool.map(lambda pair: self._chain(pair[0].digest), pairs))
            try:
                list(pool.map(copy, pairs))
            except CorruptObject as e:
                raise CorruptObject(
                    f"{e}; the target was partly overwritten (it was larger than the staging "
                    "budget, StoreSettings.restore_staging_bytes): restore it from a good "
                    "snapshot"
                ) from e

    def _tensor(self, entry: TensorEntry) -> torch.Tensor:
        t = empty_tensor(entry.dtype, entry.shape)
        if entry.nbytes:
            self.read_tensor_bytes(entry, byte_view(t))
        return t

    def export(
        self, ref: str, path: str | os.PathLike[str], *, progress: Progress | None = None
    ) -> Snapshot:
        """Write the snapshot as a standard safetensors file, decoded here."""
        snap = self.show(ref)
        write_snapshot_file(snap, path, self.read_tensor_bytes, progress)
        return snap

    # ----------------------------------------------------------------------------- writing

    def save(
        self,
        task: str,
        weights: torch.nn.Module | Mapping[str, torch.Tensor],
        *,
        step: int | None = None,
        tags: Iterable[str] = (),
        message: str = "",
    ) -> Snapshot:
        """Upload ``weights`` as a safetensors file (the server encodes it; ``push`` from a
        local store sends only the deltas instead)."""
        state = weights.state_dict() if isinstance(weights, torch.nn.Module) else weights
        params: dict[str, Any] = {"tag": list(tags), "message": message}
        if step is not None:
            params["step"] = step
        with tempfile.TemporaryDirectory(prefix="weightstore-upload-") as tmp:
            path = Path(tmp) / "weights.safetensors"
            save_file({k: v.detach().contiguous().cpu() for k, v in state.items()}, str(path))
            with path.open("rb") as f:
                body = self._json("PUT", f"/tasks/{task}/snapshots", params=params, content=f)
        return snapshot_from_json(body)

    def tag(self, ref: str, name: str) -> Snapshot:
        return snapshot_from_json(self._json("PUT", f"/snapshots/{ref}/tags/{name}"))

    def untag(self, task: str, name: str) -> None:
        self._call("DELETE", f"/tasks/{task}/tags/{name}")

    def delete(self, ref: str) -> Snapshot:
        snap = self.show(ref)
        self._call("DELETE", f"/snapshots/{snap.id}")
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
        blob = self._call("GET", f"/objects/{digest}").content
        self.bytes_received += len(blob)
        if cache:
            self.cache.put(digest, blob)
        return blob

    def put_object(self, digest: str, blob: bytes) -> None:
        self._call(
            "PUT",
            f"/objects/{digest}",
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
