"""Execution errors in prompt flow's shape: ``UserError`` for the user's mistakes and
exceptions raised by user tools, ``SystemError`` for flowport's own failures."""

from __future__ import annotations

from typing import Any

USER_ERROR = "UserError"
SYSTEM_ERROR = "SystemError"


class ExecutionError(Exception):
    """A line (or a flow load) failed; ``to_dict`` gives the JSON error body."""

    def __init__(
        self,
        message: str,
        *,
        code: str = USER_ERROR,
        inner_code: str | None = None,
        node: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.inner_code = inner_code
        self.node = node
        self.details = details or {}

    def to_dict(self) -> dict[str, Any]:
        inner = {"code": self.inner_code, "innerError": None} if self.inner_code else None
        body: dict[str, Any] = {"code": self.code, "message": self.message, "innerError": inner}
        if self.details:
            body["details"] = self.details
        return body

    def response(self) -> dict[str, Any]:
        return {"error": self.to_dict()}


def user_error(message: str, inner_code: str, **kw: Any) -> ExecutionError:
    return ExecutionError(message, code=USER_ERROR, inner_code=inner_code, **kw)


def system_error(message: str, inner_code: str = "SystemError", **kw: Any) -> ExecutionError:
    return ExecutionError(message, code=SYSTEM_ERROR, inner_code=inner_code, **kw)


def tool_error(node: str, exc: BaseException) -> ExecutionError:
    """A user tool raised: prompt flow reports it as a UserError naming the node."""
    return user_error(
        f"Execution failure in '{node}': ({type(exc).__name__}) {exc}",
        "ToolExecutionError",
        node=node,
    )
