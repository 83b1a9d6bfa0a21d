"""Objects decoded on a device: each level's frames are shipped in one host-to-device copy,
decompressed in one batched call, un-grouped and combined with torch ops on the device,
against the chain's root or against a base tensor already resident there.

Frames are decompressed into slots of ``frame_size`` bytes: plane ``p``'s frame ``b`` goes to
slot ``p * per_plane + b``, so the slots viewed as ``(k, per_plane * frame_size)`` hold each
plane in the first ``plane_len`` bytes of its row, with every destination 16-byte aligned when
the frame size is (64 KiB by default), as nvCOMP wants. The batched decompressor is pluggable:
nvCOMP on CUDA (``weightstore[gpu]``, imported only when one is made; without it the frames
are decompressed on the host, :func:`via_host`), python-zstandard for CPU tensors, so the
whole pipeline is also tested where there is no GPU.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import zstandard as zstd

from weightstore.codec.format import RAW_FRAME, Header, read_chain
from weightstore.errors import CorruptObject, InvalidInput
from weightstore.torchcodec.ops import add_into, ungroup, xor_into

_ALIGN = 16


@dataclass(frozen=True)
class FrameBatch:
    """Compressed frames at ``src_offsets`` of ``src`` to be decompressed into exactly
    ``dst_sizes`` bytes at ``dst_offsets`` of ``dst`` (both uint8 tensors on one device)."""

    src: torch.Tensor
    src_offsets: list[int]
    src_sizes: list[int]
    dst: torch.Tensor
    dst_offsets: list[int]
    dst_sizes: list[int]
    name: str


BatchDecompress = Callable[[FrameBatch], None]


def host_decompress(batch: FrameBatch) -> None:
    """Decompress a batch of CPU tensors with python-zstandard (the stand-in for nvCOMP)."""
    src, dst = batch.src.numpy(), batch.dst.numpy()
    dctx = zstd.ZstdDecompressor()
    for at, size, to, n in zip(
        batch.src_offsets, batch.src_sizes, batch.dst_offsets, batch.dst_sizes, strict=True
    ):
        try:
            data = dctx.decompress(src[at : at + size].tobytes(), max_output_size=n)
        except zstd.ZstdError as e:
            raise CorruptObject(f"{batch.name}: a frame does not decompress: {e}") from e
        if len(data) != n:
            raise CorruptObject(f"{batch.name}: a frame decoded to {len(data)} bytes, not {n}")
        dst[to : to + n] = np.frombuffer(data, dtype=np.uint8)


def via_host(batch: FrameBatch) -> None:
    """The stand-in for nvCOMP on a GPU without it: the frames come back to the host, are
    decompressed by python-zstandard and go back to the device (the same plan, two more
    copies), so a delta is still applied where the tensor lives."""
    host_dst = batch.dst.to("cpu", copy=True)  # it holds the stored frames already
    host_decompress(dataclasses.replace(batch, src=batch.src.cpu(), dst=host_dst))
    batch.dst.copy_(host_dst)


class NvcompDecompress:
    """nvCOMP's batched zstd on a CUDA device (``pip install weightstore[gpu]``).

    Uses the calls measured on an H200 (issue 6): ``nvcomp.Codec(algorithm="Zstd",
    bitstream_kind=RAW)``, ``as_arrays(buffer, offsets, sizes)`` and
    ``codec.decode(src, out=dst)``; nvCOMP decodes python-zstandard's frames bit-exactly.
    """

    def __init__(self, device: torch.device) -> None:
        from nvidia import nvcomp  # optional: imported only when a GPU decoder is made

        self._nvcomp: Any = nvcomp
        self._codec = nvcomp.Codec(
            algorithm="Zstd",
            bitstream_kind=nvcomp.BitstreamKind.RAW,
            device_id=device.index or 0,
            cuda_stream=torch.cuda.current_stream(device).cuda_stream,
        )

    def __call__(self, batch: FrameBatch) -> None:
        nv = self._nvcomp
        src = nv.as_arrays(batch.src, batch.src_offsets, batch.src_sizes)
        dst = nv.as_arrays(batch.dst, batch.dst_offsets, batch.dst_sizes)
        try:
            self._codec.decode(src, out=dst)
        except RuntimeError as e:  # nvCOMP reports a bad frame as a RuntimeError
            raise CorruptObject(f"{batch.name}: a frame does not decompress: {e}") from e


def _apply(acc: torch.Tensor, h: Header, level: torch.Tensor) -> None:
    if h.encoding == "sub":
        add_into(acc, level, h.layout.elem_size)
    else:
        xor_into(acc, level)


@functools.cache
def nvcomp_available() -> str | None:
    """nvCOMP's version when its Python package is installed, else None (asked once: the
    reader asks per tensor bound for a GPU, and a failed import searches sys.path each time)."""
    try:
        from nvidia import nvcomp
    except ImportError:
        return None
    return str(getattr(nvcomp, "__version__", "unknown"))


class DeviceDecoder:
    """Decodes objects into uint8 tensors on ``device``; one per thread (nvCOMP codecs are
    not thread-safe)."""

    def __init__(self, device: torch.device | str, decompress: BatchDecompress | None = None):
        self.device = torch.device(device)
        if decompress is None:
            if self.device.type != "cuda":
                decompress = host_decompress
            elif nvcomp_available() is None:
                decompress = via_host
            else:
                decompress = NvcompDecompress(self.device)
        self._decompress = decompress

    def decode(
        self,
        chain: Sequence[bytes | memoryview],
        names: Sequence[str] = (),
        base: torch.Tensor | None = None,
        *,
        in_place: bool = False,
    ) -> torch.Tensor:
        """The raw bytes of ``chain[0]`` as a uint8 tensor on the device.

        Without ``base`` the chain ends with its root, as for ``Codec.decode``. With ``base``
        (the raw bytes of the last link's base, on the device: a cached tensor) every link is
        a delta and is applied to a copy of it, so a cached base is never decoded again; with
        ``in_place`` to ``base`` itself (a flat uint8 view of a target tensor), every link
        decompressed first, so a link that does not decode leaves ``base`` as it was.
        """
        headers, labels = read_chain(chain, names, rooted=base is None)
        raw_len = headers[0].raw_len
        if base is None:
            acc = self._root(headers[-1], chain[-1], labels[-1])
            deltas = range(len(chain) - 2, -1, -1)
        else:
            if in_place and not base.is_contiguous():
                raise InvalidInput("an in-place base must be a contiguous tensor")
            flat = base.reshape(-1).view(torch.uint8)
            if flat.numel() != raw_len or flat.device != self.device:
                raise InvalidInput(f"the base holds {flat.numel()} bytes on {flat.device}")
            acc = flat if in_place else flat.clone()
            deltas = range(len(chain) - 1, -1, -1)
        pending: list[tuple[Header, torch.Tensor]] = []  # in place: applied once all decode
        for i in deltas:
            h = headers[i]
            k = h.layout.elem_size
            if h.encoding == "sub" and (h.layout.rotate or k == 1):
                raise CorruptObject(f"{labels[i]}: invalid layout for an arithmetic delta")
            pending.append((h, ungroup(self._planes(h, chain[i], labels[i]), k, h.layout.rotate)))
            if not in_place:
                _apply(acc, *pending.pop())
        for h, level in pending:
            _apply(acc, h, level)
        return acc

    def _root(self, h: Header, blob: bytes | memoryview, name: str) -> torch.Tensor:
        if h.encoding == "raw":
            payload = np.frombuffer(blob, dtype=np.uint8)[h.payload_offset :]
            return self._ship(payload)
        return ungroup(self._planes(h, blob, name), h.layout.elem_size, h.layout.rotate)

    def _ship(self, host: np.ndarray) -> torch.Tensor:
        """One copy of host bytes to the device (through pinned memory on CUDA)."""
        staging = self._staging(host.size)
        staging.numpy()[:] = host  # numpy copies from read-only blobs; torch would warn
        return self._to_device(staging)

    def _staging(self, size: int) -> torch.Tensor:
        """A host buffer to fill for one copy to the device: pinned for a GPU."""
        return torch.empty(size, dtype=torch.uint8, pin_memory=self.device.type == "cuda")

    def _to_device(self, staging: torch.Tensor) -> torch.Tensor:
        if self.device.type == "cpu":
            return staging
        return staging.to(self.device, non_blocking=True)

    def _planes(self, h: Header, blob: bytes | memoryview, name: str) -> torch.Tensor:
        """A framed object's planes on the device, ``(k, plane_len)``."""
        k, size = h.layout.elem_size, h.frame_size
        plane_len = h.raw_len // k
        per_plane = -(-plane_len // size) if plane_len else 0
        payload = np.frombuffer(blob, dtype=np.uint8)[h.payload_offset :]
        entries = np.array(h.frames, dtype=np.uint64)
        sizes = entries & ~np.uint64(RAW_FRAME)
        stored = np.zeros(len(entries) + 1, dtype=np.uint64)
        np.cumsum(sizes, out=stored[1:])
        packed = (entries & np.uint64(RAW_FRAME)) == 0
        # Uncompressed length of every frame: full frames, the last of each plane shorter.
        grid = np.full((k, per_plane), size, dtype=np.uint64)
        if per_plane:
            grid[:, -1] = plane_len - (per_plane - 1) * size
        lengths = grid.reshape(-1)
        if not np.array_equal(sizes[~packed], lengths[~packed]):
            raise CorruptObject(f"{name}: a stored frame is not its frame's length")
        # Staging: compressed frames first (each 16-byte aligned), stored frames after them.
        aligned = (sizes + np.uint64(_ALIGN - 1)) // np.uint64(_ALIGN) * np.uint64(_ALIGN)
        at = np.zeros(len(entries), dtype=np.uint64)
        comp_total = int(aligned[packed].sum())
        at[packed] = np.cumsum(aligned[packed]) - aligned[packed]
        at[~packed] = comp_total + np.cumsum(sizes[~packed]) - sizes[~packed]
        staging = self._staging(comp_total + int(sizes[~packed].sum()))
        host = staging.numpy()
        for f in range(len(entries)):
            n, a, s = int(sizes[f]), int(at[f]), int(stored[f])
            host[a : a + n] = payload[s : s + n]
        staged = self._to_device(staging)
        slots = torch.empty(k * per_plane * size, dtype=torch.uint8, device=self.device)
        dst = np.arange(len(entries), dtype=np.uint64) * np.uint64(size)
        # Stored frames: a run of consecutive ones is contiguous in staging, and in the slots
        # too unless it crosses a plane's short last frame.
        runs: list[list[int]] = []
        for f in np.flatnonzero(~packed).tolist():
            if runs and runs[-1][1] == f and lengths[f - 1] == size:
                runs[-1][1] = f + 1
            else:
                runs.append([f, f + 1])
        for first, stop in runs:
            a, d, n = int(at[first]), int(dst[first]), int(sizes[first:stop].sum())
            slots[d : d + n].copy_(staged[a : a + n])
        idx = np.flatnonzero(packed)
        if idx.size:
            self._decompress(
                FrameBatch(
                    staged,
                    at[idx].tolist(),
                    sizes[idx].tolist(),
                    slots,
                    dst[idx].tolist(),
                    lengths[idx].tolist(),
                    name,
                )
            )
        return slots.view(k, per_plane * size)[:, :plane_len]
