"""Tenants as data: a managed API key and the team it belongs to."""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from gateway.settings import Limits, Role

SECRET_PREFIX = "sk-rg-"


def digest(secret: str) -> str:
    """What is stored instead of the secret (SHA-256: keys are random, not passwords, so
    a slow hash buys nothing and would cost every request)."""
    return hashlib.sha256(secret.encode()).hexdigest()


def new_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def now() -> float:
    return time.time()


@dataclass
class ManagedKey:
    id: str
    digest: str
    display: str  # the secret's first characters, to recognise it in a list
    owner: str
    role: Role = Role.CHAT
    team: str | None = None
    models: list[str] | None = None  # None: every model
    knowledge_bases: list[str] = field(default_factory=list)
    limits: Limits = field(default_factory=Limits)
    expires_at: float | None = None
    revoked_at: float | None = None
    created_at: float = field(default_factory=now)
    metadata: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def create(cls, owner: str, **fields: Any) -> tuple[ManagedKey, str]:
        """A new key and its secret (shown once: only its digest is kept)."""
        secret = new_secret()
        key = cls(id="key_" + secrets.token_hex(8), digest=digest(secret),
                  display=secret[:10] + "…", owner=owner, **fields)
        return key, secret

    def active(self, at: float | None = None) -> bool:
        at = now() if at is None else at
        return self.revoked_at is None and (self.expires_at is None or at < self.expires_at)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["role"] = str(self.role)
        data["limits"] = self.limits.model_dump(exclude_none=True)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ManagedKey:
        data = dict(data)
        data["role"] = Role(data.get("role", "chat"))
        data["limits"] = Limits.model_validate(data.get("limits") or {})
        return cls(**data)

    def to_api(self) -> dict[str, Any]:
        """What the admin API shows: everything but the digest."""
        data = self.to_dict()
        del data["digest"]
        data["object"] = "api_key"
        data["state"] = "active" if self.active() else (
            "revoked" if self.revoked_at is not None else "expired")
        return data


@dataclass
class Team:
    name: str
    knowledge_bases: list[str] = field(default_factory=list)
    limits: Limits = field(default_factory=Limits)
    metadata: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "knowledge_bases": list(self.knowledge_bases),
                "limits": self.limits.model_dump(exclude_none=True),
                "metadata": dict(self.metadata)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Team:
        return cls(name=data["name"], knowledge_bases=list(data.get("knowledge_bases") or []),
                   limits=Limits.model_validate(data.get("limits") or {}),
                   metadata=dict(data.get("metadata") or {}))

    def to_api(self) -> dict[str, Any]:
        return {"object": "team", **self.to_dict()}
