"""prompt flow's vision chat tool (``OpenAI.chat`` of ``openai_gpt4v``, ``AzureOpenAI.chat`` of
``aoai_gpt4v``): a chat template whose user turns may show images.

``![image]({{var}})`` in the template puts the image ``var`` on a line of its own; after
rendering, each line that is an image's text (``Image(<hash>)``) becomes an OpenAI
``image_url`` part (the image's URL, or a ``data:`` URI of its bytes) and the other non-empty
lines ``text`` parts; a message without images keeps its text. What is sent matches prompt
flow's tool: ``temperature``, ``top_p``, ``n: 1``, both penalties always; ``max_tokens``,
``seed`` and ``stop`` only when given; every image with ``detail: auto`` (prompt flow's tool
drops the node's ``detail`` input into the template variables).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from flowport.connections import AzureOpenAIConnection, Connection
from flowport.tools.callable import CallMode, Param, ToolCallable
from flowport.tools.chat_parser import parse_chat
from flowport.tools.llm import ClientPool, LLMParamError, LLMTool, escape_roles, unescape_roles
from flowport.tools.multimedia import PFBytes
from flowport.tools.templates import compile_template, render

_IMAGE_MARK = re.compile(r"!\[(\s*image\s*)\]\(\{\{(\s*[^\s{}]+\s*)\}\}\)")
VISION_DETAIL = "auto"
"""The ``detail`` prompt flow 1.18.5's vision tool sends, whatever the node says."""


def place_images(source: str) -> str:
    """``![image]({{x}})`` becomes ``{{x}}`` on a line of its own, as prompt flow rewrites it."""
    return _IMAGE_MARK.sub(lambda m: "\n{{" + m.group(2) + "}}\n", source)


class ChatInputList(list[Any]):
    """A list that renders as its items one per line (prompt flow's view of list inputs)."""

    def __str__(self) -> str:
        return "\n".join(map(str, self))


def as_chat_lists(value: Any) -> Any:
    """``value`` with every list, at any depth, a ``ChatInputList``."""
    if isinstance(value, dict):
        return {k: as_chat_lists(v) for k, v in value.items()}
    if isinstance(value, list):
        return ChatInputList(as_chat_lists(item) for item in value)
    return value


def referenced_images(values: Iterable[Any]) -> list[PFBytes]:
    """Every image inside ``values`` (lists and dicts, at any depth)."""
    found: list[PFBytes] = []

    def walk(value: Any) -> None:
        if isinstance(value, PFBytes):
            found.append(value)
        elif isinstance(value, list):
            for item in value:
                walk(item)
        elif isinstance(value, dict):
            for item in value.values():
                walk(item)

    for value in values:
        walk(value)
    return found


def content_parts(text: str, images: Mapping[str, PFBytes], detail: str = VISION_DETAIL) -> Any:
    """A message's text as OpenAI content parts when a line of it names an image, else the text."""
    parts: list[dict[str, Any]] = []
    has_image = False
    for line in text.strip().split("\n"):
        image = images.get(line.strip())
        if image is not None:
            url = image.source_url or image.to_base64(with_type=True)
            parts.append({"type": "image_url", "image_url": {"url": url, "detail": detail}})
            has_image = True
        elif line.strip():
            parts.append({"type": "text", "text": line})
    return parts if has_image else text


def with_images(
    messages: list[dict[str, Any]], images: list[PFBytes], detail: str = VISION_DETAIL
) -> list[dict[str, Any]]:
    """Chat messages whose content lines naming one of ``images`` became image parts."""
    if not images:
        return messages
    by_text: dict[str, PFBytes] = {}
    for image in images:  # equal bytes, equal text: the first one counts (prompt flow keeps a set)
        by_text.setdefault(str(image), image)
    for message in messages:
        if isinstance(message.get("content"), str):
            message["content"] = content_parts(message["content"], by_text, detail)
    return messages


def _unescape_parts(messages: list[dict[str, Any]], markers: dict[str, str]) -> list[dict[str, Any]]:
    """Role words hidden in text parts put back (``unescape_roles`` handles string contents)."""
    for message in messages:
        content = message.get("content")
        if isinstance(content, list):
            for part in content:
                if part.get("type") == "text":
                    for token, word in markers.items():
                        part["text"] = part["text"].replace(token, word)
    return unescape_roles(messages, markers)


def vision_messages(
    template: Any, variables: dict[str, Any], chat_lists: bool = True
) -> list[dict[str, Any]]:
    """Render a (``place_images``-rewritten) chat template into messages with image parts;
    ``chat_lists``: lists render one item per line (the vision tool's view, not a prompty's)."""
    images = referenced_images(variables.values())
    escaped, markers = escape_roles(as_chat_lists(variables) if chat_lists else variables)
    return _unescape_parts(with_images(parse_chat(render(template, escaped)), images), markers)


def vision_tool(source: str, connection_type: Any, pool: ClientPool, node: str) -> ToolCallable:
    """The vision chat tool of one node, for its template ``source``: the model is ``model``
    (OpenAI, default ``gpt-4-vision-preview``) or ``deployment_name`` (Azure OpenAI); every
    input the tool does not take is a template variable (``detail`` too, as in prompt flow)."""
    template = compile_template(place_images(source), f"{node} prompt")
    azure = connection_type is AzureOpenAIConnection
    model_input = "deployment_name" if azure else "model"
    tools: dict[int, LLMTool] = {}

    async def chat(
        connection: Connection,
        temperature: float = 1.0,
        top_p: float = 1.0,
        stream: bool = False,
        stop: list[str] | None = None,
        max_tokens: int | None = None,
        presence_penalty: float = 0,
        frequency_penalty: float = 0,
        seed: int | None = None,
        **variables: Any,
    ) -> Any:
        tool = tools.get(id(connection))
        if tool is None:
            tool = tools[id(connection)] = LLMTool(None, "chat", connection, pool, node)
        model = variables.pop(model_input, None if azure else "gpt-4-vision-preview")
        if not model:
            raise LLMParamError(f"the vision chat tool needs {model_input!r} in the node's inputs")
        messages = vision_messages(template, variables)
        params: dict[str, Any] = {
            "temperature": temperature,
            "top_p": top_p,
            "n": 1,
            "presence_penalty": presence_penalty,
            "frequency_penalty": frequency_penalty,
        }
        if stop:
            params["stop"] = stop
        if max_tokens is not None:
            params["max_tokens"] = max_tokens
        if seed is not None:
            params["seed"] = seed
        client = pool.get(connection)
        return await tool._with_retries(tool._chat, client, model, messages, params, stream)

    params = {
        "connection": Param("connection", connection_type),
        "temperature": Param("temperature", float, 1.0),
        "top_p": Param("top_p", float, 1.0),
        "stop": Param("stop", list, None),
        "max_tokens": Param("max_tokens", int, None),
        "presence_penalty": Param("presence_penalty", float, 0),
        "frequency_penalty": Param("frequency_penalty", float, 0),
        "seed": Param("seed", int, None),
        model_input: Param(model_input, str, *(() if azure else ("gpt-4-vision-preview",))),
    }
    return ToolCallable(func=chat, mode=CallMode.ASYNC, params=params, accepts_any=True, streams=True)
