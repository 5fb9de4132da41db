"""One upstream server: its HTTP client, health, breaker and in-flight count."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import httpx

from gateway.backends.breaker import CircuitBreaker
from gateway.backends.kinds import KINDS, Kind
from gateway.backends.transport import Timeouts, Upstream, make_upstream
from gateway.settings import BackendConfig, PoolConfig


class Backend:
    """A server reached at ``url``; several model entries (or LoRA adapters) may share it.

    ``healthy`` is the active probe's verdict (optimistic until the first probe), the
    breaker is the passive one; a backend is routable only when both agree and it is
    not draining.
    """

    def __init__(
        self,
        name: str,
        config: BackendConfig,
        pool: PoolConfig,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.name = name
        self.url = config.url
        self.kind = config.kind
        self.dialect: Kind = KINDS[config.kind]
        self.health_path = config.health_path or self.dialect.health_path
        self.scrape_metrics = (config.scrape_metrics if config.scrape_metrics is not None
                               else self.dialect.scrapes_metrics)
        headers = {"Authorization": f"Bearer {config.api_key}"} if config.api_key else {}
        self.client: Upstream = make_upstream(
            config.url, headers=headers, transport=transport,
            timeouts=Timeouts(pool.connect_timeout_s, pool.read_timeout_s, pool.write_timeout_s),
            max_connections=pool.max_connections, keepalive_s=pool.keepalive_s,
        )
        self.breaker = CircuitBreaker(pool.breaker.failure_threshold, pool.breaker.reset_timeout_s)
        self.in_flight = 0
        self.waiting = 0  # queued inside the backend, from its /metrics when scraped
        self.kv_usage = 0.0
        self.idle = asyncio.Event()
        self.idle.set()
        self.healthy = True
        self.probe_failures = 0
        self.last_error: str | None = None
        self.last_probe_at: float | None = None
        self.draining = False
        self.removed = False
        self.ttft_s: float | None = None  # moving average of its recent replies' TTFT

    def observe_ttft(self, seconds: float) -> None:
        # an exponential average over about the last 20 replies: what the console shows
        self.ttft_s = seconds if self.ttft_s is None else self.ttft_s + 0.1 * (
            seconds - self.ttft_s)

    def routable(self) -> bool:
        return self.healthy and not self.draining and not self.removed and self.breaker.can_route()

    def begin(self) -> None:
        self.in_flight += 1
        self.idle.clear()
        self.breaker.on_dispatch()

    def end(self) -> None:
        self.in_flight -= 1
        if self.in_flight == 0:
            self.idle.set()

    def mark_down(self, reason: str) -> None:
        """A refused connection is proof enough; the next good probe brings it back."""
        self.healthy = False
        self.last_error = reason

    def state(self) -> str:
        if self.removed:
            return "removed"
        if self.draining:
            return "drained" if self.in_flight == 0 else "draining"
        if not self.healthy:
            return "unhealthy"
        return "healthy" if self.breaker.can_route() else f"breaker_{self.breaker.state}"

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "url": self.url,
            "kind": str(self.kind),
            "state": self.state(),
            "healthy": self.healthy,
            "breaker": str(self.breaker.state),
            "consecutive_failures": self.breaker.consecutive_failures,
            "in_flight": self.in_flight,
            "waiting": self.waiting,
            "kv_usage": self.kv_usage,
            "draining": self.draining,
            "last_error": self.last_error,
            "ttft_ms": None if self.ttft_s is None else round(self.ttft_s * 1000, 1),
            "last_probe_age_s": (
                round(time.monotonic() - self.last_probe_at, 3) if self.last_probe_at else None
            ),
        }


@dataclass(frozen=True, slots=True)
class Target:
    """One backend as a member of one model's group, with the name it knows the model by."""

    backend: Backend
    upstream_model: str
    lora: str | None = None
    weight: int = 1

    @property
    def request_model(self) -> str:
        """The ``model`` field the backend expects, LoRA addressing included."""
        if self.lora is None:
            return self.upstream_model
        return self.backend.dialect.lora_model(self.upstream_model, self.lora)
