"""Weights files in: safetensors (single or sharded, as Hugging Face writes them) and torch
state-dict files (read with ``weights_only=True``: arbitrary pickles are never run).

Safetensors files are read lazily, one tensor at a time, without torch
(:mod:`weightstore.files.safetensors_in`); torch checkpoints need torch to be unpickled.
"""

from __future__ import annotations

import json
import os
import pickle
import stat
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from weightstore.errors import CorruptFile, InvalidInput, NotFound
from weightstore.files.safetensors_in import Header, SafetensorsWeights, read_header
from weightstore.inputs import load_json_object
from weightstore.sources import Source

if TYPE_CHECKING:
    import torch

SHARD_INDEX = "model.safetensors.index.json"


def _read_sharded(folder: Path, index_file: Path) -> SafetensorsWeights:
    try:
        text = index_file.read_bytes()
    except OSError as e:
        raise CorruptFile(f"{index_file}: cannot be read ({e})") from e
    weight_map = load_json_object(text, str(index_file), CorruptFile).get("weight_map")
    if not isinstance(weight_map, dict):
        raise CorruptFile(f"{index_file}: weight_map must be an object")
    files: dict[str, Path] = {}
    shards: dict[str, Header] = {}
    for name, shard in weight_map.items():
        if not isinstance(shard, str) or Path(shard).name != shard or shard in (".", ".."):
            raise CorruptFile(f"{index_file}: shard {shard!r} is not a file name in {folder}")
        if shard not in shards:
            shard_path = folder / shard
            if not shard_path.is_file():
                raise CorruptFile(f"{index_file}: shard {shard} is missing")
            shards[shard] = read_header(shard_path)
        if name not in shards[shard].tensors:
            raise CorruptFile(f"{index_file}: {name!r} is not in shard {shard}")
        files[name] = folder / shard
    for shard, header in shards.items():
        unlisted = [n for n in header.tensors if files.get(n) != folder / shard]
        if unlisted:
            raise CorruptFile(
                f"{index_file}: shard {shard} holds tensors the weight_map does not list "
                f"({', '.join(map(repr, unlisted[:5]))}{', ...' if len(unlisted) > 5 else ''}): "
                "they would be dropped; fix the index"
            )
    return SafetensorsWeights({folder / s: h for s, h in shards.items()}, files)


def _torch_load(path: Path) -> object:
    """``torch.load`` with ``weights_only``, every failure mapped to a typed error."""
    import torch

    try:
        try:
            return torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as e:
            if "mmap" not in str(e):
                raise
        # Files in the legacy (non-zip) format cannot be memory-mapped: read them whole.
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
        raise InvalidInput(
            f"{path}: not a torch state-dict file, or it holds objects other than tensors, "
            f"which are never unpickled ({first}); save a plain state_dict or convert to "
            "safetensors"
        ) from e
    except Exception as e:
        # Unpickling untrusted bytes fails in open-ended ways (KeyError, EOFError, struct
        # errors, MemoryError...): every one of them means the same thing here.
        raise CorruptFile(f"{path}: not a readable torch file ({type(e).__name__}: {e})") from e


# Where training scripts (Lightning, plain loops, DDP wrappers) nest the weights in a checkpoint.
NESTED_KEYS = ("state_dict", "model_state_dict", "model", "module")


def _state_dict_of(path: Path, obj: object, key: str | None) -> Mapping[object, object]:
    """The mapping of tensors inside a loaded checkpoint: ``obj`` itself, the entry ``key``
    (``a/b`` for deeper nesting), or the one usual nesting that holds tensors."""
    if not isinstance(obj, Mapping):
        raise InvalidInput(f"{path}: holds a {type(obj).__name__}, not a state_dict")
    if key is not None:
        for part in key.split("/"):
            if not isinstance(obj, Mapping) or part not in obj:
                raise InvalidInput(f"{path}: has no entry {key!r} (it has {_keys(obj)})")
            obj = obj[part]
        if not isinstance(obj, Mapping):
            raise InvalidInput(f"{path}: {key!r} holds a {type(obj).__name__}, not a state_dict")
        return obj
    import torch

    if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return obj
    for nested in NESTED_KEYS:
        inner = obj.get(nested)
        if isinstance(inner, Mapping) and inner:
            return inner
    raise InvalidInput(
        f"{path}: not a flat state_dict and none of {', '.join(NESTED_KEYS)} holds one "
        f"(it has {_keys(obj)}): choose the entry with --key"
    )


def _keys(obj: object) -> str:
    keys = [repr(k) for k in obj] if isinstance(obj, Mapping) else []
    return ", ".join(keys[:10]) + (", ..." if len(keys) > 10 else "") if keys else "no entries"


def _read_torch(path: Path, key: str | None = None) -> dict[str, torch.Tensor]:
    from weightstore.tensors import check_tensor

    state = _state_dict_of(path, _torch_load(path), key)
    out: dict[str, torch.Tensor] = {}
    origin: dict[str, object] = {}
    for k, v in state.items():
        name = str(k)
        if name in out:
            # {1: a, "1": b} would silently keep one of the two.
            raise InvalidInput(
                f"{path}: keys {origin[name]!r} and {k!r} both name tensor {name!r}: "
                "rename one, nothing was saved"
            )
        try:
            out[name] = check_tensor(name, v)
        except InvalidInput as e:
            raise type(e)(f"{path}: {e}") from None
        origin[name] = k
    return out


def read_weights(path: str | os.PathLike[str], *, key: str | None = None) -> Mapping[str, Source]:
    """Open a weights file or folder; tensors are read lazily where the format allows.

    Torch checkpoints may nest the weights (``{"state_dict": ..., "epoch": 3}``): the usual
    nestings are found, ``key`` chooses one explicitly.
    """
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
    size = regular_file_size(p)
    if p.suffix == ".safetensors" or _looks_like_safetensors(p, size):
        if key is not None:
            raise InvalidInput(f"{p}: --key applies to torch checkpoints, not safetensors")
        return SafetensorsWeights({p: read_header(p)})
    _refuse_text(p)
    return _read_torch(p, key)


def _refuse_text(p: Path) -> None:
    """:class:`InvalidInput` for a text file (a config, a tokenizer, a vocabulary) handed in as
    weights, before torch's unpickler reports it in its own words."""
    try:
        with p.open("rb") as f:
            head = f.read(4096)
    except OSError:
        return  # torch.load reports it
    if not head or b"\x00" in head or head.startswith((b"PK\x03\x04", b"\x80")):
        return  # a zip (torch's format), a pickle, or binary data
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as e:
        if e.start < len(head) - 4:  # not just a character cut at the 4 KiB boundary
            return
    kind = "a JSON file" if p.suffix == ".json" or _is_json(head) else "a text file"
    raise InvalidInput(
        f"{p}: {kind} (a config, tokenizer or vocabulary?), not weights: save the weights file "
        "(model.safetensors, pytorch_model.bin), or the whole model folder "
        "(`weightstore save TASK FOLDER` keeps config and tokenizer files with the weights)"
    )


def _is_json(head: bytes) -> bool:
    try:
        json.loads(head)
    except (ValueError, RecursionError):
        return head.lstrip()[:1] == b"{"  # a long file cut at 4 KiB
    return True


def regular_file_size(p: Path, *, allow_empty: bool = False) -> int:
    """The size of ``p`` if it is a regular file (non-empty unless ``allow_empty``): reading a
    FIFO would block, a device never ends, and /proc files claim a size of 0 and may not be
    readable at all."""
    try:
        st = p.stat()
    except OSError as e:
        raise InvalidInput(f"{p}: cannot be read ({e.strerror or e})") from e
    if not stat.S_ISREG(st.st_mode):
        raise InvalidInput(f"{p}: not a regular file (a device, FIFO or socket): save from a file")
    if st.st_size == 0 and not allow_empty:
        raise CorruptFile(f"{p}: the file is empty")
    return st.st_size


def _looks_like_safetensors(p: Path, size: int) -> bool:
    try:
        with p.open("rb") as f:
            head = f.read(9)
    except OSError as e:
        raise CorruptFile(f"{p}: cannot be read ({e.strerror or e})") from e
    if len(head) < 9:
        return False
    (n,) = struct.unpack("<Q", head[:8])
    return head[8:9] == b"{" and 0 < n < size
