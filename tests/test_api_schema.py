"""schemathesis over the service's OpenAPI schema, against a real uvicorn server (SQLite):
generated requests for every operation, valid and invalid ones, with a write token, never get
a server error, and every documented response matches its schema."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis.errors import Unsatisfiable  # noqa: E402
from schemathesis import GenerationMode  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import response_schema_conformance  # noqa: E402
from served import Served, serve  # noqa: E402


@pytest.fixture
def served_module(tmp_path: Path) -> Iterator[Served]:
    root = tmp_path / "store"
    with serve(root, f"sqlite:///{tmp_path / 'index.db'}") as s:
        s.store.save("m", {"w": torch.randn(8, 8), "b": torch.zeros(8)}, step=1, tags=["best"])
        s.store.save("m", {"w": torch.randn(8, 8), "b": torch.ones(8)}, step=2)
        yield s


@pytest.mark.slow
def test_no_server_errors_and_responses_match_the_schema(served_module: Served) -> None:
    api = schemathesis.openapi.from_url(f"{served_module.url}/openapi.json")
    headers = {"Authorization": f"Bearer {served_module.tokens['write']}"}
    operations = [result.ok() for result in api.get_all_operations()]
    assert len(operations) >= 15
    calls = 0
    for operation, mode in itertools.product(operations, GenerationMode):

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
        def run(case: Any) -> None:
            nonlocal calls
            calls += 1
            case.call_and_validate(
                base_url=served_module.url,
                headers=headers,
                checks=[not_a_server_error, response_schema_conformance],
            )

        try:
            run()
        except Unsatisfiable:
            # An operation without inputs (healthz, metrics) has no invalid request to make.
            assert mode is GenerationMode.NEGATIVE
    assert calls >= 10 * len(operations)
