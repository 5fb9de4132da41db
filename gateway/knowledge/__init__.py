"""Knowledge bases in the gateway: admin API service and background ingestion."""

from gateway.knowledge.service import KnowledgeService, knowledge_service

__all__ = ["KnowledgeService", "knowledge_service"]
