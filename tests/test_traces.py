"""Traces: spans of lines, nodes and LLM calls, trace context across hops, export, the built-in store."""

from __future__ import annotations

import asyncio
import gc
import gzip
import importlib.util
import json
import os
import shutil
import time
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from flowport.connections import OpenAIConnection
from flowport.control.errors import ApiError
from flowport.control.specs import parse_deployment
from flowport.control.traces import TraceQuery, TraceStore
from flowport.engine import FlowExecutor, load_executor
from flowport.runtime.base import InstanceConfig
from flowport.runtime.instance import start_tracing
from flowport.runtime.local.logs import masking
from flowport.serving import ScoringApp
from flowport.testing.llm_server import LLMServer
from flowport.testing.otlp import GrpcReceiver, OTLPReceiver, attributes
from flowport.testing.threaded_server import ThreadedServer
from flowport.tracing.setup import Tracing, configure
from tests.endpoint_harness import Flowport
from tests.test_cli import flowport
from tests.test_flow_definition import write_flow
from tests.test_llm_nodes import CHAT_FLOW, CHAT_TEMPLATE
from tests.test_serve_process import start

FLOWS = Path(__file__).parent / "flows"

Spans = Callable[[], list[dict[str, Any]]]


def read_spans(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_bytes().splitlines() if line.strip()]


@pytest.fixture
def traced(tmp_path: Path) -> Iterator[tuple[Tracing, Spans]]:
    """Tracing on in this process, to a built-in store file; spans() flushes and reads it."""
    path = tmp_path / "spans.jsonl"
    with open(path, "ab") as file:
        tracing = configure(
            "test", {"FLOWPORT_TRACE_RATE": "all"}, builtin=file, resource={"flowport.deployment": "blue"}
        )
        assert tracing is not None

        def spans() -> list[dict[str, Any]]:
            tracing.flush()
            return read_spans(path)

        yield tracing, spans
        tracing.shutdown()


def by_name(spans: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {span["name"]: span for span in spans}


async def test_a_dag_line_is_one_trace_with_a_span_per_node(traced: tuple[Tracing, Spans]) -> None:
    _, spans = traced
    executor = FlowExecutor.load(FLOWS / "three_node_python")
    try:
        result = await executor.run_line(
            {"text": "a b c"}, run_id="req-1", span_attributes={"flowport.request_id": "req-1"}
        )
    finally:
        executor.close()
    assert result.ok
    found = by_name(spans())
    line = found["three_node_python"]
    assert line["parent_id"] is None
    assert line["attributes"]["flowport.request_id"] == "req-1"
    assert line["attributes"]["flowport.deployment"] == "blue"
    assert line["status"] == "UNSET"
    for node in ("to_upper", "count_words", "format_result"):
        span = found[node]
        assert span["trace_id"] == line["trace_id"]
        assert span["parent_id"] == line["span_id"]
        assert span["attributes"]["flowport.node"] == node
        assert span["attributes"]["flowport.node.type"] == "python"
        assert span["attributes"]["gen_ai.operation.name"] == "execute_tool"
        assert line["start"] <= span["start"] <= span["end"] <= line["end"]
    assert "flowport.inputs" not in line["attributes"]  # content is kept only when asked for


async def test_an_exported_line_is_freed_without_the_garbage_collector(traced: tuple[Tracing, Spans]) -> None:
    """The line span's node-span builder refers to the span: once exported, nothing keeps the line
    (its record, node runs, inputs and outputs) in a reference cycle."""
    _, spans = traced
    executor = FlowExecutor.load(FLOWS / "three_node_python")
    gc.disable()
    try:
        result = await executor.run_line({"text": "a b c"})
        line = weakref.ref(result.run)
        del result
        assert len(spans()) == 4  # exported
        assert line() is None
    finally:
        gc.enable()
        executor.close()


async def test_a_failed_node_fails_its_span_and_the_line(traced: tuple[Tracing, Spans]) -> None:
    _, spans = traced
    executor = FlowExecutor.load(FLOWS / "tool_error")
    try:
        result = await executor.run_line({"text": "bad"})
    finally:
        executor.close()
    assert not result.ok
    found = by_name(spans())
    check = found["check"]
    assert check["status"] == "ERROR"
    assert "bad value" in check["status_message"]
    [event] = check["events"]
    assert event["name"] == "exception"
    assert event["attributes"]["exception.type"] == "ValueError"
    assert event["attributes"]["exception.message"] == "bad value"
    assert found["prepare"]["status"] == "UNSET"
    line = found["tool_error"]
    assert line["status"] == "ERROR"
    assert "UserError" in line["status_message"] or "ToolExecutionError" in line["status_message"]


def chat_executor(tmp_path: Path, llm_server: LLMServer) -> FlowExecutor:
    folder = write_flow(tmp_path / "chat_flow", CHAT_FLOW, {"chat.jinja2": CHAT_TEMPLATE})
    connection = OpenAIConnection(name="llm", api_key="k", base_url=llm_server.base_url)
    return FlowExecutor.load(folder, connections={"llm": connection})


async def test_a_streamed_chat_line_has_a_genai_span_that_ends_with_the_stream(
    tmp_path: Path, llm_server: LLMServer, traced: tuple[Tracing, Spans]
) -> None:
    _, spans = traced
    executor = chat_executor(tmp_path, llm_server)
    try:
        result = await executor.run_line({"question": "one two three"}, stream=True)
        assert spans() == []  # nothing ends before the stream is read
        chunks = [chunk async for chunk in result.outputs["answer"]]
    finally:
        executor.close()
    assert "".join(chunks) == "Echo: one two three"
    found = by_name(spans())
    llm = found["chat gpt-test"]
    node, line = found["chat"], found["chat_flow"]
    assert llm["kind"] == "CLIENT"
    assert llm["parent_id"] == node["span_id"]
    assert node["parent_id"] == line["span_id"]
    attributes = llm["attributes"]
    assert attributes["gen_ai.operation.name"] == "chat"
    assert attributes["gen_ai.request.model"] == "gpt-test"
    assert attributes["gen_ai.provider.name"] == "openai"
    assert attributes["gen_ai.request.temperature"] == 0.2
    assert attributes["gen_ai.request.max_tokens"] == 50
    assert attributes["gen_ai.usage.output_tokens"] == 4
    assert attributes["gen_ai.usage.input_tokens"] > 0
    assert attributes["gen_ai.response.finish_reasons"] == ["stop"]
    assert "gen_ai.input.messages" not in attributes
    assert node["attributes"]["gen_ai.usage.output_tokens"] == 4
    assert line["attributes"]["gen_ai.usage.output_tokens"] == 4
    assert line["end"] >= llm["end"]


async def test_llm_messages_are_kept_only_when_content_is_captured(
    tmp_path: Path, llm_server: LLMServer
) -> None:
    path = tmp_path / "spans.jsonl"
    with open(path, "ab") as file:
        tracing = configure("test", {"FLOWPORT_TRACE_CONTENT": "true"}, builtin=file)
        assert tracing is not None
        executor = chat_executor(tmp_path, llm_server)
        try:
            result = await executor.run_line({"question": "hi there"})
        finally:
            executor.close()
            tracing.flush()
            tracing.shutdown()
    assert result.ok
    found = by_name(read_spans(path))
    llm = found["chat gpt-test"]["attributes"]
    assert json.loads(llm["gen_ai.input.messages"])[-1] == {"role": "user", "content": "hi there"}
    assert json.loads(llm["gen_ai.output.messages"])[0]["content"] == "Echo: hi there"
    assert json.loads(found["chat"]["attributes"]["flowport.output"]) == "Echo: hi there"


async def test_a_flex_line_has_its_entry_as_one_node(traced: tuple[Tracing, Spans]) -> None:
    _, spans = traced
    executor = load_executor(FLOWS / "flex_function")
    try:
        result = await executor.run_line({"question": "what is flex"})
    finally:
        executor.close()
    assert result.ok, result.error
    found = spans()
    [line] = [s for s in found if s["parent_id"] is None]
    [entry] = [s for s in found if s["parent_id"] == line["span_id"]]
    assert entry["attributes"]["flowport.node.type"] == "flex"


async def test_tracing_off_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "spans.jsonl"
    with open(path, "ab") as file:
        assert configure("test", {"FLOWPORT_TRACING": "off"}, builtin=file) is None
    executor = FlowExecutor.load(FLOWS / "three_node_python")
    try:
        assert (await executor.run_line({"text": "a"})).ok
    finally:
        executor.close()
    assert path.read_bytes() == b""


CLIENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_PARENT = f"00-{CLIENT_TRACE}-00f067aa0ba902b7-01"


def wait_for_trace(fp: Flowport, request_id: str, spans: int) -> dict[str, Any]:
    """The request's trace once it holds ``spans`` spans (they arrive off the request path)."""
    deadline = time.monotonic() + 30
    while True:
        found = fp.ok("GET", "/traces", params={"request_id": request_id})["value"]
        if found and found[0]["span_count"] >= spans:
            return fp.ok("GET", f"/traces/{found[0]['trace_id']}")
        assert time.monotonic() < deadline, f"no trace of {request_id} with {spans} spans: {found}"
        time.sleep(0.1)


def test_one_trace_from_the_client_through_the_gateway_to_the_instance(home: Path) -> None:
    with Flowport(home) as fp:
        fp.endpoint("traced")
        fp.deploy(
            "traced", "blue", environment_variables={"PROBE_SECRET_KEY": "s3cr3t-value", "COLOR": "blue"}
        )
        fp.traffic("traced", blue=100)
        answer = fp.score(
            "traced", {"text": "s3cr3t-value"}, **{"x-request-id": "trace-me", "traceparent": CLIENT_PARENT}
        )
        assert answer.status_code == 200
        returned = answer.headers["traceparent"]
        assert returned.startswith(f"00-{CLIENT_TRACE}-") and not returned.startswith(CLIENT_PARENT[:52])
        trace = wait_for_trace(fp, "trace-me", 3)
        assert trace["trace_id"] == CLIENT_TRACE
        assert (trace["endpoint"], trace["deployment"], trace["status"]) == ("traced", "blue", "Completed")
        spans = {span["name"]: span for span in trace["spans"]}
        gateway = spans["POST /endpoints/traced/score"]
        assert gateway["kind"] == "SERVER"
        assert gateway["parent_id"] == "00f067aa0ba902b7"  # the client's span
        assert returned == f"00-{CLIENT_TRACE}-{gateway['span_id']}-01"
        assert gateway["attributes"]["http.response.status_code"] == 200
        line = spans["probe"]
        assert line["parent_id"] == gateway["span_id"]
        assert line["attributes"]["flowport.request_id"] == "trace-me"
        assert line["attributes"]["flowport.instance"]
        node = spans["answer"]
        assert node["parent_id"] == line["span_id"]
        assert node["attributes"]["flowport.endpoint"] == "traced"
        assert "flowport.inputs" not in line["attributes"]  # no data capture: no inputs kept

        # anyone can send these: they make no trace (the store keeps a bounded number of them)
        for path, key in (("/endpoints/traced/score", "wrong"), ("/endpoints/nowhere/score", "k")):
            headers = {"authorization": f"Bearer {key}", "x-request-id": "refused"}
            refused = fp.http.post(f"{fp.url}{path}", json={}, headers=headers)
            assert refused.status_code in (401, 404)
        failed = fp.score("traced", {"fail": True}, **{"x-request-id": "trace-fail"})
        assert failed.status_code == 424
        trace = wait_for_trace(fp, "trace-fail", 3)
        assert trace["status"] == "Failed"
        assert [e["name"] for s in trace["spans"] if s["name"] == "answer" for e in s["events"]] == [
            "exception"
        ]
        metrics = fp.http.get(f"{fp.url}/metrics", headers={"authorization": f"Bearer {fp.token}"}).text
        assert "flowport_gateway_trace_spans_dropped_total 0.0" in metrics
        listed = fp.cli("trace", "list", "--endpoint", "traced", "-o", "json").stdout
        assert {t["request_id"] for t in json.loads(listed)} == {"trace-me", "trace-fail"}
        assert fp.ok("GET", "/traces", params={"request_id": "refused"})["value"] == []
        shown = fp.cli("trace", "show", "trace-fail").stdout
        assert "answer" in shown and "Failed" in shown


def test_captured_content_is_scrubbed_of_secrets(home: Path) -> None:
    with Flowport(home) as fp:
        fp.endpoint("captured")
        collector = {"collections": {"request": {"enabled": True}}, "rolling_rate": "Day"}
        fp.deploy(
            "captured",
            "blue",
            data_collector=collector,
            environment_variables={"PROBE_API_KEY": "s3cr3t-value"},
        )
        fp.traffic("captured", blue=100)
        assert (
            fp.score("captured", {"text": "say s3cr3t-value"}, **{"x-request-id": "cap"}).status_code == 200
        )
        trace = wait_for_trace(fp, "cap", 3)
        line = next(s for s in trace["spans"] if s["name"] == "probe")
        assert json.loads(line["attributes"]["flowport.inputs"])["text"] == "say ******"
        assert "s3cr3t-value" not in json.dumps(trace)


def test_flow_test_trace_prints_the_tree_and_keeps_the_spans(tmp_path: Path, home: Path) -> None:
    flow = tmp_path / "three"
    shutil.copytree(FLOWS / "three_node_python", flow)
    done = flowport("flow", "test", "--flow", str(flow), "--trace", "--inputs", "text=a b", home=home)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"result": "A B (2 words)"}
    tree = [line for line in done.stderr.splitlines() if line.startswith("  ")]
    assert [line.split()[0] for line in tree] == ["three", "to_upper", "count_words", "format_result"]
    [kept] = (flow / ".promptflow" / "traces").glob("*.traces.jsonl")
    spans = by_name(read_spans(kept))
    assert json.loads(spans["to_upper"]["attributes"]["flowport.inputs"]) == {
        "text": "a b"
    }  # local: content kept


def span_line(trace_id: str, start_seconds: float) -> bytes:
    start = int(start_seconds * 1e9)
    span = {"trace_id": trace_id, "span_id": "1" * 16, "parent_id": None, "name": "x", "start": start,
            "end": start + 1000, "status": "UNSET", "attributes": {}, "events": []}  # fmt: skip
    return json.dumps(span).encode() + b"\n"


def test_the_store_keeps_the_newest_traces_within_count_and_age(tmp_path: Path) -> None:
    folder = tmp_path / "logs" / "ep" / "blue"
    folder.mkdir(parents=True)
    now = time.time()
    old = span_line("0" * 31 + "1", now - 7200)
    recent = [span_line(f"{i:032x}", now - 60 + i) for i in range(2, 7)]
    (folder / "i1.traces.jsonl").write_bytes(old + b"".join(recent) + b'{"half": ')
    store = TraceStore(tmp_path / "logs", max_traces=3, max_age=3600)
    listed = store.list()
    assert [t["trace_id"] for t in listed] == [f"{i:032x}" for i in (6, 5, 4)]  # newest three, none too old
    with pytest.raises(ApiError):
        store.get("0" * 31 + "1")
    with open(folder / "i1.traces.jsonl", "ab") as file:  # the half line completes; a new trace arrives
        file.write(b'"line"}\n' + span_line(f"{7:032x}", now))
    assert [t["trace_id"] for t in store.list(TraceQuery(limit=1))] == [f"{7:032x}"]


def test_the_builtin_file_starts_over_past_its_limit(tmp_path: Path) -> None:
    path = tmp_path / "spans.jsonl"
    with open(path, "ab") as file:
        tracing = configure("test", {}, builtin=file)
        assert tracing is not None
        exporter = tracing.processor.exporters[0]
        exporter.limit = 4000
        executor = FlowExecutor.load(FLOWS / "three_node_python")
        try:
            for _ in range(10):
                assert (await_line(executor)).ok
                tracing.flush()
                assert path.stat().st_size <= 4000
        finally:
            executor.close()
            tracing.shutdown()
    assert read_spans(path)  # what is there is whole lines


def await_line(executor: FlowExecutor) -> Any:
    return asyncio.run(executor.run_line({"text": "a"}))


@pytest.fixture
def receiver() -> Iterator[tuple[OTLPReceiver, str]]:
    app = OTLPReceiver()
    with ThreadedServer(app) as server:
        yield app, server.url


async def test_spans_are_exported_over_otlp_http(
    tmp_path: Path, llm_server: LLMServer, receiver: tuple[OTLPReceiver, str]
) -> None:
    app, url = receiver
    tracing = configure("otlp-test", {"OTEL_EXPORTER_OTLP_ENDPOINT": url}, builtin=None)
    assert tracing is not None and tracing.exporters == ["otlp-http"]
    executor = chat_executor(tmp_path, llm_server)
    try:
        assert (await executor.run_line({"question": "exported"})).ok
    finally:
        executor.close()
        tracing.shutdown()  # exports what is queued
    assert app.requests[0] == "POST /v1/traces application/x-protobuf"
    resource, llm = app.named("chat gpt-test")
    assert resource["service.name"] == "otlp-test"
    llm_attributes = attributes(llm)
    assert llm_attributes["gen_ai.operation.name"] == "chat"
    assert llm_attributes["gen_ai.usage.output_tokens"] == 2  # "Echo: exported"
    _, node = app.named("chat")
    assert node.span_id == llm.parent_span_id and node.trace_id == llm.trace_id
    assert tracing.dropped == 0


def test_a_deployment_exports_over_otlp_when_its_variables_say_so(
    home: Path, receiver: tuple[OTLPReceiver, str]
) -> None:
    app, url = receiver
    with Flowport(home) as fp:
        fp.endpoint("exported")
        fp.deploy("exported", "blue", environment_variables={"OTEL_EXPORTER_OTLP_ENDPOINT": url})
        fp.traffic("exported", blue=100)
        assert fp.score("exported", {"text": "hi"}, **{"x-request-id": "otlp-1"}).status_code == 200
        deadline = time.monotonic() + 30
        while not any(s.name == "answer" for _, s in app.spans):
            assert time.monotonic() < deadline, app.spans
            time.sleep(0.1)
        resource, node = app.named("answer")
        assert resource["flowport.endpoint"] == "exported" and resource["flowport.deployment"] == "blue"
        line = next(s for _, s in app.spans if s.span_id == node.parent_span_id)
        assert attributes(line)["flowport.request_id"] == "otlp-1"
        # the server exports nowhere: its gateway span is in the built-in store, the instance's are not
        trace = wait_for_trace(fp, "otlp-1", 1)
        assert trace["span_count"] == 1
        [gateway] = trace["spans"]
        assert (gateway["trace_id"], gateway["span_id"]) == (line.trace_id.hex(), line.parent_span_id.hex())


def test_flow_serve_exports_over_otlp_grpc(tmp_path: Path) -> None:
    with GrpcReceiver() as grpc_receiver:
        process, url = start(
            FLOWS / "three_node_python",
            tmp_path / "home",
            OTEL_EXPORTER_OTLP_ENDPOINT=grpc_receiver.endpoint,
            OTEL_EXPORTER_OTLP_PROTOCOL="grpc",
        )
        try:
            answer = httpx.post(f"{url}/score", json={"text": "x y"}, headers={"traceparent": CLIENT_PARENT})
            assert answer.status_code == 200
            deadline = time.monotonic() + 20
            while len(grpc_receiver.spans) < 4:  # the line and its three nodes
                assert time.monotonic() < deadline, grpc_receiver.spans
                time.sleep(0.1)
        finally:
            process.terminate()
            process.wait(10)
        assert grpc_receiver.requests[0].startswith("Export OTel-OTLP-Exporter-Python")
        resource, line = grpc_receiver.named("three_node_python")
        assert resource["service.name"] == "flowport-serve"
        assert (line.trace_id.hex(), line.parent_span_id.hex()) == (CLIENT_TRACE, "00f067aa0ba902b7")
        _, node = grpc_receiver.named("count_words")
        assert node.parent_span_id == line.span_id
        assert attributes(node)["flowport.node"] == "count_words"


try:
    AZURE_INSTALLED = importlib.util.find_spec("azure.monitor.opentelemetry.exporter") is not None
except ModuleNotFoundError:  # not even the azure namespace
    AZURE_INSTALLED = False
without_azure = pytest.mark.skipif(AZURE_INSTALLED, reason="the Azure Monitor exporter is installed")


class BreezeReceiver:
    """Azure Monitor's ingestion API on loopback: ``POST /v2.1/track``, gzip'd JSON envelopes."""

    def __init__(self) -> None:
        self.envelopes: list[dict[str, Any]] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        if dict(scope["headers"]).get(b"content-encoding") == b"gzip":
            body = gzip.decompress(body)
        assert scope["path"] == "/v2.1/track", scope["path"]
        envelopes = json.loads(body)
        self.envelopes.extend(envelopes)
        answer = json.dumps({"itemsReceived": len(envelopes), "itemsAccepted": len(envelopes), "errors": []})
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": answer.encode()})


@pytest.mark.skipif(not AZURE_INSTALLED, reason="needs pip install 'flowport[azure]'")
async def test_spans_are_exported_to_azure_monitor(
    tmp_path: Path, llm_server: LLMServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # nothing goes to Azure's own endpoints (the exporter's statsbeat)
    monkeypatch.setenv("APPLICATIONINSIGHTS_STATSBEAT_DISABLED_ALL", "true")
    monkeypatch.setenv("APPLICATIONINSIGHTS_SDKSTATS_DISABLED", "true")  # its metrics to the receiver
    app = BreezeReceiver()
    with ThreadedServer(app) as server:
        key = "00000000-0000-0000-0000-000000000000"
        connection = f"InstrumentationKey={key};IngestionEndpoint={server.url}"
        tracing = configure("azure-test", {"APPLICATIONINSIGHTS_CONNECTION_STRING": connection}, builtin=None)
        assert tracing is not None and tracing.exporters == ["azure-monitor"]
        executor = chat_executor(tmp_path, llm_server)
        try:
            assert (await executor.run_line({"question": "exported"})).ok  # "Echo: exported": 2 tokens
        finally:
            executor.close()
            tracing.shutdown()
    spans = {e["data"]["baseData"]["name"]: e for e in app.envelopes if "RemoteDependency" in e["name"]}
    llm, node = spans["chat gpt-test"], spans["chat"]
    assert llm["iKey"] == key and llm["tags"]["ai.cloud.role"] == "azure-test"
    assert llm["tags"]["ai.operation.id"] == node["tags"]["ai.operation.id"]  # one trace
    assert llm["tags"]["ai.operation.parentId"] == node["data"]["baseData"]["id"]
    assert llm["data"]["baseData"]["properties"]["gen_ai.usage.output_tokens"] == "2"
    assert tracing.dropped == 0
    assert not [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]  # no traceback in the log


@without_azure
def test_app_insights_settings_say_where_traces_go() -> None:
    spec = parse_deployment(
        {
            "name": "blue",
            "model": {"path": str(FLOWS / "three_node_python")},
            "app_insights_enabled": True,
            "environment_variables": {"APPLICATIONINSIGHTS_CONNECTION_STRING": "InstrumentationKey=x"},
        }
    )
    notes = "\n".join(spec.notes)
    assert "app_insights_enabled" in notes and "flowport trace list" in notes
    assert "pip install 'flowport[azure]'" in notes  # the exporter package is not installed here


def test_azure_monitor_that_cannot_export_is_one_note_and_the_builtin_store(tmp_path: Path) -> None:
    """Without its package; with it, a connection string it rejects (the key is not a UUID)."""
    with open(tmp_path / "spans.jsonl", "ab") as file:
        tracing = configure(
            "t", {"APPLICATIONINSIGHTS_CONNECTION_STRING": "InstrumentationKey=x"}, builtin=file
        )
        assert tracing is not None
        try:
            assert tracing.exporters == ["builtin"]
            [note] = tracing.notes
            if AZURE_INSTALLED:
                assert note.startswith("APPLICATIONINSIGHTS_CONNECTION_STRING is not valid (")
            else:
                assert "azure-monitor-opentelemetry-exporter is not installed" in note
        finally:
            tracing.shutdown()


@pytest.mark.parametrize("sampled", ["01", "00"])
def test_flow_serve_follows_the_callers_flag_and_keeps_failed_lines(tmp_path: Path, sampled: str) -> None:
    """A client's trace is continued: recorded when its ``traceparent`` says sampled (``-01``);
    with ``-00`` a line that succeeds is not, one that fails still is (docs/traces.md)."""
    spans_file = tmp_path / "serve.traces.jsonl"
    process, url = start(FLOWS / "tool_error", tmp_path / "home", FLOWPORT_TRACE_FILE=str(spans_file))
    try:
        parent = CLIENT_PARENT[:-2] + sampled
        answer = httpx.post(f"{url}/score", json={"text": "fine"}, headers={"traceparent": parent})
        assert answer.status_code == 200
        returned = answer.headers.get("traceparent")
        failed = httpx.post(f"{url}/score", json={"text": "bad"}, headers={"traceparent": parent})
        assert failed.status_code >= 400
        deadline = time.monotonic() + 20
        while not any(span["status"] == "ERROR" for span in read_spans(spans_file)):
            assert time.monotonic() < deadline
            time.sleep(0.1)
    finally:
        process.terminate()
        process.wait(10)
    spans = read_spans(spans_file)
    lines = [span for span in spans if span["name"] == "tool_error"]
    assert all((line["trace_id"], line["parent_id"]) == (CLIENT_TRACE, "00f067aa0ba902b7") for line in lines)
    assert all(line["attributes"]["service.name"] == "flowport-serve" for line in lines)
    failed_line = lines[-1]
    assert failed_line["status"] == "ERROR"
    nodes = {span["name"]: span for span in spans if span["parent_id"] == failed_line["span_id"]}
    assert nodes["check"]["status"] == "ERROR"  # the failed line's nodes, even when kept late
    assert nodes["check"]["events"][0]["name"] == "exception"
    assert nodes["prepare"]["status"] == "UNSET"
    if sampled == "01":
        [ok, _] = lines
        assert ok["status"] == "UNSET"
        assert returned == f"00-{CLIENT_TRACE}-{ok['span_id']}-01"  # this hop recorded
    else:
        assert len(lines) == 1  # the line that succeeded was not recorded, nor named in its answer
        assert returned is None


def test_a_bulk_run_traces_every_line_and_trace_list_reads_the_file(tmp_path: Path, home: Path) -> None:
    flow = tmp_path / "three"
    shutil.copytree(FLOWS / "three_node_python", flow)
    data = tmp_path / "data.jsonl"
    data.write_text('{"text": "a"}\n{"text": "b c"}\n')
    done = flowport("run", "create", "--flow", str(flow), "--data", str(data), "--trace", home=home)
    assert done.returncode == 0, done.stderr
    assert "2 trace(s) kept in" in done.stderr
    [kept] = (flow / ".promptflow" / "traces").glob("*.traces.jsonl")
    listed = flowport("trace", "list", "--file", str(kept), "-o", "json", home=home)
    traces = json.loads(listed.stdout)
    assert sorted(t["line_number"] for t in traces) == [0, 1]
    assert all(t["span_count"] == 4 and t["status"] == "Completed" for t in traces)
    shown = flowport("trace", "show", traces[0]["trace_id"], "--file", str(kept), home=home)
    assert [line.split()[0] for line in shown.stdout.splitlines()[1:]] == [
        "three", "to_upper", "count_words", "format_result",
    ]  # fmt: skip
    missing = flowport("trace", "show", "0" * 32, "--file", str(kept), home=home)
    assert missing.returncode == 1 and "no trace" in missing.stderr and "Traceback" not in missing.stderr


SCORE_PY = """
import json

def init():
    pass

def run(raw_data):
    data = json.loads(raw_data)
    if data.get("fail"):
        raise ValueError("asked to fail")
    return {"echo": data.get("text")}
"""


def test_a_scoring_script_request_is_one_trace_with_the_instances_span(home: Path, tmp_path: Path) -> None:
    code = tmp_path / "src"
    code.mkdir()
    (code / "score.py").write_text(SCORE_PY)
    with Flowport(home) as fp:
        fp.endpoint("scripted")
        spec = {"code_configuration": {"code": str(code), "scoring_script": "score.py"}}
        body = fp.ok("POST", "/endpoints/scripted/deployments", params={"name": "green"}, json={"spec": spec})
        assert fp.wait(body["operation"], timeout=120)["status"] == "Succeeded"
        fp.traffic("scripted", green=100)
        answer = fp.score(
            "scripted", {"text": "hi"}, **{"x-request-id": "script-ok", "traceparent": CLIENT_PARENT}
        )
        assert answer.status_code == 200 and answer.json() == {"echo": "hi"}
        trace = wait_for_trace(fp, "script-ok", 2)
        assert trace["trace_id"] == CLIENT_TRACE
        assert (trace["endpoint"], trace["deployment"], trace["status"]) == ("scripted", "green", "Completed")
        spans = {span["name"]: span for span in trace["spans"]}
        gateway = spans["POST /endpoints/scripted/score"]
        script = spans["src"]  # named after the code folder, as a flow's line is after its flow
        assert script["parent_id"] == gateway["span_id"] and script["kind"] == "SERVER"
        attributes = script["attributes"]
        assert attributes["flowport.request_id"] == "script-ok"
        assert attributes["flowport.scoring_script"] == "score.py"
        assert attributes["http.response.status_code"] == 200
        assert (attributes["flowport.endpoint"], attributes["flowport.deployment"]) == ("scripted", "green")
        assert attributes["flowport.instance"] and "flowport.inputs" not in attributes

        failed = fp.score("scripted", {"fail": True}, **{"x-request-id": "script-fail"})
        assert failed.status_code == 424
        trace = wait_for_trace(fp, "script-fail", 2)
        assert trace["status"] == "Failed"
        script = next(s for s in trace["spans"] if s["name"] == "src")
        assert script["status"] == "ERROR" and "score.py:10" in script["status_message"]
        assert [e["name"] for e in script["events"]] == ["exception"]
        listed = fp.cli("trace", "list", "--endpoint", "scripted", "-o", "json").stdout
        assert {t["request_id"] for t in json.loads(listed)} == {"script-ok", "script-fail"}


async def test_spans_exported_over_otlp_are_scrubbed_of_secrets(
    tmp_path: Path, llm_server: LLMServer, receiver: tuple[OTLPReceiver, str]
) -> None:
    app, url = receiver
    environ = {"OTEL_EXPORTER_OTLP_ENDPOINT": url, "FLOWPORT_TRACE_CONTENT": "true"}
    tracing = configure("otlp-test", environ, scrub=masking({"s3cr3t-value"}))
    assert tracing is not None and tracing.exporters == ["otlp-http"]
    executor = chat_executor(tmp_path, llm_server)
    try:
        assert (await executor.run_line({"question": "say s3cr3t-value"})).ok
    finally:
        executor.close()
        tracing.shutdown()
    values = [str(v) for _, span in app.spans for v in attributes(span).values()]
    assert any("say ******" in v for v in values), values
    assert not any("s3cr3t-value" in v for v in values)


async def test_an_instance_scrubs_secrets_that_json_escapes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A secret with a quote or a backslash is masked in the span file, where it is JSON-escaped."""
    path = tmp_path / "spans.jsonl"
    monkeypatch.setenv("FLOWPORT_TRACE_FILE", str(path))
    monkeypatch.setenv("FLOWPORT_TRACE_CONTENT", "true")
    secret = 'pa"ss\\word-42'
    config = InstanceConfig(
        source=str(FLOWS / "three_node_python"),
        environment_variables={"DB_PASSWORD": secret},
        secret_variables=("DB_PASSWORD",),
    )
    executor = FlowExecutor.load(FLOWS / "three_node_python")
    tracing = start_tracing(config, ScoringApp(executor))
    assert tracing is not None
    try:
        assert (await executor.run_line({"text": f"x {secret}"})).ok
    finally:
        executor.close()
        tracing.shutdown()
    text = path.read_text()
    assert "x ******" in text
    assert "ss\\\\word" not in text and "ss\\\\\\\\word" not in text


def test_the_store_takes_only_well_formed_spans_and_the_instances_own_identity(tmp_path: Path) -> None:
    """Flow code can write to its instance's span file: a malformed span is skipped (never a 500),
    and a span cannot claim another endpoint or deployment than the file's."""
    folder = tmp_path / "logs" / "ep" / "blue"
    folder.mkdir(parents=True)
    now = time.time()
    good = json.loads(span_line("a" * 32, now))
    claimed = {"flowport.endpoint": "other", "flowport.deployment": "green", "flowport.request_id": "r"}
    good["attributes"] = claimed
    bad = [
        {"trace_id": "b" * 32, "span_id": "1" * 16},  # no times
        {**good, "trace_id": "c" * 32, "start": "yesterday"},
        {**good, "trace_id": "d" * 32, "attributes": ["x"]},
        {**good, "trace_id": "e" * 32, "events": "x"},
        {**good, "trace_id": "f" * 32, "span_id": 7},
        [1, 2],
    ]
    lines = [json.dumps(span).encode() + b"\n" for span in [good, *bad]]
    (folder / "i1.traces.jsonl").write_bytes(b"".join(lines))
    store = TraceStore(tmp_path / "logs")
    [listed] = store.list()
    assert (listed["trace_id"], listed["endpoint"], listed["deployment"]) == ("a" * 32, "ep", "blue")
    assert store.list(TraceQuery(endpoint="other")) == []
    assert store.get("a" * 32)["spans"][0]["attributes"]["flowport.request_id"] == "r"


def test_the_store_reads_at_most_its_limit_of_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file that grew past the read limit (flow code writing to it) costs the store only its tail."""
    import flowport.control.traces as traces

    now = time.time()
    lines = [span_line(f"{i:032x}", now - 10 + i) for i in range(1, 6)]
    monkeypatch.setattr(traces, "MAX_READ", len(lines[-1]) + 10)
    path = tmp_path / "spans.jsonl"
    path.write_bytes(b"".join(lines))
    store = TraceStore(path)
    assert [t["trace_id"] for t in store.list()] == [f"{5:032x}"]
    with open(path, "ab") as file:
        file.write(span_line(f"{6:032x}", now))
    assert [t["trace_id"] for t in store.list()] == [f"{6:032x}", f"{5:032x}"]


def test_worker_processes_never_write_spans_to_a_descriptor_they_did_not_inherit(tmp_path: Path) -> None:
    """With several workers, the trace file's descriptor number means something else in a worker
    (here: its stderr, the instance log); a worker must not write spans to it."""
    import signal
    import subprocess
    import sys

    from tests.conftest import free_port

    port = free_port()
    config = InstanceConfig(source=str(FLOWS / "three_node_python"))
    log = tmp_path / "instance.log"
    env = {**os.environ, "FLOWPORT_TRACE_FD": "2", "PROMPTFLOW_WORKER_NUM": "2"}
    with open(log, "wb") as err:
        process = subprocess.Popen(
            [sys.executable, "-m", "flowport.runtime.instance", "--port", str(port)],
            stdin=subprocess.PIPE, stderr=err, env=env,
        )  # fmt: skip
        assert process.stdin is not None
        process.stdin.write(json.dumps(config.to_json()).encode())
        process.stdin.close()
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/ready", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert process.poll() is None and time.monotonic() < deadline, log.read_text()
                time.sleep(0.05)
            for n in range(6):
                answer = httpx.post(f"http://127.0.0.1:{port}/score", json={"text": f"w {n}"})
                assert answer.status_code == 200
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(20)  # each worker exports what it has queued as it exits
    assert '"trace_id"' not in log.read_text()


async def test_a_secret_cut_by_the_content_limit_is_masked_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Content is cut at 32 KiB: a secret that straddles the cut leaves a prefix, masked as well."""
    from flowport.tracing.spans import CONTENT_LIMIT

    path = tmp_path / "spans.jsonl"
    monkeypatch.setenv("FLOWPORT_TRACE_FILE", str(path))
    monkeypatch.setenv("FLOWPORT_TRACE_CONTENT", "true")
    secret = "Zq8-secret-value-77"
    config = InstanceConfig(
        source=str(FLOWS / "three_node_python"),
        environment_variables={"DB_PASSWORD": secret},
        secret_variables=("DB_PASSWORD",),
    )
    text = "a" * (CONTENT_LIMIT - len('{"text":"') - 8) + secret  # the cut keeps its first 8 characters
    executor = FlowExecutor.load(FLOWS / "three_node_python")
    tracing = start_tracing(config, ScoringApp(executor))
    assert tracing is not None
    try:
        assert (await executor.run_line({"text": text})).ok
    finally:
        executor.close()
        tracing.shutdown()
    written = path.read_text()
    assert "aaa******..." in written
    assert secret[:8] not in written
