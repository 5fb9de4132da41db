"""Managing keys and teams: the one place the admin API and ``ragate keys`` both call.

Writes go to the store and drop this replica's cached lookup of the key at once; other
replicas see them within ``auth.cache_ttl_s``.
"""

from __future__ import annotations

import json
import re
from typing import Any

from gateway.auth import KeyRing
from gateway.errors import BadRequestError, NotFoundError
from gateway.settings import Limits, Role
from gateway.tenants.models import ManagedKey, Team, now
from gateway.tenants.store import KeyStore

NAME = re.compile(r"^[A-Za-z0-9_.@:-]{1,128}$")
MAX_METADATA_BYTES = 4096
EDITABLE = ("owner", "role", "team", "models", "knowledge_bases", "limits", "expires_at",
            "metadata")


def _check_name(value: str | None, field: str) -> None:
    if value is not None and not NAME.match(value):
        raise BadRequestError(f"{field}: 1-128 of letters, digits and _.@:-", param=field)


def _check_metadata(metadata: dict[str, Any]) -> None:
    if len(json.dumps(metadata, ensure_ascii=False).encode()) > MAX_METADATA_BYTES:
        raise BadRequestError(f"metadata: at most {MAX_METADATA_BYTES} bytes of JSON",
                              param="metadata")


class KeyService:
    def __init__(self, store: KeyStore, keyring: KeyRing | None = None,
                 models: set[str] | None = None) -> None:
        self.store = store
        self.keyring = keyring
        self.models = models  # the configured model names, to refuse unknown grants

    def _validate(self, fields: dict[str, Any]) -> None:
        _check_name(fields.get("owner"), "owner")
        _check_name(fields.get("team"), "team")
        for name in fields.get("knowledge_bases") or []:
            _check_name(name, "knowledge_bases")
        unknown = sorted(set(fields.get("models") or []) - self.models) if self.models else []
        if unknown:
            raise BadRequestError(f"models: no model named {', '.join(unknown)}",
                                  param="models")
        if fields.get("metadata") is not None:
            _check_metadata(fields["metadata"])
        expires = fields.get("expires_at")
        if expires is not None and expires <= now():
            raise BadRequestError("expires_at: must be in the future", param="expires_at")

    async def create(self, owner: str, *, role: Role = Role.CHAT, team: str | None = None,
                     models: list[str] | None = None, knowledge_bases: list[str] | None = None,
                     limits: Limits | None = None, expires_at: float | None = None,
                     metadata: dict[str, Any] | None = None) -> tuple[ManagedKey, str]:
        fields: dict[str, Any] = {"owner": owner, "role": role, "team": team,
                                  "models": models,
                  "knowledge_bases": list(knowledge_bases or []),
                  "limits": limits or Limits(), "expires_at": expires_at,
                  "metadata": dict(metadata or {})}
        self._validate(fields)
        key, secret = ManagedKey.create(fields.pop("owner"), **fields)
        await self.store.put_key(key)
        if self.keyring is not None:
            self.keyring.note_created()
            self.keyring.forget(key.digest)
        return key, secret

    async def get(self, key_id: str) -> ManagedKey:
        key = await self.store.get_key(key_id)
        if key is None:
            raise NotFoundError(f"no api key {key_id!r}", code="api_key_not_found")
        return key

    async def list(self, *, owner: str | None = None, team: str | None = None
                   ) -> list[ManagedKey]:
        return [k for k in await self.store.list_keys()
                if (owner is None or k.owner == owner) and (team is None or k.team == team)]

    async def update(self, key_id: str, changes: dict[str, Any]) -> ManagedKey:
        unknown = set(changes) - set(EDITABLE)
        if unknown:
            raise BadRequestError(f"cannot change {', '.join(sorted(unknown))}",
                                  param=sorted(unknown)[0])
        self._validate(changes)
        key = await self.get(key_id)
        for name, value in changes.items():
            setattr(key, name, value)
        await self._save(key)
        return key

    async def revoke(self, key_id: str) -> ManagedKey:
        key = await self.get(key_id)
        if key.revoked_at is None:
            key.revoked_at = now()
            await self._save(key)
        return key

    async def _save(self, key: ManagedKey) -> None:
        await self.store.put_key(key)
        if self.keyring is not None:
            self.keyring.forget(key.digest)

    async def put_team(self, team: Team) -> Team:
        _check_name(team.name, "name")
        for name in team.knowledge_bases:
            _check_name(name, "knowledge_bases")
        _check_metadata(team.metadata)
        await self.store.put_team(team)
        if self.keyring is not None:
            self.keyring.forget()  # every key of the team changes grants or limits
        return team

    async def get_team(self, name: str) -> Team:
        team = await self.store.get_team(name)
        if team is None:
            raise NotFoundError(f"no team {name!r}", code="team_not_found")
        return team

    async def delete_team(self, name: str) -> None:
        if not await self.store.delete_team(name):
            raise NotFoundError(f"no team {name!r}", code="team_not_found")
        if self.keyring is not None:
            self.keyring.forget()
