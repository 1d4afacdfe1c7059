"""Errors raised while loading and validating a flow: each names a stable code, file and line."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a flow definition."""

    code: str
    message: str
    file: str | None = None
    line: int | None = None

    def __str__(self) -> str:
        where = self.file or ""
        if self.line is not None:
            where = f"{where}:{self.line}" if where else f"line {self.line}"
        prefix = f"{where}: " if where else ""
        return f"{prefix}{self.message} [{self.code}]"

    def to_dict(self) -> dict[str, object]:
        return {"code": self.code, "message": self.message, "file": self.file, "line": self.line}


class FlowError(Exception):
    """A flow cannot be loaded or run as written. Carries every problem found."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))

    @classmethod
    def single(cls, code: str, message: str, file: str | None = None, line: int | None = None) -> FlowError:
        return cls([Problem(code, message, file, line)])

    @property
    def code(self) -> str:
        return self.problems[0].code

    @property
    def message(self) -> str:
        return "\n".join(str(p) for p in self.problems)
