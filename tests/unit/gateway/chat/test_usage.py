"""Usage as reported by a backend, or counted by us."""

from __future__ import annotations

from gateway.chat.usage import Usage, reported


def test_reported_usage_reads_openai_and_llamacpp_cached_tokens() -> None:
    usage = reported({"prompt_tokens": 10, "completion_tokens": 3,
                      "prompt_tokens_details": {"cached_tokens": 8}})
    assert usage == Usage(10, 3, "reported", 8)
    assert reported({"prompt_tokens": 10, "completion_tokens": 3},
                    {"cache_n": 7}) == Usage(10, 3, "reported", 7)


def test_partial_or_missing_usage_is_not_reported() -> None:
    assert reported(None) is None
    assert reported({"prompt_tokens": 10}) is None
    assert reported({"prompt_tokens": "10", "completion_tokens": 1}) is None


def test_usage_in_openai_shape() -> None:
    assert Usage(10, 3, "counted").to_api() == {
        "prompt_tokens": 10, "completion_tokens": 3, "total_tokens": 13}
    assert Usage(10, 3, "reported", 4).to_api()["prompt_tokens_details"] == {
        "cached_tokens": 4}
