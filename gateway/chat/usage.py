"""Usage on every reply: the backend's own count when it sends one, else ours.

llama-cpp-python sends no usage when streaming (even with ``include_usage``), older SGLang
neither; without a count, token metrics and any token limit would be blind there. Our
count uses the model's tokenizer (``chat.tokens``): the prompt as assembled and the reply's
text. Which of the two a reply carried is counted in ``ragate_tokens_total{source}``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from gateway.context import RequestContext
from gateway.metrics import Metrics

Source = Literal["reported", "counted"]


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int
    source: Source
    cached_tokens: int | None = None

    def to_api(self) -> dict[str, Any]:
        usage: dict[str, Any] = {
            "prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
        }
        if self.cached_tokens is not None:
            usage["prompt_tokens_details"] = {"cached_tokens": self.cached_tokens}
        return usage


def reported(usage: Any, timings: Any = None) -> Usage | None:
    """The backend's usage, with cached prompt tokens from ``prompt_tokens_details`` or
    llama.cpp's ``timings.cache_n``; None unless both token counts are there."""
    cached = None
    if isinstance(timings, dict) and isinstance(timings.get("cache_n"), int):
        cached = timings["cache_n"]
    if not isinstance(usage, dict):
        return None
    prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
    if not isinstance(prompt, int) or not isinstance(completion, int):
        return None
    details = usage.get("prompt_tokens_details")
    if isinstance(details, dict) and isinstance(details.get("cached_tokens"), int):
        cached = details["cached_tokens"]
    return Usage(prompt, completion, "reported", cached)


def account(ctx: RequestContext, metrics: Metrics, usage: Usage) -> None:
    """The reply's usage into the request's log line and the token metrics."""
    model, backend = ctx.model or "", ctx.backend or ""
    ctx.prompt_tokens, ctx.completion_tokens = usage.prompt_tokens, usage.completion_tokens
    ctx.extra["usage_source"] = usage.source
    metrics.tokens.labels(model, "in", usage.source).inc(usage.prompt_tokens)
    metrics.tokens.labels(model, "out", usage.source).inc(usage.completion_tokens)
    if usage.cached_tokens is not None:
        ctx.cached_tokens = usage.cached_tokens
        metrics.cached_tokens.labels(model, backend).inc(usage.cached_tokens)
