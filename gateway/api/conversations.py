"""Conversations API, in the shape of OpenAI's where it fits (plus list and export)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field, field_validator

from gateway.api.deps import ChatPrincipal, ServicesDep
from gateway.conversations.service import ConversationService, conversation_service
from gateway.schemas import ChatMessage
from gateway.services import Services

router = APIRouter(prefix="/v1/conversations", tags=["conversations"])

MAX_METADATA_KEYS = 16
MAX_METADATA_VALUE = 64 * 1024  # a persona card is longer than OpenAI's 512 characters


def _metadata(value: dict[str, str]) -> dict[str, str]:
    if len(value) > MAX_METADATA_KEYS:
        raise ValueError(f"at most {MAX_METADATA_KEYS} metadata keys")
    for key, item in value.items():
        if len(key) > 64:
            raise ValueError(f"metadata key {key[:20]!r}… is longer than 64 characters")
        if len(item) > MAX_METADATA_VALUE:
            raise ValueError(f"metadata value of {key!r} is longer than {MAX_METADATA_VALUE}")
    return value


class NewConversation(BaseModel):
    model_config = ConfigDict(extra="forbid")

    metadata: dict[str, str] = Field(default_factory=dict)
    items: list[ChatMessage] = Field(default_factory=list)

    _check = field_validator("metadata")(_metadata)


class MetadataUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    metadata: dict[str, str]

    _check = field_validator("metadata")(_metadata)


class NewItems(BaseModel):
    model_config = ConfigDict(extra="forbid")

    items: list[ChatMessage] = Field(min_length=1)


def _service(services: Services) -> ConversationService:
    return conversation_service(services.conversations)


def _dump(messages: list[ChatMessage]) -> list[dict[str, Any]]:
    return [m.model_dump(exclude_none=True) for m in messages]


Limit = Annotated[int, Query(ge=1, le=100)]
OrderQ = Literal["asc", "desc"]


@router.post("", status_code=200)
async def create(body: NewConversation, services: ServicesDep,
                 principal: ChatPrincipal) -> dict[str, Any]:
    service = _service(services)
    return (await service.create(principal, body.metadata, _dump(body.items))).to_api()


@router.get("")
async def list_conversations(services: ServicesDep, principal: ChatPrincipal,
                             limit: Limit = 20, after: str | None = None,
                             order: OrderQ = "desc", owner: str | None = None) -> dict[str, Any]:
    page = await _service(services).list_page(principal, owner=owner, limit=limit,
                                                     after=after, order=order)
    return page.to_api()


@router.get("/{conversation_id}")
async def get(conversation_id: str, services: ServicesDep,
              principal: ChatPrincipal) -> dict[str, Any]:
    return (await _service(services).get(principal, conversation_id)).to_api()


@router.post("/{conversation_id}")
async def update(conversation_id: str, body: MetadataUpdate, services: ServicesDep,
                 principal: ChatPrincipal) -> dict[str, Any]:
    service = _service(services)
    return (await service.update_metadata(principal, conversation_id, body.metadata)).to_api()


@router.delete("/{conversation_id}")
async def delete(conversation_id: str, services: ServicesDep,
                 principal: ChatPrincipal) -> dict[str, Any]:
    await _service(services).delete(principal, conversation_id)
    return {"id": conversation_id, "object": "conversation.deleted", "deleted": True}


@router.get("/{conversation_id}/items")
async def list_items(conversation_id: str, services: ServicesDep, principal: ChatPrincipal,
                     limit: Limit = 20, after: str | None = None,
                     order: OrderQ = "asc") -> dict[str, Any]:
    page = await _service(services).items_page(
        principal, conversation_id, limit=limit, after=after, order=order)
    return page.to_api()


@router.post("/{conversation_id}/items")
async def append_items(conversation_id: str, body: NewItems, services: ServicesDep,
                       principal: ChatPrincipal) -> dict[str, Any]:
    added = await _service(services).append(principal, conversation_id,
                                                        _dump(body.items))
    return {"object": "list", "data": [i.to_api() for i in added]}


@router.get("/{conversation_id}/export")
async def export(conversation_id: str, services: ServicesDep,
                 principal: ChatPrincipal) -> dict[str, Any]:
    return await _service(services).export(principal, conversation_id)
