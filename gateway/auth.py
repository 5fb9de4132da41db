"""Who is calling: API keys (``Authorization: Bearer``, as OpenAI clients send it) to a
``Principal`` with its role, team, grants and limits.

Keys come from two places: the config file (fixed, read at start) and the managed key
store (``ragate keys``, ``/admin/keys``). A managed key is looked up by the SHA-256 of the
secret and cached for ``auth.cache_ttl_s``: that is the bound on how long a revoked key
keeps working on a replica that had just seen it (expiry is checked on every request).
Unknown secrets are cached as unknown too, so a repeated wrong key costs the store one
lookup per TTL (each different guess still costs one).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

from gateway.errors import AuthenticationError, PermissionDeniedError
from gateway.settings import ApiKeyConfig, Limits, Role
from gateway.tenants.models import ManagedKey, Team, digest
from gateway.tenants.store import KeyStore

NO_LIMITS = Limits()


@lru_cache(maxsize=4096)
def bearer_digest(authorization: str) -> str | None:
    """The digest of the key in ``Bearer <key>``, None when the header is not that.
    Cached by the header: a client sends the same one on every request, and hashing it
    each time was a tenth of what keys and limits cost per request (a stream of
    different guesses only cycles the cache; the answer is the same either way)."""
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    return digest(token)


@dataclass(frozen=True, slots=True)
class Principal:
    owner: str
    role: Role
    team: str | None = None
    key_id: str | None = None  # the managed key's id, or "config:<owner>"
    models: frozenset[str] | None = None  # None: every model
    knowledge_bases: frozenset[str] = frozenset()  # its own grants and its team's
    limits: Limits = NO_LIMITS
    team_limits: Limits = NO_LIMITS
    expires_at: float | None = None
    limited: bool = False  # any limit of its own or its team's (decided once, not per request)

    def __hash__(self) -> int:
        # looked up per request (the scopes of its limits are cached by principal):
        # hashing every field, its limits' models among them, cost more than the lookup;
        # equal principals have the same key and owner, so this is a valid hash
        return hash((self.key_id, self.owner))

    @property
    def is_admin(self) -> bool:
        return self.role is Role.ADMIN

    def may_use_model(self, model: str) -> bool:
        return self.models is None or model in self.models

    def may_use_knowledge_base(self, name: str) -> bool:
        return self.is_admin or name in self.knowledge_bases



ANONYMOUS = Principal(owner="anonymous", role=Role.ADMIN, key_id="anonymous")


def principal_of(key: ApiKeyConfig | ManagedKey, team: Team | None) -> Principal:
    grants = set(key.knowledge_bases) | set(team.knowledge_bases if team else ())
    key_id = key.id if isinstance(key, ManagedKey) else f"config:{key.owner}"
    return Principal(
        owner=key.owner or "unknown", role=key.role, team=key.team, key_id=key_id,
        models=frozenset(key.models) if key.models is not None else None,
        knowledge_bases=frozenset(grants), limits=key.limits,
        team_limits=team.limits if team else NO_LIMITS,
        expires_at=key.expires_at if isinstance(key, ManagedKey) else None,
        limited=key.limits.any() or bool(team and team.limits.any()))


class KeyRing:
    CACHE_SIZE = 10_000

    def __init__(self, keys: list[ApiKeyConfig], store: KeyStore | None = None, *,
                 cache_ttl_s: float = 5.0, clock: Callable[[], float] = time.monotonic
                 ) -> None:
        self._config = {digest(k.key): k for k in keys if k.key}
        self._static: dict[str, Principal] = {
            d: principal_of(k, None) for d, k in self._config.items()}
        self.store = store
        self.cache_ttl_s = cache_ttl_s
        self._clock = clock
        self._cache: OrderedDict[str, tuple[float, Principal | None]] = OrderedDict()
        self._store_has_keys = False
        self._store_checked_at: float | None = None

    async def start(self) -> None:
        """Read what the config keys' teams grant, and whether managed keys exist."""
        if self.store is None:
            return
        for key_digest, key in self._config.items():
            team = await self.store.get_team(key.team) if key.team else None
            self._static[key_digest] = principal_of(key, team)
        await self._check_store()

    async def _check_store(self) -> None:
        if self.store is not None:
            self._store_has_keys = await self.store.count_keys() > 0
            self._store_checked_at = self._clock()

    @property
    def enabled(self) -> bool:
        return bool(self._static) or self._store_has_keys

    def note_created(self) -> None:
        self._store_has_keys = True  # this replica created one: auth is on from now

    def forget(self, key_digest: str | None = None) -> None:
        """Drop cached lookups (this replica changed a key: no need to wait the TTL)."""
        if key_digest is None:
            self._cache.clear()
        else:
            self._cache.pop(key_digest, None)

    async def authenticate(self, authorization: str | None) -> Principal:
        if not self.enabled:
            if (self.store is None or self._store_checked_at is None or
                    self._clock() - self._store_checked_at < self.cache_ttl_s):
                return ANONYMOUS  # open gateway: only on a loopback bind (checked at start)
            await self._check_store()  # another replica may have created the first key
            if not self.enabled:
                return ANONYMOUS
        if not authorization:
            raise AuthenticationError(
                "Missing API key: send it as 'Authorization: Bearer <key>'", code="missing_api_key"
            )
        key_digest = bearer_digest(authorization)
        if key_digest is None:
            raise AuthenticationError("Authorization header must be 'Bearer <key>'")
        principal = self._static.get(key_digest)
        if principal is None:
            principal = await self._managed(key_digest)
        if principal is None:
            raise AuthenticationError("Incorrect API key provided")
        if principal.expires_at is not None and time.time() >= principal.expires_at:
            raise AuthenticationError("This API key has expired", code="expired_api_key")
        return principal

    async def _managed(self, key_digest: str) -> Principal | None:
        if self.store is None:
            return None
        cached = self._cache.get(key_digest)
        if cached is not None and self._clock() - cached[0] < self.cache_ttl_s:
            self._cache.move_to_end(key_digest)  # least recently used goes first
            return cached[1]
        key = await self.store.find_key(key_digest)
        principal = None
        if key is not None and key.revoked_at is None:
            team = await self.store.get_team(key.team) if key.team else None
            principal = principal_of(key, team)
        self._cache[key_digest] = (self._clock(), principal)
        self._cache.move_to_end(key_digest)
        while len(self._cache) > self.CACHE_SIZE:
            self._cache.popitem(last=False)
        return principal

    @staticmethod
    def require(principal: Principal, role: Role) -> Principal:
        if role is Role.ADMIN and not principal.is_admin:
            raise PermissionDeniedError("this endpoint needs an admin key")
        if role is Role.KB_ADMIN and principal.role not in (Role.ADMIN, Role.KB_ADMIN):
            raise PermissionDeniedError("this endpoint needs a knowledge-base admin key")
        return principal
