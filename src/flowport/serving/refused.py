"""A request answered with an error status instead of the flow's outputs."""

from __future__ import annotations

from flowport.engine import ExecutionError, LineResult


class Refused(Exception):
    """A request answered with an error status instead of the flow's outputs."""

    def __init__(
        self,
        status: int,
        error: ExecutionError,
        headers: dict[str, str] | None = None,
        result: LineResult | None = None,
    ) -> None:
        super().__init__(error.message)
        self.status = status
        self.error = error
        self.headers = headers or {}
        self.result = result
