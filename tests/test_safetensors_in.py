"""The torch-free safetensors reader (weightstore/files/safetensors_in.py): the same tensors as
safetensors' own reader for every dtype, and every damaged header refused with a typed error."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file, save_file
from test_dtypes import safetensors_dtypes, sample

from weightstore.errors import InputChanged, InvalidInput
from weightstore.files.safetensors_in import SafetensorsWeights, read_header
from weightstore.sources import RawTensor


def _file(tmp_path: Path) -> tuple[Path, dict[str, torch.Tensor]]:
    sd = {str(d).removeprefix("torch."): sample(d).contiguous() for d in safetensors_dtypes()}
    sd["empty"] = torch.empty(0, 4)
    path = tmp_path / "all.safetensors"
    save_file(sd, str(path), metadata={"format": "pt"})
    return path, sd


def test_every_dtype_reads_as_safetensors_reads_it(tmp_path: Path) -> None:
    path, _ = _file(tmp_path)
    header = read_header(path)
    assert header.metadata == {"format": "pt"}
    weights = SafetensorsWeights({path: header})
    theirs = load_file(str(path))
    for name, t in theirs.items():
        raw = weights[name]
        assert isinstance(raw, RawTensor) and raw.owned
        assert (raw.dtype, raw.shape) == (str(t.dtype).removeprefix("torch."), tuple(t.shape))
        assert raw.data.tobytes() == t.contiguous().view(-1).view(torch.uint8).numpy().tobytes()
    weights.close()


def _with_header(tmp_path: Path, header: object, data: bytes = b"") -> Path:
    text = json.dumps(header).encode()
    path = tmp_path / "h.safetensors"
    path.write_bytes(struct.pack("<Q", len(text)) + text + data)
    return path


@pytest.mark.parametrize(
    ("header", "data", "says"),
    [
        ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 4, "truncated"),
        ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 9, "no tensor"),
        ({"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}, b"\0" * 8, "holds 8"),
        ({"a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}, b"\0" * 8, "contiguous"),
        ({"a": {"dtype": "Q9", "shape": [1], "data_offsets": [0, 1]}}, b"\0", "not supported"),
        ({"a": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 0]}}, b"", "shape"),
        ({"a": {"dtype": "F32", "shape": [1], "data_offsets": [8, 4]}}, b"\0" * 8, "8-4"),
        ({"a": [1, 2]}, b"", "not described"),
        ({"__metadata__": {"k": 1}}, b"", "__metadata__"),
        ({"a": {"dtype": "F4", "shape": [3], "data_offsets": [0, 2]}}, b"\0\0", "holds 2"),
        ([1, 2], b"", "JSON object"),
    ],
)
def test_damaged_headers_are_typed_errors(
    tmp_path: Path, header: object, data: bytes, says: str
) -> None:
    with pytest.raises(InvalidInput, match=says):
        read_header(_with_header(tmp_path, header, data))


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(cut=st.integers(0, 400), flip=st.integers(0, 400), value=st.integers(0, 255))
def test_any_damage_is_a_typed_error_or_the_same_tensors(
    tmp_path: Path, cut: int, flip: int, value: int
) -> None:
    src = tmp_path / "src.safetensors"
    if not src.exists():
        save_file({"w": torch.arange(12.0).reshape(3, 4), "i": torch.arange(5)}, str(src))
    blob = bytearray(src.read_bytes())
    if flip < len(blob):
        blob[flip] = value
    path = tmp_path / "bad.safetensors"
    path.write_bytes(bytes(blob[: max(0, len(blob) - cut % 40)] if cut >= 200 else blob))
    try:
        header = read_header(path)
        weights = SafetensorsWeights({path: header})
        got = {n: weights[n].data.tobytes() for n in weights}
        weights.close()
    except InvalidInput:
        return
    theirs = load_file(str(path))  # what we accept, safetensors accepts, with the same bytes
    assert got == {n: t.view(-1).view(torch.uint8).numpy().tobytes() for n, t in theirs.items()}


def test_a_file_that_shrinks_after_its_header_was_read_is_input_changed(tmp_path: Path) -> None:
    path, _ = _file(tmp_path)
    header = read_header(path)
    weights = SafetensorsWeights({path: header})
    last = max(header.tensors, key=lambda n: header.tensors[n].end)
    weights[next(iter(header.tensors))]  # opens the file
    with path.open("r+b") as f:
        f.truncate(header.tensors[last].begin)
    with pytest.raises(InputChanged, match="shrank"):
        weights[last]
    weights.close()


def test_a_files_metadata_comes_back_with_its_export(tmp_path: Path) -> None:
    """The header read once for the save also gives the ``__metadata__`` export hands back."""
    from weightstore import WeightStore

    path, sd = _file(tmp_path)
    with WeightStore.open(tmp_path / "store") as store:
        store.import_file("t", path, step=1)
        store.export("t@1", tmp_path / "out.safetensors")
    assert read_header(tmp_path / "out.safetensors").metadata["format"] == "pt"
    theirs = load_file(str(tmp_path / "out.safetensors"))
    assert theirs.keys() == sd.keys()
    assert all(
        torch.equal(theirs[k].reshape(-1).view(torch.uint8), v.reshape(-1).view(torch.uint8))
        for k, v in sd.items()
    )
