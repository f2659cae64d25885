"""The service's Prometheus metrics (prometheus_client), one registry per app.

With `--workers N`, each worker process keeps its own counts and a scrape reaches one of them; a
Prometheus setup that needs the sum scrapes each worker (or runs one worker per container).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["Metrics", "CONTENT_TYPE_LATEST"]

_LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class Metrics:
    """Counters and histograms of one app; `render()` gives the Prometheus text exposition."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter("fastlstm_http_requests", "HTTP requests answered, by path and status",
                                ["path", "status"], registry=self.registry)
        self.errors = Counter("fastlstm_predict_errors", "Prediction requests refused or failed, by status",
                              ["status"], registry=self.registry)
        self.latency = Histogram("fastlstm_predict_latency_seconds", "Prediction latency, body read to answer",
                                 buckets=_LATENCY_BUCKETS, registry=self.registry)
        self.batch_size = Histogram("fastlstm_batch_size", "Requests merged into each model call",
                                    buckets=_BATCH_BUCKETS, registry=self.registry)
        self.batch_seconds = Histogram("fastlstm_batch_seconds", "Time of each batched model call",
                                       buckets=_LATENCY_BUCKETS, registry=self.registry)

    def on_batch(self, size: int, seconds: float) -> None:
        """The Batcher's hook (called from its worker thread; prometheus_client is thread-safe)."""
        self.batch_size.observe(size)
        self.batch_seconds.observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
