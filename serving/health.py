"""Wait for a model server to answer before anyone routes to it."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx

from serving.errors import ServingError


def wait_until_healthy(
    base_url: str,
    *,
    path: str = "/v1/models",
    timeout_s: float = 120.0,
    interval_s: float = 0.25,
    still_running: Callable[[], bool] | None = None,
) -> None:
    """Poll ``base_url + path`` until it answers 200; raise ServingError on timeout.

    ``still_running`` lets a launcher stop waiting as soon as its process died.
    """
    deadline = time.monotonic() + timeout_s
    last_error = "no answer yet"
    with httpx.Client(timeout=2.0) as client:
        while time.monotonic() < deadline:
            if still_running is not None and not still_running():
                raise ServingError(f"server at {base_url} exited before it became healthy")
            try:
                response = client.get(base_url + path)
                if response.status_code == 200:
                    return
                last_error = f"HTTP {response.status_code}"
            except httpx.HTTPError as exc:
                last_error = type(exc).__name__
            time.sleep(interval_s)
    raise ServingError(f"server at {base_url} not healthy after {timeout_s:.0f}s ({last_error})")
