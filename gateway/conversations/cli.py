"""``ragate conversations``: list, show, export and delete stored conversations.

Works on the configured store directly (the SQLite file or Redis), so it also works
while no gateway runs.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import click

from gateway.cli_support import config_option, run_on_store
from gateway.conversations.factory import open_store
from gateway.conversations.models import export_record
from gateway.conversations.store import ConversationStore

T = TypeVar("T")


def _run(config: str | None, action: Callable[[ConversationStore], Awaitable[T]]) -> T:
    return run_on_store(config, open_store, lambda store, _: action(store))


def _when(stamp: float) -> str:
    return datetime.fromtimestamp(stamp, UTC).strftime("%Y-%m-%d %H:%M:%S")



@click.group()
def conversations() -> None:
    """Stored conversations."""


@conversations.command("list")
@config_option
@click.option("--owner", help="Only this owner's conversations")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 1000))
@click.option("--after", help="Continue after this conversation id")
def list_command(config: str | None, owner: str | None, limit: int, after: str | None) -> None:
    """Newest first: id, owner, turns, last update, metadata."""
    page = _run(config, lambda s: s.list_conversations(owner, limit=limit, after=after))
    for c in page.data:
        meta = json.dumps(c.metadata, ensure_ascii=False)
        click.echo(f"{c.id}  {c.owner:<16} {c.turns:>4} turns  {_when(c.updated_at)}  "
                   f"{meta[:60]}")
    if page.has_more:
        click.echo(f"… more: --after {page.data[-1].id}", err=True)


@conversations.command()
@config_option
@click.argument("conversation_id")
def show(config: str | None, conversation_id: str) -> None:
    """The conversation, one line per message."""
    async def action(store: ConversationStore) -> tuple[Any, Any]:
        return await store.get(conversation_id), await store.items(conversation_id)

    conversation, items = _run(config, action)
    if conversation is None:
        raise click.ClickException(f"conversation {conversation_id} not found")
    click.echo(f"{conversation.id} owner={conversation.owner} turns={conversation.turns} "
               f"metadata={json.dumps(conversation.metadata, ensure_ascii=False)}")
    if conversation.summary:
        click.echo(f"summary (turns < {conversation.summary.covers_turns}): "
                   f"{conversation.summary.text}")
    for item in items.data:
        content = item.message.get("content") or json.dumps(item.message.get("tool_calls"))
        flag = "" if item.status == "completed" else f" [{item.status}]"
        click.echo(f"[{item.turn:>3}] {item.role:>9}{flag}: {content}")


@conversations.command()
@config_option
@click.argument("conversation_id")
@click.option("--output", "-o", type=click.File("w"), default="-", help="Default: stdout")
def export(config: str | None, conversation_id: str, output: Any) -> None:
    """The conversation and all its items as JSON."""
    async def action(store: ConversationStore) -> dict[str, Any] | None:
        conversation = await store.get(conversation_id)
        if conversation is None:
            return None
        return export_record(conversation, (await store.items(conversation_id)).data)

    data = _run(config, action)
    if data is None:
        raise click.ClickException(f"conversation {conversation_id} not found")
    json.dump(data, output, ensure_ascii=False, indent=2)
    output.write("\n")


@conversations.command()
@config_option
@click.argument("conversation_ids", nargs=-1, required=True)
@click.option("--yes", is_flag=True, help="Do not ask")
def delete(config: str | None, conversation_ids: tuple[str, ...], yes: bool) -> None:
    """Delete conversations and their items."""
    if not yes and sys.stdin.isatty():
        click.confirm(f"Delete {len(conversation_ids)} conversation(s)?", abort=True)

    async def action(store: ConversationStore) -> list[bool]:
        return [await store.delete(cid) for cid in conversation_ids]

    for cid, deleted in zip(conversation_ids, _run(config, action), strict=True):
        click.echo(f"{cid}: {'deleted' if deleted else 'not found'}")
