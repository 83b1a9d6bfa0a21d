"""The self-describing object header.

Layout (little-endian), then ``n_frames`` u32 frame lengths, then the frames back to back::

    magic      4s   b"WSOB"
    version    u8   1
    encoding   u8   0 raw, 1 plain, 2 delta (XOR), 3 sub (arithmetic delta of floats)
    elem_size  u8   byte-grouping element size (1, 2, 4, 8)
    flags      u8   bit 0: floats rotated (sign moved below the exponent)
    raw_len    u64  length of the object's raw bytes
    frame_size u32  uncompressed bytes per frame (the last frame of each plane may be shorter)
    n_frames   u32
    base       32s  raw digest of the delta base (zeros unless a delta encoding)
    crc32      u32  CRC-32 of everything above (with this field zero) and of the frame table

A frame length with the top bit set marks a frame stored uncompressed (zstd would not shrink it).
Raw objects have no frames: the payload is the raw bytes.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

from weightstore.codec.layout import Layout
from weightstore.errors import CorruptObject, InvalidInput
from weightstore.types import ENCODINGS, Encoding

MAGIC = b"WSOB"
VERSION = 1
DELTAS: tuple[Encoding, ...] = ("delta", "sub")
RAW_FRAME = 0x8000_0000
_HEAD = struct.Struct("<4sBBBBQII32sI")
HEADER_SIZE = _HEAD.size


@dataclass(frozen=True)
class Header:
    """Parsed object header; ``payload_offset`` is where the frames start in the blob."""

    encoding: Encoding
    layout: Layout
    raw_len: int
    frame_size: int
    base: str | None
    frames: tuple[int, ...]
    payload_offset: int

    def frame_plan(self) -> list[tuple[int, int]]:
        """Uncompressed (offset, length) of every frame in the plane-major buffer."""
        k = self.layout.elem_size
        plane = self.raw_len // k
        plan = []
        for p in range(k):
            for off in range(0, plane, self.frame_size):
                plan.append((p * plane + off, min(self.frame_size, plane - off)))
        return plan


def frame_plan(raw_len: int, layout: Layout, frame_size: int) -> list[tuple[int, int]]:
    """Uncompressed (offset, length) of every frame an object of ``raw_len`` bytes is cut into."""
    return Header("plain", layout, raw_len, frame_size, None, (), 0).frame_plan()


def pack_header(
    encoding: str,
    layout: Layout,
    raw_len: int,
    frame_size: int,
    base: str | None,
    frames: list[int],
) -> bytes:
    """Serialise a header and frame table."""
    base_raw = bytes.fromhex(base) if base else bytes(32)
    fields = (
        MAGIC,
        VERSION,
        ENCODINGS.index(encoding),
        layout.elem_size,
        int(layout.rotate),
        raw_len,
        frame_size,
        len(frames),
        base_raw,
    )
    table = struct.pack(f"<{len(frames)}I", *frames)
    crc = zlib.crc32(_HEAD.pack(*fields, 0) + table)
    return _HEAD.pack(*fields, crc) + table


def read_header(blob: bytes | memoryview, name: str = "object", *, whole: bool = True) -> Header:
    """Parse and check the header of ``blob``; raise :class:`CorruptObject` if it is damaged.

    ``whole=False``: ``blob`` is only the start of the object (at least the header and frame
    table, see :func:`header_length`); the payload's length is then not checked.
    """
    if len(blob) < HEADER_SIZE:
        raise CorruptObject(f"{name}: {len(blob)} bytes is too short for an object header")
    magic, version, enc, k, flags, raw_len, frame_size, n_frames, base_raw, crc = _HEAD.unpack_from(
        blob
    )
    if magic != MAGIC:
        raise CorruptObject(f"{name}: not a weightstore object (bad magic {magic!r})")
    if version != VERSION:
        raise CorruptObject(
            f"{name}: object format version {version}, this weightstore reads {VERSION}: upgrade"
        )
    end = HEADER_SIZE + 4 * n_frames
    if len(blob) < end:
        raise CorruptObject(f"{name}: truncated frame table")
    table = bytes(blob[HEADER_SIZE:end])
    head = bytearray(blob[:HEADER_SIZE])
    head[-4:] = bytes(4)
    if zlib.crc32(bytes(head) + table) != crc:
        raise CorruptObject(f"{name}: header checksum mismatch")
    if enc >= len(ENCODINGS) or k not in (1, 2, 4, 8) or flags > 1 or (flags and k == 1):
        raise CorruptObject(f"{name}: invalid header fields")
    encoding = ENCODINGS[enc]
    layout = Layout(k, bool(flags))
    frames = struct.unpack(f"<{n_frames}I", table)
    header = Header(
        encoding,
        layout,
        raw_len,
        frame_size,
        base_raw.hex() if encoding in DELTAS else None,
        frames,
        end,
    )
    if not whole:
        return header
    if encoding == "raw":
        if n_frames or len(blob) != end + raw_len:
            raise CorruptObject(f"{name}: raw payload is {len(blob) - end} bytes, not {raw_len}")
    else:
        # Counted, not planned: a crafted raw_len must not make a reader build (or later
        # allocate) anything beyond what the frame table, bounded by the blob, describes; a
        # frame is at most 2 GiB - 1 bytes, as writers allow.
        count = k * -(-(raw_len // k) // frame_size) if 0 < frame_size < RAW_FRAME else -1
        if raw_len % k or count != n_frames:
            raise CorruptObject(f"{name}: frame table does not match the raw length")
        payload = sum(f & ~RAW_FRAME for f in frames)
        if len(blob) != end + payload:
            raise CorruptObject(f"{name}: payload is {len(blob) - end} bytes, frames say {payload}")
    return header


def read_chain(
    chain: Sequence[bytes | memoryview], names: Sequence[str] = (), rooted: bool = True
) -> tuple[list[Header], list[str]]:
    """Parse and check the headers of a delta chain (the object first, then its base, ...) and
    name each link for messages. ``rooted``: the chain ends with a plain or raw object; else
    every link is a delta and the last one's base is held elsewhere (a cached tensor), whose
    name, given as one more entry of ``names``, is checked too."""
    if not chain:
        raise InvalidInput("decode needs at least one object")
    labels = list(names) + [f"object #{i}" for i in range(len(names), len(chain))]
    headers = [read_header(blob, labels[i]) for i, blob in enumerate(chain)]
    for i, h in enumerate(headers):
        last = i == len(headers) - 1
        if (h.encoding in DELTAS) == (last and rooted):
            raise CorruptObject(f"{labels[i]}: delta chain is broken at this link")
        if i and h.raw_len != headers[0].raw_len:
            raise CorruptObject(f"{labels[i]}: base length differs from {labels[0]}")
        # names[i + 1] is the next link's name, or past a base-less chain the held base's
        if len(names) > i + 1 and h.base != names[i + 1]:
            raise CorruptObject(f"{labels[i]}: base is {h.base}, not {names[i + 1]}")
    return headers, labels


def header_length(prefix: bytes | memoryview) -> int:
    """How many leading bytes hold the header and frame table, given at least the header."""
    if len(prefix) < HEADER_SIZE:
        raise CorruptObject(f"{len(prefix)} bytes is too short for an object header")
    n_frames = _HEAD.unpack_from(prefix)[7]
    return HEADER_SIZE + 4 * int(n_frames)
