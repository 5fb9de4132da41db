"""The deploy files are checked offline: every Kubernetes manifest against the bundled
Kubernetes schemas (kubernetes-validate, strict: an unknown field is an error), the
compose file against the Compose Specification's schema (vendored by check-jsonschema),
and what ragate itself reads from them (its config, its CLI) against ragate."""

from __future__ import annotations

import copy
import json
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from gateway.cli import main
from gateway.settings import Settings

DOCKER = Path(__file__).resolve().parents[3] / "docker"
K8S = DOCKER / "k8s"
MANIFESTS = sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")


def documents() -> list[tuple[str, dict[str, Any]]]:
    return [(f"{path.name}:{doc['kind']}/{doc['metadata']['name']}", doc)
            for path in MANIFESTS for doc in yaml.safe_load_all(path.read_text()) if doc]


def by_kind(kind: str) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for _, doc in documents() if doc["kind"] == kind}


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    return deployment["spec"]["template"]["spec"]["containers"][0]  # type: ignore[no-any-return]


@pytest.mark.parametrize(("name", "doc"), documents(), ids=[n for n, _ in documents()])
def test_every_manifest_matches_the_kubernetes_schema(name: str, doc: dict[str, Any]) -> None:
    kubernetes_validate.validate(doc, kubernetes_validate.latest_version(), strict=True)


def test_the_check_refuses_a_broken_manifest() -> None:
    gateway = copy.deepcopy(by_kind("Deployment")["gateway"])
    container(gateway)["readinessProbe"]["httpGet"]["pathh"] = "/ready"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(gateway, kubernetes_validate.latest_version(), strict=True)


def test_kustomization_lists_every_manifest() -> None:
    listed = yaml.safe_load((K8S / "kustomization.yaml").read_text())["resources"]
    assert sorted(listed) == [p.name for p in MANIFESTS]


def test_the_gateway_is_probed_guarded_and_scaled() -> None:
    gateway = by_kind("Deployment")["gateway"]
    pod = container(gateway)
    assert pod["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert pod["livenessProbe"]["httpGet"]["path"] == "/health"
    assert {"cpu", "memory"} <= pod["resources"]["requests"].keys()
    labels = gateway["spec"]["template"]["metadata"]["labels"]
    assert by_kind("PodDisruptionBudget")["gateway"]["spec"]["selector"]["matchLabels"] == labels
    hpa = by_kind("HorizontalPodAutoscaler")["gateway"]["spec"]
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                     "name": "gateway"}
    assert hpa["metrics"][0]["resource"]["name"] == "cpu"
    assert by_kind("Service")["gateway"]["spec"]["selector"] == labels


def test_the_engines_ask_for_a_gpu_and_keep_prefix_caching_on() -> None:
    vllm, sglang = (container(by_kind("Deployment")[n]) for n in ("vllm", "sglang"))
    assert "--enable-prefix-caching" in vllm["args"]
    assert not any("disable-radix-cache" in a for a in sglang["args"])  # on by default
    for engine in (vllm, sglang):
        assert engine["resources"]["limits"]["nvidia.com/gpu"] == 1


def test_the_configmap_is_a_valid_ragate_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAGATE_ADMIN_KEY", "sk-test")
    text = by_kind("ConfigMap")["ragate-config"]["data"]["ragate.yaml"]
    settings = Settings(**yaml.safe_load(text))
    assert settings.conversations.redis_url == "redis://redis:6379/0"
    assert settings.jobs_store == "redis" and not settings.knowledge.run_jobs
    backends = {b.url for m in settings.models for b in m.backends}
    services = by_kind("Service")
    for url in backends:  # each backend URL names a Service of these manifests, on its port
        host, port = url.removeprefix("http://").split(":")
        assert int(port) in [p["port"] for p in services[host]["spec"]["ports"]]


def test_the_worker_runs_a_real_command() -> None:
    command = container(by_kind("Deployment")["worker"])["command"]
    assert command[:2] == ["ragate", "worker"]
    options = {o for p in main.commands["worker"].params for o in p.opts}
    assert {c for c in command if c.startswith("--")} <= options


def test_the_compose_file_matches_the_compose_specification(
        monkeypatch: pytest.MonkeyPatch) -> None:
    schema_file = resources.files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json"
    schema = json.loads(schema_file.read_text())
    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    jsonschema.validate(compose, schema)
    broken = copy.deepcopy(compose)
    broken["services"]["gateway"]["depends_on"] = {"redis": {"condition": "whenever"}}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema)
    monkeypatch.setenv("RAGATE_ADMIN_KEY", "sk-test")
    Settings(**yaml.safe_load((DOCKER / "ragate.yaml").read_text()))
