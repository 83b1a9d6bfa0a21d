"""Weights files in and out: safetensors (single or sharded, as Hugging Face writes them) and
torch state-dict files (read with ``weights_only=True``: arbitrary pickles are never run).

Reading is lazy (one tensor at a time from a memory map) and writing streams one tensor at a
time, so memory stays bounded by the largest tensor.
"""

from __future__ import annotations

import json
import os
import pickle
import struct
import zipfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open

from weightstore.errors import CorruptFile, InvalidInput, NotFound
from weightstore.tensors import check_tensor, dtype_info

SHARD_INDEX = "model.safetensors.index.json"


class SafetensorsWeights(Mapping[str, torch.Tensor]):
    """A lazy, read-only mapping over one or more safetensors files."""

    def __init__(self, files: Mapping[str, Path]) -> None:
        self._where = dict(files)  # tensor name -> file holding it
        self._handles: dict[Path, Any] = {}

    def _open(self, path: Path) -> Any:
        handle = self._handles.get(path)
        if handle is None:
            try:
                handle = safe_open(str(path), framework="pt", device="cpu")
            except (SafetensorError, OSError, ValueError) as e:
                raise CorruptFile(f"{path}: not a readable safetensors file ({e})") from e
            self._handles[path] = handle
        return handle

    def __getitem__(self, name: str) -> torch.Tensor:
        path = self._where[name]
        try:
            return self._open(path).get_tensor(name)  # type: ignore[no-any-return]
        except (SafetensorError, OSError, ValueError, RuntimeError) as e:
            raise CorruptFile(f"{path}: tensor {name!r} cannot be read ({e})") from e

    def __iter__(self) -> Iterator[str]:
        return iter(self._where)

    def __len__(self) -> int:
        return len(self._where)


def _safetensors_names(path: Path) -> list[str]:
    """Tensor names of one safetensors file in file order (safe_open lists them sorted),
    checking that the whole file is there."""
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            names = set(f.keys())
        with path.open("rb") as raw:
            (size,) = struct.unpack("<Q", raw.read(8))
            header = json.loads(raw.read(size))
    except (SafetensorError, OSError, ValueError, struct.error) as e:
        raise CorruptFile(f"{path}: not a readable safetensors file ({e})") from e
    return sorted(names, key=lambda n: (header[n]["data_offsets"][0], n))


def _read_sharded(folder: Path, index_file: Path) -> SafetensorsWeights:
    try:
        weight_map = json.loads(index_file.read_text())["weight_map"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CorruptFile(f"{index_file}: not a sharded-safetensors index ({e})") from e
    if not isinstance(weight_map, dict):
        raise CorruptFile(f"{index_file}: weight_map must be an object")
    files: dict[str, Path] = {}
    shards: dict[str, list[str]] = {}
    for name, shard in weight_map.items():
        if not isinstance(shard, str) or Path(shard).name != shard or shard in (".", ".."):
            raise CorruptFile(f"{index_file}: shard {shard!r} is not a file name in {folder}")
        if shard not in shards:
            shard_path = folder / shard
            if not shard_path.is_file():
                raise CorruptFile(f"{index_file}: shard {shard} is missing")
            shards[shard] = _safetensors_names(shard_path)
        if name not in shards[shard]:
            raise CorruptFile(f"{index_file}: {name!r} is not in shard {shard}")
        files[name] = folder / shard
    return SafetensorsWeights(files)


def _read_torch(path: Path) -> dict[str, torch.Tensor]:
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError as e:
        if "mmap" not in str(e):
            raise CorruptFile(f"{path}: not a readable torch file ({e})") from e
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise InvalidInput(
            f"{path}: refused to unpickle objects other than tensors ({e}); "
            "save a plain state_dict or convert to safetensors"
        ) from e
    except (OSError, EOFError, zipfile.BadZipFile, ValueError) as e:
        raise CorruptFile(f"{path}: not a readable torch file ({e})") from e
    if not isinstance(obj, Mapping):
        raise InvalidInput(f"{path}: holds a {type(obj).__name__}, not a state_dict")
    return {str(k): check_tensor(str(k), v) for k, v in obj.items()}


def read_weights(path: str | os.PathLike[str]) -> Mapping[str, torch.Tensor]:
    """Open a weights file or folder; tensors are read lazily where the format allows."""
    p = Path(path)
    if not p.exists():
        raise NotFound(f"{p}: no such file or folder")
    if p.is_dir():
        if (p / SHARD_INDEX).is_file():
            return _read_sharded(p, p / SHARD_INDEX)
        single = p / "model.safetensors"
        if single.is_file():
            p = single
        else:
            raise InvalidInput(f"{p}: folder has neither {SHARD_INDEX} nor model.safetensors")
    if p.suffix == ".safetensors" or _looks_like_safetensors(p):
        return SafetensorsWeights(dict.fromkeys(_safetensors_names(p), p))
    return _read_torch(p)


def _looks_like_safetensors(p: Path) -> bool:
    with p.open("rb") as f:
        head = f.read(9)
    if len(head) < 9:
        return False
    (n,) = struct.unpack("<Q", head[:8])
    return head[8:9] == b"{" and 0 < n < p.stat().st_size


def write_safetensors(
    path: str | os.PathLike[str],
    entries: list[tuple[str, str, tuple[int, ...], int]],
    fill: Callable[[int], bytes | memoryview],
    metadata: Mapping[str, str] | None = None,
    progress: Callable[[int], None] | None = None,
) -> None:
    """Write a standard safetensors file, streaming tensor data.

    ``entries``: (name, dtype name, shape, nbytes) in file order; ``fill(i)`` returns the raw
    bytes of entry ``i``. Written to a temporary file and renamed, so a crash leaves no half file.
    """
    header: dict[str, Any] = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    offset = 0
    for name, dtype, shape, nbytes in entries:
        header[name] = {
            "dtype": dtype_info(dtype).safetensors,
            "shape": list(shape),
            "data_offsets": [offset, offset + nbytes],
        }
        offset += nbytes
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    target = Path(path)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    try:
        with tmp.open("wb") as f:
            f.write(struct.pack("<Q", len(blob)))
            f.write(blob)
            for i, (name, _, _, nbytes) in enumerate(entries):
                data = fill(i)
                if len(data) != nbytes:
                    raise InvalidInput(f"{name}: got {len(data)} bytes, expected {nbytes}")
                f.write(data)
                if progress:
                    progress(nbytes)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
