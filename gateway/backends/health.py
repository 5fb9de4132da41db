"""Active health probes: a background loop that asks every backend ``health_path``."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable

from gateway.backends.backend import Backend
from gateway.backends.load import parse_load
from gateway.backends.transport import TransportError, TransportTimeoutError

log = logging.getLogger("ragate.health")


async def probe(backend: Backend, timeout_s: float, unhealthy_after: int = 2) -> bool:
    """One probe; updates ``backend.healthy`` and returns it.

    A backend turns unhealthy after ``unhealthy_after`` failed probes in a row, and healthy
    again after one good probe. A probe that times out while the backend has requests in
    flight does not count: llama.cpp answers nothing while it generates, and a busy
    backend is not a dead one (a refused connection still counts at once).
    """
    busy = backend.in_flight > 0
    try:
        response = await backend.client.request("GET", backend.health_path, timeout_s=timeout_s)
        ok = response.status_code == 200
        error = None if ok else f"health probe got HTTP {response.status_code}"
    except TransportTimeoutError as exc:
        ok, error = False, f"health probe failed: timeout ({exc})"
        if busy:
            backend.last_probe_at = time.monotonic()
            return backend.healthy
    except TransportError as exc:
        ok, error = False, f"health probe failed: {exc}"
        backend.probe_failures = unhealthy_after - 1  # refused / reset: down on this probe
    backend.last_probe_at = time.monotonic()
    if ok:
        backend.probe_failures = 0
    else:
        backend.probe_failures += 1
        backend.last_error = error
    healthy = ok or (backend.healthy and backend.probe_failures < unhealthy_after)
    if healthy != backend.healthy:
        log.warning("backend %s is now %s%s", backend.name,
                    "healthy" if healthy else "unhealthy", f" ({error})" if error else "")
    backend.healthy = healthy
    return healthy


async def scrape(backend: Backend, timeout_s: float) -> None:
    """Refresh the backend's queue length and KV usage from its /metrics."""
    try:
        response = await backend.client.request("GET", "/metrics", timeout_s=timeout_s)
    except TransportError:
        return  # the health probe reports reachability; load stays as last seen
    if response.status_code != 200:
        return
    signals = parse_load(response.text)
    if signals.waiting is not None:
        backend.waiting = signals.waiting
    if signals.kv_usage is not None:
        backend.kv_usage = signals.kv_usage


async def _probe_and_scrape(backend: Backend, timeout_s: float) -> None:
    if await probe(backend, timeout_s) and backend.scrape_metrics:
        await scrape(backend, timeout_s)


async def probe_all(backends: Iterable[Backend], timeout_s: float) -> None:
    await asyncio.gather(*(_probe_and_scrape(b, timeout_s) for b in backends if not b.removed))
