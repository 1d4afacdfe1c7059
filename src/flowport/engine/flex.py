"""Running a flex flow: its entry (a function, or a class called per line) is the whole line.

``FlexExecutor`` answers like ``FlowExecutor`` (``flow``, ``line_outputs``, ``run_line`` giving a
``LineResult``, ``close``), so the scoring app, the CLI and bulk runs treat both alike. The
entry's module is imported once at load; a class entry is built once with its init arguments.

Results are shaped as prompt flow 1.18.5 shapes them (recorded in tests/flows/flex_*): a dict
is the outputs, a dataclass becomes the dict of its fields, anything else is ``{"output": value}``;
a generator is ``{"output": <stream>}``, streamed when asked, else joined into one string.
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import importlib
import inspect
import itertools
import logging
import os
import sys
import types
import uuid
from collections.abc import Coroutine, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextvars import copy_context
from pathlib import Path
from typing import Any

from flowport import tracing
from flowport.connections import Connection
from flowport.engine.compile import apply_environment, resolve_environment_variables
from flowport.engine.errors import ExecutionError, tool_error, user_error
from flowport.engine.executor import (
    _ATOMS,
    DEFAULT_LINE_TIMEOUT,
    DEFAULT_WORKER_THREADS,
    LINE_TIMEOUT_ENV,
    WORKER_THREADS_ENV,
    FlowExecutor,
    LineResult,
    _env_float,
    json_ready,
)
from flowport.engine.flex_init import bind_connections, build_entry, init_values
from flowport.engine.flex_signature import (
    check_ports,
    declared_input,
    declared_output,
    output_names,
    signature_inputs,
)
from flowport.engine.inline import InlinePolicy
from flowport.engine.inputs import input_plan, prepare_planned
from flowport.engine.records import LineRun, NodeRun, Status, clock
from flowport.engine.spans import cancel_line, end_line, node_attributes, node_failed, start_line, start_node
from flowport.engine.streams import NodeStream, join_async
from flowport.flow import FlowDef, FlowError, ValueType
from flowport.flow.flex import FLEX_MARK, FlexDef, describe_flow_path, is_flex, load_flex
from flowport.flow.prompty import is_prompty
from flowport.tools.compat import install_promptflow_shim
from flowport.tools.usage import usage_owner
from flowport.tracing.spans import STATE

logger = logging.getLogger("flowport.flex")
_STREAMS = (types.GeneratorType, types.AsyncGeneratorType)
_SCALARS = frozenset((str, int, float, bool, type(None)))
_COMPLETED = Status.COMPLETED


def _import_entry(definition: FlexDef) -> Any:
    folder = str(definition.path)
    if folder in sys.path:
        sys.path.remove(folder)
    sys.path.insert(0, folder)  # first: a module of the same name elsewhere must not win
    loaded = sys.modules.get(definition.module)
    if loaded is not None and not str(getattr(loaded, "__file__", "") or "").startswith(folder + os.sep):
        del sys.modules[definition.module]  # another flow's module of the same name
    where = str(definition.file or definition.path)
    try:
        module = importlib.import_module(definition.module)
    except ModuleNotFoundError as exc:
        if exc.name and definition.module.startswith(exc.name):
            raise FlowError.single(
                "EntryModuleNotFound",
                f"entry {definition.entry!r}: no module {definition.module!r} in {folder}",
                where,
            ) from None
        raise FlowError.single("EntryImportError", f"entry {definition.entry!r}: {exc}", where) from None
    except Exception as exc:
        raise FlowError.single(
            "EntryImportError", f"importing {definition.module!r} failed: ({type(exc).__name__}) {exc}", where
        ) from None
    entry = getattr(module, definition.attr, None)
    if entry is None or not callable(entry):
        raise FlowError.single(
            "EntryNotFound",
            f"entry {definition.entry!r}: {definition.module} has no function or class {definition.attr!r}",
            where,
        )
    return entry


class AttrDict(dict[str, Any]):
    """A line's result handed to ``__aggregate__``: a dict whose keys read as attributes too,
    as prompt flow hands them (its class has this name, and code may print it)."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


class FlexExecutor:
    """A flex flow loaded once: its entry imported and, for a class, built with its init."""

    nodes: dict[str, Any] = {}

    def __init__(
        self,
        definition: FlexDef,
        func: Any,
        name: str,
        flow: FlowDef,
        dynamic_outputs: bool,
        instance: Any = None,
        *,
        worker_threads: int | None = None,
        line_timeout: float | None = None,
    ) -> None:
        self.definition = definition
        self.func = func
        self.entry_name = name
        self.flow = flow
        self.line_outputs = flow.outputs
        self.dynamic_outputs = dynamic_outputs
        """No declared outputs (no dataclass/TypedDict annotation): whatever the entry returns is served."""
        self.instance = instance
        aggregate = getattr(instance, "__aggregate__", None)
        self.aggregate = aggregate if callable(aggregate) else None
        self.aggregation_nodes = ("__aggregate__",) if self.aggregate else ()
        """Bulk runs call ``run_aggregation`` when this is not empty, as for a DAG's aggregation nodes."""
        self.is_async = inspect.iscoroutinefunction(func) or inspect.isasyncgenfunction(func)
        may_inline = not self.is_async and not inspect.isgeneratorfunction(func)
        self.inline_policy = InlinePolicy(None if may_inline else False)
        """Whether a sync entry has proven fast enough to run on the event loop (as a DAG's chain)."""
        threads = worker_threads or int(_env_float(WORKER_THREADS_ENV, DEFAULT_WORKER_THREADS))
        self.pool = ThreadPoolExecutor(max_workers=max(1, threads), thread_name_prefix="flowport-flex")
        self.line_timeout = line_timeout or _env_float(LINE_TIMEOUT_ENV, DEFAULT_LINE_TIMEOUT)
        self._run_prefix = uuid.uuid4().hex
        self._run_numbers = itertools.count()
        self.span_attributes = node_attributes(name, "flex", name, None)
        self.flow_name = flow.name
        self._input_plan = input_plan(flow)
        plan = self._input_plan
        self._text_input = plan[0][0] if len(plan) == 1 and plan[0][2] else None
        """The flow's one input when it is its only one and a string (the common case): a line
        giving it a string needs nothing more done (``prepare_planned`` would say so)."""
        self._one_node = (name, None, None, None)
        """A line's one node (``LineRun.one_node``) until it records inputs, output or usage."""

    @classmethod
    def load(
        cls,
        definition: FlexDef,
        *,
        init: Mapping[str, Any] | None = None,
        connections: Mapping[str, Connection] | None = None,
        environ: Mapping[str, str] | None = None,
        worker_threads: int | None = None,
        line_timeout: float | None = None,
        environment_variables: Mapping[str, str] | None = None,
        process_environment_wins: bool = False,
    ) -> FlexExecutor:
        """Import the entry, read its signature, build a class entry with its init arguments.

        Init arguments come from ``init``, else ``PROMPTFLOW_FLOW_INIT_CONFIG`` (JSON), else the
        YAML's ``sample.init``, over the YAML's ``init`` defaults.
        """
        install_promptflow_shim()
        from flowport.engine.prompty import use_connections  # it builds on this module

        use_connections(connections or {})  # for promptflow.core.Prompty.load in the flow's code
        process = environ or os.environ
        bare = FlowDef(
            definition.path, definition.file or definition.path, {}, {}, {},
            environment_variables=definition.environment_variables,
        )  # fmt: skip
        variables = resolve_environment_variables(bare, connections or {}, process)
        if process_environment_wins:
            variables = {k: v for k, v in variables.items() if k not in process}
        apply_environment({**variables, **(environment_variables or {})})
        entry = _import_entry(definition)
        where = str(definition.file or definition.path)
        instance = None
        if inspect.isclass(entry):
            values = init_values(definition, init, process)
            instance = build_entry(
                entry, definition, bind_connections(entry, values, connections or {}, where), where
            )
            func = instance.__call__
            name = f"{entry.__name__}.__call__"
        else:
            func, name = entry, entry.__name__
        outputs = output_names(func, where, name)
        inputs = signature_inputs(func)
        check_ports("inputs", definition.inputs, inputs)
        check_ports("outputs", definition.outputs, outputs if outputs is not None else {"output": None})
        declared = outputs if outputs is not None else dict.fromkeys(definition.outputs, ValueType.STRING)
        flow = FlowDef(
            path=definition.path,
            file=definition.file or definition.path,
            inputs={k: declared_input(v, definition.inputs.get(k)) for k, v in inputs.items()},
            outputs={o: declared_output(o, kind, definition.outputs.get(o)) for o, kind in declared.items()},
            nodes={},
            environment=definition.environment,
            environment_variables=definition.environment_variables,
            raw={FLEX_MARK: {"entry": definition.entry, "connection_names": []}},
        )
        return cls(
            definition, func, name, flow, outputs is None, instance,
            worker_threads=worker_threads, line_timeout=line_timeout,
        )  # fmt: skip

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)

    def run_line(
        self,
        inputs: Mapping[str, Any],
        *,
        stream: bool = False,
        line_number: int | None = None,
        run_id: str | None = None,
        record_io: bool = False,
        deadline: float | None = None,
        span_attributes: Mapping[str, Any] | None = None,
    ) -> Coroutine[Any, Any, LineResult]:
        """Call the entry on one line's inputs (await it, as an ``async def``). Errors come back
        in the result, never raised. Not traced, the line is one coroutine, not two."""
        if STATE.sink is not None:
            return self._traced_line(inputs, stream, line_number, run_id, record_io, span_attributes)
        run_id = run_id or f"{self._run_prefix}_{next(self._run_numbers)}"
        # the entry's node run is made when read (``LineRun.one_node``)
        run = LineRun.one_node_line(run_id, line_number, dict(inputs), self._one_node)
        return self._run_line(run, inputs, stream, line_number, record_io)

    async def _traced_line(
        self,
        inputs: Mapping[str, Any],
        stream: bool,
        line_number: int | None,
        run_id: str | None,
        record_io: bool,
        span_attributes: Mapping[str, Any] | None,
    ) -> LineResult:
        run_id = run_id or f"{self._run_prefix}_{next(self._run_numbers)}"
        run = LineRun.one_node_line(run_id, line_number, dict(inputs), self._one_node)
        token = start_line(self.flow_name, run, span_attributes)
        if token is None:
            return await self._run_line(run, inputs, stream, line_number, record_io)
        record_io = record_io or tracing.capture_content()
        try:
            result = await self._run_line(run, inputs, stream, line_number, record_io)
        except BaseException:
            cancel_line(run, token, self._span_attributes)
            raise
        end_line(run, token, result.outputs, self._span_attributes)
        return result

    def _span_attributes(self, name: str) -> dict[str, Any]:
        return self.span_attributes

    async def _run_line(
        self, run: LineRun, inputs: Mapping[str, Any], stream: bool, line_number: int | None, record_io: bool
    ) -> LineResult:
        name = self._text_input
        try:
            if name is not None and type(value := inputs.get(name)) is str:
                values = {name: value}
            else:
                values = prepare_planned(self._input_plan, self.flow, inputs, line_number)
        except ExecutionError as exc:
            run.node_runs = {}  # the entry never ran
            return _failed(run, exc)
        if record_io:
            run.one_node = [self.entry_name, values, None, None]
        policy = self.inline_policy
        inline = policy.inline
        node_run: NodeRun | None = None  # the common case: made when asked for
        if not inline or run.span is not None:
            node_run = run.node_runs[self.entry_name]  # running now
        span_token = None if node_run is None or run.span is None else start_node(node_run, run.span)
        streaming = False
        try:
            if inline:
                # The entry runs in a copy of the context, as in a worker thread; its LLM calls'
                # tokens count to its node run. On the loop the call cannot be interrupted: the
                # line timeout can only fire in a stream.
                owner = run if node_run is None else node_run
                result = copy_context().run(policy.call_inline, self.func, values, owner)
                if type(result) is not dict and isinstance(result, _STREAMS):
                    node_run = run.node_runs[self.entry_name]  # running until the stream ends
                    async with asyncio.timeout(self.line_timeout):
                        outputs, bare = await self._shape(result, stream, node_run)
                    streaming = stream
                else:
                    outputs, bare = _shape_value(result)
            else:
                assert node_run is not None
                token = usage_owner.set(node_run)
                try:
                    async with asyncio.timeout(self.line_timeout):
                        result = await self._call(values)
                        outputs, bare = await self._shape(result, stream, node_run)
                finally:
                    usage_owner.reset(token)
                streaming = stream and _is_stream(result)
        except TimeoutError:
            message = f"Line {line_number} execution timeout for exceeding {self.line_timeout:g} seconds"
            error = user_error(message, "LineExecutionTimeoutError")
            return _failed(run, error, run.node_runs[self.entry_name])
        except ExecutionError as exc:
            return _failed(run, exc, run.node_runs[self.entry_name])
        except Exception as exc:
            return _failed(run, tool_error(self.entry_name, exc), run.node_runs[self.entry_name], exc)
        finally:
            if span_token is not None:
                tracing.deactivate(span_token)
        ended = clock()
        if node_run is None:  # made when read, with the line's status and times
            if record_io:
                run.one_node[2] = outputs  # type: ignore[index]
        elif not streaming:  # a stream's node run ends with the stream
            node_run.status = Status.COMPLETED
            node_run.ended = ended
            if record_io:
                node_run.output = outputs
        run.status = _COMPLETED
        run.ended = ended
        return _FlexResult(outputs, run, values, bare)

    async def _call(self, values: dict[str, Any]) -> Any:
        """The entry's result: awaited when async, else from a worker thread."""
        if self.is_async:
            result = self.func(**values)
            return (await result) if inspect.isawaitable(result) else result
        ctx = contextvars.copy_context()
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.pool, ctx.run, self._timed_call, values, False)

    def _timed_call(self, values: dict[str, Any], inline: bool) -> Any:
        """Call a sync entry, timing the call for the inline policy (``inline``: on the loop)."""
        return self.inline_policy.call(self.func, values, inline)

    async def run_aggregation(
        self, lines: list[tuple[dict[str, Any], dict[str, Any]]]
    ) -> tuple[dict[str, Any], dict[str, NodeRun], ExecutionError | None]:
        """Call ``__aggregate__`` once with every completed line's result; its dict is the run's
        metrics. As in prompt flow, a failure is only a warning: the run completes without metrics."""
        results = [AttrDict(r) if isinstance(r := outs.get("result"), dict) else r for _, outs in lines]
        node_run = NodeRun("__aggregate__", started=clock(), inputs={"line_results": results})
        try:
            metrics = self.aggregate(results) if self.aggregate else {}
            if inspect.isawaitable(metrics):
                metrics = await metrics
        except Exception as exc:
            error = tool_error("__aggregate__", exc)
            logger.warning("Failed to execute aggregation function: %s", error.message)
            node_run.status, node_run.ended, node_run.error = Status.FAILED, clock(), error.to_dict()
            return {}, {"__aggregate__": node_run}, None
        node_run.status, node_run.ended, node_run.output = Status.COMPLETED, clock(), metrics
        return (dict(metrics) if isinstance(metrics, dict) else {}), {"__aggregate__": node_run}, None

    async def _shape(self, result: Any, stream: bool, node_run: NodeRun) -> tuple[dict[str, Any], bool]:
        """The line's outputs, and whether they hold a bare (non-dict) result as ``output``."""
        if _is_stream(result):
            source = NodeStream(result, node_run, self.pool, lambda exc: tool_error(self.entry_name, exc))
            return {"output": source if stream else await join_async(source)}, True
        return _shape_value(result)


_NODE_OUTPUTS: Any = LineResult.__dict__["node_outputs"]  # the slot, which _FlexResult's property wraps


class _FlexResult(LineResult):
    """A completed flex line's result: its ``node_outputs`` (the entry's ``result``, what
    ``__aggregate__`` gets) made when read."""

    __slots__ = ()

    def __init__(self, outputs: dict[str, Any], run: LineRun, inputs: dict[str, Any], bare: bool) -> None:
        self.outputs = outputs
        self.run = run
        self.error = None
        self.inputs = inputs
        self.bare = bare

    @property  # type: ignore[override]
    def node_outputs(self) -> dict[str, Any]:
        try:
            return _NODE_OUTPUTS.__get__(self)  # type: ignore[no-any-return]
        except AttributeError:  # not made yet
            made = {"result": self.outputs["output"] if self.bare else self.outputs}
            _NODE_OUTPUTS.__set__(self, made)
            return made

    @node_outputs.setter
    def node_outputs(self, value: dict[str, Any]) -> None:
        _NODE_OUTPUTS.__set__(self, value)


def _is_stream(result: Any) -> bool:
    return isinstance(result, _STREAMS)


def _shape_value(result: Any) -> tuple[dict[str, Any], bool]:
    """A result that is not a stream as the line's outputs, and whether it was bare (not a dict)."""
    if type(result) is not dict:  # a plain dict, the common case, is never a dataclass
        if dataclasses.is_dataclass(result) and not isinstance(result, type):
            result = dataclasses.asdict(result)
        if not isinstance(result, dict):
            return {"output": json_ready("output", result)}, True
    outputs = {}
    for key, value in result.items():
        if type(key) is not str:
            key = str(key)
        # a plain scalar, or a list of atoms, is ready as it is (json_ready would say so, one call later)
        kind = type(value)
        if kind in _SCALARS:
            outputs[key] = value
        elif kind is list:
            for item in value:
                if type(item) not in _ATOMS:
                    outputs[key] = json_ready(key, value)
                    break
            else:
                outputs[key] = value[:]
        else:
            outputs[key] = json_ready(key, value)
    return outputs, False


def _failed(
    run: LineRun, exc: ExecutionError, node_run: NodeRun | None = None, cause: BaseException | None = None
) -> LineResult:
    if node_run is not None:
        node_run.status = Status.FAILED
        node_run.ended = clock()
        node_run.error = exc.to_dict()
        node_failed(node_run, cause or exc)
    return LineResult.failed(run, exc)


def load_executor(
    path: str | Path,
    *,
    variant: str | None = None,
    init: Mapping[str, Any] | None = None,
    includes_dir: Path | None = None,
    **options: Any,
) -> FlowExecutor | FlexExecutor:
    """Load whatever flow ``path`` names: a DAG flow folder or YAML, a flex flow, or
    ``module:attr`` in the current folder. Anything else is a FlowError saying what is there."""
    reason = describe_flow_path(path)
    if reason is not None:
        raise FlowError.single("FlowNotFound", reason, str(path))
    if is_prompty(path):
        from flowport.engine.prompty import load_prompty_executor  # it builds on this module

        if variant or init:
            raise FlowError.single(
                "InvalidVariant", "--variant and --init apply to flows; a prompty has neither"
            )
        options.pop("includes_dir", None)
        return load_prompty_executor(path, **options)
    if is_flex(path):
        if variant:
            raise FlowError.single(
                "InvalidVariant", "--variant applies to DAG flows; a flex flow has no variants"
            )
        return FlexExecutor.load(load_flex(path), init=init, **options)
    if init:
        raise FlowError.single("InvalidInit", f"--init applies to flex flows; {path} is a DAG flow")
    return FlowExecutor.load(path, variant=variant, includes_dir=includes_dir, **options)
