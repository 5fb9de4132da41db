"""Launch commands produced from one ServeSpec, per engine."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from serving.errors import ServingError
from serving.specs import Engine, ServeSpec


def _after(argv: list[str], flag: str) -> str:
    return argv[argv.index(flag) + 1]


def test_vllm_argv(tmp_path: Path) -> None:
    adapter = tmp_path / "support"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"r": 32}))
    spec = ServeSpec("/models/Qwen2.5-7B-Instruct", served_name="qwen",
                     lora_adapters={"support": str(adapter), "sales": "/loras/sales"},
                     context_length=8192, tensor_parallel=2, gpu_memory_fraction=0.85,
                     port=8001, extra_args=["--dtype", "bfloat16"])
    argv = spec.argv(Engine.VLLM)
    assert argv[:3] == ["vllm", "serve", "/models/Qwen2.5-7B-Instruct"]
    assert _after(argv, "--served-model-name") == "qwen"
    for flag in ("--enable-prefix-caching", "--enable-prompt-tokens-details", "--enable-lora"):
        assert flag in argv
    start = argv.index("--lora-modules")
    assert argv[start + 1:start + 3] == [f"support={adapter}", "sales=/loras/sales"]
    assert _after(argv, "--max-loras") == "2"
    assert _after(argv, "--max-lora-rank") == "32"  # read from adapter_config.json
    assert _after(argv, "--max-model-len") == "8192"
    assert _after(argv, "--tensor-parallel-size") == "2"
    assert _after(argv, "--gpu-memory-utilization") == "0.85"
    assert _after(argv, "--port") == "8001"
    assert argv[-2:] == ["--dtype", "bfloat16"]
    assert spec.env(Engine.VLLM) == {}


def test_vllm_runtime_lora_env() -> None:
    spec = ServeSpec("/m/base", runtime_lora=True)
    assert "--enable-lora" in spec.vllm_argv() and "--lora-modules" not in spec.vllm_argv()
    assert spec.env("vllm") == {"VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True"}


def test_sglang_argv() -> None:
    spec = ServeSpec("/models/llama3", served_name="llama", lora_adapters={"a": "/l/a"},
                     context_length=4096, tensor_parallel=4, gpu_memory_fraction=0.8,
                     port=30000, max_lora_rank=16)
    argv = spec.argv("sglang")
    assert argv[:3] == ["python", "-m", "sglang.launch_server"]
    assert _after(argv, "--model-path") == "/models/llama3"
    assert _after(argv, "--served-model-name") == "llama"
    for flag in ("--enable-lora", "--enable-cache-report", "--enable-metrics"):
        assert flag in argv
    assert _after(argv, "--lora-paths") == "a=/l/a"
    assert _after(argv, "--max-lora-rank") == "16"
    assert _after(argv, "--context-length") == "4096"
    assert _after(argv, "--tp") == "4"
    assert _after(argv, "--mem-fraction-static") == "0.8"
    assert _after(argv, "--port") == "30000"


def test_sglang_runtime_lora_without_adapters_names_targets() -> None:
    argv = ServeSpec("/m", runtime_lora=True).sglang_argv()
    assert _after(argv, "--lora-target-modules") == "all"
    assert _after(argv, "--max-lora-rank") == "64"


def test_llamacpp_argv() -> None:
    spec = ServeSpec("/out/model.gguf", served_name="smol", context_length=2048, port=9000,
                     lora_adapters={"x": "/out/lora.gguf"})
    argv = spec.argv(Engine.LLAMACPP, python="/venv/bin/python")
    assert argv[:3] == ["/venv/bin/python", "-m", "llama_cpp.server"]
    assert _after(argv, "--model") == "/out/model.gguf"
    assert _after(argv, "--model_alias") == "smol"
    assert _after(argv, "--n_ctx") == "2048"
    assert _after(argv, "--lora_path") == "/out/lora.gguf"
    assert spec.health_url("llamacpp") == "http://127.0.0.1:9000/v1/models"
    with pytest.raises(ServingError):
        ServeSpec("/m.gguf", lora_adapters={"a": "/a", "b": "/b"}).llamacpp_argv()


def test_ollama_argv() -> None:
    spec = ServeSpec("/out/model.gguf", served_name="smol-ft", host="0.0.0.0", port=11434)
    assert spec.argv("ollama", modelfile="/out/Modelfile") == [
        "ollama", "create", "smol-ft", "-f", "/out/Modelfile"]
    assert spec.env("ollama") == {"OLLAMA_HOST": "0.0.0.0:11434"}
    assert spec.base_url == "http://127.0.0.1:11434"


def test_served_name_defaults_to_the_folder() -> None:
    assert ServeSpec("/models/Qwen2.5-7B-Instruct/").name == "Qwen2.5-7B-Instruct"


@pytest.mark.parametrize("kwargs", [
    {"tensor_parallel": 0}, {"gpu_memory_fraction": 1.5}, {"port": 0},
    {"lora_adapters": {"a=b": "/x"}}, {"context_length": 0},
])
def test_invalid_specs(kwargs: dict) -> None:  # type: ignore[type-arg]
    with pytest.raises(ServingError):
        ServeSpec("/m", **kwargs)
