"""Runtime LoRA clients against the response shapes vLLM and SGLang send."""

from __future__ import annotations

import json

import httpx
import pytest

from serving.lora import LoraAdapterError, SglangLoraClient, VllmLoraClient


def _client(handler) -> httpx.AsyncClient:  # type: ignore[no-untyped-def]
    return httpx.AsyncClient(transport=httpx.MockTransport(handler))


async def test_vllm_load_and_unload_success() -> None:
    seen: list[tuple[str, dict]] = []  # type: ignore[type-arg]

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        seen.append((request.url.path, body))
        verb = "added" if request.url.path.endswith("/load_lora_adapter") else "removed"
        # vLLM answers success with plain text, not JSON.
        return httpx.Response(200, text=f"Success: LoRA adapter '{body['lora_name']}' "
                                        f"{verb} successfully.")

    async with _client(handler) as http:
        client = VllmLoraClient("http://vllm:8000/", client=http)
        loaded = await client.load("support", "/loras/support")
        unloaded = await client.unload("support")
    assert seen == [
        ("/v1/load_lora_adapter", {"lora_name": "support", "lora_path": "/loras/support"}),
        ("/v1/unload_lora_adapter", {"lora_name": "support"}),
    ]
    assert loaded.message == "Success: LoRA adapter 'support' added successfully."
    assert unloaded.message.endswith("removed successfully.")


@pytest.mark.parametrize("body", [
    # vLLM >= 0.10: OpenAI-style error object
    {"error": {"message": "The lora adapter 'support' has already been loaded.",
               "type": "InvalidUserInput", "param": None, "code": 400}},
    # older vLLM: flat ErrorResponse
    {"object": "error", "message": "The lora adapter 'support' has already been loaded.",
     "type": "InvalidUserInput", "param": None, "code": 400},
])
async def test_vllm_error_carries_the_server_message(body: dict) -> None:  # type: ignore[type-arg]
    async with _client(lambda request: httpx.Response(400, json=body)) as http:
        client = VllmLoraClient("http://vllm:8000", client=http)
        with pytest.raises(LoraAdapterError) as info:
            await client.load("support", "/loras/support")
    assert "has already been loaded" in str(info.value)
    assert info.value.status_code == 400


async def test_vllm_without_runtime_updates_gets_a_hint() -> None:
    async with _client(lambda r: httpx.Response(404, json={"detail": "Not Found"})) as http:
        client = VllmLoraClient("http://vllm:8000", client=http)
        with pytest.raises(LoraAdapterError, match="VLLM_ALLOW_RUNTIME_LORA_UPDATING"):
            await client.unload("x")


async def test_vllm_unknown_adapter_on_unload() -> None:
    body = {"error": {"message": "The lora adapter 'x' cannot be found.",
                      "type": "NotFoundError", "param": None, "code": 404}}
    async with _client(lambda r: httpx.Response(404, json=body)) as http:
        with pytest.raises(LoraAdapterError, match="cannot be found") as info:
            await VllmLoraClient("http://v", client=http).unload("x")
    assert info.value.status_code == 404


async def test_sglang_load_success_lists_adapters() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/load_lora_adapter"
        assert json.loads(request.content) == {"lora_name": "a", "lora_path": "/l/a",
                                               "pinned": True}
        return httpx.Response(200, json={
            "success": True, "error_message": None,
            "loaded_adapters": {"a": {"lora_id": "1f2e", "lora_name": "a",
                                      "lora_path": "/l/a", "pinned": True},
                                "b": "/l/b"},
        })

    async with _client(handler) as http:
        result = await SglangLoraClient("http://sglang:30000", client=http).load(
            "a", "/l/a", pinned=True)
    assert result.loaded == {"a": "/l/a", "b": "/l/b"}


async def test_sglang_failure_carries_error_message() -> None:
    body = {"success": False,
            "error_message": "LoRA adapter a is already loaded. Please unload it first.",
            "loaded_adapters": None}
    async with _client(lambda r: httpx.Response(400, json=body)) as http:
        with pytest.raises(LoraAdapterError, match="already loaded") as info:
            await SglangLoraClient("http://s", client=http).load("a", "/l/a")
    assert info.value.status_code == 400


async def test_sglang_unload_path() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/unload_lora_adapter"
        return httpx.Response(200, json={"success": True, "loaded_adapters": {}})

    async with _client(handler) as http:
        result = await SglangLoraClient("http://s", client=http).unload("a")
    assert result.loaded == {}


async def test_connection_errors_are_translated() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    async with _client(handler) as http:
        with pytest.raises(LoraAdapterError, match="cannot reach http://v/v1/load_lora_adapter"):
            await VllmLoraClient("http://v", client=http).load("a", "/a")


async def test_owned_client_closes() -> None:
    client = VllmLoraClient("http://v", api_key="k")
    async with client:
        pass
    assert client._client.is_closed
