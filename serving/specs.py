"""One serving spec, and the launch command each engine (vLLM, SGLang, llama.cpp, Ollama) needs.

The gateway relies on what these flags turn on: prefix caching and cached-token counts in
``usage`` (vLLM ``--enable-prompt-tokens-details``, SGLang ``--enable-cache-report``),
and LoRA adapters served under their own model names.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from serving.errors import ServingError


class Engine(StrEnum):
    VLLM = "vllm"
    SGLANG = "sglang"
    LLAMACPP = "llamacpp"
    OLLAMA = "ollama"


# Where each engine answers once it is ready to serve.
HEALTH_PATHS = {
    Engine.VLLM: "/health",
    Engine.SGLANG: "/health",
    Engine.LLAMACPP: "/v1/models",
    Engine.OLLAMA: "/api/tags",
}


@dataclass
class ServeSpec:
    """What to serve and how; engine-neutral.

    ``model`` is an HF folder for vLLM/SGLang and a GGUF file for llama.cpp and Ollama.
    ``lora_adapters`` maps the model name clients will ask for to an adapter folder.
    """

    model: str
    served_name: str | None = None
    lora_adapters: dict[str, str] = field(default_factory=dict)
    context_length: int | None = None
    tensor_parallel: int = 1
    gpu_memory_fraction: float | None = None
    port: int = 8000
    host: str = "127.0.0.1"
    max_lora_rank: int | None = None  # None: read from the adapters' adapter_config.json
    runtime_lora: bool = False  # allow loading adapters after start (lora.py)
    chat_template: str | None = None  # a Jinja file, for models without their own
    extra_args: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.model:
            raise ServingError("a model path is required")
        if self.tensor_parallel < 1:
            raise ServingError("tensor_parallel must be at least 1")
        if self.gpu_memory_fraction is not None and not 0 < self.gpu_memory_fraction <= 1:
            raise ServingError("gpu_memory_fraction must be in (0, 1]")
        if not 0 < self.port < 65536:
            raise ServingError(f"invalid port {self.port}")
        if self.context_length is not None and self.context_length < 1:
            raise ServingError("context_length must be positive")
        for name, path in self.lora_adapters.items():
            if not name or "=" in name or " " in name:
                raise ServingError(f"invalid adapter name {name!r}")
            if not path:
                raise ServingError(f"adapter {name!r} has no path")

    @property
    def name(self) -> str:
        return self.served_name or Path(self.model.rstrip("/")).name

    @property
    def base_url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::") else self.host
        return f"http://{host}:{self.port}"

    def health_url(self, engine: Engine | str) -> str:
        return self.base_url + HEALTH_PATHS[Engine(engine)]

    @property
    def lora_rank(self) -> int | None:
        """The largest ``r`` among the adapters (engines reserve memory for this rank)."""
        if self.max_lora_rank:
            return self.max_lora_rank
        ranks = []
        for path in self.lora_adapters.values():
            config = Path(path) / "adapter_config.json"
            if config.is_file():
                try:
                    ranks.append(int(json.loads(config.read_text())["r"]))
                except (ValueError, KeyError, json.JSONDecodeError):
                    continue
        return max(ranks) if ranks else None

    def argv(self, engine: Engine | str, **kwargs: str) -> list[str]:
        builders = {
            Engine.VLLM: self.vllm_argv,
            Engine.SGLANG: self.sglang_argv,
            Engine.LLAMACPP: self.llamacpp_argv,
            Engine.OLLAMA: self.ollama_argv,
        }
        return builders[Engine(engine)](**kwargs)

    def env(self, engine: Engine | str) -> dict[str, str]:
        """Environment the engine needs on top of the caller's."""
        engine = Engine(engine)
        if engine is Engine.VLLM and self.runtime_lora:
            # vLLM mounts /v1/load_lora_adapter only with this set.
            return {"VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True"}
        if engine is Engine.OLLAMA:
            return {"OLLAMA_HOST": f"{self.host}:{self.port}"}
        return {}

    def vllm_argv(self) -> list[str]:
        argv = ["vllm", "serve", self.model, "--served-model-name", self.name,
                "--host", self.host, "--port", str(self.port),
                "--enable-prefix-caching", "--enable-prompt-tokens-details"]
        if self.lora_adapters or self.runtime_lora:
            argv.append("--enable-lora")
            if self.lora_adapters:
                argv.append("--lora-modules")
                argv += [f"{name}={path}" for name, path in self.lora_adapters.items()]
                # vLLM's default of one adapter per batch would serialize adapter traffic.
                argv += ["--max-loras", str(len(self.lora_adapters))]
            if self.lora_rank:
                argv += ["--max-lora-rank", str(self.lora_rank)]
        if self.context_length:
            argv += ["--max-model-len", str(self.context_length)]
        argv += ["--tensor-parallel-size", str(self.tensor_parallel)]
        if self.gpu_memory_fraction is not None:
            argv += ["--gpu-memory-utilization", str(self.gpu_memory_fraction)]
        if self.chat_template:
            argv += ["--chat-template", self.chat_template]
        return argv + self.extra_args

    def sglang_argv(self, python: str = "python") -> list[str]:
        argv = [python, "-m", "sglang.launch_server", "--model-path", self.model,
                "--served-model-name", self.name, "--host", self.host, "--port", str(self.port),
                "--enable-cache-report", "--enable-metrics"]
        if self.lora_adapters or self.runtime_lora:
            argv.append("--enable-lora")
            if self.lora_adapters:
                argv.append("--lora-paths")
                argv += [f"{name}={path}" for name, path in self.lora_adapters.items()]
                argv += ["--max-loras-per-batch", str(len(self.lora_adapters))]
            elif self.runtime_lora:
                # With no adapter at start SGLang cannot infer which modules to wrap.
                argv += ["--lora-target-modules", "all"]
            if self.lora_rank or not self.lora_adapters:
                argv += ["--max-lora-rank", str(self.lora_rank or 64)]
        if self.context_length:
            argv += ["--context-length", str(self.context_length)]
        argv += ["--tp", str(self.tensor_parallel)]
        if self.gpu_memory_fraction is not None:
            argv += ["--mem-fraction-static", str(self.gpu_memory_fraction)]
        if self.chat_template:
            argv += ["--chat-template", self.chat_template]
        return argv + self.extra_args

    def llamacpp_argv(self, python: str = "python") -> list[str]:
        """llama-cpp-python's server: one GGUF, at most one (GGUF) LoRA adapter."""
        if len(self.lora_adapters) > 1:
            raise ServingError("llama-cpp-python's server applies at most one LoRA adapter")
        if self.tensor_parallel > 1:
            raise ServingError("llama.cpp has no tensor parallelism; use tensor_parallel=1")
        argv = [python, "-m", "llama_cpp.server", "--model", self.model,
                "--model_alias", self.name, "--host", self.host, "--port", str(self.port)]
        if self.context_length:
            argv += ["--n_ctx", str(self.context_length)]
        for path in self.lora_adapters.values():
            argv += ["--lora_path", path]
        return argv + self.extra_args

    def ollama_argv(self, modelfile: str = "Modelfile") -> list[str]:
        """``ollama create``: the Modelfile carries FROM, TEMPLATE, ADAPTER and num_ctx."""
        if len(self.lora_adapters) > 1:
            raise ServingError("an Ollama model takes one ADAPTER; create one model per adapter")
        return ["ollama", "create", self.name, "-f", modelfile]
