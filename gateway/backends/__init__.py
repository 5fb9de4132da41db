"""Backends: the pool of upstream servers, their health, and dispatch with retries."""

from gateway.backends.backend import Backend, Target
from gateway.backends.breaker import BreakerState, CircuitBreaker
from gateway.backends.dispatch import UpstreamReply, dispatch
from gateway.backends.pool import BackendPool, ModelRoute

__all__ = [
    "Backend",
    "BackendPool",
    "BreakerState",
    "CircuitBreaker",
    "ModelRoute",
    "Target",
    "UpstreamReply",
    "dispatch",
]
