"""Step 6: choose a backend and send: the body for its kind, routing, dispatch with retries.

The body is the client's own JSON minus the gateway's fields, with the prompt the earlier
steps assembled, shaped per backend kind (``backends.kinds``). A stream always asks the
backend for usage; whether the client sees that chunk is the relay's business.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gateway.backends import ModelRoute, UpstreamReply, dispatch
from gateway.backends.backend import Target
from gateway.chat.tokens import message_text
from gateway.context import RequestContext
from gateway.metrics import Metrics
from gateway.routing import RoutingRequest
from gateway.session_hints import SessionHints
from gateway.settings import PoolConfig

# Fields that belong to the gateway and never reach a backend.
GATEWAY_FIELDS = frozenset({"ragate", "conversation_id"})
_UUID = re.compile(r"^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?"
                   r"[0-9a-fA-F]{12}$")


def backend_payload(data: Mapping[str, Any], **replace: Any) -> dict[str, Any]:
    """The client's body without the gateway's fields, with ``replace`` applied; a stream
    asks for usage (for metrics, and for the client when it asked)."""
    payload = {k: v for k, v in data.items() if k not in GATEWAY_FIELDS}
    payload.update(replace)
    if payload.get("stream"):
        payload["stream_options"] = {**(data.get("stream_options") or {}),
                                     "include_usage": True}
    return payload


def refuse_unhonoured(route: ModelRoute, path: str, payload: Mapping[str, Any]) -> None:
    """400 before any backend is called when a backend the route may choose cannot honour
    a parameter (every kind in the group is asked, so the answer never depends on which
    backend the policy picks)."""
    kinds = {t.backend.kind: t.backend.dialect for t in route.targets}
    for dialect in kinds.values():
        dialect.check(path, payload)


def dropped_header(reply: UpstreamReply, path: str, payload: Mapping[str, Any]
                   ) -> dict[str, str]:
    """``x-ragate-dropped-params`` naming what the chosen backend's kind did not get."""
    dropped = reply.backend.dialect.dropped(path, payload)
    return {"x-ragate-dropped-params": ",".join(dropped)} if dropped else {}


def prompt_text(messages: list[dict[str, Any]]) -> str:
    """A stable rendering of the messages, standing in for the backend's chat template."""
    return "".join(f"<|{m.get('role')}|>\n{message_text(m)}\n" for m in messages)


async def routing_request(route: ModelRoute, hints: SessionHints, ctx: RequestContext,
                          session: str | None, messages: list[dict[str, Any]] | None
                          ) -> RoutingRequest:
    """What the model's policy needs: the prompt text only for cache-aware policies, and
    the session's last backend (shared across replicas) for sticky ones."""
    prompt = first = first_user = hint = None
    if route.policy.uses_prompt and messages is not None:
        prompt = prompt_text(messages)
        first = message_text(messages[0]) if messages else ""
        first_user = next((message_text(m) for m in messages if m.get("role") == "user"), None)
    if session and route.policy.sticky:
        hint = await hints.get(route.name, session)
    return RoutingRequest(model=route.name, session_key=session, prompt=prompt,
                          first_message=first, first_user=first_user, hint=hint,
                          request_id=ctx.request_id)


@dataclass(frozen=True)
class Upstream:
    """Sends one request body to a backend of a route and notes where it went."""

    pool: PoolConfig
    metrics: Metrics
    hints: SessionHints

    async def send(self, ctx: RequestContext, route: ModelRoute, path: str,
                   payload: dict[str, Any], routing: RoutingRequest) -> UpstreamReply:
        stream = bool(payload.get("stream"))
        ctx.model, ctx.stream = route.name, stream  # the pipeline refused what cannot be
        # honoured already (refuse_unhonoured), before a rate limit counted the request

        def shape(target: Target) -> dict[str, Any]:
            return target.backend.dialect.shape(path, payload)

        # llama-cpp-python answers 400 to an X-Request-Id that is not a UUID: forward the
        # id only in that form (it is still echoed to the client whatever it is)
        forwarded = {"x-request-id": ctx.request_id} if _UUID.match(ctx.request_id) else None
        reply = await dispatch(route, path, shape, stream=stream, request=routing,
                               config=self.pool, headers=forwarded)
        ctx.backend, ctx.attempts = reply.backend.name, reply.attempts
        if reply.attempts > 1:
            self.metrics.retries.labels(route.name).inc(reply.attempts - 1)
        if routing.session_key and reply.backend.name != routing.hint and route.policy.sticky:
            await self.hints.set(route.name, routing.session_key, reply.backend.name)
        return reply

    def feedback(self, route: ModelRoute, ctx: RequestContext) -> None:
        """Tell a cache-aware policy what the backend reported it had cached."""
        if ctx.cached_tokens is None or not ctx.prompt_tokens:
            return
        predicted = route.policy.feedback(ctx.request_id, ctx.cached_tokens, ctx.prompt_tokens)
        if predicted is not None:
            self.metrics.route_predicted_cached.labels(route.name).inc(
                predicted * ctx.prompt_tokens)
            self.metrics.route_reported_cached.labels(route.name).inc(ctx.cached_tokens)
