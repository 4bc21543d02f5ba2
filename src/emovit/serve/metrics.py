"""Prometheus metrics of one app (a private registry, so several apps can live in one process)."""

from __future__ import annotations

__all__ = ["Metrics"]


class Metrics:
    """Requests by path and status, latency, batch sizes, rejections, image errors, queue depth."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        self.requests = Counter(
            "emovit_requests", "HTTP requests by path and status", ["path", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "emovit_request_seconds",
            "Latency of the answered /v1/predict and /v1/video requests, by path",
            ["path"],
            registry=self.registry,
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
        )
        self.batch = Histogram(
            "emovit_batch_faces",
            "Faces per model batch",
            registry=self.registry,
            buckets=(1, 2, 4, 8, 16, 32, 64, 128),
        )
        self.rejections = Counter(
            "emovit_rejections", "Rejected requests by reason", ["reason"], registry=self.registry
        )
        self.image_errors = Counter(
            "emovit_image_errors", "Images that failed, by error_code", ["code"], registry=self.registry
        )
        self.queue = Gauge("emovit_queue_depth", "Jobs waiting for the model worker", registry=self.registry)

    def render(self) -> bytes:
        """The registry in Prometheus' text format."""
        from prometheus_client import generate_latest

        return generate_latest(self.registry)
