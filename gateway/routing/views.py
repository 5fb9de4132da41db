"""What a policy may know: a snapshot of each endpoint, and the request."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class EndpointView:
    """One endpoint at the moment of choice."""

    name: str
    in_flight: int = 0
    weight: int = 1
    waiting: int = 0  # requests queued inside the backend (scraped from its /metrics)
    kv_usage: float = 0.0  # share of the backend's KV cache in use, 0..1 (scraped)

    @property
    def load(self) -> float:
        """Requests on the endpoint per unit of weight, the one load formula every policy
        uses. Our in-flight count already includes our requests queued inside the backend;
        its scraped queue also holds other replicas' requests: the larger of the two
        counts each request once."""
        return max(self.in_flight, self.waiting) / self.weight


@dataclass(frozen=True, slots=True)
class RoutingRequest:
    model: str
    session_key: str | None = None  # conversation id, or the user
    prompt: str | None = None  # the full templated prompt (cache-aware policies)
    first_message: str | None = None  # what SGLang's router keys chat requests on
    first_user: str | None = None  # a stateless conversation's key: its first user message
    hint: str | None = None  # the backend this session went to before (shared via Redis)
    request_id: str | None = None
