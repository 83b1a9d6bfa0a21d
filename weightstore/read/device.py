"""Deltas applied where a target tensor lives (issue 18): the compressed links above the
object a tensor holds are decompressed by ``torchcodec`` (nvCOMP on CUDA, python-zstandard
elsewhere), applied to the tensor's own bytes with torch ops, and checked there by the device
checksum, so neither the tensor nor its base crosses to the host.

Check rule (docs/design.md, "Verification"): after an apply the tensor's device checksum must
equal the one recorded for the object (``ObjectRecord.device_checksum``); an object recorded
before that column existed is checked by BLAKE3 on a host copy instead. A failed check raises
:class:`CorruptObject`, and the caller puts the tensor back (:meth:`DeviceApplier.put_back`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import TypeVar

import torch

from weightstore.codec.digest import digest
from weightstore.errors import CorruptObject, InvalidInput
from weightstore.ports import ChainSource
from weightstore.torchcodec.devhash import devhash_tensor
from weightstore.torchcodec.gpu import DeviceDecoder
from weightstore.types import ObjectRecord

T = TypeVar("T")


def flat_bytes(t: torch.Tensor) -> torch.Tensor:
    """A contiguous tensor's memory as a flat uint8 view (no copy)."""
    if not t.is_contiguous():
        raise InvalidInput("deltas are applied in place to contiguous tensors only")
    return t.detach().reshape(-1).view(torch.uint8) if t.numel() else t.new_empty(0).byte()


class DeviceApplier:
    """Applies and checks deltas on any device; safe to use from many threads (a decoder per
    thread and device: nvCOMP codecs are not thread-safe)."""

    def __init__(self, source: ChainSource) -> None:
        self.source = source
        self._local = threading.local()

    def apply(self, chain: Sequence[ObjectRecord], held: int, target: torch.Tensor) -> int:
        """Turn ``target``, which holds ``chain[held]``, into ``chain[0]`` by applying the
        links above it in place; return their compressed size. Unchecked: see :meth:`check`.
        A link that does not decode raises before ``target`` changes."""
        if held < 1:
            raise InvalidInput("the held object must be a base of the chain")
        names = [r.digest for r in chain[: held + 1]]
        flat, decoder = flat_bytes(target), self._decoder(target.device)
        # A link that does not decode applied nothing, so it may be fetched again.
        self._refetching(
            names[:-1], lambda blobs: decoder.decode(blobs, names, flat, in_place=True)
        )
        return sum(r.stored_size for r in chain[:held])

    def check(self, record: ObjectRecord, target: torch.Tensor) -> None:
        """:class:`CorruptObject` unless ``target`` holds ``record``'s bytes (the rule above)."""
        flat = flat_bytes(target)
        if record.device_checksum is not None:
            got = devhash_tensor(flat)
            if got != record.device_checksum:
                raise CorruptObject(
                    f"{record.digest}: device checksum {got:#x} after applying its delta, "
                    f"recorded {record.device_checksum:#x}"
                )
            return
        host = flat.cpu().numpy() if flat.device.type != "cpu" else flat.numpy()
        got_digest = digest(host.data)
        if got_digest != record.digest:
            raise CorruptObject(f"{record.digest}: decoded bytes have digest {got_digest}")

    def decode(
        self, chain: Sequence[ObjectRecord], device: torch.device, verify: bool = True
    ) -> torch.Tensor:
        """``chain[0]``'s raw bytes decoded from its whole chain on ``device`` (a new uint8
        tensor), checked unless ``verify`` is False. A damaged cached copy (remote sources)
        is dropped and fetched once more, as the CPU reader does."""
        digests, decoder = [r.digest for r in chain], self._decoder(device)

        def decode(blobs: list[bytes | memoryview]) -> torch.Tensor:
            raw = decoder.decode(blobs, digests)
            if verify:
                self.check(chain[0], raw)
            return raw

        return self._refetching(digests, decode)

    def _refetching(self, digests: list[str], use: Callable[[list[bytes | memoryview]], T]) -> T:
        """``use`` the blobs of ``digests``; on :class:`CorruptObject`, once more after the
        source dropped its cached copies (remote sources), as the CPU reader does."""
        for attempt in (0, 1):
            try:
                return use([self.source.blob(d) for d in digests])
            except CorruptObject:
                if attempt or not self.source.forget(digests):
                    raise
        raise AssertionError("unreachable")

    def put_back(self, chain: Sequence[ObjectRecord], target: torch.Tensor) -> None:
        """Make ``target`` hold ``chain[0]`` again, decoded from its whole chain on the
        target's device and checked before it is copied over the target."""
        flat_bytes(target).copy_(self.decode(chain, target.device))

    def _decoder(self, device: torch.device) -> DeviceDecoder:
        decoders: dict[torch.device, DeviceDecoder] | None = getattr(self._local, "d", None)
        if decoders is None:
            decoders = self._local.d = {}
        dec = decoders.get(device)
        if dec is None:
            dec = decoders[device] = DeviceDecoder(device)
        return dec
