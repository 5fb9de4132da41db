"""The gateway over two real llama.cpp servers, driven by the official openai SDK."""

from __future__ import annotations

from typing import Any

import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from serving import LlamaCppServer
from tests.integration.conftest import start_llama_servers

pytestmark = pytest.mark.integration

ADMIN, CHAT_KEY = "sk-it-admin", "sk-it-chat"
PROMPT = [{"role": "user", "content": "Name a colour."}]


def config_for(servers: list[LlamaCppServer], policy: str = "round_robin") -> dict[str, Any]:
    return {
        "local_backends": [],
        "auth": {"keys": [{"key": ADMIN, "role": "admin"}, {"key": CHAT_KEY, "role": "chat"}]},
        "pool": {"health_interval_s": 0.5, "retry_backoff_s": 0.01},
        "models": [{
            "name": "smollm2", "policy": policy,
            "backends": [{"url": s.url, "kind": "llamacpp", "model": "smollm2-upstream"}
                         for s in servers],
        }],
    }


@pytest.fixture(scope="module")
def gateway(llama_pair: list[LlamaCppServer], tmp_path_factory: pytest.TempPathFactory):
    from tests.integration.conftest import GatewayProcess

    gw = GatewayProcess(config_for(llama_pair), tmp_path_factory.mktemp("gw"))
    gw.start()
    try:
        yield gw
    finally:
        gw.stop()


def client(gw: Any, key: str = CHAT_KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.url + "/v1", api_key=key, max_retries=0, timeout=60)


def test_non_streamed_answer(gateway: Any) -> None:
    reply = client(gateway).chat.completions.create(
        model="smollm2", messages=PROMPT, max_tokens=12, temperature=0)
    assert reply.model == "smollm2"
    assert reply.choices[0].message.content.strip()
    assert reply.usage is not None and reply.usage.completion_tokens > 0


def test_streamed_answer(gateway: Any) -> None:
    # another prompt than the test above: llama-cpp-python may answer nothing when the
    # whole prompt is already in its cache ("full prompt already cached, skipping reset")
    stream = client(gateway).chat.completions.create(
        model="smollm2", messages=[{"role": "user", "content": "Name an animal."}],
        max_tokens=12, temperature=0, stream=True)
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.strip()
    assert {c.model for c in chunks} == {"smollm2"}
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")


def test_legacy_completion(gateway: Any) -> None:
    reply = client(gateway).completions.create(model="smollm2", prompt="Once upon a",
                                               max_tokens=5)
    assert reply.choices[0].text


def test_models_list_shows_the_registry(gateway: Any) -> None:
    assert [m.id for m in client(gateway).models.list()] == ["smollm2"]


def test_wrong_key_is_an_authentication_error(gateway: Any) -> None:
    with pytest.raises(openai.AuthenticationError):
        client(gateway, key="sk-wrong").models.list()


def test_unknown_model_is_not_found(gateway: Any) -> None:
    with pytest.raises(openai.NotFoundError) as err:
        client(gateway).chat.completions.create(model="gpt-x", messages=PROMPT, max_tokens=2)
    assert err.value.code == "model_not_found"


def test_chat_key_cannot_administer(gateway: Any) -> None:
    with pytest.raises(openai.PermissionDeniedError):
        client(gateway).get("/../admin/backends", cast_to=object)


def test_killing_a_backend_moves_traffic_without_client_errors(gateway_factory: Any) -> None:
    servers = start_llama_servers(2)
    try:
        gw = gateway_factory(config_for(servers))
        c = client(gw)
        for _ in range(2):  # round robin: both backends answer once
            c.chat.completions.create(model="smollm2", messages=PROMPT, max_tokens=2)
        servers[0].kill()
        for _ in range(6):  # none of these had started when the backend died
            reply = c.chat.completions.create(model="smollm2", messages=PROMPT, max_tokens=2)
            assert reply.choices[0].message.content is not None
        admin = client(gw, ADMIN).get("/../admin/backends", cast_to=object)
        states = {b["url"]: b["state"] for b in admin["data"]}
        assert states[servers[0].url] == "unhealthy"
        assert states[servers[1].url] == "healthy"
        ok = sum(
            sample.value
            for family in text_string_to_metric_families(gw.metrics())
            if family.name == "ragate_requests"
            for sample in family.samples
            if sample.name == "ragate_requests_total" and sample.labels["status"] == "200"
            and sample.labels["route"] == "/v1/chat/completions"
        )
        assert ok == 8
    finally:
        for server in servers:
            server.stop()


def test_serve_starts_the_bundled_smollm2_by_default(gateway_factory: Any) -> None:
    gw = gateway_factory({"local_backends": [{"model": "smollm2", "n_threads": 1}]})
    c = client(gw, key="unused")
    assert [m.id for m in c.models.list()] == ["smollm2"]
    reply = c.chat.completions.create(model="smollm2", messages=PROMPT, max_tokens=4)
    assert reply.choices[0].message.content
