"""Validation against LLaMA-Factory's rules, on its own demo data and on seeded breakage."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from finetune.datasets import validate_dataset, write_clean
from finetune.errors import DatasetError
from finetune.files import read_rows
from finetune.spec import DatasetSpec
from tests.unit.finetune.conftest import LF_DATA, demo_entries

ENTRIES = demo_entries()


def test_demo_data_is_present() -> None:
    # The parametrized test below must not pass vacuously.
    assert {"alpaca_en_demo", "glaive_toolcall_en_demo", "dpo_zh_demo", "identity"} <= set(ENTRIES)


@pytest.mark.parametrize("name", ENTRIES)
def test_demo_dataset_validates_clean_through_its_entry(name: str) -> None:
    report = validate_dataset(dataset_info=LF_DATA / "dataset_info.json", name=name)
    assert report.errors == [], [str(i) for i in report.errors[:5]]
    assert report.total == len(read_rows(LF_DATA / report.spec.file_name))
    assert len(report.samples) == report.total
    assert not report.detected


@pytest.mark.parametrize("name", ENTRIES)
def test_detected_format_matches_the_entry(name: str) -> None:
    entry = DatasetSpec.from_entry(json.loads((LF_DATA / "dataset_info.json").read_text())[name])
    report = validate_dataset(LF_DATA / entry.file_name)
    assert report.detected
    assert (report.spec.formatting, report.spec.ranking) == (entry.formatting, entry.ranking)
    assert report.errors == []


def _codes(report) -> dict[int, set[str]]:  # type: ignore[no-untyped-def]
    found: dict[int, set[str]] = {}
    for issue in report.errors:
        found.setdefault(issue.index, set()).add(issue.code)
    return found


def test_seeded_alpaca_breakage_is_reported_with_row_index(lf_copy: Path) -> None:
    path = lf_copy / "alpaca_en_demo.json"
    rows = json.loads(path.read_text())
    rows[3]["output"] = 42  # non-string output
    del rows[7]["output"]  # missing column
    rows[11]["output"] = "   "  # empty answer
    rows[20]["instruction"], rows[20]["input"] = "", ""  # empty prompt
    path.write_text(json.dumps(rows))
    report = validate_dataset(dataset_info=lf_copy / "dataset_info.json", name="alpaca_en_demo")
    assert _codes(report) == {
        3: {"not-a-string"},
        7: {"missing-column"},
        11: {"empty-answer"},
        20: {"empty-prompt"},
    }
    assert not report.ok
    assert report.summary()["valid_rows"] == len(rows) - 4


def test_history_is_checked_only_when_mapped(tmp_path: Path) -> None:
    rows = [{"instruction": "q", "input": "", "output": "a", "history": [["only one side"]]},
            {"instruction": "q2", "input": "", "output": "a2", "history": [["u", "a"]]}]
    path = tmp_path / "d.json"
    path.write_text(json.dumps(rows))
    # LLaMA-Factory reads no history unless the entry maps the column.
    assert validate_dataset(path, spec=DatasetSpec()).ok
    spec = DatasetSpec.from_entry({"columns": {"prompt": "instruction", "query": "input",
                                               "response": "output", "history": "history"}})
    report = validate_dataset(path, spec=spec)
    assert [(i.index, i.code) for i in report.errors] == [(0, "bad-history")]


def test_seeded_sharegpt_breakage_is_reported_with_row_index(lf_copy: Path) -> None:
    path = lf_copy / "glaive_toolcall_en_demo.json"
    rows = json.loads(path.read_text())
    conv = rows[5]["conversations"]
    conv[0], conv[1] = conv[1], conv[0]  # wrong role order: gpt first
    rows[9]["conversations"] = rows[9]["conversations"][:-1]  # ends on a user turn
    rows[14]["tools"] = json.loads(rows[14]["tools"])  # a list, not a JSON string
    rows[17]["conversations"][0]["from"] = "user"  # unknown role tag
    rows[30]["conversations"][1]["value"] = None  # non-string content
    rows[40]["conversations"] = []
    calls = [i for i, r in enumerate(rows) if any(
        m["from"] == "function_call" for m in r["conversations"])]
    bad_call = calls[10]
    for message in rows[bad_call]["conversations"]:
        if message["from"] == "function_call":
            message["value"] = "search_recipes(chicken)"  # not JSON
    path.write_text(json.dumps(rows))
    report = validate_dataset(dataset_info=lf_copy / "dataset_info.json",
                              name="glaive_toolcall_en_demo")
    codes = _codes(report)
    assert codes == {
        5: {"invalid-role-order"},
        9: {"invalid-message-count"},
        14: {"not-a-string"},
        17: {"invalid-role-order"},
        30: {"not-a-string"},
        40: {"no-messages"},
        bad_call: {"bad-function-call"},
    }
    order = next(i for i in report.errors if i.index == 5)
    assert "'gpt'" in order.message and "human/observation" in order.message


def test_seeded_ranking_breakage(lf_copy: Path) -> None:
    path = lf_copy / "dpo_zh_demo.json"
    rows = json.loads(path.read_text())
    rows[2]["chosen"]["from"] = "human"
    rows[4]["conversations"].append({"from": "gpt", "value": "x"})  # even count in ranking
    rows[6]["rejected"] = "plain string"
    path.write_text(json.dumps(rows, ensure_ascii=False))
    report = validate_dataset(dataset_info=lf_copy / "dataset_info.json", name="dpo_zh_demo")
    assert _codes(report) == {2: {"invalid-role-order"}, 4: {"invalid-message-count"},
                              6: {"missing-column"}}


def test_warnings_do_not_fail_and_name_the_first_copy(tmp_path: Path) -> None:
    rows = [
        {"instruction": "a", "input": "", "output": "b"},
        {"instruction": "c", "input": "", "output": "d"},
        {"instruction": "a", "input": "", "output": "b"},
    ]
    path = tmp_path / "d.json"
    path.write_text(json.dumps(rows))
    report = validate_dataset(path)
    assert report.ok
    [dup] = report.warnings
    assert (dup.index, dup.code) == (2, "duplicate") and "row 0" in dup.message


def test_tool_result_placement_warns(tmp_path: Path) -> None:
    row = {"conversations": [
        {"from": "human", "value": "q"}, {"from": "gpt", "value": "let me look"},
        {"from": "observation", "value": "{}"}, {"from": "gpt", "value": "done"},
    ]}
    path = tmp_path / "d.json"
    path.write_text(json.dumps([row]))
    report = validate_dataset(path)
    assert report.ok
    assert [i.code for i in report.warnings] == ["observation-without-call"]


def test_mapping_absent_from_every_row_is_a_dataset_error(tmp_path: Path) -> None:
    path = tmp_path / "d.json"
    path.write_text(json.dumps([{"question": "q", "answer": "a"}]))
    spec = DatasetSpec()  # default alpaca columns: instruction/input/output
    with pytest.raises(DatasetError, match="no row has column"):
        validate_dataset(path, spec=spec)


def test_custom_columns_and_tags(tmp_path: Path) -> None:
    rows = [
        {"dialog": [{"speaker": "me", "text": "hi"}, {"speaker": "bot", "text": "hello"}],
         "persona": "terse"},
        {"dialog": [{"speaker": "bot", "text": "hello"}, {"speaker": "me", "text": "hi"}],
         "persona": "terse"},
    ]
    path = tmp_path / "custom.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    info = tmp_path / "dataset_info.json"
    info.write_text(json.dumps({"mine": {
        "file_name": "custom.jsonl", "formatting": "sharegpt",
        "columns": {"messages": "dialog", "system": "persona"},
        "tags": {"role_tag": "speaker", "content_tag": "text", "user_tag": "me",
                 "assistant_tag": "bot"},
    }}))
    report = validate_dataset(dataset_info=info, name="mine")
    assert [(i.index, i.code) for i in report.errors] == [(1, "invalid-role-order")]
    assert report.samples[0].system == "terse"


def test_columns_block_replaces_every_default(tmp_path: Path) -> None:
    # LLaMA-Factory quirk: {"prompt": "q", "response": "a"} leaves no query column.
    path = tmp_path / "d.json"
    path.write_text(json.dumps([{"q": "question", "a": "answer", "input": "ignored"}]))
    spec = DatasetSpec.from_entry({"columns": {"prompt": "q", "response": "a"}})
    report = validate_dataset(path, spec=spec)
    assert report.ok
    assert report.samples[0].messages[0].content == "question"


def test_openai_messages_are_detected_and_checked(tmp_path: Path) -> None:
    rows = [
        {"messages": [{"role": "system", "content": "be brief"},
                      {"role": "user", "content": "hi"},
                      {"role": "assistant", "content": "hello"}]},
        {"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]},
    ]
    path = tmp_path / "chat.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    report = validate_dataset(path)
    assert report.spec.formatting == "sharegpt" and report.spec.tags.role_tag == "role"
    assert report.samples[0].system == "be brief"
    assert [(i.index, i.code) for i in report.errors] == [(1, "invalid-role-order")]


def test_tool_calls_need_the_openai_reader(tmp_path: Path) -> None:
    row = {"messages": [
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"type": "function", "function": {"name": "w", "arguments": "{\"city\": \"x\"}"}}]},
        {"role": "tool", "content": "{\"t\": 3}"},
        {"role": "tool", "content": "{\"t\": 4}"},
        {"role": "assistant", "content": "3 degrees"},
    ]}
    path = tmp_path / "tools.json"
    path.write_text(json.dumps([row]))
    detected = validate_dataset(path)
    assert detected.spec.formatting == "openai" and detected.ok
    function = detected.samples[0].messages[1]
    assert json.loads(function.content) == {"name": "w", "arguments": {"city": "x"}}
    assert len(detected.samples[0].messages) == 4  # the two tool results merged
    as_sharegpt = DatasetSpec.from_entry({**detected.spec.to_entry(), "formatting": "sharegpt"})
    report = validate_dataset(path, spec=as_sharegpt)
    assert [(i.index, i.code) for i in report.errors] == [
        (-1, "no-valid-samples"), (0, "tool-calls-unsupported")]


def test_write_clean_keeps_valid_unique_rows(lf_copy: Path, tmp_path: Path) -> None:
    path = lf_copy / "alpaca_en_demo.json"
    rows = json.loads(path.read_text())
    rows[0]["output"] = ""
    path.write_text(json.dumps(rows))
    report = validate_dataset(path)
    duplicates = sum(1 for i in report.warnings if i.code == "duplicate")
    out, written = write_clean(report, tmp_path / "clean.jsonl")
    assert written == len(rows) - 1 - duplicates
    clean = validate_dataset(out)
    assert clean.ok and clean.warnings == [] and clean.total == written


def test_unknown_characters_with_a_tokenizer_that_has_unk(tmp_path: Path) -> None:
    tokenizers = pytest.importorskip("tokenizers")
    vocab = {"[UNK]": 0, "</s>": 1}
    for char in "abcdefghijklmnopqrstuvwxyzHAS:\n":
        vocab.setdefault(char, len(vocab))
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Split("", "isolated")
    tok_path = tmp_path / "tokenizer.json"
    tok.save(str(tok_path))
    rows = [{"instruction": "hello", "input": "", "output": "world"},
            {"instruction": "grüße", "input": "", "output": "ok"}]
    path = tmp_path / "d.json"
    path.write_text(json.dumps(rows))
    from finetune.tokenstats import load_tokenizer

    tokenizer = load_tokenizer(tok_path)
    tokenizer.unk_token = "[UNK]"
    tokenizer.eos_token = "</s>"
    report = validate_dataset(path, tokenizer=tokenizer, cutoff_len=1000)
    assert set(report.unknown_chars) == {"ü", "ß"}
    assert {(i.index, i.code) for i in report.errors} == {(1, "unknown-token")}


def test_lengths_against_cutoff_with_the_smollm2_tokenizer(smollm2_tokenizer) -> None:  # type: ignore[no-untyped-def]
    report = validate_dataset(dataset_info=LF_DATA / "dataset_info.json", name="identity",
                              tokenizer=smollm2_tokenizer, cutoff_len=48, template="smollm2")
    lengths = report.lengths
    assert lengths is not None and lengths.count == report.total == 91
    assert lengths.min <= lengths.p50 <= lengths.p95 <= lengths.max
    # Re-count one sample by hand: the same template text, the same tokenizer.
    from finetune.templates import template_for

    sample = report.samples[0]
    text = template_for("smollm2").render(sample.messages, sample.system)
    assert len(smollm2_tokenizer(text, add_special_tokens=False)["input_ids"]) > 0
    expected = [
        s.index for s in report.samples
        if len(smollm2_tokenizer(template_for("smollm2").render(s.messages, s.system),
                                 add_special_tokens=False)["input_ids"]) > 48
    ]
    assert lengths.truncated == expected and expected
    assert report.unknown_chars == {}  # byte-level BPE represents every character
    assert report.ok
