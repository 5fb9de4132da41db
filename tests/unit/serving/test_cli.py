"""``ragate serving``: registering with a gateway, writing its config, printing commands."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from click.testing import CliRunner

from serving import cli as serving_cli
from serving.cli import add_to_config, backend_entry, register_backend, unregister_backend
from serving.errors import ServingError

BACKEND = backend_entry("http://127.0.0.1:9001", "tuned")


def recording(status: int = 201, body: Any = None) -> tuple[httpx.Client, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(status, json=body if body is not None else {"name": "b1"})

    return httpx.Client(transport=httpx.MockTransport(handler)), seen


def test_register_posts_the_admin_body_with_the_key() -> None:
    client, seen = recording(body={"name": "127.0.0.1:9001", "state": "healthy"})
    described = register_backend("http://gw:8000/", "sk-admin", "tuned", BACKEND, client=client)
    assert described["name"] == "127.0.0.1:9001"
    request = seen[0]
    assert (request.method, str(request.url)) == ("POST", "http://gw:8000/admin/backends")
    assert request.headers["authorization"] == "Bearer sk-admin"
    assert json.loads(request.content) == {
        "model": "tuned",
        "backend": {"url": "http://127.0.0.1:9001", "kind": "llamacpp", "model": "tuned"}}


def test_a_refusal_carries_the_gateways_message() -> None:
    client, _ = recording(403, {"error": {"message": "admin role required", "type": "x",
                                          "param": None, "code": "forbidden"}})
    with pytest.raises(ServingError, match="HTTP 403.*admin role required"):
        register_backend("http://gw", "sk-chat", "tuned", BACKEND, client=client)


def test_unreachable_gateway_is_a_serving_error() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    client = httpx.Client(transport=httpx.MockTransport(handler))
    with pytest.raises(ServingError, match="cannot reach the gateway"):
        register_backend("http://gw", None, "tuned", BACKEND, client=client)


def test_unregister_tolerates_an_already_removed_backend() -> None:
    client, seen = recording(404, {"error": {"message": "no such backend"}})
    unregister_backend("http://gw", "k", "127.0.0.1:9001", client=client)
    assert (seen[0].method, seen[0].url.path) == ("DELETE", "/admin/backends/127.0.0.1:9001")


def test_add_to_config_creates_updates_and_does_not_duplicate(tmp_path: Path) -> None:
    path = tmp_path / "ragate.yaml"
    path.write_text(yaml.safe_dump({"server": {"port": 8000}, "models": [
        {"name": "tuned", "backends": [{"url": "http://gpu1:8000", "kind": "vllm"}]}]}))
    assert add_to_config(path, "tuned", BACKEND, context_window=2048)
    assert add_to_config(path, "other", backend_entry("http://127.0.0.1:9002", "other"))
    assert not add_to_config(path, "tuned", BACKEND)
    data = yaml.safe_load(path.read_text())
    assert data["server"] == {"port": 8000}
    tuned, other = data["models"]
    assert [b["url"] for b in tuned["backends"]] == ["http://gpu1:8000", "http://127.0.0.1:9001"]
    assert tuned["context_window"] == 2048
    assert other == {"name": "other", "backends": [
        {"url": "http://127.0.0.1:9002", "kind": "llamacpp", "model": "other"}]}


def test_add_to_config_refuses_a_non_mapping(tmp_path: Path) -> None:
    path = tmp_path / "x.yaml"
    path.write_text("- 1\n- 2\n")
    with pytest.raises(ServingError, match="mapping"):
        add_to_config(path, "m", BACKEND)


class FakeServer:
    """Stands in for LlamaCppServer: healthy at once, 'runs' until Ctrl-C."""

    instances: list[FakeServer] = []

    def __init__(self, gguf: str, **kwargs: Any) -> None:
        self.gguf = Path(gguf)
        self.kwargs = kwargs
        self.port = kwargs.get("port") or 9001
        self.url = f"http://{kwargs['host']}:{self.port}"
        self.pid = 4242
        self.log_path = Path("/tmp/fake.log")
        self.started = self.stopped = False
        FakeServer.instances.append(self)

    def start(self, timeout_s: float) -> FakeServer:
        self.started = True
        return self

    def running(self) -> bool:
        return not self.stopped

    def stop(self) -> None:
        self.stopped = True


@pytest.fixture
def fake_server(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    gguf = tmp_path / "tuned-f16.gguf"
    gguf.write_bytes(b"GGUF")
    FakeServer.instances.clear()
    monkeypatch.setattr(serving_cli, "LlamaCppServer", FakeServer)

    def ctrl_c(server: Any, interval_s: float = 0.5) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(serving_cli, "wait_while_running", ctrl_c)
    return gguf


def test_launch_registers_then_unregisters_and_stops_on_ctrl_c(
        fake_server: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, ...]] = []
    monkeypatch.setattr(serving_cli, "register_backend",
                        lambda gw, key, model, backend: calls.append(
                            ("register", gw, str(key), model, backend["url"])) or
                        {"name": "127.0.0.1:9001"})
    monkeypatch.setattr(serving_cli, "unregister_backend",
                        lambda gw, key, name: calls.append(("unregister", gw, name)))
    result = CliRunner().invoke(serving_cli.serving, [
        "launch", str(fake_server), "--gateway", "http://gw:8000", "--admin-key", "sk-a",
        "--threads", "2"])
    assert result.exit_code == 0, result.output
    server = FakeServer.instances[0]
    assert server.started and server.stopped
    assert server.kwargs["model_alias"] == "tuned-f16"  # the file stem by default
    assert server.kwargs["n_threads"] == 2
    assert calls == [("register", "http://gw:8000", "sk-a", "tuned-f16", "http://127.0.0.1:9001"),
                     ("unregister", "http://gw:8000", "127.0.0.1:9001")]


def test_launch_writes_the_config_and_advertises_loopback_for_a_wildcard_bind(
        fake_server: Path, tmp_path: Path) -> None:
    config = tmp_path / "gw.yaml"
    result = CliRunner().invoke(serving_cli.serving, [
        "launch", str(fake_server), "--model", "tuned", "--host", "0.0.0.0", "--port", "9005",
        "--n-ctx", "1024", "--write-config", str(config)])
    assert result.exit_code == 0, result.output
    assert yaml.safe_load(config.read_text())["models"] == [{
        "name": "tuned", "context_window": 1024,
        "backends": [{"url": "http://127.0.0.1:9005", "kind": "llamacpp", "model": "tuned"}]}]
    assert FakeServer.instances[0].stopped


def test_launch_stops_the_server_when_registration_fails(
        fake_server: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any) -> dict[str, Any]:
        raise ServingError("the gateway refused the backend (HTTP 401): bad key")

    monkeypatch.setattr(serving_cli, "register_backend", refuse)
    result = CliRunner().invoke(serving_cli.serving, [
        "launch", str(fake_server), "--gateway", "http://gw"])
    assert result.exit_code == 1
    assert "HTTP 401" in result.output
    assert FakeServer.instances[0].stopped


def test_launch_of_a_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(serving_cli.serving, ["launch", str(tmp_path / "no.gguf")])
    assert result.exit_code == 1 and "GGUF file not found" in result.output


@pytest.mark.parametrize(("engine", "args", "expected"), [
    ("vllm", ["--lora", "sql=/a/sql", "--name", "qwen"],
     "vllm serve /m/qwen --served-model-name qwen --host 127.0.0.1 --port 8000 "
     "--enable-prefix-caching --enable-prompt-tokens-details --enable-lora "
     "--lora-modules sql=/a/sql --max-loras 1 --tensor-parallel-size 1"),
    ("sglang", ["--tp", "2", "--context-length", "4096"],
     "python -m sglang.launch_server --model-path /m/qwen --served-model-name qwen "
     "--host 127.0.0.1 --port 8000 --enable-cache-report --enable-metrics "
     "--context-length 4096 --tp 2"),
    ("llamacpp", ["--port", "8081"],
     "python -m llama_cpp.server --model /m/qwen --model_alias qwen --host 127.0.0.1 "
     "--port 8081"),
    ("ollama", ["--modelfile", "out/Modelfile", "--name", "tuned"],
     "OLLAMA_HOST=127.0.0.1:8000 ollama create tuned -f out/Modelfile"),
])
def test_command_prints_the_specs_command(engine: str, args: list[str], expected: str) -> None:
    result = CliRunner().invoke(serving_cli.serving,
                                ["command", "/m/qwen", "--engine", engine, *args])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == expected


def test_command_runtime_lora_sets_the_vllm_environment() -> None:
    result = CliRunner().invoke(serving_cli.serving,
                                ["command", "/m/qwen", "--engine", "vllm", "--runtime-lora"])
    assert result.stdout.startswith("VLLM_ALLOW_RUNTIME_LORA_UPDATING=True vllm serve")


def test_command_rejects_a_malformed_lora() -> None:
    result = CliRunner().invoke(serving_cli.serving,
                                ["command", "/m", "--engine", "vllm", "--lora", "nopath"])
    assert result.exit_code == 2 and "NAME=PATH" in result.output
