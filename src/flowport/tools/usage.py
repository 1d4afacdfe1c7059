"""Token usage of LLM calls, attributed to the node run that made them."""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass
from typing import Protocol


@dataclass
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def add(self, prompt: int | None, completion: int | None) -> None:
        self.prompt_tokens += prompt or 0
        self.completion_tokens += completion or 0

    def to_dict(self) -> dict[str, int]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
        }


class UsageOwner(Protocol):
    """What tokens are counted to: the engine's run of the node making the LLM calls."""

    def add_usage(self, prompt: int | None, completion: int | None) -> None: ...


usage_owner: ContextVar[UsageOwner | None] = ContextVar("flowport_usage_owner", default=None)
"""The node run that LLM calls made now count their tokens to (set by the engine)."""


def record_usage(prompt: int | None, completion: int | None) -> None:
    owner = usage_owner.get()
    if owner is not None:
        owner.add_usage(prompt, completion)
