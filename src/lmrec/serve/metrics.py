"""Prometheus metrics of one server process, in its own CollectorRegistry.

A registry per app (not the global default) lets several apps live in one process (tests) and
keeps library-wide collectors out of the scrape. With `--workers N` each worker process counts
its own requests; a scrape reaches one worker.

Route labels are the route templates ("/v1/users/{user}/recommendations"), never raw paths, and
method labels are the standard methods or "OTHER" (servers accept any token as a method), so
the number of series stays bounded whatever clients send.
"""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})
# seconds; recommendation latencies sit between 1 ms and a few hundred ms
_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class ServiceMetrics:
    """The service's counters, histograms and gauges."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("lmrec_http_requests", "HTTP requests answered",
                                ["method", "route", "status"], registry=r)
        self.latency = Histogram("lmrec_http_request_duration_seconds",
                                 "Time to answer an HTTP request", ["method", "route"],
                                 buckets=_BUCKETS, registry=r)
        self.events_ingested = Counter("lmrec_events_ingested",
                                       "Events stored (durable) by POST /v1/events and "
                                       "/v1/feedback", registry=r)
        self.events_duplicate = Counter("lmrec_events_duplicate",
                                        "Events already stored (same user and event_id)",
                                        registry=r)
        self.impressions = Counter("lmrec_impressions_logged",
                                   "Recommendation responses logged as impressions (durable)",
                                   registry=r)
        self.users_forgotten = Counter("lmrec_users_forgotten", "DELETE /v1/users/{id} done",
                                       registry=r)
        self.reloads = Counter("lmrec_model_reloads", "Bundle reloads", ["outcome"], registry=r)
        self.model_info = Gauge("lmrec_model_info", "The served bundle (value 1)",
                                ["model", "model_version"], registry=r)
        self.model_loaded = Gauge("lmrec_model_loaded_timestamp_seconds",
                                  "When the served bundle was loaded", registry=r)
        self._model: tuple[str, str] | None = None

    def set_model(self, model: str, version: str, loaded_at: float) -> None:
        """Show the bundle served now (cheap when unchanged: called on every scrape)."""
        if self._model != (model, version):
            self.model_info.clear()  # one series: the bundle served now
            self.model_info.labels(model=model, model_version=version).set(1)
            self._model = (model, version)
        self.model_loaded.set(loaded_at)

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        method = method if method in METHODS else "OTHER"
        self.requests.labels(method=method, route=route, status=str(status)).inc()
        self.latency.labels(method=method, route=route).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
