"""Running a ``.prompty`` file: its template rendered, one LLM call, the answer shaped.

A prompty runs as a flex flow whose entry is ``PromptyCall`` (one async call per line), so the
CLI, serving and bulk runs treat it as they treat flex flows. What is sent and returned follows
prompt flow 1.18.5 (recorded in tests/flows/prompty_*): the body holds the model, the messages
(or prompt) and exactly the front matter's ``parameters`` (``tool_choice: auto`` added when
``tools`` are given); ``response: first`` answers the first choice's content (parsed JSON with
``response_format: json_object``, the whole message for a tool call, a stream of text with
``stream: true``), ``response: all`` the whole response.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import re
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

from flowport.connections import AzureOpenAIConnection, Connection, OpenAIConnection
from flowport.engine.errors import user_error
from flowport.engine.executor import LineResult
from flowport.engine.flex import FlexExecutor, _failed
from flowport.engine.inputs import prepare_inputs
from flowport.engine.records import LineRun
from flowport.flow import FlowError
from flowport.flow.flex import FlexDef
from flowport.flow.prompty import PromptyDef, as_flow_def, load_prompty
from flowport.tools import prompty_hook
from flowport.tools.chat_parser import ChatFormatError
from flowport.tools.llm import ClientPool, LLMTool, full_message
from flowport.tools.multimedia import is_prompty_image, prompty_image
from flowport.tools.openai_http import OpenAIHTTP
from flowport.tools.templates import TemplateError, compile_template, render
from flowport.tools.usage import record_usage
from flowport.tools.vision import place_images, vision_messages

_ENV_REF = re.compile(r"^\$\{env:([^}]+)\}$")


def _env_value(value: Any, key: str, where: str, environ: Mapping[str, str]) -> Any:
    if isinstance(value, str) and (match := _ENV_REF.match(value.strip())):
        name = match.group(1).strip()
        if name not in environ:
            raise FlowError.single(
                "InvalidPrompty",
                f"model.configuration.{key} reads ${{env:{name}}}, but {name} is not set; set it or "
                "give the value in the prompty",
                where,
            )
        return environ[name]
    return value


def resolve_model(
    definition: PromptyDef, connections: Mapping[str, Connection], environ: Mapping[str, str]
) -> tuple[Connection, str]:
    """The connection to call and the model (or Azure deployment) name, from ``configuration``."""
    where = str(definition.file)
    config = {k: _env_value(v, k, where, environ) for k, v in definition.configuration.items()}
    # an unquoted `api_version: 2024-02-01` is a date to YAML: every setting is text
    config = {k: v if v is None or isinstance(v, str) else str(v) for k, v in config.items()}
    azure = config.pop("type") == "azure_openai"
    model = config.pop("azure_deployment" if azure else "model", None)
    if not model:
        field = "azure_deployment" if azure else "model"
        raise FlowError.single("InvalidPrompty", f"model.configuration needs '{field}'", where)
    name = config.pop("connection", None)
    if name:
        try:
            connection = connections[name]
        except KeyError:
            raise FlowError.single(
                "ConnectionNotFound",
                f"model.configuration.connection names {name!r}, which does not exist; "
                "create it with 'flowport connection create'",
                where,
            ) from None
        return connection, str(model)
    try:
        if azure:
            keys = {"api_key": config.get("api_key"), "api_base": config.get("azure_endpoint")}
            if config.get("api_version"):
                keys["api_version"] = config["api_version"]
            return AzureOpenAIConnection(**keys), str(model)
        keys = {k: config[k] for k in ("api_key", "base_url", "organization") if config.get(k)}
        return OpenAIConnection(**keys), str(model)
    except ValueError as exc:
        raise FlowError.single("InvalidPrompty", f"model.configuration: {exc}", where) from None


class InvalidOutputKeyError(KeyError):
    """A declared output is not in the model's JSON answer (prompt flow's name for it)."""

    def __str__(self) -> str:
        return str(self.args[0])


class PromptyCall:
    """One prompty, ready to call: ``await call(**inputs)`` gives what prompt flow gives."""

    def __init__(self, definition: PromptyDef, connection: Connection, model: str) -> None:
        self.definition = definition
        self.connection = connection
        self.model = model
        self.pool = ClientPool()
        self.llm = LLMTool(None, definition.api, connection, self.pool, node=definition.name)
        try:
            self.template = compile_template(place_images(definition.template), definition.file.name)
        except TemplateError as exc:
            raise FlowError.single("InvalidPrompty", str(exc), str(definition.file)) from None
        self.parameters = dict(definition.parameters)
        if "tools" in self.parameters:
            self.parameters.setdefault("tool_choice", "auto")
        response_format = self.parameters.get("response_format")
        self.json = isinstance(response_format, dict) and response_format.get("type") == "json_object"
        self.stream = bool(self.parameters.get("stream"))
        self.confine_image_files = False
        """Served: a request's image paths stay inside the prompty's folder (``ScoringApp`` sets it)."""

    def body(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        """The request body for these inputs."""
        if self.definition.api == "completion":
            return {
                "model": self.model,
                "prompt": str(render(self.template, dict(inputs))),
                **self.parameters,
            }
        try:
            messages = vision_messages(self.template, dict(inputs), chat_lists=False)
        except ChatFormatError as exc:
            raise user_error(f"{self.definition.file.name}: {exc}", "ChatAPIInvalidRole") from None
        return {"model": self.model, "messages": messages, **self.parameters}

    async def __call__(self, **inputs: Any) -> Any:
        if any(is_prompty_image(v) for v in inputs.values()):  # files and URLs: off the event loop
            inputs = await asyncio.to_thread(self._images, inputs)
        body = self.body(inputs)
        path = "completions" if self.definition.api == "completion" else "chat/completions"
        client = self.pool.get(self.connection)
        # The LLM tool's retries (what may pass later, within the line's deadline) and error lines.
        answer = await self.llm._with_retries(self._request, client, path, body)
        if self.stream:
            events = self.llm._guarded(answer)
            if self.definition.response == "all":
                return [event async for event in events]
            chunks = _text_chunks(events, self.definition.api)
            if self.json:
                return self._shape_json("".join([c async for c in chunks]))
            return chunks
        usage = answer.get("usage") or {}
        record_usage(usage.get("prompt_tokens"), usage.get("completion_tokens"))
        if self.definition.response == "all":
            return answer
        choice = (answer.get("choices") or [{}])[0]
        if self.definition.api == "completion":
            content = choice.get("text")
        elif choice.get("finish_reason") in ("tool_calls", "function_calls"):
            return full_message(choice.get("message") or {})
        else:
            content = (choice.get("message") or {}).get("content")
        return self._shape_json(content) if self.json else content

    def _images(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        """The inputs with their ``data:image/...`` values read (served: files only in its folder)."""
        folder, confine = self.definition.file.parent, self.confine_image_files
        return {k: prompty_image(v, folder, confine) for k, v in inputs.items()}

    async def _request(self, client: OpenAIHTTP, path: str, body: dict[str, Any]) -> Any:
        if self.stream:
            return await client.stream(path, body)
        return await client.create(path, body)

    def _shape_json(self, text: Any) -> Any:
        """The JSON answer; with declared outputs, only those keys (each must be there)."""
        try:
            values = json.loads(text)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"the model's answer is not JSON ({exc}): {str(text)[:200]!r}") from None
        if not self.definition.outputs or not isinstance(values, dict):
            return values
        missing = [k for k in self.definition.outputs if k not in values]
        if missing:
            raise InvalidOutputKeyError(f"Cannot find {missing[0]} in response {list(values)}")
        return {k: values[k] for k in self.definition.outputs}


async def _text_chunks(events: AsyncIterator[dict[str, Any]], api: str) -> AsyncIterator[str]:
    """The first choice's text, chunk by chunk."""
    index = None
    async for event in events:
        choices = event.get("choices") or []
        if not choices:
            continue
        choice = choices[0]
        text = choice.get("text") if api == "completion" else (choice.get("delta") or {}).get("content")
        if not text:
            continue
        index = choice.get("index") if index is None else index
        if choice.get("index") != index:
            return
        yield text


class PromptyExecutor(FlexExecutor):
    """A prompty run as a flex flow; only a missing input is worded otherwise (prompt flow's words)."""

    prompty: PromptyCall | None = None
    """The prompty it calls (``ScoringApp`` confines its image files to the prompty's folder)."""

    async def run_line(self, inputs: Mapping[str, Any], **kwargs: Any) -> LineResult:
        missing = [n for n, spec in self.flow.inputs.items() if spec.required and n not in inputs]
        if missing:
            run = LineRun(kwargs.get("run_id") or "prompty", kwargs.get("line_number"), dict(inputs))
            message = (
                f"The input for flow is incorrect. The value for flow input '{missing[0]}' is not provided "
                "in input data. Please review your input data or remove this input in your flow if it's "
                "no longer needed."
            )
            return _failed(run, user_error(message, "InputNotFound"))
        return await super().run_line(inputs, **kwargs)


def prompty_flex_def(definition: PromptyDef) -> FlexDef:
    """The prompty as the flex definition the flex executor runs (its entry: the prompty's name)."""
    return FlexDef(
        path=definition.path,
        module=definition.file.name,  # shown as the entry: "chat.prompty:__call__"
        attr="__call__",
        file=definition.file,
        sample_inputs=dict(definition.sample),
    )


def load_prompty_executor(
    path: str | Path,
    *,
    connections: Mapping[str, Connection] | None = None,
    environ: Mapping[str, str] | None = None,
    environment_variables: Mapping[str, str] | None = None,
    process_environment_wins: bool = False,
    **options: Any,
) -> PromptyExecutor:
    """A prompty loaded to run as a flex flow (``options``: the flex executor's, e.g. worker_threads).

    ``response: all`` answers ``{"output": <the whole response>}``, the shape prompt flow gives
    (its own ``pf flow test`` then fails to write the response object as JSON; flowport can).
    """
    process = dict(environ or os.environ)
    if environment_variables:
        process.update(environment_variables)
    call = load_prompty_call(path, connections, process)
    definition = call.definition
    whole = definition.response == "all"

    async def entry(**inputs: Any) -> Any:
        answer = await call(**inputs)
        return {"output": answer} if whole else answer

    flow = as_flow_def(definition)
    if whole:
        flow = dataclasses.replace(flow, outputs={})
    executor = PromptyExecutor(
        prompty_flex_def(definition), entry, definition.name, flow, dynamic_outputs=True, **options
    )
    executor.prompty = call
    return executor


_code_connections: Mapping[str, Connection] = {}


def use_connections(connections: Mapping[str, Connection]) -> None:
    """The connections ``Prompty.load`` in flow code resolves names with (those of the flow's run)."""
    global _code_connections
    _code_connections = connections


def _override(definition: PromptyDef, model: Mapping[str, Any]) -> PromptyDef:
    """``Prompty.load(model=...)``: configuration and parameters merged over the file's, the rest replaced."""
    changes: dict[str, Any] = {}
    for key in ("configuration", "parameters"):
        if isinstance(model.get(key), Mapping):
            changes[key] = {**getattr(definition, key), **model[key]}
    for key in ("api", "response"):
        if model.get(key) is not None:
            changes[key] = model[key]
    return dataclasses.replace(definition, **changes)


def _load_for_code(source: str | Path, model: Mapping[str, Any] | None = None, **_: Any) -> Any:
    """What ``promptflow.core.Prompty.load`` gives flow code: an async callable taking the inputs,
    defaults filled in and required inputs checked as for a prompty run on its own."""
    definition = load_prompty(source)
    if model:
        definition = _override(definition, model)
    connection, name = resolve_model(definition, _code_connections, os.environ)
    call = PromptyCall(definition, connection, name)
    flow = as_flow_def(definition)

    async def with_inputs(**inputs: Any) -> Any:
        return await call(**prepare_inputs(flow, inputs))

    return with_inputs


prompty_hook.register(_load_for_code)


def load_prompty_call(
    path: str | Path,
    connections: Mapping[str, Connection] | None = None,
    environ: Mapping[str, str] | None = None,
) -> PromptyCall:
    """Read a prompty and bind its model: what ``promptflow.core.Prompty.load`` gives."""
    definition = load_prompty(path)
    connection, model = resolve_model(definition, connections or {}, environ or os.environ)
    return PromptyCall(definition, connection, model)
