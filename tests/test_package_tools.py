"""Package tools installed in the flow's environment: flow test, validate, model create, deployments.

The tools come from tests/tool_packages/my_tools, a real package with a ``package_tools`` entry
point; what prompt flow 1.18.5 answers for it is recorded in tests/flows/package_installed (the
parity test replays it in this process). Here: the command line, the errors when the package is
missing, and a deployment whose requirements.txt installs the package from the flow's folder.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from flowport.connections import ConnectionResolver, ConnectionService
from flowport.connections.service import connection_row
from flowport.control.errors import ApiError
from flowport.control.models import snapshot_flow
from flowport.engine import FlowExecutor
from flowport.flow import FlowError
from flowport.runtime.base import DeploymentFailed, DeploymentKey, DeploymentPlan, InstanceConfig
from flowport.runtime.local import LocalRuntime
from tests.conftest import FLOWS, TOOL_PACKAGE
from tests.test_cli import flowport

FLOW = FLOWS / "package_installed"
EXPECTED = json.loads((FLOW / "cases.json").read_text())[0]["expected"]
KEY = DeploymentKey("ep", "blue")


def test_flow_test_runs_the_tools_of_an_installed_package(
    home: Path, openai_connection: ConnectionService, tool_package_site: Path
) -> None:
    site = {"PYTHONPATH": str(tool_package_site)}
    done = flowport("flow", "test", "--flow", str(FLOW), home=home, env=site)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == EXPECTED  # what pf flow test printed


def test_a_missing_package_is_one_line_naming_the_tool_the_package_and_the_fix(
    home: Path, openai_connection: ConnectionService
) -> None:
    for verb in ("test", "validate"):
        done = flowport("flow", verb, "--flow", str(FLOW), home=home)
        assert done.returncode == 1
        assert "Traceback" not in done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1, lines
        assert "flow.dag.yaml:23: node 'greet': package tool 'my_tools.tools.greet' is not" in lines[0]
        assert "module 'my_tools'" in lines[0] and "requirements.txt" in lines[0]
        assert lines[0].endswith("[PackageToolNotFoundError]")


@pytest.mark.usefixtures("tool_package")
@pytest.mark.parametrize(
    "name",
    [
        "err_package_installed_template_clash",
        "err_package_installed_init_reference",
        "err_package_installed_init_missing",
        "err_package_installed_connection_type",
    ],
)
def test_a_package_node_that_cannot_load_says_what_prompt_flow_says(
    name: str, openai_connection: ConnectionService
) -> None:
    [case] = json.loads((FLOWS / name / "cases.json").read_text())
    recorded = case["expected_error"]  # printed: "...: Tool load failed in 'x': (Code) message"
    code = recorded["inner_code"]
    message = recorded["printed"].split(f"({code}) ", 1)[1]
    with pytest.raises(FlowError) as info:
        FlowExecutor.load(FLOWS / name, connections=ConnectionResolver(openai_connection))
    [problem] = info.value.problems
    assert problem.code == code
    assert problem.message == message


def test_model_create_names_a_missing_package_unless_requirements_bring_it(tmp_path: Path) -> None:
    flow = tmp_path / "flow"
    shutil.copytree(FLOW, flow, ignore=shutil.ignore_patterns("cases.json"))
    with pytest.raises(ApiError) as info:
        snapshot_flow(flow, tmp_path / "home" / "models")
    assert info.value.status == 400
    assert [p.code for p in info.value.problems] == ["PackageToolNotFoundError"] * 3
    assert "requirements.txt" in info.value.problems[0].message
    (flow / "requirements.txt").write_text("./my_tools\n")
    snapshot, _, _ = snapshot_flow(flow, tmp_path / "home" / "models")
    assert (snapshot / "requirements.txt").is_file()


def deployment_plan(folder: Path, stored: ConnectionService) -> DeploymentPlan:
    """What the control plane hands the runtime: the flow's connections in clear, its requirements."""
    names = ("open_ai_connection", "custom_connection")
    connections = {name: connection_row(stored.get(name)) for name in names}
    return DeploymentPlan(
        key=KEY,
        revision="r1",
        instance_count=1,
        config=InstanceConfig(source=str(folder), connections=connections),
        requirements=folder / "requirements.txt",
    )


@pytest.fixture
async def runtime(tmp_path: Path, home: Path) -> AsyncIterator[LocalRuntime]:
    runtime = LocalRuntime(tmp_path / "state", drain_seconds=5)
    yield runtime
    await runtime.close()


async def test_a_deployment_installs_the_package_from_its_requirements(
    runtime: LocalRuntime,
    tmp_path: Path,
    openai_connection: ConnectionService,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PIP_NO_INDEX", "1")  # the package builds with its own backend: no network
    folder = tmp_path / "flow"
    shutil.copytree(FLOW, folder, ignore=shutil.ignore_patterns("cases.json"))
    shutil.copytree(TOOL_PACKAGE, folder / "my_tools", ignore=shutil.ignore_patterns("__pycache__"))
    (folder / "requirements.txt").write_text("./my_tools\n")
    await runtime.apply(deployment_plan(folder, openai_connection))
    (state,) = runtime.instances(KEY)
    transport = httpx.AsyncHTTPTransport(uds=state.address.removeprefix("unix:"))
    async with httpx.AsyncClient(transport=transport, base_url="http://instance") as client:
        response = await client.post("/score", json={}, timeout=30)
    assert response.status_code == 200, response.text
    assert response.json() == EXPECTED


async def test_a_deployment_without_the_package_fails_naming_it(
    runtime: LocalRuntime,
    tmp_path: Path,
    openai_connection: ConnectionService,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    folder = tmp_path / "flow"
    shutil.copytree(FLOW, folder, ignore=shutil.ignore_patterns("cases.json"))
    (folder / "requirements.txt").write_text("pyyaml\n")  # already satisfied: not the tool package
    with pytest.raises(DeploymentFailed) as failed:
        await runtime.apply(deployment_plan(folder, openai_connection))
    shown = failed.value.reason + "\n" + "\n".join(failed.value.log_tail)
    assert "package tool 'my_tools.tools.greet' is not installed" in shown
    assert "requirements.txt" in shown
    assert "Traceback" not in shown


def test_an_endpoint_deployment_whose_requirements_install_the_package(
    home: Path, openai_connection: ConnectionService, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.endpoint_harness import Flowport

    monkeypatch.setenv("PIP_NO_INDEX", "1")  # the server's pip: the package needs no network
    folder = tmp_path / "flow"
    shutil.copytree(FLOW, folder, ignore=shutil.ignore_patterns("cases.json"))
    shutil.copytree(TOOL_PACKAGE, folder / "my_tools", ignore=shutil.ignore_patterns("__pycache__"))
    (folder / "requirements.txt").write_text("./my_tools\n")
    with Flowport(home) as fp:
        fp.endpoint("tools")
        fp.deploy("tools", "blue", model={"path": str(folder)})
        assert fp.traffic("tools", blue=100).status_code == 200
        answer = fp.score("tools", {})
        assert answer.status_code == 200, answer.text
        assert answer.json() == EXPECTED


@pytest.mark.usefixtures("tool_package")
def test_flow_serve_answers_with_the_package_tools(openai_connection: ConnectionService) -> None:
    from flowport.serving import ScoringApp, ServeSettings
    from flowport.testing.threaded_server import ThreadedServer

    executor = FlowExecutor.load(FLOW, connections=ConnectionResolver(openai_connection))
    server = ThreadedServer(ScoringApp(executor, ServeSettings()), lifespan="on").start()
    try:
        answer = httpx.post(f"{server.url}/score", json={})
    finally:
        server.stop()
    assert answer.status_code == 200, answer.text
    assert answer.json() == EXPECTED
