"""Rate limits and token budgets per key and per team, checked and taken in one step.

For every scope (the key, and its team) of a request, all at once:

    requests_per_minute  a sliding 60 s log of admitted requests (exact: a burst of 200
                         against 50/min lets exactly 50 through, wherever minutes begin)
    max_concurrent       leases held by requests in flight (each expires after
                         ``lease_s``, so a replica that died frees its leases)
    tokens_per_minute    fixed UTC minute, day and month windows of tokens, counted
    tokens_per_day         *before* the reply: a request reserves its prompt plus the
    tokens_per_month       most it may generate, and the reply is capped to what the
                         reservation covers (the gateway enforces that cap as any
                         length limit); when the reply is done its reservation becomes
                         what it used. So a budget is never exceeded, however many
                         requests run at once, except by an error in counting a prompt.

The most a request may generate is the client's ``max_tokens`` (or ``default_cap``
when it sent none) and never more than what the tightest window has left. Nothing is
read and then written: the Redis limiter does everything in one Lua script, the local
one between two awaits.
"""

from __future__ import annotations

import math
import secrets
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, Protocol

from gateway.errors import RateLimitError
from gateway.settings import Limits

WINDOW_MS = 60_000
TOKEN_WINDOWS = ("minute", "day", "month")
FIELDS = {"minute": "tokens_per_minute", "day": "tokens_per_day", "month": "tokens_per_month"}


@dataclass(frozen=True, slots=True)
class Scope:
    """Limits and the name they are counted under (``key:<id>``, ``team:<name>``)."""

    name: str
    limits: Limits


class Scopes(list[Scope]):
    """The scopes of one principal, with a key that names them and their limits: a
    string, so that its hash is computed once (the tuple of scopes it replaced hashed
    every Limits model on every lookup of the request's share)."""

    def __init__(self, scopes: Iterable[Scope] = ()) -> None:
        super().__init__(scopes)
        self.key = scopes_key(self)


def scopes_key(scopes: list[Scope]) -> str:
    """Names and limits of the scopes, as one string (``Scopes`` keeps it)."""
    key = getattr(scopes, "key", None)
    if key is None:
        key = ";".join(f"{s.name}={','.join(map(str, limit_values(s.limits)))}"
                       for s in scopes)
    return key


@dataclass(slots=True)
class Admission:
    """A request let through: what it reserved where, and the most it may generate."""

    lease: str
    scopes: list[Scope]
    windows: dict[str, str]  # token window -> the id it had at admission
    reserved: int = 0  # tokens reserved in each limited window of each scope
    cap: int | None = None  # the most the reply may generate (None: no token limit)
    headers: dict[str, str] = field(default_factory=dict)
    settled: bool = False
    allowance: Any = None  # the prefetched share it was admitted from (Redis only)
    slot: int = 0  # its index in that share


@lru_cache(maxsize=4096)  # Limits are frozen and few: read once, not per request
def limit_values(limits: Limits) -> tuple[int | None, ...]:
    """(requests per minute, concurrent, tokens per minute, per day, per month)."""
    return (limits.requests_per_minute, limits.max_concurrent, limits.tokens_per_minute,
            limits.tokens_per_day, limits.tokens_per_month)


def window_ids(now_s: float) -> dict[str, str]:
    return _window_ids(int(now_s))


@lru_cache(maxsize=4)
def _window_ids(second: int) -> dict[str, str]:
    # formatted once a second, not three times a request
    moment = datetime.fromtimestamp(second, UTC)
    return {"minute": moment.strftime("%Y%m%d%H%M"), "day": moment.strftime("%Y%m%d"),
            "month": moment.strftime("%Y%m")}


def seconds_to_reset(window: str, now_s: float) -> float:
    if window == "minute":  # every answer to a limited key says this: no calendar for it
        return 60 - (now_s % 60)
    if window == "day":
        return 86400 - (now_s % 86400)
    return _next_month(int(now_s)) - now_s


@lru_cache(maxsize=4)
def _next_month(second: int) -> float:
    start = datetime.fromtimestamp(second, UTC).replace(day=1, hour=0, minute=0, second=0,
                                                        microsecond=0)
    following = (start.replace(year=start.year + 1, month=1) if start.month == 12
                 else start.replace(month=start.month + 1))
    return following.timestamp()


def duration(seconds: float) -> str:
    """OpenAI's reset format: ``20ms``, ``1s``, ``6m0s``."""
    if seconds < 1:
        return f"{max(int(seconds * 1000), 1)}ms"
    whole = math.ceil(seconds)
    minutes, rest = divmod(whole, 60)
    return f"{minutes}m{rest}s" if minutes else f"{rest}s"


@dataclass(frozen=True, slots=True)
class Refusal:
    scope: str
    limit: str  # the Limits field that refused
    allowed: int
    retry_after_s: float


def refusal_error(refusal: Refusal) -> RateLimitError:
    budget = refusal.limit in ("tokens_per_day", "tokens_per_month")
    what = refusal.limit.replace("_", " ")
    message = (f"Rate limit reached for {refusal.scope} on {what}: limit {refusal.allowed}. "
               f"Please try again in {duration(refusal.retry_after_s)}.")
    headers = {"retry-after": str(max(1, math.ceil(refusal.retry_after_s)))}
    return RateLimitError(message, code="insufficient_quota" if budget else
                          "rate_limit_exceeded", headers=headers)


class RateLimiter(Protocol):
    async def admit(self, scopes: list[Scope], prompt_tokens: int, wanted: int | None
                    ) -> Admission: ...

    def admit_here(self, scopes: list[Scope], prompt_tokens: int, wanted: int | None
                   ) -> Admission | None:
        """``admit`` when it needs no I/O (in process, or from a share); None when only
        ``admit`` can decide. Refusals raise as ``admit``'s do."""

    async def settle(self, admission: Admission, used_tokens: int) -> None:
        """Release the lease and correct the reservation (it may take effect a few tens of
        milliseconds later: Redis settles in batches)."""

    def settle_here(self, admission: Admission, used_tokens: int) -> bool:
        """``settle`` when it needs no I/O (in process, or in a share): True when done."""

    async def flush(self) -> None:
        """Apply every settle made so far."""

    async def close(self) -> None: ...


def rate_headers(limits: Limits, requests: int, reset_requests_s: float, token_left: int | None,
             token_limit: int | None, reset_tokens_s: float) -> dict[str, str]:
    out: dict[str, str] = {}
    if limits.requests_per_minute is not None:
        out.update({"x-ratelimit-limit-requests": str(limits.requests_per_minute),
                    "x-ratelimit-remaining-requests": str(max(requests, 0)),
                    "x-ratelimit-reset-requests": duration(reset_requests_s)})
    if token_limit is not None and token_left is not None:
        out.update({"x-ratelimit-limit-tokens": str(token_limit),
                    "x-ratelimit-remaining-tokens": str(max(token_left, 0)),
                    "x-ratelimit-reset-tokens": duration(reset_tokens_s)})
    return out


class LocalRateLimiter:
    """One process (the embedded default): the same rules, in memory."""

    def __init__(self, *, default_cap: int = 4096, lease_s: float = 900,
                 clock: Callable[[], float] = time.time) -> None:
        self.default_cap = default_cap
        self.lease_s = lease_s
        self._clock = clock
        self._requests: dict[str, deque[float]] = {}
        self._leases: dict[str, dict[str, float]] = {}
        self._tokens: dict[tuple[str, str, str], int] = {}  # (scope, window, id) -> tokens
        self._minute = ""

    async def admit(self, scopes: list[Scope], prompt_tokens: int, wanted: int | None
                    ) -> Admission:
        return self.admit_here(scopes, prompt_tokens, wanted)

    def admit_here(self, scopes: list[Scope], prompt_tokens: int, wanted: int | None
                   ) -> Admission:
        now = self._clock()
        windows = window_ids(now)
        if windows["minute"] != self._minute:  # forget windows that are over
            self._minute = windows["minute"]
            self._tokens = {slot: n for slot, n in self._tokens.items()
                            if slot[2] == windows[slot[1]]}
        left: list[tuple[int, str, Scope, int]] = []  # (tokens left, window, scope, limit)
        for scope in scopes:
            rpm, concurrent, *token_limits = limit_values(scope.limits)
            if rpm is not None:
                log = self._requests.setdefault(scope.name, deque())
                while log and log[0] <= now - WINDOW_MS / 1000:  # oldest first: O(1)
                    log.popleft()
                if len(log) >= rpm:
                    raise refusal_error(Refusal(scope.name, "requests_per_minute", rpm,
                                                log[0] + 60 - now))
            if concurrent is not None:
                leases = self._leases.setdefault(scope.name, {})
                if len(leases) >= concurrent:  # only then look for leases that expired
                    for lease, expiry in list(leases.items()):
                        if expiry <= now:
                            del leases[lease]
                    if len(leases) >= concurrent:
                        raise refusal_error(Refusal(scope.name, "max_concurrent",
                                                    concurrent, 1.0))
            for window, limit in zip(TOKEN_WINDOWS, token_limits, strict=True):
                if limit is not None:
                    used = self._tokens.get((scope.name, window, windows[window]), 0)
                    left.append((limit - used, window, scope, limit))
        cap, reserved = wanted, 0
        if left:
            tightest = min(left, key=lambda x: x[0])
            if tightest[0] <= prompt_tokens:
                window = tightest[1]
                raise refusal_error(Refusal(tightest[2].name, FIELDS[window], tightest[3],
                                            seconds_to_reset(window, now)))
            cap = min(self.default_cap if wanted is None else wanted,
                      tightest[0] - prompt_tokens)
            reserved = prompt_tokens + cap
        lease = secrets.token_hex(8)
        for scope in scopes:
            rpm, concurrent, *token_limits = limit_values(scope.limits)
            if rpm is not None:
                self._requests[scope.name].append(now)
            if concurrent is not None:
                self._leases[scope.name][lease] = now + self.lease_s
            for window, limit in zip(TOKEN_WINDOWS, token_limits, strict=True):
                if limit is not None:
                    slot = (scope.name, window, windows[window])
                    self._tokens[slot] = self._tokens.get(slot, 0) + reserved
        admission = Admission(lease, scopes, windows, reserved, cap)
        admission.headers = self._describe(scopes[0], now, windows) if scopes else {}
        return admission

    def _describe(self, scope: Scope, now: float, windows: dict[str, str]) -> dict[str, str]:
        limits = scope.limits
        log = self._requests.get(scope.name) or deque()
        remaining = (limits.requests_per_minute or 0) - len(log)
        reset = (log[0] + 60 - now) if log else 60.0
        token_limit = limits.tokens_per_minute
        used = self._tokens.get((scope.name, "minute", windows["minute"]), 0)
        return rate_headers(limits, remaining, reset,
                        None if token_limit is None else token_limit - used, token_limit,
                        seconds_to_reset("minute", now))

    async def close(self) -> None:
        return None  # nothing held outside this process

    async def flush(self) -> None:
        return None  # settles apply at once here

    async def settle(self, admission: Admission, used_tokens: int) -> None:
        self.settle_here(admission, used_tokens)

    def settle_here(self, admission: Admission, used_tokens: int) -> bool:
        if admission.settled:
            return True
        admission.settled = True
        for scope in admission.scopes:
            self._leases.get(scope.name, {}).pop(admission.lease, None)
            for window in TOKEN_WINDOWS:
                if getattr(scope.limits, FIELDS[window]) is not None:
                    slot = (scope.name, window, admission.windows[window])
                    self._tokens[slot] = self._tokens.get(slot, 0) + (
                        used_tokens - admission.reserved)
        return True
