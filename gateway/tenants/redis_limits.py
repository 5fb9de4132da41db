"""The rate limiter every replica shares: the same rules as ``LocalRateLimiter``, each
admission one Lua script (checks for every scope first, then every increment: a request
is taken whole or refused whole, and no two replicas can both take the last slot).

    {p}:rl:{scope}:req              sorted set: admitted requests of the last 60 s
    {p}:rl:{scope}:lease            sorted set: requests in flight, scored by expiry
    {p}:rl:{scope}:tok:{window}:{id} tokens used and reserved in a minute, day or month
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
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
    duration,
    rate_headers,
    refusal_error,
    scopes_key,
    seconds_to_reset,
    window_ids,
)

PREFETCH_SLOTS = 32  # requests admitted locally per allowance, to begin with
MAX_PREFETCH_SLOTS = 1024  # a busy key's share doubles up to this
ALLOWANCE_S = 1.0  # an allowance's life: unused shares go back within it


@dataclass
class Allowance:
    """A share of every window, taken in Redis for requests this replica will admit
    without asking (granted only while each limit has at least ten times the share left,
    so it never decides who gets the last requests of a window: there every request is
    checked in Redis)."""

    lease: str
    scopes: list[Scope]
    windows: dict[str, str]
    slots: int
    tokens_left: int
    expires: float  # monotonic
    req_left: int
    tok_left: int
    used: int = 0
    in_flight: set[int] = field(default_factory=set)  # indices of requests not settled
    expired: bool = False
    returned: bool = False  # given back: its requests still out settle in Redis
    tokens_limited: bool = False
    granted_at: float = field(default_factory=time.monotonic)
    _fixed: dict[str, str] | None = None  # the headers' parts no request changes

    def headers(self, now: float) -> dict[str, str]:
        if self._fixed is None:
            first = self.scopes[0].limits
            self._fixed = rate_headers(first, self.req_left, 60.0,
                                       None if self.tok_left < 0 else self.tok_left,
                                       first.tokens_per_minute, 60.0)
        out = dict(self._fixed)
        if "x-ratelimit-remaining-requests" in out:
            out["x-ratelimit-remaining-requests"] = str(max(self.req_left - self.used, 0))
        if "x-ratelimit-reset-tokens" in out:
            out["x-ratelimit-reset-tokens"] = duration(seconds_to_reset("minute", now))
        return out


LIMIT_FIELDS = ("requests_per_minute", "max_concurrent", "tokens_per_minute",
                "tokens_per_day", "tokens_per_month")
WINDOW_TTL_MS = {"minute": 120_000, "day": 2 * 86_400_000, "month": 32 * 86_400_000}

# One call admits a batch of requests (those that arrived in the same event-loop tick),
# each in turn, exactly as if each had its own call: the script is atomic as a whole.
# ARGV: prefix, now, lease_ms, default_cap, the minute/day/month window ids, their TTLs,
# their resets; then per request: lease, prompt, wanted, scope count, and per scope its
# name and its five limits as "rpm,concurrent,tpm,tpd,tpmo" (-1: none). The keys are
# built here from the prefix (few arguments to encode: on the hot path the client's
# encoding cost more than the script), which ties the limits to one Redis (no cluster).
_ADMIT = """
local prefix, now = ARGV[1], tonumber(ARGV[2])
local lease_ms, default_cap = tonumber(ARGV[3]), tonumber(ARGV[4])
local win = {ARGV[5], ARGV[6], ARGV[7]}
local ttl = {tonumber(ARGV[8]), tonumber(ARGV[9]), tonumber(ARGV[10])}
local reset = {tonumber(ARGV[11]), tonumber(ARGV[12]), tonumber(ARGV[13])}
local names = {'minute', 'day', 'month'}
local function scope_of(name, limits)
  local base = prefix .. ':rl:' .. name
  local l = {}
  for v in string.gmatch(limits, '[^,]+') do l[#l + 1] = tonumber(v) end
  return {req = base .. ':req', lease = base .. ':lease', limits = l,
          tok = {base .. ':tok:minute:' .. win[1], base .. ':tok:day:' .. win[2],
                 base .. ':tok:month:' .. win[3]}}
end
local function admit(lease, prompt, wanted, want_k, want_t, scopes)
  local tightest, tight_i, tight_w, tight_limit = nil, 0, 0, 0
  for i, s in ipairs(scopes) do
    local rpm, conc = s.limits[1], s.limits[2]
    if rpm >= 0 then
      redis.call('ZREMRANGEBYSCORE', s.req, '-inf', now - 60000)
      if redis.call('ZCARD', s.req) >= rpm then
        local oldest = redis.call('ZRANGE', s.req, 0, 0, 'WITHSCORES')
        local retry = 1000
        if oldest[2] then retry = tonumber(oldest[2]) + 60000 - now end
        return {0, i - 1, 0, rpm, retry}
      end
    end
    if conc >= 0 then
      redis.call('ZREMRANGEBYSCORE', s.lease, '-inf', now)
      if redis.call('ZCARD', s.lease) >= conc then return {0, i - 1, 1, conc, 1000} end
    end
    for w = 1, 3 do
      local limit = s.limits[2 + w]
      if limit >= 0 then
        local left = limit - tonumber(redis.call('GET', s.tok[w]) or '0')
        if tightest == nil or left < tightest then
          tightest, tight_i, tight_w, tight_limit = left, i - 1, w, limit
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
  local counted = prompt >= 0  -- prompt -1: a share asked for alone, no request of its own
  if not counted then reserved = 0 end
  for _, s in ipairs(scopes) do
    if s.limits[1] >= 0 and counted then
      redis.call('ZADD', s.req, now, lease)
      redis.call('PEXPIRE', s.req, 62000)  -- share slots are scored a second ahead
    end
    if s.limits[2] >= 0 and counted then
      redis.call('ZADD', s.lease, now + lease_ms, lease)
      redis.call('PEXPIRE', s.lease, lease_ms)
    end
    for w = 1, 3 do
      if s.limits[2 + w] >= 0 and counted then
        redis.call('INCRBY', s.tok[w], reserved)
        redis.call('PEXPIRE', s.tok[w], ttl[w])
      end
    end
  end
  local granted, granted_tokens = 0, 0
  if want_k > 0 then
    local far = true
    for _, s in ipairs(scopes) do
      if s.limits[1] >= 0 and s.limits[1] - redis.call('ZCARD', s.req) < 10 * want_k then
        far = false
      end
      if s.limits[2] >= 0 and s.limits[2] - redis.call('ZCARD', s.lease) < 10 * want_k then
        far = false
      end
      for w = 1, 3 do
        if s.limits[2 + w] >= 0 and
            s.limits[2 + w] - tonumber(redis.call('GET', s.tok[w]) or '0') < 10 * want_t then
          far = false
        end
      end
    end
    if far then
      granted, granted_tokens = want_k, want_t
      local slots, leases = {}, {}
      for j = 1, want_k do
        slots[#slots + 1] = now + 1000
        slots[#slots + 1] = lease .. ':' .. j
        leases[#leases + 1] = now + lease_ms
        leases[#leases + 1] = lease .. ':' .. j
      end
      for _, s in ipairs(scopes) do
        if s.limits[1] >= 0 then redis.call('ZADD', s.req, unpack(slots)) end
        if s.limits[2] >= 0 then redis.call('ZADD', s.lease, unpack(leases)) end
        for w = 1, 3 do
          if s.limits[2 + w] >= 0 then redis.call('INCRBY', s.tok[w], want_t) end
        end
      end
    end
  end
  local first = scopes[1]
  local req_left, req_reset = -1, 60000
  if first.limits[1] >= 0 then
    req_left = first.limits[1] - redis.call('ZCARD', first.req)
    local oldest = redis.call('ZRANGE', first.req, 0, 0, 'WITHSCORES')
    if oldest[2] then req_reset = tonumber(oldest[2]) + 60000 - now end
  end
  local tok_left = -1
  if first.limits[3] >= 0 then
    tok_left = first.limits[3] - tonumber(redis.call('GET', first.tok[1]) or '0')
  end
  return {1, cap, reserved, req_left, req_reset, tok_left, granted, granted_tokens}
end
local results, a = {}, 14
while a <= #ARGV do
  local lease, prompt, wanted = ARGV[a], tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  local want_k, want_t, n = tonumber(ARGV[a + 3]), tonumber(ARGV[a + 4]), tonumber(ARGV[a + 5])
  local scopes = {}
  for i = 0, n - 1 do scopes[#scopes + 1] = scope_of(ARGV[a + 6 + 2 * i], ARGV[a + 7 + 2 * i]) end
  results[#results + 1] = admit(lease, prompt, wanted, want_k, want_t, scopes)
  a = a + 6 + 2 * n
end
return results
"""

# Gives back what an allowance did not use: ARGV prefix, slots granted, slots used,
# tokens left, the lease, the minute/day/month ids it was granted in, the indices of its
# requests still in flight (their leases stay; each is settled on its own later), then
# per scope its name and limits (as in _ADMIT).
_RETURN = """
local prefix, granted, used = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local tokens_left, lease = tonumber(ARGV[4]), ARGV[5]
local win = {ARGV[6], ARGV[7], ARGV[8]}
local keep = {}
for v in string.gmatch(ARGV[9], '[^,]+') do
  local j = tonumber(v)
  if j then keep[j] = true end
end
local a = 10
while a <= #ARGV do
  local base = prefix .. ':rl:' .. ARGV[a]
  local l = {}
  for v in string.gmatch(ARGV[a + 1], '[^,]+') do l[#l + 1] = tonumber(v) end
  if l[1] >= 0 and used < granted then
    local unused = {}
    for j = used + 1, granted do unused[#unused + 1] = lease .. ':' .. j end
    redis.call('ZREM', base .. ':req', unpack(unused))
  end
  if l[2] >= 0 then
    local leases = {}
    for j = 1, granted do
      if not keep[j] then leases[#leases + 1] = lease .. ':' .. j end
    end
    if #leases > 0 then redis.call('ZREM', base .. ':lease', unpack(leases)) end
  end
  local windows = {'minute', 'day', 'month'}
  for w = 1, 3 do
    local key = base .. ':tok:' .. windows[w] .. ':' .. win[w]
    if l[2 + w] >= 0 and redis.call('EXISTS', key) == 1 then
      redis.call('INCRBY', key, -tokens_left)
    end
  end
  a = a + 2
end
return 1
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


@lru_cache(maxsize=4096)  # Limits are frozen: one string per distinct set of limits
def _packed(limits: Any) -> str:
    return ",".join(str(_limit(getattr(limits, f))) for f in LIMIT_FIELDS)


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
        self.settle_interval_s = 0.05
        self._queued: list[Any] = []
        self._calling = False  # an admission call is out
        self._batches: set[asyncio.Task[None]] = set()
        self._pending: list[tuple[list[str], list[Any]]] = []
        self._flusher: asyncio.Task[None] | None = None
        self._return = client.register_script(_RETURN)
        self._allowances: dict[str, Allowance] = {}
        self._share_asked: set[str] = set()
        # per set of scopes: how many slots the next share asks for. A share three
        # quarters used within half its life doubles the next (so a busy key asks Redis
        # about once per 768 requests, not per 24); one mostly unused halves it
        self._share_slots: dict[str, int] = {}
        self.prefetch = True

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> RedisRateLimiter:
        return cls(redis_client(url, connect_timeout_s=1, timeout_s=2), **kwargs)

    async def close(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
        await self.flush()
        for key, allowance in list(self._allowances.items()):
            self._expire(key, allowance)
        if self._batches:
            await asyncio.wait(set(self._batches), timeout=5)
        await self.redis.aclose()

    def _k(self, scope: str, *parts: str) -> str:
        return ":".join((self.prefix, "rl", scope, *parts))

    async def admit(self, scopes: list[Scope], prompt_tokens: int, wanted: int | None
                    ) -> Admission:
        """Sent at once when no call is out; else queued and sent, with every other
        admission that arrived meanwhile, as one call when the one out returns (at 32
        requests in flight one round trip serves many; at 1 nothing waits)."""
        local = self.admit_here(scopes, prompt_tokens, wanted)
        if local is not None:
            return local
        key = scopes_key(scopes)
        lease = secrets.token_hex(8)
        # one request at a time asks for a share per set of scopes: a batch of requests
        # that all found the share empty must not take one each
        asks = self.prefetch and key not in self._share_asked
        if asks:
            self._share_asked.add(key)
        slots, share = self._share_wanted(key, prompt_tokens, wanted) if asks else (0, 0)
        entry = (scopes, prompt_tokens, wanted, lease, slots, share)
        try:
            result, now = await self._admit_one(entry)
        finally:
            if asks:
                self._share_asked.discard(key)
        if result[0] == 0:
            _, index, field, allowed, retry_ms = result
            raise refusal_error(Refusal(scopes[index].name, LIMIT_FIELDS[field], allowed,
                                        retry_ms / 1000))
        _, cap, reserved, req_left, req_reset_ms, tok_left, *_ = result
        windows = window_ids(now)
        self._keep_share(scopes, lease, windows, result)
        admission = Admission(lease, scopes, windows, reserved,
                              None if cap < 0 else cap)
        first = scopes[0].limits
        admission.headers = rate_headers(first, req_left, req_reset_ms / 1000,
                                         None if tok_left < 0 else tok_left,
                                         first.tokens_per_minute,
                                         seconds_to_reset("minute", now))
        return admission

    def admit_here(self, scopes: list[Scope], prompt_tokens: int, wanted: int | None
                   ) -> Admission | None:
        """From this replica's share of the scopes' windows, if it can cover the request."""
        key = scopes_key(scopes)
        allowance = self._allowances.get(key)
        if allowance is None:
            return None
        local = self._take(allowance, prompt_tokens, wanted)
        if local is None:
            return None
        # three quarters used: ask Redis for the next share in the background while the
        # others still take from this one (none falls through to Redis)
        if (4 * allowance.used >= 3 * allowance.slots and self.prefetch
                and key not in self._share_asked):
            if time.monotonic() - allowance.granted_at < ALLOWANCE_S / 2:  # busy
                self._share_slots[key] = min(2 * allowance.slots, MAX_PREFETCH_SLOTS)
            self._renew(key, scopes, prompt_tokens, wanted)
        return local

    def _share_wanted(self, key: str, prompt_tokens: int, wanted: int | None
                      ) -> tuple[int, int]:
        """(slots, tokens) of the next share for these scopes: requests like this one."""
        slots = self._share_slots.get(key, PREFETCH_SLOTS)
        return slots, (prompt_tokens + (self.default_cap if wanted is None else wanted)) * slots

    def _renew(self, key: str, scopes: list[Scope], prompt_tokens: int,
               wanted: int | None) -> None:
        """Ask for the next share in the background, alone: the script's prompt -1 is an
        admission of no request (nothing counted, no lease), only the share."""
        self._share_asked.add(key)
        lease = secrets.token_hex(8)
        entry = (scopes, -1, 0, lease, *self._share_wanted(key, prompt_tokens, wanted))

        async def ask() -> None:
            try:
                result, now = await self._admit_one(entry)
            except Exception:  # noqa: BLE001 (the next request asks again, exactly)
                return
            finally:
                self._share_asked.discard(key)
            if result[0] == 1:
                self._keep_share(scopes, lease, window_ids(now), result)

        task = asyncio.get_running_loop().create_task(ask())
        self._batches.add(task)
        task.add_done_callback(self._batches.discard)

    async def _admit_one(self, entry: tuple[Any, ...]) -> tuple[list[int], float]:
        if self._calling:
            future: asyncio.Future[tuple[list[int], float]] = (
                asyncio.get_running_loop().create_future())
            self._queued.append((entry, future))
            return await future
        self._calling = True
        call = asyncio.ensure_future(self._call([entry]))
        try:
            results, now = await asyncio.shield(call)
        except asyncio.CancelledError:
            # the client left while Redis admitted it: settle what it took, once known
            call.add_done_callback(lambda done: self._orphaned_call(entry, done))
            raise
        finally:
            self._next_batch()
        return results[0], now

    def _keep_share(self, scopes: list[Scope], lease: str, windows: dict[str, str],
                    result: list[int]) -> None:
        """The share that came with an admission, if Redis granted one."""
        _, _, _, req_left, _, tok_left, granted, granted_tokens = result
        if not granted:
            return
        key = scopes_key(scopes)
        self._grant(key, Allowance(
            lease, scopes, windows, granted, granted_tokens,
            time.monotonic() + ALLOWANCE_S, req_left, tok_left,
            tokens_limited=any(getattr(s.limits, FIELDS[w]) is not None
                               for s in scopes for w in TOKEN_WINDOWS)))

    def _orphaned_call(self, entry: tuple[Any, ...], done: asyncio.Future[Any]) -> None:
        if not done.cancelled() and done.exception() is None:
            results, now = done.result()
            self._orphaned(entry, results[0], now)

    def _orphaned(self, entry: tuple[Any, ...], result: list[int], now: float) -> None:
        """An admission nobody waits for any more: its lease and reservation are given
        back at once (its share, if one came with it, is kept for the others)."""
        if result[0] != 1:
            return
        scopes, _, _, lease, _, _ = entry
        windows = window_ids(now)
        self._keep_share(scopes, lease, windows, result)
        admission = Admission(lease, scopes, windows, result[2])
        task = asyncio.get_running_loop().create_task(self.settle(admission, 0))
        self._batches.add(task)
        task.add_done_callback(self._batches.discard)

    def _next_batch(self) -> None:
        """The call out returned: send what queued meanwhile, or be idle."""
        batch, self._queued = self._queued, []
        if not batch:
            self._calling = False
            return
        task = asyncio.get_running_loop().create_task(self._send_batch(batch))
        self._batches.add(task)
        task.add_done_callback(self._batches.discard)

    async def _send_batch(self, batch: list[Any]) -> None:
        try:
            results, now = await self._call([entry for entry, _ in batch])
        except BaseException as exc:  # every waiter gets the answer, never a hang
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc if isinstance(exc, Exception) else
                                         StoreUnavailableError("rate limiter stopped"))
            if not isinstance(exc, Exception):
                raise
            return
        finally:
            self._next_batch()
        for (entry, future), result in zip(batch, results, strict=True):
            if future.done():  # its caller was cancelled meanwhile
                self._orphaned(entry, result, now)
            else:
                future.set_result((result, now))

    async def _call(self, entries: list[Any]) -> tuple[list[list[int]], float]:
        now = self._clock()
        windows = window_ids(now)
        args: list[Any] = [self.prefix, int(now * 1000), int(self.lease_s * 1000),
                           self.default_cap, *(windows[w] for w in TOKEN_WINDOWS)]
        args += [WINDOW_TTL_MS[w] for w in TOKEN_WINDOWS]
        args += [int(seconds_to_reset(w, now) * 1000) for w in TOKEN_WINDOWS]
        for scopes, prompt, wanted, lease, want_k, want_t in entries:
            args += [lease, prompt, -1 if wanted is None else wanted, want_k, want_t,
                     len(scopes)]
            for scope in scopes:
                args += [scope.name, _packed(scope.limits)]
        try:
            results = await self._admit(keys=[], args=args)
        except RedisError as exc:
            raise StoreUnavailableError(f"rate limits cannot be checked: {exc}") from exc
        return [[int(x) for x in result] for result in results], now

    def _take(self, allowance: Allowance, prompt: int, wanted: int | None
              ) -> Admission | None:
        """An admission from the share, or None when it cannot cover this request (then
        Redis decides, exactly)."""
        now = self._clock()
        windows = window_ids(now)
        if (allowance.expired or allowance.used >= allowance.slots
                or time.monotonic() >= allowance.expires
                or windows["minute"] != allowance.windows["minute"]):
            return None
        cap: int | None = wanted
        reserved = 0
        if allowance.tokens_limited:
            cap = self.default_cap if wanted is None else wanted
            reserved = prompt + cap
            if reserved > allowance.tokens_left:
                return None  # the share is short: never cut a reply because of it
            allowance.tokens_left -= reserved
        allowance.used += 1
        allowance.in_flight.add(allowance.used)
        admission = Admission(f"{allowance.lease}:{allowance.used}", allowance.scopes,
                              allowance.windows, reserved, cap, allowance=allowance,
                              slot=allowance.used)
        admission.headers = allowance.headers(now)
        return admission

    def _grant(self, key: str, allowance: Allowance) -> None:
        old = self._allowances.get(key)
        if old is not None:
            self._expire(key, old)
        self._allowances[key] = allowance
        asyncio.get_running_loop().call_later(ALLOWANCE_S, self._expire, key, allowance)

    def _expire(self, key: str, allowance: Allowance) -> None:
        if allowance.expired:
            return
        allowance.expired = True
        if self._allowances.get(key) is allowance:
            del self._allowances[key]
            if 4 * allowance.used < allowance.slots:  # mostly unused: ask for less
                self._share_slots[key] = max(allowance.slots // 2, PREFETCH_SLOTS)
        # back within the second even while a long stream from it runs: its lease stays,
        # the rest (unused slots, tokens, leases) goes back now
        self._give_back(allowance)

    def _give_back(self, allowance: Allowance) -> None:
        allowance.returned = True
        task = asyncio.get_running_loop().create_task(self._return_share(allowance))
        self._batches.add(task)
        task.add_done_callback(self._batches.discard)

    async def _return_share(self, allowance: Allowance) -> None:
        args: list[Any] = [self.prefix, allowance.slots, allowance.used,
                           allowance.tokens_left, allowance.lease,
                           *(allowance.windows[w] for w in TOKEN_WINDOWS),
                           ",".join(map(str, sorted(allowance.in_flight))) or "-"]
        for scope in allowance.scopes:
            args += [scope.name, _packed(scope.limits)]
        try:
            await self._return(keys=[], args=args)
        except RedisError:
            pass  # its slots and leases expire on their own; its tokens stay counted

    def settle_here(self, admission: Admission, used_tokens: int) -> bool:
        """In the share it came from, while that share is still this replica's."""
        allowance = admission.allowance
        if admission.settled:
            return True
        if allowance is None or allowance.returned:
            return False
        admission.settled = True
        allowance.in_flight.discard(admission.slot)
        allowance.tokens_left += admission.reserved - used_tokens
        return True

    async def settle(self, admission: Admission, used_tokens: int) -> None:
        if self.settle_here(admission, used_tokens):
            return
        admission.settled = True
        allowance = admission.allowance
        if allowance is not None:
            # the share went back without this request: settle it in Redis as any other
            allowance.in_flight.discard(admission.slot)
        keys: list[str] = []
        args: list[Any] = [admission.lease, used_tokens - admission.reserved,
                           len(admission.scopes)]
        for scope in admission.scopes:
            keys.append(self._k(scope.name, "lease"))
            keys += [self._k(scope.name, "tok", w, admission.windows[w]) for w in TOKEN_WINDOWS]
            args.append("1" if scope.limits.max_concurrent is not None else "0")
            args += ["1" if getattr(scope.limits, FIELDS[w]) is not None else "0"
                     for w in TOKEN_WINDOWS]
        # settled in batches, one round trip per ``settle_interval_s`` however many
        # requests ended: a lease is free (and a reservation corrected) that much later
        self._pending.append((keys, args))
        if len(self._pending) >= self.SETTLE_BATCH:
            await self.flush()
        elif self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._flush_soon())

    SETTLE_BATCH = 200

    async def _flush_soon(self) -> None:
        await asyncio.sleep(self.settle_interval_s)
        await self.flush()

    async def flush(self) -> None:
        batch, self._pending = self._pending, []
        if not batch:
            return
        pipe = self.redis.pipeline(transaction=False)
        for keys, args in batch:
            await self._settle(keys=keys, args=args, client=pipe)  # queued, not sent
        try:
            await pipe.execute()
        except RedisError:
            pass  # leases expire on their own; reservations stay counted (the safe side)
