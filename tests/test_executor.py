"""The executor's behaviour: concurrency, bypass, streaming, timeouts, records and errors."""

from __future__ import annotations

import asyncio
import enum
import json
import math
import os
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from flowport.connections import CustomConnection
from flowport.engine import FlowExecutor, NodeStream, Status, inline
from flowport.engine.executor import json_ready
from flowport.engine.inline import InlinePolicy
from flowport.flow import FlowError
from tests.test_flow_definition import write_flow


def load(folder: Path, **kwargs: object) -> FlowExecutor:
    return FlowExecutor.load(folder, **kwargs)  # type: ignore[arg-type]


async def test_independent_async_nodes_run_at_the_same_time(tmp_path: Path) -> None:
    # Each node waits for the other's event: run one after the other, the line would time out.
    folder = write_flow(
        tmp_path / "f",
        """\
        outputs:
          a: {reference: "${a.output}"}
          b: {reference: "${b.output}"}
        nodes:
        - name: a
          type: python
          source: {type: code, path: a.py}
        - name: b
          type: python
          source: {type: code, path: b.py}
        """,
        {
            "sync.py": """\
                import asyncio
                EVENTS = {}
                def event(name):
                    return EVENTS.setdefault(name, asyncio.Event())
                """,
            "a.py": """\
                from flowport import tool
                from sync import event
                @tool
                async def a():
                    event("a").set()
                    await event("b").wait()
                    return "a done"
                """,
            "b.py": """\
                from flowport import tool
                from sync import event
                @tool
                async def b():
                    event("b").set()
                    await event("a").wait()
                    return "b done"
                """,
        },
    )
    result = await load(folder, line_timeout=5).run_line({})
    assert result.error is None
    assert result.outputs == {"a": "a done", "b": "b done"}


async def test_sync_tools_run_in_the_bounded_thread_pool(tmp_path: Path) -> None:
    folder = write_flow(
        tmp_path / "f",
        """\
        outputs:
          thread: {reference: "${where.output}"}
        nodes:
        - name: where
          type: python
          source: {type: code, path: where.py}
        """,
        {"where.py": "import threading\ndef where():\n    return threading.current_thread().name\n"},
    )
    executor = load(folder, worker_threads=2)
    assert executor.pool._max_workers == 2
    result = await executor.run_line({})
    assert result.outputs["thread"].startswith("flowport-tool")


BYPASS_FLOW = """\
inputs:
  go: {type: bool, default: false}
outputs:
  first: {reference: "${first.output}"}
  second: {reference: "${second.output}"}
  joined: {reference: "${joined.output}"}
  only_bypassed: {reference: "${only_bypassed.output}"}
nodes:
- name: first
  type: python
  source: {type: code, path: echo.py}
  inputs: {text: first}
  activate: {when: "${inputs.go}", is: true}
- name: second
  type: python
  source: {type: code, path: echo.py}
  inputs: {text: "${first.output}"}
- name: other
  type: python
  source: {type: code, path: echo.py}
  inputs: {text: "${inputs.go}"}
- name: joined
  type: python
  source: {type: code, path: join.py}
  inputs: {a: "${first.output}", b: "${other.output}"}
- name: only_bypassed
  type: python
  source: {type: code, path: join.py}
  inputs: {a: "${first.output}", b: "${inputs.go}"}
"""


async def test_bypass_propagates_and_defaults_fill_in(tmp_path: Path) -> None:
    folder = write_flow(
        tmp_path / "f",
        BYPASS_FLOW,
        {
            "echo.py": "def echo(text: str):\n    return text\n",
            "join.py": "def join(b: bool, a: str = 'default-a'):\n    return f'{a}/{b}'\n",
        },
    )
    executor = load(folder)
    off = await executor.run_line({"go": False})
    # joined reads a bypassed node and a live one: it runs, with the Python default for `a`.
    # only_bypassed reads flow inputs and one node, which was bypassed: it is bypassed too.
    assert off.outputs == {
        "first": None,
        "second": None,
        "joined": "default-a/False",
        "only_bypassed": None,
    }
    statuses = {name: run.status for name, run in off.run.node_runs.items()}
    assert statuses["second"] is Status.BYPASSED
    assert statuses["joined"] is Status.COMPLETED
    assert statuses["only_bypassed"] is Status.BYPASSED
    on = await executor.run_line({"go": True})
    assert on.outputs == {
        "first": "first",
        "second": "first",
        "joined": "first/True",
        "only_bypassed": "first/True",
    }


STREAM_FLOW = """\
inputs:
  text: {type: string, default: "a b c"}
outputs:
  words: {reference: "${words.output}"}
  size: {reference: "${size.output}"}
nodes:
- name: words
  type: python
  source: {type: code, path: words.py}
  inputs: {text: "${inputs.text}"}
- name: spelled
  type: python
  source: {type: code, path: words.py}
  inputs: {text: "${inputs.text}"}
- name: size
  type: python
  source: {type: code, path: size.py}
  inputs: {value: "${spelled.output}"}
"""


async def test_generator_feeding_only_an_output_streams_and_a_reader_gets_a_generator(tmp_path: Path) -> None:
    folder = write_flow(
        tmp_path / "f",
        STREAM_FLOW,
        {
            "words.py": "def words(text: str):\n    for w in text.split():\n        yield w + ' '\n",
            "size.py": "def size(value):\n    return f'{type(value).__name__}:{\"\".join(value)!r}'\n",
        },
    )
    executor = load(folder)
    streamed = await executor.run_line({}, stream=True)
    stream = streamed.outputs["words"]
    assert isinstance(stream, NodeStream)
    assert [chunk async for chunk in stream] == ["a ", "b ", "c "]
    assert streamed.outputs["size"] == "generator:'a b c '"
    assert streamed.run.node_runs["words"].status is Status.COMPLETED
    assert streamed.run.node_runs["words"].output == "a b c "
    joined = await executor.run_line({})
    assert joined.outputs == {"words": "a b c ", "size": "generator:'a b c '"}


async def test_line_timeout_cancels_running_nodes(tmp_path: Path) -> None:
    folder = write_flow(
        tmp_path / "f",
        """\
        outputs:
          out: {reference: "${slow.output}"}
        nodes:
        - name: slow
          type: python
          source: {type: code, path: slow.py}
        """,
        {
            "slow.py": """\
                import asyncio
                CANCELLED = []
                async def slow():
                    try:
                        await asyncio.sleep(30)
                    except asyncio.CancelledError:
                        CANCELLED.append(True)
                        raise
                """
        },
    )
    executor = load(folder, line_timeout=0.2)
    result = await executor.run_line({}, line_number=3)
    assert result.error is not None
    assert result.error.to_dict()["innerError"]["code"] == "LineExecutionTimeoutError"
    assert "Line 3 execution timeout" in result.error.message
    assert result.run.status is Status.FAILED
    import sys

    slow_module = next(m for n, m in sys.modules.items() if n.endswith("_slow"))
    assert slow_module.CANCELLED == [True]


async def test_pf_line_timeout_env_is_honoured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = write_flow(tmp_path / "f", "nodes: []\n")
    monkeypatch.setenv("PF_LINE_TIMEOUT_SEC", "7")
    assert load(folder).line_timeout == 7.0


async def test_a_failing_node_cancels_its_sibling_and_reports_prompt_flow_error(tmp_path: Path) -> None:
    folder = write_flow(
        tmp_path / "f",
        """\
        outputs:
          a: {reference: "${boom.output}"}
          b: {reference: "${wait.output}"}
        nodes:
        - name: boom
          type: python
          source: {type: code, path: boom.py}
        - name: wait
          type: python
          source: {type: code, path: wait.py}
        """,
        {
            "boom.py": "import asyncio\n"
            "async def boom():\n    await asyncio.sleep(0.01)\n    raise ValueError('bad value')\n",
            "wait.py": "import asyncio\nasync def wait():\n    await asyncio.sleep(30)\n",
        },
    )
    result = await load(folder, line_timeout=10).run_line({})
    assert result.error is not None
    assert result.error.response() == {
        "error": {
            "code": "UserError",
            "message": "Execution failure in 'boom': (ValueError) bad value",
            "innerError": {"code": "ToolExecutionError", "innerError": None},
        }
    }
    assert result.run.node_runs["boom"].status is Status.FAILED
    assert result.run.node_runs["wait"].status is Status.CANCELED


async def test_run_record_holds_inputs_outputs_and_times(tmp_path: Path) -> None:
    folder = write_flow(
        tmp_path / "f",
        """\
        inputs:
          text: {type: string}
        outputs:
          out: {reference: "${echo.output}"}
        nodes:
        - name: echo
          type: python
          source: {type: code, path: echo.py}
          inputs: {text: "${inputs.text}"}
        """,
    )
    result = await load(folder).run_line({"text": "hi"}, record_io=True, run_id="r1", line_number=0)
    record = result.run.to_dict()
    assert record["run_id"] == "r1"
    assert record["status"] == "Completed"
    node = record["node_runs"]["echo"]
    assert node["inputs"] == {"text": "hi"}
    assert node["output"] == "hi"
    assert node["duration"] >= 0


async def test_missing_and_mistyped_inputs_are_user_errors(tmp_path: Path) -> None:
    folder = write_flow(
        tmp_path / "f",
        """\
        inputs:
          n: {type: int}
        outputs:
          out: {reference: "${inputs.n}"}
        nodes: []
        """,
    )
    executor = load(folder)
    missing = await executor.run_line({})
    assert missing.error is not None and missing.error.inner_code == "InputNotFound"
    wrong = await executor.run_line({"n": "seven"})
    assert wrong.error is not None and wrong.error.inner_code == "InputTypeError"
    assert (await executor.run_line({"n": "7"})).outputs == {"out": 7}


async def test_environment_variables_are_set_before_tools_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FP_TEST_SOURCE", "from-env")
    folder = write_flow(
        tmp_path / "f",
        """\
        environment_variables:
          FP_TEST_LITERAL: literal
          FP_TEST_FROM_ENV: ${env:FP_TEST_SOURCE}
          FP_TEST_FROM_CONN: ${my_conn.token}
        outputs:
          out: {reference: "${read.output}"}
        nodes:
        - name: read
          type: python
          source: {type: code, path: read.py}
        """,
        {
            "read.py": """\
                import os
                def read():
                    names = ("FP_TEST_LITERAL", "FP_TEST_FROM_ENV", "FP_TEST_FROM_CONN")
                    return [os.environ[k] for k in names]
                """
        },
    )
    conn = CustomConnection(secrets={"token": "t0k"}, name="my_conn")
    try:
        result = await load(folder, connections={"my_conn": conn}).run_line({})
        assert result.outputs["out"] == ["literal", "from-env", "t0k"]
    finally:
        for key in ("FP_TEST_LITERAL", "FP_TEST_FROM_ENV", "FP_TEST_FROM_CONN"):
            os.environ.pop(key, None)


async def test_connection_typed_parameters_receive_connection_objects(tmp_path: Path) -> None:
    folder = write_flow(
        tmp_path / "f",
        """\
        outputs:
          out: {reference: "${use.output}"}
        nodes:
        - name: use
          type: python
          source: {type: code, path: use.py}
          inputs: {conn: my_conn}
        """,
        {
            "use.py": """\
                from promptflow.connections import CustomConnection
                from promptflow.core import tool
                @tool
                def use(conn: CustomConnection) -> str:
                    return f"{type(conn).__name__}:{conn.endpoint}:{conn['key']}"
                """
        },
    )
    conn = CustomConnection(configs={"endpoint": "http://e"}, secrets={"key": "k"}, name="my_conn")
    result = await load(folder, connections={"my_conn": conn}).run_line({})
    assert result.outputs["out"] == "CustomConnection:http://e:k"
    with pytest.raises(FlowError) as info:
        load(folder, connections={})
    assert info.value.code == "ConnectionNotFound"
    assert "my_conn" in info.value.message


async def test_aggregation_runs_once_over_lines_and_logs_metrics(tmp_path: Path) -> None:
    folder = write_flow(
        tmp_path / "f",
        """\
        inputs:
          x: {type: int}
        outputs:
          double: {reference: "${double.output}"}
        nodes:
        - name: double
          type: python
          source: {type: code, path: double.py}
          inputs: {x: "${inputs.x}"}
        - name: total
          type: python
          source: {type: code, path: total.py}
          inputs: {values: "${double.output}", xs: "${inputs.x}"}
          aggregation: true
        """,
        {
            "double.py": "def double(x: int):\n    return x * 2\n",
            "total.py": """\
                from promptflow import log_metric, tool
                @tool
                def total(values: list, xs: list):
                    log_metric("sum", sum(values))
                    log_metric("count", len(xs))
                    return sum(values)
                """,
        },
    )
    executor = load(folder)
    lines = [await executor.run_line({"x": x}) for x in (1, 2, 3)]
    metrics, runs, error = await executor.run_aggregation([(r.inputs, r.node_outputs) for r in lines])
    assert error is None
    assert metrics == {"sum": 12.0, "count": 3.0}
    assert runs["total"].output == 12


async def test_single_node_takes_its_inputs_directly(tmp_path: Path) -> None:
    folder = write_flow(
        tmp_path / "f",
        """\
        inputs:
          text: {type: string}
        outputs:
          out: {reference: "${second.output}"}
        nodes:
        - name: first
          type: python
          source: {type: code, path: echo.py}
          inputs: {text: "${inputs.text}"}
        - name: second
          type: python
          source: {type: code, path: echo.py}
          inputs: {text: "${first.output}"}
        """,
    )
    executor = load(folder)
    assert await executor.run_single_node("second", {"text": "direct"}) == "direct"
    assert await executor.run_single_node("second", {"first.output": "by ref"}) == "by ref"
    with pytest.raises(Exception) as info:
        await executor.run_single_node("second", {})
    assert info.value.inner_code == "InputNotFound"


async def test_concurrent_lines_share_one_executor(tmp_path: Path) -> None:
    folder = write_flow(
        tmp_path / "f",
        """\
        inputs:
          n: {type: int}
        outputs:
          out: {reference: "${sq.output}"}
        nodes:
        - name: sq
          type: python
          source: {type: code, path: sq.py}
          inputs: {n: "${inputs.n}"}
        """,
        {"sq.py": "import asyncio\nasync def sq(n: int):\n    await asyncio.sleep(0)\n    return n * n\n"},
    )
    executor = load(folder)
    results = await asyncio.gather(*(executor.run_line({"n": n}) for n in range(50)))
    assert [r.outputs["out"] for r in results] == [n * n for n in range(50)]


async def test_a_chain_of_sync_nodes_runs_in_one_thread_hop_per_line(tmp_path: Path) -> None:
    chain = write_flow(
        tmp_path / "chain",
        """\
        outputs:
          threads: {reference: "${c.output}"}
        nodes:
        - name: a
          type: python
          source: {type: code, path: tid.py}
        - name: b
          type: python
          source: {type: code, path: tid.py}
          inputs: {seen: "${a.output}"}
        - name: c
          type: python
          source: {type: code, path: tid.py}
          inputs: {seen: "${b.output}"}
        """,
        {"tid.py": "import threading\ndef tid(seen=()):\n    return [*seen, threading.get_ident()]\n"},
    )
    executor = load(chain, worker_threads=4)
    assert executor.sync_chain
    for _ in range(5):
        threads = (await executor.run_line({})).outputs["threads"]
        assert len(threads) == 3 and len(set(threads)) == 1
    wide = write_flow(
        tmp_path / "wide",
        """\
        outputs:
          a: {reference: "${a.output}"}
          b: {reference: "${b.output}"}
        nodes:
        - name: a
          type: python
          source: {type: code, path: tid.py}
        - name: b
          type: python
          source: {type: code, path: tid.py}
        """,
        {"tid.py": "import threading\ndef tid(seen=()):\n    return [threading.get_ident()]\n"},
    )
    assert not load(wide).sync_chain


async def test_chain_errors_and_streams_behave_as_the_node_path(tmp_path: Path) -> None:
    folder = write_flow(
        tmp_path / "f",
        """\
        inputs:
          text: {type: string}
        outputs:
          words: {reference: "${words.output}"}
        nodes:
        - name: check
          type: python
          source: {type: code, path: check.py}
          inputs: {text: "${inputs.text}"}
        - name: words
          type: python
          source: {type: code, path: words.py}
          inputs: {text: "${check.output}"}
        """,
        {
            "check.py": "def check(text: str):\n"
            "    if text == 'bad':\n        raise ValueError('bad value')\n    return text\n",
            "words.py": "def words(text: str):\n    for w in text.split():\n        yield w + ' '\n",
        },
    )
    executor = load(folder)
    assert executor.sync_chain
    failed = await executor.run_line({"text": "bad"})
    assert failed.error is not None
    assert failed.error.message == "Execution failure in 'check': (ValueError) bad value"
    assert failed.run.node_runs["check"].status is Status.FAILED
    streamed = await executor.run_line({"text": "x y"}, stream=True)
    assert [c async for c in streamed.outputs["words"]] == ["x ", "y "]
    assert (await executor.run_line({"text": "x y"})).outputs == {"words": "x y "}


def test_inline_policy_promotes_after_proof_and_demotes_for_good() -> None:
    policy = InlinePolicy(True, fast_seconds=0.001, proof_runs=3, demote_seconds=0.01)
    for _ in range(2):
        policy.record(0.0001, inline=False)
    policy.record(0.5, inline=False)  # one slow run resets the proof
    for _ in range(2):
        policy.record(0.0001, inline=False)
    assert not policy.inline
    policy.record(0.0001, inline=False)
    assert policy.inline
    policy.record(0.5, inline=False)  # a pool run that started before the promotion: ignored
    assert policy.inline
    policy.record(0.05, inline=True)
    assert not policy.inline and policy.demoted
    for _ in range(10):
        policy.record(0.0001, inline=False)
    assert not policy.inline
    assert InlinePolicy(False).demoted


def test_inline_policy_excuses_slow_runs_that_neither_waited_nor_worked() -> None:
    policy = InlinePolicy(True, fast_seconds=0.001, proof_runs=3, demote_seconds=0.01)
    policy.record(0.0001, inline=False)
    policy.record(0.5, inline=False, cpu=0.0001, waited=False)  # the core was taken away: the proof goes on
    policy.record(0.0001, inline=False)
    assert not policy.inline
    policy.record(0.5, inline=False, cpu=0.0001, waited=True)  # it blocked: the proof starts over
    for _ in range(2):
        policy.record(0.0001, inline=False)
    assert not policy.inline
    policy.record(0.0001, inline=False)
    assert policy.inline
    policy.record(0.05, inline=True, cpu=0.0002, waited=False)
    assert policy.inline
    policy.record(0.05, inline=True, cpu=0.03, waited=False)  # heavy once: a hiccup of the machine?
    assert policy.inline
    policy.record(0.05, inline=True, cpu=0.03, waited=False)  # heavy again: the tool itself is heavy
    assert policy.demoted and not policy.inline


def test_inline_policy_forgives_a_heavy_run_long_past() -> None:
    policy = InlinePolicy(True, fast_seconds=0.001, proof_runs=1, demote_seconds=0.01, heavy_window=3)
    policy.record(0.0001, inline=False)
    policy.record(0.05, inline=True, cpu=0.03, waited=False)
    for _ in range(3):
        policy.record(0.0001, inline=True)
    policy.record(0.05, inline=True, cpu=0.03, waited=False)  # 4 runs after the first heavy one
    assert policy.inline
    policy.record(0.05, inline=True, cpu=0.0001, waited=True)  # a run that blocked: at once
    assert policy.demoted


def test_inline_policy_sees_a_sleeping_run_as_waiting() -> None:
    policy = InlinePolicy(True, fast_seconds=0.001, proof_runs=1, demote_seconds=0.005)
    policy.finish(policy.start(), inline=False)
    assert policy.inline
    mark = policy.start()
    time.sleep(0.02)
    policy.finish(mark, inline=True)
    assert policy.demoted


def test_inline_policy_tells_a_slow_run_by_its_context_switches(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The kernel's counts decide; they are set here because a real preemption cannot be ordered."""
    counts = [(0, 0)]
    monkeypatch.setattr(inline, "_switches", lambda: counts[-1])

    def slow_run(policy: InlinePolicy, switches: tuple[int, int]) -> None:
        mark = policy.start()
        time.sleep(0.02)
        counts.append(switches)
        policy.finish(mark, inline=True)

    policy = InlinePolicy(True, fast_seconds=0.001, proof_runs=1, demote_seconds=0.005)
    policy.finish(policy.start(), inline=False)
    slow_run(policy, (0, 1))  # preempted only: excused
    slow_run(policy, (0, 2))
    assert policy.inline
    slow_run(policy, (0, 2))  # no switch at all: it computed all along, heavy once is forgiven
    assert policy.inline
    slow_run(policy, (0, 2))  # heavy again soon after: the tool is heavy
    assert policy.demoted
    policy = InlinePolicy(True, fast_seconds=0.001, proof_runs=1, demote_seconds=0.005)
    policy.finish(policy.start(), inline=False)
    slow_run(policy, (1, 2))  # a voluntary switch: it waited, at once
    assert policy.demoted


async def test_inline_runs_read_the_thread_counters_once_per_loop_iteration(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Inline runs measure from the counters read by the iteration's first run or by the last
    slow run; the next iteration (the loop may have waited in its selector) reads them again."""
    counts = [(5, 5)]
    reads: list[tuple[int, int]] = []

    def switches() -> tuple[int, int]:
        reads.append(counts[-1])
        return counts[-1]

    monkeypatch.setattr(inline, "_switches", switches)
    policy = InlinePolicy(True, fast_seconds=0.001, proof_runs=1, demote_seconds=0.005)
    policy.record(0.0001, inline=False)
    assert policy.inline

    def slow(switches: tuple[int, int]) -> str:
        time.sleep(0.02)
        counts.append(switches)
        return "slow"

    async def one_iteration() -> None:
        for _ in range(50):
            assert policy.call(lambda: "fast", {}, True) == "fast"
        assert len(reads) == 1  # the first run read them
        counts.append((9, 9))  # the loop waited between iterations: it is not the runs' doing
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        policy.call(lambda: "fast", {}, True)
        assert len(reads) == 2 and policy.inline
        policy.call(slow, {"switches": (9, 10)}, True)  # preempted only: excused
        assert policy.inline and len(reads) == 3
        policy.call(slow, {"switches": (9, 11)}, True)  # measured from the last slow run
        assert policy.inline and len(reads) == 4
        policy.call(slow, {"switches": (10, 11)}, True)  # it waited: at once
        assert policy.demoted

    await one_iteration()


def _round_trip(value: Any) -> Any:
    try:
        return orjson.loads(orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS))
    except TypeError:
        return json.loads(json.dumps(value, ensure_ascii=False))


def _same(a: Any, b: Any) -> bool:
    """Equal, type for type, NaN equal to NaN."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    return bool(a == b)


def test_json_ready_gives_what_a_json_round_trip_gives() -> None:
    class Color(enum.StrEnum):
        RED = "red"

    nested: list[Any] = []
    for _ in range(300):
        nested = [nested]
    values = [
        ["a", "b"], [1, 2.5, True, None, "x"], [-0.0, 1e300], [2**70, "big"], ["\ud800", "é"],
        {"a": [1, {"b": [2.0, None]}], "c": {}}, [[]], [{}], [("t", 1)], [1, float("nan")],
        [float("inf"), 2**70], {"k": float("-inf")}, {1: "one", "1": "string"}, [Color.RED],
        [True, 1, 1.0], {"x": (1, 2)}, nested, [[[["deep"]]]],
    ]  # fmt: skip
    for value in values:
        ready = json_ready("out", value)
        assert _same(ready, _round_trip(value)), value
        if isinstance(value, list | dict):
            assert ready is not value  # a copy: the tool may change its own afterwards


async def test_fast_chains_go_inline_and_slow_ones_stay_in_threads(tmp_path: Path) -> None:
    folder = write_flow(
        tmp_path / "f",
        """\
        inputs:
          delay: {type: double, default: 0}
        outputs:
          where: {reference: "${b.output}"}
        nodes:
        - name: a
          type: python
          source: {type: code, path: a.py}
          inputs: {delay: "${inputs.delay}"}
        - name: b
          type: python
          source: {type: code, path: b.py}
          inputs: {x: "${a.output}"}
        """,
        {
            "a.py": "import time\ndef a(delay: float):\n    time.sleep(delay)\n    return delay\n",
            "b.py": "import threading\ndef b(x):\n    return threading.current_thread().name\n",
        },
    )
    executor = load(folder)
    # generous thresholds: the test is about the policy, not the machine's speed under load
    executor.inline_policy = InlinePolicy(True, fast_seconds=1.0, proof_runs=3, demote_seconds=0.15)
    seen = [(await executor.run_line({})).outputs["where"] for _ in range(5)]
    assert seen[0].startswith("flowport-tool")
    assert seen[-1] == "MainThread"
    slow = await executor.run_line({"delay": 0.3})
    assert slow.ok and slow.outputs["where"] == "MainThread"  # ran inline once, then demoted
    assert executor.inline_policy.demoted
    assert (await executor.run_line({})).outputs["where"].startswith("flowport-tool")


async def test_a_tool_that_starts_its_own_event_loop_leaves_inline_mode(tmp_path: Path) -> None:
    folder = write_flow(
        tmp_path / "f",
        """\
        inputs:
          nested: {type: bool, default: false}
        outputs:
          out: {reference: "${run.output}"}
        nodes:
        - name: run
          type: python
          source: {type: code, path: run.py}
          inputs: {nested: "${inputs.nested}"}
        """,
        {
            "run.py": "import asyncio\nfrom flowport import tool\n"
            "async def inner():\n    return 'nested ok'\n"
            "@tool\ndef run(nested: bool):\n"
            "    if not nested:\n        return 'plain'\n"
            "    coro = inner()\n"
            "    try:\n        return asyncio.run(coro)\n"
            "    except RuntimeError:\n        coro.close()\n        raise\n"
        },
    )
    executor = load(folder)
    executor.inline_policy = InlinePolicy(True, fast_seconds=1.0, proof_runs=2)
    for _ in range(2):
        assert (await executor.run_line({})).outputs == {"out": "plain"}
    assert executor.inline_policy.inline
    failed = await executor.run_line({"nested": True})
    assert failed.error is not None and "event loop" in failed.error.message
    assert executor.inline_policy.demoted
    assert (await executor.run_line({"nested": True})).outputs == {"out": "nested ok"}


def test_a_package_tool_that_is_not_installed_is_named_with_its_line_and_the_fix(tmp_path: Path) -> None:
    folder = write_flow(
        tmp_path / "f",
        """\
        outputs:
          out: {type: string, reference: '${search.output}'}
        nodes:
        - name: search
          type: python
          source: {type: package, tool: promptflow.tools.serpapi.SerpAPI.search}
          inputs: {query: x}
        """,
    )
    with pytest.raises(FlowError) as info:
        load(folder, connections={})
    assert info.value.code == "PackageToolNotFoundError"  # prompt flow's code
    [problem] = info.value.problems
    assert problem.line == 4
    assert problem.message.startswith(
        "node 'search': package tool 'promptflow.tools.serpapi.SerpAPI.search' is not installed"
    )
    assert "module 'promptflow'" in problem.message and "requirements.txt" in problem.message


def test_the_model_check_knows_the_built_in_package_tools(tmp_path: Path) -> None:
    from flowport.engine.check import check_flow
    from tests.conftest import FLOWS

    for name in ("package_embedding", "package_llm_tools", "package_llm_tool"):
        assert check_flow(FLOWS / name, has_requirements=False) == []
    folder = write_flow(
        tmp_path / "f",
        """\
        outputs:
          out: {type: string, reference: '${search.output}'}
        nodes:
        - name: search
          type: python
          source: {type: package, tool: my_tools.search}
          inputs: {query: x}
        """,
    )
    [problem] = check_flow(folder, has_requirements=False)
    assert problem.code == "PackageToolNotFoundError" and "my_tools.search" in problem.message
    assert "requirements.txt" in problem.message
    assert check_flow(folder, has_requirements=True) == []  # requirements.txt may install it
