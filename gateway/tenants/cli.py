"""``ragate keys``: create, list, show, update, revoke managed API keys, and set teams.

Works on the configured key store directly (the SQLite file or Redis), so it also works
while no gateway runs; running gateways see a change within ``auth.cache_ttl_s``.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import click

from gateway.cli_support import config_option, run_on_store
from gateway.errors import GatewayError
from gateway.settings import Limits, Role, Settings
from gateway.tenants.models import ManagedKey, Team, now
from gateway.tenants.service import KeyService
from gateway.tenants.store import open_key_store

T = TypeVar("T")
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _run(config: str | None, action: Callable[[KeyService], Awaitable[T]]) -> T:
    return run_on_store(config, open_key_store, lambda store, settings: action(
        KeyService(store, models={m.name for m in settings.models})))


def managed_keys_exist(settings: Settings) -> bool:
    """Whether the key store holds keys (auth is then on without config keys)."""
    async def count() -> int:
        store = await open_key_store(settings)
        try:
            return await store.count_keys()
        finally:
            await store.close()
    try:
        return asyncio.run(count()) > 0
    except GatewayError:
        return False  # the app's start-up reports the store itself


def _duration(value: str | None) -> float | None:
    if value is None:
        return None
    match = _DURATION.match(value)
    if not match:
        raise click.BadParameter("a number and s, m, h or d (30d, 12h)")
    return float(match.group(1)) * _UNITS[match.group(2)]


def _when(stamp: float | None) -> str:
    if stamp is None:
        return "-"
    return datetime.fromtimestamp(stamp, UTC).strftime("%Y-%m-%d %H:%M")


def _metadata(pairs: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep:
            raise click.BadParameter(f"{pair!r}: use key=value")
        out[name] = value
    return out



def limit_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    for name, help_text in (("rpm", "requests per minute"), ("tpm", "tokens per minute"),
                            ("concurrent", "requests at once"),
                            ("tokens-per-day", "tokens per UTC day"),
                            ("tokens-per-month", "tokens per UTC month")):
        fn = click.option(f"--{name}", type=click.IntRange(min=1), help=help_text)(fn)
    return fn


def _limits(options: dict[str, Any], base: Limits | None = None) -> Limits | None:
    given = {"requests_per_minute": options.get("rpm"), "tokens_per_minute": options.get("tpm"),
             "max_concurrent": options.get("concurrent"),
             "tokens_per_day": options.get("tokens_per_day"),
             "tokens_per_month": options.get("tokens_per_month")}
    given = {k: v for k, v in given.items() if v is not None}
    if not given:
        return base
    return (base or Limits()).model_copy(update=given)


def _show(key: ManagedKey) -> str:
    return json.dumps(key.to_api(), ensure_ascii=False, indent=2)


@click.group()
def keys() -> None:
    """Managed API keys and teams."""


@keys.command("create")
@config_option
@click.option("--owner", required=True)
@click.option("--role", type=click.Choice([r.value for r in Role]), default="chat")
@click.option("--team")
@click.option("--model", "models", multiple=True, help="Allowed model (repeat); all if none")
@click.option("--kb", "knowledge_bases", multiple=True, help="Granted knowledge base (repeat)")
@click.option("--expires-in", help="30d, 12h, 90m …")
@click.option("--meta", multiple=True, help="key=value (repeat)")
@limit_options
def create(config: str | None, owner: str, role: str, team: str | None,
           models: tuple[str, ...], knowledge_bases: tuple[str, ...], expires_in: str | None,
           meta: tuple[str, ...], **limits: Any) -> None:
    """Create a key; its secret is printed once, on stdout alone."""
    seconds = _duration(expires_in)

    async def action(service: KeyService) -> tuple[ManagedKey, str]:
        return await service.create(
            owner, role=Role(role), team=team, models=list(models) or None,
            knowledge_bases=list(knowledge_bases), limits=_limits(limits),
            expires_at=now() + seconds if seconds else None, metadata=_metadata(meta))

    key, secret = _run(config, action)
    click.echo(f"created {key.id} for {key.owner} ({key.role}); the secret is shown once:",
               err=True)
    click.echo(secret)


@keys.command("list")
@config_option
@click.option("--owner")
@click.option("--team")
@click.option("--json", "as_json", is_flag=True)
def list_keys(config: str | None, owner: str | None, team: str | None, as_json: bool) -> None:
    found = _run(config, lambda s: s.list(owner=owner, team=team))
    if as_json:
        click.echo(json.dumps([k.to_api() for k in found], ensure_ascii=False, indent=2))
        return
    click.echo(f"{'id':22} {'owner':16} {'team':12} {'role':9} {'state':8} {'expires':16} key")
    for key in found:
        state = key.to_api()["state"]
        click.echo(f"{key.id:22} {key.owner:16} {key.team or '-':12} {key.role:9} {state:8} "
                   f"{_when(key.expires_at):16} {key.display}")


@keys.command("show")
@config_option
@click.argument("key_id")
def show(config: str | None, key_id: str) -> None:
    click.echo(_show(_run(config, lambda s: s.get(key_id))))


@keys.command("update")
@config_option
@click.argument("key_id")
@click.option("--role", type=click.Choice([r.value for r in Role]))
@click.option("--team")
@click.option("--model", "models", multiple=True, help="Replaces the allowed models")
@click.option("--all-models", is_flag=True, help="Allow every model")
@click.option("--kb", "knowledge_bases", multiple=True, help="Replaces the granted bases")
@click.option("--expires-in")
@limit_options
def update(config: str | None, key_id: str, role: str | None, team: str | None,
           models: tuple[str, ...], all_models: bool, knowledge_bases: tuple[str, ...],
           expires_in: str | None, **limits: Any) -> None:
    seconds = _duration(expires_in)

    async def action(service: KeyService) -> ManagedKey:
        key = await service.get(key_id)
        changes: dict[str, Any] = {}
        if role:
            changes["role"] = Role(role)
        if team:
            changes["team"] = team
        if models or all_models:
            changes["models"] = None if all_models else list(models)
        if knowledge_bases:
            changes["knowledge_bases"] = list(knowledge_bases)
        if seconds:
            changes["expires_at"] = now() + seconds
        new_limits = _limits(limits, key.limits)
        if new_limits is not key.limits and new_limits is not None:
            changes["limits"] = new_limits
        return await service.update(key_id, changes)

    click.echo(_show(_run(config, action)))


@keys.command("revoke")
@config_option
@click.argument("key_id")
def revoke(config: str | None, key_id: str) -> None:
    key = _run(config, lambda s: s.revoke(key_id))
    click.echo(f"revoked {key.id} ({key.owner}); gateways refuse it within their "
               "auth.cache_ttl_s", err=True)


@keys.group("team")
def team() -> None:
    """Teams: knowledge bases granted to every key of the team, and shared limits."""


@team.command("set")
@config_option
@click.argument("name")
@click.option("--kb", "knowledge_bases", multiple=True)
@limit_options
def team_set(config: str | None, name: str, knowledge_bases: tuple[str, ...],
             **limits: Any) -> None:
    saved = _run(config, lambda s: s.put_team(Team(
        name, list(knowledge_bases), _limits(limits) or Limits())))
    click.echo(json.dumps(saved.to_api(), ensure_ascii=False, indent=2))


@team.command("list")
@config_option
def team_list(config: str | None) -> None:
    for saved in _run(config, lambda s: s.store.list_teams()):
        click.echo(json.dumps(saved.to_api(), ensure_ascii=False))


@team.command("delete")
@config_option
@click.argument("name")
def team_delete(config: str | None, name: str) -> None:
    _run(config, lambda s: s.delete_team(name))
    click.echo(f"deleted team {name}", err=True)
