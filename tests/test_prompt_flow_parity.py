"""Flows in prompt flow's format give the outputs prompt flow 1.18.5 gives.

Every case under tests/flows/*/cases.json was recorded once by running prompt flow
1.18.5 itself (``pf flow test`` / ``pf run create``, in a separate virtualenv, against
this project's test LLM server for LLM nodes); each case names the command in
``pf_command`` and its origin in ``source``. Here the same flow runs in flowport,
without prompt flow installed, and must give the same outputs or the same error.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from flowport.connections import ConnectionResolver, ConnectionService
from flowport.engine import ExecutionError, FlowExecutor, load_executor
from flowport.engine.bulk import BulkRunner, read_jsonl
from flowport.flow import FlowError
from flowport.testing.llm_server import LLMServer
from tests.conftest import FLOWS


def _cases() -> list[Any]:
    params = []
    for cases_file in sorted(FLOWS.glob("*/cases.json")):
        if cases_file.parent.name.startswith("image_"):
            continue  # pf wrote their output images to files: tests/test_images.py compares those
        for case in json.loads(cases_file.read_text()):
            if "expected" in case or "expected_error" in case or case.get("kind") == "bulk":
                params.append(
                    pytest.param(cases_file.parent, case, id=f"{cases_file.parent.name}-{case['id']}")
                )
    return params


async def _run_flex_case(flow: Path, case: dict[str, Any], resolver: ConnectionResolver) -> Any:
    """A flex flow case: the flow as ``pf flow test`` ran it (``flow_arg``, from its folder)."""
    source = case.get("flow_arg", flow)
    executor = load_executor(
        source if source == flow else str(source), init=case.get("init"), connections=resolver
    )
    try:
        inputs = case["inputs"] or executor.definition.sample_inputs
        result = await executor.run_line(inputs)
        if result.error is not None:
            raise result.error
        return result.outputs
    finally:
        executor.close()


NEEDS_TOOL_PACKAGE = "package_installed"
"""In the names of flows whose tools come from tests/tool_packages/my_tools, installed as pf's
recording had it."""
FLEX_LIKE = ("flex_", "err_flex_", "prompty_")
"""Flows run as flex flows are (prompty files too): from their folder, as ``pf flow test`` ran them."""


async def _run_case(flow: Path, case: dict[str, Any], resolver: ConnectionResolver) -> Any:
    if flow.name.startswith(FLEX_LIKE):
        return await _run_flex_case(flow, case, resolver)
    executor = FlowExecutor.load(
        flow,
        variant=case.get("variant"),
        connections=resolver,
        environment_variables=case.get("environment_variables"),
    )
    try:
        if case.get("node"):
            return await executor.run_single_node(case["node"], case["inputs"])
        result = await executor.run_line(case["inputs"], line_number=0)
        if result.error is not None:
            raise result.error
        if "expected_metrics" in case:
            metrics, _, error = await executor.run_aggregation([(result.inputs, result.node_outputs)])
            assert error is None
            assert metrics == case["expected_metrics"]
        return result.outputs
    finally:
        executor.close()


def line_statuses(run_dir: Path) -> list[dict[str, Any]]:
    """Each line's status and error in a flowport run folder, as the bulk cases record pf's."""
    details = [json.loads(x) for x in (run_dir / "details.jsonl").read_text().splitlines()]
    return [
        {
            "line_number": d["line_number"],
            "status": d["status"],
            "error_code": (d["error"] or {}).get("code"),
            "error_message": (d["error"] or {}).get("message"),
        }
        for d in sorted(details, key=lambda d: d["line_number"])
    ]


@pytest.mark.parametrize(("flow", "case"), _cases())
async def test_same_outputs_as_prompt_flow(
    flow: Path,
    case: dict[str, Any],
    openai_connection: ConnectionService,
    llm_server: LLMServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> None:
    for key, value in (case.get("env") or {}).items():
        monkeypatch.setenv(
            key, value.replace("{base_url}", llm_server.base_url).replace("{url}", llm_server.url)
        )
    if flow.name.startswith(FLEX_LIKE):
        monkeypatch.chdir(flow)  # pf flow test ran from the flow's folder
    if NEEDS_TOOL_PACKAGE in flow.name:
        request.getfixturevalue("tool_package")
    resolver = ConnectionResolver(openai_connection)
    if "flowport" in case:  # a documented, deliberate difference: the case says why
        override = case["flowport"]
        if "tested_in" in override:  # an answer that changes per call: checked field by field there
            pytest.skip(f"flowport differs on purpose; tested in {override['tested_in']}")
        case = {**case, **override}
        if "expected" in override:
            case.pop("expected_error", None)
    if "expected_error" in case:
        expected = case["expected_error"]
        with pytest.raises((FlowError, ExecutionError)) as info:
            await _run_case(flow, case, resolver)
        error = info.value
        if "exception" in expected:  # flex flows: pf's printed exception name and message
            if isinstance(error, ExecutionError):
                assert error.message == expected["message"]
            else:
                assert any(
                    p.code == expected["exception"] and p.message in expected["message"]
                    for p in error.problems
                )
            return
        if isinstance(error, ExecutionError):
            # Errors raised while running a line carry prompt flow's code and message.
            assert error.code == expected["code"]
            assert error.message == expected["message"]
        else:
            # Errors found before running carry prompt flow's code, and a message with file and line.
            pf_codes = {expected.get("code"), expected.get("inner_code"), *expected.get("inner_codes", [])}
            assert {p.code for p in error.problems} & pf_codes, (error.problems, pf_codes)
        return
    if case.get("kind") == "bulk":
        executor = load_executor(
            case.get("flow_arg", flow),
            variant=case.get("variant"),
            init=case.get("init"),
            connections=resolver,
        )
        try:
            summary = await BulkRunner(executor, concurrency=4).run(
                read_jsonl(flow / case["data"]), tmp_path / "run", column_mapping=case.get("column_mapping")
            )
        finally:
            executor.close()
        lines = [json.loads(x) for x in (tmp_path / "run" / "outputs.jsonl").read_text().splitlines()]
        assert sorted(lines, key=lambda x: x["line_number"]) == case["expected_outputs"]
        assert summary.metrics == case["expected_metrics"]
        assert line_statuses(tmp_path / "run") == case["expected_line_status"]
        expected_error = case.get("expected_run_error")
        assert (summary.error or {}).get("message") == (expected_error or {}).get("message")
        return
    httpx.delete(f"{llm_server.url}/_requests")
    assert await _run_case(flow, case, resolver) == case["expected"]
    if isinstance(case.get("llm_requests"), list):
        # The requests prompt flow sent to the LLM server, field by field. flowport runs
        # independent nodes at once, so their requests may come in another order.
        sent = httpx.get(f"{llm_server.url}/_requests").json()
        pairs = [{"path": r["path"], "body": r["body"]} for r in sent]
        recorded = [{"path": r["path"], "body": r["body"]} for r in case["llm_requests"]]
        # Compared as a multiset by equality (prompt flow's tools send 1 where its llm nodes send 1.0).
        unmatched = list(pairs)
        for request in recorded:
            assert request in unmatched, (request, unmatched)
            unmatched.remove(request)
        assert not unmatched
