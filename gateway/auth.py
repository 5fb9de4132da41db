"""API keys with roles; ``Authorization: Bearer`` as OpenAI clients send it."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from gateway.errors import AuthenticationError, PermissionDeniedError
from gateway.settings import ApiKeyConfig, Role


@dataclass(frozen=True, slots=True)
class Principal:
    owner: str
    role: Role

    @property
    def is_admin(self) -> bool:
        return self.role is Role.ADMIN


ANONYMOUS = Principal(owner="anonymous", role=Role.ADMIN)


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


class KeyRing:
    """Looks keys up by SHA-256, so the lookup time does not depend on how much matched."""

    def __init__(self, keys: list[ApiKeyConfig]) -> None:
        self._by_digest = {
            _digest(k.key): Principal(k.owner or "unknown", k.role) for k in keys if k.key
        }

    @property
    def enabled(self) -> bool:
        return bool(self._by_digest)

    def authenticate(self, authorization: str | None) -> Principal:
        if not self.enabled:
            return ANONYMOUS  # open gateway: only allowed on a loopback bind (checked at start)
        if not authorization:
            raise AuthenticationError(
                "Missing API key: send it as 'Authorization: Bearer <key>'", code="missing_api_key"
            )
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise AuthenticationError("Authorization header must be 'Bearer <key>'")
        principal = self._by_digest.get(_digest(token.strip()))
        if principal is None:
            raise AuthenticationError("Incorrect API key provided")
        return principal

    @staticmethod
    def require(principal: Principal, role: Role) -> Principal:
        if role is Role.ADMIN and not principal.is_admin:
            raise PermissionDeniedError("this endpoint needs an admin key")
        return principal
