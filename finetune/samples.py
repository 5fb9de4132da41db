"""A row normalized to roles and contents, and the issues found in it."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class Role(StrEnum):
    """LLaMA-Factory's internal roles (``data_utils.Role``)."""

    USER = "user"
    ASSISTANT = "assistant"
    SYSTEM = "system"
    FUNCTION = "function"
    OBSERVATION = "observation"


class Severity(StrEnum):
    ERROR = "error"  # LLaMA-Factory would skip, drop or crash on it, or it trains on nothing
    WARNING = "warning"  # trains, but probably not what you meant


@dataclass(frozen=True)
class Issue:
    index: int  # 0-based row index in the file
    severity: Severity
    code: str  # stable, machine-readable (e.g. "invalid-role-order")
    message: str

    def __str__(self) -> str:
        return f"row {self.index}: {self.severity}: {self.code}: {self.message}"


@dataclass(frozen=True)
class Message:
    role: Role
    content: str


@dataclass
class Sample:
    """One row as LLaMA-Factory sees it after conversion.

    ``messages`` alternate user/observation then assistant/function and, for supervised
    rows, end with the response. Ranking rows keep the prompt in ``messages`` and the two
    answers in ``chosen``/``rejected``.
    """

    index: int
    messages: list[Message]
    system: str = ""
    tools: str = ""
    chosen: Message | None = None
    rejected: Message | None = None
    kto_tag: bool | None = None
    images: list[str] = field(default_factory=list)
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def prompt(self) -> list[Message]:
        return self.messages if self.chosen is not None else self.messages[:-1]

    @property
    def response(self) -> Message | None:
        if self.chosen is not None or not self.messages:
            return None
        return self.messages[-1]

    def key(self) -> tuple[object, ...]:
        """Identity for duplicate detection: the same text in the same roles."""
        return (
            self.system,
            self.tools,
            tuple((m.role, m.content.strip()) for m in self.messages),
            self.chosen.content.strip() if self.chosen else None,
            self.rejected.content.strip() if self.rejected else None,
        )
