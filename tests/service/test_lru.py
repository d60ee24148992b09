"""The LRU cache: bounded by a cost, least recently used out first, hits and misses counted."""

from __future__ import annotations

import torch

from atelier.service.encodings import nbytes
from atelier.service.lru import LRUCache


def test_the_cache_evicts_the_least_recently_used_past_its_byte_budget() -> None:
    cache = LRUCache(300, cost=nbytes)
    for name in "abc":
        cache.put(name, torch.zeros(25))  # 100 bytes each
    assert cache.get("a") is not None  # a is now the most recent
    cache.put("d", torch.zeros(25))
    assert "b" not in cache and all(k in cache for k in "acd")
    assert cache.used == 300
    cache.put("huge", torch.zeros(1000))  # bigger than the whole cache: not kept, nothing evicted
    assert "huge" not in cache and len(cache) == 3


def test_the_cache_counts_hits_and_misses() -> None:
    cache = LRUCache(2)
    cache.put("x", 1)
    cache.get("x")
    cache.get("y")
    assert (cache.hits, cache.misses) == (1, 1)
