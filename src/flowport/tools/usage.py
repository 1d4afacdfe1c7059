"""Token usage of LLM calls, attributed to the node run that made them."""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass


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


current_usage: ContextVar[Usage | None] = ContextVar("flowport_usage", default=None)


def record_usage(prompt: int | None, completion: int | None) -> None:
    usage = current_usage.get()
    if usage is not None:
        usage.add(prompt, completion)
