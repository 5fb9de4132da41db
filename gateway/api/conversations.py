"""Conversations API, in the shape of OpenAI's where it fits (plus list and export)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field, field_validator

from gateway.api.deps import ChatPrincipal, ServicesDep
from gateway.auth import Principal
from gateway.conversations.models import export_record
from gateway.conversations.service import ConversationService
from gateway.conversations.store import split_turns
from gateway.errors import GatewayError, NotFoundError
from gateway.schemas import ChatMessage
from gateway.services import Services

router = APIRouter(prefix="/v1/conversations", tags=["conversations"])

MAX_METADATA_KEYS = 16
MAX_METADATA_VALUE = 64 * 1024  # a persona card is longer than OpenAI's 512 characters


class StoreDisabledError(GatewayError):
    status_code = 404
    type = "not_found_error"
    code = "conversations_disabled"


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
    if services.conversations is None:
        raise StoreDisabledError("conversations are not enabled on this gateway")
    return services.conversations


def _dump(messages: list[ChatMessage]) -> list[dict[str, Any]]:
    return [m.model_dump(exclude_none=True) for m in messages]


Limit = Annotated[int, Query(ge=1, le=100)]
OrderQ = Literal["asc", "desc"]


@router.post("", status_code=200)
async def create(body: NewConversation, services: ServicesDep,
                 principal: ChatPrincipal) -> dict[str, Any]:
    conversation = await _service(services).create(principal, body.metadata, _dump(body.items))
    return conversation.to_api()


@router.get("")
async def list_conversations(services: ServicesDep, principal: ChatPrincipal,
                             limit: Limit = 20, after: str | None = None,
                             order: OrderQ = "desc", owner: str | None = None) -> dict[str, Any]:
    service = _service(services)
    # a chat key lists its own; an admin lists everyone's, or one owner's with ?owner=
    scope = owner if principal.is_admin else principal.owner
    page = await service.store.list_conversations(scope, limit=limit, after=after, order=order)
    return page.to_api()


@router.get("/{conversation_id}")
async def get(conversation_id: str, services: ServicesDep,
              principal: ChatPrincipal) -> dict[str, Any]:
    return (await _service(services).get(principal, conversation_id)).to_api()


@router.post("/{conversation_id}")
async def update(conversation_id: str, body: MetadataUpdate, services: ServicesDep,
                 principal: ChatPrincipal) -> dict[str, Any]:
    service = _service(services)
    await service.get(principal, conversation_id)
    updated = await service.store.update_metadata(conversation_id, body.metadata)
    if updated is None:
        raise NotFoundError(f"conversation {conversation_id} not found")
    return updated.to_api()


@router.delete("/{conversation_id}")
async def delete(conversation_id: str, services: ServicesDep,
                 principal: ChatPrincipal) -> dict[str, Any]:
    service = _service(services)
    await service.get(principal, conversation_id)
    await service.store.delete(conversation_id)
    return {"id": conversation_id, "object": "conversation.deleted", "deleted": True}


@router.get("/{conversation_id}/items")
async def list_items(conversation_id: str, services: ServicesDep, principal: ChatPrincipal,
                     limit: Limit = 20, after: str | None = None,
                     order: OrderQ = "asc") -> dict[str, Any]:
    service = _service(services)
    await service.get(principal, conversation_id)
    page = await service.store.items(conversation_id, limit=limit, after=after, order=order)
    return page.to_api()


@router.post("/{conversation_id}/items")
async def append_items(conversation_id: str, body: NewItems, services: ServicesDep,
                       principal: ChatPrincipal) -> dict[str, Any]:
    service = _service(services)
    await service.get(principal, conversation_id)
    added = []
    async with service.store.lock(conversation_id, service.config.lock_wait_s):
        for turn in split_turns(_dump(body.items)):
            added += await service.store.append_turn(conversation_id, turn)
    return {"object": "list", "data": [i.to_api() for i in added]}


@router.get("/{conversation_id}/export")
async def export(conversation_id: str, services: ServicesDep,
                 principal: ChatPrincipal) -> dict[str, Any]:
    return await export_conversation(_service(services), principal, conversation_id)


async def export_conversation(service: ConversationService, principal: Principal,
                              conversation_id: str) -> dict[str, Any]:
    conversation = await service.get(principal, conversation_id)
    return export_record(conversation, (await service.store.items(conversation_id)).data)
