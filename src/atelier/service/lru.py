"""A thread-safe least-recently-used cache bounded by a cost: bytes (the instant service's
photos and features, with :func:`atelier.service.encodings.nbytes`) or one per entry."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from atelier.service.metrics import Metrics


class LRUCache:
    """A thread-safe least-recently-used cache bounded by a cost (bytes, or 1 per entry).

    ``name`` labels the hit/miss counters in the metrics.
    """

    def __init__(
        self,
        capacity: int,
        *,
        cost: Callable[[Any], int] = lambda _value: 1,
        name: str = "cache",
        metrics: Metrics | None = None,
    ) -> None:
        self.capacity = capacity
        self.name = name
        self._cost = cost
        self._metrics = metrics
        self._items: OrderedDict[Hashable, tuple[Any, int]] = OrderedDict()
        self._used = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: Hashable) -> Any | None:
        with self._lock:
            found = self._items.get(key)
            if found is None:
                self.misses += 1
            else:
                self.hits += 1
                self._items.move_to_end(key)
        if self._metrics is not None:
            self._metrics.cache_requests.labels(self.name, "miss" if found is None else "hit").inc()
        return None if found is None else found[0]

    def __contains__(self, key: Hashable) -> bool:
        with self._lock:
            return key in self._items

    def put(self, key: Hashable, value: Any) -> None:
        cost = self._cost(value)
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._used -= old[1]
            if cost > self.capacity:
                return  # bigger than the whole cache: keeping it would evict everything else
            self._items[key] = (value, cost)
            self._used += cost
            while self._used > self.capacity and self._items:
                _, (_, dropped) = self._items.popitem(last=False)
                self._used -= dropped

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._used = 0

    @property
    def used(self) -> int:
        return self._used

    def __len__(self) -> int:
        return len(self._items)

    def stats(self) -> dict[str, int]:
        return {"entries": len(self), "used": self._used, "capacity": self.capacity, "hits": self.hits, "misses": self.misses}
