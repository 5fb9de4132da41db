"""Knowledge bases in the gateway: admin API, background ingestion, context injection."""

from gateway.knowledge.context import Sources, inject_context
from gateway.knowledge.service import KnowledgeService

__all__ = ["KnowledgeService", "Sources", "inject_context"]
