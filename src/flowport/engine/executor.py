"""The executor: runs a compiled flow one line at a time, on asyncio.

Every node whose dependencies are done runs at once; async tools are awaited, sync tools
go to a bounded thread pool, template rendering runs inline. A failing or timed-out line
cancels its running nodes. Bypass, defaults and streaming follow prompt flow's rules.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import itertools
import json
import os
import uuid
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import orjson

from flowport import tracing
from flowport.connections import Connection
from flowport.engine.compile import (
    CompiledNode,
    FlowCompiler,
    apply_environment,
    chat_format_error,
    resolve_environment_variables,
)
from flowport.engine.errors import ExecutionError, system_error, tool_error, user_error
from flowport.engine.inline import InlinePolicy
from flowport.engine.inputs import has_media, load_media, prepare_inputs
from flowport.engine.records import LineRun, NodeRun, Status, clock
from flowport.engine.spans import cancel_line, end_line, node_attributes, node_failed, start_line, start_node
from flowport.engine.streams import NodeStream, SharedGenerator, join_async, join_sync
from flowport.flow import MISSING, FlowDef, Plan, build_plan, load_flow
from flowport.flow.reference import InputRef, Literal, NodeRef, resolve_path
from flowport.tools.callable import CallMode
from flowport.tools.chat_parser import ChatFormatError
from flowport.tools.compat import install_promptflow_shim
from flowport.tools.llm import ClientPool, LLMCallError, LLMParamError, line_deadline
from flowport.tools.metrics import collect_metrics, stop_collecting
from flowport.tools.multimedia import PFBytes, has_image
from flowport.tools.usage import usage_owner

LINE_TIMEOUT_ENV = "PF_LINE_TIMEOUT_SEC"
WORKER_THREADS_ENV = "PROMPTFLOW_WORKER_THREADS"
DEFAULT_LINE_TIMEOUT = 600.0
DEFAULT_WORKER_THREADS = 16


@dataclass(slots=True, init=False)  # built by hand: one for every line
class LineResult:
    outputs: dict[str, Any]
    run: LineRun
    error: ExecutionError | None
    node_outputs: dict[str, Any]
    inputs: dict[str, Any]
    """The flow inputs as the line ran them: defaults filled in, types converted."""
    bare: bool
    """A flex entry returned a non-dict, held as ``outputs["output"]``: prompt flow's server
    answers that value itself on ``/score`` (JSON), where ``flow test`` shows ``{"output": ...}``."""

    def __init__(
        self,
        outputs: dict[str, Any],
        run: LineRun,
        error: ExecutionError | None = None,
        node_outputs: dict[str, Any] | None = None,
        inputs: dict[str, Any] | None = None,
        bare: bool = False,
    ) -> None:
        self.outputs = outputs
        self.run = run
        self.error = error
        self.node_outputs = {} if node_outputs is None else node_outputs
        self.inputs = {} if inputs is None else inputs
        self.bare = bare

    @property
    def ok(self) -> bool:
        return self.error is None

    @classmethod
    def failed(cls, run: LineRun, exc: ExecutionError) -> LineResult:
        """The line failed with ``exc``: its run closed as failed, no outputs."""
        run.status = Status.FAILED
        run.ended = clock()
        run.error = exc.to_dict()
        return cls({}, run, exc)


@dataclass
class _Line:
    inputs: dict[str, Any]
    run: LineRun
    stream: bool
    record_io: bool
    outputs: dict[str, Any] = field(default_factory=dict)
    bypassed: set[str] = field(default_factory=set)
    tasks: dict[str, asyncio.Task[None]] = field(default_factory=dict)


def _env_float(name: str, default: float) -> float:
    try:
        return float(os.environ.get(name, default))
    except ValueError:
        return default


class FlowExecutor:
    """A flow loaded once and ready to run many lines."""

    def __init__(
        self,
        plan: Plan,
        nodes: dict[str, CompiledNode],
        *,
        worker_threads: int | None = None,
        line_timeout: float | None = None,
    ) -> None:
        self.plan = plan
        self.flow: FlowDef = plan.flow
        self.nodes = nodes
        self.line_nodes = [nodes[p.node.name] for p in plan.line_nodes]
        self.aggregation_nodes = [nodes[p.node.name] for p in plan.aggregation_nodes]
        threads = worker_threads or int(_env_float(WORKER_THREADS_ENV, DEFAULT_WORKER_THREADS))
        self.pool = ThreadPoolExecutor(max_workers=max(1, threads), thread_name_prefix="flowport-tool")
        self.line_timeout = line_timeout or _env_float(LINE_TIMEOUT_ENV, DEFAULT_LINE_TIMEOUT)
        self.stream_nodes = self._streamable_nodes()
        chain = self.line_nodes
        self.sync_chain = all(n.tool.mode is not CallMode.ASYNC for n in chain) and all(
            before.name in after.plan.deps for before, after in itertools.pairwise(chain)
        )
        """Every node is sync and each reads the one before: run each line in one thread hop."""
        self.inline_policy = InlinePolicy()
        self.confine_image_files = False
        """Image files only from inside the flow folder (set when serving: inputs are a client's text)."""
        self._run_prefix = uuid.uuid4().hex
        self._run_numbers = itertools.count()
        """Whether such a chain has proven fast enough to run on the event loop itself."""
        aggregation = {p.node.name for p in plan.aggregation_nodes}
        self.line_outputs = {
            name: output
            for name, output in self.flow.outputs.items()
            if not (isinstance(output.reference, NodeRef) and output.reference.node in aggregation)
        }
        """Outputs of one line: those that read aggregation nodes are left out, as in prompt flow."""
        self.span_attributes = {
            name: node_attributes(
                name,
                node.plan.node.type,
                node.plan.node.source_path or node.plan.node.source_tool or node.plan.node.api or "",
                node.plan.node.variant_id,
            )
            for name, node in nodes.items()
        }
        """Each node span's fixed attributes, computed once."""

    @classmethod
    def load(
        cls,
        path: str | Path,
        *,
        variant: str | None = None,
        connections: Mapping[str, Connection] | None = None,
        environ: Mapping[str, str] | None = None,
        worker_threads: int | None = None,
        line_timeout: float | None = None,
        includes_dir: Path | None = None,
        environment_variables: Mapping[str, str] | None = None,
        process_environment_wins: bool = False,
    ) -> FlowExecutor:
        """Load, validate and compile a flow folder; set its environment variables.

        The flow's ``environment_variables`` override the process environment (as ``pf flow
        test`` does) unless ``process_environment_wins`` (as prompt flow's server does);
        ``environment_variables`` given here override both.
        """
        install_promptflow_shim()
        flow = load_flow(path, variant=variant, includes_dir=includes_dir)
        connections = {} if connections is None else connections
        process = environ or os.environ
        variables = resolve_environment_variables(flow, connections, process)
        if process_environment_wins:
            variables = {k: v for k, v in variables.items() if k not in process}
        apply_environment({**variables, **(environment_variables or {})})
        plan = build_plan(flow)
        nodes = FlowCompiler(plan, connections, ClientPool()).compile()
        return cls(plan, nodes, worker_threads=worker_threads, line_timeout=line_timeout)

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)

    def _streamable_nodes(self) -> frozenset[str]:
        """Nodes whose whole output is one flow output and nothing else: they may stream."""
        counts: dict[str, int] = {}
        for output in self.flow.outputs.values():
            ref = output.reference
            if isinstance(ref, NodeRef):
                counts[ref.node] = counts.get(ref.node, 0) + (1 if not ref.path else 2)
        return frozenset(
            p.node.name for p in self.plan.line_nodes if p.feeds_only_outputs and counts.get(p.node.name) == 1
        )

    # -- one line -------------------------------------------------------------

    async def run_line(
        self,
        inputs: Mapping[str, Any],
        *,
        stream: bool = False,
        line_number: int | None = None,
        run_id: str | None = None,
        record_io: bool = False,
        deadline: float | None = None,
        span_attributes: Mapping[str, Any] | None = None,
    ) -> LineResult:
        """Run the flow on one set of inputs. Errors come back in the result, never raised.

        ``deadline`` (event loop time): when the caller gives up on the line, if before the
        line timeout; LLM retries never wait past the earlier of the two. ``span_attributes``
        go on the line's span when tracing.
        """
        run = LineRun(run_id or f"{self._run_prefix}_{next(self._run_numbers)}", line_number, dict(inputs))
        token = start_line(self.flow.name, run, span_attributes)
        if token is None:
            return await self._run_line(run, inputs, stream, line_number, record_io, deadline)
        record_io = record_io or tracing.capture_content()
        try:
            result = await self._run_line(run, inputs, stream, line_number, record_io, deadline)
        except BaseException:
            cancel_line(run, token, self.span_attributes.__getitem__)
            raise
        end_line(run, token, result.outputs, self.span_attributes.__getitem__)
        return result

    async def _run_line(
        self,
        run: LineRun,
        inputs: Mapping[str, Any],
        stream: bool,
        line_number: int | None,
        record_io: bool,
        deadline: float | None,
    ) -> LineResult:
        try:
            values = prepare_inputs(self.flow, inputs, line_number)
            if has_media(self.flow, values):  # files and URLs: off the event loop
                values = await asyncio.to_thread(load_media, self.flow, values, self.confine_image_files)
        except ExecutionError as exc:
            return self._failed(run, exc)
        line = _Line(values, run, stream, record_io)
        limit = asyncio.get_running_loop().time() + self.line_timeout
        token = line_deadline.set(limit if deadline is None else min(limit, deadline))
        try:
            async with asyncio.timeout(self.line_timeout):
                if self.sync_chain and self.inline_policy.inline:
                    self._timed_chain(line, True)
                elif self.sync_chain:
                    ctx = contextvars.copy_context()
                    loop = asyncio.get_running_loop()
                    await loop.run_in_executor(self.pool, ctx.run, self._timed_chain, line, False)
                else:
                    for node in self.line_nodes:
                        line.tasks[node.name] = asyncio.create_task(self._run_node(node, line))
                    await asyncio.gather(*line.tasks.values())
        except ExecutionError as exc:
            return self._failed(run, exc, line)
        except TimeoutError:
            exc = user_error(
                f"Line {line_number} execution timeout for exceeding {self.line_timeout:g} seconds",
                "LineExecutionTimeoutError",
            )
            return self._failed(run, exc, line)
        except Exception as exc:  # an engine bug: report it, never crash the caller
            return self._failed(run, system_error(f"({type(exc).__name__}) {exc}"), line)
        finally:
            line_deadline.reset(token)
        try:
            outputs = {
                name: json_ready(name, self._output_value(o.reference, line))
                for name, o in self.line_outputs.items()
            }
        except ExecutionError as exc:
            return self._failed(run, exc, line)
        run.status = Status.COMPLETED
        run.ended = clock()
        return LineResult(outputs, run, None, line.outputs, line.inputs)

    def _failed(self, run: LineRun, exc: ExecutionError, line: _Line | None = None) -> LineResult:
        if line is not None:
            for task in line.tasks.values():
                task.cancel()
        for node_run in list(run.node_runs.values()):
            if node_run.status is Status.RUNNING:
                node_run.status = Status.CANCELED
                node_run.ended = clock()
        return LineResult.failed(run, exc)

    def _output_value(self, ref: Any, line: _Line) -> Any:
        if isinstance(ref, InputRef):
            return line.inputs.get(ref.name)
        if isinstance(ref, NodeRef):
            value = None if ref.node in line.bypassed else line.outputs[ref.node]
            return self._follow(ref, join_sync(value), "flow output")
        return ref.value if isinstance(ref, Literal) else None

    @staticmethod
    def _follow(ref: NodeRef, value: Any, where: str) -> Any:
        if not ref.path:
            return value
        try:
            return resolve_path(value, ref.path)
        except (KeyError, IndexError, AttributeError, TypeError):
            raise user_error(
                f"Flow execution failed. Invalid property '{ref.property}' when accessing the node "
                f"'{ref.node}'. Please check the property and try again.",
                "InvalidReferenceProperty",
                node=ref.node,
            ) from None

    def _is_bypassed(self, node: CompiledNode, line: _Line) -> bool:
        plan = node.plan
        activate = plan.node.activate
        deps = set(plan.input_deps)
        if activate is not None and isinstance(activate.when, NodeRef):
            if activate.when.node in line.bypassed:
                return True
            deps.add(activate.when.node)
        if deps and deps <= line.bypassed:
            return True
        if activate is None:
            return False
        when = activate.when
        if isinstance(when, InputRef):
            value = line.inputs.get(when.name)
        elif isinstance(when, NodeRef):
            value = self._follow(when, line.outputs[when.node], f"activate condition of {plan.node.name!r}")
        else:
            value = when.value
        return value != activate.is_

    def _node_inputs(self, node: CompiledNode, line: _Line) -> dict[str, Any]:
        kwargs = dict(node.literals)
        for key, ref in node.refs:
            if isinstance(ref, InputRef):
                kwargs[key] = line.inputs.get(ref.name)
            elif ref.node in line.bypassed:
                kwargs[key] = node.defaults.get(key)
            else:
                value = line.outputs[ref.node]
                if isinstance(value, SharedGenerator):
                    value = value.reader() if not ref.path else join_sync(value)
                kwargs[key] = self._follow(ref, value, f"input {key!r} of node {node.name!r}")
        return kwargs

    def _start_node(self, node: CompiledNode, line: _Line) -> tuple[NodeRun, dict[str, Any] | None]:
        """Record the node as started; its inputs, or None when it is bypassed."""
        node_run = NodeRun(node.name, started=clock())
        line.run.node_runs[node.name] = node_run
        if self._is_bypassed(node, line):
            line.bypassed.add(node.name)
            node_run.status = Status.BYPASSED
            node_run.ended = node_run.started
            return node_run, None
        kwargs = self._node_inputs(node, line)
        if line.record_io:
            node_run.inputs = kwargs
        return node_run, kwargs

    @staticmethod
    def _finish_node(node: CompiledNode, line: _Line, node_run: NodeRun, result: Any) -> None:
        line.outputs[node.name] = result
        if isinstance(result, NodeStream):
            return  # the stream completes the record when it is drained
        node_run.status = Status.COMPLETED
        node_run.ended = clock()
        if line.record_io:
            node_run.output = result

    def _node_error(self, node: CompiledNode, node_run: NodeRun, exc: Exception) -> ExecutionError:
        error = self._as_error(node.name, exc)
        self._node_failed(node_run, error)
        node_failed(node_run, exc)
        return error

    async def _run_node(self, node: CompiledNode, line: _Line) -> None:
        for dep in node.plan.deps:
            task = line.tasks[dep]
            if not task.done():
                await task
            elif task.exception() is not None:
                return
        node_run, kwargs = self._start_node(node, line)
        if kwargs is None:
            return
        streaming = line.stream and node.name in self.stream_nodes
        span_token = start_node(node_run, line.run.span)
        try:
            result = await self._invoke(node, kwargs, streaming, node_run)
        except asyncio.CancelledError:
            node_run.status = Status.CANCELED
            node_run.ended = clock()
            raise
        except Exception as exc:
            error = self._node_error(node, node_run, exc)
            raise error from (None if error is exc else exc)
        finally:
            if span_token is not None:
                tracing.deactivate(span_token)
        self._finish_node(node, line, node_run, result)

    def _timed_chain(self, line: _Line, inline: bool) -> None:
        policy = self.inline_policy
        mark = policy.start()
        try:
            self._run_chain(line)
        except BaseException:
            if inline:
                policy.failed()
            raise
        policy.finish(mark, inline)

    def _run_chain(self, line: _Line) -> None:
        """Run a flow whose nodes form one chain of sync tools, in one worker thread.

        The nodes could not overlap anyway, so one hop to the pool per line replaces one
        per node; it is the engine's hot path for plain Python flows.
        """
        for node in self.line_nodes:
            node_run, kwargs = self._start_node(node, line)
            if kwargs is None:
                continue
            streaming = line.stream and node.name in self.stream_nodes
            token = usage_owner.set(node_run)
            span_token = start_node(node_run, line.run.span)
            try:
                result = _call_sync(node, kwargs, streaming)
            except Exception as exc:
                error = self._node_error(node, node_run, exc)
                raise error from (None if error is exc else exc)
            finally:
                if span_token is not None:
                    tracing.deactivate(span_token)
                usage_owner.reset(token)
            if inspect.isgenerator(result):
                result = NodeStream(result, node_run, self.pool, partial(self._as_error, node.name))
            self._finish_node(node, line, node_run, result)

    @staticmethod
    def _node_failed(node_run: NodeRun, exc: ExecutionError) -> None:
        node_run.status = Status.FAILED
        node_run.ended = clock()
        node_run.error = exc.to_dict()

    @staticmethod
    def _as_error(node: str, exc: Exception) -> ExecutionError:
        """The ExecutionError a node's failure is reported as."""
        if isinstance(exc, ExecutionError):
            return exc
        if isinstance(exc, ChatFormatError):
            return chat_format_error(node, exc)
        if isinstance(exc, LLMParamError):
            return user_error(f"Execution failure in '{node}': {exc}", "InvalidLLMParameter", node=node)
        if isinstance(exc, LLMCallError):
            return user_error(str(exc), "OpenAIError", node=node)
        return tool_error(node, exc)

    async def _invoke(
        self, node: CompiledNode, kwargs: dict[str, Any], streaming: bool, node_run: NodeRun
    ) -> Any:
        """Call the node's tool the way its kind needs; a stream is wrapped or joined."""
        tool = node.tool
        token = usage_owner.set(node_run)
        try:
            if tool.mode is CallMode.INLINE:
                return tool.func(**kwargs)
            if tool.mode is CallMode.ASYNC:
                if tool.streams:
                    kwargs["stream"] = streaming
                result = tool.func(**kwargs)
                if inspect.isawaitable(result):
                    result = await result
            else:
                loop = asyncio.get_running_loop()
                ctx = contextvars.copy_context()
                result = await loop.run_in_executor(self.pool, ctx.run, _call_sync, node, kwargs, streaming)
        finally:
            usage_owner.reset(token)
        if streaming and (inspect.isgenerator(result) or hasattr(result, "__anext__")):
            return NodeStream(result, node_run, self.pool, partial(self._as_error, node.name))
        if isinstance(result, SharedGenerator):
            return result
        return await join_async(result)

    # -- a single node, for `flow test --node` ---------------------------------

    async def run_single_node(self, name: str, inputs: Mapping[str, Any]) -> Any:
        """Run one node with its inputs given directly (``inputs.x``, ``node.output`` or the param name)."""
        if name not in self.nodes:
            raise user_error(f"node {name!r} does not exist (nodes: {', '.join(self.nodes)})", "NodeNotFound")
        node = self.nodes[name]
        kwargs = dict(node.literals)
        for key, ref in node.refs:
            candidates = (
                [key, ref.name, f"inputs.{ref.name}", f"flow.{ref.name}"]
                if isinstance(ref, InputRef)
                else [key, f"{ref.node}.output", ref.node]
            )
            found = next((c for c in candidates if c in inputs), None)
            default = self.flow.inputs[ref.name].default if isinstance(ref, InputRef) else MISSING
            if found is None and default is not MISSING:
                kwargs[key] = default
                continue
            if found is None:
                raise user_error(
                    f"input {key!r} of node {name!r} ({ref.describe()}) is not given; "
                    f"pass --inputs {key}=...",
                    "InputNotFound",
                )
            value = inputs[found]
            if isinstance(ref, NodeRef) and found != key:
                value = self._follow(ref, value, f"input {key!r} of node {name!r}")
            kwargs[key] = value
        given = {ref.name: kwargs[key] for key, ref in node.refs if isinstance(ref, InputRef)}
        if has_media(self.flow, given):  # image inputs read as a line reads them
            loaded = await asyncio.to_thread(load_media, self.flow, given)
            kwargs.update({key: loaded[ref.name] for key, ref in node.refs if isinstance(ref, InputRef)})
        node_run = NodeRun(name, started=clock())
        try:
            return await self._invoke(node, kwargs, False, node_run)
        except Exception as exc:
            error = self._as_error(name, exc)
            raise error from (None if error is exc else exc)

    # -- aggregation ---------------------------------------------------------

    async def run_aggregation(
        self, lines: list[tuple[dict[str, Any], dict[str, Any]]]
    ) -> tuple[dict[str, float], dict[str, NodeRun], ExecutionError | None]:
        """Run aggregation nodes once over completed lines, given as (inputs, node outputs).

        Each reference to a flow input or a per-line node becomes the list of its values
        across lines. Returns the metrics logged, the node runs and the first error.
        """
        metrics: dict[str, float] = {}
        runs: dict[str, NodeRun] = {}
        results: dict[str, Any] = {}
        token = collect_metrics(metrics)
        try:
            for node in self.aggregation_nodes:
                kwargs = dict(node.literals)
                for key, ref in node.refs:
                    if isinstance(ref, InputRef):
                        kwargs[key] = [inputs.get(ref.name) for inputs, _ in lines]
                    elif ref.node in results:
                        kwargs[key] = self._follow(ref, results[ref.node], f"input {key!r}")
                    else:
                        kwargs[key] = [
                            self._follow(ref, outs[ref.node], f"input {key!r}") if ref.node in outs else None
                            for _, outs in lines
                        ]
                node_run = NodeRun(node.name, started=clock(), inputs=kwargs)
                runs[node.name] = node_run
                try:
                    results[node.name] = await self._invoke(node, kwargs, False, node_run)
                except Exception as exc:
                    return metrics, runs, self._node_error(node, node_run, exc)
                node_run.status = Status.COMPLETED
                node_run.ended = clock()
                node_run.output = results[node.name]
        finally:
            stop_collecting(token)
        return metrics, runs, None


_PASS_THROUGH = (str, int, float, bool, type(None), NodeStream)
_ATOMS = frozenset((str, int, bool, type(None)))
"""What a JSON round trip gives back as it was, exactly these types (a float too, when finite)."""
_NOT_PLAIN = object()
_PLAIN_DEPTH = 64


def json_ready(name: str, value: Any) -> Any:
    """A flow output as JSON will carry it (tuples become lists, keys strings), as prompt flow
    gives it; a value JSON cannot hold is a UserError naming the output. Streams pass as they are.
    """
    if type(value) is list:  # the common case: a list of strings or numbers, copied as it is
        for item in value:
            if type(item) not in _ATOMS:
                break
        else:
            return value[:]
    if isinstance(value, _PASS_THROUGH):
        return value
    if (plain := _plain_copy(value, 0)) is not _NOT_PLAIN:
        return plain
    try:
        return orjson.loads(orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS))
    except TypeError:
        if has_image(value):  # kept as they are: each answer writes them its own way
            return _ready_around_images(name, value)
        # orjson refuses more than json does (big ints, ...): let json decide and explain
    try:
        return json.loads(json.dumps(value, ensure_ascii=False))
    except (TypeError, ValueError) as exc:
        raise user_error(
            f"The output '{name}' for flow is incorrect. The output value is not JSON serializable. "
            f"JSON dump failed: ({type(exc).__name__}) {exc}. Please verify your flow output and make "
            "sure the value serializable.",
            "FlowOutputUnserializable",
        ) from None


def _plain_copy(value: Any, depth: int) -> Any:
    """What a JSON round trip of ``value`` gives, without one, when ``value`` holds only lists,
    dicts with string keys, strings, ints, bools, None and finite floats (exactly these types):
    the same values in new containers. Anything else (tuples, a non-string key, a subclass, NaN,
    deep nesting...) is ``_NOT_PLAIN``: the round trip decides."""
    kind = type(value)
    if kind in _ATOMS:
        return value
    if kind is float:
        return value if value - value == 0.0 else _NOT_PLAIN  # inf - inf and nan - nan are nan
    if depth > _PLAIN_DEPTH:
        return _NOT_PLAIN
    if kind is list:
        copied = []
        for item in value:
            if (item := _plain_copy(item, depth + 1)) is _NOT_PLAIN:
                return _NOT_PLAIN
            copied.append(item)
        return copied
    if kind is dict:
        copied_dict = {}
        for key, item in value.items():
            if type(key) is not str or (item := _plain_copy(item, depth + 1)) is _NOT_PLAIN:
                return _NOT_PLAIN
            copied_dict[key] = item
        return copied_dict
    return _NOT_PLAIN


def _ready_around_images(name: str, value: Any) -> Any:
    if isinstance(value, PFBytes):
        return value
    if isinstance(value, list | tuple):
        return [_ready_around_images(name, item) for item in value]
    if isinstance(value, dict):
        return {k if isinstance(k, str) else str(k): _ready_around_images(name, v) for k, v in value.items()}
    return json_ready(name, value)


def _call_sync(node: CompiledNode, kwargs: dict[str, Any], streaming: bool) -> Any:
    """Call a sync tool. A generator stays one when it streams, is shared when other nodes
    read it (they get a generator, as in prompt flow), and is joined here otherwise, so that
    iterating it never blocks the event loop."""
    result = node.tool.func(**kwargs)
    if not inspect.isgenerator(result) or streaming:
        return result
    return SharedGenerator(result) if node.plan.has_readers else join_sync(result)
