"""Azure's endpoint, deployment and model files read exactly as Azure's own SDK reads them.

The corpus under tests/azure_yaml was loaded with ``azure-ai-ml`` (bench/record_azure_yaml.py
wrote what it accepted and the values it produced, or the fields it refused, into
recorded.json); every file must read the same way here. Then the parts around the files: line
numbers, suggestions, enums, ``${{azureml://connections/...}}`` and az's flags on a real server.
"""

from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import Any

import pytest

from flowport.connections import ConnectionSpecError, StaticConnections, build_connection
from flowport.connections.references import resolve_connection_references
from flowport.control import specs
from flowport.control.specs import SpecError, apply_set, read_yaml
from tests.endpoint_harness import FLOWS, Flowport

CORPUS = Path(__file__).parent / "azure_yaml"
ROOT = Path(__file__).parents[1]
RECORDED = json.loads((CORPUS / "recorded.json").read_text())["files"]
PARSERS = {"endpoint": specs.parse_endpoint, "deployment": specs.parse_deployment, "model": specs.parse_model}

STRICTER = {
    "endpoint/name-double-dash.yml": "name",
    "model/name-punctuation.yml": "name",
    "deployment/timeout-over-limit.yml": "request_settings.request_timeout_ms",
}
"""Files the SDK lets through and Azure's service refuses (its documented names and limits):
flowport refuses them when it reads them, naming the field."""


def _parse(case: str) -> Any:
    kind = case.split("/")[0]
    file = CORPUS / case
    raw = read_yaml(file.read_text(), str(file))
    if kind == "endpoint":
        return specs.parse_endpoint(raw, str(file))
    return PARSERS[kind](raw, str(file), file.parent)


def _text(value: Any) -> str:
    """An environment variable's value as Azure sends it: the JSON spelling of the YAML value."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return json.dumps(value)
    return str(value)


def _endpoint_view(spec: Any) -> dict[str, Any]:
    return {
        "name": spec.name,
        "auth_mode": spec.auth_mode,
        "description": spec.description or None,
        "tags": spec.tags,
        "traffic": spec.traffic or {},
        "mirror_traffic": spec.mirror_traffic or {},
        **spec.extras,
    }


def _deployment_view(spec: Any, recorded: dict[str, Any]) -> dict[str, Any]:
    settings = {
        "request_timeout_ms": spec.request_timeout_ms,
        "max_concurrent_requests_per_instance": spec.max_concurrent_requests_per_instance,
    }
    view = {
        "name": spec.name,
        "endpoint_name": spec.endpoint_name,
        "instance_type": spec.instance_type,
        "instance_count": spec.instance_count,
        "environment_variables": spec.environment_variables,
        "request_settings": settings,
        "liveness_probe": spec.liveness_probe.__dict__,
        "readiness_probe": spec.readiness_probe.__dict__,
        "app_insights_enabled": False,
        "type": "managed",
        "tags": spec.tags,
        **spec.extras,
    }
    if spec.model_ref is not None:
        view["model"] = f"azureml:{spec.model_ref}"
    else:
        view["model"] = {"path": spec.model_path, "properties": spec.model_properties}
    if spec.data_collector is not None:
        collector = spec.data_collector
        view["data_collector"] = {
            "rolling_rate": collector.rolling_rate.lower(),
            "sampling_rate": collector.sampling_rate,
            "collections": {k: {"enabled": getattr(collector, k)} for k in ("request", "response")},
        }
    return view


def _expected_deployment(value: dict[str, Any]) -> dict[str, Any]:
    """The SDK's values in flowport's terms: variables as text, enabled flags as booleans."""
    expected = dict(value)
    expected["environment_variables"] = {k: _text(v) for k, v in value["environment_variables"].items()}
    if isinstance(value["model"], dict):
        model = value["model"]
        expected["model"] = {"path": (ROOT / model["path"]).resolve(), "properties": model["properties"]}
    if "data_collector" in value:
        collector = dict(value["data_collector"])
        collector["collections"] = {
            name: {"enabled": str(body["enabled"]).lower() == "true"}
            for name, body in collector["collections"].items()
        }
        expected["data_collector"] = collector
    return expected


def _model_view(spec: Any) -> dict[str, Any]:
    return {
        "name": spec.name,
        "version": spec.version,
        "path": spec.path,
        "description": spec.description or None,
        "tags": spec.tags,
        "properties": spec.properties,
    }


NOT_APPLIED = {"$schema", "environment", "provisioning_state", "scoring_uri", "stage", "resources"}
NOT_APPLIED |= {"private_network_connection", "model_mount_path", "compute", "max_queue_wait_ms"}
"""Fields flowport keeps (or notes) without applying: docs/endpoints.md says which and why."""


def _same(ours: dict[str, Any], theirs: dict[str, Any], case: str) -> None:
    """Every field the SDK produced has the same value here (sub-fields it left out: defaults)."""
    model = case.startswith("model/")
    for key, value in theirs.items():
        if key in NOT_APPLIED or (key == "type" and model) or (key == "properties" and not model):
            continue
        mine = ours.get(key)
        if key == "tags":
            value = {k: _text(v) for k, v in value.items()}  # tags are text, as Azure stores them
        if isinstance(value, dict) and isinstance(mine, dict) and key != "environment_variables":
            for sub, sub_value in value.items():
                if sub in NOT_APPLIED:
                    continue
                assert mine.get(sub) == sub_value, (
                    f"{case}: {key}.{sub} is {mine.get(sub)!r}, Azure {sub_value!r}"
                )
        else:
            assert mine == value, f"{case}: {key} is {mine!r}, Azure reads {value!r}"


@pytest.mark.parametrize("case", sorted(RECORDED))
def test_each_file_reads_as_azure_ai_ml_reads_it(case: str) -> None:
    recorded = RECORDED[case]
    if recorded["accepted"] and case not in STRICTER:
        spec = _parse(case)
        kind = case.split("/")[0]
        theirs = recorded["value"]
        if kind == "endpoint":
            _same(_endpoint_view(spec), theirs, case)
        elif kind == "deployment":
            _same(_deployment_view(spec, theirs), _expected_deployment(theirs), case)
        else:
            theirs = {**theirs, "path": (ROOT / theirs["path"]).resolve()}
            _same(_model_view(spec), theirs, case)
        return
    with pytest.raises(SpecError) as caught:
        _parse(case)
    problems = caught.value.problems
    assert all(p.file == str(CORPUS / case) and p.line for p in problems), problems
    fields = {p.message.split(":")[0] for p in problems}
    refused = {STRICTER[case]} if case in STRICTER else set(recorded["errors"])
    refused = {"version" if f == "" else f for f in refused}  # the SDK names no field for a date version
    for field in refused:
        assert any(f == field or f.startswith(f"{field}.") for f in fields), (case, field, fields)


def test_the_corpus_is_recorded_whole() -> None:
    files = {f"{p.parent.name}/{p.name}" for kind in PARSERS for p in (CORPUS / kind).glob("*.yml")}
    assert files == set(RECORDED), "run bench/record_azure_yaml.py after changing tests/azure_yaml"


def test_yaml_11_scalars_become_azures_values() -> None:
    spec = _parse("deployment/yaml11-scalars.yml")
    assert spec.instance_count == 8  # 010: octal
    assert spec.request_timeout_ms == 90  # 1:30: base 60
    assert spec.extras["app_insights_enabled"] is True  # on
    assert spec.environment_variables["FLAG"] == "true"
    assert spec.environment_variables["MODE"] == "false"
    assert spec.environment_variables["QUOTED"] == "yes"
    assert spec.environment_variables["DAY"] == "2024-01-01"
    assert "environment_variables.FLAG: YAML 1.1 reads it as true; quote it to keep the text" in spec.notes
    assert isinstance(read_yaml("d: 2024-01-01\n", "x.yml")["d"], datetime.date)


def test_an_unknown_field_names_file_line_and_the_nearest_field() -> None:
    with pytest.raises(SpecError) as caught:
        _parse("deployment/typo-request-settings.yml")
    (problem,) = caught.value.problems
    assert (problem.file, problem.line) == (str(CORPUS / "deployment/typo-request-settings.yml"), 6)
    assert problem.message == (
        "request_settings.request_timeout: is not a field of request_settings; "
        "did you mean 'request_timeout_ms'?"
    )


def test_azure_only_fields_stay_notes() -> None:
    spec = _parse("deployment/private-network.yml")
    noted = {note.split(":")[0] for note in spec.notes}
    assert {"private_network_connection", "model_mount_path", "instance_type"} <= noted
    shown = _parse("endpoint/read-only-fields.yml")
    assert {"provisioning_state", "scoring_uri"} <= {note.split(":")[0] for note in shown.notes}


def test_an_enum_value_read_as_a_boolean_says_to_quote_it() -> None:
    with pytest.raises(SpecError) as caught:
        _parse("endpoint/network-boolean.yml")
    (problem,) = caught.value.problems
    assert problem.line == 3
    assert problem.message == (
        "public_network_access: must be one of enabled, disabled, got true "
        "(YAML 1.1 reads unquoted yes/no/on/off as booleans; quote the value)"
    )


def test_scale_settings_type_follows_the_deployment_kind() -> None:
    managed = _parse("deployment/scale-default.yml")
    assert managed.extras["scale_settings"] == {"type": "default"}
    kubernetes = _parse("deployment/kubernetes-target-utilization.yml")
    assert kubernetes.extras["scale_settings"]["type"] == "target_utilization"
    # Azure takes target_utilization on Kubernetes only; flowport keeps it for a Kubernetes export
    on_managed = _parse("deployment/scale-target-on-managed.yml")
    assert on_managed.extras["scale_settings"] == {"type": "target_utilization"}
    assert any(
        note.startswith("scale_settings.type: target_utilization: Azure takes") for note in on_managed.notes
    )
    with pytest.raises(SpecError, match=r"scale_settings.type: must be one of default, target_utilization"):
        _parse("deployment/scale-unknown.yml")


def test_defaults_follow_the_prompt_flow_guide_for_flows_and_azure_for_scripts() -> None:
    flow = specs.parse_deployment({"name": "blue", "model": "m:1"})
    assert (flow.max_concurrent_requests_per_instance, flow.request_timeout_ms) == (10, 5000)
    assert (
        specs.parse_deployment(
            {"name": "blue", "model": "m:1", "request_settings": {"request_timeout_ms": 300000}}
        ).request_timeout_ms
        == 300000
    )
    script = {"name": "blue", "model": "m:1", "code_configuration": {"code": ".", "scoring_script": "s.py"}}
    assert specs.parse_deployment(script).max_concurrent_requests_per_instance == 1
    with pytest.raises(SpecError, match="between 1 and 180000"):
        specs.parse_deployment({**script, "request_settings": {"request_timeout_ms": 300000}})


def test_a_deployment_error_keeps_its_line_through_set_assignments() -> None:
    text = "name: blue\nmodel: m:1\nliveness_probe:\n  period: often\n"
    raw = apply_set(read_yaml(text, "d.yml"), ["instance_count=2"])
    raw["endpoint_name"] = "my-ep"
    with pytest.raises(SpecError) as caught:
        specs.parse_deployment(raw, "d.yml")
    (problem,) = caught.value.problems
    assert (problem.file, problem.line, problem.message.split(":")[0]) == (
        "d.yml",
        4,
        "liveness_probe.period",
    )


def test_az_update_flags_add_remove_and_force_string() -> None:
    raw = {"name": "blue", "tags": {"a": "1"}, "description": "x", "items": [1]}
    changed = apply_set(
        raw,
        ["description=010"],
        force_string=True,
        add=[("tags", "team=ml"), ("items", "2")],
        remove=["tags.a"],
    )
    assert changed["description"] == "010"
    assert changed["tags"] == {"team": "ml"}
    assert changed["items"] == [1, "2"]
    with pytest.raises(SpecError, match="--remove nothing: no such field"):
        apply_set(raw, [], remove=["nothing"])


def test_an_alias_loop_in_an_azure_file_is_refused() -> None:
    with pytest.raises(SpecError) as caught:
        read_yaml("a: &a [*a]\n", "loop.yml")  # the alias bomb: tests/test_specs.py
    assert caught.value.problems[0].code == "RecursiveAlias"


def test_connection_references_resolve_to_the_connection_and_its_fields() -> None:
    other = build_connection(
        "other",
        "AzureOpenAI",
        {"api_base": "https://aoai", "api_type": "azure", "api_version": "2024-02-01"},
        {"api_key": "sk-other"},
    )
    source = StaticConnections({"other": other})
    variables = {
        "my_connection": "${{azureml://connections/other}}",
        "KEY": "${{azureml://connections/other/credentials/key}}",
        "BASE": "${{azureml://connections/other/target}}",
        "VERSION": "${{azureml://connections/other/metadata/ApiVersion}}",
        "PLAIN": "text",
    }
    resolved, names = resolve_connection_references(variables, source)
    assert resolved == {
        "my_connection": "other",
        "KEY": "sk-other",
        "BASE": "https://aoai",
        "VERSION": "2024-02-01",
        "PLAIN": "text",
    }
    assert names == {"other"}
    with pytest.raises(ConnectionSpecError) as caught:
        resolve_connection_references({"my_connection": "${{azureml://connections/gone}}"}, source)
    assert str(caught.value) == (
        "environment_variables.my_connection: connection 'gone' does not exist; create it "
        "(flowport connection create --file ...) or name another one"
    )


def test_a_malformed_connection_reference_is_a_field_error() -> None:
    text = "name: blue\nmodel: m:1\nenvironment_variables:\n  C: ${{azureml://connections/}}\n"
    with pytest.raises(SpecError) as caught:
        specs.parse_deployment(read_yaml(text, "d.yml"), "d.yml")
    (problem,) = caught.value.problems
    assert problem.line == 4
    assert problem.message.startswith("environment_variables.C: '${{azureml://connections/}}' is not a")


CONNECTION_FLOW = """\
inputs:
  text:
    type: string
outputs:
  out:
    type: string
    reference: ${show.output}
nodes:
- name: show
  type: python
  source:
    type: code
    path: show.py
  inputs:
    conn: my_connection
    text: ${inputs.text}
"""

CONNECTION_TOOL = """\
import os

from promptflow.connections import CustomConnection
from promptflow.core import tool


@tool
def show(conn: CustomConnection, text: str) -> str:
    return f"{conn.configs['where']} {os.environ['my_connection']} {text}"
"""


def test_a_deployment_uses_a_connection_by_reference_and_a_missing_one_fails_in_one_line(
    tmp_path: Path,
) -> None:
    flow = tmp_path / "flow"
    flow.mkdir()
    (flow / "flow.dag.yaml").write_text(CONNECTION_FLOW)
    (flow / "show.py").write_text(CONNECTION_TOOL)
    with Flowport(tmp_path / "home") as fp:
        for name, where in (("my_connection", "default"), ("other_connection", "other")):
            spec = {"type": "custom", "configs": {"where": where}, "secrets": {"token": f"s-{where}"}}
            fp.ok("PUT", f"/connections/{name}", json=spec)
        fp.cli("online-endpoint", "create", "-n", "refs", "--auth-mode", "aad_token")
        fp.cli("online-endpoint", "update", "-n", "refs", "--add", "tags", "team=ml", "--set", "tags.env=dev")
        fp.cli("online-endpoint", "update", "-n", "refs", "--set", "description=yes", "--remove", "tags.team")
        shown = json.loads(fp.cli("online-endpoint", "show", "-n", "refs").stdout)
        assert (shown["tags"], shown["description"]) == ({"env": "dev"}, "yes")
        assert shown["auth_mode"] == "aad_token"
        deployment = tmp_path / "blue.yml"
        deployment.write_text(
            "name: blue\nendpoint_name: refs\nmodel:\n  path: flow\ninstance_type: Standard_DS3_v2\n"
            "environment_variables:\n  my_connection: ${{azureml://connections/other_connection}}\n"
        )
        fp.cli("online-deployment", "create", "--file", str(deployment), "--all-traffic")
        token = fp.ok("POST", "/endpoints/refs/credentials")["accessToken"]
        answer = fp.score("refs", {"text": "hi"}, key=token)
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"out": "other other_connection hi"}
        shown = json.loads(fp.cli("online-deployment", "show", "-n", "blue", "--endpoint", "refs").stdout)
        assert (
            shown["environment_variables"]["my_connection"] == "${{azureml://connections/other_connection}}"
        )
        logs = fp.cli("online-deployment", "get-logs", "--name", "blue", "--endpoint", "refs", "--lines", "5")
        assert 0 < len(logs.stdout.splitlines()) <= 5

        deployment.write_text(
            deployment.read_text().replace("other_connection", "gone").replace("blue", "green")
        )
        failed = fp.cli("online-deployment", "create", "--file", str(deployment), check=False)
        assert failed.returncode == 1
        assert failed.stderr.strip().splitlines() == [
            "error: environment_variables.my_connection: connection 'gone' does not exist; create it "
            "(flowport connection create --file ...) or name another one [ConnectionNotFound, HTTP 400]"
        ]
        assert "Traceback" not in failed.stdout + failed.stderr

        # a field error in a deployment file names the file and the line, through the API too
        deployment.write_text(deployment.read_text() + "liveness_probe:\n  perod: 5\n")
        typo = fp.cli("online-deployment", "create", "--file", str(deployment), check=False)
        assert (
            f"{deployment}:9: liveness_probe.perod: is not a field of liveness_probe; did you mean 'period'?"
            in (typo.stderr)
        )

        # a connection deleted under a running deployment: the restart fails in one line, shown
        fp.ok("DELETE", "/connections/other_connection")
        fp.restart()
        shown = fp.ok("GET", "/endpoints/refs/deployments/blue")
        assert shown["provisioning_state"] == "Failed"
        assert "connection 'other_connection' does not exist" in shown["error"]["reason"]
        assert "Traceback" not in json.dumps(shown)


def test_model_create_checks_the_flows_tools_before_registering(tmp_path: Path) -> None:
    flow = tmp_path / "broken"
    flow.mkdir()
    (flow / "flow.dag.yaml").write_text(CONNECTION_FLOW)
    (flow / "show.py").write_text("import not_a_module_anywhere\n")
    with Flowport(tmp_path / "home") as fp:
        done = fp.cli("model", "create", "-n", "broken", "-p", str(flow), "-t", "custom_model", check=False)
        assert done.returncode == 1
        assert "show.py" in done.stderr and "not_a_module_anywhere" in done.stderr
        assert "Traceback" not in done.stderr
        assert fp.ok("GET", "/models") == []
        probe = fp.cli("model", "create", "-n", "probe", "-p", str(FLOWS / "probe"), "-d", "010")
        assert json.loads(probe.stdout)["description"] == "010"
        [archived] = json.loads(fp.cli("model", "archive", "-n", "probe", "-v", "1").stdout)
        assert (archived["id"], archived["archived"]) == ("azureml:probe:1", True)
        assert fp.ok("GET", "/models") == []  # archived: out of the list
