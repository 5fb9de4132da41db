"""Load and unload LoRA adapters on running vLLM and SGLang servers.

vLLM (started with ``VLLM_ALLOW_RUNTIME_LORA_UPDATING=True``) answers
``POST /v1/load_lora_adapter`` with plain text on success and an error JSON otherwise;
SGLang answers ``POST /load_lora_adapter`` with ``{"success", "error_message",
"loaded_adapters"}``. Both clients return ``LoraResult`` and raise ``LoraAdapterError``
carrying the server's own message.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import httpx

from serving.errors import ServingError


class LoraAdapterError(ServingError):
    """The server refused the load/unload, or could not be reached."""

    def __init__(self, message: str, *, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code


@dataclass(frozen=True)
class LoraResult:
    name: str
    message: str
    loaded: dict[str, str] | None = None  # name -> path, where the server reports it


class LoraAdmin(Protocol):
    async def load(self, name: str, path: str) -> LoraResult: ...

    async def unload(self, name: str) -> LoraResult: ...


class _Client:
    load_path = ""
    unload_path = ""

    def __init__(self, base_url: str, *, api_key: str | None = None,
                 client: httpx.AsyncClient | None = None, timeout_s: float = 120.0) -> None:
        # Loading an adapter reads it from disk onto the GPU: slow, so a long read timeout.
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._own = client is None
        self._client = client or httpx.AsyncClient(
            timeout=httpx.Timeout(timeout_s, connect=5.0), headers=headers)
        self.base_url = base_url.rstrip("/")
        self._headers = headers

    async def aclose(self) -> None:
        if self._own:
            await self._client.aclose()

    async def __aenter__(self) -> _Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _post(self, path: str, body: dict[str, Any]) -> httpx.Response:
        url = self.base_url + path
        try:
            return await self._client.post(url, json=body, headers=self._headers)
        except httpx.HTTPError as exc:
            raise LoraAdapterError(f"cannot reach {url}: {type(exc).__name__}: {exc}") from exc


class VllmLoraClient(_Client):
    load_path = "/v1/load_lora_adapter"
    unload_path = "/v1/unload_lora_adapter"

    async def load(self, name: str, path: str) -> LoraResult:
        response = await self._post(self.load_path, {"lora_name": name, "lora_path": path})
        return self._result(name, response)

    async def unload(self, name: str) -> LoraResult:
        response = await self._post(self.unload_path, {"lora_name": name})
        return self._result(name, response)

    def _result(self, name: str, response: httpx.Response) -> LoraResult:
        if response.status_code == 200:
            return LoraResult(name, response.text.strip().strip('"'))
        message = _error_message(response)
        if response.status_code == 404 and message == "Not Found":
            message = ("the server has no LoRA admin routes; start vLLM with "
                       "VLLM_ALLOW_RUNTIME_LORA_UPDATING=True and --enable-lora")
        raise LoraAdapterError(f"vLLM: {message}", status_code=response.status_code)


class SglangLoraClient(_Client):
    load_path = "/load_lora_adapter"
    unload_path = "/unload_lora_adapter"

    async def load(self, name: str, path: str, *, pinned: bool = False) -> LoraResult:
        body: dict[str, Any] = {"lora_name": name, "lora_path": path}
        if pinned:
            body["pinned"] = True
        return self._result(name, await self._post(self.load_path, body), "loaded")

    async def unload(self, name: str) -> LoraResult:
        return self._result(name, await self._post(self.unload_path, {"lora_name": name}),
                            "unloaded")

    def _result(self, name: str, response: httpx.Response, verb: str) -> LoraResult:
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.status_code == 200 and isinstance(body, dict) and body.get("success"):
            return LoraResult(name, f"adapter {name!r} {verb}",
                              _adapter_paths(body.get("loaded_adapters")))
        message = _error_message(response)
        raise LoraAdapterError(f"SGLang: {message}", status_code=response.status_code)


def _adapter_paths(loaded: Any) -> dict[str, str] | None:
    """SGLang reports ``name -> path`` (older) or ``name -> LoRARef`` objects (newer)."""
    if not isinstance(loaded, dict):
        return None
    paths = {}
    for name, value in loaded.items():
        path = value.get("lora_path", "") if isinstance(value, dict) else value
        paths[str(name)] = str(path)
    return paths


def _error_message(response: httpx.Response) -> str:
    """The message out of whatever error shape the server used."""
    try:
        body = response.json()
    except ValueError:
        return response.text.strip() or f"HTTP {response.status_code}"
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and error.get("message"):  # vLLM >= 0.10, OpenAI style
            return str(error["message"])
        for key in ("error_message", "message", "detail"):  # SGLang, older vLLM, FastAPI
            value = body.get(key)
            if isinstance(value, str) and value:
                return value
            if isinstance(value, list) and value:  # FastAPI validation errors
                return "; ".join(str(item.get("msg", item)) for item in value
                                 if isinstance(item, dict)) or str(value)
        if isinstance(error, str) and error:
            return error
    return f"HTTP {response.status_code}: {response.text.strip()[:200]}"
