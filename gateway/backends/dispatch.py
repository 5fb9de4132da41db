"""Send one request to a model's backends: choose, retry before the first byte, hand back.

Retry rule: connect errors, timeouts, 429 and 5xx that happen before any byte of the
reply is known go to another backend of the group, with exponential backoff. A non-streamed
reply is read whole inside the loop, so nothing has reached the client yet when it fails.
A streamed reply is committed once its first chunk arrived; after that nothing is retried.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import anyio

from gateway import wire
from gateway.backends.backend import Backend, Target
from gateway.backends.pool import ModelRoute, views
from gateway.backends.transport import (
    TransportConnectError,
    TransportError,
    TransportProtocolError,
    TransportTimeoutError,
    UpstreamResponse,
)
from gateway.errors import (
    BadGatewayError,
    BadRequestError,
    GatewayError,
    NoHealthyBackendError,
    UpstreamTimeoutError,
    upstream_error_from_response,
)
from gateway.routing import RoutingRequest
from gateway.settings import PoolConfig

log = logging.getLogger("ragate.dispatch")


@dataclass
class UpstreamReply:
    """A backend's successful reply; for streams, the body is still arriving."""

    target: Target
    status_code: int
    headers: Mapping[str, str]
    attempts: int
    body: bytes = b""  # the whole body (non-stream) or the first chunk (stream)
    chunks: AsyncIterator[bytes] | None = None
    _response: UpstreamResponse | None = field(default=None, repr=False)
    _closed: bool = False

    @property
    def backend(self) -> Backend:
        return self.target.backend

    async def close(self, *, failed: bool = False, drain: bool = False) -> None:
        """Release the connection and the in-flight slot; idempotent.

        ``drain`` reads what is left of a finished stream (briefly) so the connection goes
        back to the pool instead of being closed and reopened for the next request.
        """
        if self._closed:
            return
        self._closed = True
        if failed:
            self.backend.breaker.record_failure()
        try:
            if drain and self.chunks is not None:
                with anyio.move_on_after(1.0):
                    async for _ in self.chunks:
                        pass
            if self._response is not None:
                if failed:
                    await self._response.discard()
                else:
                    await self._response.aclose()
        except TransportError:
            pass  # the reply was complete; a broken tail only costs the connection
        finally:
            self.backend.end()


async def dispatch(
    route: ModelRoute,
    path: str,
    shape: Callable[[Target], dict[str, Any]],
    *,
    stream: bool,
    request: RoutingRequest,
    config: PoolConfig,
    headers: Mapping[str, str] | None = None,
) -> UpstreamReply:
    """Return the first backend reply that is not a retryable failure.

    Raises the client-facing GatewayError when every allowed attempt failed:
    503 when no backend could be reached, 504 when the last one timed out, the backend's
    own status for 4xx and for 5xx after retries.
    """
    tried: set[str] = set()
    failures: list[str] = []
    last: GatewayError | None = None
    all_unreachable = True
    for attempt in range(config.max_attempts):
        targets = route.routable(exclude=tried)
        if not targets:
            break
        chosen = route.policy.choose(views(targets), request)
        target = next(t for t in targets if t.backend.name == chosen.name)
        backend = target.backend
        tried.add(backend.name)
        if attempt:
            await asyncio.sleep(config.retry_backoff_s * (2 ** (attempt - 1)))
        backend.begin()
        try:
            return await _send(target, path, shape(target), stream, headers, attempt + 1,
                              request.request_id)
        except _Retryable as exc:
            backend.end()
            last = exc.error
            all_unreachable = all_unreachable and exc.unreachable
            failures.append(f"{backend.name}: {exc.error.message}")
        except BaseException:
            backend.end()
            raise
    if last is None or all_unreachable:
        detail = "; ".join(failures)
        raise NoHealthyBackendError(
            f"no healthy backend for model '{route.name}'" + (f" ({detail})" if detail else "")
        )
    raise last


class _Retryable(Exception):
    def __init__(self, error: GatewayError, *, unreachable: bool = False) -> None:
        self.error = error
        self.unreachable = unreachable


async def _send(
    target: Target,
    path: str,
    payload: dict[str, Any],
    stream: bool,
    headers: Mapping[str, str] | None,
    attempts: int,
    request_id: str | None = None,
) -> UpstreamReply:
    backend = target.backend
    body = wire.dumps({**payload, "model": target.request_model})
    response: UpstreamResponse | None = None
    try:
        try:
            response = await backend.client.stream(path, body, headers)
        except TransportProtocolError:
            # a pooled connection the backend had already closed (the keep-alive race):
            # nothing was answered, so once more on a fresh connection, not a failure
            response = await backend.client.stream(path, body, headers)
        if response.status_code >= 400:
            raw = await response.aread()
            await response.aclose()
            error = upstream_error_from_response(response.status_code, raw)
            log.warning("backend %s answered %s to request %s: %s", backend.name,
                        response.status_code, request_id, raw[:4000].decode("utf-8", "replace"))
            if response.status_code >= 500 and backend.dialect.client_fault(
                    response.status_code, error.message):
                backend.breaker.record_success()  # it answered; the request was at fault
                raise BadRequestError(f"the backend could not take this request: "
                                      f"{error.message}", code="invalid_request",
                                      param=error.param or _validated_field(error.message))
            if response.status_code >= 500:
                backend.breaker.record_failure()
                raise _Retryable(error)
            backend.breaker.record_success()  # it answered: the backend is alive
            if response.status_code == 429:
                raise _Retryable(error)  # overloaded here; another replica may have room
            raise error
        if not stream:
            raw = await response.aread()
            await response.aclose()
            backend.breaker.record_success()
            reply = UpstreamReply(target, response.status_code, response.headers, attempts, raw)
            backend.end()  # the caller holds nothing open
            reply._closed = True
            return reply
        chunks = response.aiter_raw()
        first = b""
        while not first:  # skip empty reads; a stream that ends before any byte failed
            first = await chunks.__anext__()
        backend.breaker.record_success()
        return UpstreamReply(target, response.status_code, response.headers, attempts,
                             first, chunks, response)
    except StopAsyncIteration as exc:
        await _discard(response)
        backend.breaker.record_failure()
        raise _Retryable(
            BadGatewayError(f"backend {backend.name} closed an empty stream")
        ) from exc
    except TransportConnectError as exc:
        await _aclose(response)
        backend.breaker.record_failure()
        backend.mark_down(f"connect error: {exc}")
        raise _Retryable(
            BadGatewayError(f"connect error: {exc}"), unreachable=True
        ) from exc
    except TransportTimeoutError as exc:
        await _discard(response)
        backend.breaker.record_failure()
        raise _Retryable(
            UpstreamTimeoutError(f"backend {backend.name} timed out ({exc})")
        ) from exc
    except TransportError as exc:
        await _discard(response)
        backend.breaker.record_failure()
        raise _Retryable(BadGatewayError(f"backend {backend.name} failed: {exc}")) from exc


_PYDANTIC_LOC = re.compile(r"'loc': \('body', '([^']+)'")


def _validated_field(message: str) -> str | None:
    """The field a pydantic validation dump names (llama-cpp-python sends those as 500)."""
    match = _PYDANTIC_LOC.search(message)
    return match.group(1) if match else None


async def _aclose(response: UpstreamResponse | None) -> None:
    if response is not None:
        await response.aclose()


async def _discard(response: UpstreamResponse | None) -> None:
    if response is not None:
        await response.discard()
