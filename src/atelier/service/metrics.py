"""Prometheus metrics of one process: request and model latency, batch sizes, caches, the queue,
job durations, mail.

Each :class:`Metrics` has a registry of its own (not prometheus_client's global one), so that a
test can build several apps in one process and a scrape shows exactly this process's figures.
Workers in other processes (``atelier worker``) have their own figures; the queue depth, read
from the database at scrape time, is the same everywhere.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

#: Seconds, from a cached re-pick on a GPU to a big first paint on a laptop CPU.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
#: Jobs: a video frame batch or a tiny test recipe up to an hour-long HD painting.
JOB_BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class _QueueCollector(Collector):
    """Jobs per kind and status, read from the database when Prometheus scrapes."""

    def __init__(self, stats: Callable[[], Any]) -> None:
        self._stats = stats

    def collect(self) -> Iterable[Metric]:
        jobs = GaugeMetricFamily("atelier_jobs", "Jobs in the queue by kind and status", labels=["kind", "status"])
        oldest = GaugeMetricFamily(
            "atelier_queue_oldest_seconds", "Age of the oldest runnable queued job (0 if none)"
        )
        try:
            stats = self._stats()
        except Exception as exc:  # noqa: BLE001 - a scrape must not fail because the database did
            log.warning("queue metrics unavailable: %s", exc)
            return []
        for kind, per_status in sorted(stats.counts.items()):
            for status, count in sorted(per_status.items()):
                jobs.add_metric([kind, status], count)
        oldest.add_metric([], stats.oldest_queued_age or 0.0)
        return [jobs, oldest]


class Metrics:
    """The figures this process exposes at ``/metrics``."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.request_seconds = Histogram(
            "atelier_http_request_seconds",
            "HTTP request latency by route template, method and status class",
            ["route", "method", "status"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.stylize_seconds = Histogram(
            "atelier_stylize_seconds",
            "Instant stylization latency, from the decoded photo to the painted picture "
            "(waiting for a batch included)",
            ["engine"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.model_seconds = Histogram(
            "atelier_model_seconds",
            "Time the model spent on one batch, by engine and step (encode_content, "
            "encode_style, decode)",
            ["engine", "step"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "atelier_batch_size",
            "Requests painted together in one model call",
            ["engine"],
            buckets=(1, 2, 3, 4, 6, 8, 12, 16, 32),
            registry=r,
        )
        self.cache_requests = Counter(
            "atelier_cache_requests",
            "Instant caches: lookups by cache (content, style, filter) and result (hit, miss)",
            ["cache", "result"],
            registry=r,
        )
        self.job_seconds = Histogram(
            "atelier_job_seconds",
            "Job durations in this process's workers by kind and outcome",
            ["kind", "outcome"],
            buckets=JOB_BUCKETS,
            registry=r,
        )
        self.mails = Counter(
            "atelier_mails", "Mails handled by this process's sender by outcome", ["outcome"], registry=r
        )
        self._queue_collector: _QueueCollector | None = None

    def watch_queue(self, stats: Callable[[], Any]) -> None:
        """Report the queue depth from ``stats()`` (a :class:`~atelier.store.queue.QueueStats`)."""
        if self._queue_collector is None:
            self._queue_collector = _QueueCollector(stats)
            self.registry.register(self._queue_collector)

    def exposition(self) -> bytes:
        """The text format Prometheus scrapes."""
        return generate_latest(self.registry)
