"""SQL statements per operation stay flat in the number of tensors and the depth of chains.

The workload of the read-pipeline issue: 50 tensors of 64x64 fp32, 5 snapshots, the newest 4
deltas deep. Statements are counted at the engine (``before_cursor_execute``) on SQLite and on
PostgreSQL. Transaction control is not counted: SQLite's BEGIN goes through the cursor (our
engine issues it), PostgreSQL's does not, and the two backends should count alike.

Before the one reader (measured with this counter on the landed code): save 540, restore 18,
export 508, download ~500, push of 200 objects 437 at the source and 1,921 at the receiver.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import torch
from served import serve
from sqlalchemy import Engine, event

from weightstore.objects import LocalBackend
from weightstore.remote import RemoteStore
from weightstore.settings import StoreSettings
from weightstore.store import WeightStore
from weightstore.sync import push

TENSORS = 50


@contextmanager
def counted(engine: Engine) -> Iterator[list[str]]:
    """The statements ``engine`` runs inside the block, transaction control left out."""
    seen: list[str] = []

    def grab(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if statement.split(None, 1)[0].upper() not in {"BEGIN", "COMMIT", "ROLLBACK"}:
            seen.append(statement)

    event.listen(engine, "before_cursor_execute", grab)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", grab)


def weights(step: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    base = {f"t{i}": torch.randn(64, 64, generator=g) for i in range(TENSORS)}
    return {k: v + step * 1e-3 for k, v in base.items()}


def app_store(served: Any) -> WeightStore:
    """The store the served app opened (uvicorn wraps the app in middleware)."""
    app = served.server.config.loaded_app
    while not hasattr(app, "state"):
        app = app.app
    store: WeightStore = app.state.store
    return store


@pytest.fixture
def history(tmp_path: Path, index_url: str) -> Iterator[WeightStore]:
    store = WeightStore.open(tmp_path / "s", index_url=index_url, settings=StoreSettings(threads=2))
    for step in range(4):
        store.save("t", weights(step), step=step)
    yield store
    store.close()


def test_a_save_of_changed_tensors_resolves_bases_once(history: WeightStore) -> None:
    with counted(history.index.engine) as seen:
        history.save("t", weights(4), step=4)
    assert len(seen) <= 60, len(seen)
    chain = history.reader.chains([e.digest for e in history.show("t").tensors])
    assert max(len(c) for c in chain.values()) == 5  # the newest is 4 deltas deep


def test_restore_and_export_read_the_chains_once(history: WeightStore, tmp_path: Path) -> None:
    history.save("t", weights(4), step=4)
    with counted(history.index.engine) as seen:
        restored = history.restore("t")
    assert len(seen) <= 30, len(seen)
    assert all(torch.equal(restored[k], v) for k, v in weights(4).items())
    with counted(history.index.engine) as seen:
        history.export("t", tmp_path / "x.safetensors")
    assert len(seen) <= 30, len(seen)


def test_a_download_reads_the_chains_once(history: WeightStore, index_url: str) -> None:
    history.save("t", weights(4), step=4)
    last = history.show("t").tensors[-1]
    expected = history.read_tensor_bytes(last).tobytes()
    history.close()
    backend = history.objects
    assert isinstance(backend, LocalBackend)
    with serve(backend.root.parent, index_url) as served, served.client() as http:
        http.get("/tasks")
        with counted(app_store(served).index.engine) as seen:
            body = http.get("/snapshots/t/safetensors").content
        assert len(seen) <= 30, len(seen)
        assert body[-last.nbytes :] == expected


def test_push_costs_a_few_statements_per_object(tmp_path: Path, index_url: str) -> None:
    source = WeightStore.open(tmp_path / "src", settings=StoreSettings(threads=2))
    for step in range(4):
        source.save("t", weights(step), step=step)
    WeightStore.open(tmp_path / "dst", index_url=index_url).close()
    with serve(tmp_path / "dst", index_url) as served:
        with RemoteStore(
            served.url, token=served.tokens["write"], cache_dir=tmp_path / "cache"
        ) as remote:
            with (
                counted(source.index.engine) as at_source,
                counted(app_store(served).index.engine) as at_receiver,
            ):
                report = push(source, remote)
            assert report.objects == 4 * TENSORS
            assert len(at_source) <= 5 * report.objects, len(at_source)
            assert len(at_receiver) <= 5 * report.objects, len(at_receiver)
            # A second push of one more checkpoint: its bases are the receiver's already.
            source.save("t", weights(4), step=4)
            with counted(app_store(served).index.engine) as at_receiver:
                report = push(source, remote)
            assert report.objects == TENSORS
            assert len(at_receiver) <= 5 * report.objects, len(at_receiver)
        restored = served.store.restore("t")
        assert all(torch.equal(restored[k], v) for k, v in weights(4).items())
    source.close()
