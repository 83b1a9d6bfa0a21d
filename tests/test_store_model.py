"""A Hypothesis state machine for the store: random runs of save, tag, untag, delete, prune,
gc(grace=0) and restore, checked against a model (a dict of the weights each snapshot must
restore to, and its tags).

The invariants after every step: each snapshot the model holds restores bit-exactly (NaN, inf
and -0.0 included) with the tags the model says; the index lists exactly the model's
snapshots; gc never removes an object a snapshot reaches (verify stays ok, the reachable
digests all exist).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, invariant, precondition, rule

from weightstore import StoreSettings, WeightStore

TASKS = ["a", "b"]
TAG_NAMES = ["best", "prod"]
SPECIALS = torch.tensor([float("nan"), float("inf"), -float("inf"), -0.0, 0.0, 1e-45])


def _weights(seed: int, change: int) -> dict[str, torch.Tensor]:
    """Weights of one lineage (``seed``) after ``change`` small updates: successive versions
    differ a little, so saves make delta chains; some versions repeat, so objects dedup."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(32, 16, generator=g)
    w[0, :6] = SPECIALS
    if change:
        w[change % 32] += change * 1e-3
    frozen = torch.arange(64, dtype=torch.int32) * seed
    return {"w": w, "b": torch.full((16,), float(change), dtype=torch.bfloat16), "frozen": frozen}


class StoreModel(RuleBasedStateMachine):
    snapshots = Bundle("snapshots")

    def __init__(self) -> None:
        super().__init__()
        self.folder = tempfile.TemporaryDirectory()
        self.store = WeightStore.open(
            Path(self.folder.name) / "store", settings=StoreSettings(fsync=False, threads=2)
        )
        self.expected: dict[str, dict[str, torch.Tensor]] = {}  # snapshot id -> weights
        self.task_of: dict[str, str] = {}
        self.tags: dict[tuple[str, str], str] = {}  # (task, tag) -> snapshot id
        self.order: list[str] = []  # commit order, oldest first

    def teardown(self) -> None:
        self.store.close()
        self.folder.cleanup()

    @rule(
        target=snapshots,
        task=st.sampled_from(TASKS),
        seed=st.integers(1, 2),
        change=st.integers(0, 3),
        tag=st.none() | st.sampled_from(TAG_NAMES),
    )
    def save(self, task: str, seed: int, change: int, tag: str | None) -> str:
        weights = _weights(seed, change)
        snap = self.store.save(task, weights, tags=[tag] if tag else [])
        self.expected[snap.id] = {k: v.clone() for k, v in weights.items()}
        self.task_of[snap.id] = task
        self.order.append(snap.id)
        if tag:
            self.tags[(task, tag)] = snap.id
        return snap.id

    @precondition(lambda self: bool(self.expected))
    @rule(snapshot=snapshots, tag=st.sampled_from(TAG_NAMES))
    def tag(self, snapshot: str, tag: str) -> None:
        if snapshot not in self.expected:
            return
        self.store.tag(snapshot, tag)
        self.tags[(self.task_of[snapshot], tag)] = snapshot

    @rule(task=st.sampled_from(TASKS), tag=st.sampled_from(TAG_NAMES))
    def untag(self, task: str, tag: str) -> None:
        if (task, tag) in self.tags:
            self.store.untag(task, tag)
            del self.tags[(task, tag)]

    @rule(snapshot=snapshots)
    def delete(self, snapshot: str) -> None:
        if snapshot not in self.expected:
            return
        self.store.delete(snapshot)
        self._forget(snapshot)

    @rule(task=st.sampled_from(TASKS), keep_last=st.integers(0, 2))
    def prune(self, task: str, keep_last: int) -> None:
        if task not in {self.task_of[s] for s in self.expected}:
            return
        newest_first = [s for s in reversed(self.order) if self.task_of[s] == task]
        tagged = set(self.tags.values())
        doomed = {s for s in newest_first[keep_last:] if s not in tagged}
        removed = self.store.prune(task, keep_last=keep_last)
        assert {s.id for s in removed} == doomed
        for s in doomed:
            self._forget(s)

    @rule()
    def gc(self) -> None:
        self.store.gc(grace_seconds=0)

    @precondition(lambda self: bool(self.expected))
    @rule(snapshot=snapshots)
    def restore(self, snapshot: str) -> None:
        if snapshot not in self.expected:
            return
        got = self.store.restore(snapshot, verify=True)
        want = self.expected[snapshot]
        assert got.keys() == want.keys()
        for name, tensor in want.items():
            assert got[name].dtype == tensor.dtype
            # Bit patterns, so NaN payloads and -0.0 count.
            assert torch.equal(got[name].view(torch.uint8), tensor.view(torch.uint8)), name

    def _forget(self, snapshot: str) -> None:
        del self.expected[snapshot]
        self.order.remove(snapshot)
        self.tags = {k: v for k, v in self.tags.items() if v != snapshot}

    @invariant()
    def index_matches_the_model(self) -> None:
        listed = {s.id: s for s in self.store.log()}
        assert set(listed) == set(self.expected)
        for sid, snap in listed.items():
            want = sorted(tag for (task, tag), s in self.tags.items() if s == sid)
            assert sorted(snap.tags) == want

    @invariant()
    def gc_never_removes_what_a_snapshot_reaches(self) -> None:
        # Per snapshot, not the store-wide verify: that one walks the same reachability query
        # gc uses, so it would not see gc's mistake. Decoding needs every base of every chain.
        for sid in self.expected:
            result = self.store.verify(sid)
            assert result.ok, (sid, result)


TestStoreModel = StoreModel.TestCase
TestStoreModel.settings = settings(
    max_examples=25,
    stateful_step_count=20,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
