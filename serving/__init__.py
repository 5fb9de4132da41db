"""serving: start, probe and stop model servers; no web framework in here."""

from serving.bundled import BundledModelMissingError, bundled_smollm2_path, resolve_gguf
from serving.errors import ServingError
from serving.health import wait_until_healthy
from serving.launcher import LlamaCppServer, free_port

__all__ = [
    "BundledModelMissingError",
    "LlamaCppServer",
    "ServingError",
    "bundled_smollm2_path",
    "free_port",
    "resolve_gguf",
    "wait_until_healthy",
]
