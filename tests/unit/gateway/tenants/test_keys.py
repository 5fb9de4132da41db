"""Managed keys: the key ring's cache and its revocation bound, the store (SQLite and
real Redis, one suite), the admin API, and the CLI."""

from __future__ import annotations

import json
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from gateway.auth import KeyRing
from gateway.errors import AuthenticationError, BadRequestError
from gateway.settings import ApiKeyConfig, Limits
from gateway.tenants.models import ManagedKey, Team
from gateway.tenants.redis import RedisKeyStore
from gateway.tenants.service import KeyService
from gateway.tenants.sqlite import SqliteKeyStore
from gateway.tenants.store import KeyStore
from tests.unit.gateway.conftest import CHAT, FakeFleet, chat_reply, one_model

ADMIN = {"auth": {"keys": [{"key": "sk-admin", "role": "admin", "owner": "ops"}]}}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture(params=["sqlite", "redis"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[KeyStore]:
    if request.param == "sqlite":
        opened: KeyStore = await SqliteKeyStore(tmp_path / "keys.db").open()
    else:
        prefix = f"test-{secrets.token_hex(4)}"
        try:
            opened = await RedisKeyStore.from_url("redis://127.0.0.1:6379/0", prefix).open()
        except Exception:  # noqa: BLE001
            pytest.skip("no Redis at 127.0.0.1:6379")
    try:
        yield opened
    finally:
        if isinstance(opened, RedisKeyStore):
            keys = [k async for k in opened.redis.scan_iter(f"{opened.prefix}:*")]
            if keys:
                await opened.redis.delete(*keys)
        await opened.close()


async def test_the_store_keeps_keys_by_id_and_digest_and_teams(store: KeyStore) -> None:
    key, secret = ManagedKey.create("alice", team="red", models=["m"],
                                    limits=Limits(requests_per_minute=5))
    await store.put_key(key)
    assert (await store.get_key(key.id)) == key
    found = await store.find_key(key.digest)
    assert found is not None and found.limits.requests_per_minute == 5
    assert secret not in json.dumps(found.to_dict()), "only the digest is kept"
    assert await store.count_keys() == 1
    key.revoked_at = 1.0
    await store.put_key(key)
    assert [k.revoked_at for k in await store.list_keys()] == [1.0]
    await store.put_team(Team("red", ["handbook"], Limits(tokens_per_day=100)))
    team = await store.get_team("red")
    assert team is not None and team.knowledge_bases == ["handbook"]
    assert [t.name for t in await store.list_teams()] == ["red"]
    assert await store.delete_team("red") and await store.get_team("red") is None


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_a_revoked_key_stops_within_the_cache_ttl(tmp_path: Path) -> None:
    store = await SqliteKeyStore(tmp_path / "keys.db").open()
    clock = Clock()
    ring = KeyRing([], store, cache_ttl_s=5, clock=clock)
    service = KeyService(store)  # another replica: this ring is not told
    key, secret = await service.create("alice", team="red")
    await ring.start()
    assert ring.enabled
    principal = await ring.authenticate(f"Bearer {secret}")
    assert (principal.owner, principal.team, principal.key_id) == ("alice", "red", key.id)
    await service.revoke(key.id)
    clock.now = 4.9
    assert (await ring.authenticate(f"Bearer {secret}")).owner == "alice", "cached"
    clock.now = 5.1
    with pytest.raises(AuthenticationError):
        await ring.authenticate(f"Bearer {secret}")
    await store.close()


async def test_expiry_is_exact_and_team_grants_are_merged(tmp_path: Path) -> None:
    store = await SqliteKeyStore(tmp_path / "keys.db").open()
    await store.put_team(Team("red", ["team-kb"], Limits(max_concurrent=2)))
    ring = KeyRing([ApiKeyConfig(key="sk-config", owner="bob", team="red")], store)
    service = KeyService(store, ring)
    _, secret = await service.create("carol", team="red", knowledge_bases=["own-kb"])
    key, short = await service.create("dave", expires_at=None)
    await ring.start()
    carol = await ring.authenticate(f"Bearer {secret}")
    assert carol.knowledge_bases == {"own-kb", "team-kb"}
    assert carol.team_limits.max_concurrent == 2
    bob = await ring.authenticate("Bearer sk-config")
    assert bob.knowledge_bases == {"team-kb"}, "config keys get their team's grants too"
    await service.update(key.id, {"expires_at": 4_000_000_000.0})
    assert (await ring.authenticate(f"Bearer {short}")).expires_at == 4_000_000_000.0
    key.expires_at = 1.0  # the past, written as another replica could
    await store.put_key(key)
    ring.forget()
    with pytest.raises(AuthenticationError) as err:
        await ring.authenticate(f"Bearer {short}")
    assert err.value.code == "expired_api_key"
    await store.close()


async def test_bad_key_fields_are_400(tmp_path: Path) -> None:
    store = await SqliteKeyStore(tmp_path / "keys.db").open()
    service = KeyService(store, models={"m"})
    for fields, param in (({"models": ["nope"]}, "models"), ({"team": "a b"}, "team"),
                          ({"expires_at": 1.0}, "expires_at"),
                          ({"metadata": {"x": "y" * 5000}}, "metadata")):
        with pytest.raises(BadRequestError) as err:
            await service.create("alice", **fields)  # type: ignore[arg-type]
        assert err.value.param == param
    await store.close()


async def test_admin_api_creates_a_key_that_works_then_revokes_it(fleet: FakeFleet,
                                                                   make_client) -> None:
    url = fleet.add("b1:8000", lambda req: httpx.Response(200, json=chat_reply()))
    async with make_client({**one_model(url), **ADMIN}) as (client, _):
        made = await client.post("/admin/keys", headers=bearer("sk-admin"), json={
            "owner": "alice", "team": "red", "models": ["m"], "expires_in_s": 3600,
            "limits": {"requests_per_minute": 10}, "metadata": {"product": "persona"}})
        assert made.status_code == 201, made.text
        body = made.json()
        secret, key_id = body["secret"], body["id"]
        assert body["state"] == "active" and "digest" not in body
        listed = (await client.get("/admin/keys", headers=bearer("sk-admin"))).json()["data"]
        assert [k["id"] for k in listed] == [key_id] and "secret" not in listed[0]
        assert (await client.post("/v1/chat/completions", json=CHAT,
                                  headers=bearer(secret))).status_code == 200
        assert (await client.get("/admin/keys", headers=bearer(secret))).status_code == 403
        patched = await client.patch(f"/admin/keys/{key_id}", headers=bearer("sk-admin"),
                                     json={"role": "kb_admin"})
        assert patched.json()["role"] == "kb_admin"
        bad = await client.patch(f"/admin/keys/{key_id}", headers=bearer("sk-admin"),
                                 json={"models": ["unknown"]})
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "models"
        revoked = await client.delete(f"/admin/keys/{key_id}", headers=bearer("sk-admin"))
        assert revoked.json()["state"] == "revoked"
        again = await client.post("/v1/chat/completions", json=CHAT, headers=bearer(secret))
        assert again.status_code == 401, "this replica forgets it at once"
        assert (await client.get("/admin/keys/key_nope", headers=bearer("sk-admin"))
                ).status_code == 404


async def test_the_first_managed_key_turns_auth_on(fleet: FakeFleet, make_client) -> None:
    url = fleet.add("b1:8000", lambda req: httpx.Response(200, json=chat_reply()))
    async with make_client(one_model(url)) as (client, _):
        assert (await client.post("/v1/chat/completions", json=CHAT)).status_code == 200
        made = await client.post("/admin/keys", json={"owner": "ops", "role": "admin"})
        secret = made.json()["secret"]
        assert (await client.post("/v1/chat/completions", json=CHAT)).status_code == 401
        assert (await client.post("/v1/chat/completions", json=CHAT,
                                  headers=bearer(secret))).status_code == 200


def test_the_cli_creates_lists_and_revokes(tmp_path: Path) -> None:
    from gateway.cli import main

    config = tmp_path / "ragate.yaml"
    config.write_text(f"server: {{data_dir: {tmp_path}}}\nlocal_backends: []\n")
    runner = CliRunner()
    made = runner.invoke(main, ["keys", "create", "-c", str(config), "--owner", "alice",
                                "--team", "red", "--rpm", "30", "--expires-in", "30d"])
    assert made.exit_code == 0, made.output
    secret = made.stdout.strip().splitlines()[-1]
    assert secret.startswith("sk-rg-")
    listed = runner.invoke(main, ["keys", "list", "-c", str(config), "--json"])
    keys = json.loads(listed.stdout)
    assert keys[0]["owner"] == "alice" and keys[0]["limits"] == {"requests_per_minute": 30}
    revoked = runner.invoke(main, ["keys", "revoke", "-c", str(config), keys[0]["id"]])
    assert revoked.exit_code == 0
    shown = json.loads(runner.invoke(main, ["keys", "show", "-c", str(config),
                                            keys[0]["id"]]).stdout)
    assert shown["state"] == "revoked"
    team = runner.invoke(main, ["keys", "team", "set", "-c", str(config), "red",
                                "--kb", "handbook", "--tokens-per-day", "1000"])
    assert json.loads(team.stdout)["limits"] == {"tokens_per_day": 1000}

