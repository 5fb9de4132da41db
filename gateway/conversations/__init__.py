"""Conversations: stored chat history, its stores, and chat requests that continue it."""

from gateway.conversations.models import Conversation, Item, ItemStatus, Page, Summary
from gateway.conversations.redis import RedisConversationStore
from gateway.conversations.service import ConversationService
from gateway.conversations.sqlite import SqliteConversationStore
from gateway.conversations.store import ConversationStore, split_turns
from gateway.errors import StoreUnavailableError

__all__ = [
    "Conversation",
    "ConversationService",
    "ConversationStore",
    "Item",
    "ItemStatus",
    "Page",
    "RedisConversationStore",
    "SqliteConversationStore",
    "StoreUnavailableError",
    "Summary",
    "split_turns",
]
