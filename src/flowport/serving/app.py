"""The scoring app of one instance: ``/score`` and its companions, as prompt flow serves them.

One flow, loaded once. Every request is parsed once, run under the instance's concurrency
limit and timeout, and answered in JSON or server-sent events. Errors are answers: nothing a
client sends reaches the process as an exception.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from flowport import __version__, tracing
from flowport.engine import ExecutionError, FlexExecutor, FlowExecutor, LineResult, NodeStream
from flowport.engine.errors import system_error, user_error
from flowport.engine.prompty import PromptyExecutor
from flowport.engine.streams import join_async
from flowport.flow.reference import Literal
from flowport.request_ids import client_request_id
from flowport.request_ids import request_id as accepted_request_id
from flowport.serving.access_log import AccessLog
from flowport.serving.body import BodyTooLarge, read_body
from flowport.serving.limits import ConcurrencyLimit, Overloaded
from flowport.serving.metrics import CONTENT_TYPE, InstanceMetrics
from flowport.serving.negotiation import (
    Reply,
    check_required,
    negotiate,
    not_acceptable,
    parse_inputs,
)
from flowport.serving.openai_chat import OpenAIChatRoute, not_a_chat_flow
from flowport.serving.refused import Refused, status_for
from flowport.serving.settings import ServeSettings
from flowport.serving.sse import error_frame, frame, image_default
from flowport.serving.swagger import build_swagger
from flowport.tracing.propagation import HEADER as TRACEPARENT
from flowport.tracing.propagation import parse as parse_traceparent


def _encode(payload: Any) -> bytes:
    try:
        return orjson.dumps(payload, default=image_default)
    except TypeError:  # what orjson refuses (integers past 64 bits): the standard library writes it
        return json.dumps(payload, ensure_ascii=False, separators=(",", ":"), default=image_default).encode()


def _json(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(_encode(payload), status, headers, media_type="application/json")


async def _not_found(request: Request, exc: Exception) -> Response:
    message = (
        f"The requested api {request.url} with {request.method} is not supported by current app, "
        "if you entered the URL manually please check your spelling and try again."
    )
    return Response(message, 404, media_type="text/html")


async def _method_not_allowed(request: Request, exc: Exception) -> Response:
    headers = getattr(exc, "headers", None) or {}
    return Response(b'{"detail":"Method Not Allowed"}', 405, headers, media_type="application/json")


def _error_body(error: ExecutionError) -> dict[str, Any]:
    return {"error": {"code": error.code, "message": error.message}}


class ScoringApp:
    """An ASGI app serving one loaded flow."""

    def __init__(
        self,
        executor: FlowExecutor | FlexExecutor,
        settings: ServeSettings | None = None,
        name: str | None = None,
    ) -> None:
        self.executor = executor
        self.flow = executor.flow
        if isinstance(executor, FlowExecutor):  # a request's image paths stay inside the flow folder
            executor.confine_image_files = True
        elif isinstance(executor, PromptyExecutor) and executor.prompty is not None:
            executor.prompty.confine_image_files = True
        self.name = name or self.flow.name
        """The flow's name for clients (swagger title): the flow folder's, not its snapshot's."""
        self.settings = settings or ServeSettings()
        included = self.settings.response_included_fields
        self.outputs: list[str] | None = [
            name
            for name, spec in executor.line_outputs.items()
            if (name in included if included is not None else not spec.evaluation_only)
        ]
        """What /score answers: PROMPTFLOW_RESPONSE_INCLUDED_FIELDS, else all but evaluation_only."""
        if getattr(executor, "dynamic_outputs", False):  # a flex entry that may return any dict
            self.outputs = list(included) if included is not None else None
        self.limit = ConcurrencyLimit(
            self.settings.max_concurrent_requests, self.settings.max_queue_wait_ms / 1000
        )
        self.timeout = self.settings.request_timeout_ms / 1000
        self.metrics = InstanceMetrics(self._llm_labels())
        self.log = AccessLog()
        self.draining = False
        self.swagger = orjson.dumps(build_swagger(self.flow, included, self.name))
        self.chat = OpenAIChatRoute(self) if self.flow.is_chat else None
        routes = [
            Route("/score", self.score, methods=["POST"]),
            Route("/health", self.health, methods=["GET"]),
            Route("/ready", self.ready, methods=["GET"]),
            Route("/version", self.version, methods=["GET"]),
            Route("/swagger.json", self.swagger_json, methods=["GET"]),
            Route("/metrics", self.metrics_text, methods=["GET"]),
            Route("/feedback", self.feedback, methods=["POST"]),
        ]
        chat = self.chat.handle if self.chat is not None else not_a_chat_flow(self)
        routes.append(Route("/v1/chat/completions", chat, methods=["POST"]))
        self.app = Starlette(
            routes=routes,
            lifespan=self._lifespan,
            exception_handlers={404: _not_found, 405: _method_not_allowed},
            middleware=[
                Middleware(CORSMiddleware, allow_origins=["*"], allow_methods=["*"], allow_headers=["*"])
            ],
        )

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        """``POST /score`` from a non-browser client goes straight to ``score``: the hot path.

        Starlette's middleware and router (CORS, error pages, routing) cost about a fifth of a
        small request; a request with an ``Origin`` header, and every other route, go through them.
        """
        if (
            scope["type"] == "http"
            and scope["path"] == "/score"
            and scope["method"] == "POST"
            and not any(name == b"origin" for name, _ in scope["headers"])
        ):
            response = await self.score(Request(scope, receive))
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _llm_labels(self) -> dict[str, tuple[str, str]]:
        labels = {}
        for name, node in self.executor.nodes.items():
            spec = node.plan.node
            if spec.type == "llm":
                connection = spec.connection or ""
            elif spec.type == "custom_llm" or (spec.type == "python" and spec.source_type == "package"):
                # prompt flow's LLM-family package tools name their connection in an input
                given = spec.inputs.get("connection")
                connection = str(given.value) if isinstance(given, Literal) else "dynamic"
            else:
                continue
            model = spec.inputs.get("model") or spec.inputs.get("deployment_name")
            model_name = str(model.value) if isinstance(model, Literal) else "dynamic"
            labels[name] = (connection, model_name)
        return labels

    def start_draining(self) -> None:
        self.draining = True

    @contextlib.asynccontextmanager
    async def _lifespan(self, app: Starlette) -> AsyncIterator[None]:
        yield
        self.start_draining()
        self.executor.close()

    # -- plumbing shared by /score and the OpenAI route ------------------------------

    async def read_body(self, request: Request) -> bytes:
        return await read_body(request, self.settings.max_body_bytes)

    def request_headers(self, request: Request) -> dict[str, str]:
        """The headers every answer carries; while tracing, also the caller's ``traceparent``
        (``execute`` takes it out and puts the line's in)."""
        headers = {"x-request-id": accepted_request_id(request.headers.get("x-request-id"))}
        client_id = client_request_id(request.headers.get("x-ms-client-request-id"))
        if client_id:
            headers["x-ms-client-request-id"] = client_id
        if tracing.enabled() and (parent := request.headers.get(TRACEPARENT)):
            headers[TRACEPARENT] = parent
        return headers

    async def execute(
        self, inputs: dict[str, Any], stream: bool, request_id: str, headers: dict[str, str] | None = None
    ) -> LineResult:
        """Run one line in a concurrency slot, under the request timeout.

        A result without error comes back with the slot still held: the caller releases it
        (``self.limit.__aexit__()``) once the answer is sent. Anything else releases the slot
        and raises Refused with the status to answer. When tracing, the line's span continues
        the caller's ``traceparent`` and ``headers`` (the answer's) get the line's.
        """
        try:
            await self.limit.__aenter__()
        except Overloaded:
            raise Refused(429, self.overloaded(), {"retry-after": "1"}) from None
        trace_token = None
        if tracing.enabled() and headers is not None:
            parent = parse_traceparent(headers.pop(TRACEPARENT, None))
            if parent is not None:
                trace_token = tracing.activate(parent)
        try:
            async with asyncio.timeout(self.timeout) as budget:
                result = await self.executor.run_line(
                    inputs,
                    stream=stream,
                    run_id=request_id,
                    deadline=budget.when(),
                    span_attributes={"flowport.request_id": request_id, "flowport.flow": self.name}
                    if tracing.enabled()
                    else None,
                )
            if headers is not None and (line_parent := result.run.traceparent):
                headers[TRACEPARENT] = line_parent
        except TimeoutError:
            await self.limit.__aexit__()
            raise Refused(408, self.timed_out()) from None
        except BaseException:
            await self.limit.__aexit__()
            raise
        finally:
            if trace_token is not None:
                tracing.deactivate(trace_token)
        if result.error is not None:
            await self.limit.__aexit__()
            self.metrics.child(self.metrics.errors, result.error.inner_code or result.error.code).inc()
            raise Refused(status_for(result.error), result.error, result=result)
        return result

    def stream_failed(self, exc: Exception) -> ExecutionError:
        """The error a stream that broke off after the line ran is reported as; counted."""
        error = exc if isinstance(exc, ExecutionError) else system_error(f"({type(exc).__name__}) {exc}")
        self.metrics.child(self.metrics.errors, error.inner_code or error.code).inc()
        return error

    def filtered(self, result: LineResult) -> dict[str, Any]:
        if self.outputs is None:
            return result.outputs
        return {name: result.outputs[name] for name in self.outputs if name in result.outputs}

    def too_large(self) -> ExecutionError:
        return user_error(
            f"The request body is larger than {self.settings.max_body_bytes} bytes.", "RequestTooLarge"
        )

    def overloaded(self) -> ExecutionError:
        return user_error(
            f"Too many requests: {self.settings.max_concurrent_requests} are in flight and none finished "
            f"within {self.settings.max_queue_wait_ms} ms. Retry later.",
            "TooManyRequests",
        )

    def timed_out(self) -> ExecutionError:
        return user_error(
            f"The flow did not finish within the request timeout of {self.settings.request_timeout_ms} ms.",
            "RequestTimeout",
        )

    # -- routes ---------------------------------------------------------------------

    async def score(self, request: Request) -> Response:
        started = time.perf_counter()
        headers = self.request_headers(request)
        request_id = headers["x-request-id"]
        status = 200
        result: LineResult | None = None
        streaming = False  # a streamed answer logs itself when the stream ends
        try:
            accept = request.headers.get("accept")
            reply = negotiate(accept)
            if reply is None:
                status = 406
                return _json(_error_body(not_acceptable(accept or "")), 406, headers)
            try:
                inputs = parse_inputs(await self.read_body(request), self.flow)
                check_required(inputs, self.flow)
            except BodyTooLarge:
                status = 413
                return _json(_error_body(self.too_large()), 413, headers)
            except ExecutionError as exc:
                status = 400
                return _json(_error_body(exc), 400, headers)
            try:
                result = await self.execute(inputs, reply is Reply.EVENTS, request_id, headers)
            except Refused as refused:
                status, result = refused.status, refused.result
                return _json(_error_body(refused.error), status, {**headers, **refused.headers})
            if reply is Reply.EVENTS:
                refusal = self._stream_refusal(result, accept or "")
                if refusal is not None:
                    await self.limit.__aexit__()
                    status = refusal[0]
                    return _json(_error_body(refusal[1]), status, headers)
                streaming = True
                return StreamingResponse(
                    self._events(result, started, request_id),
                    media_type="text/event-stream",
                    headers=headers,
                )
            try:
                outputs = {k: await join_async(v) for k, v in self.filtered(result).items()}
            except Exception as exc:  # a stream that broke off while being joined
                error = self.stream_failed(exc)
                status = status_for(error)
                return _json(_error_body(error), status, headers)
            finally:
                await self.limit.__aexit__()
            self.metrics.observe_run(result.run)
            return _json(outputs.get("output") if result.bare else outputs, 200, headers)
        finally:
            if not streaming:
                self.finish_request("score", status, started, request_id, result)

    def _stream_refusal(self, result: LineResult, accept: str) -> tuple[int, ExecutionError] | None:
        """Events need exactly one streamed output, as prompt flow's server requires."""
        streams = [k for k, v in self.filtered(result).items() if isinstance(v, NodeStream)]
        if not streams:
            return 406, not_acceptable(accept)
        if len(streams) > 1:
            return 400, user_error("Multiple stream output fields not supported.", "InvalidRequest")
        return None

    async def _events(self, result: LineResult, started: float, request_id: str) -> AsyncIterator[bytes]:
        """First the outputs that do not stream (if any), then one frame per chunk of the stream."""
        status = 200
        try:
            outputs = self.filtered(result)
            plain = {k: v for k, v in outputs.items() if not isinstance(v, NodeStream)}
            if plain:
                yield frame(plain)
            self.metrics.latency.labels("score", "first").observe(time.perf_counter() - started)
            for key, value in outputs.items():
                if isinstance(value, NodeStream):
                    async for chunk in value:
                        yield frame({key: chunk})
            self.metrics.observe_run(result.run)
        except Exception as exc:  # the status is sent: an error frame ends the answer (not a clean end)
            error = self.stream_failed(exc)
            status = status_for(error)
            yield error_frame(_error_body(error)["error"])
        finally:
            await self.limit.__aexit__()
            self.finish_request("score", status, started, request_id, result, streamed=True)

    def finish_request(
        self,
        route: str,
        status: int,
        started: float,
        request_id: str,
        result: LineResult | None,
        streamed: bool = False,
    ) -> None:
        """Count and log a finished request; a whole answer's first byte is its last."""
        elapsed = time.perf_counter() - started
        metrics = self.metrics
        metrics.child(metrics.requests, route, str(status)).inc()
        metrics.child(metrics.latency, route, "last").observe(elapsed)
        if not streamed:
            metrics.child(metrics.latency, route, "first").observe(elapsed)
        tokens = result.run.usage.total_tokens if result is not None else 0
        self.log.request(route, status, elapsed, request_id, tokens)

    async def health(self, request: Request) -> Response:
        return _json({"status": "Healthy", "version": __version__})

    async def ready(self, request: Request) -> Response:
        if self.draining:
            return _json({"status": "Draining"}, 503)
        return _json({"status": "Ready", "in_flight": self.limit.in_flight})

    async def version(self, request: Request) -> Response:
        return _json(
            {"status": "Healthy", "build_info": os.environ.get("BUILD_INFO", ""), "version": __version__}
        )

    async def swagger_json(self, request: Request) -> Response:
        return Response(self.swagger, media_type="application/json")

    async def metrics_text(self, request: Request) -> Response:
        self.metrics.in_flight.set(self.limit.in_flight)
        return Response(self.metrics.render(), media_type=CONTENT_TYPE)

    async def feedback(self, request: Request) -> Response:
        headers = self.request_headers(request)
        try:
            body = await self.read_body(request)
        except BodyTooLarge:
            return _json(_error_body(self.too_large()), 413, headers)
        try:
            feedback: Any = orjson.loads(body) if body else None
        except orjson.JSONDecodeError:
            feedback = body.decode("utf-8", "replace")
        self.log.feedback(headers["x-request-id"], feedback)
        return JSONResponse({"status": "Feedback received."}, headers=headers)
