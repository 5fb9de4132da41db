"""Usage and the per-team counters are summed per key and model and written once a second:
nothing counted while a write is out waits for the next request to be written."""

from __future__ import annotations

import asyncio

from gateway.context import RequestContext
from gateway.metrics import Metrics
from gateway.tenants.accounting import Tenancy
from gateway.tenants.limits import LocalRateLimiter
from gateway.tenants.usage import UsageRow


class SlowUsage:
    """A usage store whose writes take a while (Redis far away)."""

    def __init__(self) -> None:
        self.rows: list[UsageRow] = []

    async def add_many(self, rows: list[UsageRow]) -> None:
        await asyncio.sleep(0.2)
        self.rows += rows

    async def rows_of(self) -> int:
        return sum(r.requests for r in self.rows)

    async def close(self) -> None:
        return None


def request(status: int = 200) -> RequestContext:
    ctx = RequestContext("req", "POST", "/v1/chat/completions")
    ctx.key_id, ctx.principal, ctx.team, ctx.model = "key_1", "app", "red", "m"
    ctx.status, ctx.prompt_tokens, ctx.completion_tokens = status, 7, 3
    return ctx


async def test_what_is_counted_during_a_write_is_written_without_another_request() -> None:
    usage, metrics = SlowUsage(), Metrics()
    tenancy = Tenancy(LocalRateLimiter(), usage, metrics)  # type: ignore[arg-type]
    tenancy.flush_interval_s = 0.05
    try:
        tenancy.finish(request())
        await asyncio.sleep(0.1)  # the first write is out
        tenancy.finish(request())
        tenancy.finish(request(500))
        await asyncio.sleep(0.6)  # no request comes after these
        assert await usage.rows_of() == 3
        assert sum(r.errors for r in usage.rows) == 1
        assert [r.day.count("-") for r in usage.rows] == [2, 2]  # 2026-12-03, not 20261203
        text = metrics.registry.get_sample_value(
            "ragate_tenant_tokens_total", {"team": "red", "model": "m", "direction": "in"})
        assert text == 21.0
        assert metrics.registry.get_sample_value(
            "ragate_tenant_requests_total", {"team": "red", "model": "m", "outcome": "error"}) == 1
    finally:
        await tenancy.close()
