"""serving: start, probe and stop model servers; no web framework in here."""

from serving.bundled import BundledModelMissingError, bundled_smollm2_path, resolve_gguf
from serving.errors import ServingError
from serving.health import wait_until_healthy
from serving.launcher import LlamaCppServer, free_port
from serving.lora import LoraAdapterError, LoraAdmin, LoraResult, SglangLoraClient, VllmLoraClient
from serving.specs import HEALTH_PATHS, Engine, ServeSpec

__all__ = [
    "BundledModelMissingError",
    "Engine",
    "HEALTH_PATHS",
    "LoraAdapterError",
    "LoraAdmin",
    "LoraResult",
    "ServeSpec",
    "SglangLoraClient",
    "VllmLoraClient",
    "LlamaCppServer",
    "ServingError",
    "bundled_smollm2_path",
    "free_port",
    "resolve_gguf",
    "wait_until_healthy",
]
