"""The chat request pipeline, one module per step, in the order they run:

    pipeline     runs the steps below and owns the conversation turn
    history      where the history comes from: a stored conversation or the request
    turn         a stored conversation's turn: begin, commit or interrupt, release
    context      retrieval: passages from the knowledge base the request may use
    assembly     pinned + summary + passages + history + new message, in cache order
    truncation   the stepped cut, a pure function of the messages (``tokens`` counts them)
    summary      a pinned summary of the turns cut away (stored conversations)
    reuse        predicted prefix reuse against the previous prompt
    upstream     the backend body for its kind, routing, dispatch
    relay        the reply to the client, JSON or SSE, with usage always
    usage        usage as reported by the backend, or counted by us

Nothing is imported here eagerly: ``gateway.settings`` imports ``truncation.Strategy``.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ChatPipeline"]


def __getattr__(name: str) -> Any:
    if name == "ChatPipeline":
        from gateway.chat.pipeline import ChatPipeline

        return ChatPipeline
    raise AttributeError(name)
