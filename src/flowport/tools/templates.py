"""Jinja2 rendering with prompt flow's options, in a sandbox."""

from __future__ import annotations

from typing import Any

from jinja2 import TemplateSyntaxError, meta
from jinja2.sandbox import SandboxedEnvironment

_env = SandboxedEnvironment(trim_blocks=True, keep_trailing_newline=True, autoescape=False)


class PromptResult(str):
    """A rendered prompt: a string, of the type prompt flow gives prompt nodes' outputs."""


class TemplateError(ValueError):
    """A template does not compile."""


def compile_template(source: str, name: str) -> Any:
    try:
        return _env.from_string(source)
    except TemplateSyntaxError as exc:
        raise TemplateError(f"{name}:{exc.lineno}: template syntax error: {exc.message}") from None


def render(template: Any, variables: dict[str, Any]) -> PromptResult:
    return PromptResult(template.render(**variables))


def template_variables(source: str) -> set[str]:
    """The variables a template reads (empty when it does not parse: compiling reports that)."""
    try:
        return meta.find_undeclared_variables(_env.parse(source))
    except TemplateSyntaxError:
        return set()
