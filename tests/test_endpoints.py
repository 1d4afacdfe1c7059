"""Online endpoints end to end: the server, real instance processes, the gateway, the CLI.

Runs against SQLite and, with FLOWPORT_TEST_DATABASE_URL, PostgreSQL.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from flowport.control.sessions import COOKIE
from flowport.testing.llm_server import LLMServer
from tests.endpoint_harness import AZURE, FLOWS, Flowport


@pytest.fixture
def flowport(home: Path, database_url: str) -> Iterator[Flowport]:
    with Flowport(home, database_url) as server:
        yield server


@pytest.fixture
def sqlite_flowport(home: Path) -> Iterator[Flowport]:
    with Flowport(home) as server:
        yield server


def test_the_azure_guide_end_to_end_with_the_cli_and_a_restart(
    flowport: Flowport, llm_server: LLMServer, tmp_path: Path
) -> None:
    """The guide's three YAML files, unchanged: model, endpoint, blue deployment, invoke."""
    flowport.ok(
        "PUT",
        "/connections/open_ai_connection",
        json={"type": "open_ai", "api_key": "sk-test", "base_url": llm_server.base_url},
    )
    model = json.loads(flowport.cli("model", "create", "--file", str(AZURE / "model.yaml")).stdout)
    assert (model["name"], model["version"]) == ("blue-chat-model", "1")
    assert model["properties"]["azureml.promptflow.mode"] == "chat"

    created = flowport.cli("online-endpoint", "create", "--file", str(AZURE / "endpoint.yml"))
    endpoint = json.loads(created.stdout)
    assert endpoint["scoring_uri"] == f"{flowport.url}/endpoints/basic-chat-endpoint/score"
    assert "note: properties" in created.stderr

    deployed = flowport.cli(
        "online-deployment", "create", "--file", str(AZURE / "blue-deployment.yml"), "--all-traffic"
    )
    deployment = json.loads(deployed.stdout)
    assert deployment["provisioning_state"] == "Succeeded"
    assert deployment["model"] == "azureml:blue-chat-model:1"
    assert "note: instance_type" in deployed.stderr
    shown = json.loads(flowport.cli("endpoint", "show", "-n", "basic-chat-endpoint").stdout)
    assert shown["traffic"] == {"blue": 100}
    assert "primaryKey" not in json.dumps(shown)

    request = tmp_path / "request.json"
    request.write_text(json.dumps({"question": "What is flowport?", "chat_history": []}))
    answer = json.loads(
        flowport.cli(
            "online-endpoint", "invoke", "-n", "basic-chat-endpoint", "--request-file", str(request)
        ).stdout
    )
    # PROMPTFLOW_RESPONSE_INCLUDED_FIELDS in the deployment keeps only the answer
    assert answer == {"answer": "Echo: What is flowport?"}

    keys = json.loads(flowport.cli("online-endpoint", "get-credentials", "-n", "basic-chat-endpoint").stdout)
    flowport.restart()
    # nothing is lost: the endpoint, its keys, the deployment and its instances come back
    deadline_response = _until_ok(
        lambda: flowport.score("basic-chat-endpoint", {"question": "again?"}, key=keys["secondaryKey"])
    )
    assert deadline_response.json() == {"answer": "Echo: again?"}
    assert deadline_response.headers["azureml-model-deployment"] == "blue"


def _until_ok(call: Callable[[], httpx.Response], attempts: int = 300) -> httpx.Response:
    response = call()
    for _ in range(attempts):
        if response.status_code == 200:
            return response
        time.sleep(0.05)
        response = call()
    return response


def test_keys_authenticate_and_regenerate_one_at_a_time(sqlite_flowport: Flowport) -> None:
    fp = sqlite_flowport
    fp.endpoint("keyed")
    fp.deploy("keyed", "blue")
    assert fp.traffic("keyed", blue=100).status_code == 200
    old = fp.ok("POST", "/endpoints/keyed/credentials")
    answer = fp.score("keyed", {"text": "a"}, key=old["primaryKey"]).json()
    assert answer == {"echoed": "a", "color": "flow-default"}  # the flow's own variable
    assert fp.score("keyed", {"text": "a"}, key="").status_code == 401
    assert fp.score("keyed", {"text": "a"}, key="not-the-key").status_code == 401

    fp.cli("online-endpoint", "regenerate-keys", "-n", "keyed", "--key-type", "primary")
    new = fp.ok("POST", "/endpoints/keyed/credentials")
    assert new["primaryKey"] != old["primaryKey"]
    assert new["secondaryKey"] == old["secondaryKey"]
    assert fp.score("keyed", {"text": "b"}, key=old["primaryKey"]).status_code == 401
    assert fp.score("keyed", {"text": "b"}, key=old["secondaryKey"]).status_code == 200
    assert fp.score("keyed", {"text": "b"}, key=new["primaryKey"]).status_code == 200


def test_token_auth_issues_expiring_tokens(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLOWPORT_TOKEN_TTL_SECONDS", "2")
    with Flowport(home) as fp:
        fp.endpoint("tokened", auth_mode="aml_token")
        fp.deploy("tokened", "blue")
        fp.traffic("tokened", blue=100)
        credentials = fp.ok("POST", "/endpoints/tokened/credentials")
        assert set(credentials) >= {"accessToken", "expiryTimeUtc", "refreshAfterTimeUtc"}
        token = credentials["accessToken"]
        assert fp.score("tokened", {"text": "t"}, key=token).status_code == 200
        other = fp.ok("POST", "/endpoints", json={"spec": {"name": "other", "auth_mode": "aml_token"}})
        assert other["endpoint"]["auth_mode"] == "aml_token"
        time.sleep(3)
        expired = fp.score("tokened", {"text": "t"}, key=token)
        assert expired.status_code == 401


def test_a_token_dies_with_its_endpoint(home: Path) -> None:
    """A token names the endpoint's incarnation: a re-created endpoint of the same name refuses it."""
    with Flowport(home) as fp:
        fp.endpoint("reborn", auth_mode="aml_token")
        old = fp.ok("POST", "/endpoints/reborn/credentials")["accessToken"]
        # No deployment yet: a valid token gets past auth to "no deployment receives traffic".
        assert fp.score("reborn", {}, key=old).json()["error"]["code"] == "NoDeploymentWithTraffic"
        assert fp.wait(fp.ok("DELETE", "/endpoints/reborn")["operation"])["status"] == "Succeeded"
        fp.endpoint("reborn", auth_mode="aml_token")
        refused = fp.score("reborn", {}, key=old)
        assert refused.status_code == 401
        assert "earlier endpoint of the same name" in refused.json()["error"]["message"]
        fresh = fp.ok("POST", "/endpoints/reborn/credentials")["accessToken"]
        assert fp.score("reborn", {}, key=fresh).json()["error"]["code"] == "NoDeploymentWithTraffic"

        # An endpoint stored before incarnations existed gets one on its first read and keeps it.
        fp.stop()
        with fp.documents("endpoints") as rows:
            row = rows.get(name="reborn")
            fields = {
                k: v for k, v in row.items() if k not in ("name", "secrets", "created_at", "updated_at")
            }
            del fields["incarnation"]
            rows.put({"name": "reborn"}, fields)
        fp.start()
        token = fp.ok("POST", "/endpoints/reborn/credentials")["accessToken"]
        assert fp.score("reborn", {}, key=token).json()["error"]["code"] == "NoDeploymentWithTraffic"
        with fp.documents("endpoints") as rows:
            assert rows.get(name="reborn")["incarnation"]
        fp.restart()
        assert fp.score("reborn", {}, key=token).json()["error"]["code"] == "NoDeploymentWithTraffic"
        assert fp.score("reborn", {}, key=fresh).status_code == 401


def test_the_api_description_needs_the_admin_token_or_a_session(sqlite_flowport: Flowport) -> None:
    fp = sqlite_flowport
    for path in ("/openapi.json", "/docs"):
        refused = fp.http.get(f"{fp.url}/api/v1{path}")
        assert refused.status_code == 401, path
        assert refused.json()["error"]["code"] == "Unauthorized"
    assert fp.http.get(f"{fp.url}/api/v1/redoc").status_code == 404
    schema = fp.api("GET", "/openapi.json")
    assert schema.status_code == 200 and "/endpoints" in schema.json()["paths"]
    assert "/openapi.json" not in schema.json()["paths"]
    page = fp.api("GET", "/docs")
    assert page.status_code == 200 and "/api/v1/openapi.json" in page.text
    with httpx.Client(base_url=fp.url) as browser:
        assert browser.post("/api/v1/sessions", json={"token": fp.token}).status_code == 200
        assert COOKIE in browser.cookies
        assert browser.get("/api/v1/openapi.json").status_code == 200
        assert browser.get("/api/v1/docs").status_code == 200


def test_traffic_rules_and_status_codes(sqlite_flowport: Flowport) -> None:
    fp = sqlite_flowport
    fp.endpoint("rules")
    fp.deploy(
        "rules",
        "blue",
        environment_variables={"COLOR": "blue"},
        request_settings={"request_timeout_ms": 1000},
    )
    fp.deploy("rules", "green", environment_variables={"COLOR": "green"})

    # no deployment has traffic yet: 404, unless a deployment is pinned
    assert fp.score("rules", {"text": "x"}).status_code == 404
    pinned = fp.score("rules", {"text": "x"}, **{"azureml-model-deployment": "green"})
    assert pinned.json()["color"] == "green"

    assert fp.traffic("rules", blue=90, green=5).json()["error"]["code"] == "InvalidTraffic"
    assert "red" in fp.traffic("rules", red=100).json()["error"]["message"]
    assert fp.traffic("rules", blue=100).status_code == 200
    mirror_live = fp.api("PUT", "/endpoints/rules/traffic", json={"mirror_traffic": {"blue": 10}})
    assert mirror_live.status_code == 400
    assert "live traffic" in mirror_live.json()["error"]["message"]
    assert (
        fp.api("PUT", "/endpoints/rules/traffic", json={"mirror_traffic": {"green": 60}}).status_code == 400
    )

    # a deployment with traffic cannot be deleted
    refused = fp.api("DELETE", "/endpoints/rules/deployments/blue")
    assert refused.status_code == 409
    assert refused.json()["error"]["code"] == "DeploymentHasTraffic"

    ok = fp.score("rules", {"text": "x"})
    assert (ok.status_code, ok.headers["azureml-model-deployment"]) == (200, "blue")
    assert ok.headers["x-request-id"]
    failed = fp.score("rules", {"text": "x", "fail": True})
    assert failed.status_code == 424
    assert failed.headers["ms-azureml-model-error-statuscode"] == "400"
    assert "asked to fail" in failed.text
    timed_out = fp.score("rules", {"text": "x", "seconds": 3})
    assert timed_out.status_code == 408


def test_a_flow_that_fails_to_load_fails_the_deployment_with_the_reason(
    sqlite_flowport: Flowport, tmp_path: Path
) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "flow.dag.yaml").write_text((FLOWS / "probe" / "flow.dag.yaml").read_text())
    (broken / "answer.py").write_text("import no_such_module_here\n")
    fp = sqlite_flowport
    fp.endpoint("broken")
    spec = {"spec": {"model": {"path": str(broken)}}}
    # a tool that cannot be imported is refused before anything is deployed
    refused = fp.api("POST", "/endpoints/broken/deployments", params={"name": "blue"}, json=spec)
    assert refused.status_code == 400
    assert "answer.py:1: (ModuleNotFoundError) No module named 'no_such_module_here'" in refused.text
    # one that fails only where it runs (it may need the deployment's variables) fails the deployment
    (broken / "answer.py").write_text("raise RuntimeError('no_such_setting_here')\n")
    body = fp.ok("POST", "/endpoints/broken/deployments", params={"name": "blue"}, json=spec)
    operation = fp.wait(body["operation"])
    assert operation["status"] == "Failed"
    shown = fp.ok("GET", "/endpoints/broken/deployments/blue")
    assert shown["provisioning_state"] == "Failed"
    assert "no_such_setting_here" in json.dumps(shown["error"])


def test_scale_logs_and_operations_in_progress(sqlite_flowport: Flowport) -> None:
    fp = sqlite_flowport
    fp.endpoint("scaled")
    fp.deploy("scaled", "blue")
    fp.traffic("scaled", blue=100)
    body = fp.ok("PATCH", "/endpoints/scaled/deployments/blue", json={"set": ["instance_count=2"]})
    busy = fp.api("PATCH", "/endpoints/scaled/deployments/blue", json={"set": ["instance_count=3"]})
    assert busy.status_code == 409
    assert busy.json()["error"]["code"] == "OperationInProgress"
    assert fp.wait(body["operation"])["status"] == "Succeeded"
    shown = fp.ok("GET", "/endpoints/scaled/deployments/blue")
    assert shown["instance_count"] == 2
    assert [i["ready"] for i in shown["instances"]] == [True, True]
    for _ in range(4):
        assert fp.score("scaled", {"text": "s"}).status_code == 200
    logs = fp.cli("online-deployment", "get-logs", "-n", "blue", "-e", "scaled", "--lines", "50").stdout
    assert logs.strip()


def test_bad_input_is_an_error_naming_the_field(sqlite_flowport: Flowport) -> None:
    fp = sqlite_flowport
    bad = fp.api("POST", "/endpoints", json={"yaml": "name: ok-name\nauth_mode: magic\n", "file": "e.yml"})
    assert bad.status_code == 400
    detail = bad.json()["error"]["details"][0]
    assert (detail["file"], detail["line"]) == ("e.yml", 2)
    assert "auth_mode" in detail["message"]
    assert fp.api("GET", "/endpoints", headers={"authorization": "Bearer wrong"}).status_code == 401
    missing = fp.cli("online-endpoint", "show", "-n", "nope", check=False)
    assert missing.returncode == 1
    assert "does not exist" in missing.stderr


def test_collected_requests_and_responses_come_back_with_get_data(sqlite_flowport: Flowport) -> None:
    fp = sqlite_flowport
    fp.endpoint("collected")
    collector = {
        "collections": {"request": {"enabled": "True"}, "response": {"enabled": True}},
        "rolling_rate": "Day",
    }
    fp.deploy("collected", "blue", data_collector=collector)
    fp.traffic("collected", blue=100)
    answer = fp.score("collected", {"text": "remember me"}, **{"x-request-id": "req-42"})
    assert answer.status_code == 200
    records: list[dict] = []
    for _ in range(200):  # written off the request path: give the writer a moment
        text = fp.cli("online-deployment", "get-data", "-n", "blue", "-e", "collected").stdout
        records = [json.loads(line) for line in text.splitlines() if line.strip()]
        if records:
            break
        time.sleep(0.05)
    assert len(records) == 1
    record = records[0]
    assert record["request_id"] == "req-42"
    assert record["request"] == {"text": "remember me"}
    assert record["response"] == {"echoed": "remember me", "color": "flow-default"}
    assert (record["deployment"], record["status"]) == ("blue", 200)
    later = fp.cli(
        "online-deployment", "get-data", "-n", "blue", "-e", "collected", "--since", "2999-01-01T00:00Z"
    )
    assert later.stdout.strip() == ""


def test_a_deployment_swaps_a_connection_by_name(sqlite_flowport: Flowport, llm_server: LLMServer) -> None:
    """``open_ai_connection: working`` in environment_variables, as Azure's guide shows."""
    fp = sqlite_flowport
    dead = "http://127.0.0.1:9/v1"  # nothing listens on the discard port
    fp.ok(
        "PUT", "/connections/open_ai_connection", json={"type": "open_ai", "api_key": "k", "base_url": dead}
    )
    fp.ok(
        "PUT",
        "/connections/working",
        json={"type": "open_ai", "api_key": "k", "base_url": llm_server.base_url},
    )
    fp.endpoint("swapped")
    chat = AZURE.parent / "chat_basic"
    spec = {"model": {"path": str(chat)}, "environment_variables": {"open_ai_connection": "working"}}
    body = fp.ok("POST", "/endpoints/swapped/deployments", params={"name": "blue"}, json={"spec": spec})
    assert fp.wait(body["operation"])["status"] == "Succeeded"
    fp.traffic("swapped", blue=100)
    answer = fp.score("swapped", {"question": "which connection?"})
    assert answer.status_code == 200, answer.text
    assert answer.json()["answer"] == "Echo: which connection?"
    metrics = fp.http.get(f"{fp.url}/metrics", headers={"authorization": f"Bearer {fp.token}"})
    assert 'endpoint="swapped"' in metrics.text
    assert fp.http.get(f"{fp.url}/metrics").status_code == 401


def test_a_deployment_names_its_flow_and_refuses_chat_on_a_standard_flow(sqlite_flowport: Flowport) -> None:
    fp = sqlite_flowport
    fp.endpoint("named")
    fp.deploy("named", "blue")
    fp.traffic("named", blue=100)
    auth = {"authorization": f"Bearer {fp.key('named')}"}
    swagger = fp.http.get(f"{fp.url}/endpoints/named/swagger.json", headers=auth).json()
    # the flow folder's name, not the snapshot's content hash
    assert (swagger["info"]["title"], swagger["info"]["x-flow-name"]) == ("Promptflow[probe] API", "probe")
    chat = fp.http.post(
        f"{fp.url}/endpoints/named/v1/chat/completions",
        json={"messages": [{"role": "user", "content": "hi"}]},
        headers=auth,
    )
    # the gateway wraps an instance's error as Azure's 424, its body (OpenAI's shape) passed through
    assert (chat.status_code, chat.headers["ms-azureml-model-error-statuscode"]) == (424, "400")
    assert chat.json()["error"]["type"] == "invalid_request_error"
    assert chat.json()["error"]["code"] == "not_a_chat_flow"
    assert "'probe' is not a chat flow" in chat.json()["error"]["message"]


def test_bad_specs_through_the_api_are_4xx_with_a_message(sqlite_flowport: Flowport, tmp_path: Path) -> None:
    fp = sqlite_flowport
    fp.endpoint("guarded")
    bad_set = fp.api("PATCH", "/endpoints/guarded", json={"set": ["description=[unclosed"]})
    assert bad_set.status_code == 400
    assert bad_set.json()["error"]["details"][0]["code"] == "InvalidSet"
    cli = fp.cli("online-endpoint", "update", "-n", "guarded", "--set", "description=[x", check=False)
    assert cli.returncode == 1
    assert "--set description: the value is not valid YAML" in cli.stderr
    assert "Traceback" not in cli.stderr
    deployment = fp.api(
        "POST", "/endpoints/guarded/deployments", params={"name": "blue"}, json={"set": ["model={bad"]}
    )
    assert deployment.status_code == 400
    assert "--set model: the value is not valid YAML" in deployment.json()["error"]["message"]

    bomb = "name: guarded\ntags:\n  a: &a [x, x, x, x, x, x, x, x, x, x]\n"
    for previous, name in zip("abcde", "bcdef", strict=True):
        bomb += f"  {name}: &{name} [{', '.join([f'*{previous}'] * 10)}]\n"
    refused = fp.api("PATCH", "/endpoints/guarded", json={"yaml": bomb, "file": "bomb.yml"})
    assert refused.status_code == 400
    assert refused.json()["error"]["details"][0] == {
        "code": "YamlTooLarge",
        "message": refused.json()["error"]["details"][0]["message"],
        "file": "bomb.yml",
        "line": 7,
    }
    long_field = fp.api("PATCH", "/endpoints/guarded", json={"spec": {"description": "x" * 100_000}})
    assert long_field.status_code == 400
    assert long_field.json()["error"]["message"].startswith("description: is 100,000 characters long")
    huge = fp.api("PATCH", "/endpoints/guarded", json={"spec": {"description": "x" * 12_000_000}})
    assert huge.status_code == 413
    assert huge.json()["error"]["code"] == "RequestTooLarge"

    flow = tmp_path / "flow"
    flow.mkdir()
    (flow / "flow.dag.yaml").write_text("additional_includes: ../..\nnodes: []\n")
    model = fp.api("POST", "/models", json={"spec": {"name": "walker", "path": str(flow)}})
    assert model.status_code == 400
    assert "additional_includes must be a list" in model.json()["error"]["message"]


def test_a_500_is_one_json_line_and_closes_the_keep_alive_connection(
    sqlite_flowport: Flowport, home: Path
) -> None:
    fp = sqlite_flowport
    (home / "models").write_text("not a folder")  # a broken home: the registry cannot write
    flow = FLOWS / "probe"
    with httpx.Client(base_url=f"{fp.url}/api/v1", headers={"authorization": f"Bearer {fp.token}"}) as client:
        assert client.get("/models").status_code == 200
        failed = client.post("/models", json={"spec": {"name": "probe", "path": str(flow)}})
        assert failed.status_code == 500
        assert failed.headers["connection"] == "close"
        assert "\n" not in failed.text and "Traceback" not in failed.text
        error = failed.json()["error"]
        assert error["code"] == "InternalError"
        assert "POST /api/v1/models" in error["message"] and "server log" in error["message"]
        # the next request on the same client opens a fresh connection and is answered
        assert client.get("/models").status_code == 200
