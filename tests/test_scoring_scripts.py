"""Scoring-script deployments (``code_configuration`` with ``init()``/``run()``) on a real endpoint.

The server, the gateway and the instance processes are real; the scripts are written here.
"""

from __future__ import annotations

import base64
import hashlib
import json
import pwd
import sys
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from flowport.control.conda import read_conda_file
from flowport.control.specs import SpecError, parse_deployment
from flowport.flow import FlowError
from tests.endpoint_harness import FLOWS, Flowport
from tests.test_isolation import as_root, shared_python  # noqa: F401 (a fixture)

SCORE = """
import asyncio
import json
import os
import time

from azureml.contrib.services.aml_response import AMLResponse

state = {}


def init():
    with open(os.path.join(os.environ["AZUREML_MODEL_DIR"], "weights", "greeting.txt")) as file:
        state["greeting"] = file.read().strip()
    print("init done: model read", flush=True)


def run(raw_data):
    data = json.loads(raw_data)
    print(f"scoring {data.get('name')!r}", flush=True)
    kind = data.get("kind")
    if kind == "stream":
        return (f"{state['greeting']} {i}" for i in range(3))
    if kind == "created":
        return AMLResponse({"made": data["name"]}, 201, {"x-custom": "yes"}, json_str=True)
    if kind == "slow":
        time.sleep(float(data["seconds"]))
    if kind == "boom":
        raise ValueError("no such name")
    greeting = f"{state['greeting']}, {data['name']}"
    return {"greeting": greeting, "model_dir_set": "AZUREML_MODEL_DIR" in os.environ}
"""

ASYNC_SCORE = """
import asyncio


async def init():
    await asyncio.sleep(0)


async def run(raw_data):
    await asyncio.sleep(0)
    return {"length": len(raw_data)}
"""

FAILING_INIT = """
def helper():
    raise RuntimeError("the weights file is missing")


def init():
    helper()


def run(raw_data):
    return raw_data
"""


@pytest.fixture
def server(home: Path) -> Iterator[Flowport]:
    with Flowport(home) as fp:
        yield fp


@pytest.fixture
def any_store(home: Path, database_url: str) -> Iterator[Flowport]:
    """SQLite and (with FLOWPORT_TEST_DATABASE_URL) PostgreSQL."""
    with Flowport(home, database_url) as fp:
        yield fp


def _script(folder: Path, text: str, name: str = "score.py") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(text)
    return folder


def _model(folder: Path) -> Path:
    weights = folder / "weights"
    weights.mkdir(parents=True)
    (weights / "greeting.txt").write_text("Hello\n")
    return weights


def _deploy(fp: Flowport, endpoint: str, name: str, spec: dict[str, Any], expect: str = "Succeeded") -> Any:
    body = fp.ok("POST", f"/endpoints/{endpoint}/deployments", params={"name": name}, json={"spec": spec})
    operation = fp.wait(body["operation"], timeout=180)
    assert operation["status"] == expect, operation
    return operation


def _serve_script(fp: Flowport, endpoint: str, folder: Path, text: str, **fields: Any) -> None:
    """Write ``score.py`` into ``folder``, deploy it as ``blue`` on a new endpoint, all traffic to it."""
    code = _script(folder, text)
    fp.endpoint(endpoint)
    _deploy(
        fp,
        endpoint,
        "blue",
        {"code_configuration": {"code": str(code), "scoring_script": "score.py"}, **fields},
    )
    fp.traffic(endpoint, blue=100)


def _score(fp: Flowport, endpoint: str, body: Any, **headers: str) -> httpx.Response:
    return fp.score(endpoint, body, **headers)


def test_a_scoring_script_with_a_model_answers_json_streams_and_raw_responses(
    any_store: Flowport, tmp_path: Path
) -> None:
    fp = any_store
    code = _script(tmp_path / "src", SCORE)
    weights = _model(tmp_path / "model")
    fp.endpoint("scripted")
    spec = {
        "model": {"path": str(weights)},
        "code_configuration": {"code": str(code), "scoring_script": "score.py"},
        "data_collector": {"collections": {"request": {"enabled": True}, "response": {"enabled": True}}},
    }
    _deploy(fp, "scripted", "green", spec)
    fp.traffic("scripted", green=100)

    answer = _score(fp, "scripted", {"name": "Ada"}, **{"x-ms-client-request-id": "client-1"})
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"greeting": "Hello, Ada", "model_dir_set": True}
    assert answer.headers["x-ms-run-function-failed"] == "False"
    assert answer.headers["x-ms-client-request-id"] == "client-1"
    assert answer.headers["azureml-model-deployment"] == "green"
    assert float(answer.headers["x-ms-run-fn-exec-ms"]) >= 0

    created = _score(fp, "scripted", {"name": "Bob", "kind": "created"})
    assert created.status_code == 201
    assert created.json() == {"made": "Bob"}
    assert created.headers["x-custom"] == "yes"

    key = fp.key("scripted")
    with fp.http.stream(
        "POST",
        f"{fp.url}/endpoints/scripted/score",
        json={"name": "s", "kind": "stream"},
        headers={"authorization": f"Bearer {key}"},
    ) as stream:
        assert stream.status_code == 200
        assert stream.headers["content-type"].startswith("text/event-stream")
        text = "".join(stream.iter_text())
    assert text == "data: Hello 0\n\ndata: Hello 1\n\ndata: Hello 2\n\n"

    failed = _score(fp, "scripted", {"name": "x", "kind": "boom"})
    assert failed.status_code == 424  # the gateway maps the instance's 500, as Azure does
    assert failed.headers["ms-azureml-model-error-statuscode"] == "500"
    assert "unexpected error occurred in scoring script" in failed.json()["message"]

    logs = fp.cli("online-deployment", "get-logs", "-n", "green", "-e", "scripted", "--lines", "200").stdout
    assert "init done: model read" in logs
    assert "scoring 'Ada'" in logs
    assert "run() failed" in logs and "score.py:" in logs and "(ValueError) no such name" in logs
    assert "Traceback" not in logs

    shown = fp.ok("GET", "/endpoints/scripted/deployments/green")
    assert shown["code_configuration"]["scoring_script"] == "score.py"
    records: list[dict[str, Any]] = []
    for _ in range(200):  # written off the request path
        text = fp.cli("online-deployment", "get-data", "-n", "green", "-e", "scripted").stdout
        records = [json.loads(line) for line in text.splitlines() if line.strip()]
        if any(r["request"] == {"name": "Ada"} for r in records):
            break
        time.sleep(0.05)
    ada = next(r for r in records if r["request"] == {"name": "Ada"})
    assert ada["response"] == {"greeting": "Hello, Ada", "model_dir_set": True}
    metrics = fp.http.get(f"{fp.url}/metrics", headers={"authorization": f"Bearer {fp.token}"}).text
    assert 'deployment="green"' in metrics


def test_an_async_script_without_a_model(any_store: Flowport, tmp_path: Path) -> None:
    fp = any_store
    code = _script(tmp_path / "src", ASYNC_SCORE, "main.py")
    fp.endpoint("asyncscript")
    spec = {"code_configuration": {"code": str(code), "scoring_script": "main.py"}}
    _deploy(fp, "asyncscript", "blue", spec)
    fp.traffic("asyncscript", blue=100)
    key = fp.key("asyncscript")
    body = "plain text, not JSON: run() gets it as it came"
    answer = fp.http.post(
        f"{fp.url}/endpoints/asyncscript/score", content=body, headers={"authorization": f"Bearer {key}"}
    )
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"length": len(body)}
    assert fp.update("asyncscript", "blue", "instance_count=2")["status"] == "Succeeded"
    fp.restart()  # recovery re-applies the stored script deployment; it keeps answering
    shown = fp.ok("GET", "/endpoints/asyncscript/deployments/blue")
    assert shown["instance_count"] == 2 and shown["model"] is None
    assert [i["ready"] for i in shown["instances"]] == [True, True]
    again = fp.http.post(
        f"{fp.url}/endpoints/asyncscript/score", content="x", headers={"authorization": f"Bearer {key}"}
    )
    assert again.json() == {"length": 1}
    exported = fp.api("POST", "/endpoints/asyncscript/export")
    assert exported.status_code == 400
    assert exported.json()["error"]["code"] == "ExportNotSupported"
    image = fp.cli(
        "online-deployment", "build-image", "-n", "blue", "-e", "asyncscript", "-t", "x:1", check=False
    )
    assert image.returncode != 0 and "runs a scoring script" in image.stderr


def test_an_init_failure_fails_the_deployment_with_the_scripts_line(server: Flowport, tmp_path: Path) -> None:
    fp = server
    code = _script(tmp_path / "src", FAILING_INIT)
    fp.endpoint("broken-init")
    operation = _deploy(
        fp,
        "broken-init",
        "blue",
        {"code_configuration": {"code": str(code), "scoring_script": "score.py"}},
        expect="Failed",
    )
    message = operation["error"]["message"]
    first = message.splitlines()[0]
    assert first == (
        "the scoring script failed to start: "
        "init() failed at score.py:3: (RuntimeError) the weights file is missing"
    )
    assert "Traceback" not in message
    shown = fp.ok("GET", "/endpoints/broken-init/deployments/blue")
    assert shown["provisioning_state"] == "Failed"
    assert shown["error"]["reason"] == first
    assert "Traceback" not in json.dumps(shown)
    listed = fp.cli("online-deployment", "show", "-n", "blue", "-e", "broken-init").stdout
    assert "score.py:3" in listed and "Traceback" not in listed
    (tmp_path / "green.yml").write_text(
        "name: green\nendpoint_name: broken-init\n"
        "code_configuration:\n  code: src\n  scoring_script: score.py\n"
    )
    created = fp.cli("online-deployment", "create", "--file", "green.yml", cwd=tmp_path, check=False)
    assert created.returncode != 0
    said = created.stdout + created.stderr
    assert "init() failed at score.py:3: (RuntimeError) the weights file is missing" in said
    assert "Traceback" not in said


def test_a_flow_and_a_script_side_by_side_with_a_traffic_split_and_limits(
    server: Flowport, tmp_path: Path
) -> None:
    fp = server
    code = _script(tmp_path / "src", SCORE)
    weights = _model(tmp_path / "model")
    fp.endpoint("sidebyside")
    fp.deploy("sidebyside", "blue")  # the probe flow
    spec = {
        "model": {"path": str(weights)},
        "code_configuration": {"code": str(code), "scoring_script": "score.py"},
        "request_settings": {"max_concurrent_requests_per_instance": 1, "request_timeout_ms": 3000},
    }
    _deploy(fp, "sidebyside", "green", spec)
    assert fp.traffic("sidebyside", blue=50, green=50).status_code < 300
    seen = set()
    for _ in range(40):
        answer = _score(fp, "sidebyside", {"name": "Ada", "text": "hi"})
        assert answer.status_code == 200, answer.text
        seen.add(answer.headers["azureml-model-deployment"])
        if seen == {"blue", "green"}:
            break
    assert seen == {"blue", "green"}

    # one request in flight on green's only slot: the next waits its queue time, then 429
    key = fp.key("sidebyside")
    pinned = {"authorization": f"Bearer {key}", "azureml-model-deployment": "green"}
    url = f"{fp.url}/endpoints/sidebyside/score"
    with httpx.Client(timeout=30) as other:
        import threading

        slow: dict[str, Any] = {}
        thread = threading.Thread(
            target=lambda: slow.update(
                r=other.post(url, json={"name": "z", "kind": "slow", "seconds": 2}, headers=pinned)
            )
        )
        thread.start()
        refused = None
        for _ in range(100):
            answer = fp.http.post(url, json={"name": "y"}, headers=pinned)
            if answer.status_code == 429:
                refused = answer
                break
            time.sleep(0.02)
        thread.join()
    assert refused is not None
    assert slow["r"].status_code == 200
    timed_out = fp.http.post(url, json={"name": "t", "kind": "slow", "seconds": 5}, headers=pinned)
    assert timed_out.status_code == 408

    # blue answers every client; green, the script, gets a mirrored copy of some requests
    assert fp.traffic("sidebyside", blue=100, green=0).status_code < 300
    mirrored = fp.api("PUT", "/endpoints/sidebyside/traffic", json={"mirror_traffic": {"green": 50}})
    assert mirrored.status_code < 300, mirrored.text
    for number in range(30):
        answer = _score(fp, "sidebyside", {"name": f"mirrored-{number}", "text": "hi"})
        assert answer.headers["azureml-model-deployment"] == "blue"
    logs = ""
    for _ in range(100):  # copies are sent off the request path
        logs = fp.cli(
            "online-deployment", "get-logs", "-n", "green", "-e", "sidebyside", "--lines", "300"
        ).stdout
        if "scoring 'mirrored-" in logs:
            break
        time.sleep(0.1)
    assert "scoring 'mirrored-" in logs


def test_a_flow_model_with_code_configuration_runs_the_script_with_the_flow_mounted(
    server: Flowport, tmp_path: Path
) -> None:
    fp = server
    code = _script(
        tmp_path / "src",
        "import os\n\ndef init():\n    pass\n\n"
        "def run(raw_data):\n"
        "    folder = os.path.join(os.environ['AZUREML_MODEL_DIR'], 'probe')\n"
        "    return sorted(os.listdir(folder))\n",
    )
    fp.endpoint("mounted")
    spec = {
        "model": {"path": str(FLOWS / "probe")},
        "code_configuration": {"code": str(code), "scoring_script": "score.py"},
    }
    _deploy(fp, "mounted", "blue", spec)
    fp.traffic("mounted", blue=100)
    answer = _score(fp, "mounted", {"text": "hi"})
    assert answer.status_code == 200, answer.text
    assert answer.json() == ["answer.py", "flow.dag.yaml"]
    # a registered flow model is laid out the same way for the script
    model = fp.ok("POST", "/models", json={"spec": {"name": "probe", "path": str(FLOWS / "probe")}})
    assert model.get("layout") is None  # registered as a flow
    _deploy(fp, "mounted", "green", {**spec, "model": model["id"]})
    pinned = _score(fp, "mounted", {"text": "hi"}, **{"azureml-model-deployment": "green"})
    assert pinned.status_code == 200, pinned.text
    assert pinned.json() == ["answer.py", "flow.dag.yaml"]


def _wheel(folder: Path, name: str, version: str, module: str) -> Path:
    """A minimal pure-Python wheel, built here: no network, no build backend."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}-{version}-py3-none-any.whl"
    info = f"{name}-{version}.dist-info"
    files = {
        f"{name}.py": module.encode(),
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode(),
        f"{info}/WHEEL": (
            b"Wheel-Version: 1.0\nGenerator: flowport-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        ),
    }
    record = []
    for rel, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{rel},sha256={digest},{len(data)}")
    record.append(f"{info}/RECORD,,")
    with zipfile.ZipFile(path, "w") as archive:
        for rel, data in files.items():
            archive.writestr(rel, data)
        archive.writestr(f"{info}/RECORD", "\n".join(record) + "\n")
    return path


def test_a_conda_file_installs_its_pip_packages_into_the_deployments_environment(
    server: Flowport, tmp_path: Path
) -> None:
    fp = server
    _wheel(tmp_path / "env" / "wheels", "flowport_tinydep", "1.0", "ANSWER = 42\n")
    conda = tmp_path / "env" / "conda.yml"
    conda.write_text(
        "name: tiny\nchannels:\n  - conda-forge\ndependencies:\n"
        f"  - python={'.'.join(map(str, __import__('sys').version_info[:2]))}\n"
        "  - pip\n  - pip:\n    - ./wheels/flowport_tinydep-1.0-py3-none-any.whl\n"
    )
    code = _script(
        tmp_path / "src",
        "import flowport_tinydep\n\ndef init():\n    pass\n\n"
        "def run(raw_data):\n    return flowport_tinydep.ANSWER\n",
    )
    fp.endpoint("conda")
    (tmp_path / "blue.yml").write_text(
        "$schema: https://azuremlschemas.azureedge.net/latest/managedOnlineDeployment.schema.json\n"
        "name: blue\nendpoint_name: conda\n"
        "code_configuration:\n  code: ./src\n  scoring_script: score.py\n"
        "environment:\n  conda_file: ./env/conda.yml\n  image: mcr.microsoft.com/azureml/minimal-py311-cpu\n"
        "instance_count: 1\n"
    )
    created = fp.cli("online-deployment", "create", "--file", "blue.yml", cwd=tmp_path)
    assert "Succeeded" in created.stdout + created.stderr
    spec = {"code_configuration": {"code": str(code), "scoring_script": "score.py"}}
    fp.traffic("conda", blue=100)
    answer = _score(fp, "conda", {})
    assert answer.status_code == 200, answer.text
    assert answer.json() == 42
    logs = fp.cli("online-deployment", "get-logs", "-n", "blue", "-e", "conda", "--lines", "200").stdout
    assert "[provisioning]" in logs and "flowport_tinydep" in logs

    only_conda = tmp_path / "env" / "bad.yml"
    only_conda.write_text("dependencies:\n  - numpy=1.26\n  - cudatoolkit=11.8\n")
    bad = dict(spec, environment={"conda_file": str(only_conda)})
    refused = fp.api("POST", "/endpoints/conda/deployments", params={"name": "green"}, json={"spec": bad})
    assert refused.status_code == 400
    detail = refused.json()["error"]
    assert "'cudatoolkit=11.8' is a conda package with no pip equivalent" in json.dumps(detail)
    assert detail["details"][0]["line"] == 3


SCHEMA_SCORE = """
from inference_schema.parameter_types.standard_py_parameter_type import StandardPythonParameterType
from inference_schema.schema_decorators import input_schema, output_schema


def init():
    pass


@input_schema("data", StandardPythonParameterType([1, 2]))
@input_schema("scale", StandardPythonParameterType(2))
@output_schema(StandardPythonParameterType({"total": 3}))
def run(data, scale):
    return {"total": sum(data) * scale}
"""


def test_inference_schema_decorators_shape_the_input_and_the_swagger(
    server: Flowport, tmp_path: Path
) -> None:
    fp = server
    _serve_script(fp, "schema", tmp_path / "src", SCHEMA_SCORE)
    answer = _score(fp, "schema", {"data": [1, 2, 3], "scale": 2})
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"total": 12}
    key = fp.key("schema")
    swagger = fp.http.get(
        f"{fp.url}/endpoints/schema/swagger.json", headers={"authorization": f"Bearer {key}"}
    )
    assert swagger.status_code == 200, swagger.text
    post = swagger.json()["paths"]["/score"]["post"]
    request_schema = post["requestBody"]["content"]["application/json"]["schema"]
    assert request_schema["properties"]["data"]["type"] == "array"
    assert request_schema["properties"]["scale"]["type"] == "integer"
    answer_schema = post["responses"]["200"]["content"]["application/json"]["schema"]
    assert answer_schema["required"] == ["total"]
    not_an_object = _score(fp, "schema", [1, 2])
    assert not_an_object.status_code == 424
    assert not_an_object.headers["ms-azureml-model-error-statuscode"] == "400"


def test_a_registered_plain_model_serves_a_script_and_is_refused_as_a_flow(
    server: Flowport, tmp_path: Path
) -> None:
    fp = server
    weights = _model(tmp_path / "model")
    model = fp.ok("POST", "/models", json={"spec": {"name": "weights", "path": str(weights)}})
    assert model["layout"] == "files" and "registered as plain files" in model["notes"][0]
    fp.endpoint("registered")
    refused = fp.api(
        "POST",
        "/endpoints/registered/deployments",
        params={"name": "blue"},
        json={"spec": {"model": model["id"]}},
    )
    assert refused.status_code == 400
    assert refused.json()["error"]["code"] == "ModelIsNotAFlow"
    code = _script(tmp_path / "src", SCORE)
    spec = {"model": model["id"], "code_configuration": {"code": str(code), "scoring_script": "score.py"}}
    _deploy(fp, "registered", "blue", spec)
    fp.traffic("registered", blue=100)
    answer = _score(fp, "registered", {"name": "Grace"})
    assert answer.status_code == 200, answer.text
    assert answer.json()["greeting"] == "Hello, Grace"


def test_a_conda_file_reads_as_pip_requirements(tmp_path: Path) -> None:
    (tmp_path / "reqs.txt").write_text("requests\n")
    conda = tmp_path / "conda.yml"
    running = ".".join(map(str, sys.version_info[:2]))
    conda.write_text(
        "dependencies:\n"
        f"  - python={running}\n"
        "  - pip\n"
        "  - numpy=1.26\n"
        "  - conda-forge::pytorch=2.2.1\n"
        "  - scikit-learn>=1.3\n"
        "  - pip:\n"
        "    - orjson==3.10.0\n"
        "    - -r reqs.txt\n"
    )
    read = read_conda_file(conda)
    assert read.pip == (
        "numpy==1.26.*",
        "torch==2.2.1",
        "scikit-learn>=1.3",
        "orjson==3.10.0",
        f"-r {tmp_path / 'reqs.txt'}",
    )
    conda.write_text("dependencies:\n  - python=2.7\n  - libgcc-ng\n")
    with pytest.raises(FlowError) as failed:
        read_conda_file(conda, "conda.yml")
    problems = [(p.code, p.line) for p in failed.value.problems]
    assert problems == [("PythonVersionMismatch", 2), ("CondaOnlyPackage", 3)]
    assert "instances run Python 3." in str(failed.value)


def test_the_deployment_spec_reads_code_configuration_and_an_optional_model(tmp_path: Path) -> None:
    spec = parse_deployment(
        {
            "name": "green",
            "endpoint_name": "my-ep",
            "code_configuration": {"code": "./src", "scoring_script": "score.py"},
            "environment": {"conda_file": "env/conda.yml", "image": "mcr.microsoft.com/x"},
        },
        "green.yml",
        tmp_path,
    )
    assert (spec.code_path, spec.scoring_script) == (tmp_path / "src", "score.py")
    assert spec.conda_file == tmp_path / "env" / "conda.yml"
    assert spec.model_ref is None and spec.model_path is None
    assert any(note.startswith("environment: image") for note in spec.notes)
    with pytest.raises(SpecError) as missing:
        parse_deployment({"name": "blue", "endpoint_name": "my-ep"}, "blue.yml")
    assert "or give code_configuration to run a scoring script" in str(missing.value)
    from flowport.flow.yaml import parse_yaml

    raw = parse_yaml("name: green\ncode_configuration:\n  code: ./src\n", "green.yml")
    with pytest.raises(SpecError) as no_script:
        parse_deployment(raw, "green.yml")
    problem = no_script.value.problems[0]
    assert (problem.file, problem.line) == ("green.yml", 2)
    assert problem.message.startswith("code_configuration.scoring_script: is required")


RAW_SCORE = """
from azureml_inference_server_http.api.aml_request import AMLRequest, rawhttp
from azureml_inference_server_http.api.aml_response import AMLResponse


def init():
    pass


@rawhttp
def run(request):
    if request.method != "POST":
        return AMLResponse("POST only", 405)
    body = request.get_json()
    text = f"{request.headers.get('x-shout', 'no')}:{body['word'].upper()}"
    return AMLResponse(text.encode(), 200, {"Content-Type": "text/plain", "x-parts": "a, b"})
"""


def test_rawhttp_hands_run_the_request_and_an_aml_response_goes_back_as_given(
    server: Flowport, tmp_path: Path
) -> None:
    fp = server
    _serve_script(fp, "raw", tmp_path / "src", RAW_SCORE)
    answer = _score(fp, "raw", {"word": "quiet"}, **{"x-shout": "yes"})
    assert answer.status_code == 200, answer.text
    assert answer.text == "yes:QUIET"
    assert answer.headers["content-type"] == "text/plain"
    assert answer.headers.get_list("x-parts") == ["a", "b"]
    assert answer.headers["x-ms-run-function-failed"] == "False"


ISOLATED_SCORE = """
import os

from helpers import read_greeting


def init():
    global greeting
    greeting = read_greeting(os.path.join(os.environ["AZUREML_MODEL_DIR"], "weights", "greeting.txt"))


def run(raw_data):
    try:
        os.listdir(os.environ["SPY_HOME"])
        home = "readable"
    except PermissionError:
        home = "PermissionError"
    return {"uid": os.getuid(), "greeting": greeting, "home": home}
"""


@as_root
def test_a_script_runs_as_the_instance_user_with_its_code_and_model_readable(
    home: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    shared_python: str,  # noqa: F811 (the fixture imported above)
) -> None:
    monkeypatch.setenv("FLOWPORT_INSTANCE_USER", "nobody")
    monkeypatch.setenv("FLOWPORT_INSTANCE_PYTHON", shared_python)
    code = _script(tmp_path / "src", ISOLATED_SCORE)
    (code / "helpers.py").write_text("def read_greeting(path):\n    return open(path).read().strip()\n")
    weights = _model(tmp_path / "model")
    with Flowport(home) as fp:
        fp.endpoint("isolated")
        spec = {
            "model": {"path": str(weights)},
            "code_configuration": {"code": str(code), "scoring_script": "score.py"},
            "environment_variables": {"SPY_HOME": str(home)},
        }
        _deploy(fp, "isolated", "blue", spec)
        fp.traffic("isolated", blue=100)
        answer = _score(fp, "isolated", {})
    assert answer.status_code == 200, answer.text
    assert answer.json() == {
        "uid": pwd.getpwnam("nobody").pw_uid,
        "greeting": "Hello",
        "home": "PermissionError",
    }


HEADERS_SCORE = """
def init():
    print("init ran")


def run(raw_data, request_headers):
    return {"raw": raw_data, "tag": request_headers.get("x-tag")}
"""


def test_the_script_app_answers_the_inference_servers_routes(tmp_path: Path) -> None:
    from starlette.testclient import TestClient

    from flowport.serving.script_app import ScriptApp
    from flowport.serving.user_script import UserScript

    code = _script(tmp_path / "src", HEADERS_SCORE)
    app = ScriptApp(UserScript.load(code, "score.py"), name="src")
    with TestClient(app) as client:  # the lifespan runs init()
        assert client.get("/").text == "Healthy"
        assert client.get("/ready").json()["status"] == "Ready"
        got = client.get("/score?a=1&b=x&b=y", headers={"x-tag": "t"})
        assert got.status_code == 200
        assert json.loads(got.json()["raw"]) == {"a": 1, "b": ["x", "y"]}
        assert got.json()["tag"] == "t"
        posted = client.post("/score", content=b"caf\xc3\xa9", headers={"x-ms-client-request-id": "abc"})
        assert posted.json() == {"raw": "café", "tag": None}
        assert posted.headers["x-ms-request-id"] == "abc"
        assert posted.headers["x-ms-client-request-id"] == "abc"
        bad = client.post("/score", content=b"\xff\xfe")
        assert bad.status_code == 400
        assert bad.json()["message"].startswith("Input cannot be decoded as UTF-8")
        assert client.options("/score").status_code == 200
        swagger = client.get("/swagger.json").json()
        assert swagger["openapi"] == "3.0.0" and "/score" in swagger["paths"]
        assert 'flowport_requests_total{route="score",status="400"} 1.0' in client.get("/metrics").text


THREAD_SCORE = """
import threading


def init():
    pass


def run(raw_data):
    if raw_data == "fail":
        raise ValueError("asked to fail")
    return {"thread": threading.current_thread().name, "echo": raw_data}
"""


def test_a_fast_sync_run_moves_onto_the_event_loop_and_back_to_the_pool_when_it_fails(tmp_path: Path) -> None:
    from starlette.testclient import TestClient

    from flowport.engine.inline import InlinePolicy
    from flowport.serving.script_app import RUN_FAILED, ScriptApp
    from flowport.serving.user_script import UserScript

    code = _script(tmp_path / "src", THREAD_SCORE)
    app = ScriptApp(UserScript.load(code, "score.py"), name="src")
    app.inline_policy = InlinePolicy(True, fast_seconds=1.0, proof_runs=3)  # any run counts as fast here
    with TestClient(app) as client:
        threads = [client.post("/score", content=f"x{i}".encode()).json() for i in range(5)]
        assert [t["echo"] for t in threads] == [f"x{i}" for i in range(5)]
        assert all(t["thread"].startswith("run") for t in threads[:3])  # the pool, until proven fast
        assert not threads[4]["thread"].startswith("run")  # then on the event loop's thread
        failed = client.post("/score", content=b"fail")
        assert failed.status_code == 500
        assert failed.json() == {"message": RUN_FAILED}
        assert failed.headers["x-ms-run-function-failed"] == "True"
        after = client.post("/score", content=b"again")
        assert after.status_code == 200
        assert after.json()["thread"].startswith("run")  # back in the pool for good
        assert after.headers["x-ms-run-function-failed"] == "False"


def test_the_studio_test_tab_sends_json_to_a_scoring_script(
    studio: tuple[Flowport, Any], tmp_path: Path
) -> None:
    server, page = studio
    code = _script(tmp_path / "src", ASYNC_SCORE, "main.py")
    server.endpoint("studio-script")
    spec = {"code_configuration": {"code": str(code), "scoring_script": "main.py"}}
    _deploy(server, "studio-script", "blue", spec)
    server.traffic("studio-script", blue=100)
    page.goto(f"{server.url}/studio/endpoints/studio-script#test")  # type: ignore[attr-defined]
    page.locator("#panel-test").wait_for(state="visible")  # type: ignore[attr-defined]
    page.get_by_text("Scoring script main.py (from blue)").wait_for()  # type: ignore[attr-defined]
    page.get_by_role("button", name="JSON").click()  # type: ignore[attr-defined]
    page.get_by_label("Request body (JSON)", exact=True).fill('{"a": 1}')  # type: ignore[attr-defined]
    page.get_by_role("button", name="Send").click()  # type: ignore[attr-defined]
    # the studio sends the JSON compact: run() gets '{"a":1}'
    page.locator(".test-response").get_by_text('"length": 7').wait_for()  # type: ignore[attr-defined]
    assert "200" in page.locator(".test-status").inner_text()  # type: ignore[attr-defined]


REFERENCE_SCORE = """
import os


def init():
    print(f"key is {os.environ['LLM_KEY']}", flush=True)


def run(raw_data):
    return {"target": os.environ["LLM_TARGET"], "key_length": len(os.environ["LLM_KEY"])}
"""


def test_a_script_reads_connection_references_and_its_logs_mask_them(
    server: Flowport, tmp_path: Path
) -> None:
    fp = server
    secret = "sk-scoring-script-secret-1234"
    fp.ok(
        "PUT",
        "/connections/llm",
        json={"type": "open_ai", "api_key": secret, "base_url": "http://127.0.0.1:9/v1"},
    )
    variables = {
        "LLM_KEY": "${{azureml://connections/llm/credentials/key}}",
        "LLM_TARGET": "${{azureml://connections/llm/target}}",
    }
    _serve_script(fp, "referenced", tmp_path / "src", REFERENCE_SCORE, environment_variables=variables)
    answer = _score(fp, "referenced", {})
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"target": "http://127.0.0.1:9/v1", "key_length": len(secret)}
    logs = fp.cli("online-deployment", "get-logs", "-n", "blue", "-e", "referenced").stdout
    assert "key is ******" in logs and secret not in logs


ECHO_HEADER_SCORE = """
from azureml.contrib.services.aml_response import AMLResponse


def init():
    pass


def run(raw_data):
    return AMLResponse("ok", 200, {"x-echo": raw_data})
"""


@pytest.mark.parametrize("body", ["caf\u20ac", "a\r\nset-cookie: x=1", "a\x00b"])
def test_a_response_header_http_cannot_carry_is_a_run_failure_not_a_lost_slot(
    tmp_path: Path, body: str, capfd: pytest.CaptureFixture[str]
) -> None:
    from starlette.testclient import TestClient

    from flowport.serving.script_app import RUN_FAILED, ScriptApp
    from flowport.serving.settings import ServeSettings
    from flowport.serving.user_script import UserScript

    code = _script(tmp_path / "src", ECHO_HEADER_SCORE)
    settings = ServeSettings(max_concurrent_requests=1, max_queue_wait_ms=0)
    app = ScriptApp(UserScript.load(code, "score.py"), settings, name="src")
    with TestClient(app, raise_server_exceptions=False) as client:
        for _ in range(3):  # each answer frees its slot: never a 429
            got = client.post("/score", content=body.encode())
            assert got.status_code == 500, got.text
            assert got.json() == {"message": RUN_FAILED}
            assert "set-cookie" not in got.headers
        assert client.post("/score", content=b"fine").headers["x-echo"] == "fine"
    err = capfd.readouterr().err
    assert "run() failed for request" in err and "Traceback" not in err


AWAITABLE_SCRIPT = """\
import asyncio
import json


def init():
    pass


async def _later(data):
    await asyncio.sleep(data["sleep"])
    return {"slept": data["sleep"]}


def run(raw_data):
    return _later(json.loads(raw_data))
"""


def test_an_inline_run_that_returns_an_awaitable_still_times_out(tmp_path: Path) -> None:
    """A sync run() on the event loop arms no timer, but the awaitable it returns runs under one."""
    import asyncio
    import concurrent.futures

    from flowport.serving.script_app import ScriptApp
    from flowport.serving.settings import ServeSettings
    from flowport.serving.user_script import UserScript

    folder = tmp_path / "code"
    _script(folder, AWAITABLE_SCRIPT)

    async def scenario() -> list[tuple[int, Any]]:
        app = ScriptApp(UserScript.load(folder, "score.py"), ServeSettings(request_timeout_ms=300))
        answers = []
        async with app.app.router.lifespan_context(app.app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://instance") as client:
                for sleep in (0.0, 2.0):
                    app.inline_policy.inline = True  # as the policy does once run() proved fast
                    answer = await client.post("/score", json={"sleep": sleep})
                    answers.append((answer.status_code, answer.json()))
        return answers

    # in a thread of its own: a browser test's Playwright may hold this thread's event loop
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        fast, slow = pool.submit(asyncio.run, scenario()).result()
    assert fast == (200, {"slept": 0.0})
    assert slow == (408, {"message": "Scoring timeout after 300 ms"})
