"""Registered environments (``flowport environment ...``) and what a local deployment takes from one.

Real server, real pip: the packages are tiny wheels built here, installed offline.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from flowport.cli.api_client import ApiClient
from flowport.cli.build_cmds import _environment
from flowport.control.environments import conda_environment, read_dockerfile
from flowport.control.errors import ApiError
from flowport.control.specs import SpecError, parse_deployment, parse_environment, read_yaml
from tests.endpoint_harness import Flowport
from tests.test_scoring_scripts import _script, _wheel

PYTHON = ".".join(map(str, sys.version_info[:2]))
SCRIPT = (
    "import flowport_envdep\n\ndef init():\n    pass\n\n"
    "def run(raw_data):\n    return {'answer': flowport_envdep.ANSWER}\n"
)


@pytest.fixture
def any_store(home: Path, database_url: str) -> Iterator[Flowport]:
    """SQLite and (with FLOWPORT_TEST_DATABASE_URL) PostgreSQL."""
    with Flowport(home, database_url) as fp:
        yield fp


def _deployment_yaml(folder: Path, endpoint: str, environment: str) -> Path:
    path = folder / "blue.yml"
    path.write_text(
        "$schema: https://azuremlschemas.azureedge.net/latest/managedOnlineDeployment.schema.json\n"
        f"name: blue\nendpoint_name: {endpoint}\n"
        "code_configuration:\n  code: ./src\n  scoring_script: score.py\n"
        f"environment: {environment}\n"
        "instance_count: 1\n"
    )
    return path


def test_a_registered_environment_installs_its_conda_packages_for_a_script(
    any_store: Flowport, tmp_path: Path
) -> None:
    fp = any_store
    _wheel(tmp_path / "env" / "wheels", "flowport_envdep", "1.0", "ANSWER = 7\n")
    (tmp_path / "env" / "conda.yml").write_text(
        f"name: tiny\ndependencies:\n  - python={PYTHON}\n  - pip\n"
        "  - pip:\n    - ./wheels/flowport_envdep-1.0-py3-none-any.whl\n"
    )
    (tmp_path / "env.yml").write_text(
        "$schema: https://azuremlschemas.azureedge.net/latest/environment.schema.json\n"
        "name: env\nversion: 1\n"
        "image: mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu22.04:latest\n"
        "conda_file: ./env/conda.yml\ndescription: a tiny environment\n"
    )
    created = json.loads(fp.cli("environment", "create", "--file", "env.yml", cwd=tmp_path).stdout)
    assert created["id"] == "azureml:env:1"
    assert created["conda_file"]["name"] == "tiny"  # the conda file's content is kept
    assert created["pip_requirements"] == [
        str(tmp_path / "env" / "wheels" / "flowport_envdep-1.0-py3-none-any.whl")
    ]
    again = fp.cli("environment", "create", "--file", "env.yml", cwd=tmp_path, check=False)
    assert again.returncode != 0 and "env:1 already exists" in again.stderr + again.stdout
    second = fp.cli("environment", "create", "--file", "env.yml", "--version", "2", cwd=tmp_path)
    assert json.loads(second.stdout)["version"] == "2"
    listed = fp.cli("environment", "list", "-o", "json").stdout
    assert [e["version"] for e in json.loads(listed)] == ["1", "2"]
    shown = json.loads(fp.cli("environment", "show", "-n", "env").stdout)
    assert shown["version"] == "2" and shown["description"] == "a tiny environment"

    _script(tmp_path / "src", SCRIPT)
    fp.endpoint("envs")
    _deployment_yaml(tmp_path, "envs", "azureml:env:1")
    created = fp.cli("online-deployment", "create", "--file", "blue.yml", cwd=tmp_path)
    assert "Succeeded" in created.stdout + created.stderr
    fp.traffic("envs", blue=100)
    answer = fp.score("envs", {})
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"answer": 7}
    deployment = fp.ok("GET", "/endpoints/envs/deployments/blue")
    assert deployment["environment"] == "azureml:env:1"

    archived = fp.cli("environment", "archive", "-n", "env", "-v", "2")
    assert json.loads(archived.stdout)[0]["archived"] is True
    assert json.loads(fp.cli("environment", "show", "-n", "env").stdout)["version"] == "1"  # latest live
    assert [e["version"] for e in json.loads(fp.cli("environment", "list", "-o", "json").stdout)] == ["1"]
    fp.cli("environment", "restore", "-n", "env", "-v", "2")
    assert json.loads(fp.cli("environment", "show", "-n", "env").stdout)["version"] == "2"

    deleted = fp.cli("environment", "delete", "-n", "env", "-v", "1")
    assert json.loads(deleted.stdout)[0]["id"] == "azureml:env:1"
    assert fp.cli("environment", "show", "-n", "env", "-v", "1", check=False).returncode != 0


def test_a_build_folder_applies_requirements_and_pip_lines_and_notes_the_rest(
    any_store: Flowport, tmp_path: Path
) -> None:
    fp = any_store
    build = tmp_path / "docker"
    _wheel(build / "wheels", "flowport_envdep", "2.0", "ANSWER = 'from requirements.txt'\n")
    _wheel(build / "wheels", "flowport_envtwo", "1.0", "TWO = 2\n")
    (build / "requirements.txt").write_text("# pinned\n./wheels/flowport_envdep-2.0-py3-none-any.whl\n")
    (build / "Dockerfile").write_text(
        "FROM mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu22.04\n"
        "RUN apt-get update && \\\n    apt-get install -y libgomp1\n"
        "COPY . /app\n"
        "RUN pip install --no-cache-dir ./wheels/flowport_envtwo-1.0-py3-none-any.whl\n"
    )
    (tmp_path / "env.yml").write_text("name: built\nbuild:\n  path: ./docker\n")
    done = fp.cli("environment", "create", "--file", "env.yml", cwd=tmp_path)
    created = json.loads(done.stdout)
    notes = done.stderr
    assert (
        "Dockerfile:2 RUN apt-get update" in notes and "Dockerfile:2 RUN apt-get install -y libgomp1" in notes
    )
    assert "Dockerfile:4 COPY" in notes and "pip install" not in notes.split("not applied:")[1].split(".")[0]
    assert created["version"] == "1" and created["build"]["dockerfile_path"] == "Dockerfile"
    snapshot = Path(created["build"]["path"])
    assert snapshot != build and (snapshot / "Dockerfile").is_file()  # snapshotted like a model

    by_flags = fp.cli("environment", "create", "--name", "flags", "--build-context", str(build))
    assert json.loads(by_flags.stdout)["build"]["path"] == str(snapshot)  # same content, one snapshot

    client = ApiClient(fp.url, fp.token)  # build-image builds the registered folder as the base
    assert _environment({"environment": "azureml:built:1"}, client) == (
        None,
        snapshot,
        snapshot / "Dockerfile",
    )

    _script(
        tmp_path / "src",
        "import flowport_envdep, flowport_envtwo\n\ndef init():\n    pass\n\n"
        "def run(raw_data):\n    return [flowport_envdep.ANSWER, flowport_envtwo.TWO]\n",
    )
    fp.endpoint("built")
    _deployment_yaml(tmp_path, "built", "azureml:built@latest")
    fp.cli("online-deployment", "create", "--file", "blue.yml", cwd=tmp_path)
    fp.traffic("built", blue=100)
    answer = fp.score("built", {})
    assert answer.status_code == 200, answer.text
    assert answer.json() == ["from requirements.txt", 2]

    # the same folder inline (environment.build in the deployment): applied and noted the same way
    inline = {
        "code_configuration": {"code": str(tmp_path / "src"), "scoring_script": "score.py"},
        "environment": {"build": {"path": str(build), "dockerfile_path": "Dockerfile"}},
    }
    body = fp.ok("POST", "/endpoints/built/deployments", params={"name": "green"}, json={"spec": inline})
    assert any("Dockerfile:2 RUN apt-get update" in note for note in body["notes"])
    assert fp.wait(body["operation"], timeout=180)["status"] == "Succeeded"
    pinned = fp.score("built", {}, **{"azureml-model-deployment": "green"})
    assert pinned.status_code == 200, pinned.text
    assert pinned.json() == ["from requirements.txt", 2]


def test_an_unknown_environment_is_one_line_naming_file_and_line(any_store: Flowport, tmp_path: Path) -> None:
    fp = any_store
    _script(tmp_path / "src", SCRIPT)
    fp.endpoint("noenv")
    _deployment_yaml(tmp_path, "noenv", "azureml:missing:3")
    done = fp.cli("online-deployment", "create", "--file", "blue.yml", cwd=tmp_path, check=False)
    assert done.returncode != 0
    error = done.stdout + done.stderr
    assert f"{tmp_path / 'blue.yml'}:7: environment: azureml:missing:3 does not exist" in error
    assert "Traceback" not in error

    (tmp_path / "bad-env.yml").write_text("name: bad\nimgae: python:3.11\nconda_file: ./conda.yml\n")
    refused = fp.cli("environment", "create", "--file", "bad-env.yml", cwd=tmp_path, check=False)
    assert refused.returncode != 0
    assert "bad-env.yml:2: imgae: is not a field of an environment; did you mean 'image'?" in refused.stderr


def test_the_environment_yaml_is_read_as_azure_documents_it(tmp_path: Path) -> None:
    spec = parse_environment(
        read_yaml(
            "name: e\nversion: 3\nimage: python:3.11\nconda_file:\n  dependencies: [pip]\n"
            "os_type: linux\ninference_config:\n  scoring_route: {port: 5001, path: /score}\n",
            "e.yml",
        ),
        "e.yml",
        tmp_path,
    )
    assert (spec.name, spec.version, spec.image) == ("e", "3", "python:3.11")
    assert spec.conda_inline == {"dependencies": ["pip"]} and spec.base_dir == tmp_path
    assert any(note.startswith("inference_config:") for note in spec.notes)
    with pytest.raises(SpecError) as both:
        parse_environment(read_yaml("name: e\nimage: x\nbuild: {path: .}\n", "e.yml"), "e.yml")
    assert "give image or build, not both" in str(both.value)
    with pytest.raises(SpecError) as neither:
        parse_environment(read_yaml("name: e\nconda_file: c.yml\n", "e.yml"), "e.yml")
    assert "one of image or build is required" in str(neither.value)


def test_an_inline_conda_mapping_reads_its_local_paths_from_the_files_folder(tmp_path: Path) -> None:
    inline = {"dependencies": ["pip", {"pip": ["./wheels/x-1.0-py3-none-any.whl", "six==1.16"]}]}
    pip = conda_environment(None, inline, "environment.conda_file", tmp_path).pip
    assert pip == (str(tmp_path / "wheels" / "x-1.0-py3-none-any.whl"), "six==1.16")
    spec = parse_deployment(
        read_yaml(
            "name: blue\ncode_configuration: {code: ./src, scoring_script: score.py}\n"
            "environment:\n  image: python:3.11\n  conda_file:\n    dependencies: [numpy=1.26]\n",
            "d.yml",
        ),
        "d.yml",
        tmp_path,
    )
    assert spec.conda_inline == {"dependencies": ["numpy=1.26"]} and spec.base_dir == tmp_path
    with pytest.raises(ApiError) as refused:
        conda_environment(None, {"dependencies": ["cudatoolkit=11.8"]}, "environment.conda_file")
    assert "cudatoolkit" in refused.value.message


def test_a_dockerfile_gives_its_pip_installs_and_notes_the_rest(tmp_path: Path) -> None:
    (tmp_path / "reqs.txt").write_text("six\n")
    (tmp_path / "Dockerfile").write_text(
        "FROM python:3.11-slim\nENV A=1\n# a comment\n"
        "RUN python -m pip install -U 'numpy==1.26.*' -r reqs.txt --index-url https://example.org/simple\n"
        "RUN echo hi; pip3 install requests\nWORKDIR /app\n"
    )
    read = read_dockerfile(tmp_path, "Dockerfile")
    assert read.pip == (
        "numpy==1.26.*",
        f"-r {tmp_path / 'reqs.txt'}",
        "--index-url https://example.org/simple",
        "requests",
    )
    assert "Dockerfile:5 RUN echo hi" in read.notes[0] and "Dockerfile:6 WORKDIR" in read.notes[0]
    assert "ENV" not in read.notes[0] and "FROM python:3.11-slim" in read.notes[1]
