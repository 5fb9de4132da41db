"""One chat template per model family, shared by training YAML, serving and Ollama Modelfiles.

A model trained with one prompt format and served with another answers badly or never
stops, so the LLaMA-Factory ``template:`` name, the Jinja chat template handed to
vLLM/SGLang, and the Ollama TEMPLATE/stop words all come from the same ``ChatTemplate``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass

from finetune.errors import ConfigError
from finetune.samples import Message, Role

EOS = "{eos}"  # placeholder for templates that end turns with the tokenizer's own EOS


@dataclass(frozen=True)
class ChatTemplate:
    """Turn formats as (before, after) pairs around the content.

    ``assistant_header`` opens every assistant turn; it is also the generation prompt.
    """

    family: str
    llamafactory: str  # LLaMA-Factory's ``template:`` value
    system: tuple[str, str]
    user: tuple[str, str]
    assistant_header: str
    assistant_end: str
    observation: tuple[str, str]
    stop: tuple[str, ...]
    prefix: str = ""
    default_system: str = ""

    def _fill(self, text: str, eos: str) -> str:
        return text.replace(EOS, eos)

    def render(
        self,
        messages: Sequence[Message],
        system: str = "",
        *,
        add_generation_prompt: bool = False,
        eos: str = "</s>",
    ) -> str:
        """The exact text a model sees; ``eos`` is used only by families that need it."""
        def f(text: str) -> str:  # fill the format pieces only, never the contents
            return self._fill(text, eos)

        system = system or self.default_system
        parts = [f(self.prefix)]
        if system:
            parts += [f(self.system[0]), system, f(self.system[1])]
        for message in messages:
            if message.role is Role.USER:
                parts += [f(self.user[0]), message.content, f(self.user[1])]
            elif message.role is Role.OBSERVATION:
                parts += [f(self.observation[0]), message.content, f(self.observation[1])]
            elif message.role in (Role.ASSISTANT, Role.FUNCTION):
                parts += [f(self.assistant_header), message.content, f(self.assistant_end)]
        if add_generation_prompt:
            parts.append(f(self.assistant_header))
        return "".join(parts)

    def stop_words(self, eos: str = "</s>") -> list[str]:
        return [self._fill(word, eos) for word in self.stop]

    def jinja(self, eos: str = "</s>") -> str:
        """An HF-style chat template (vLLM/SGLang ``--chat-template``)."""
        lit = _literal(eos, self._fill)
        default = json.dumps(self.default_system)
        return "".join([
            "{%- if messages and messages[0]['role'] == 'system' -%}",
            "{%- set system = messages[0]['content'] -%}{%- set loop_messages = messages[1:] -%}",
            f"{{%- else -%}}{{%- set system = {default} -%}}",
            "{%- set loop_messages = messages -%}{%- endif -%}",
            lit(self.prefix),
            "{%- if system -%}", lit(self.system[0]), "{{ system }}", lit(self.system[1]),
            "{%- endif -%}",
            "{%- for message in loop_messages -%}",
            "{%- if message['role'] == 'user' -%}",
            lit(self.user[0]), "{{ message['content'] }}", lit(self.user[1]),
            "{%- elif message['role'] in ('tool', 'observation') -%}",
            lit(self.observation[0]), "{{ message['content'] }}", lit(self.observation[1]),
            "{%- elif message['role'] == 'assistant' -%}",
            lit(self.assistant_header), "{{ message['content'] }}", lit(self.assistant_end),
            "{%- endif -%}{%- endfor -%}",
            "{%- if add_generation_prompt -%}", lit(self.assistant_header), "{%- endif -%}",
        ])

    def ollama_template(self, eos: str = "</s>") -> str:
        """A Go template for Ollama's TEMPLATE; literals are quoted actions so that
        whitespace trimming never eats a newline the model was trained with."""
        lit = _literal(eos, self._fill, ollama=True)
        return "".join([
            lit(self.prefix),
            "{{- if .System }}", lit(self.system[0]), "{{ .System }}", lit(self.system[1]),
            "{{- end }}",
            "{{- range $i, $_ := .Messages }}",
            "{{- $last := eq (len (slice $.Messages $i)) 1 }}",
            "{{- if eq .Role \"user\" }}", lit(self.user[0]), "{{ .Content }}", lit(self.user[1]),
            "{{- else if eq .Role \"tool\" }}", lit(self.observation[0]), "{{ .Content }}",
            lit(self.observation[1]),
            "{{- else if eq .Role \"assistant\" }}", lit(self.assistant_header), "{{ .Content }}",
            "{{- if not $last }}", lit(self.assistant_end), "{{- end }}",
            "{{- end }}",
            "{{- if and $last (ne .Role \"assistant\") }}", lit(self.assistant_header),
            "{{- end }}",
            "{{- end }}",
        ])


def _literal(eos: str, fill, ollama: bool = False):  # type: ignore[no-untyped-def]
    def lit(text: str) -> str:
        if not text:
            return ""
        quoted = json.dumps(fill(text, eos), ensure_ascii=False)
        return f"{{{{- {quoted} }}}}" if ollama else f"{{{{- {quoted} -}}}}"
    return lit


_CHATML_USER = ("<|im_start|>user\n", "<|im_end|>\n")
_CHATML_SYSTEM = ("<|im_start|>system\n", "<|im_end|>\n")

TEMPLATES: dict[str, ChatTemplate] = {
    "qwen": ChatTemplate(
        family="qwen",
        llamafactory="qwen",
        system=_CHATML_SYSTEM,
        user=_CHATML_USER,
        assistant_header="<|im_start|>assistant\n",
        assistant_end="<|im_end|>\n",
        observation=("<|im_start|>user\n<tool_response>\n", "\n</tool_response><|im_end|>\n"),
        stop=("<|im_end|>",),
        default_system="You are Qwen, created by Alibaba Cloud. You are a helpful assistant.",
    ),
    "llama3": ChatTemplate(
        family="llama3",
        llamafactory="llama3",
        prefix="<|begin_of_text|>",
        system=("<|start_header_id|>system<|end_header_id|>\n\n", "<|eot_id|>"),
        user=("<|start_header_id|>user<|end_header_id|>\n\n", "<|eot_id|>"),
        assistant_header="<|start_header_id|>assistant<|end_header_id|>\n\n",
        assistant_end="<|eot_id|>",
        observation=("<|start_header_id|>ipython<|end_header_id|>\n\n", "<|eot_id|>"),
        stop=("<|eot_id|>", "<|end_of_text|>"),
    ),
    "smollm2": ChatTemplate(
        family="smollm2",
        llamafactory="smollm2",
        system=_CHATML_SYSTEM,
        user=_CHATML_USER,
        assistant_header="<|im_start|>assistant\n",
        assistant_end="<|im_end|>\n",
        observation=("<|im_start|>tool\n", "<|im_end|>\n"),
        stop=("<|im_end|>",),
        default_system="You are a helpful AI assistant named SmolLM, trained by Hugging Face",
    ),
    # LLaMA-Factory's ``default``, for base models that never saw a chat format.
    "default": ChatTemplate(
        family="default",
        llamafactory="default",
        system=("System: ", f"{EOS}\n"),
        user=("Human: ", f"{EOS}\n"),
        assistant_header="Assistant:",
        assistant_end=f"{EOS}\n",
        observation=("Observation: ", f"{EOS}\n"),
        stop=(EOS, "Human:"),
    ),
}

FAMILIES = tuple(TEMPLATES)


def template_for(family: str) -> ChatTemplate:
    try:
        return TEMPLATES[family]
    except KeyError:
        raise ConfigError(f"unknown template family {family!r}; known: {list(FAMILIES)}") from None


_NAME_PATTERNS = (
    (re.compile(r"smollm", re.I), "smollm2"),
    (re.compile(r"qwen", re.I), "qwen"),
    (re.compile(r"llama[-_ ]?3", re.I), "llama3"),
)


def guess_family(model: str, chat_template: str | None = None) -> str:
    """The family of a model path or name, else of its chat template, else ``default``."""
    for pattern, family in _NAME_PATTERNS:
        if pattern.search(model):
            return family
    if chat_template:
        if "SmolLM" in chat_template:
            return "smollm2"
        if "<|start_header_id|>" in chat_template:
            return "llama3"
        if "<|im_start|>" in chat_template:
            return "qwen"
    return "default"
