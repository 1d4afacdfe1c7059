"""Tiny OTLP trace receivers (tests, benches): each export request decoded with opentelemetry-proto.

- ``OTLPReceiver``: OTLP over HTTP/protobuf, an ASGI app (serve it with ``ThreadedServer``).
- ``GrpcReceiver``: OTLP over gRPC, opentelemetry-proto's ``TraceService`` on a grpcio server
  (needs ``grpcio``: the ``otlp-grpc`` extra).
- ``python -m flowport.testing.otlp --port N``: the HTTP receiver in its own process; ``GET /count``
  answers the spans received so far (``bench/serve.py`` exports to it).
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable
from concurrent import futures
from typing import Any, Self

Received = tuple[dict[str, Any], Any]
"""A received span: its resource's string attributes, and the protobuf ``Span``."""


def received(request: Any) -> Iterable[Received]:
    """The spans of an ``ExportTraceServiceRequest``, each with its resource's attributes."""
    for resource_spans in request.resource_spans:
        resource = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                yield resource, span


def attributes(span: Any) -> dict[str, Any]:
    """A protobuf span's attributes as a dict of plain values."""
    found = {}
    for attribute in span.attributes:
        value = attribute.value
        found[attribute.key] = getattr(value, value.WhichOneof("value"))
    return found


class _Spans:
    def __init__(self) -> None:
        self.spans: list[Received] = []
        self.requests: list[str] = []

    def named(self, name: str) -> Received:
        return next((r, s) for r, s in self.spans if s.name == name)


async def _body(receive: Any) -> bytes:
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            return body


async def _answer(send: Any, status: int, content_type: bytes, body: bytes) -> None:
    headers = [(b"content-type", content_type)]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class OTLPReceiver(_Spans):
    """OTLP/HTTP: ``POST /v1/traces`` decoded; ``keep=False`` only counts the spans (benches)."""

    def __init__(self, keep: bool = True) -> None:
        super().__init__()
        self.keep = keep
        self.count = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceRequest,
            ExportTraceServiceResponse,
        )

        if scope["type"] != "http":
            return
        if scope["method"] == "GET" and scope["path"] == "/count":
            await _answer(send, 200, b"application/json", b'{"spans": %d}' % self.count)
            return
        body = await _body(receive)
        headers = dict(scope["headers"])
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        spans = list(received(request))
        self.count += len(spans)
        if self.keep:
            content_type = headers.get(b"content-type", b"").decode()
            self.requests.append(f"{scope['method']} {scope['path']} {content_type}")
            self.spans.extend(spans)
        await _answer(send, 200, b"application/x-protobuf", ExportTraceServiceResponse().SerializeToString())


class GrpcReceiver(_Spans):
    """OTLP/gRPC on ``127.0.0.1``: ``with GrpcReceiver() as r: ... r.endpoint``, spans in ``r.spans``."""

    def __init__(self) -> None:
        super().__init__()
        self.port = 0
        self._server: Any = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Self:
        import grpc
        from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

        spans = self

        class Service(trace_service_pb2_grpc.TraceServiceServicer):
            def Export(self, request: Any, context: Any) -> Any:
                metadata = dict(context.invocation_metadata())
                spans.requests.append(f"Export {metadata.get('user-agent', '')}")
                spans.spans.extend(received(request))
                return trace_service_pb2.ExportTraceServiceResponse()

        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Service(), self._server)
        self.port = self._server.add_insecure_port("127.0.0.1:0")
        self._server.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.stop(grace=None)


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description="An OTLP/HTTP trace receiver that counts what it gets.")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    receiver = OTLPReceiver(keep=False)
    uvicorn.run(receiver, host="127.0.0.1", port=args.port, log_level="warning", lifespan="off")


if __name__ == "__main__":
    main()
