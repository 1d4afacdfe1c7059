"""Which traces are recorded: the rate, the caller's sampled flag, and the failed and slow ones kept."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from flowport.engine import FlowExecutor
from flowport.tracing import spans as light
from flowport.tracing.propagation import parse
from flowport.tracing.sampling import SLOW_FACTOR, Sampler, sampler_from
from flowport.tracing.setup import configure
from tests.endpoint_harness import Flowport
from tests.test_traces import CLIENT_PARENT, read_spans, wait_for_trace

FLOWS = Path(__file__).parent / "flows"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_rate_is_a_bucket_of_traces_a_second() -> None:
    clock = Clock()
    sampler = Sampler(2, clock=clock)
    assert [sampler.root(1) for _ in range(3)] == [True, True, False]
    clock.now += 0.5  # one more trace's worth
    assert [sampler.root(1) for _ in range(2)] == [True, False]
    clock.now += 60  # a quiet minute fills the bucket, no more than full
    assert [sampler.root(1) for _ in range(3)] == [True, True, False]
    assert all(Sampler().root(1) for _ in range(100))
    assert not Sampler(0).root(1)


def test_a_ratio_decides_by_trace_id() -> None:
    half = Sampler(ratio=0.5)
    assert half.root(2**63 - 1) and not half.root(2**63)
    assert half.root((7 << 64) | 1)  # the low 64 bits decide, as OpenTelemetry's ratio sampler does
    assert not Sampler(ratio=0.0).root(1)
    assert Sampler(ratio=1.0).root(2**64 - 1)


def test_a_span_is_slow_past_a_multiple_of_its_recent_mean() -> None:
    sampler = Sampler(0)
    assert not any(sampler.slow("score", 1_000_000) for _ in range(25))
    assert not sampler.slow("score", int(1_000_000 * SLOW_FACTOR * 0.9))
    assert sampler.slow("score", int(1_000_000 * SLOW_FACTOR * 3))
    assert not sampler.slow("other", 50_000_000)  # a name seen once has no mean to be slow against


@pytest.mark.parametrize(
    ("environ", "per_second", "ratio", "note"),
    [
        ({}, 10.0, None, None),
        ({"FLOWPORT_TRACE_RATE": "all"}, None, None, None),
        ({"FLOWPORT_TRACE_RATE": "2.5"}, 2.5, None, None),
        ({"FLOWPORT_TRACE_RATE": "0", "OTEL_TRACES_SAMPLER": "always_on"}, 0.0, None, None),
        ({"FLOWPORT_TRACE_RATE": "lots"}, 10.0, None, "FLOWPORT_TRACE_RATE='lots' is not a number"),
        ({"OTEL_TRACES_SAMPLER": "parentbased_always_on"}, None, None, None),
        ({"OTEL_TRACES_SAMPLER": "always_off"}, 0.0, None, None),
        ({"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.25"}, None, 0.25, None),
        ({"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "2"}, 10.0, None, "between 0"),
        ({"OTEL_TRACES_SAMPLER": "jaeger_remote"}, 10.0, None, "'jaeger_remote' is not one flowport knows"),
    ],
)
def test_the_sampler_comes_from_the_environment(
    environ: dict[str, str], per_second: float | None, ratio: float | None, note: str | None
) -> None:
    sampler, said = sampler_from(environ)
    assert (sampler.per_second, sampler.ratio) == (per_second, ratio)
    assert (said is None) == (note is None)
    if note is not None:
        assert said is not None and note in said


@pytest.fixture
def unsampled(tmp_path: Path) -> Iterator[Any]:
    """Tracing on to a built-in store file with a rate of 0: only failed, slow or a caller's
    sampled traces are recorded. Yields a function that flushes and reads the spans."""
    path = tmp_path / "spans.jsonl"
    with open(path, "ab") as file:
        tracing = configure("test", {"FLOWPORT_TRACE_RATE": "0"}, builtin=file)
        assert tracing is not None

        def spans() -> list[dict[str, Any]]:
            tracing.flush()
            return read_spans(path)

        yield spans
        tracing.shutdown()


async def test_an_unsampled_line_is_kept_only_when_it_fails(unsampled: Any) -> None:
    executor = FlowExecutor.load(FLOWS / "tool_error")
    try:
        ok = await executor.run_line({"text": "fine"}, run_id="ok")
        assert ok.ok and ok.run.traceparent is None  # no trace recorded: none to name
        assert unsampled() == []
        failed = await executor.run_line({"text": "bad"}, run_id="failed")
        assert not failed.ok
    finally:
        executor.close()
    found = unsampled()
    [line] = [span for span in found if span["parent_id"] is None]
    assert (line["name"], line["status"]) == ("tool_error", "ERROR")
    assert failed.run.traceparent == f"00-{line['trace_id']}-{line['span_id']}-01"  # kept: now sampled
    nodes = {span["name"]: span for span in found if span["parent_id"] == line["span_id"]}
    assert set(nodes) == {"prepare", "check"}
    assert {span["trace_id"] for span in found} == {line["trace_id"]}
    assert nodes["check"]["status"] == "ERROR"
    assert nodes["check"]["events"][0]["attributes"]["exception.message"] == "bad value"
    assert nodes["prepare"]["start"] >= line["start"] and nodes["check"]["end"] <= line["end"]


async def test_a_callers_sampled_flag_is_followed(unsampled: Any) -> None:
    executor = FlowExecutor.load(FLOWS / "three_node_python")
    token = light.activate(parse(CLIENT_PARENT))  # ends in -01: sampled
    try:
        result = await executor.run_line({"text": "a b"})
    finally:
        light.deactivate(token)
        executor.close()
    assert result.ok
    names = sorted(span["name"] for span in unsampled())
    assert names == ["count_words", "format_result", "three_node_python", "to_upper"]


def test_the_gateway_decides_and_keeps_what_failed(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """At a rate of 0, through the gateway: a request that succeeds leaves no trace, even when
    its client sampled it (the operator's rate decides at the edge); one that fails leaves the
    gateway's span, the line and its node; one refused as invalid leaves the gateway's span."""
    monkeypatch.setenv("FLOWPORT_TRACE_RATE", "0")
    with Flowport(home) as fp:
        fp.endpoint("rated")
        fp.deploy("rated", "blue")
        fp.traffic("rated", blue=100)
        quiet = fp.score("rated", {"text": "hi"}, **{"x-request-id": "quiet", "traceparent": CLIENT_PARENT})
        assert quiet.status_code == 200
        assert quiet.headers["traceparent"].endswith("-00")
        failed = fp.score("rated", {"fail": True}, **{"x-request-id": "loud"})
        assert failed.status_code == 424
        trace = wait_for_trace(fp, "loud", 3)
        assert trace["status"] == "Failed"
        spans = {span["name"]: span for span in trace["spans"]}
        assert set(spans) == {"POST /endpoints/rated/score", "probe", "answer"}
        gateway = spans["POST /endpoints/rated/score"]  # made after the fact: the request failed
        assert (gateway["status"], gateway["kind"]) == ("ERROR", "SERVER")
        assert gateway["attributes"]["http.response.status_code"] == 424
        assert gateway["attributes"]["flowport.endpoint"] == "rated"
        assert spans["probe"]["parent_id"] == gateway["span_id"]  # the -00 traceparent carried the ids
        invalid = fp.score("rated", [1, 2], **{"x-request-id": "invalid"})
        assert 400 <= invalid.status_code < 500
        wait_for_trace(fp, "invalid", 1)
        assert fp.ok("GET", "/traces", params={"request_id": "quiet"})["value"] == []


T, S = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"


@pytest.mark.parametrize(
    ("value", "sampled"),
    [
        (f"00-{T}-{S}-01", True),
        (f"00-{T}-{S}-00", False),
        (f"00-{T}-{S}-03", True),  # other flag bits do not matter
        (f" 00-{T}-{S}-01\n", True),
        (f"01-{T}-{S}-01-more", True),  # a later version may add fields
        (f"00-{T}-{S}-01-more", None),  # version 00 may not
        (f"ff-{T}-{S}-01", None),
        (f"00-{T.upper()}-{S}-01", None),
        (f"00-{'0' * 32}-{S}-01", None),
        (f"00-{T}-{'0' * 16}-01", None),
        (f"00-{T[:-1]}-{S}-01", None),
        (f"00-{T}-{S}-1", None),
        ("", None),
        ("garbage", None),
    ],
)
def test_a_traceparent_is_read_as_w3c_says(value: str, sampled: bool | None) -> None:
    parent = parse(value)
    if sampled is None:
        assert parent is None
    else:
        assert parent is not None and parent.remote
        assert (parent.trace_id, parent.span_id, parent.sampled) == (int(T, 16), int(S, 16), sampled)


SCRIPT = """
def init():
    pass


def run(raw_data):
    if "boom" in raw_data:
        raise ValueError("boom")
    return {"ok": True}
"""


async def test_a_scoring_script_request_is_kept_only_when_it_fails(unsampled: Any, tmp_path: Path) -> None:
    from flowport.serving.script_app import ScriptApp
    from flowport.serving.settings import ServeSettings
    from flowport.serving.user_script import UserScript

    (tmp_path / "code").mkdir()
    (tmp_path / "code" / "score.py").write_text(SCRIPT)
    app = ScriptApp(UserScript.load(tmp_path / "code", "score.py"), ServeSettings())
    async with app.app.router.lifespan_context(app.app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://instance") as client:
            ok = await client.post("/score", json={"x": 1}, headers={"x-request-id": "fine"})
            assert ok.status_code == 200 and "traceparent" not in ok.headers
            failed = await client.post("/score", json={"x": "boom"}, headers={"x-request-id": "bad"})
            assert failed.status_code == 500
    [span] = unsampled()
    assert (span["name"], span["status"], span["kind"]) == ("code", "ERROR", "SERVER")
    assert span["attributes"]["flowport.request_id"] == "bad"
    assert span["attributes"]["http.response.status_code"] == 500


def test_a_rate_under_one_a_second_still_records() -> None:
    clock = Clock()
    sampler = Sampler(0.5, clock=clock)
    assert [sampler.root(1), sampler.root(1)] == [True, False]
    clock.now += 1.0
    assert not sampler.root(1)
    clock.now += 1.0  # two seconds: one trace's worth
    assert sampler.root(1)


async def test_at_the_edge_a_client_cannot_pick_a_sampled_trace_id(tmp_path: Path) -> None:
    """A ratio decides on the trace id, except at the gateway: there a client chooses its ids."""
    with open(tmp_path / "spans.jsonl", "ab") as file:
        tracing = configure(
            "test", {"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.001"}, builtin=file
        )
        assert tracing is not None
        try:
            lucky = parse(f"00-{'0' * 31}1-{S}-01")  # low 64 bits 1: under any ratio
            assert lucky is not None
            made = [light.begin("r", {}, light.SERVER, lucky, edge=True) for _ in range(200)]
            assert sum(type(span) is light.Span for span in made) < 20
            assert type(light.begin("r", {}, light.SERVER, lucky)) is light.Span  # a hop follows its caller
        finally:
            tracing.shutdown()
