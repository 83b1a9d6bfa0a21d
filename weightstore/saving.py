"""Saves in the background: capture now (one copy of every tensor), store and commit later.

``save_async`` returns once the state is *captured*: each tensor copied once (from CUDA into
pinned host memory on a side stream that the caller's stream then waits for, so later kernels
cannot change a tensor before it is copied; on the CPU a plain copy), so the caller may change
the model the moment it returns. Hashing, encoding, writing and the commit then run on one
background thread, in submission order: the pending previous save of a task is the delta
parent of the next, as with ``save``. The copies are what is hashed and stored (invariant 8).

Back-pressure: at most ``max_pending`` saves are captured and not yet committed, and their
copies hold at most ``max_bytes`` (one save alone may exceed it); past either, ``save_async``
waits, and says so in the Future's ``waited_seconds``. Errors surface on the Future and again
on ``wait()`` and ``close()``; a failed save commits nothing.
"""

from __future__ import annotations

import atexit
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from typing import Any

import torch

from weightstore.errors import PendingSaveFailed
from weightstore.types import Snapshot


class SaveFuture(Future[Snapshot]):
    """The Future of a background save, with what it cost the caller."""

    def __init__(self) -> None:
        super().__init__()
        self.nbytes = 0  # bytes captured
        self.waited_seconds = 0.0  # blocked by back-pressure, before the capture
        self.capture_seconds = 0.0  # copying the tensors


class StagingPool:
    """Capture buffers kept for the next save (same shapes every checkpoint): a capture then
    writes into memory already mapped instead of faulting in fresh pages, as a plain clone does
    into memory its allocator just freed. At most ``limit`` bytes are kept."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._free: dict[tuple[torch.dtype, tuple[int, ...], bool], list[torch.Tensor]] = {}
        self._bytes = 0
        self._lock = threading.Lock()

    def take(self, shape: tuple[int, ...], dtype: torch.dtype, pinned: bool) -> torch.Tensor:
        with self._lock:
            found = self._free.get((dtype, shape, pinned))
            if found:
                t = found.pop()
                self._bytes -= t.numel() * t.element_size()
                return t
        return torch.empty(shape, dtype=dtype, pin_memory=pinned)

    def give(self, tensors: Mapping[str, Any]) -> None:
        with self._lock:
            for t in tensors.values():
                if not isinstance(t, torch.Tensor):
                    continue
                size = t.numel() * t.element_size()
                if self._bytes + size > self.limit:
                    return
                key = (t.dtype, tuple(t.shape), t.is_pinned())
                self._free.setdefault(key, []).append(t)
                self._bytes += size


def capture(
    state: Mapping[str, torch.Tensor], pool: StagingPool | None = None
) -> tuple[dict[str, torch.Tensor], Callable[[], None]]:
    """One copy of every tensor, on the host, that nothing else references, and what to call
    before reading the copies (it waits for the device-to-host copies; the caller's stream
    already waits for them, so it need not)."""
    out: dict[str, torch.Tensor] = {}
    cuda = [t for t in state.values() if isinstance(t, torch.Tensor) and t.is_cuda]
    side = None
    if cuda:
        side = torch.cuda.Stream(device=cuda[0].device)  # type: ignore[no-untyped-call]
        side.wait_stream(torch.cuda.current_stream(cuda[0].device))

    def buffer(t: torch.Tensor, pinned: bool) -> torch.Tensor:
        shape = tuple(t.shape)
        if pool is not None:
            return pool.take(shape, t.dtype, pinned)
        return torch.empty(shape, dtype=t.dtype, pin_memory=pinned)

    for name, t in state.items():
        if not isinstance(t, torch.Tensor):
            out[name] = t  # the writer refuses it with the usual message
        elif t.is_cuda and side is not None:
            with torch.cuda.stream(side):
                host = buffer(t, pinned=True)
                host.copy_(t.detach(), non_blocking=True)
            t.record_stream(side)
            out[name] = host
        else:
            out[name] = buffer(t, pinned=False).copy_(t.detach())
    if side is None:
        return out, lambda: None
    done = side.record_event()
    torch.cuda.current_stream(cuda[0].device).wait_event(done)
    return out, done.synchronize


class BackgroundSaver:
    """One background thread committing captured saves in order (see the module docstring)."""

    def __init__(self, max_pending: int = 2, max_bytes: int = 8 << 30) -> None:
        if max_pending < 1:
            raise ValueError("max_pending must be at least 1")
        self.max_pending = max_pending
        self.max_bytes = max_bytes
        self._cond = threading.Condition()
        self._queue: list[tuple[SaveFuture, Callable[[], Snapshot]]] = []
        self._pending = 0
        self._pending_bytes = 0
        self.peak_bytes = 0
        self._failed: list[BaseException] = []
        self._thread: threading.Thread | None = None
        self._closed = False
        self._pool = StagingPool(max_bytes)

    def submit(
        self, state: Mapping[str, Any], commit: Callable[[Mapping[str, Any]], Snapshot]
    ) -> SaveFuture:
        """Wait for room, capture ``state`` here and queue ``commit`` of the copies."""
        nbytes = nbytes_of(state)
        fut = SaveFuture()
        fut.nbytes = nbytes
        began = time.perf_counter()
        with self._cond:
            if self._closed:
                raise RuntimeError("the store is closed")
            while self._pending and (
                self._pending >= self.max_pending or self._pending_bytes + nbytes > self.max_bytes
            ):
                self._cond.wait()
            self._pending += 1
            self._pending_bytes += nbytes
            self.peak_bytes = max(self.peak_bytes, self._pending_bytes)
        fut.waited_seconds = time.perf_counter() - began
        try:
            copies, ready = capture(state, self._pool)
        except BaseException:
            self._release(nbytes)
            raise
        fut.capture_seconds = time.perf_counter() - began - fut.waited_seconds

        def work() -> Snapshot:
            ready()
            try:
                return commit(copies)
            finally:
                self._pool.give(copies)

        with self._cond:
            self._queue.append((fut, work))
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="weightstore-saver", daemon=True
                )
                self._thread.start()
                # A script that ends without wait() or close() still commits what it queued.
                # threading's exit hooks run before concurrent.futures refuses new work at
                # shutdown (the writer's pool needs it), and in reverse order of registration.
                register = getattr(threading, "_register_atexit", atexit.register)
                register(_drain_at_exit, weakref.ref(self))
            self._cond.notify_all()
        return fut

    def _release(self, nbytes: int) -> None:
        with self._cond:
            self._pending -= 1
            self._pending_bytes -= nbytes
            self._cond.notify_all()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closed:
                    self._cond.wait()
                if not self._queue:
                    return
                fut, work = self._queue.pop(0)
            try:
                if fut.set_running_or_notify_cancel():
                    try:
                        fut.set_result(work())
                    except BaseException as e:
                        with self._cond:
                            self._failed.append(e)
                        fut.set_exception(e)
            finally:
                del work  # drop the captured copies before taking the next save
                self._release(fut.nbytes)

    def wait(self) -> None:
        """Wait for every pending save; :class:`PendingSaveFailed` if any failed since the last
        ``wait`` (the first failure is its cause)."""
        with self._cond:
            while self._pending:
                self._cond.wait()
            failed, self._failed = self._failed, []
        if failed:
            raise PendingSaveFailed(
                f"{len(failed)} background save(s) failed; the first: "
                f"{type(failed[0]).__name__}: {failed[0]}"
            ) from failed[0]

    def close(self) -> None:
        """Wait for every pending save and stop the thread (raises as ``wait``)."""
        try:
            self.wait()
        finally:
            with self._cond:
                self._closed = True
                self._cond.notify_all()
                thread = self._thread
            if thread is not None:
                thread.join()


def _drain_at_exit(saver: weakref.ref[BackgroundSaver]) -> None:
    found = saver()
    if found is not None and not found._closed:  # noqa: SLF001 (its own module)
        found.close()


def nbytes_of(state: Mapping[str, Any]) -> int:
    """Bytes a capture of ``state`` will hold."""
    return sum(t.numel() * t.element_size() for t in state.values() if isinstance(t, torch.Tensor))
