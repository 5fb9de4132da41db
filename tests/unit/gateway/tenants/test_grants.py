"""Grants: a chat key uses only its models and its (or its team's) knowledge bases, plus
the one its model names; what is not granted answers exactly as what does not exist."""

from __future__ import annotations

from typing import Any

import httpx

from gateway.errors import NotFoundError
from tests.unit.gateway.chat.test_pipeline import FakeKnowledge
from tests.unit.gateway.conftest import CHAT, FakeFleet, chat_reply

KEYS = {"auth": {"keys": [
    {"key": "sk-admin", "role": "admin", "owner": "ops"},
    {"key": "sk-alice", "role": "chat", "owner": "alice", "knowledge_bases": ["alice-kb"],
     "models": ["m"]},
    {"key": "sk-bob", "role": "chat", "owner": "bob"},
    {"key": "sk-kbadmin", "role": "kb_admin", "owner": "kate", "knowledge_bases": ["alice-kb"]},
]}}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


class Knowledge(FakeKnowledge):
    """Knows two bases; any other name is rag's own 404."""

    async def search(self, name: str, query: str, **options: Any) -> list[Any]:
        if name not in ("alice-kb", "model-kb"):
            raise NotFoundError(f"knowledge base {name!r} not found",
                                code="knowledge_base_not_found")
        return await super().search(name, query, **options)


def config(url: str) -> dict[str, Any]:
    return {**KEYS, "models": [
        {"name": "m", "backends": [{"url": url, "model": "up"}]},
        {"name": "with-kb", "knowledge": {"knowledge_base": "model-kb"},
         "backends": [{"url": url, "model": "up"}]}]}


async def test_knowledge_bases_are_used_only_where_granted(fleet: FakeFleet,
                                                           make_client) -> None:
    url = fleet.add("b1:8000", lambda req: httpx.Response(200, json=chat_reply()))
    async with make_client(config(url)) as (client, app):
        app.state.services.chat.knowledge = Knowledge()

        async def ask(key: str, kb: str | None, model: str = "m") -> httpx.Response:
            body: dict[str, Any] = {**CHAT, "model": model}
            if kb:
                body["ragate"] = {"knowledge_base": kb}
            return await client.post("/v1/chat/completions", json=body, headers=bearer(key))

        granted = await ask("sk-alice", "alice-kb")
        assert granted.status_code == 200 and granted.json()["ragate"]["sources"]
        ungranted, unknown = await ask("sk-bob", "alice-kb"), await ask("sk-bob", "no-such")
        assert ungranted.status_code == unknown.status_code == 404
        assert ungranted.json()["error"] == {**unknown.json()["error"],
                                             "message": "knowledge base 'alice-kb' not found"}
        assert unknown.json()["error"]["message"] == "knowledge base 'no-such' not found"
        assert (await ask("sk-bob", None, model="with-kb")).status_code == 200, \
            "the base the model's config names needs no grant"
        assert (await ask("sk-admin", "alice-kb")).status_code == 200


async def test_models_outside_a_keys_list_do_not_exist_for_it(fleet: FakeFleet,
                                                              make_client) -> None:
    url = fleet.add("b1:8000", lambda req: httpx.Response(200, json=chat_reply()))
    async with make_client(config(url)) as (client, _):
        listed = await client.get("/v1/models", headers=bearer("sk-alice"))
        assert [m["id"] for m in listed.json()["data"]] == ["m"]
        hidden = await client.post("/v1/chat/completions", headers=bearer("sk-alice"),
                                   json={**CHAT, "model": "with-kb"})
        missing = await client.post("/v1/chat/completions", headers=bearer("sk-alice"),
                                    json={**CHAT, "model": "nope"})
        assert hidden.status_code == missing.status_code == 404
        assert hidden.json()["error"]["code"] == missing.json()["error"]["code"] == (
            "model_not_found")
        assert (await client.get("/v1/models/with-kb", headers=bearer("sk-alice"))
                ).status_code == 404
        assert len((await client.get("/v1/models", headers=bearer("sk-bob"))).json()["data"]) == 2


async def test_a_kb_admin_manages_only_its_granted_bases(fleet: FakeFleet,
                                                         make_client) -> None:
    url = fleet.add("b1:8000", lambda req: httpx.Response(200, json=chat_reply()))
    async with make_client({**config(url), "knowledge": {"enabled": False}}) as (client, _):
        # knowledge bases are off in this app: a granted name gets to the feature's 404,
        # an ungranted one the base's own 404, before the feature is even looked at
        other = await client.get("/v1/knowledge_bases/bob-kb/documents",
                                 headers=bearer("sk-kbadmin"))
        assert other.status_code == 404
        assert other.json()["error"]["code"] == "knowledge_base_not_found"
        mine = await client.get("/v1/knowledge_bases/alice-kb/documents",
                                headers=bearer("sk-kbadmin"))
        assert mine.json()["error"]["code"] == "knowledge_disabled"
        chat = await client.get("/v1/knowledge_bases/alice-kb/documents",
                                headers=bearer("sk-alice"))
        assert chat.status_code == 403, "a chat key manages nothing"
        made = await client.post("/v1/knowledge_bases", json={"name": "new"},
                                 headers=bearer("sk-kbadmin"))
        assert made.status_code == 403, "creating a base is an admin's"
