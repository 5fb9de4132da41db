"""Prometheus metrics, in a registry owned by one app (no module-level collectors)."""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

# set by ``ragate serve --workers N`` (gateway.workers) before any worker imports
# prometheus-client: every worker then writes its values to files there, and whichever
# worker answers /metrics reads them all
MULTIPROCESS_DIR = "PROMETHEUS_MULTIPROC_DIR"

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class Metrics:
    def __init__(self) -> None:
        self.multiprocess = MULTIPROCESS_DIR in os.environ
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "ragate_requests", "Requests answered, by model, backend and HTTP status",
            ["route", "model", "backend", "status"], registry=r,
        )
        self.latency = Histogram(
            "ragate_request_duration_seconds", "Time from request to last byte",
            ["route", "model"], buckets=LATENCY_BUCKETS, registry=r,
        )
        self.ttft = Histogram(
            "ragate_time_to_first_token_seconds", "Time from request to first generated text",
            ["model", "backend"], buckets=LATENCY_BUCKETS, registry=r,
        )
        self.tokens = Counter(
            "ragate_tokens", "Tokens of replies, as the backend reported them or, when it "
            "sent no usage, as the gateway counted them", ["model", "direction", "source"],
            registry=r,
        )
        self.cached_tokens = Counter(
            "ragate_cached_prompt_tokens", "Prompt tokens the backend served from its cache",
            ["model", "backend"], registry=r,
        )
        self.in_flight = Gauge(
            "ragate_backend_in_flight", "Requests in flight per backend", ["backend"], registry=r,
            multiprocess_mode="livesum",  # workers: their sum
        )
        self.backend_healthy = Gauge(
            "ragate_backend_healthy", "1 when a backend is routable", ["backend"], registry=r,
            multiprocess_mode="livemax",  # workers: routable by at least one
        )
        self.retries = Counter(
            "ragate_upstream_retries", "Requests sent to another backend after a failure",
            ["model"], registry=r,
        )
        self.stream_errors = Counter(
            "ragate_stream_errors", "Streams that failed after they began", ["model", "backend"],
            registry=r,
        )

        self.prompt_tokens_counted = Counter(
            "ragate_conversation_prompt_tokens", "Prompt tokens of chat requests (stored "
            "and stateless) whose history the gateway counted", ["model"], registry=r,
        )
        self.predicted_reuse_tokens = Counter(
            "ragate_predicted_prefix_reuse_tokens", "Prompt tokens identical to the start of "
            "the conversation's previous prompt", ["model"], registry=r,
        )
        self.predicted_reuse_ratio = Histogram(
            "ragate_predicted_prefix_reuse_ratio", "Share of the prompt reusable from the "
            "previous prompt of the conversation", ["model"],
            buckets=(0, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 1), registry=r,
        )
        self.history_dropped_turns = Histogram(
            "ragate_history_dropped_turns", "Turns left out of the prompt by truncation",
            ["model", "strategy"], buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500), registry=r,
        )
        self.summaries = Counter(
            "ragate_summaries", "Summaries written at cut points", ["result"], registry=r,
        )
        self.token_count_fallbacks = Counter(
            "ragate_token_count_fallbacks", "Token counts estimated because the tokenizer "
            "source failed", ["model"], registry=r,
        )

        # per team (bounded: teams are created by admins), never per key
        self.tenant_requests = Counter(
            "ragate_tenant_requests", "Requests per team and model: ok, error, limited",
            ["team", "model", "outcome"], registry=self.registry)
        self.tenant_tokens = Counter(
            "ragate_tenant_tokens", "Tokens per team and model", ["team", "model", "direction"],
            registry=self.registry)
        self.route_predicted_cached = Counter(
            "ragate_route_predicted_cached_tokens", "Prompt tokens the routing index expected "
            "the chosen backend to hold", ["model"], registry=r,
        )
        self.route_reported_cached = Counter(
            "ragate_route_reported_cached_tokens", "Prompt tokens the chosen backend reported "
            "cached, for requests routed by a cache-aware policy", ["model"], registry=r,
        )

    def observe_backends(self, backends: Iterable[Any]) -> None:
        """The backend gauges, from each backend's own state (on a scrape; every second
        in each worker when there are several)."""
        for backend in backends:
            self.in_flight.labels(backend.name).set(backend.in_flight)
            self.backend_healthy.labels(backend.name).set(1 if backend.routable() else 0)

    def render(self) -> bytes:
        if not self.multiprocess:
            return generate_latest(self.registry)
        merged = CollectorRegistry()
        multiprocess.MultiProcessCollector(merged)
        return generate_latest(merged)

    def process_exit(self) -> None:
        """A worker's live gauges stop counting when it ends."""
        if self.multiprocess:
            multiprocess.mark_process_dead(os.getpid())
