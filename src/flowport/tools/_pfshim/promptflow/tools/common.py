"""``promptflow.tools.common``: chat prompt parsing and template rendering, as flow code uses them."""

from typing import Any

from jinja2.sandbox import SandboxedEnvironment

from flowport.tools.chat_parser import ROLES
from flowport.tools.chat_parser import parse_chat as _parse_chat
from flowport.tools.vision import as_chat_lists, place_images, referenced_images, with_images


def parse_chat(
    chat_str: str,
    images: list[Any] | None = None,
    valid_roles: list[str] | None = None,
    image_detail: str = "auto",
    escape_dict: dict[str, str] | None = None,
) -> list[dict[str, Any]]:
    """Split a rendered chat prompt into ``{"role", "content"}`` messages at role lines; a line
    naming one of ``images`` (``Image(<hash>)``) becomes an image content part."""
    messages = _parse_chat(chat_str)
    allowed = valid_roles or list(ROLES)
    for message in messages:
        if message["role"] not in allowed:
            raise ValueError(f"role {message['role']!r} is not one of {', '.join(allowed)}")
    return with_images(messages, list(images or []), image_detail)


def render_jinja_template(
    prompt: str, trim_blocks: bool = True, keep_trailing_newline: bool = True, **kwargs: Any
) -> str:
    """Render ``prompt`` with jinja2, as prompt flow's tools do."""
    kwargs.pop("escape_dict", None)
    env = SandboxedEnvironment(trim_blocks=trim_blocks, keep_trailing_newline=keep_trailing_newline)
    return env.from_string(prompt).render(**kwargs)


def build_messages(
    prompt: str, images: list[Any] | None = None, image_detail: str = "auto", **kwargs: Any
) -> list[dict[str, Any]]:
    """Render a chat template with ``kwargs`` and split it into messages (images as content parts
    when ``images`` lists them)."""
    return parse_chat(render_jinja_template(prompt, **kwargs), images=images, image_detail=image_detail)


def preprocess_template_string(template_string: str) -> str:
    """``![image]({{x}})`` on a line of its own as ``{{x}}``, for ``build_messages``."""
    return place_images(template_string)


def find_referenced_image_set(kwargs: dict[str, Any]) -> set[Any]:
    """The images inside the tool's inputs."""
    return set(referenced_images(kwargs.values()))


def convert_to_chat_list(obj: Any) -> Any:
    """Lists (at any depth) rendered one item per line."""
    return as_chat_lists(obj)


def to_bool(value: Any) -> bool:
    """``True``/``"true"`` (any case) as True, anything else False."""
    return value if isinstance(value, bool) else str(value).lower() == "true"


__all__ = [
    "build_messages",
    "convert_to_chat_list",
    "find_referenced_image_set",
    "parse_chat",
    "preprocess_template_string",
    "render_jinja_template",
    "to_bool",
]
