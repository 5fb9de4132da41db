"""Load signals scraped from a backend's Prometheus ``/metrics``.

Only a few series matter for routing, so the text is scanned for them directly instead
of being parsed whole (vLLM's exposition runs to hundreds of kilobytes of histograms).
Values of one series are summed over its label sets (one per served model).
"""

from __future__ import annotations

from dataclasses import dataclass

# (waiting requests, KV-cache usage 0..1) by engine; first found wins
WAITING = ("vllm:num_requests_waiting", "sglang:num_queue_reqs", "llamacpp:requests_deferred")
KV_USAGE = ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc", "sglang:token_usage",
            "llamacpp:kv_cache_usage_ratio")


@dataclass(frozen=True, slots=True)
class LoadSignals:
    waiting: int | None = None
    kv_usage: float | None = None


def parse_load(text: str) -> LoadSignals:
    values: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line[0] == "#":
            continue
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if name in WAITING or name in KV_USAGE:
            try:
                value = float(line.rsplit(" ", 1)[1])
            except (IndexError, ValueError):
                continue
            values[name] = values.get(name, 0.0) + value
    waiting = next((values[n] for n in WAITING if n in values), None)
    kv = next((values[n] for n in KV_USAGE if n in values), None)
    return LoadSignals(None if waiting is None else int(waiting),
                       None if kv is None else min(max(kv, 0.0), 1.0))
