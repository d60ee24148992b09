"""A generic micro-batcher: items submitted from many threads, run in batches on one thread.

The instant service uses it so that requests of the same engine and size are painted in one
model call (bigger work items for the convolutions) and never fight over the cores.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from atelier.service.errors import BusyError


T = TypeVar("T")
R = TypeVar("R")


@dataclass
class _Pending(Generic[T, R]):
    item: T
    future: Future[R]


_STOP = object()


class MicroBatcher(Generic[T, R]):
    """Runs ``run(items)`` on one thread with items collected into batches.

    The thread takes the first waiting item, then waits up to ``window_s`` for more, at most
    ``max_batch`` in all and at most ``max_cost`` of ``cost(item)`` summed (an item that would
    pass it starts the next batch; one item alone may pass it), and calls ``run`` with them.
    ``run`` returns one result per item, in order; a result that is an exception is raised to
    that item's caller alone. Items that arrive while a batch runs wait for the next one, so
    under load batches fill without waiting.
    """

    def __init__(
        self,
        run: Callable[[list[T]], list[R | BaseException]],
        *,
        window_s: float,
        max_batch: int,
        cost: Callable[[T], float] | None = None,
        max_cost: float = float("inf"),
        coming: Callable[[], int] | None = None,
        name: str = "micro-batcher",
    ) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self._run = run
        self.window_s = max(0.0, window_s)
        self.max_batch = max_batch
        self._cost = cost or (lambda item: 0.0)
        self.max_cost = max_cost
        self._held: _Pending[T, R] | None = None  # taken from the queue, but over the last batch's budget
        # How many items are on their way (submitted or about to be); None: always wait the window.
        self._coming = coming
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._closed = False
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()
        self.batches: deque[int] = deque(maxlen=1000)  # recent batch sizes, for stats and tests

    def submit(self, item: T) -> Future[R]:
        future: Future[R] = Future()
        with self._lock:
            if self._closed:
                raise BusyError("the service is shutting down; try again in a moment")
            self._queue.put(_Pending(item, future))
        return future

    def close(self, timeout: float = 30.0) -> None:
        """Finish what was submitted, then stop the thread."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._queue.put(_STOP)
        self._thread.join(timeout)

    def _collect(self, first: _Pending[T, R]) -> tuple[list[_Pending[T, R]], bool]:
        batch = [first]
        spent = self._cost(first.item)
        deadline = time.monotonic() + self.window_s
        while len(batch) < self.max_batch:
            remaining = deadline - time.monotonic()
            if self._coming is not None and self._coming() <= len(batch) and self._queue.empty():
                remaining = 0.0  # nobody else is on the way: a lone caller does not wait for company
            try:
                nxt = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if nxt is _STOP:
                return batch, True
            cost = self._cost(nxt.item)
            if spent + cost > self.max_cost:
                self._held = nxt  # first of the next batch, ahead of everything still queued
                break
            batch.append(nxt)
            spent += cost
        return batch, False

    def _loop(self) -> None:
        stopping = False
        while not stopping:
            if self._held is not None:
                first, self._held = self._held, None
            else:
                first = self._queue.get()
            if first is _STOP:
                break
            batch, stopping = self._collect(first)
            live = [p for p in batch if p.future.set_running_or_notify_cancel()]
            if not live:
                continue
            self.batches.append(len(live))
            try:
                results = self._run([p.item for p in live])
                if len(results) != len(live):
                    raise RuntimeError(f"batch function returned {len(results)} results for {len(live)} items")
            except BaseException as exc:  # noqa: BLE001 - handed to every caller of the batch
                results = [exc] * len(live)
            for pending, result in zip(live, results):
                if isinstance(result, BaseException):
                    pending.future.set_exception(result)
                else:
                    pending.future.set_result(result)
        # Anything submitted before close() but not yet taken: paint it too.
        while True:
            try:
                rest = self._queue.get_nowait()
            except queue.Empty:
                break
            if rest is not _STOP and rest.future.set_running_or_notify_cancel():
                try:
                    rest.future.set_result(self._run([rest.item])[0])
                except BaseException as exc:  # noqa: BLE001
                    rest.future.set_exception(exc)
