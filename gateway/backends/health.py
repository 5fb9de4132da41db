"""Active health probes: a background loop that asks every backend ``health_path``."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable

import httpx

from gateway.backends.backend import Backend

log = logging.getLogger("ragate.health")


async def probe(backend: Backend, timeout_s: float) -> bool:
    """One probe; updates ``backend.healthy`` and returns it."""
    try:
        response = await backend.client.get(backend.health_path, timeout=timeout_s)
        ok = response.status_code == 200
        error = None if ok else f"health probe got HTTP {response.status_code}"
    except httpx.HTTPError as exc:
        ok, error = False, f"health probe failed: {type(exc).__name__}"
    if ok != backend.healthy:
        log.warning("backend %s is now %s%s", backend.name, "healthy" if ok else "unhealthy",
                    f" ({error})" if error else "")
    backend.healthy = ok
    backend.last_probe_at = time.monotonic()
    if error:
        backend.last_error = error
    return ok


async def probe_all(backends: Iterable[Backend], timeout_s: float) -> None:
    await asyncio.gather(*(probe(b, timeout_s) for b in backends if not b.removed))
