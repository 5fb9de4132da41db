"""The console's server side: static files under /ui with their headers, /v1/me, and the
backend facts its pages show. The pages themselves run in tests/browser."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest

from gateway.console import STATIC
from gateway.settings import Role
from rag.ingest import FileStage, JobStatus
from tests.unit.gateway.conftest import CHAT, FakeFleet, chat_reply

KEYS = {"auth": {"keys": [
    {"key": "sk-chat", "role": "chat", "owner": "alice", "team": "web",
     "models": ["m"], "knowledge_bases": ["faq"], "limits": {"requests_per_minute": 60}},
    {"key": "sk-admin", "role": "admin", "owner": "ops"}]}}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def two_models(fleet: FakeFleet) -> dict:
    url = fleet.add("b1:8000", lambda req: httpx.Response(200, json=chat_reply()))
    return {"models": [
        {"name": "m", "backends": [{"url": url, "model": "up"},
                                   {"url": url, "model": "up", "lora": "pirate",
                                    "name": "b1-lora"}]},
        {"name": "secret", "backends": [{"url": url, "model": "up", "name": "b1-secret"}]}]}


async def test_the_console_is_served_without_a_key_and_fenced(make_client, two_models) -> None:
    async with make_client({**two_models, **KEYS}) as (client, _):
        page = await client.get("/ui/")
        script = await client.get("/ui/js/app.js")
        traversal = await client.get("/ui/..%2f..%2fpyproject.toml")
        missing = await client.get("/ui/nothing.js")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    policy = page.headers["content-security-policy"]
    assert "default-src 'self'" in policy and "script-src 'self'" in policy
    assert page.headers["x-content-type-options"] == "nosniff"
    assert script.status_code == 200 and "javascript" in script.headers["content-type"]
    assert traversal.status_code == 404 and missing.status_code == 404


async def test_me_says_what_the_key_may_use(make_client, two_models) -> None:
    async with make_client({**two_models, **KEYS}) as (client, _):
        chat = (await client.get("/v1/me", headers=bearer("sk-chat"))).json()
        admin = (await client.get("/v1/me", headers=bearer("sk-admin"))).json()
        anonymous = await client.get("/v1/me")
    assert chat["owner"] == "alice" and chat["role"] == "chat" and chat["team"] == "web"
    assert chat["models"] == ["m"]  # not "secret"
    assert chat["knowledge_bases"] == ["faq"]
    assert chat["limits"] == {"requests_per_minute": 60}
    assert admin["role"] == "admin" and admin["models"] == ["m", "secret"]
    assert admin["knowledge_bases"] is None  # every base
    assert anonymous.status_code == 401


async def test_backends_show_their_adapters_and_time_to_first_token(make_client,
                                                                    two_models) -> None:
    async with make_client({**two_models, **KEYS}) as (client, _):
        before = (await client.get("/admin/backends", headers=bearer("sk-admin"))).json()
        for _ in range(4):
            assert (await client.post("/v1/chat/completions", json=CHAT,
                                      headers=bearer("sk-chat"))).status_code == 200
        after = (await client.get("/admin/backends", headers=bearer("sk-admin"))).json()
    by_name = {b["name"]: b for b in after["data"]}
    assert by_name["b1-lora"]["adapters"] == ["pirate"]
    assert by_name["b1-secret"]["adapters"] == [] and by_name["b1-secret"]["ttft_ms"] is None
    assert all(b["ttft_ms"] is None for b in before["data"])
    answered = [b for b in after["data"] if b["ttft_ms"] is not None]
    assert answered and all(b["ttft_ms"] > 0 for b in answered)


def test_every_text_the_pages_use_has_both_languages() -> None:
    table = (STATIC / "js" / "i18n.js").read_text(encoding="utf-8")
    entries = dict(re.findall(r"^  (\w+): \[(.+)\],$", table, flags=re.M))
    assert entries, "the table's layout changed: update this test"
    for key, pair in entries.items():
        assert re.fullmatch(r'"[^"]+", "[^"]+"', pair), f"{key} lacks a language: {pair}"
    used: set[str] = set()
    for script in Path(STATIC, "js").rglob("*.js"):
        used |= set(re.findall(r'\bt\("(\w+)"', script.read_text(encoding="utf-8")))
    used |= set(re.findall(r'data-i18n="(\w+)"', (STATIC / "index.html").read_text()))
    assert used - entries.keys() == set()
    # keys built at run time: one per page, role, file stage, job status and key state
    dynamic = {f"page_{p}" for p in re.findall(r'id: "(\w+)", roles', (STATIC / "js" / "app.js")
                                                .read_text())}
    assert len(dynamic) == 6
    dynamic |= {f"role_{r.value}" for r in Role} | {f"stage_{s.value}" for s in FileStage}
    dynamic |= {f"status_{s.value}" for s in JobStatus}
    dynamic |= {f"key_{s}" for s in ("active", "revoked", "expired")}
    assert dynamic - entries.keys() == set()


def test_no_page_builds_markup_from_strings() -> None:
    # text from documents and replies must never become markup: the pages build elements
    for script in Path(STATIC, "js").rglob("*.js"):
        source = script.read_text(encoding="utf-8")
        for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
            assert sink not in source, f"{script.name} uses {sink}"
