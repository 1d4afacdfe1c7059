"""The scoring app of an instance that runs an Azure-style scoring script (``init()``/``run()``).

Routes, statuses and headers are ``azureml-inference-server-http``'s: ``POST``/``GET /score``,
``GET /`` (liveness, ``Healthy``), ``/swagger.json``; error bodies are ``{"message": ...}``;
answers carry ``x-request-id``, ``x-ms-request-id``, ``x-ms-client-request-id``,
``x-ms-run-function-failed`` and ``x-ms-run-fn-exec-ms``. The instance contract is the
flow app's: ``/health``, ``/ready``, ``/metrics``, the concurrency limit (429) and the
request timeout (408, where the inference server answers 500: see docs/scoring-scripts.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import os
import re
import sys
import time
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from flowport import __version__, tracing
from flowport.engine.inline import InlinePolicy
from flowport.request_ids import client_request_id
from flowport.request_ids import request_id as accepted_request_id
from flowport.serving.access_log import AccessLog
from flowport.serving.aml import AMLRequest
from flowport.serving.app import _encode, _method_not_allowed, _not_found
from flowport.serving.body import BodyTooLarge, read_body
from flowport.serving.limits import ConcurrencyLimit, Overloaded
from flowport.serving.metrics import CONTENT_TYPE, InstanceMetrics
from flowport.serving.settings import ServeSettings
from flowport.serving.user_script import FAILED_TO_START, InputMode, ScriptError, UserScript, describe
from flowport.tracing.propagation import HEADER as TRACEPARENT
from flowport.tracing.propagation import parse as parse_traceparent
from flowport.tracing.propagation import traceparent
from flowport.tracing.spans import Span, Unrecorded

RUN_FAILED = "An unexpected error occurred in scoring script. Check the logs for more info."
_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
"""A header name HTTP allows."""
_UNSENDABLE = re.compile(r"[^\t\x20-\x7e\x80-\xff]")
"""What a header value cannot hold: line breaks, other control characters, anything past latin-1."""
_END = object()


class BadInput(Exception):
    """The request cannot be handed to ``run()`` (400)."""


def _message(status: int, message: str, headers: dict[str, str], failed: bool = False) -> Response:
    headers = {**headers, "x-ms-run-function-failed": str(failed)}
    return Response(orjson.dumps({"message": message}), status, headers, media_type="application/json")


def _query_value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def _sse(item: Any) -> bytes:
    """One server-sent event: text as its lines, bytes as given, anything else as JSON."""
    if isinstance(item, bytes | bytearray):
        return bytes(item)
    if isinstance(item, str):
        return "".join(f"data: {line}\n" for line in item.split("\n")).encode() + b"\n"
    return b"data: " + _encode(item) + b"\n\n"


def _is_response(value: Any) -> bool:
    """An ``AMLResponse`` (flowport's, or Azure's Flask one): a status, headers and a body."""
    return hasattr(value, "status_code") and hasattr(value, "headers") and hasattr(value, "get_data")


class ScriptApp:
    """An ASGI app serving one loaded scoring script; ``init()`` runs when it starts."""

    def __init__(
        self, script: UserScript, settings: ServeSettings | None = None, name: str | None = None
    ) -> None:
        self.script = script
        self.name = name or script.folder.name
        self._span_attributes = {
            "flowport.span_type": "scoring_script",
            "flowport.flow": self.name,
            "flowport.scoring_script": script.name,
        }
        """A request span's fixed attributes."""
        self.settings = settings or ServeSettings()
        self.limit = ConcurrencyLimit(
            self.settings.max_concurrent_requests, self.settings.max_queue_wait_ms / 1000
        )
        self.timeout = self.settings.request_timeout_ms / 1000
        self.metrics = InstanceMetrics({})
        self.log = AccessLog()
        self.draining = False
        self.started = False
        self.threads = ThreadPoolExecutor(
            max_workers=min(self.settings.max_concurrent_requests, 256), thread_name_prefix="run"
        )
        """Sync ``run()`` calls: as many as may run at once (unless the inline policy allows the loop)."""
        run = script.run
        self.run_is_async = inspect.iscoroutinefunction(run) or inspect.isasyncgenfunction(run)
        may_inline = not self.run_is_async and not inspect.isgeneratorfunction(run)
        self.inline_policy = InlinePolicy(None if may_inline else False)
        """A sync ``run()`` proven fast runs on the event loop, sparing the thread hop (as flows do)."""
        from flowport.serving.script_swagger import build_script_swagger

        self.swagger = orjson.dumps(build_script_swagger(script, self.name))
        self.app = Starlette(
            routes=[
                Route("/score", self.score, methods=["GET", "POST", "OPTIONS"]),
                Route("/", self.liveness, methods=["GET"]),
                Route("/health", self.health, methods=["GET"]),
                Route("/ready", self.ready, methods=["GET"]),
                Route("/version", self.version, methods=["GET"]),
                Route("/swagger.json", self.swagger_json, methods=["GET"]),
                Route("/metrics", self.metrics_text, methods=["GET"]),
            ],
            lifespan=self._lifespan,
            exception_handlers={404: _not_found, 405: _method_not_allowed},
        )

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        """``POST /score`` goes straight to ``score`` (the hot path); the router serves the rest."""
        if scope["type"] == "http" and scope["path"] == "/score" and scope["method"] == "POST":
            response = await self.score(Request(scope, receive))
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)

    @contextlib.asynccontextmanager
    async def _lifespan(self, app: Starlette) -> AsyncIterator[None]:
        try:
            await self.script.call_init()
        except ScriptError as exc:  # the runtime shows this line as the reason; no traceback
            print(f"{FAILED_TO_START}{exc}", file=sys.stderr, flush=True)
            os._exit(1)
        self.started = True
        yield
        self.draining = True
        self.threads.shutdown(wait=False, cancel_futures=True)

    # -- plumbing ---------------------------------------------------------------------

    def request_headers(self, request: Request) -> dict[str, str]:
        """The ids every answer carries, as the inference server sets them."""
        request_id = accepted_request_id(request.headers.get("x-request-id"))
        client_id = client_request_id(request.headers.get("x-ms-client-request-id"))
        legacy = client_request_id(request.headers.get("x-ms-request-id"))
        headers = {"x-request-id": request_id, "x-ms-request-id": legacy or client_id or request_id}
        if client_id or legacy:
            headers["x-ms-client-request-id"] = client_id or legacy or ""
        return headers

    def _arguments(self, request: Request, body: bytes) -> dict[str, Any]:
        script = self.script
        if script.mode == InputMode.RAW:
            raw = AMLRequest(
                request.method,
                request.url.path,
                request.url.query,
                str(request.url),
                request.headers,
                request.query_params,
                body,
            )
            return {script.input_name: raw}
        if request.method == "GET":
            params = request.query_params
            values = {
                k: (_query_value(v[0]) if len(v) == 1 else [_query_value(x) for x in v])
                for k in params
                if (v := params.getlist(k))
            }
            if script.mode == InputMode.SCHEMA:
                return values
            return {script.input_name: json.dumps(values)}
        if script.mode == InputMode.SCHEMA:
            try:
                data = orjson.loads(body) if body else {}
            except orjson.JSONDecodeError as exc:
                raise BadInput(f"the request body is not valid JSON: {exc}") from None
            if not isinstance(data, dict):
                raise BadInput(f"the request body must be a JSON object with {', '.join(script.parameters)}")
            return {k: v for k, v in data.items() if k in script.parameters}
        try:
            return {script.input_name: body.decode("utf-8")}
        except UnicodeDecodeError as exc:
            raise BadInput(f"Input cannot be decoded as UTF-8: {exc}") from None

    async def _timed_call(self, arguments: dict[str, Any], request: Request) -> Any:
        """``run()``'s result, under the request timeout (TimeoutError when it passes).

        A sync ``run()`` on the event loop (the inline policy) cannot be interrupted, so it arms
        no timer (``asyncio.timeout`` costs about 5 us a request); an awaitable it returns is
        awaited under what is left of the timeout.
        """
        if self.run_is_async or not self.inline_policy.inline:
            async with asyncio.timeout(self.timeout):
                return await self._call(arguments, request)
        ran = time.perf_counter()
        result = self.inline_policy.call(self.script.run, self._with_headers(arguments, request), True)
        if inspect.isawaitable(result):
            async with asyncio.timeout(self.timeout - (time.perf_counter() - ran)):
                result = await result
        return result

    def _with_headers(self, arguments: dict[str, Any], request: Request) -> dict[str, Any]:
        if self.script.wants_headers:
            return {**arguments, "request_headers": dict(request.headers)}
        return arguments

    async def _call(self, arguments: dict[str, Any], request: Request) -> Any:
        arguments = self._with_headers(arguments, request)
        if self.run_is_async:
            result = self.script.run(**arguments)
        elif self.inline_policy.inline:  # on the loop the call cannot be interrupted by the timeout
            result = self.inline_policy.call(self.script.run, arguments, True)
        else:
            loop = asyncio.get_running_loop()
            call = partial(self.inline_policy.call, self.script.run, arguments, False)
            result = await loop.run_in_executor(self.threads, call)
        if inspect.isawaitable(result):
            result = await result
        return result

    def _run_failed(self, exc: BaseException, request_id: str, span: Span | None = None) -> None:
        """One line in the log: where the script failed and why (the client gets Azure's message)."""
        where = describe(exc, self.script.folder)
        print(f"run() failed for request {request_id} at {where}", file=sys.stderr, flush=True)
        if span is not None:
            tracing.fail(span, exc, f"run() failed at {where}")
        self.metrics.child(self.metrics.errors, "RunFunctionFailed").inc()

    # -- routes ---------------------------------------------------------------------------

    async def score(self, request: Request) -> Response:
        started = time.perf_counter()
        headers = self.request_headers(request)
        request_id = headers["x-request-id"]
        status = 200
        streaming = False
        span: Span | None = None
        unrecorded = None
        if tracing.enabled():
            traced = self._start_span(request, request_id, headers)
            if type(traced) is Unrecorded:
                unrecorded = traced
            else:
                span = traced
        try:
            if request.method == "OPTIONS":
                return Response(b"", 200, headers)
            try:
                body = await read_body(request, self.settings.max_body_bytes)
                if span is not None and tracing.capture_content():
                    span.attributes["flowport.inputs"] = tracing.content(body.decode("utf-8", "replace"))
                arguments = self._arguments(request, body)
            except BodyTooLarge:
                status = 413
                limit = self.settings.max_body_bytes
                return _message(413, f"The request body is larger than {limit} bytes.", headers)
            except BadInput as exc:
                status = 400
                return _message(400, str(exc), headers)
            try:
                await self.limit.__aenter__()
            except Overloaded:
                status = 429
                message = (
                    f"Too many requests: {self.settings.max_concurrent_requests} are in flight and none "
                    f"finished within {self.settings.max_queue_wait_ms} ms. Retry later."
                )
                return _message(429, message, {**headers, "retry-after": "1"})
            ran = time.perf_counter()
            try:
                result = await self._timed_call(arguments, request)
            except TimeoutError:
                await self.limit.__aexit__()
                status = 408
                self.metrics.child(self.metrics.errors, "RequestTimeout").inc()
                message = f"Scoring timeout after {self.settings.request_timeout_ms} ms"
                return _message(408, message, headers, failed=True)
            except Exception as exc:
                await self.limit.__aexit__()
                status = 500
                self._run_failed(exc, request_id, span)
                return _message(500, RUN_FAILED, headers, failed=True)
            headers["x-ms-run-fn-exec-ms"] = f"{(time.perf_counter() - ran) * 1000:.3f}"
            try:
                response = self._answer(result, headers, started, request_id, span)
            except Exception as exc:  # an answer HTTP cannot carry (a header with a line break ...)
                await self.limit.__aexit__()
                status = 500
                self._run_failed(exc, request_id, span)
                return _message(500, RUN_FAILED, headers, failed=True)
            if isinstance(response, StreamingResponse):
                streaming = True
            else:
                await self.limit.__aexit__()
            status = response.status_code
            return response
        finally:
            if not streaming:
                self.finish_request(status, started, request_id, span=span)
            if unrecorded is not None:  # a stream is judged as it starts
                self._finish_unrecorded(unrecorded, request, request_id, status)

    def _start_span(
        self, request: Request, request_id: str, headers: dict[str, str]
    ) -> Span | Unrecorded | None:
        """The request's span, child of the caller's ``traceparent`` (the gateway's), or what one
        would need when the caller's trace is not recorded; the answer names a recorded one in its
        own ``traceparent``."""
        parent = parse_traceparent(request.headers.get(TRACEPARENT))
        attributes = {
            **self._span_attributes,
            "flowport.run_id": request_id,
            "flowport.request_id": request_id,
            "http.request.method": request.method,
        }
        span = tracing.begin(self.name, attributes, tracing.SERVER, parent)
        if type(span) is Span:
            headers[TRACEPARENT] = traceparent(span)
        return span

    def _finish_unrecorded(self, request: Unrecorded, http: Request, request_id: str, status: int) -> None:
        """A request that was not recorded becomes a span after all if it failed (408, 5xx) or was slow."""
        error = f"HTTP {status}" if status >= 500 or status == 408 else None

        def attributes() -> dict[str, Any]:
            return {
                **self._span_attributes,
                "flowport.run_id": request_id,
                "flowport.request_id": request_id,
                "http.request.method": http.method,
                "http.response.status_code": status,
            }

        request.finish(tracing.SERVER, attributes, error)

    def _answer(
        self, result: Any, headers: dict[str, str], started: float, request_id: str, span: Span | None = None
    ) -> Response:
        """The response for what ``run()`` returned; a stream holds the slot until it ends."""
        if _is_response(result):
            return self._relay(result, headers, started, request_id, span)
        if inspect.isgenerator(result) or inspect.isasyncgen(result):
            headers = {**headers, "x-ms-run-function-failed": "False"}
            return StreamingResponse(
                self._stream(result, started, request_id, 200, raw=False, span=span),
                media_type="text/event-stream",
                headers=headers,
            )
        try:
            payload = _encode(result)
        except TypeError:
            self.metrics.child(self.metrics.errors, "RunFunctionFailed").inc()
            message = f"run() returned a {type(result).__name__}, which is not JSON"
            print(f"{message} (request {request_id})", file=sys.stderr, flush=True)
            if span is not None:
                tracing.fail(span, None, message)
            return _message(500, RUN_FAILED, headers, failed=True)
        if span is not None and tracing.capture_content():
            span.attributes["flowport.output"] = tracing.content(result)
        return Response(payload, 200, {**headers, "x-ms-run-function-failed": "False"}, "application/json")

    def _relay(
        self, result: Any, headers: dict[str, str], started: float, request_id: str, span: Span | None = None
    ) -> Response:
        """An ``AMLResponse``: its status, headers and body as given (a 5xx marks the run failed)."""
        status = int(result.status_code)
        failed = status >= 500
        given = result.headers.items() if hasattr(result.headers, "items") else result.headers
        skipped = ("x-ms-run-function-failed", "content-length")
        pairs = [(k, str(v)) for k, v in given if k.lower() not in skipped]
        for name, value in pairs:
            if not _TOKEN.match(name) or _UNSENDABLE.search(value):
                raise ValueError(f"run() answered the header {name!r} with {value!r}: HTTP cannot carry it")
        if not any(k.lower() == "content-type" for k, _ in pairs):
            pairs.append(("content-type", getattr(result, "mimetype", None) or "text/html; charset=utf-8"))
        pairs += [("x-ms-run-function-failed", str(failed)), *headers.items()]
        if failed:
            self.metrics.child(self.metrics.errors, "RunFunctionFailed").inc()
        response: Response
        if getattr(result, "is_streamed", False):
            source = self._stream(result.response, started, request_id, status, raw=True, span=span)
            response = StreamingResponse(source, status)
        else:
            data = result.get_data()
            response = Response(data.encode() if isinstance(data, str) else data, status)
        length = [(k, v) for k, v in response.raw_headers if k == b"content-length"]
        response.raw_headers = length + [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in pairs]
        return response

    async def _stream(
        self, source: Any, started: float, request_id: str, status: int, raw: bool, span: Span | None = None
    ) -> AsyncIterator[bytes]:
        """The chunks of a generator (sync ones pulled in the thread pool) or a streamed response."""
        encode = (lambda item: item.encode() if isinstance(item, str) else bytes(item)) if raw else _sse
        first = True
        try:
            async for item in self._items(source):
                if first:
                    self.metrics.latency.labels("score", "first").observe(time.perf_counter() - started)
                    first = False
                yield encode(item)
        except Exception as exc:  # the status is sent: an error event ends the answer
            status = 500
            self._run_failed(exc, request_id, span)
            if not raw:
                yield b"event: error\ndata: " + orjson.dumps({"message": RUN_FAILED}) + b"\n\n"
        finally:
            await self.limit.__aexit__()
            self.finish_request(status, started, request_id, streamed=True, span=span)

    async def _items(self, source: Any) -> AsyncIterator[Any]:
        if hasattr(source, "__aiter__"):
            async for item in source:
                yield item
            return
        iterator: Iterator[Any] = iter(source)
        loop = asyncio.get_running_loop()
        while (item := await loop.run_in_executor(self.threads, next, iterator, _END)) is not _END:
            yield item

    def finish_request(
        self, status: int, started: float, request_id: str, streamed: bool = False, span: Span | None = None
    ) -> None:
        elapsed = time.perf_counter() - started
        if span is not None:
            span.attributes["http.response.status_code"] = status
            if (status >= 500 or status == 408) and span.status != "ERROR":
                tracing.fail(span, None, f"HTTP {status}")
            span.end()
        metrics = self.metrics
        metrics.child(metrics.requests, "score", str(status)).inc()
        metrics.child(metrics.latency, "score", "last").observe(elapsed)
        if not streamed:
            metrics.child(metrics.latency, "score", "first").observe(elapsed)
        self.log.request("score", status, elapsed, request_id, 0)

    async def liveness(self, request: Request) -> Response:
        return Response(b"Healthy", 200, media_type="text/html; charset=utf-8")

    async def health(self, request: Request) -> Response:
        body = {"status": "Healthy", "version": __version__}
        return Response(orjson.dumps(body), media_type="application/json")

    async def ready(self, request: Request) -> Response:
        if self.draining or not self.started:
            return Response(orjson.dumps({"status": "Draining"}), 503, media_type="application/json")
        body = {"status": "Ready", "in_flight": self.limit.in_flight}
        return Response(orjson.dumps(body), media_type="application/json")

    async def version(self, request: Request) -> Response:
        body = {"status": "Healthy", "build_info": os.environ.get("BUILD_INFO", ""), "version": __version__}
        return Response(orjson.dumps(body), media_type="application/json")

    async def swagger_json(self, request: Request) -> Response:
        return Response(self.swagger, media_type="application/json")

    async def metrics_text(self, request: Request) -> Response:
        self.metrics.in_flight.set(self.limit.in_flight)
        return Response(self.metrics.render(), media_type=CONTENT_TYPE)
