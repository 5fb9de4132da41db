"""The template map: one family drives training, serving and Ollama."""

from __future__ import annotations

import jinja2
import pytest

from finetune.modelfile import modelfile_text
from finetune.samples import Message, Role
from finetune.templates import FAMILIES, guess_family, template_for

CHAT = [Message(Role.USER, "hi"), Message(Role.ASSISTANT, "hello"), Message(Role.USER, "again")]


@pytest.mark.parametrize("family", FAMILIES)
def test_jinja_renders_like_training(family: str) -> None:
    template = template_for(family)
    wire = [{"role": m.role.value, "content": m.content} for m in CHAT]
    jinja = jinja2.Environment().from_string(template.jinja(eos="</s>"))
    for system in ("", "be brief"):
        messages = ([{"role": "system", "content": system}] if system else []) + wire
        assert jinja.render(messages=messages, add_generation_prompt=True) == template.render(
            CHAT, system, add_generation_prompt=True, eos="</s>")


def test_smollm2_matches_the_models_own_chat_template(smollm2_tokenizer) -> None:  # type: ignore[no-untyped-def]
    wire = [{"role": m.role.value, "content": m.content} for m in CHAT]
    ours = template_for("smollm2").render(CHAT, add_generation_prompt=True)
    theirs = smollm2_tokenizer.apply_chat_template(wire, tokenize=False,
                                                   add_generation_prompt=True)
    assert ours == theirs
    assert guess_family("model.gguf", smollm2_tokenizer.chat_template) == "smollm2"


def test_contents_are_not_template_placeholders() -> None:
    text = template_for("default").render([Message(Role.USER, "{eos}")], eos="</s>")
    assert text == "Human: {eos}</s>\n"


@pytest.mark.parametrize(("name", "family"), [
    ("/models/Qwen2.5-7B-Instruct", "qwen"), ("meta-llama/Meta-Llama-3-8B", "llama3"),
    ("Llama-3.1-70B", "llama3"), ("SmolLM2-135M-Instruct", "smollm2"), ("gpt2", "default"),
])
def test_guess_family(name: str, family: str) -> None:
    assert guess_family(name) == family


def test_modelfile_for_smollm2() -> None:
    text = modelfile_text("./out/model.gguf", "smollm2", num_ctx=4096)
    lines = text.splitlines()
    assert lines[0] == "FROM ./out/model.gguf"
    assert lines[1].startswith('TEMPLATE """') and "<|im_start|>assistant" in lines[1]
    assert 'SYSTEM """You are a helpful AI assistant named SmolLM' in text
    assert 'PARAMETER stop "<|im_end|>"' in lines
    assert "PARAMETER num_ctx 4096" in lines


def test_modelfile_default_family_uses_the_eos() -> None:
    text = modelfile_text("base.gguf", "default", system="", eos="<|endoftext|>",
                          parameters={"temperature": 0.2})
    assert "SYSTEM" not in text
    assert 'PARAMETER stop "<|endoftext|>"' in text and 'PARAMETER stop "Human:"' in text
    assert "PARAMETER temperature 0.2" in text
    assert "{eos}" not in text
