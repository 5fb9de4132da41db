"""Fixtures: the gateway app over backends faked with httpx.MockTransport."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.app import create_app
from gateway.settings import load_settings

Handler = Callable[[httpx.Request], Awaitable[httpx.Response] | httpx.Response]


def chat_reply(content: str = "hello", model: str = "up", **usage: int) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                     "finish_reason": "stop"}],
        "usage": {"prompt_tokens": usage.get("prompt", 5), "completion_tokens":
                  usage.get("completion", 2), "total_tokens": 7},
    }


def sse(*chunks: dict[str, Any] | str, sep: bytes = b"\n\n") -> bytes:
    out = b""
    for chunk in chunks:
        data = chunk if isinstance(chunk, str) else json.dumps(chunk)
        out += b"data: " + data.encode() + sep
    return out


def delta_chunk(content: str | None, finish: str | None = None, model: str = "up",
                role: str | None = None) -> dict[str, Any]:
    delta: dict[str, Any] = {}
    if role:
        delta["role"] = role
    if content is not None:
        delta["content"] = content
    return {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


class FakeFleet:
    """Routes each request to the handler registered for its host:port; logs every call."""

    def __init__(self) -> None:
        self.handlers: dict[str, Handler] = {}
        self.calls: list[tuple[str, str, dict[str, Any] | None]] = []

    def add(self, hostport: str, handler: Handler) -> str:
        self.handlers[hostport] = handler
        return f"http://{hostport}"

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        hostport = f"{request.url.host}:{request.url.port}"
        body = json.loads(request.content) if request.content else None
        self.calls.append((hostport, request.url.path, body))
        if request.method == "GET" and request.url.path in ("/v1/models", "/health"):
            if hostport not in self.handlers:
                raise httpx.ConnectError("connection refused", request=request)
            return httpx.Response(200, json={"object": "list", "data": []})
        handler = self.handlers.get(hostport)
        if handler is None:
            raise httpx.ConnectError("connection refused", request=request)
        result = handler(request)
        if isinstance(result, httpx.Response):
            return result
        return await result

    def chat_calls(self) -> list[str]:
        return [h for h, path, _ in self.calls if path.endswith("/completions")]


@pytest.fixture
def fleet() -> FakeFleet:
    return FakeFleet()


@asynccontextmanager
async def gateway_client(
    fleet: FakeFleet, config: dict[str, Any], data_dir: Path,
    headers: dict[str, str] | None = None,
) -> AsyncIterator[tuple[httpx.AsyncClient, Any]]:
    config = {"local_backends": [], **config}
    config.setdefault("server", {}).setdefault("data_dir", str(data_dir))
    # loading the embedding model costs seconds: only the knowledge tests turn it on
    config.setdefault("knowledge", {}).setdefault("enabled", False)
    config.setdefault("pool", {}).setdefault("health_interval_s", 3600)
    config["pool"].setdefault("retry_backoff_s", 0)
    settings = load_settings(**config)
    app = create_app(settings, transport=httpx.MockTransport(fleet))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw",
                                     headers=headers) as client:
            yield client, app


@pytest.fixture
def make_client(fleet: FakeFleet, tmp_path: Path) -> Callable[..., Any]:
    def _make(config: dict[str, Any], headers: dict[str, str] | None = None) -> Any:
        return gateway_client(fleet, config, tmp_path, headers)
    return _make


def one_model(*urls: str, policy: str = "round_robin", **backend: Any) -> dict[str, Any]:
    return {"models": [{"name": "m", "policy": policy,
                        "backends": [{"url": u, "model": "up", **backend} for u in urls]}]}


CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
