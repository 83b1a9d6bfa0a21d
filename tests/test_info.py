"""``weightstore info``: reports the decode paths actually in use, as text and as JSON."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from weightstore.cli.main import app
from weightstore.codec import Codec
from weightstore.settings import DECODER_ENV


def _info(*args: str) -> dict[str, object]:
    result = CliRunner().invoke(app, ["info", "--json", *args])
    assert result.exit_code == 0, result.output
    found: dict[str, object] = json.loads(result.stdout)
    return found


def test_json_reports_the_paths_in_use(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(DECODER_ENV, raising=False)
    found = _info()
    assert found["decoder"] == Codec().decoder
    assert found["extension"] is None or str(found["extension"]).endswith(".so")
    assert (found["decoder"] == "compiled") == (found["extension"] is not None)
    assert found["cuda_devices"] == (
        [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        if torch.cuda.is_available()
        else []
    )
    assert found["gpu_decode"] is (bool(found["cuda_devices"]) and found["nvcomp"] is not None)
    assert isinstance(found["threads"], int) and found["threads"] >= 1


def test_forcing_the_fallback_shows(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(DECODER_ENV, "numpy")
    found = _info()
    assert found["forced"] == "numpy"
    assert str(found["decoder"]).startswith("numpy+")
    text = CliRunner().invoke(app, ["info"])
    assert text.exit_code == 0
    assert "forced by numpy" in text.stdout and "CPU decoder" in text.stdout


def test_a_bad_forced_decoder_is_invalid_input(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(DECODER_ENV, "turbo")
    result = CliRunner().invoke(app, ["info"])
    assert result.exit_code == 2
    assert "decoder must be one of" in result.output


def test_install_hints_copy_paste_as_printed() -> None:
    """Issue 16, item 11: the nvCOMP hint read `weightstore\\[gpu]` (markup escaping on a
    console that reads no markup)."""
    text = CliRunner().invoke(app, ["info"]).stdout
    assert "\\[" not in text
    if "not installed" in text:
        assert "pip install 'weightstore[gpu]'" in text
