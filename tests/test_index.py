"""Tests of weightstore.index.Index against SQLite and PostgreSQL (fixtures in conftest.py)."""

from __future__ import annotations

import hashlib
import itertools
import threading
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import event

from weightstore.errors import (
    AmbiguousRef,
    Conflict,
    InvalidInput,
    InvalidRef,
    LockHeld,
    ObjectNotFound,
    RefNotFound,
    StorageError,
)
from weightstore.index import Index, IndexSettings
from weightstore.refs import check_name, parse_ref
from weightstore.types import ObjectRecord, TensorEntry

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)


def digest(label: object) -> str:
    return hashlib.sha256(str(label).encode()).hexdigest()


def add(
    index: Index, d: str, *, base: str | None = None, depth: int = 0, now: datetime = T0
) -> ObjectRecord:
    rec = ObjectRecord(d, 100, 40, "delta" if base else "plain", base, depth)
    index.add_object(rec, now)
    return rec


def tensor(name: str, d: str, shape: tuple[int, ...] = (2, 3)) -> TensorEntry:
    return TensorEntry(name=name, dtype="float32", shape=shape, digest=d, nbytes=4 * 6)


def commit(
    index: Index,
    sid: str,
    *,
    task: str = "train",
    step: int | None = None,
    tensors: Sequence[TensorEntry] = (),
    tags: Sequence[str] = (),
    created_at: datetime = T0,
    parent: str | None = None,
    metadata: dict[str, Any] | None = None,
    message: str = "",
) -> str:
    index.commit_snapshot(
        snapshot_id=sid,
        task=task,
        step=step,
        parent_id=parent,
        created_at=created_at,
        message=message,
        metadata=metadata or {},
        logical_bytes=sum(t.nbytes for t in tensors),
        tensors=tensors,
        tags=tags,
    )
    return sid


def last_used(index: Index, d: str) -> datetime:
    return {rec.digest: used for rec, used in index.all_objects()}[d]


def resolve(index: Index, text: str) -> str:
    return index.resolve(parse_ref(text))


# -- commit and read back -----------------------------------------------------------------------


def test_commit_and_read_back(index: Index) -> None:
    a, b = add(index, digest("a")).digest, add(index, digest("b")).digest
    parent = commit(index, digest("s0"), step=1, tensors=[tensor("w", a)])
    metadata = {
        "lr": 0.001,
        "nested": {"list": [1, 2.5, None, True], "deep": {"x": "y"}},
        "unicode": "Gewichte \u00fcber alles \u2013 \u6743\u91cd \U0001f9e0",
        "empty": {},
    }
    # Names deliberately out of alphabetical order: state-dict order must survive.
    tensors = [
        tensor("z.weight", a, (4, 4)),
        tensor("a.bias", b, (4,)),
        tensor("m.weight", a, ()),
    ]
    sid = commit(
        index,
        digest("s1"),
        step=2,
        tensors=tensors,
        tags=["zeta", "best", "alpha"],
        created_at=T0 + timedelta(minutes=5),
        parent=parent,
        metadata=metadata,
        message="second \u2603",
    )

    snap = index.get_snapshot(sid)
    assert snap.id == sid
    assert snap.task == "train"
    assert snap.step == 2
    assert snap.parent == parent
    assert snap.message == "second \u2603"
    assert snap.metadata == metadata
    assert snap.tags == ("alpha", "best", "zeta")
    assert snap.tensors == tuple(tensors)
    assert snap.logical_bytes == 3 * 24
    assert snap.created_at == T0 + timedelta(minutes=5)
    assert snap.created_at.utcoffset() == timedelta(0)
    assert index.tasks() == ["train"]


def test_created_at_in_other_zone_is_stored_as_utc(index: Index) -> None:
    d = add(index, digest("a")).digest
    zone = timezone(timedelta(hours=-7))
    commit(index, "ab" * 32, tensors=[tensor("w", d)], created_at=T0.astimezone(zone))
    snap = index.get_snapshot("ab" * 32)
    assert snap.created_at == T0
    assert snap.created_at.tzinfo == timezone.utc


def test_naive_datetimes_are_rejected(index: Index) -> None:
    with pytest.raises(InvalidInput, match="tz-aware"):
        index.pin_objects([digest("a")], datetime(2024, 1, 1))
    with pytest.raises(InvalidInput, match="tz-aware"):
        commit(index, digest("s"), created_at=datetime(2024, 1, 1))


def test_null_steps_may_repeat(index: Index) -> None:
    commit(index, digest("s1"), step=None)
    commit(index, digest("s2"), step=None, created_at=T0 + timedelta(seconds=1))
    assert [s.id for s in index.list_snapshots("train")] == [digest("s2"), digest("s1")]


def test_duplicate_tensor_names_are_rejected(index: Index) -> None:
    d = add(index, digest("a")).digest
    with pytest.raises(InvalidInput, match="twice"):
        commit(index, digest("s"), tensors=[tensor("w", d), tensor("w", d)])
    assert index.list_snapshots() == []


def test_step_conflict_leaves_nothing_written(index: Index) -> None:
    a, b = add(index, digest("a")).digest, add(index, digest("b")).digest
    first = commit(index, digest("s1"), step=7, tensors=[tensor("w", a)], tags=["best"])
    later = T0 + timedelta(hours=1)
    with pytest.raises(Conflict) as info:
        commit(
            index,
            digest("s2"),
            step=7,
            tensors=[tensor("w", b)],
            tags=["best", "new"],
            created_at=later,
        )
    assert str(info.value) == (
        f"task 'train' already has a snapshot at step 7 ({first[:12]}): "
        "use another step or delete it first"
    )
    assert [s.id for s in index.list_snapshots()] == [first]
    assert resolve(index, "train:best") == first
    with pytest.raises(RefNotFound):
        resolve(index, "train:new")
    assert last_used(index, b) == T0  # the pin was rolled back too


def test_step_conflict_race_is_reported_as_conflict(postgres_url: str) -> None:
    # PostgreSQL only: SQLite serialises writers at BEGIN, so its explicit check always wins.
    index, *savers = [Index.open(IndexSettings(url=postgres_url)) for _ in range(3)]
    # Make both savers pass their "is the step free?" check before either inserts, so the
    # loser only learns of the conflict from the unique constraint.
    barrier = threading.Barrier(2, timeout=10)

    def wait_before_insert(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.startswith("INSERT INTO snapshots "):
            barrier.wait()

    errors: list[BaseException] = []

    def save(i: int) -> None:
        try:
            commit(savers[i], digest(f"race{i}"), step=3, tensors=[tensor("w", objects[i])])
        except BaseException as exc:
            errors.append(exc)

    try:
        # One object per saver: pinning the same object would row-lock it and serialise them.
        objects = [add(index, digest(f"a{i}")).digest for i in range(2)]
        # The task must exist already, or the second saver would wait on the first one's new
        # task row before reaching the barrier.
        commit(index, digest("first"), step=1)
        for saver in savers:
            event.listen(saver.engine, "before_cursor_execute", wait_before_insert)
        threads = [threading.Thread(target=save, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert len(errors) == 1, errors
        assert isinstance(errors[0], Conflict)
        assert "already has a snapshot at step 3" in str(errors[0])
        assert len(index.list_snapshots()) == 2
    finally:
        for opened in (index, *savers):
            opened.close()


def test_missing_object_raises_storage_error_and_writes_nothing(index: Index) -> None:
    present = add(index, digest("present")).digest
    gone = digest("gone")
    with pytest.raises(StorageError, match=f"object {gone} was garbage-collected"):
        commit(
            index,
            digest("s"),
            task="fresh",
            step=1,
            tensors=[tensor("a", present), tensor("b", gone)],
            tags=["t"],
            created_at=T0 + timedelta(days=1),
        )
    assert index.tasks() == []
    assert index.list_snapshots() == []
    assert last_used(index, present) == T0


def test_unknown_parent_is_rejected(index: Index) -> None:
    with pytest.raises(RefNotFound, match="parent"):
        commit(index, digest("s"), parent=digest("nope"))
    assert index.tasks() == []


def test_same_snapshot_id_twice_is_a_conflict(index: Index) -> None:
    commit(index, digest("s"), step=1)
    with pytest.raises(Conflict, match="already in the index"):
        commit(index, digest("s"), step=2, created_at=T0 + timedelta(seconds=1))


# -- resolving refs ----------------------------------------------------------------------------


@pytest.fixture
def three_steps(index: Index) -> list[str]:
    d = add(index, digest("a")).digest
    ids = [
        commit(
            index,
            digest(f"s{step}"),
            step=step,
            tensors=[tensor("w", d)],
            created_at=T0 + timedelta(minutes=step),
        )
        for step in (1, 2, 3)
    ]
    commit(index, digest("other"), task="other", created_at=T0)
    index.set_tag(ids[1], "best")
    return ids


def test_resolve_latest_step_tag(index: Index, three_steps: list[str]) -> None:
    assert resolve(index, "train") == three_steps[2]
    assert resolve(index, "train@1") == three_steps[0]
    assert resolve(index, "train:best") == three_steps[1]
    assert resolve(index, "other") == digest("other")


def test_resolve_id_prefix(index: Index, three_steps: list[str]) -> None:
    target = three_steps[0]
    assert resolve(index, target[:8]) == target
    assert resolve(index, target) == target


def test_resolve_a_task_shadowing_another_snapshots_id_is_ambiguous(index: Index) -> None:
    # Guessing either way could make `rm abcd` delete another snapshot than the user meant.
    commit(index, "abcd" + "0" * 60, task="other")
    commit(index, "ffff" + "0" * 60, task="abcd", created_at=T0 + timedelta(seconds=1))
    with pytest.raises(AmbiguousRef, match="both a task"):
        resolve(index, "abcd")
    assert resolve(index, "abcd0") == "abcd" + "0" * 60  # more digits: only the id
    commit(index, "abcd1" + "0" * 59, task="own", created_at=T0 + timedelta(seconds=2))
    commit(index, "fff1" + "0" * 60, task="abcd1", created_at=T0 + timedelta(seconds=3))
    with pytest.raises(AmbiguousRef):
        resolve(index, "abcd1")
    commit(index, "beef" + "0" * 60, task="beef", created_at=T0 + timedelta(seconds=4))
    assert resolve(index, "beef") == "beef" + "0" * 60  # its own snapshot: one reading


def test_resolve_ambiguous_prefix_lists_candidates(index: Index) -> None:
    ids = ["abcd1" + "0" * 59, "abcd2" + "0" * 59, "abce0" + "0" * 59]
    for i, sid in enumerate(ids):
        commit(index, sid, step=i)
    with pytest.raises(AmbiguousRef) as info:
        resolve(index, "abcd")
    message = str(info.value)
    assert ids[0][:12] in message and ids[1][:12] in message
    assert ids[2][:12] not in message
    assert resolve(index, "abcd2") == ids[1]


def test_resolve_errors_name_what_exists(index: Index, three_steps: list[str]) -> None:
    with pytest.raises(RefNotFound) as info:
        resolve(index, "nope")
    assert str(info.value) == "no task 'nope'; tasks: other, train"
    with pytest.raises(RefNotFound) as info:
        resolve(index, "train@7")
    assert str(info.value) == "task 'train' has no step 7; steps: 1, 2, 3"
    with pytest.raises(RefNotFound) as info:
        resolve(index, "train:worst")
    assert str(info.value) == "task 'train' has no tag 'worst'; tags: best"
    with pytest.raises(RefNotFound, match="no task 'nope'"):
        resolve(index, "nope@1")
    with pytest.raises(RefNotFound, match="no task or snapshot id 'beef'"):
        resolve(index, "beef")
    with pytest.raises(RefNotFound, match="'other' has no step 1; it has no steps"):
        resolve(index, "other@1")
    with pytest.raises(RefNotFound, match="'other' has no tag 'x'; it has no tags"):
        resolve(index, "other:x")


def test_resolve_negative_and_huge_steps_are_just_not_found(
    index: Index, three_steps: list[str]
) -> None:
    with pytest.raises(RefNotFound, match="no step -1;"):
        resolve(index, "train@-1")
    with pytest.raises(RefNotFound, match="no step 99999999999999999999999;"):
        resolve(index, "train@99999999999999999999999")


def test_step_hint_lists_only_the_last_ten(index: Index) -> None:
    for step in range(12):
        commit(index, digest(step), step=step * 10, created_at=T0 + timedelta(seconds=step))
    with pytest.raises(RefNotFound) as info:
        resolve(index, "train@5")
    assert str(info.value) == (
        "task 'train' has no step 5; steps (last 10 of 12): 20, 30, 40, 50, 60, 70, 80, 90, "
        "100, 110"
    )


def test_task_without_snapshots_has_no_latest(index: Index) -> None:
    commit(index, digest("only"))
    index.delete_snapshot(digest("only"))
    with pytest.raises(RefNotFound, match="task 'train' has no snapshots"):
        resolve(index, "train")
    assert index.latest_snapshot_id("train") is None


_clock = itertools.count()


def _valid_name(name: str) -> bool:
    try:
        check_name(name, "tag")
    except InvalidRef:
        return False
    return True


_names = st.from_regex(r"[A-Za-z0-9_.][A-Za-z0-9_./-]{0,30}", fullmatch=True).filter(_valid_name)


# Hypothesis reruns the body many times with one index; every example uses a fresh id.
@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(task=_names, tag=_names, step=st.integers(-(2**63), 2**63 - 1))
def test_resolve_round_trips_any_valid_names(index: Index, task: str, tag: str, step: int) -> None:
    n = next(_clock)
    sid = digest(f"example{n}")
    if resolve_or_none(index, f"{task}@{step}") is not None:
        return  # hypothesis repeated a (task, step) pair
    commit(index, sid, task=task, step=step, tags=[tag], created_at=T0 + timedelta(seconds=n))
    assert resolve(index, f"{task}@{step}") == sid
    assert resolve(index, f"{task}:{tag}") == sid
    assert resolve(index, task) == sid
    assert index.get_snapshot(sid).task == task


def resolve_or_none(index: Index, text: str) -> str | None:
    try:
        return resolve(index, text)
    except RefNotFound:
        return None


def test_latest_is_newest_created_then_highest_id(index: Index) -> None:
    commit(index, "11" * 32, step=100, created_at=T0 + timedelta(hours=1))
    commit(index, "22" * 32, step=5, created_at=T0 + timedelta(hours=2))
    assert resolve(index, "train") == "22" * 32
    # Same timestamp: the tie goes to the larger id, deterministically.
    commit(index, "33" * 32, step=6, created_at=T0 + timedelta(hours=2))
    assert resolve(index, "train") == "33" * 32
    assert index.latest_snapshot_id("train") == "33" * 32
    assert index.latest_snapshot_id("missing") is None
    assert [s.id for s in index.list_snapshots("train")] == ["33" * 32, "22" * 32, "11" * 32]


def test_list_snapshots_loads_tensors_and_tags_per_snapshot(index: Index) -> None:
    digests = [add(index, digest(i)).digest for i in range(3)]
    for i in range(5):
        commit(
            index,
            digest(f"s{i}"),
            task=f"task{i % 2}",
            step=i,
            tensors=[tensor(f"t{j}", digests[(i + j) % 3]) for j in range(i + 1)],
            tags=[f"tag{i}"],
            created_at=T0 + timedelta(minutes=i),
        )
    everything = index.list_snapshots()
    assert [s.id for s in everything] == [digest(f"s{i}") for i in reversed(range(5))]
    for snap in everything:
        n = snap.step
        assert n is not None
        assert snap.tags == (f"tag{n}",)
        assert [t.name for t in snap.tensors] == [f"t{j}" for j in range(n + 1)]
        assert [t.digest for t in snap.tensors] == [digests[(n + j) % 3] for j in range(n + 1)]
    assert [s.step for s in index.list_snapshots("task1")] == [3, 1]
    with pytest.raises(RefNotFound, match="no task 'task9'; tasks: task0, task1"):
        index.list_snapshots("task9")
    with pytest.raises(RefNotFound):
        index.get_snapshot(digest("nope"))
    assert index.tasks() == ["task0", "task1"]


# -- tags and deletion ---------------------------------------------------------------------------


def test_tags_move(index: Index) -> None:
    s1 = commit(index, digest("s1"), step=1, tags=["best"])
    s2 = commit(index, digest("s2"), step=2, tags=["best"], created_at=T0 + timedelta(minutes=1))
    assert resolve(index, "train:best") == s2
    assert index.get_snapshot(s1).tags == ()
    index.set_tag(s1, "best")
    assert resolve(index, "train:best") == s1
    assert index.get_snapshot(s2).tags == ()
    # A tag lives in its snapshot's task: the same name in another task is another tag.
    s3 = commit(index, digest("s3"), task="other", tags=["best"])
    assert resolve(index, "train:best") == s1
    assert resolve(index, "other:best") == s3
    with pytest.raises(RefNotFound):
        index.set_tag(digest("nope"), "best")
    index.delete_tag("train", "best")
    with pytest.raises(RefNotFound):
        resolve(index, "train:best")
    assert resolve(index, "other:best") == s3
    with pytest.raises(RefNotFound, match="task 'train' has no tag 'best'; it has no tags"):
        index.delete_tag("train", "best")
    with pytest.raises(RefNotFound, match="no task 'zzz'"):
        index.delete_tag("zzz", "best")


def test_delete_snapshot(index: Index) -> None:
    d = add(index, digest("a")).digest
    s1 = commit(index, digest("s1"), step=1, tensors=[tensor("w", d)], tags=["best"])
    s2 = commit(index, digest("s2"), step=2, parent=s1, tensors=[tensor("w", d)], created_at=T0)
    index.delete_snapshot(s1)
    with pytest.raises(RefNotFound):
        index.get_snapshot(s1)
    assert index.get_snapshot(s2).parent is None
    with pytest.raises(RefNotFound, match="no tag 'best'"):
        resolve(index, "train:best")
    assert [rec.digest for rec, _ in index.all_objects()] == [d]
    assert index.snapshots_for_digests([d]) == {d: [s2]}
    # The step is free again.
    commit(index, digest("s1b"), step=1, created_at=T0 + timedelta(seconds=1))
    with pytest.raises(RefNotFound):
        index.delete_snapshot(s1)


# -- objects, reachability and gc ---------------------------------------------------------------


def test_add_object_twice_only_refreshes_last_used(index: Index) -> None:
    rec = add(index, digest("a"))
    index.add_object(ObjectRecord(rec.digest, 1, 1, "raw", None, 0), T0 + timedelta(hours=1))
    assert index.get_objects([rec.digest]) == {rec.digest: rec}
    assert last_used(index, rec.digest) == T0 + timedelta(hours=1)
    # An older clock never moves last_used_at back.
    index.add_object(rec, T0 - timedelta(days=1))
    assert last_used(index, rec.digest) == T0 + timedelta(hours=1)


def test_add_object_needs_its_base(index: Index) -> None:
    with pytest.raises(ObjectNotFound, match="not in the index"):
        add(index, digest("child"), base=digest("missing"), depth=1)
    assert index.all_objects() == []


def test_add_objects_in_one_batch(index: Index) -> None:
    base = ObjectRecord(digest("base"), 10, 8, "plain", None, 0)
    delta = ObjectRecord(digest("delta"), 10, 2, "delta", base.digest, 1)
    delta2 = ObjectRecord(digest("delta2"), 10, 2, "delta", delta.digest, 2)
    # Deltas listed before their bases, and a repeat: still one consistent batch.
    index.add_objects([delta2, delta, base, delta], T0)
    assert index.get_objects([base.digest, delta.digest, delta2.digest]) == {
        r.digest: r for r in (base, delta, delta2)
    }
    orphan = ObjectRecord(digest("orphan"), 10, 2, "delta", digest("absent"), 1)
    fine = ObjectRecord(digest("fine"), 10, 10, "raw", None, 0)
    with pytest.raises(ObjectNotFound, match=f"{orphan.digest} is a delta against"):
        index.add_objects([fine, orphan], T0)
    assert index.get_objects([fine.digest, orphan.digest]) == {}
    index.add_objects([], T0)


def test_pin_objects(index: Index) -> None:
    existing = [digest(i) for i in range(520)]
    index.add_objects([ObjectRecord(d, 10, 10, "raw", None, 0) for d in existing], T0)
    missing = [digest(f"missing{i}") for i in range(30)]
    later = T0 + timedelta(hours=2)
    # More than one IN-list chunk (500) in one call.
    assert index.pin_objects(existing + missing, later) == set(existing)
    used = {rec.digest: at for rec, at in index.all_objects()}
    assert set(used.values()) == {later}
    assert index.pin_objects(existing[:3], T0) == set(existing[:3])
    assert last_used(index, existing[0]) == later
    assert index.pin_objects([], later) == set()
    assert index.get_objects(missing) == {}
    assert len(index.get_objects(existing)) == 520


def chain(index: Index, label: str, depth: int) -> list[str]:
    """A full object and ``depth`` deltas on top of it, each against the previous one."""
    digests = [add(index, digest(f"{label}0")).digest]
    for level in range(1, depth + 1):
        digests.append(add(index, digest(f"{label}{level}"), base=digests[-1], depth=level).digest)
    return digests


def test_reachability_through_delta_chains(index: Index) -> None:
    links = chain(index, "c", 20)
    other = add(index, digest("other")).digest
    orphan = add(index, digest("orphan")).digest
    orphan_delta = add(index, digest("orphan-delta"), base=orphan, depth=1).digest
    a = commit(index, digest("A"), step=1, tensors=[tensor("w", links[20])])
    b = commit(
        index,
        digest("B"),
        step=2,
        tensors=[tensor("w", links[5]), tensor("v", other)],
        created_at=T0 + timedelta(minutes=1),
    )
    assert index.reachable_digests() == {*links, other}
    found = index.snapshots_for_digests([links[0], links[5], links[6], links[20], other, orphan])
    assert found == {
        links[0]: [a, b],
        links[5]: [a, b],
        links[6]: [a],
        links[20]: [a],
        other: [b],
        orphan: [],
    }
    assert index.snapshots_for_digests([orphan_delta, digest("unknown")]) == {
        orphan_delta: [],
        digest("unknown"): [],
    }


class Calls:
    """A before_commit callback that counts its calls and optionally fails."""

    def __init__(self, fail: bool = False) -> None:
        self.count = 0
        self.fail = fail

    def __call__(self) -> None:
        self.count += 1
        if self.fail:
            raise OSError("blob delete failed")


def test_delete_object_if_unused(index: Index) -> None:
    cutoff = T0 + timedelta(hours=1)
    old = add(index, digest("old")).digest
    young = add(index, digest("young"), now=cutoff).digest
    referenced = add(index, digest("referenced")).digest
    base = add(index, digest("base")).digest
    add(index, digest("delta"), base=base, depth=1, now=cutoff + timedelta(hours=1))
    commit(index, digest("s"), tensors=[tensor("w", referenced)], created_at=T0)

    for kept in (young, referenced, base, digest("never-existed")):
        calls = Calls()
        assert not index.delete_object_if_unused(kept, cutoff, calls)
        assert calls.count == 0
    assert {r.digest for r, _ in index.all_objects()} >= {young, referenced, base}

    failing = Calls(fail=True)
    with pytest.raises(OSError, match="blob delete failed"):
        index.delete_object_if_unused(old, cutoff, failing)
    assert failing.count == 1
    assert old in index.get_objects([old])  # rolled back

    calls = Calls()
    assert index.delete_object_if_unused(old, cutoff, calls)
    assert calls.count == 1
    assert index.get_objects([old]) == {}


def test_pinned_object_survives_gc(index: Index) -> None:
    cutoff = T0 + timedelta(hours=1)
    d = add(index, digest("a")).digest
    index.pin_objects([d], cutoff)
    assert not index.delete_object_if_unused(d, cutoff, Calls())
    assert index.delete_object_if_unused(d, cutoff + timedelta(seconds=1), Calls())


def test_delete_orphan_blob(index: Index) -> None:
    saved = add(index, digest("saved")).digest
    calls = Calls()
    assert not index.delete_orphan_blob(saved, calls)
    assert calls.count == 0
    assert index.get_objects([saved])[saved].raw_size == 100

    orphan = digest("orphan")
    calls = Calls()
    assert index.delete_orphan_blob(orphan, calls)
    assert calls.count == 1
    assert index.get_objects([orphan]) == {}

    failing = Calls(fail=True)
    with pytest.raises(OSError):
        index.delete_orphan_blob(orphan, failing)
    assert index.get_objects([orphan]) == {}


def test_delete_orphan_blob_makes_a_concurrent_saver_wait(index: Index, index_url: str) -> None:
    orphan = digest("orphan")
    saver = Index.open(IndexSettings(url=index_url))
    saved = threading.Event()
    threads: list[threading.Thread] = []

    def save() -> None:
        add(saver, orphan)
        saved.set()

    def delete_blob() -> None:
        threads.append(threading.Thread(target=save))
        threads[0].start()
        # The saver's insert of the same digest must wait for our transaction to end.
        assert not saved.wait(0.3)

    try:
        assert index.delete_orphan_blob(orphan, delete_blob)
        threads[0].join(20)
    finally:
        saver.close()
    assert saved.is_set()
    assert index.get_objects([orphan])[orphan].raw_size == 100


def test_usage_rows(index: Index) -> None:
    a, b = add(index, digest("a")).digest, add(index, digest("b")).digest
    commit(
        index,
        digest("s2"),
        task="x",
        step=2,
        tensors=[tensor("w", b), tensor("v", a)],
        created_at=T0 + timedelta(minutes=1),
    )
    commit(index, digest("s1"), task="y", step=None, tensors=[tensor("w", a)], created_at=T0)
    rows = index.usage_rows()
    assert [(r.id, r.task, r.step, r.created_at, r.logical_bytes) for r in rows] == [
        (digest("s1"), "y", None, T0, 24),
        (digest("s2"), "x", 2, T0 + timedelta(minutes=1), 48),
    ]
    assert rows[0].tensors == ((a, 24),)
    assert rows[1].tensors == ((b, 24), (a, 24))


# -- locks ------------------------------------------------------------------------------------


def test_locks(index: Index) -> None:
    hour = timedelta(hours=1)
    index.acquire_lock("gc", "host:1", stale_after=hour)
    with pytest.raises(LockHeld, match=r"gc lock held by host:1 since .* wait for it to finish"):
        index.acquire_lock("gc", "host:2", stale_after=hour)
    with pytest.raises(LockHeld):
        index.acquire_lock("gc", "host:1", stale_after=hour)
    index.acquire_lock("other", "host:2", stale_after=hour)  # locks are independent

    assert not index.release_lock("gc", "host:2")
    with pytest.raises(LockHeld):
        index.acquire_lock("gc", "host:2", stale_after=hour)
    assert index.release_lock("gc", "host:1")
    index.acquire_lock("gc", "host:2", stale_after=hour)

    # Stale: older than stale_after (zero here), so the next holder takes it over.
    index.acquire_lock("gc", "host:3", stale_after=timedelta(0))
    assert not index.release_lock("gc", "host:2")  # no longer its lock
    assert index.release_lock("gc", "host:3")

    with pytest.raises(RuntimeError, match="boom"), index.lock("gc", "host:4", hour):
        with pytest.raises(LockHeld):
            index.acquire_lock("gc", "host:5", stale_after=hour)
        raise RuntimeError("boom")
    index.acquire_lock("gc", "host:5", stale_after=hour)  # released by the context manager
    assert index.break_lock("gc") == "host:5"
    assert index.break_lock("gc") is None


# -- concurrency on SQLite ----------------------------------------------------------------------


def test_two_writers_on_one_sqlite_file_both_succeed(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'index.db'}"
    setup = Index.open(IndexSettings(url=url))
    shared = add(setup, digest("shared")).digest
    writers = [Index.open(IndexSettings(url=url, busy_timeout_ms=20000)) for _ in range(2)]
    barrier = threading.Barrier(2, timeout=10)
    errors: list[BaseException] = []
    per_writer = 25

    def work(w: int) -> None:
        try:
            barrier.wait()
            for i in range(per_writer):
                sid = digest(f"{w}-{i}")
                commit(
                    writers[w],
                    sid,
                    task="shared",
                    step=w * 1000 + i,
                    tensors=[tensor("w", shared)],
                    created_at=datetime.now(timezone.utc),
                )
                # Reads before it writes: with a deferred BEGIN this is the transaction that
                # would fail at once with "database is locked" on the lock upgrade.
                writers[w].set_tag(sid, f"w{w}")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(w,)) for w in range(2)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    finally:
        for writer in writers:
            writer.close()
    assert errors == []
    assert len(setup.list_snapshots("shared")) == 2 * per_writer
    assert resolve(setup, "shared:w0") == digest(f"0-{per_writer - 1}")
    setup.close()
