"""Per-thread pinned staging buffers and per-thread CUDA streams.

Bytes bound for a GPU are produced on the host (decoded, or read from a host cache) into a
pinned buffer and copied on a side stream: pinned memory moves ~7x faster than pageable, a
buffer reused per thread avoids a slow pinned allocation per tensor, and one stream per thread
lets many decoding threads overlap their copies. On a machine without CUDA everything here
still works: ``host_empty`` returns ordinary memory and ``upload`` copies synchronously.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Executor

import numpy as np
import torch

from weightstore.codec.layout import U8
from weightstore.dtypes import dtype_info
from weightstore.tensors import byte_view, empty_tensor


def host_empty(dtype: str, shape: tuple[int, ...]) -> torch.Tensor:
    """A contiguous host tensor to decode into: pinned (page-locked) when CUDA is there, else
    ordinary memory allocated the fast way (``empty_tensor``)."""
    if not torch.cuda.is_available():
        return empty_tensor(dtype, shape)
    return torch.empty(shape, dtype=dtype_info(dtype).torch_dtype, pin_memory=True)


class Transfer:
    """Staging buffers and streams, one set per thread; safe to share between threads."""

    def __init__(self) -> None:
        self._local = threading.local()

    def staging(self, nbytes: int) -> torch.Tensor:
        """This thread's pinned uint8 buffer of at least ``nbytes`` (grown by 1.25x steps, so a
        run of growing tensors does not reallocate each time)."""
        buf: torch.Tensor | None = getattr(self._local, "staging", None)
        if buf is None or buf.numel() < nbytes:
            size = max(nbytes, buf.numel() * 5 // 4 if buf is not None else 0)
            buf = self._local.staging = torch.empty(size, dtype=torch.uint8, pin_memory=True)
        return buf[:nbytes]

    def stream(self, dev: torch.device) -> torch.cuda.Stream:
        """This thread's side stream on ``dev``."""
        streams: dict[torch.device, torch.cuda.Stream] = self._local.__dict__.setdefault(
            "streams", {}
        )
        stream = streams.get(dev)
        if stream is None:
            stream = streams[dev] = torch.cuda.Stream(device=dev)  # type: ignore[no-untyped-call]
        return stream

    def upload(self, fill: Callable[[U8], object], nbytes: int, out: torch.Tensor) -> None:
        """Have ``fill`` write ``nbytes`` into this thread's staging buffer, then copy them
        into ``out`` (a contiguous CUDA tensor of that many bytes) on this thread's stream;
        returns once the copy is done, since the buffer is reused by the next call."""
        if nbytes == 0:
            return
        view = self.staging(nbytes)
        fill(byte_view(view))
        self.copy(view, out.reshape(-1).view(torch.uint8))

    def copy(self, src: torch.Tensor, dst: torch.Tensor) -> None:
        """``dst.copy_(src)``, on this thread's side stream when a GPU is involved."""
        copy_all([(src, dst)], self)


def host_copy(src: torch.Tensor, dst: torch.Tensor) -> None:
    """``dst.copy_(src)`` for host tensors, as one plain memcpy (numpy's, without the GIL) when
    both are contiguous: torch splits copies across its intra-op threads, which on a busy
    machine wait for each other (measured: 60 copies of 2.4 MB, 2 loaded cores, 482 ms with
    ``copy_`` vs 31 ms with ``np.copyto``)."""
    if src.is_contiguous() and dst.is_contiguous() and dst.numel() and src.dtype == dst.dtype:
        np.copyto(byte_view(dst), byte_view(src))
    else:
        dst.copy_(src)


def copy_all(
    pairs: list[tuple[torch.Tensor, torch.Tensor]],
    transfer: Transfer,
    pool: Executor | None = None,
    parts: int = 1,
) -> None:
    """``dst.copy_(src)`` for every ``(src, dst)`` pair. Copies that touch a GPU are all queued
    on this thread's side stream (from pinned memory they run asynchronously and overlap each
    other) and waited for once at the end; host copies are split into ``parts`` groups of
    about equal bytes run on ``pool`` (memory bandwidth grows with cores)."""
    streams: dict[torch.device, torch.cuda.Stream] = {}
    host: list[tuple[torch.Tensor, torch.Tensor]] = []
    for src, dst in pairs:
        dev = dst.device if dst.device.type == "cuda" else src.device
        if dev.type != "cuda":
            host.append((src, dst))
            continue
        stream = streams.get(dev)
        if stream is None:
            stream = streams[dev] = transfer.stream(dev)
            stream.wait_stream(torch.cuda.current_stream(dev))
        with torch.cuda.stream(stream):
            dst.copy_(src, non_blocking=True)
    groups = _balanced(host, parts if pool is not None else 1)
    if pool is not None and len(groups) > 1:
        for f in [pool.submit(_copy_group, g) for g in groups]:
            f.result()
    else:
        for g in groups:
            _copy_group(g)
    for stream in streams.values():
        stream.synchronize()


def _copy_group(group: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
    for src, dst in group:
        host_copy(src, dst)


def _balanced(
    pairs: list[tuple[torch.Tensor, torch.Tensor]], parts: int
) -> list[list[tuple[torch.Tensor, torch.Tensor]]]:
    """``pairs`` in at most ``parts`` non-empty groups of about equal bytes (largest first,
    each to the lightest group)."""
    groups: list[list[tuple[torch.Tensor, torch.Tensor]]] = [[] for _ in range(max(1, parts))]
    load = [0] * len(groups)
    for pair in sorted(pairs, key=lambda p: -p[1].numel() * p[1].element_size()):
        i = load.index(min(load))
        groups[i].append(pair)
        load[i] += pair[1].numel() * pair[1].element_size()
    return [g for g in groups if g]
