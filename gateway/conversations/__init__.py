"""Conversations: stored chat history, its stores, and chat requests that continue it."""

from gateway.conversations.models import Conversation, Item, ItemStatus, Page, Summary
from gateway.conversations.redis import RedisConversationStore
from gateway.conversations.service import ChatTurn, ConversationService
from gateway.conversations.sqlite import SqliteConversationStore
from gateway.conversations.store import ConversationStore, StoreUnavailableError, split_turns

__all__ = [
    "ChatTurn",
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
