"""Per-tenant bookkeeping around a request: admit it against the key's and the team's
limits, and when it is over (however it ended) settle what it used and record usage.

The pipeline calls ``admit`` once it knows the prompt's size; the request middleware
calls ``finish`` once the last byte went out, so an error, a dropped client or a stream
cut at its limit all release the request's lease and turn its reservation into what it
really used.
"""

from __future__ import annotations

import asyncio
import logging
import time
from functools import lru_cache
from typing import Any

from gateway.auth import ANONYMOUS, Principal
from gateway.context import RequestContext
from gateway.errors import GatewayError
from gateway.metrics import Metrics
from gateway.settings import Settings, StoreKind
from gateway.tenants.limits import (
    Admission,
    LocalRateLimiter,
    RateLimiter,
    Scope,
    Scopes,
    window_ids,
)
from gateway.tenants.usage import RedisUsageStore, SqliteUsageStore, UsageRow, UsageStore

log = logging.getLogger("ragate.tenants")


@lru_cache(maxsize=4096)  # principals are frozen and cached by the key ring
def scopes_of(principal: Principal) -> Scopes:
    """The limits a request is counted against: its key's, then its team's (the list is
    shared: never changed by callers)."""
    scopes = []
    if principal.limits.any():
        scopes.append(Scope(f"key:{principal.key_id}", principal.limits))
    if principal.team and principal.team_limits.any():
        scopes.append(Scope(f"team:{principal.team}", principal.team_limits))
    return Scopes(scopes)


class Tenancy:
    def __init__(self, limiter: RateLimiter, usage: UsageStore | None, metrics: Metrics) -> None:
        self.limiter = limiter
        self.usage = usage
        self.metrics = metrics
        self._tasks: set[asyncio.Task[None]] = set()
        # (day, key id, owner, team, model) -> requests, errors, prompt, completion, cached
        self._pending: dict[tuple[str, ...], list[int]] = {}
        self._counters: dict[tuple[str, str], tuple[Any, ...]] = {}
        self._flusher: asyncio.Task[None] | None = None
        self.flush_interval_s = 1.0

    async def admit(self, ctx: RequestContext, principal: Principal, prompt_tokens: int,
                    wanted: int | None) -> Admission | None:
        """None when the principal has no limits (nothing is counted for it)."""
        scopes = scopes_of(principal)
        if not scopes:
            return None
        try:
            admission = self.limiter.admit_here(scopes, prompt_tokens, wanted)
            if admission is None:  # no share here: Redis decides
                admission = await self.limiter.admit(scopes, prompt_tokens, wanted)
        except GatewayError:
            self.metrics.tenant_requests.labels(principal.team or "-", ctx.model or "",
                                                "limited").inc()
            raise
        ctx.admission = admission
        return admission

    def finish(self, ctx: RequestContext) -> None:
        """Settle (off the response path) and note the usage (called by the middleware)."""
        if ctx.key_id in (None, ANONYMOUS.key_id) or (ctx.model is None
                                                      and ctx.admission is None):
            return  # an open gateway has no tenants to account for
        prompt, completion = ctx.prompt_tokens or 0, ctx.completion_tokens or 0
        if ctx.admission is not None and not self.limiter.settle_here(
                ctx.admission, prompt + completion):  # a task only when it needs I/O
            self._spawn(self._settle(ctx, prompt + completion))
        if ctx.model is None:
            return
        # counted here and written once a second, to the usage store and the metrics
        # alike: one write per key and model per second instead of one per request (a
        # crash loses at most that second; with the row built and the three labelled
        # counters increased per request, this step was 4.5 of the 15.3 points keys and
        # limits cost in bench/overhead.py, about 1.5 after)
        slot = (window_ids(time.time())["day"], ctx.key_id or "-", ctx.principal or "-",
                ctx.team or "-", ctx.model)
        counts = self._pending.get(slot)
        if counts is None:
            counts = self._pending[slot] = [0, 0, 0, 0, 0]
        counts[0] += 1
        if (ctx.status or 500) >= 400:
            counts[1] += 1
        counts[2] += prompt
        counts[3] += completion
        counts[4] += ctx.cached_tokens or 0
        if self._flusher is None or self._flusher.done():
            self._flusher = self._spawn(self._flush_soon())

    def _spawn(self, coro: Any) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _settle(self, ctx: RequestContext, used: int) -> None:
        try:
            await self.limiter.settle(ctx.admission, used)
        except GatewayError as exc:
            log.warning("limits of request %s not settled: %s", ctx.request_id, exc.message)

    async def _flush_soon(self) -> None:
        # counted while a write was out (finish saw this flusher still running): keep
        # going until nothing is left, or they would wait for the next request
        while True:
            await asyncio.sleep(self.flush_interval_s)
            await self.flush()
            if not self._pending:
                return

    async def flush(self) -> None:
        pending, self._pending = self._pending, {}
        rows = [UsageRow(f"{day[:4]}-{day[4:6]}-{day[6:]}", key_id, owner, team, model, *counts)
                for (day, key_id, owner, team, model), counts in pending.items()]
        for row in rows:
            self._count(row)
        if not rows or self.usage is None:
            return
        try:
            await self.usage.add_many(rows)
        except GatewayError as exc:  # the replies went out already: note it, keep counting
            log.warning("usage of %d key/model rows not recorded: %s", len(rows), exc.message)

    def _count(self, row: UsageRow) -> None:
        counters = self._counters.get((row.team, row.model))
        if counters is None:  # the label lookups, once per team and model
            counters = self._counters[(row.team, row.model)] = (
                self.metrics.tenant_requests.labels(row.team, row.model, "ok"),
                self.metrics.tenant_requests.labels(row.team, row.model, "error"),
                self.metrics.tenant_tokens.labels(row.team, row.model, "in"),
                self.metrics.tenant_tokens.labels(row.team, row.model, "out"))
        if row.requests > row.errors:
            counters[0].inc(row.requests - row.errors)
        if row.errors:
            counters[1].inc(row.errors)
        if row.prompt_tokens:
            counters[2].inc(row.prompt_tokens)
        if row.completion_tokens:
            counters[3].inc(row.completion_tokens)

    async def close(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=5)
        await self.flush()
        await self.limiter.close()
        if self.usage is not None:
            await self.usage.close()


async def open_tenancy(settings: Settings, metrics: Metrics) -> Tenancy:
    """The limiter and usage store the settings name: Redis when replicas share them."""
    config = settings.auth.limits
    limiter: RateLimiter
    usage: UsageStore
    if settings.limits_shared:
        from gateway.tenants.redis_limits import RedisRateLimiter

        url = config.redis_url or settings.keys_redis_url
        limiter = RedisRateLimiter.from_url(url, prefix=settings.auth.key_prefix,
                                            default_cap=config.default_cap_tokens,
                                            lease_s=config.lease_s)
    else:
        limiter = LocalRateLimiter(default_cap=config.default_cap_tokens, lease_s=config.lease_s)
    if settings.keys_store is StoreKind.REDIS:
        usage = RedisUsageStore.from_url(settings.keys_redis_url, settings.auth.key_prefix)
    else:
        usage = await SqliteUsageStore(settings.server.data_dir / "usage.db").open()
    return Tenancy(limiter, usage, metrics)
