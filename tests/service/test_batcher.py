"""The micro-batcher: items from many threads run in batches on one thread, within their caps,
each caller getting its own result (or its own error)."""

from __future__ import annotations

import threading
import time

import pytest

from atelier.service.batcher import MicroBatcher


def test_concurrent_items_are_batched_up_to_the_cap() -> None:
    seen: list[list[int]] = []
    gate = threading.Event()

    def run(items: list[int]) -> list[int]:
        gate.wait(5)
        seen.append(items)
        return [i * 10 for i in items]

    batcher: MicroBatcher[int, int] = MicroBatcher(run, window_s=0.05, max_batch=3)
    try:
        futures = [batcher.submit(i) for i in range(7)]
        gate.set()
        assert [f.result(5) for f in futures] == [i * 10 for i in range(7)]
    finally:
        batcher.close()
    assert all(len(batch) <= 3 for batch in seen)
    assert sorted(i for batch in seen for i in batch) == list(range(7))
    assert max(len(batch) for batch in seen) == 3


def test_batches_keep_to_their_cost_budget_and_lose_nothing() -> None:
    # Pixels, in the service: past a budget a CPU batch runs slower per image.
    seen: list[list[int]] = []
    gate = threading.Event()

    def run(items: list[int]) -> list[int]:
        gate.wait(5)
        seen.append(items)
        return items

    batcher: MicroBatcher[int, int] = MicroBatcher(run, window_s=0.05, max_batch=8, cost=float, max_cost=10)
    try:
        futures = [batcher.submit(i) for i in (12, 4, 5, 3, 2, 6, 1)]
        gate.set()
        assert [f.result(5) for f in futures] == [12, 4, 5, 3, 2, 6, 1]
    finally:
        batcher.close()
    # 12 alone passes the budget but is painted (alone); the item that would pass it opens the next batch.
    assert sorted(i for batch in seen for i in batch) == [1, 2, 3, 4, 5, 6, 12]
    assert [i for batch in seen for i in batch] == [12, 4, 5, 3, 2, 6, 1]  # arrival order kept
    assert all(len(batch) == 1 or sum(batch) <= 10 for batch in seen)
    assert [12] in seen


def test_a_lone_item_is_painted_when_the_window_ends() -> None:
    batcher: MicroBatcher[int, int] = MicroBatcher(lambda items: items, window_s=0.02, max_batch=8)
    try:
        assert batcher.submit(5).result(60) == 5
        assert list(batcher.batches) == [1]
    finally:
        batcher.close()


def test_a_lone_caller_does_not_wait_for_company_when_nobody_is_coming() -> None:
    # The window is ten minutes on purpose: with nobody else on the way it is not waited for, so
    # the result comes long before result()'s timeout (which a wait for the window would pass).
    coming = {"n": 1}
    batcher: MicroBatcher[int, int] = MicroBatcher(lambda items: items, window_s=600.0, max_batch=8, coming=lambda: coming["n"])
    try:
        assert batcher.submit(5).result(60) == 5
        coming["n"] = 2  # another call is decoding its photo: the window is waited for it
        first = batcher.submit(6)
        time.sleep(0.2)
        second = batcher.submit(7)
        assert (first.result(5), second.result(5)) == (6, 7)
        assert list(batcher.batches)[-1] == 2
    finally:
        batcher.close()


def test_an_error_for_one_item_reaches_that_caller_alone() -> None:
    def run(items: list[int]) -> list[int | BaseException]:
        return [ValueError("odd") if i % 2 else i for i in items]

    batcher: MicroBatcher[int, int] = MicroBatcher(run, window_s=0.05, max_batch=4)
    try:
        futures = [batcher.submit(i) for i in range(4)]
        assert futures[0].result(5) == 0 and futures[2].result(5) == 2
        with pytest.raises(ValueError, match="odd"):
            futures[1].result(5)
    finally:
        batcher.close()


def test_close_finishes_what_was_submitted_and_refuses_more() -> None:
    batcher: MicroBatcher[int, int] = MicroBatcher(lambda items: [i + 1 for i in items], window_s=0.0, max_batch=2)
    futures = [batcher.submit(i) for i in range(5)]
    batcher.close()
    assert [f.result(1) for f in futures] == [1, 2, 3, 4, 5]
    with pytest.raises(Exception, match="shutting down"):
        batcher.submit(1)
