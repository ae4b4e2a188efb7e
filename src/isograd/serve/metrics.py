"""Prometheus metrics of one server (its own registry, so several servers can share a process)."""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


class Metrics:
    """Requests, errors, batch sizes, queue depth and latencies, as Prometheus text.

    Names: ``isograd_requests_total{endpoint,status}``, ``isograd_errors_total{type}``,
    ``isograd_batch_size`` (histogram of requests per batch), ``isograd_queue_depth``
    (requests waiting for a batch), ``isograd_request_latency_seconds{endpoint}``.
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("isograd_requests", "Requests answered, by endpoint and HTTP "
                                "status.", ["endpoint", "status"], registry=r)
        self.errors = Counter("isograd_errors", "Error answers, by OpenAI error type.",
                              ["type"], registry=r)
        self.batch_size = Histogram("isograd_batch_size", "Requests per batch (one generation "
                                    "batch and one score pass).", buckets=BATCH_BUCKETS,
                                    registry=r)
        self.queue_depth = Gauge("isograd_queue_depth", "Requests waiting for a batch.",
                                 registry=r)
        self.latency = Histogram("isograd_request_latency_seconds", "Time from request to "
                                 "answer.", ["endpoint"], registry=r)

    def render(self) -> tuple[bytes, str]:
        """The exposition text and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
