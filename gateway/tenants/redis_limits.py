"""The rate limiter every replica shares: the same rules as ``LocalRateLimiter``, each
admission one Lua script (checks for every scope first, then every increment: a request
is taken whole or refused whole, and no two replicas can both take the last slot).

    {p}:rl:{scope}:req              sorted set: admitted requests of the last 60 s
    {p}:rl:{scope}:lease            sorted set: requests in flight, scored by expiry
    {p}:rl:{scope}:tok:{window}:{id} tokens used and reserved in a minute, day or month
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from gateway.errors import StoreUnavailableError
from gateway.redis_client import redis_client
from gateway.tenants.limits import (
    FIELDS,
    TOKEN_WINDOWS,
    Admission,
    Refusal,
    Scope,
    rate_headers,
    refusal_error,
    seconds_to_reset,
    window_ids,
)

LIMIT_FIELDS = ("requests_per_minute", "max_concurrent", "tokens_per_minute",
                "tokens_per_day", "tokens_per_month")
WINDOW_TTL_MS = {"minute": 120_000, "day": 2 * 86_400_000, "month": 32 * 86_400_000}

_ADMIT = """
local now, lease, lease_ms = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3])
local prompt, wanted, default_cap = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local n, base = tonumber(ARGV[7]), 8
local t = base + n * 5
local ttl = {tonumber(ARGV[t]), tonumber(ARGV[t + 1]), tonumber(ARGV[t + 2])}
local reset = {tonumber(ARGV[t + 3]), tonumber(ARGV[t + 4]), tonumber(ARGV[t + 5])}
local tightest, tight_i, tight_w, tight_limit = nil, 0, 0, 0
for i = 0, n - 1 do
  local k, a = i * 5, base + i * 5
  local rpm, conc = tonumber(ARGV[a]), tonumber(ARGV[a + 1])
  if rpm >= 0 then
    redis.call('ZREMRANGEBYSCORE', KEYS[k + 1], '-inf', now - 60000)
    if redis.call('ZCARD', KEYS[k + 1]) >= rpm then
      local oldest = redis.call('ZRANGE', KEYS[k + 1], 0, 0, 'WITHSCORES')
      local retry = 1000
      if oldest[2] then retry = tonumber(oldest[2]) + 60000 - now end
      return {0, i, 0, rpm, retry}
    end
  end
  if conc >= 0 then
    redis.call('ZREMRANGEBYSCORE', KEYS[k + 2], '-inf', now)
    if redis.call('ZCARD', KEYS[k + 2]) >= conc then return {0, i, 1, conc, 1000} end
  end
  for w = 1, 3 do
    local limit = tonumber(ARGV[a + 1 + w])
    if limit >= 0 then
      local left = limit - tonumber(redis.call('GET', KEYS[k + 2 + w]) or '0')
      if tightest == nil or left < tightest then
        tightest, tight_i, tight_w, tight_limit = left, i, w, limit
      end
    end
  end
end
local cap, reserved = wanted, 0
if tightest ~= nil then
  if tightest <= prompt then return {0, tight_i, 1 + tight_w, tight_limit, reset[tight_w]} end
  if wanted < 0 then cap = default_cap end
  if cap > tightest - prompt then cap = tightest - prompt end
  reserved = prompt + cap
end
for i = 0, n - 1 do
  local k, a = i * 5, base + i * 5
  if tonumber(ARGV[a]) >= 0 then
    redis.call('ZADD', KEYS[k + 1], now, lease)
    redis.call('PEXPIRE', KEYS[k + 1], 60000)
  end
  if tonumber(ARGV[a + 1]) >= 0 then
    redis.call('ZADD', KEYS[k + 2], now + lease_ms, lease)
    redis.call('PEXPIRE', KEYS[k + 2], lease_ms)
  end
  for w = 1, 3 do
    if tonumber(ARGV[a + 1 + w]) >= 0 then
      redis.call('INCRBY', KEYS[k + 2 + w], reserved)
      redis.call('PEXPIRE', KEYS[k + 2 + w], ttl[w])
    end
  end
end
local req_left, req_reset = -1, 60000
if tonumber(ARGV[base]) >= 0 then
  req_left = tonumber(ARGV[base]) - redis.call('ZCARD', KEYS[1])
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  if oldest[2] then req_reset = tonumber(oldest[2]) + 60000 - now end
end
local tok_left = -1
if tonumber(ARGV[base + 2]) >= 0 then
  tok_left = tonumber(ARGV[base + 2]) - tonumber(redis.call('GET', KEYS[3]) or '0')
end
return {1, cap, reserved, req_left, req_reset, tok_left}
"""

_SETTLE = """
local lease, delta, n = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
for i = 0, n - 1 do
  local k, a = i * 4, 4 + i * 4
  if ARGV[a] == '1' then redis.call('ZREM', KEYS[k + 1], lease) end
  for w = 1, 3 do
    if ARGV[a + w] == '1' and redis.call('EXISTS', KEYS[k + 1 + w]) == 1 then
      redis.call('INCRBY', KEYS[k + 1 + w], delta)
    end
  end
end
return 1
"""


def _limit(value: int | None) -> int:
    return -1 if value is None else value


class RedisRateLimiter:
    def __init__(self, client: aioredis.Redis, *, prefix: str = "ragate",
                 default_cap: int = 4096, lease_s: float = 900,
                 clock: Callable[[], float] = time.time) -> None:
        self.redis = client
        self.prefix = prefix
        self.default_cap = default_cap
        self.lease_s = lease_s
        self._clock = clock
        self._admit = client.register_script(_ADMIT)
        self._settle = client.register_script(_SETTLE)

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> RedisRateLimiter:
        return cls(redis_client(url, connect_timeout_s=1, timeout_s=2), **kwargs)

    async def close(self) -> None:
        await self.redis.aclose()

    def _k(self, scope: str, *parts: str) -> str:
        return ":".join((self.prefix, "rl", scope, *parts))

    async def admit(self, scopes: list[Scope], prompt_tokens: int, wanted: int | None
                    ) -> Admission:
        now = self._clock()
        windows = window_ids(now)
        keys: list[str] = []
        args: list[Any] = [int(now * 1000), secrets.token_hex(8), int(self.lease_s * 1000),
                           prompt_tokens, -1 if wanted is None else wanted, self.default_cap,
                           len(scopes)]
        for scope in scopes:
            keys += [self._k(scope.name, "req"), self._k(scope.name, "lease")]
            keys += [self._k(scope.name, "tok", w, windows[w]) for w in TOKEN_WINDOWS]
            args += [_limit(getattr(scope.limits, f)) for f in LIMIT_FIELDS]
        args += [WINDOW_TTL_MS[w] for w in TOKEN_WINDOWS]
        args += [int(seconds_to_reset(w, now) * 1000) for w in TOKEN_WINDOWS]
        try:
            result = await self._admit(keys=keys, args=args)
        except RedisError as exc:
            raise StoreUnavailableError(f"rate limits cannot be checked: {exc}") from exc
        if result[0] == 0:
            _, index, field, allowed, retry_ms = (int(x) for x in result)
            raise refusal_error(Refusal(scopes[index].name, LIMIT_FIELDS[field], allowed,
                                        retry_ms / 1000))
        _, cap, reserved, req_left, req_reset_ms, tok_left = (int(x) for x in result)
        admission = Admission(args[1], scopes, windows, reserved, None if cap < 0 else cap)
        first = scopes[0].limits
        admission.headers = rate_headers(first, req_left, req_reset_ms / 1000,
                                     None if tok_left < 0 else tok_left,
                                     first.tokens_per_minute, seconds_to_reset("minute", now))
        return admission

    async def settle(self, admission: Admission, used_tokens: int) -> None:
        if admission.settled:
            return
        admission.settled = True
        keys: list[str] = []
        args: list[Any] = [admission.lease, used_tokens - admission.reserved,
                           len(admission.scopes)]
        for scope in admission.scopes:
            keys.append(self._k(scope.name, "lease"))
            keys += [self._k(scope.name, "tok", w, admission.windows[w]) for w in TOKEN_WINDOWS]
            args.append("1" if scope.limits.max_concurrent is not None else "0")
            args += ["1" if getattr(scope.limits, FIELDS[w]) is not None else "0"
                     for w in TOKEN_WINDOWS]
        try:
            await self._settle(keys=keys, args=args)
        except RedisError:
            pass  # the lease expires on its own; the reservation stays counted (safe side)
