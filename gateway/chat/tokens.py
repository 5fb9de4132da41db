"""Token counting with the served model's tokenizer, cached per message.

Sources, in order of preference (``tokenizer.source`` per model):
- ``hf``: a local ``tokenizer.json`` or Hugging Face model folder (loaded at start-up);
  with a chat template, the per-message template overhead is measured, not guessed;
- ``backend``: the backend's own tokenize endpoint (vLLM/SGLang ``/tokenize``, llama.cpp
  ``/tokenize``, llama-cpp-python ``/extras/tokenize``);
- ``estimate``: a character-class estimate, also the fallback when a source fails
  (counted in ``ragate_token_count_fallbacks_total``).

Counts are cached by message hash, so a long history is tokenized once, not every turn.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
import unicodedata
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import anyio

from gateway.backends.kinds import Kind
from gateway.backends.transport import Upstream

log = logging.getLogger("ragate.tokens")


def message_hash(message: dict[str, Any]) -> str:
    return hashlib.sha1(
        json.dumps(message, sort_keys=True, ensure_ascii=False).encode(), usedforsecurity=False
    ).hexdigest()


def message_text(message: dict[str, Any]) -> str:
    """The text a chat template would render for a message (content, parts, tool calls)."""
    content = message.get("content")
    if isinstance(content, list):
        content = "".join(
            p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text"
        )
    text = content if isinstance(content, str) else ""
    if message.get("tool_calls"):
        text += json.dumps(message["tool_calls"], ensure_ascii=False)
    return text


def estimate_tokens(text: str) -> int:
    """About one token per CJK character and per four other characters."""
    wide = sum(1 for ch in text if unicodedata.east_asian_width(ch) in "WF")
    return math.ceil(wide + (len(text) - wide) / 4) if text else 0


class TextCounter(Protocol):
    source: str

    async def count(self, texts: Sequence[str]) -> list[int]: ...


class EstimateCounter:
    source = "estimate"

    async def count(self, texts: Sequence[str]) -> list[int]:
        return [estimate_tokens(t) for t in texts]


class HFTokenizerCounter:
    """A local tokenizer; ``load`` reads it (call at start-up, in a worker thread)."""

    source = "hf"

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._encode: Any = None
        self.template_overhead: int | None = None

    def load(self) -> HFTokenizerCounter:
        if self.path.is_file():
            from tokenizers import Tokenizer

            tok = Tokenizer.from_file(str(self.path))
            # a tokenizer.json may carry padding/truncation settings (sentence models pad
            # to 128): counting must see the text's own tokens only
            tok.no_padding()
            tok.no_truncation()
            self._encode = lambda text: len(tok.encode(text, add_special_tokens=False).ids)
            return self
        from transformers import AutoTokenizer

        auto: Any = AutoTokenizer.from_pretrained(str(self.path), local_files_only=True)
        self._encode = lambda text: len(auto.encode(text, add_special_tokens=False))
        if getattr(auto, "chat_template", None):
            probe = "x"
            templated = auto.apply_chat_template([{"role": "user", "content": probe}],
                                                tokenize=True)
            ids = templated["input_ids"] if isinstance(templated, dict) else templated
            self.template_overhead = max(len(ids) - self._encode(probe), 0)
        return self

    async def count(self, texts: Sequence[str]) -> list[int]:
        if self._encode is None:
            raise RuntimeError("tokenizer not loaded")
        return await anyio.to_thread.run_sync(lambda: [self._encode(t) for t in texts])


class BackendTokenizeCounter:
    """Asks a backend to tokenize, the way its kind does (``Kind.tokenize``): each call in
    turn until one is not 404 (llama-cpp-python and llama-server differ)."""

    source = "backend"

    def __init__(self, client: Upstream, kind: Kind, model: str, timeout_s: float = 5.0) -> None:
        if kind.tokenize is None:
            raise ValueError("this kind of backend has no tokenize endpoint")
        self.client = client
        self.calls = kind.tokenize
        self.model = model
        self.timeout_s = timeout_s
        self._missing_until = 0.0  # every endpoint answered 404: do not ask before this

    MISSING_RETRY_S = 60.0

    async def count(self, texts: Sequence[str]) -> list[int]:
        if time.monotonic() < self._missing_until:
            # a backend without a tokenize endpoint: one 404 round trip per message
            # counted cost more than the request it was for
            raise RuntimeError("the backend has no tokenize endpoint (404)")
        return [await self._one(t) for t in texts]

    async def _one(self, text: str) -> int:
        status = 404
        for call in self.calls(self.model, text):
            # short: a count must never hold a request (or a lock) for a read timeout
            r = await self.client.request("POST", call.path, json_body=call.body,
                                          timeout_s=self.timeout_s)
            status = r.status_code
            if status == 200:
                body = r.json()
                return int(body["count"]) if "count" in body else len(body["tokens"])
            if status != 404:
                break
        if status == 404:
            self._missing_until = time.monotonic() + self.MISSING_RETRY_S
        raise RuntimeError(f"tokenize answered HTTP {status}")


class MessageCounter:
    """Counts chat messages: text tokens + a per-message template overhead, cached."""

    def __init__(
        self,
        counter: TextCounter,
        *,
        per_message_overhead: int = 5,
        cache_size: int = 50_000,
        on_fallback: Any = None,
    ) -> None:
        self.counter = counter
        overhead = getattr(counter, "template_overhead", None)
        self.per_message_overhead = overhead if overhead is not None else per_message_overhead
        self.cache_size = cache_size
        self._cache: OrderedDict[str, int] = OrderedDict()
        self._on_fallback = on_fallback
        self._estimate = EstimateCounter()
        self.fell_back = False  # a count was estimated since the tokenizer last worked

    def _fall_back(self, exc: Exception) -> None:
        if not self.fell_back:  # logged once per spell of failures, counted every time
            log.warning("token counting via %s failed (%s); estimating until it works",
                        self.counter.source, exc)
        self.fell_back = True
        if self._on_fallback is not None:
            self._on_fallback()

    @property
    def exact(self) -> bool:
        """Counts come from the model's own tokenizer (not the character estimate)."""
        return self.counter.source != "estimate" and not self.fell_back

    def upper_bound(self, messages: Sequence[dict[str, Any]]) -> int:
        """Tokens the messages cannot exceed whatever the tokenizer: a byte-level one
        (every open model's) spends at least one byte per token, plus template tokens
        (what budgets reserve when counts are only estimated)."""
        text_bytes = 0
        for message in messages:
            content = message.get("content")
            if type(content) is str and not message.get("tool_calls"):  # the usual case
                text_bytes += len(content) if content.isascii() else len(content.encode())
            else:
                text_bytes += len(message_text(message).encode())
        return text_bytes + (self.per_message_overhead + 8) * len(messages) + 8

    async def count_text(self, text: str) -> int:
        """Tokens of a bare text (a completion), without any template overhead."""
        if not text:
            return 0
        try:
            return (await self.counter.count([text]))[0]
        except Exception as exc:  # a tokenizer failure must not fail the reply
            self._fall_back(exc)
            return estimate_tokens(text)

    async def count(self, messages: Sequence[dict[str, Any]],
                    hashes: Sequence[str] | None = None) -> list[int]:
        hashes = list(hashes) if hashes is not None else [message_hash(m) for m in messages]
        missing = [i for i, h in enumerate(hashes) if h not in self._cache]
        if missing:
            texts = [message_text(messages[i]) for i in missing]
            try:
                counts = await self.counter.count(texts)
            except Exception as exc:  # a tokenizer failure must not fail the chat
                self._fall_back(exc)
                counts = await self._estimate.count(texts)
            else:
                self.fell_back = False
                for i, n in zip(missing, counts, strict=True):
                    self._remember(hashes[i], n)
            missing_counts = dict(zip(missing, counts, strict=True))
        else:
            missing_counts = {}
        out = []
        for i, h in enumerate(hashes):
            cached = self._cache.get(h)
            if cached is None:
                cached = missing_counts[i]
            else:
                self._cache.move_to_end(h)
            out.append(cached + self.per_message_overhead)
        return out

    def _remember(self, key: str, value: int) -> None:
        self._cache[key] = value
        if len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
