"""TaskLoader: swap a task's weights into a live model in place, moving only what differs.

Tiers, each keyed by digest and bounded by its budget: a GPU cache (device targets only), a
host cache of decoded tensors (pinned when CUDA is present), and the store. A delta is decoded
against the nearest base of its chain at hand instead of replaying the chain from its root:
what the target tensor itself holds now ("delta in place": only the compressed links above it
are read and applied to the target's bytes), or a base in the host cache. A delta in place on
a CPU tensor is decoded over its bytes by the CPU codec and checked by BLAKE3; on any other
device it is decompressed and applied there by torch ops (nvCOMP on CUDA) and checked there by
the device checksum (``read/device.py``); ``apply_deltas="device"`` takes that path on the
CPU too.

Failure rule: when the bytes to decode fit the staging budget, everything is decoded and
verified before the first write, so a bad object leaves the model as it was (the error is the
reader's: :class:`CorruptObject`, :class:`ObjectNotFound`); tensors decoded over themselves (a
delta of what they hold) are the exception, put back from the store if one fails. Otherwise
tensors are written as they are decoded; a failure then raises :class:`SwapFailed` and
``active`` becomes None.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Literal

import torch

from weightstore.dtypes import dtype_info
from weightstore.errors import InvalidInput, SwapFailed, WeightstoreError
from weightstore.loader.budget import parse_bytes
from weightstore.loader.cache import TierCache, nbytes
from weightstore.loader.report import LoaderStats, SwapReport
from weightstore.loader.target import target_tensors
from weightstore.ports import Weights, fan_out
from weightstore.read import U8, Slot, check_slots
from weightstore.read.source import ReadSource
from weightstore.read.targets import MemoryKey
from weightstore.tensors import byte_view
from weightstore.transfer import copy_all, host_empty
from weightstore.types import ObjectRecord, Snapshot, TensorEntry

Chains = dict[str, list[ObjectRecord]]
# GPU memory left free when admitting a tensor to the GPU cache: room for activations.
_GPU_HEADROOM_FRACTION = 0.05
_GPU_HEADROOM_MIN = 256 << 20
_SNAPSHOTS_KEPT = 1024  # manifests remembered, so a swap costs one query to resolve its ref


_INTS = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def _as_bits(src: torch.Tensor, dst: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``src`` and ``dst`` viewed as integers, so a copy moves bits, never converted values
    (NaN payloads, -0.0); as flat bytes when ``dst`` is contiguous, else element-wise (a
    non-contiguous target keeps its strides). ``src`` is contiguous and holds ``dst``'s bytes,
    maybe under another shape or dtype (equal bytes have one digest, hence one cache entry)."""
    if dst.numel() == 0:
        return dst, dst
    flat = src.reshape(-1).view(torch.uint8)
    if dst.is_contiguous():
        return flat, dst.reshape(-1).view(torch.uint8)
    ints = _INTS[dst.element_size()]
    return flat.view(ints).reshape(dst.shape), dst.view(ints)


class TaskLoader:
    """Swaps snapshots into ``model`` (an nn.Module or a state dict) on ``device``.

    ``gpu_cache`` / ``host_cache`` / ``staging``: byte budgets (int or "8GiB"). ``strict``: the
    target's names must equal the snapshot's, as in ``load_state_dict``. ``apply_deltas``:
    where a delta in place is applied: "auto" (the CPU codec for CPU tensors, torch ops on the
    device for others), "device" (torch ops wherever the tensor is) or "host" (CPU tensors
    only; others are written whole). Thread-safe: swaps run one at a time; prefetches run
    beside them on the loader's own threads.
    """

    def __init__(
        self,
        store: ReadSource,
        model: Weights,
        device: str | torch.device | None = None,
        gpu_cache: int | str = "8GiB",
        host_cache: int | str = "32GiB",
        strict: bool = True,
        staging: int | str = "1GiB",
        threads: int | None = None,
        apply_deltas: Literal["auto", "device", "host"] = "auto",
    ) -> None:
        if apply_deltas not in ("auto", "device", "host"):
            raise InvalidInput(f"apply_deltas must be auto, device or host, not {apply_deltas!r}")
        self.apply_deltas = apply_deltas
        self.store = store
        self.model = model
        self.strict = strict
        tensors = target_tensors(model)
        self.device = torch.device(device) if device is not None else _device_of(tensors)
        _check_device(tensors, self.device)
        cuda = self.device.type == "cuda"
        self._gpu = TierCache(parse_bytes(gpu_cache, "gpu_cache") if cuda else 0)
        self._host = TierCache(parse_bytes(host_cache, "host_cache"))
        self._staging_budget = parse_bytes(staging, "staging")
        self._staging_peak = 0
        self._verify = store.settings.verify_reads
        self._transfer = store.reader.transfer
        self._workers = threads or store.settings.worker_count()
        self._decoders = ThreadPoolExecutor(self._workers, "weightstore-loader")
        self._prefetcher = ThreadPoolExecutor(1, "weightstore-prefetch")
        self._swap_lock = threading.Lock()
        self._state_lock = threading.Lock()
        # Target memory -> the digest of the bytes it holds and the tensor's version counter
        # then: an in-place change outside the loader (an optimizer step, load_state_dict)
        # bumps the counter, so the slot no longer counts as holding that digest.
        self._held: dict[MemoryKey, tuple[str, int]] = {}
        self._active: Snapshot | None = None
        self._pins: dict[str, list[str]] = {}  # snapshot id -> its digests, once per pin
        self._swaps = self._failed = self._moved = 0
        self._closed = False
        self._snaps: dict[str, Snapshot] = {}  # by id: snapshots never change, refs may

    # ----------------------------------------------------------------------------- public

    @property
    def active(self) -> Snapshot | None:
        """The snapshot the model holds, or None (before the first swap, after a failed one,
        or after ``invalidate``)."""
        return self._active

    def activate(self, ref: str, *, strict: bool | None = None) -> SwapReport:
        """Make the model hold snapshot ``ref`` bit-exactly, copying into its own tensors.
        ``strict`` (default: the loader's): the names must match exactly; False copies the
        names both have, as ``load_state_dict(strict=False)``."""
        self._check_open()
        start = time.perf_counter()
        with self._swap_lock:
            snap = self._snapshot(ref)
            exact = self.strict if strict is None else strict
            slots = check_slots(snap, target_tensors(self.model), exact)
            changed = [s for s in slots if self._held.get(s.key) != _holding(s)]
            tiers = self._swap(snap, changed)
            with self._state_lock:
                for s in slots:
                    self._held[s.key] = _holding(s)
                self._active = snap
                self._swaps += 1
                self._moved += sum(v for k, v in tiers.items() if k != "read")
        wall = time.perf_counter() - start
        moved = sum(v for k, v in tiers.items() if k != "read")
        return SwapReport(
            ref=ref,
            snapshot_id=snap.id,
            tensors_total=sum(len(s.names) for s in slots),
            tensors_changed=sum(len(s.names) for s in changed),
            tensors_moved=len(changed),
            bytes_gpu_cache=tiers["gpu_cache"],
            bytes_host_cache=tiers["host_cache"],
            bytes_store=tiers["store"],
            bytes_delta_in_place=tiers["delta_in_place"],
            delta_bytes_read=tiers["read"],
            wall_ms=wall * 1e3,
            gb_per_s=moved / wall / 1e9 if wall > 0 else 0.0,
            verified=self._verify,
        )

    def prefetch(self, ref: str) -> Future[Snapshot]:
        """Warm the caches with ``ref``'s tensors in the background; the future gives the
        snapshot (or the error that stopped it)."""
        self._check_open()
        snap = self._snapshot(ref)  # a bad ref fails here, in the caller
        return self._prefetcher.submit(self._warm, snap)

    def pin(self, ref: str) -> Snapshot:
        """Keep ``ref``'s tensors in the caches, never evicted, and load them now. Tensors
        that do not fit next to other pinned ones stay in the store."""
        self._check_open()
        snap = self._snapshot(ref)
        digests = list({t.digest for t in snap.weights})
        with self._state_lock:
            self._pins.setdefault(snap.id, []).extend(digests)
        self._host.pin(digests)
        self._gpu.pin(digests)
        self._warm(snap)
        return snap

    def unpin(self, ref: str) -> None:
        """Undo one ``pin(ref)`` (its tensors become evictable again)."""
        snap = self._snapshot(ref)
        with self._state_lock:
            held = self._pins.pop(snap.id, [])
        self._host.unpin(held)
        self._gpu.unpin(held)

    def evict(self) -> int:
        """Drop every unpinned cached tensor; return the bytes freed."""
        return self._gpu.evict() + self._host.evict()

    def invalidate(self) -> None:
        """Forget what the model holds: the next swap writes every tensor. In-place changes
        to the model's tensors are seen without it (their version counters move); this is for
        changes that cannot be seen, such as writes through ``.data`` or raw pointers."""
        with self._swap_lock, self._state_lock:
            self._held.clear()
            self._active = None

    def stats(self) -> LoaderStats:
        with self._state_lock:
            return LoaderStats(
                gpu_cache=self._gpu.stats(),
                host_cache=self._host.stats(),
                staging_budget=self._staging_budget,
                staging_peak=self._staging_peak,
                swaps=self._swaps,
                failed_swaps=self._failed,
                bytes_moved=self._moved,
            )

    def close(self) -> None:
        """Stop prefetching (waiting for the running one) and drop the caches."""
        if self._closed:
            return
        self._closed = True
        self._prefetcher.shutdown(wait=True, cancel_futures=True)
        self._decoders.shutdown(wait=True, cancel_futures=True)
        self._gpu.clear()
        self._host.clear()

    def __enter__(self) -> TaskLoader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ----------------------------------------------------------------------------- swapping

    def _swap(self, snap: Snapshot, changed: list[Slot]) -> dict[str, int]:
        """Write ``changed`` slots; return bytes written per tier."""
        tiers = {"gpu_cache": 0, "host_cache": 0, "store": 0, "delta_in_place": 0, "read": 0}
        if not changed:
            return tiers
        sources: dict[str, tuple[torch.Tensor, str]] = {}
        for s in changed:
            d = s.entry.digest
            if d not in sources:
                hit = self._cached(d)
                if hit is not None:
                    sources[d] = hit
        todo = _unique([s.entry for s in changed if s.entry.digest not in sources])
        need = sum(e.nbytes for e in todo)
        try:
            chains = self.store.reader.chains({e.digest for e in todo})
        except (WeightstoreError, OSError) as e:
            self._count_failure()
            raise type(e)(f"{e}; the model still holds {self._holding()}") from e
        held = self._held_bases(changed)
        if need <= self._staging_budget:
            over = self._over_themselves(todo, changed, chains, held)
            rest = [e for e in todo if e.digest not in over]
            self._note_staging(sum(e.nbytes for e in rest))
            bases = {
                s.entry.digest: (held[s.key], s.tensor)
                for s in changed
                if s.key in held and not self._on_device(s.tensor)
            }
            try:
                decoded, read = self._decode_all(rest, chains, bases)
            except (WeightstoreError, OSError) as e:
                self._count_failure()
                raise type(e)(
                    f"{e}; nothing was written: the model still holds {self._holding()}"
                ) from e
            try:
                read.update(self._apply_over_themselves(over, chains))
            except (WeightstoreError, OSError) as e:
                self._count_failure()
                self._undo(snap, over, chains, e)
                raise type(e)(
                    f"{e}; what was changed in place was put back: the model still holds "
                    f"{self._holding()}"
                ) from e
            tiers["read"] = sum(r for r in read.values() if r is not None)
            sources.update(
                {
                    d: (t, "store" if read.get(d) is None else "delta_in_place")
                    for d, t in decoded.items()
                }
            )
            sources.update(
                {
                    d: (slot.tensor, "store" if read.get(d) is None else "delta_in_place")
                    for d, (slot, _) in over.items()
                }
            )
            return self._write(snap, changed, sources, {}, tiers, {})
        return self._write(snap, changed, sources, chains, tiers, held)

    def _over_themselves(
        self,
        todo: list[TensorEntry],
        changed: list[Slot],
        chains: Chains,
        held: dict[MemoryKey, str],
    ) -> dict[str, tuple[Slot, int]]:
        """For a staged swap, the digests a contiguous slot can be decoded over itself: it
        holds link ``i`` of the digest's chain. Their bytes need no staging; if one fails,
        every such slot is put back (:meth:`_undo`), so the model still ends as it was."""
        slots = {s.entry.digest: s for s in changed if s.key in held and s.tensor.is_contiguous()}
        out: dict[str, tuple[Slot, int]] = {}
        for e in todo:
            slot = slots.get(e.digest)
            if slot is None:
                continue
            links = [r.digest for r in chains[e.digest]]
            if held[slot.key] in links[1:]:
                out[e.digest] = (slot, links.index(held[slot.key]))
        return out

    def _apply_over_themselves(
        self, over: dict[str, tuple[Slot, int]], chains: Chains
    ) -> dict[str, int | None]:
        """Decode each of ``over`` over its slot (verified); the compressed bytes read."""
        read: dict[str, int | None] = {}

        def one(d: str) -> None:
            slot, i = over[d]
            if self._on_device(slot.tensor):
                read[d] = self._apply_on_device(chains[d], i, slot.tensor)
                return
            view = byte_view(slot.tensor)
            read[d] = self._decode_bytes(chains[d], view, (chains[d][i].digest, view))
            if self._host.fits(slot.entry.nbytes):
                copy = host_empty(slot.entry.dtype, slot.entry.shape)
                byte_view(copy)[:] = view
                self._host.put(d, copy)

        self._run(one, list(over))
        return read

    def _undo(
        self, snap: Snapshot, over: dict[str, tuple[Slot, int]], chains: Chains, why: Exception
    ) -> None:
        """Put back what each slot of ``over`` held (decoding that digest's own chain, the
        tail of the chain from it, verified); :class:`SwapFailed` if that fails too."""
        if not over:
            return

        def one(d: str) -> None:
            slot, i = over[d]
            if self._on_device(slot.tensor):
                self.store.reader.device.put_back(chains[d][i:], slot.tensor)
            else:
                self.store.reader.decode(chains[d][i:], byte_view(slot.tensor), True)

        try:
            self._run(one, list(over))
        except Exception as e:
            with self._state_lock:
                self._active = None
                for slot, _ in over.values():
                    self._held.pop(slot.key, None)
            raise SwapFailed(
                f"swap to {snap.task} ({snap.short_id}) failed ({why}) and the tensors it had "
                f"changed in place could not be put back ({e}): the model holds a mix and "
                "loader.active is None: activate a snapshot again"
            ) from e
        with self._state_lock:  # torch ops moved the version counters of what they put back
            for d, (slot, i) in over.items():
                self._held[slot.key] = (chains[d][i].digest, slot.tensor._version)  # noqa: SLF001

    def _held_bases(self, changed: list[Slot]) -> dict[MemoryKey, str]:
        """The digest each changed slot holds now, where its bytes may serve as a delta base:
        a tensor the loader wrote and nothing changed since (its version counter has not
        moved), on the CPU or where deltas are applied on its device."""
        out: dict[MemoryKey, str] = {}
        with self._state_lock:
            for s in changed:
                held = self._held.get(s.key)
                t = s.tensor
                if held is None or held[1] != t._version:  # noqa: SLF001 (torch's counter)
                    continue
                if t.numel() and (t.device.type == "cpu" or self._on_device(t)):
                    out[s.key] = held[0]
        return out

    def _write(
        self,
        snap: Snapshot,
        changed: list[Slot],
        sources: dict[str, tuple[torch.Tensor, str]],
        chains: Chains,
        tiers: dict[str, int],
        held: dict[MemoryKey, str],
    ) -> dict[str, int]:
        """Copy every source into its slots, decoding what has no source straight into the
        target (against what the slot itself holds, when that is a link of its chain); from
        the first write on, a failure leaves the model unknown (SwapFailed)."""
        with self._state_lock:
            self._active = None
            for s in changed:
                self._held.pop(s.key, None)
        try:
            with torch.no_grad():
                pairs = []
                for s in changed:
                    src = sources.get(s.entry.digest)
                    if src is not None:
                        if src[0] is not s.tensor:  # a slot decoded over itself is written
                            pairs.append(_as_bits(src[0], s.tensor))
                        tiers[src[1]] += s.entry.nbytes
                copy_all(pairs, self._transfer, self._decoders, self._workers)
                direct = [s for s in changed if s.entry.digest not in sources]
                read: dict[MemoryKey, int | None] = {}

                def decode(s: Slot) -> None:
                    chain = chains[s.entry.digest]
                    read[s.key] = self._decode_into_slot(s, chain, held.get(s.key))

                self._run(decode, direct)
                for s in direct:
                    r = read[s.key]
                    tiers["store" if r is None else "delta_in_place"] += s.entry.nbytes
                    tiers["read"] += r or 0
            self._admit_gpu(
                [s for s in changed if sources.get(s.entry.digest, (0, ""))[1] != "gpu_cache"]
            )
        except Exception as e:  # whatever stopped it, the model now holds a mix
            self._count_failure()
            raise SwapFailed(
                f"swap to {snap.task} ({snap.short_id}) failed after writing began: {e}; the "
                "model holds a mix and loader.active is None: activate a snapshot again"
            ) from e
        return tiers

    def _decode_into_slot(self, s: Slot, chain: list[ObjectRecord], held: str | None) -> int | None:
        """Decode one tensor into its slot: only the links above ``held`` (what it holds,
        when that is a link of the chain) where deltas are applied on its device; else through
        the host cache when it has room (so the next swap finds it), else on the target's
        device where the store's rule says so (nvCOMP), else straight into a contiguous CPU
        target (over what it holds), else via staging. Returns the compressed bytes read when
        the decode started from what the slot held, else None."""
        t = s.tensor
        if held is not None and self._on_device(t):
            links = [r.digest for r in chain]
            if held in links[1:] and t.is_contiguous():
                return self._apply_on_device(chain, links.index(held), t)
            held = None
        own = (held, _bytes_of(t)) if held is not None else None
        if self._host.fits(s.entry.nbytes):
            host = host_empty(s.entry.dtype, s.entry.shape)
            read = self._decode_bytes(chain, byte_view(host), own)
            self._host.put(s.entry.digest, host)
            self._transfer.copy(*_as_bits(host, t))
            return read
        if self.store.reader.decodes_on_device(t.device, s.entry.nbytes):
            src, dst = _as_bits(self.store.reader.device.decode(chain, t.device, self._verify), t)
            dst.copy_(src)
            return None
        if t.device.type == "cpu" and t.is_contiguous():
            return self._decode_bytes(chain, byte_view(t), own)  # out may be the base
        if t.device.type == "cuda" and t.is_contiguous():
            self._transfer.upload(lambda buf: self._decode_bytes(chain, buf), s.entry.nbytes, t)
            return None
        host = host_empty(s.entry.dtype, s.entry.shape)
        read = self._decode_bytes(chain, byte_view(host), own)
        self._transfer.copy(*_as_bits(host, t))
        return read

    def _on_device(self, t: torch.Tensor) -> bool:
        """Whether a delta in place on ``t`` is applied by torch ops where ``t`` lives."""
        if self.apply_deltas == "auto":
            return t.device.type != "cpu"
        return self.apply_deltas == "device"

    def _apply_on_device(self, chain: list[ObjectRecord], held: int, t: torch.Tensor) -> int:
        """Apply the links above ``chain[held]`` (what ``t`` holds) to ``t`` where it lives,
        checked there unless reads are unverified; the compressed bytes read."""
        device = self.store.reader.device
        read = device.apply(chain, held, t)
        if self._verify:
            device.check(chain[0], t)
        return read

    # ----------------------------------------------------------------------------- tiers

    def _cached(self, digest: str) -> tuple[torch.Tensor, str] | None:
        if self._gpu.budget:
            t = self._gpu.get(digest)
            if t is not None:
                return t, "gpu_cache"
        t = self._host.get(digest)
        return (t, "host_cache") if t is not None else None

    def _decode_all(
        self,
        entries: list[TensorEntry],
        chains: Chains,
        bases: dict[str, tuple[str, torch.Tensor]] | None = None,
    ) -> tuple[dict[str, torch.Tensor], dict[str, int | None]]:
        """Every entry decoded (and verified) into a new host tensor, offered to the host
        cache, or where the store's rule says so into a new tensor on the loader's device
        (nvCOMP; device memory is the staging then); nothing is written anywhere else.
        ``bases``: per digest, a target tensor (only read) and the digest it holds, to decode
        against when that is a link of the chain. Also returns, per digest, the compressed
        bytes read when that happened."""
        out: dict[str, torch.Tensor] = {}
        read: dict[str, int | None] = {}
        reader = self.store.reader

        def one(e: TensorEntry) -> None:
            held = (bases or {}).get(e.digest)
            links = {r.digest for r in chains[e.digest][1:]}
            if held is not None and held[0] not in links:
                held = None  # what the target holds is no base of this chain
            if held is None and reader.decodes_on_device(self.device, e.nbytes):
                raw = reader.device.decode(chains[e.digest], self.device, self._verify)
                out[e.digest] = raw.view(dtype_info(e.dtype).torch_dtype).reshape(e.shape)
                read[e.digest] = None
                return
            t = host_empty(e.dtype, e.shape)
            base = (held[0], _bytes_of(held[1])) if held is not None else None
            read[e.digest] = self._decode_bytes(chains[e.digest], byte_view(t), base)
            out[e.digest] = t

        self._run(one, entries)
        for d, t in out.items():
            if t.device.type == "cpu":
                self._host.put(d, t)
        return out, read

    def _decode_bytes(
        self, chain: list[ObjectRecord], out: U8, held: tuple[str, U8] | None = None
    ) -> int | None:
        """Decode ``chain[0]`` into ``out`` from the nearest base at hand: ``held`` (a digest
        and the bytes a target holds, which ``out`` may be) or one in the host cache; only the
        deltas above it are read and applied, in place of replaying the chain from its root.
        Returns the compressed bytes read when the base was ``held``, else None."""
        for i in range(1, len(chain)):
            if held is not None and chain[i].digest == held[0]:
                self.store.reader.decode(chain[: i + 1], out, self._verify, base=held[1])
                return sum(r.stored_size for r in chain[:i])
            base = self._host.peek(chain[i].digest)
            if base is not None:
                self.store.reader.decode(chain[: i + 1], out, self._verify, base=byte_view(base))
                return None
        self.store.reader.decode(chain, out, self._verify)
        return None

    def _warm(self, snap: Snapshot) -> Snapshot:
        """Bring the snapshot's tensors into the host cache (and the GPU cache on a GPU)."""
        entries = _unique(list(snap.weights))
        cold = [e for e in entries if e.digest not in self._host and e.digest not in self._gpu]
        cold = [e for e in cold if self._host.fits(e.nbytes)]
        if cold:
            chains = self.store.reader.chains({e.digest for e in cold})

            def one(e: TensorEntry) -> None:
                if self._host.fits(e.nbytes):
                    t = host_empty(e.dtype, e.shape)
                    self._decode_bytes(chains[e.digest], byte_view(t))
                    self._host.put(e.digest, t)

            self._run(one, cold)
        if self._gpu.budget:
            for e in entries:
                host = self._host.peek(e.digest)
                if host is not None and e.digest not in self._gpu:
                    self._offer_gpu(e.digest, host)
        return snap

    def _admit_gpu(self, written: list[Slot]) -> None:
        """Keep a device copy of what was just written, for the next swap back to it."""
        if not self._gpu.budget:
            return
        for s in written:
            if s.entry.digest not in self._gpu:
                self._offer_gpu(s.entry.digest, s.tensor)

    def _offer_gpu(self, digest: str, src: torch.Tensor) -> None:
        size = nbytes(src)
        if not self._gpu.fits(size):
            return
        free, total = torch.cuda.mem_get_info(self.device)
        if free - size < max(_GPU_HEADROOM_MIN, int(total * _GPU_HEADROOM_FRACTION)):
            return
        copy = torch.empty(src.shape, dtype=src.dtype, device=self.device)
        self._transfer.copy(src, copy)
        self._gpu.put(digest, copy)

    # ----------------------------------------------------------------------------- helpers

    def _run(self, fn: Callable[[Any], None], items: Sequence[Any]) -> None:
        """``fn`` over ``items`` on the decoding threads; re-raise the first error after all
        have finished (none is left writing when the caller reacts)."""
        if len(items) <= 1:
            for item in items:
                fn(item)
            return
        fan_out(self._decoders, fn, items, len(items))

    def _snapshot(self, ref: str) -> Snapshot:
        """The snapshot ``ref`` names now: one query to resolve it, its manifest read once."""
        sid = self.store.resolve(ref)
        with self._state_lock:
            snap = self._snaps.get(sid)
        if snap is None:
            snap = self.store.snapshot(sid)
            with self._state_lock:
                if len(self._snaps) >= _SNAPSHOTS_KEPT:
                    self._snaps.clear()
                self._snaps[sid] = snap
        return snap

    def _note_staging(self, size: int) -> None:
        with self._state_lock:
            self._staging_peak = max(self._staging_peak, size)

    def _count_failure(self) -> None:
        with self._state_lock:
            self._failed += 1

    def _holding(self) -> str:
        snap = self._active
        return f"{snap.task} ({snap.short_id})" if snap else "what it held before"

    def _check_open(self) -> None:
        if self._closed:
            raise InvalidInput("this TaskLoader is closed")


def _bytes_of(t: torch.Tensor) -> U8:
    """A CPU tensor's elements as bytes, in order: its own memory when contiguous, else a
    contiguous copy (what its digest is taken over)."""
    return byte_view(t if t.is_contiguous() else t.contiguous())


def _unique(entries: list[TensorEntry]) -> list[TensorEntry]:
    """One entry per digest, largest first (so the long decodes start first)."""
    by_digest = {e.digest: e for e in entries}
    return sorted(by_digest.values(), key=lambda e: -e.nbytes)


def _device_of(tensors: dict[str, torch.Tensor]) -> torch.device:
    for t in tensors.values():
        return t.device
    return torch.device("cpu")


def _check_device(tensors: dict[str, torch.Tensor], device: torch.device) -> None:
    """Every target tensor must live on ``device``: the loader never moves the model."""
    for name, t in tensors.items():
        d = t.device
        if d.type != device.type or (device.index is not None and (d.index or 0) != device.index):
            raise InvalidInput(
                f"target {name!r} is on {d}, not on {device}: move the model there first "
                "(the loader copies in place and never reallocates)"
            )


__all__ = ["TaskLoader"]


def _holding(slot: Slot) -> tuple[str, int]:
    """What the slot holds once it holds its entry: the digest, at the tensor's version now."""
    return slot.entry.digest, slot.tensor._version  # noqa: SLF001 (torch's public counter)
