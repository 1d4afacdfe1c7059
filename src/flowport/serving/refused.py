"""A request answered with an error status instead of the flow's outputs."""

from __future__ import annotations

from flowport.engine import ExecutionError, LineResult


def status_for(error: ExecutionError) -> int:
    """prompt flow's statuses: 400 for a user error (bad input, a tool's exception), else 500."""
    return 400 if error.code == "UserError" else 500


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
