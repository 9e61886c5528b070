"""Group commit: requests recorded together share a transaction, and each caller still
gets its own outcome. Pure Python here; tests/warehouse/test_recorder.py runs it on the
real databases."""

from __future__ import annotations

import threading
import time

import pytest

from imgclass.warehouse.group_commit import GroupCommit


class Store:
    """A write function whose first call can be held, like a transaction waiting for a lock."""

    def __init__(self):
        self.calls: list[list[str]] = []
        self.committed: list[str] = []
        self.release = threading.Event()
        self.writing = threading.Event()

    def write(self, items):
        if not self.calls:
            self.writing.set()
            self.release.wait(10)
        self.calls.append(list(items))
        if "bad" in items:
            raise ValueError("bad item")
        self.committed.extend(items)


def submit_all(store: Store, group: GroupCommit, batches: list[list[str]]):
    outcome: dict[str, BaseException | None] = {}

    def one(batch):
        try:
            group.submit(batch)
            outcome[batch[0]] = None
        except ValueError as exc:
            outcome[batch[0]] = exc

    threads = [threading.Thread(target=one, args=(b,)) for b in batches]
    threads[0].start()
    assert store.writing.wait(10)  # the first caller holds the writer's turn
    for t in threads[1:]:
        t.start()
    deadline = time.monotonic() + 10
    while group.waiting < len(batches) - 1 and time.monotonic() < deadline:
        time.sleep(0.001)
    return outcome, threads


def finish(store: Store, threads) -> None:
    store.release.set()
    for t in threads:
        t.join(10)
        assert not t.is_alive()


def test_callers_that_arrive_together_share_one_write():
    store = Store()
    group = GroupCommit(store.write)
    outcome, threads = submit_all(store, group, [["a"], ["b1", "b2"], ["c"], ["d"]])
    finish(store, threads)
    assert outcome == {"a": None, "b1": None, "c": None, "d": None}
    # The first alone (it was writing when the others came), then the rest in one write.
    assert store.calls[0] == ["a"]
    assert len(store.calls) == 2
    assert sorted(store.calls[1]) == ["b1", "b2", "c", "d"]
    assert sorted(store.committed) == ["a", "b1", "b2", "c", "d"]


def test_a_failing_caller_fails_alone():
    store = Store()
    group = GroupCommit(store.write)
    outcome, threads = submit_all(store, group, [["a"], ["b"], ["bad"], ["c"]])
    finish(store, threads)
    assert isinstance(outcome["bad"], ValueError)
    assert outcome["a"] is outcome["b"] is outcome["c"] is None
    assert sorted(store.committed) == ["a", "b", "c"]


def test_a_lone_caller_is_written_at_once_and_errors_reach_it():
    store = Store()
    store.release.set()
    group = GroupCommit(store.write)
    group.submit(["x"])
    with pytest.raises(ValueError):
        group.submit(["bad"])
    assert store.calls == [["x"], ["bad"]]


def test_a_burst_is_split_into_bounded_transactions():
    store = Store()
    group = GroupCommit(store.write, max_batches=3)
    outcome, threads = submit_all(store, group, [[f"r{i}"] for i in range(8)])
    finish(store, threads)
    assert all(error is None for error in outcome.values()) and len(outcome) == 8
    assert sorted(store.committed) == sorted(f"r{i}" for i in range(8))
    assert max(len(call) for call in store.calls) <= 3
