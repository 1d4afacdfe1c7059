"""Azure's model, endpoint and deployment YAML as flowport reads it: values, notes, errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from flowport.control.specs import (
    SpecError,
    apply_set,
    parse_deployment,
    parse_endpoint,
    parse_model,
    parse_model_reference,
    parse_traffic_flag,
    read_yaml,
)

AZURE = Path(__file__).parents[1] / "src" / "flowport" / "examples" / "azure"


def _read(name: str) -> object:
    return read_yaml((AZURE / name).read_text(), str(AZURE / name))


def test_the_azure_guide_endpoint_is_read_with_azure_only_fields_kept_and_noted() -> None:
    spec = parse_endpoint(_read("endpoint.yml"), "endpoint.yml")
    assert spec.name == "basic-chat-endpoint"
    assert spec.auth_mode == "key"
    assert spec.extras == {"properties": {"enforce_access_to_default_secret_stores": "enabled"}}
    assert [n.split(":")[0] for n in spec.notes] == ["properties"]
    assert spec.traffic is None


def test_the_azure_guide_deployment_is_read() -> None:
    spec = parse_deployment(_read("blue-deployment.yml"), "blue-deployment.yml", AZURE)
    assert (spec.name, spec.endpoint_name, spec.model_ref) == (
        "blue",
        "basic-chat-endpoint",
        "blue-chat-model:1",
    )
    assert spec.request_timeout_ms == 300000
    assert spec.max_concurrent_requests_per_instance == 10
    assert spec.instance_count == 1
    assert spec.environment_variables["PROMPTFLOW_RESPONSE_INCLUDED_FIELDS"] == '["answer"]'
    assert spec.extras["environment"]["image"].startswith("mcr.microsoft.com/")
    noted = {n.split(":")[0] for n in spec.notes}
    assert noted == {"environment", "instance_type"}


def test_inline_model_path_probes_and_data_collector() -> None:
    spec = parse_deployment(_read("green-deployment.yml"), "green-deployment.yml", AZURE)
    assert spec.model_ref is None
    assert spec.model_path == (AZURE.parent / "chat_basic").resolve()
    assert spec.readiness_probe.period == 5
    assert spec.liveness_probe.failure_threshold == 5
    assert spec.liveness_probe.timeout == 2  # Azure's default
    assert spec.data_collector is not None
    assert (spec.data_collector.request, spec.data_collector.response) == (True, True)
    assert spec.data_collector.rolling_rate == "Hour"


def test_the_azure_guide_model_resolves_its_path_against_the_file() -> None:
    spec = parse_model(_read("model.yaml"), "model.yaml", AZURE)
    assert spec.name == "blue-chat-model"
    assert spec.version is None
    assert spec.path == (AZURE.parent / "chat_basic").resolve()
    assert spec.properties["azureml.promptflow.mode"] == "chat"


@pytest.mark.parametrize("name", ["ab", "1abc", "a--b", "abc-", "a_b", "x" * 33])
def test_invalid_names_are_errors_naming_the_rule(name: str) -> None:
    with pytest.raises(SpecError) as caught:
        parse_endpoint({"name": name})
    assert "3-32 characters" in str(caught.value)


@pytest.mark.parametrize("name", ["abc", "my-endpoint-1", "A" + "b" * 31])
def test_valid_names(name: str) -> None:
    assert parse_endpoint({"name": name}).name == name


def test_invalid_values_name_the_field_file_and_line() -> None:
    text = "name: blue\nmodel: m:1\ninstance_count: many\nrequest_settings:\n  request_timeout_ms: 900000\n"
    with pytest.raises(SpecError) as caught:
        parse_deployment(read_yaml(text, "d.yml"), "d.yml")
    problems = {p.message.split(":")[0]: p for p in caught.value.problems}
    assert problems["instance_count"].line == 3
    assert problems["instance_count"].file == "d.yml"
    assert "whole number" in problems["instance_count"].message
    assert problems["request_settings.request_timeout_ms"].line == 5
    assert "between 1 and 300000" in problems["request_settings.request_timeout_ms"].message


def test_unknown_fields_are_errors_naming_the_nearest_field() -> None:
    with pytest.raises(SpecError) as caught:
        parse_deployment({"name": "blue", "model": "m:1", "instance_cont": 2})
    assert str(caught.value.problems[0].message) == (
        "instance_cont: is not a field of a deployment; did you mean 'instance_count'?"
    )


def test_aad_token_is_accepted_as_flowports_own_tokens() -> None:
    assert parse_endpoint({"name": "abc", "auth_mode": "aad_token"}).auth_mode == "aad_token"
    with pytest.raises(SpecError, match="must be one of key, aml_token, aad_token, got 'token'"):
        parse_endpoint({"name": "abc", "auth_mode": "token"})


def test_mirror_traffic_shape() -> None:
    with pytest.raises(SpecError, match="at most 50 percent"):
        parse_endpoint({"name": "abc", "mirror_traffic": {"green": 60}})
    with pytest.raises(SpecError, match="one deployment only"):
        parse_endpoint({"name": "abc", "mirror_traffic": {"green": 10, "red": 10}})


def test_model_references() -> None:
    assert parse_model_reference("azureml:chat:3") == ("chat", "3")
    assert parse_model_reference("chat:3") == ("chat", "3")
    assert parse_model_reference("azureml:chat@latest") == ("chat", None)
    with pytest.raises(SpecError):
        parse_model_reference("azureml://registries/x/models/y")


def test_set_assignments_read_yaml_scalars_and_make_paths() -> None:
    raw = apply_set(
        {"name": "blue", "instance_count": 1},
        ["instance_count=3", "request_settings.request_timeout_ms=9000"],
    )
    assert raw["instance_count"] == 3
    assert raw["request_settings"] == {"request_timeout_ms": 9000}
    with pytest.raises(SpecError, match="path=value"):
        apply_set({}, ["nothing"])


def test_traffic_flag() -> None:
    assert parse_traffic_flag("blue=90 green=10", "--traffic") == {"blue": 90, "green": 10}
    with pytest.raises(SpecError, match="name=percent"):
        parse_traffic_flag("blue:90", "--traffic")


def test_a_set_value_that_is_not_yaml_is_a_spec_error() -> None:
    with pytest.raises(SpecError) as caught:
        apply_set({"name": "blue"}, ["description=[unclosed"])
    problem = caught.value.problems[0]
    assert problem.code == "InvalidSet"
    assert problem.message.startswith("--set description: the value is not valid YAML")


def test_a_list_as_an_environment_variable_names_the_variable_and_line() -> None:
    text = "name: blue\nmodel: m:1\nenvironment_variables:\n  OK: text\n  LISTED: [a, b]\n"
    with pytest.raises(SpecError) as caught:
        parse_deployment(read_yaml(text, "d.yml"), "d.yml")
    problem = caught.value.problems[0]
    assert (problem.file, problem.line) == ("d.yml", 5)
    assert (
        problem.message == "environment_variables.LISTED: must be a string, got a list; quote it to pass text"
    )


def test_an_oversized_field_is_named() -> None:
    from flowport.control.specs import MAX_FIELD_CHARS

    with pytest.raises(SpecError) as caught:
        parse_endpoint({"name": "abc", "description": "x" * (MAX_FIELD_CHARS + 1)})
    assert caught.value.problems[0].message.startswith("description: is 65,537 characters long")
    with pytest.raises(SpecError, match=r"tags\.big: is"):
        parse_endpoint({"name": "abc", "tags": {"big": "x" * (MAX_FIELD_CHARS + 1)}})


def test_an_oversized_document_is_refused_before_it_is_read() -> None:
    from flowport.control.specs import MAX_DOCUMENT_BYTES

    fields = {f"azure_{i}": "x" * 60_000 for i in range(MAX_DOCUMENT_BYTES // 60_000 + 1)}
    with pytest.raises(SpecError) as caught:
        parse_deployment({"name": "blue", "model": "m:1", **fields}, "d.yml")
    problem = caught.value.problems[0]
    assert (problem.code, problem.file) == ("DocumentTooLarge", "d.yml")


def test_an_alias_bomb_in_azure_yaml_is_refused_with_file_and_line() -> None:
    bomb = "name: blue\nmodel: m:1\ntags:\n  a: &a [x, x, x, x, x, x, x, x, x, x]\n"
    previous = "a"
    for name in "bcdef":
        bomb += f"  {name}: &{name} [{', '.join([f'*{previous}'] * 10)}]\n"
        previous = name
    with pytest.raises(SpecError) as caught:
        read_yaml(bomb, "bomb.yml")
    problem = caught.value.problems[0]
    assert (problem.code, problem.file) == ("YamlTooLarge", "bomb.yml")
    assert problem.line == 8  # "e" expands to over 10**5 values


def test_secret_environment_variables_mark_variables_by_name() -> None:
    text = (
        "name: blue\nmodel: m:1\nenvironment_variables:\n  API_URL: https://inside\n  LEVEL: info\n"
        "secret_environment_variables: [API_URL, API_URL]\n"
    )
    spec = parse_deployment(read_yaml(text, "d.yml"), "d.yml")
    assert spec.secret_environment_variables == ("API_URL",)
    assert spec.environment_variables == {"API_URL": "https://inside", "LEVEL": "info"}
    assert spec.notes == ()


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("API_URL", "must be a list of names from environment_variables, got str"),
        ("{API_URL: x}", "must be a list of names from environment_variables, got a mapping"),
        ("[1]", "must list names of environment_variables, each a string"),
        ("[MISSING]", "'MISSING' is not in environment_variables; list only variables the deployment sets"),
    ],
)
def test_bad_secret_environment_variables_name_the_field_and_line(value: str, message: str) -> None:
    variables = "environment_variables:\n  API_URL: x\n"
    text = f"name: blue\nmodel: m:1\n{variables}secret_environment_variables: {value}\n"
    with pytest.raises(SpecError) as caught:
        parse_deployment(read_yaml(text, "d.yml"), "d.yml")
    (problem,) = caught.value.problems
    assert (problem.file, problem.line) == ("d.yml", 5)
    assert problem.message == f"secret_environment_variables: {message}"
