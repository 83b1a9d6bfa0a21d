"""The one reader: delta chains from a chain source (a local store's index and blobs, or a
service's objects through a local cache), decoded onto a device (CPU memory, or a GPU through
the transfer layer's pinned staging and streams).

The one verification rule (docs/design.md, "Verification"): every path that hands tensor bytes
to a user (restore, export, the loader, the service) reads through :meth:`ObjectReader.read` or
:meth:`ObjectReader.tensor`, which re-derive each object's digest from the decoded bytes unless
the store was opened with ``verify_reads=False``. Headers, frame tables and chain links are
checked always. Internal reads that feed new objects (delta bases) are always verified.
"""

from __future__ import annotations

import threading
from collections.abc import Collection, Sequence
from typing import TYPE_CHECKING

from weightstore.codec import Codec
from weightstore.codec.devhash import devhash
from weightstore.codec.layout import U8
from weightstore.dtypes import dtype_info
from weightstore.errors import CorruptObject, InvalidInput
from weightstore.ports import ChainSource
from weightstore.settings import DeviceDecode
from weightstore.types import ObjectRecord, TensorEntry

if TYPE_CHECKING:  # torch is imported where a tensor is made: byte-level reads never need it
    import torch

    from weightstore.read.device import DeviceApplier
    from weightstore.transfer import Transfer


class ObjectReader:
    """Decodes stored objects from ``source``; safe to use from many threads."""

    def __init__(
        self,
        source: ChainSource,
        codec: Codec,
        *,
        verify: bool = True,
        device_decode: DeviceDecode = "auto",
        device_decode_min_bytes: int = 4 << 20,
    ) -> None:
        self.source = source
        self.codec = codec
        self.verify = verify  # the store's rule for bytes handed out
        self.device_decode = device_decode  # StoreSettings.device_decode
        self.device_decode_min_bytes = device_decode_min_bytes
        self._transfer: Transfer | None = None
        self._transfer_lock = threading.Lock()
        self._device: DeviceApplier | None = None

    @property
    def transfer(self) -> Transfer:
        """Pinned staging buffers and CUDA streams, per thread (made on first use)."""
        with self._transfer_lock:
            if self._transfer is None:
                from weightstore.transfer import Transfer

                self._transfer = Transfer()
            return self._transfer

    @property
    def device(self) -> DeviceApplier:
        """Deltas applied to tensors where they live, checked there (``read/device.py``)."""
        with self._transfer_lock:
            if self._device is None:
                from weightstore.read.device import DeviceApplier

                self._device = DeviceApplier(self.source)
            return self._device

    def decodes_on_device(self, dev: torch.device, nbytes: int) -> bool:
        """Whether a tensor of ``nbytes`` bound for ``dev`` is decoded there by torch ops (and
        nvCOMP on CUDA) rather than by the CPU codec (``StoreSettings.device_decode``)."""
        if nbytes == 0 or self.device_decode == "never":
            return False
        if self.device_decode == "always":
            return True
        if dev.type != "cuda" or nbytes < self.device_decode_min_bytes:
            return False
        from weightstore.torchcodec.gpu import nvcomp_available

        return nvcomp_available() is not None

    def chains(self, digests: Collection[str]) -> dict[str, list[ObjectRecord]]:
        """Every digest's delta chain (itself first, root last), resolved for all at once."""
        return self.source.chains(digests)

    def decode(
        self,
        chain: Sequence[ObjectRecord],
        out: U8 | None = None,
        verify: bool = False,
        *,
        base: U8 | None = None,
    ) -> U8:
        """The raw bytes of ``chain[0]`` (into ``out`` when given); ``verify`` re-derives the
        digest.

        With ``base`` (the raw bytes of ``chain[-1]``, held by the caller, e.g. a cached
        tensor), only the links above it are fetched and applied to ``base`` in place of
        replaying the rest of the chain; ``chain[-1]``'s digest is checked against the last
        delta's base."""
        if base is None:
            links = chain
        elif len(chain) < 2:
            raise InvalidInput("a held base needs at least one delta above it")
        else:
            links = chain[:-1]
        names = [r.digest for r in chain]
        for attempt in (0, 1):
            blobs = [self.source.blob(r.digest) for r in links]
            try:
                if verify:
                    return self.codec.decode_verified(blobs, names, out, base=base)
                return self.codec.decode(blobs, names, out, base=base)
            except CorruptObject:
                # A damaged cached copy (remote sources) is dropped and fetched once more;
                # a damaged stored object is an error at once.
                if attempt or not self.source.forget([r.digest for r in links]):
                    raise
        raise AssertionError("unreachable")

    def decode_incoming(self, digest: str, blob: bytes, chain: Sequence[ObjectRecord]) -> int:
        """Decode a received object ``blob`` (over its base's ``chain``, stored here; empty
        for an object that is no delta) and check that it hashes to ``digest``: how an object
        from elsewhere earns a place. Returns the device checksum of its raw bytes (computed
        here from what was verified, never taken from the sender)."""
        blobs = [blob, *(self.source.blob(r.digest) for r in chain)]
        return devhash(self.codec.decode_verified(blobs, [digest, *(r.digest for r in chain)]))

    def read(
        self,
        entry: TensorEntry,
        chain: Sequence[ObjectRecord],
        verify: bool | None = None,
        out: U8 | None = None,
    ) -> U8:
        """The raw bytes of ``entry`` for handing out, checked by the rule (or ``verify``)."""
        _check_entry(entry, chain)
        try:
            return self.decode(chain, out, self.verify if verify is None else verify)
        except CorruptObject as e:
            if e.tensor is not None:
                raise
            raise _naming(entry, e) from e

    def tensor(
        self,
        entry: TensorEntry,
        chain: Sequence[ObjectRecord],
        dev: torch.device,
        verify: bool | None = None,
        into: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Decode one tensor onto ``dev``, into ``into`` (a tensor of the entry's dtype and
        shape on ``dev``) when given, else into a new tensor.

        A contiguous CPU target takes the bytes directly. For a GPU the bytes are decoded into
        this thread's pinned staging buffer and copied on its own stream (``Transfer.upload``).
        """
        import torch

        from weightstore.tensors import byte_view, empty_tensor

        if self.decodes_on_device(dev, entry.nbytes):
            return self._on_device(entry, chain, dev, verify, into)
        if dev.type != "cuda":
            if into is not None and into.device.type == "cpu" and into.is_contiguous():
                self.read(entry, chain, verify, byte_view(into))
                return into
            t = empty_tensor(entry.dtype, entry.shape)
            self.read(entry, chain, verify, byte_view(t))
            if into is not None:
                return into.copy_(t)
            return t.to(dev) if dev.type != "cpu" else t
        out = into
        if out is None or not out.is_contiguous():
            out = torch.empty(entry.shape, dtype=dtype_info(entry.dtype).torch_dtype, device=dev)
        self.transfer.upload(lambda buf: self.read(entry, chain, verify, buf), entry.nbytes, out)
        if into is not None and out is not into:
            into.copy_(out)
        return out if into is None else into

    def _on_device(
        self,
        entry: TensorEntry,
        chain: Sequence[ObjectRecord],
        dev: torch.device,
        verify: bool | None,
        into: torch.Tensor | None,
    ) -> torch.Tensor:
        """``tensor()`` decoded where it goes (``read/device.py``), checked there by the rule."""
        _check_entry(entry, chain)
        try:
            raw = self.device.decode(chain, dev, self.verify if verify is None else verify)
        except CorruptObject as e:
            if e.tensor is not None:
                raise
            raise _naming(entry, e) from e
        out = raw.view(dtype_info(entry.dtype).torch_dtype).reshape(entry.shape)
        if into is not None:
            return into.copy_(out)
        return out


def _check_entry(entry: TensorEntry, chain: Sequence[ObjectRecord]) -> None:
    """The index's row for the tensor's object must be that object, of the tensor's size."""
    if chain[0].digest != entry.digest or chain[0].raw_size != entry.nbytes:
        raise CorruptObject(
            f"{entry.name!r}: the index names object {chain[0].digest} of "
            f"{chain[0].raw_size} bytes for a tensor of {entry.nbytes} bytes"
        )


def _naming(entry: TensorEntry, e: CorruptObject) -> CorruptObject:
    """``e`` naming the tensor it was found in."""
    found = CorruptObject(f"tensor {entry.name!r} cannot be read: {e}")
    found.tensor, found.digest = entry.name, entry.digest
    return found
