"""flowport's scoring app answers as prompt flow 1.18.5's ``pf flow serve`` did.

Each file under tests/serve_recordings/fastapi/ is one real exchange with ``pf flow serve
--engine fastapi`` (see that folder's README). Here the same request goes to flowport's app
serving the same flow, and the status and body must match: JSON compared as data, server-sent
events byte for byte. Where flowport answers differently on purpose, DIFFERENCES says why.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from flowport.connections import OpenAIConnection, apply_env_overrides
from flowport.engine import load_executor, parse_init
from flowport.serving import ScoringApp, ServeSettings
from flowport.testing.llm_server import LLMServer
from flowport.testing.threaded_server import ThreadedServer

TESTS = Path(__file__).parent
RECORDINGS = TESTS / "serve_recordings" / "fastapi"

# What flowport answers differently on purpose, and why. Each key is a recording's name.
_OUR_VERSION = "flowport reports its own version (and BUILD_INFO's build_number), not prompt flow's"
_ACCEPT_PARAMS = (
    "media type parameters (q=...) are ignored, as prompt flow's flask engine does; its fastapi "
    "engine refuses them with 406"
)
_OBJECT_BODY = (
    "a JSON body that is not an object (array, string, number, null) is a 400 naming the problem; "
    "prompt flow answers 500 with a Python error or a confusing message"
)
_BAD_UTF8 = "a body that is not UTF-8 is the client's mistake: 400, where prompt flow answers 500"
_INIT_CONFIG = (
    "flowport's server builds a class entry with PROMPTFLOW_FLOW_INIT_CONFIG; `pf flow serve` 1.18.5 "
    "ignores it (the class defaults apply)"
)
DIFFERENCES: dict[str, str] = {
    "chat_llm__score_accept_sse_q": _ACCEPT_PARAMS,
    "chat_llm__score_accept_sse_q_with_json": _ACCEPT_PARAMS,
    "stream_mixed__score_accept_sse_q": _ACCEPT_PARAMS,
    "three_node_python__score_accept_application_json_q": _ACCEPT_PARAMS,
    "three_node_python__score_accept_text_html_q": _ACCEPT_PARAMS,
    "input_types__score_json_array": _OBJECT_BODY,
    "input_types__score_json_null": _OBJECT_BODY,
    "input_types__score_json_string": _OBJECT_BODY,
    "single_required__score_json_array": _OBJECT_BODY,
    "single_required__score_json_null": _OBJECT_BODY,
    "single_required__score_json_number": _OBJECT_BODY,
    "single_required__score_json_string": _OBJECT_BODY,
    "three_node_python__score_json_array": _OBJECT_BODY,
    "three_node_python__score_json_number": _OBJECT_BODY,
    "three_node_python__score_json_string": _OBJECT_BODY,
    "single_required__score_invalid_utf8": _BAD_UTF8,
    "three_node_python__score_invalid_utf8_raw": _BAD_UTF8,
    "three_node_python__score_invalid_utf8_in_json": _BAD_UTF8,
    "three_node_python__build_info__get_health": _OUR_VERSION,
    "three_node_python__build_info__get_version": _OUR_VERSION,
    "three_node_python__build_info_not_json__get_version": _OUR_VERSION,
    "three_node_python__get_health": _OUR_VERSION,
    "three_node_python__get_health_x_request_id": _OUR_VERSION,
    "three_node_python__get_version": _OUR_VERSION,
    "stream_error__health_after": _OUR_VERSION,
    "three_node_python__get_metrics": "flowport serves Prometheus metrics at /metrics; prompt flow has none",
    "three_node_python__get_openapi_json": "FastAPI's own /openapi.json is not served; /swagger.json is",
    "three_node_python__get_root": "the chat page at / is not served (the studio replaces it)",
    "three_node_python__post_root": "the chat page at / is not served (the studio replaces it)",
    "three_node_python__get_static_index": "the chat page at / is not served (the studio replaces it)",
    "nan_output__score_nan": "NaN and infinities in outputs are written as null; prompt flow answers 500",
    "nan_output__score_inf": "NaN and infinities in outputs are written as null; prompt flow answers 500",
    "stream_error__json": "a generator that raises is the tool's error (400 naming the node); prompt flow "
    "answers 500 'can only join an iterable'",
    "stream_error__sse": "a stream that fails midway ends with an 'event: error' frame holding the error; "
    "prompt flow ends the body as if the answer were complete",
    "streaming_shared__json": "a generator read by a node and an output gives both all its items",
    "streaming_shared__sse": "a generator read by a node and an output gives both all its items",
    "literals__score_no_inputs_garbage_body": "untyped literals arrive as plain float/str, not ruamel types",
    "literals__score_no_inputs_with_input": "untyped literals arrive as plain float/str, not ruamel types",
    "env_vars__cli_environment_variables__score": "${env:VAR} in environment_variables is resolved",
    "env_vars__process_env__score": "${env:VAR} in environment_variables is resolved",
    "flex_function__score_bad_int": "a flex flow's inputs are converted by the entry's annotations, as "
    "`pf flow test` does (400 InputTypeError); pf's server passes the string on and answers 500",
    "flex_chat__get_swagger": "a flex flow whose YAML marks is_chat_input/is_chat_output is a chat flow: its "
    "swagger carries the chat markers (and it gets /v1/chat/completions); pf flow serve leaves them out",
    "prompty_chat_history__get_swagger": "a chat flex flow (here serving a chat prompty) has all its chat "
    "markers in swagger (x-flow-type, x-chat-input, x-chat-history); pf flow serve gives only x-chat-output",
    "prompty_chat_history__chat_completions": "chat flows, flex flows and prompty files answer the OpenAI "
    "chat API at /v1/chat/completions; pf flow serve has no such route (404)",
    "flex_generator__init_env__json": _INIT_CONFIG,
    "flex_generator__init_env__sse": _INIT_CONFIG,
}


def _recordings() -> list[Any]:
    params = []
    for path in sorted(RECORDINGS.glob("*.json")):
        record = json.loads(path.read_text())
        reason = DIFFERENCES.get(path.stem)
        marks = [pytest.mark.skip(reason=f"deliberate difference: {reason}")] if reason else []
        params.append(pytest.param(record, id=path.stem, marks=marks))
    return params


@pytest.fixture(scope="module")
def apps(llm_server: LLMServer) -> Iterator[dict[str, ThreadedServer]]:
    servers: dict[str, ThreadedServer] = {}
    yield servers
    for server in servers.values():
        server.stop()


SERVER_SETTINGS = {"PF_DISABLE_TRACING", "PROMPTFLOW_RESPONSE_INCLUDED_FIELDS"}


def _start(record: dict[str, Any], llm: LLMServer) -> ThreadedServer:
    """Serve the recording's flow as ``flowport flow serve`` would, in this process's environment."""
    flow = TESTS / record["flow"]
    if not flow.exists():
        flow = TESTS / "flows" / Path(record["flow"]).name
    stored = OpenAIConnection(name="open_ai_connection", api_key="test-key", base_url=llm.base_url)
    connection = apply_env_overrides("open_ai_connection", stored, {})
    args = record.get("serve_args") or []
    init = parse_init(args[1:]) if args[:1] == ["--init"] else None
    executor = load_executor(
        flow, init=init, connections={"open_ai_connection": connection}, process_environment_wins=True
    )
    app = ScoringApp(executor, ServeSettings.from_env(record.get("env", {})))
    return ThreadedServer(app, lifespan="on").start()


def _server(
    servers: dict[str, ThreadedServer],
    record: dict[str, Any],
    llm: LLMServer,
    monkeypatch: pytest.MonkeyPatch,
) -> ThreadedServer:
    """A server for the recording: shared when only serving settings differ, else its own."""
    env = record.get("env", {})
    process_env = {k: v for k, v in env.items() if k not in SERVER_SETTINGS}
    if (
        process_env or record["flow"].startswith("flows/flex_") or record.get("serve_args")
    ):  # flex flows: their variables per test
        for key, value in process_env.items():
            monkeypatch.setenv(key, value)
        server = _start(record, llm)
        servers[f"{record['flow']}:{id(server)}:own"] = server
        return server
    key = f"{record['flow']}:{json.dumps(env, sort_keys=True)}"
    if key not in servers:
        servers[key] = _start(record, llm)
    return servers[key]


def _body(request: dict[str, Any]) -> bytes:
    if request.get("body_base64"):
        return base64.b64decode(request["body_base64"])
    if request.get("body_python_expr"):
        return str(eval(request["body_python_expr"])).encode()
    return (request.get("body") or "").encode()


@pytest.mark.parametrize("record", _recordings())
def test_same_answer_as_pf_flow_serve(
    record: dict[str, Any],
    apps: dict[str, ThreadedServer],
    llm_server: LLMServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server = _server(apps, record, llm_server, monkeypatch)
    request = record["request"]
    headers = {
        k: v
        for k, v in request["headers"].items()
        if k.lower() not in ("host", "content-length", "connection")
    }
    response = httpx.request(
        request["method"], server.url + request["path"], headers=headers, content=_body(request), timeout=30
    )
    expected = record["response"]
    assert response.status_code == expected["status"], response.text
    content_type = expected["headers"].get("content-type", "")
    if content_type.startswith("application/json"):
        assert response.json() == json.loads(expected["body"])
    elif content_type.startswith("text/event-stream"):
        assert response.text == expected["body"]
