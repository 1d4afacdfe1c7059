"""Split a rendered chat prompt into messages, with prompt flow's role-marker rules.

A line such as ``# system:``, ``user:`` or ``## Assistant:`` starts a message; the text up
to the next marker is its content, stripped. ``function`` messages carry ``name:`` and
``content:`` sub-sections, ``tool`` messages ``tool_call_id:`` and ``content:``, and an
assistant message may carry ``tool_calls:`` (a Python/JSON list).
"""

from __future__ import annotations

import ast
import json
import re
from typing import Any

ROLES = ("system", "user", "assistant", "function", "tool")
_MARKER = re.compile(r"(?im)^\s*#?\s*(" + "|".join(ROLES) + r")\s*:\s*\n")
_NAME_CONTENT = re.compile(r"(?is)^\s*#{0,2}\s*name\s*:\s*\n+\s*(\S+)\s*\n*#{0,2}\s*content\s*:\s*\n?(.*)$")
_TOOL_CALL_ID = re.compile(
    r"(?is)^\s*#{0,2}\s*tool_call_id\s*:\s*\n+\s*(\S+)\s*\n*#{0,2}\s*content\s*:\s*\n?(.*)$"
)
_TOOL_CALLS = re.compile(r"(?is)^\s*#{0,2}\s*tool_calls\s*:\s*\n+(.*)$")


class ChatFormatError(ValueError):
    """The prompt does not follow the chat format."""


def _tool_calls(text: str) -> list[Any] | None:
    match = _TOOL_CALLS.match(text)
    if not match:
        return None
    body = match.group(1).strip()
    for parse in (json.loads, ast.literal_eval):
        try:
            value = parse(body)
        except (ValueError, SyntaxError):
            continue
        if isinstance(value, list):
            return value
    return None


def parse_chat(prompt: str) -> list[dict[str, Any]]:
    """Turn a rendered template into chat messages."""
    parts = _MARKER.split(prompt)
    preamble, rest = parts[0], parts[1:]
    if preamble.strip():
        raise ChatFormatError(
            "the chat prompt must start with a role line such as '# system:' or '# user:' "
            f"(roles: {', '.join(ROLES)}); found text before the first role: "
            f"{preamble.strip()[:80]!r}"
        )
    messages: list[dict[str, Any]] = []
    for role_text, body in zip(rest[0::2], rest[1::2], strict=True):
        role = role_text.lower()
        message: dict[str, Any] = {"role": role}
        if role == "function":
            match = _NAME_CONTENT.match(body)
            if not match:
                raise ChatFormatError(
                    "a function message needs '## name:' and '## content:' lines after 'function:'"
                )
            message["name"], message["content"] = match.group(1), match.group(2).strip()
        elif role == "tool" and (match := _TOOL_CALL_ID.match(body)):
            message["tool_call_id"], message["content"] = match.group(1), match.group(2).strip()
        elif role == "assistant" and (calls := _tool_calls(body)) is not None:
            message["content"] = None
            message["tool_calls"] = calls
        else:
            message["content"] = body.strip()
        messages.append(message)
    if not messages:
        raise ChatFormatError("the chat prompt has no messages: add a '# user:' line before the text")
    return messages
