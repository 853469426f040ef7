"""The interface every LLM backend implements.

A backend takes a batch of chat conversations and returns one :class:`Completion` per conversation,
in order. A failed request is a ``Completion`` with ``error`` set, not an exception, so one bad
request never loses the rest of a batch.

Example:
    >>> Completion("{}", prompt_tokens=10, completion_tokens=2).error is None
    True
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol


@dataclass
class Completion:
    """One reply: its text (``None`` when the request failed), token counts, and an error message."""

    text: str | None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    error: str | None = None


class LLMBackend(Protocol):
    name: str
    supports_prefill: bool  # can start the reply with ``assistant_prefix``

    def generate(self, conversations: list[list[dict[str, str]]], *, max_new_tokens: int = 384,
                 temperature: float = 0.7, seed: int = 0, json_schema: dict[str, Any] | None = None,
                 assistant_prefix: str = "") -> list[Completion]:
        ...
