"""The conformance suite of the ObjectBackend contract, for weightstore's backends and anyone's.

Subclass :class:`ObjectBackendContract` in a pytest module with a ``backend`` fixture (an empty
backend, closed afterwards) and the hooks where backends may differ: how the location is
described, how a stamp is aged, and the raw oracles that read and write an object without the
backend (its file, its bucket), so that ``get`` is tested against something other than ``put``.
Needs pytest and hypothesis (the ``test`` extra); nothing in the library imports it.
"""

from __future__ import annotations

import array
import dataclasses
import random
import re
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from weightstore.errors import InvalidInput, ObjectNotFound
from weightstore.objects import ObjectBackend, ObjectInfo

KEY_RE = re.compile(r"[0-9a-z][0-9a-z._-]{0,127}")
KEY = "ab" + "0123456789abcdef" * 3 + "0123456789abcd"  # 64 hex characters, like a digest
OTHER = "cd" + "f" * 62
BIG = random.Random(0).randbytes(3 * 1024 * 1024 + 7)  # multi-MiB, not a power of two


def _disk_entries(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


def _listing(store: ObjectBackend) -> dict[str, int]:
    return {info.key: info.size for info in store.iterate()}


# -- round trips ----------------------------------------------------------------------------

PAYLOADS = {"empty": b"", "one-byte": b"\x00", "multi-mib": BIG}
WRAPPERS: dict[str, Callable[[bytes], bytes | bytearray | memoryview]] = {
    "bytes": bytes,
    "bytearray": bytearray,
    "memoryview": memoryview,
}


VALID_EDGE_KEYS = ["a", "0", "ab", "a.", "a..", "a...", "a-_.", "z" * 128, KEY]


# -- ranges ---------------------------------------------------------------------------------

TEN = b"0123456789"


# -- key validation -------------------------------------------------------------------------


def _assert_rejected_everywhere(store: ObjectBackend, key: object) -> None:
    calls: list[Callable[[], object]] = [
        lambda: store.put(key, b"data"),  # type: ignore[arg-type]
        lambda: store.get(key),  # type: ignore[arg-type]
        lambda: store.get_range(key, 0, 1),  # type: ignore[arg-type]
        lambda: store.exists(key),  # type: ignore[arg-type]
        lambda: store.size(key),  # type: ignore[arg-type]
        lambda: store.stat(key),  # type: ignore[arg-type]
        lambda: store.delete(key),  # type: ignore[arg-type]
    ]
    for call in calls:
        with pytest.raises(InvalidInput, match="invalid object key"):
            call()


INVALID_KEYS = [
    "",
    "../x",
    "../../etc/passwd",
    "a/b",
    "/abs",
    "a\\b",
    ".",
    "..",
    ".tmp-1-abc",
    "-a",
    "_a",
    "ABC",
    "aB",
    "a\x00b",
    "a\n",  # "$" in a regex would accept this one
    "a b",
    "é",
    "a" * 129,
]


# -- modified times -------------------------------------------------------------------------

# File systems stamp times from a coarse kernel clock that may trail time.time() slightly.
CLOCK_SLACK = 2.0


class ObjectBackendContract:
    """The tests every ObjectBackend passes. Subclasses provide the ``backend`` fixture (an
    empty backend, closed afterwards) and override the hooks below where they differ."""

    #: Resolution of ``ObjectInfo.modified`` in seconds (0: as fine as the clock).
    stamp_granularity = 0.0

    @pytest.fixture
    def backend(self) -> ObjectBackend:
        raise NotImplementedError("a backend's test class provides this fixture")

    def description(self, backend: ObjectBackend) -> str:
        """A regular expression ``backend.describe()`` matches in full."""
        raise NotImplementedError

    def raw_read(self, backend: ObjectBackend, key: str) -> bytes | None:
        """The stored bytes of ``key`` read without ``backend`` (None when there are none)."""
        raise NotImplementedError

    def raw_write(self, backend: ObjectBackend, key: str, data: bytes) -> None:
        """Store ``data`` under ``key`` as the backend would, without calling it."""
        raise NotImplementedError

    def age_stamp(self, store: ObjectBackend, key: str) -> float:
        """Return a time the stamp of ``key`` is now at; a refreshing put must move past it.

        The default waits until the clock has moved past the stamp's granularity."""
        stamp = store.stat(key).modified
        while time.time() <= stamp + self.stamp_granularity:
            time.sleep(0.01)
        return stamp

    @pytest.mark.parametrize("wrap", WRAPPERS.values(), ids=WRAPPERS.keys())
    @pytest.mark.parametrize("payload", PAYLOADS.values(), ids=PAYLOADS.keys())
    def test_round_trip(
        self,
        backend: ObjectBackend,
        payload: bytes,
        wrap: Callable[[bytes], bytes | bytearray | memoryview],
    ) -> None:
        backend.put(KEY, wrap(payload))

        got = backend.get(KEY)
        assert type(got) is bytes
        assert got == payload
        assert backend.exists(KEY)
        assert backend.size(KEY) == len(payload)
        assert backend.stat(KEY).size == len(payload)
        assert backend.stat(KEY).key == KEY
        assert backend.get_range(KEY, 0, len(payload) + 10) == payload
        assert bytes(backend.get_view(KEY)) == payload
        assert _listing(backend) == {KEY: len(payload)}

    def test_put_many_stores_each_object(self, backend: ObjectBackend) -> None:
        items = [(f"k{i}", bytes([i]) * (i * 1000)) for i in range(20)]
        backend.put_many(items)
        backend.put_many(items[:3])  # re-putting is allowed
        assert _listing(backend) == {k: len(v) for k, v in items}
        assert all(backend.get(k) == v for k, v in items)
        with pytest.raises(InvalidInput):
            backend.put_many([("ok", b"x"), ("../bad", b"y")])
        assert not backend.exists("ok")  # nothing of a rejected batch is written

    def test_exists_many_names_the_stored_keys(self, backend: ObjectBackend) -> None:
        backend.put("a1", b"x")
        backend.put("a2", b"")

        assert backend.exists_many(["a1", "a2", "a3", "a1"]) == {"a1", "a2"}
        assert backend.exists_many([]) == set()
        with pytest.raises(InvalidInput):
            backend.exists_many(["a1", "../bad"])

    def test_get_view_of_a_missing_key(self, backend: ObjectBackend) -> None:
        with pytest.raises(ObjectNotFound):
            backend.get_view(KEY)

    def test_put_stores_exactly_the_bytes_a_view_covers(self, backend: ObjectBackend) -> None:
        buffer = bytes(range(100))
        backend.put("slice", memoryview(buffer)[10:20])
        backend.put("strided", memoryview(buffer)[::2])
        typed = array.array("I", [1, 2, 3])
        backend.put("typed", memoryview(typed))

        assert backend.get("slice") == buffer[10:20]
        assert backend.get("strided") == buffer[::2]
        assert backend.get("typed") == typed.tobytes()
        assert backend.size("typed") == 3 * typed.itemsize

    def test_put_copies_the_data_and_releases_the_buffer(self, backend: ObjectBackend) -> None:
        data = bytearray(b"original")
        backend.put(KEY, data)

        data[:] = b"changed!"
        # Resizing raises BufferError if put left a memoryview of the bytearray alive.
        data.extend(b"more")

        assert backend.get(KEY) == b"original"

    @pytest.mark.parametrize("data", ["text", 123, None], ids=["str", "int", "none"])
    def test_put_rejects_data_that_is_not_bytes(self, backend: ObjectBackend, data: object) -> None:
        with pytest.raises(InvalidInput, match="bytes"):
            backend.put(KEY, data)  # type: ignore[arg-type]

        assert not backend.exists(KEY)
        assert _listing(backend) == {}

    def test_put_replaces_an_existing_object(self, backend: ObjectBackend) -> None:
        backend.put(KEY, b"first")
        backend.put(KEY, b"second, longer")

        assert backend.get(KEY) == b"second, longer"
        assert backend.size(KEY) == len(b"second, longer")
        assert _listing(backend) == {KEY: len(b"second, longer")}

    def test_keys_at_the_edges_of_the_alphabet_round_trip(self, backend: ObjectBackend) -> None:
        for i, key in enumerate(VALID_EDGE_KEYS):
            backend.put(key, f"payload {i}".encode())

        for i, key in enumerate(VALID_EDGE_KEYS):
            assert backend.get(key) == f"payload {i}".encode()
        assert _listing(backend) == {k: len(f"payload {i}") for i, k in enumerate(VALID_EDGE_KEYS)}

    # -- missing objects ------------------------------------------------------------------------

    def test_missing_key_raises_object_not_found_naming_the_key(
        self, backend: ObjectBackend
    ) -> None:
        backend.put(OTHER, b"unrelated")
        calls: list[Callable[[], object]] = [
            lambda: backend.get(KEY),
            lambda: backend.get_range(KEY, 0, 1),
            lambda: backend.size(KEY),
            lambda: backend.stat(KEY),
        ]
        for call in calls:
            with pytest.raises(ObjectNotFound, match=KEY) as info:
                call()
            assert isinstance(info.value, LookupError)

        assert backend.exists(KEY) is False
        assert backend.delete(KEY) is False

    @pytest.mark.parametrize(
        ("start", "length", "expected"),
        [
            (0, 10, TEN),
            (0, 1000, TEN),  # clipped at the end
            (3, 4, b"3456"),
            (9, 5, b"9"),  # runs past the end
            (10, 1, b""),  # starts exactly at the end
            (1000, 5, b""),  # starts beyond the end
            (3, 0, b""),  # zero length
            (0, 2**62, TEN),  # "the rest", asked with a huge length
        ],
    )
    def test_get_range(
        self, backend: ObjectBackend, start: int, length: int, expected: bytes
    ) -> None:
        backend.put(KEY, TEN)

        assert backend.get_range(KEY, start, length) == expected

    def test_get_range_of_an_empty_object_is_empty(self, backend: ObjectBackend) -> None:
        backend.put(KEY, b"")

        assert backend.get_range(KEY, 0, 0) == b""
        assert backend.get_range(KEY, 0, 10) == b""

    @pytest.mark.parametrize(
        ("start", "length"), [(-1, 1), (0, -1), (-5, -5), (1.5, 1), (0, "3")], ids=str
    )
    def test_get_range_rejects_negative_or_non_integer_bounds(
        self, backend: ObjectBackend, start: object, length: object
    ) -> None:
        backend.put(KEY, TEN)

        with pytest.raises(InvalidInput):
            backend.get_range(KEY, start, length)  # type: ignore[arg-type]

    # -- delete and iterate ---------------------------------------------------------------------

    def test_delete_reports_whether_it_removed_something(self, backend: ObjectBackend) -> None:
        backend.put(KEY, b"x")
        backend.put(OTHER, b"y")

        assert backend.delete(KEY) is True
        assert backend.delete(KEY) is False
        assert not backend.exists(KEY)
        with pytest.raises(ObjectNotFound):
            backend.get(KEY)
        assert backend.get(OTHER) == b"y"

        backend.put(KEY, b"back again")
        assert backend.get(KEY) == b"back again"

    def test_iterate_lists_exactly_the_stored_objects(self, backend: ObjectBackend) -> None:
        assert list(backend.iterate()) == []
        sizes = {f"{i:02x}" + "e" * 62: i * 100 for i in range(12)}
        for key, size in sizes.items():
            backend.put(key, b"z" * size)
        backend.delete("05" + "e" * 62)
        del sizes["05" + "e" * 62]

        infos = list(backend.iterate())

        assert len(infos) == len(sizes)
        assert {info.key: info.size for info in infos} == sizes
        for info in infos:
            assert isinstance(info, ObjectInfo)
            assert info == backend.stat(info.key)

    @pytest.mark.parametrize("key", INVALID_KEYS)
    def test_invalid_keys_are_rejected_and_change_nothing(
        self, backend: ObjectBackend, tmp_path: Path, key: str
    ) -> None:
        _assert_rejected_everywhere(backend, key)

        assert _disk_entries(tmp_path) == []
        assert list(backend.iterate()) == []

    @pytest.mark.parametrize("key", [None, 7, b"ab", ["ab"]], ids=repr)
    def test_keys_that_are_not_strings_are_rejected(
        self, backend: ObjectBackend, key: object
    ) -> None:
        _assert_rejected_everywhere(backend, key)

    # The backend and tmp_path are shared by all examples on purpose: each example must leave them
    # exactly as empty as it found them, which is the property under test. Each backend's class
    # runs this method (a "differing executor" to hypothesis): its examples do not depend on
    # which, only the backend under test does.
    @settings(
        suppress_health_check=[
            HealthCheck.function_scoped_fixture,
            HealthCheck.differing_executors,
        ],
        deadline=None,
    )
    @given(key=st.text().filter(lambda k: KEY_RE.fullmatch(k) is None))
    @example(key="a\n")
    def test_generated_invalid_keys_are_rejected(
        self, backend: ObjectBackend, tmp_path: Path, key: str
    ) -> None:
        _assert_rejected_everywhere(backend, key)

        assert _disk_entries(tmp_path) == []
        assert list(backend.iterate()) == []

    def test_modified_is_the_time_of_the_write(self, backend: ObjectBackend) -> None:
        before = time.time()
        backend.put(KEY, b"x")
        first = backend.stat(KEY).modified
        backend.put(KEY, b"x")
        second = backend.stat(KEY).modified
        after = time.time()

        assert before - CLOCK_SLACK <= first <= after + CLOCK_SLACK
        assert second >= first

    def test_reput_refreshes_modified(self, backend: ObjectBackend) -> None:
        backend.put(KEY, b"same bytes")
        old = self.age_stamp(backend, KEY)

        backend.put(KEY, b"same bytes")

        refreshed = backend.stat(KEY).modified
        assert refreshed > old
        assert {info.key: info.modified for info in backend.iterate()} == {KEY: refreshed}

    # -- threads --------------------------------------------------------------------------------

    def test_threads_putting_and_getting_all_succeed(self, backend: ObjectBackend) -> None:
        threads, rounds = 8, 8
        shared = b"identical bytes from every thread" * 64
        start = threading.Barrier(threads)

        def work(t: int) -> None:
            start.wait(timeout=30)  # all threads hit the backend at once
            for i in range(rounds):
                own_key, own = f"t{t}-{i}", f"thread {t} round {i}".encode() * 50
                backend.put(own_key, own)
                backend.put("shared", shared)
                assert backend.get(own_key) == own
                assert backend.get("shared") == shared
                assert backend.get_range("shared", 5, 10) == shared[5:15]

        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(work, range(threads)))  # re-raises the first failure of any thread

        expected = {f"t{t}-{i}" for t in range(threads) for i in range(rounds)} | {"shared"}
        assert set(_listing(backend)) == expected

    def test_readers_never_see_a_partial_object(self, backend: ObjectBackend) -> None:
        payload = random.Random(1).randbytes(2 * 1024 * 1024)
        backend.put(KEY, payload)
        writers_done = threading.Event()

        def write() -> None:
            for _ in range(4):
                backend.put(KEY, payload)

        def read() -> int:
            reads = 0
            while not writers_done.is_set() or reads == 0:
                assert backend.get(KEY) == payload
                assert backend.size(KEY) == len(payload)
                # In-flight temp files must not show up as objects, complete or not.
                assert _listing(backend) == {KEY: len(payload)}
                reads += 1
            return reads

        with ThreadPoolExecutor(4) as pool:
            readers = [pool.submit(read) for _ in range(2)]
            writers = [pool.submit(write) for _ in range(2)]
            for w in writers:
                w.result()
            writers_done.set()
            assert all(r.result() > 0 for r in readers)

    # -- against the raw oracles ----------------------------------------------------------------

    @pytest.mark.parametrize("payload", PAYLOADS.values(), ids=PAYLOADS.keys())
    def test_put_stores_exactly_the_bytes_the_oracle_reads(
        self, backend: ObjectBackend, payload: bytes
    ) -> None:
        backend.put(KEY, payload)
        assert self.raw_read(backend, KEY) == payload
        assert self.raw_read(backend, OTHER) is None

    @pytest.mark.parametrize("payload", PAYLOADS.values(), ids=PAYLOADS.keys())
    def test_reads_return_what_the_oracle_wrote(
        self, backend: ObjectBackend, payload: bytes
    ) -> None:
        self.raw_write(backend, KEY, payload)
        assert backend.exists(KEY)
        assert backend.get(KEY) == payload
        assert bytes(backend.get_view(KEY)) == payload
        assert backend.get_range(KEY, 1, 5) == payload[1:6]
        assert backend.size(KEY) == len(payload)
        assert _listing(backend) == {KEY: len(payload)}

    def test_delete_removes_what_the_oracle_sees(self, backend: ObjectBackend) -> None:
        backend.put(KEY, b"gone soon")
        assert backend.delete(KEY)
        assert self.raw_read(backend, KEY) is None

    # -- the rest of the surface ----------------------------------------------------------------

    def test_describe_names_the_location(self, backend: ObjectBackend) -> None:
        assert re.fullmatch(self.description(backend), backend.describe())

    def test_close_is_safe_and_backend_works_as_context_manager(
        self, backend: ObjectBackend
    ) -> None:
        with backend as store:
            assert store is backend
            store.put(KEY, b"x")
        backend.close()

    def test_object_info_is_frozen(self) -> None:
        info = ObjectInfo(key=KEY, size=1, modified=0.0)

        with pytest.raises(dataclasses.FrozenInstanceError):
            info.size = 2  # type: ignore[misc]

    def test_store_id_round_trips_outside_the_key_space(self, backend: ObjectBackend) -> None:
        assert backend.read_store_id() is None
        assert backend.is_empty()
        backend.write_store_id("0123abcd")
        assert backend.read_store_id() == "0123abcd"
        assert backend.is_empty(), "the store id is not an object"
        assert list(backend.iterate()) == []
        backend.put("store-id", b"an object named like the id file")
        assert backend.read_store_id() == "0123abcd"
        assert not backend.is_empty()
        backend.write_store_id("ffff")
        assert backend.read_store_id() == "ffff"
