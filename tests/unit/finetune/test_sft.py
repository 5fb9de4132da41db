"""Response-only masking, padding and checkpoint discovery for the built-in trainer."""

from __future__ import annotations

from pathlib import Path

import pytest

from finetune.errors import ConfigError
from finetune.samples import Message, Role, Sample
from finetune.sft import (
    IGNORE_INDEX,
    checkpoints,
    encode_sample,
    last_checkpoint,
    pad_batch,
    segments,
)
from finetune.templates import FAMILIES, template_for


class CharTokenizer:
    """One id per character, so masked spans can be read back as text."""

    eos_token = "</s>"

    def __call__(self, text: str, add_special_tokens: bool = False) -> dict[str, list[int]]:
        return {"input_ids": [ord(c) for c in text]}


def decode(ids: list[int]) -> str:
    return "".join(chr(i) for i in ids)


def sample(*turns: tuple[Role, str], system: str = "") -> Sample:
    return Sample(0, [Message(role, text) for role, text in turns], system=system)


QA = sample((Role.USER, "Capital of France?"), (Role.ASSISTANT, "ANSWER: PARIS."))
MULTI = sample((Role.USER, "hi"), (Role.ASSISTANT, "ANSWER: HELLO."),
               (Role.USER, "and?"), (Role.ASSISTANT, "ANSWER: BYE."), system="Be terse.")


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("row", [QA, MULTI], ids=["one-turn", "multi-turn"])
def test_segments_join_to_exactly_what_render_produces(family: str, row: Sample) -> None:
    template = template_for(family)
    pieces = segments(template, row.messages, row.system, eos="<E>")
    assert "".join(text for text, _ in pieces) == template.render(row.messages, row.system,
                                                                  eos="<E>")


def test_only_responses_and_their_end_marker_are_trained() -> None:
    template = template_for("smollm2")
    example = encode_sample(MULTI, CharTokenizer(), template, cutoff_len=10_000)
    assert example is not None
    trained = decode([i for i, label in zip(example.input_ids, example.labels, strict=True)
                      if label != IGNORE_INDEX])
    assert trained == "ANSWER: HELLO.<|im_end|>\nANSWER: BYE.<|im_end|>\n"
    assert decode(example.input_ids) == template.render(MULTI.messages, MULTI.system)
    # labels equal the ids wherever they are not masked: no shift here (the model shifts)
    assert all(label in (IGNORE_INDEX, i) for i, label in
               zip(example.input_ids, example.labels, strict=True))


def test_the_prompt_and_the_assistant_header_are_masked() -> None:
    template = template_for("smollm2")
    example = encode_sample(QA, CharTokenizer(), template, cutoff_len=10_000)
    assert example is not None
    masked = decode([i for i, label in zip(example.input_ids, example.labels, strict=True)
                     if label == IGNORE_INDEX])
    assert masked.endswith("Capital of France?<|im_end|>\n<|im_start|>assistant\n")
    assert "PARIS" not in masked


def test_default_template_fills_the_tokenizers_eos() -> None:
    example = encode_sample(QA, CharTokenizer(), template_for("default"), cutoff_len=10_000)
    assert example is not None
    assert decode(example.input_ids).endswith("Assistant:ANSWER: PARIS.</s>\n")


def test_cutoff_truncates_and_drops_rows_with_nothing_left_to_train() -> None:
    template = template_for("smollm2")
    full = encode_sample(QA, CharTokenizer(), template, cutoff_len=10_000)
    assert full is not None
    prompt_len = full.labels.index(ord("A"))
    cut = encode_sample(QA, CharTokenizer(), template, cutoff_len=prompt_len + 3)
    assert cut is not None and cut.truncated and cut.trained_tokens == 3
    assert encode_sample(QA, CharTokenizer(), template, cutoff_len=prompt_len) is None


def test_ranking_rows_are_refused() -> None:
    row = Sample(3, [Message(Role.USER, "q")], chosen=Message(Role.ASSISTANT, "a"),
                 rejected=Message(Role.ASSISTANT, "b"))
    with pytest.raises(ConfigError, match="row 3 is a ranking"):
        encode_sample(row, CharTokenizer(), template_for("smollm2"), 100)


def test_pad_batch_masks_padding() -> None:
    batch = pad_batch([{"input_ids": [1, 2, 3], "labels": [-100, 2, 3]},
                       {"input_ids": [4], "labels": [4]}], pad_id=0)
    assert batch["input_ids"] == [[1, 2, 3], [4, 0, 0]]
    assert batch["labels"] == [[-100, 2, 3], [4, -100, -100]]
    assert batch["attention_mask"] == [[1, 1, 1], [1, 0, 0]]


def _checkpoint(root: Path, step: int, complete: bool = True) -> Path:
    path = root / f"checkpoint-{step}"
    path.mkdir(parents=True)
    if complete:
        (path / "trainer_state.json").write_text("{}")
    return path


def test_last_checkpoint_orders_by_step_number(tmp_path: Path) -> None:
    for step in (2, 10, 9):
        _checkpoint(tmp_path, step)
    (tmp_path / "checkpoint-x").mkdir()
    (tmp_path / "runs").mkdir()
    assert [p.name for p in checkpoints(tmp_path)] == ["checkpoint-2", "checkpoint-9",
                                                      "checkpoint-10"]
    assert last_checkpoint(tmp_path) == tmp_path / "checkpoint-10"


def test_an_interrupted_save_is_not_resumed_from(tmp_path: Path) -> None:
    _checkpoint(tmp_path, 4)
    _checkpoint(tmp_path, 8, complete=False)
    assert last_checkpoint(tmp_path) == tmp_path / "checkpoint-4"


def test_no_checkpoint(tmp_path: Path) -> None:
    assert last_checkpoint(tmp_path) is None
    assert last_checkpoint(tmp_path / "missing") is None
