"""Errors the control plane answers with: an HTTP status, a stable code and a message."""

from __future__ import annotations

from typing import Any

from flowport.flow.errors import Problem


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        problems: list[Problem] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.problems = problems or []
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.problems:
            error["details"] = [p.to_dict() for p in self.problems]
        return {"error": error}
