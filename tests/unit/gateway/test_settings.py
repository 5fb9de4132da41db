"""Configuration: YAML + env overrides, validated with messages that say what to fix."""

from pathlib import Path

import pytest

from gateway.errors import ConfigError
from gateway.routing import Policy
from gateway.settings import BackendKind, Role, Settings, load_settings


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "ragate.yaml"
    path.write_text(text)
    return path


def test_embedded_defaults_run_a_local_smollm2() -> None:
    settings = load_settings()
    assert settings.server.host == "127.0.0.1"
    assert [b.model for b in settings.local_backends] == ["smollm2"]
    assert settings.local_backends[0].gguf == "bundled:smollm2"
    assert not settings.auth_enabled


def test_yaml_file_is_read(tmp_path: Path) -> None:
    path = write(tmp_path, """
models:
  - name: chat
    policy: least_outstanding
    backends:
      - {url: "http://10.0.0.1:8000/v1/", kind: vllm, model: Qwen/Qwen2.5-7B, lora: sql}
auth:
  keys: [{key: sk-admin, role: admin}]
""")
    s = load_settings(path)
    model = s.models[0]
    assert model.policy is Policy.LEAST_OUTSTANDING
    backend = model.backends[0]
    assert backend.url == "http://10.0.0.1:8000", "trailing / and /v1 are normalised away"
    assert backend.kind is BackendKind.VLLM and backend.lora == "sql"
    assert s.auth.keys[0].role is Role.ADMIN


def test_env_overrides_yaml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, "server: {port: 8000}\n")
    monkeypatch.setenv("RAGATE_SERVER__PORT", "9100")
    monkeypatch.setenv("RAGATE_AUTH__KEYS", '[{"key": "sk-env", "role": "chat"}]')
    s = load_settings(path)
    assert s.server.port == 9100
    assert s.auth.keys[0].key == "sk-env"


def test_key_from_named_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_ADMIN_KEY", "sk-secret")
    s = load_settings(auth={"keys": [{"key_env": "MY_ADMIN_KEY", "role": "admin"}]})
    assert s.auth.keys[0].key == "sk-secret"


def test_missing_key_variable_is_explained() -> None:
    with pytest.raises(ConfigError, match="NOPE_NOT_SET is not set"):
        load_settings(auth={"keys": [{"key_env": "NOPE_NOT_SET"}]})


def test_unknown_policy_is_named_with_the_choices(tmp_path: Path) -> None:
    path = write(tmp_path, "models: [{name: m, policy: fastest, backends: [{url: 'http://a:1'}]}]")
    with pytest.raises(ConfigError) as err:
        load_settings(path)
    text = str(err.value)
    assert "models.0.policy" in text and "'fastest'" in text and "round_robin" in text


def test_duplicate_model_names_are_refused() -> None:
    with pytest.raises(ConfigError, match="duplicate model names: a"):
        load_settings(models=[{"name": "a"}, {"name": "a"}, {"name": "b"}])


def test_backend_without_url_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"models\.0\.backends\.0\.url: Field required"):
        load_settings(models=[{"name": "a", "backends": [{"model": "x"}]}])


def test_backend_url_must_be_http() -> None:
    with pytest.raises(ConfigError, match="must start with http"):
        load_settings(models=[{"name": "a", "backends": [{"url": "localhost:8000"}]}])


def test_unknown_setting_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "server: {prot: 1}\n")
    with pytest.raises(ConfigError, match="server.prot: unknown setting"):
        load_settings(path)


def test_one_name_for_two_urls_is_refused() -> None:
    with pytest.raises(ConfigError, match="used for two URLs"):
        load_settings(models=[
            {"name": "a", "backends": [{"url": "http://h:1", "name": "x"}]},
            {"name": "b", "backends": [{"url": "http://h:2", "name": "x"}]},
        ])


def test_one_server_may_serve_two_models() -> None:
    s = load_settings(models=[
        {"name": "a", "backends": [{"url": "http://h:1"}]},
        {"name": "b", "backends": [{"url": "http://h:1", "lora": "b"}]},
    ])
    assert len(s.models) == 2


def test_duplicate_api_keys_are_refused() -> None:
    with pytest.raises(ConfigError, match="configured twice"):
        load_settings(auth={"keys": [{"key": "k"}, {"key": "k", "role": "admin"}]})


def test_bad_yaml_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_settings(write(tmp_path, "models: [\n"))
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "absent.yaml")
    with pytest.raises(ConfigError, match="mapping at the top level"):
        load_settings(write(tmp_path, "- a\n- b\n"))


def test_the_docker_compose_config_is_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAGATE_ADMIN_KEY", "sk-docker")
    settings = load_settings(Path(__file__).parents[3] / "docker" / "ragate.yaml")
    assert settings.models[0].policy is Policy.CACHE_AWARE
    assert settings.auth.keys[0].key == "sk-docker"


def test_one_backend_declared_with_two_kinds_is_refused() -> None:
    url = "http://127.0.0.1:9000"
    with pytest.raises(ValueError, match="declared as kinds"):
        Settings.model_validate({"models": [
            {"name": "a", "backends": [{"url": url, "kind": "llamacpp"}]},
            {"name": "b", "backends": [{"url": url, "kind": "vllm"}]}]})
    Settings.model_validate({"models": [
        {"name": "a", "backends": [{"url": url, "kind": "llamacpp"}]},
        {"name": "b", "backends": [{"url": url, "kind": "vllm", "name": "same-as-vllm"}]}]})
