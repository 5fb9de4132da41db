"""Per-request facts gathered along the way, read by the request log and metrics."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any


@dataclass
class RequestContext:
    request_id: str
    method: str
    path: str
    started: float = field(default_factory=time.perf_counter)
    status: int | None = None
    principal: str | None = None
    team: str | None = None
    key_id: str | None = None
    model: str | None = None
    backend: str | None = None
    attempts: int = 0
    stream: bool = False
    ttft_s: float | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cached_tokens: int | None = None
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    admission: Any = None  # the rate limiter's, settled when the request is over
    finished: bool = False  # logged, counted and settled (exactly once)

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def log_record(self) -> dict[str, Any]:
        record: dict[str, Any] = {
            "event": "request",
            "request_id": self.request_id,
            "method": self.method,
            "path": self.path,
            "status": self.status,
            "duration_ms": round(self.elapsed() * 1000, 2),
        }
        for key in ("principal", "team", "key_id", "model", "backend", "error"):
            value = getattr(self, key)
            if value is not None:
                record[key] = value
        if self.model is not None:
            record.update(
                stream=self.stream, attempts=self.attempts,
                ttft_ms=None if self.ttft_s is None else round(self.ttft_s * 1000, 2),
                prompt_tokens=self.prompt_tokens, completion_tokens=self.completion_tokens,
                cached_tokens=self.cached_tokens,
            )
        record.update(self.extra)
        return record
