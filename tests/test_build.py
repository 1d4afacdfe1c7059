"""Container images of flows: ``flowport flow build``, the image's entry, ``build-image``.

The build context is checked file by file (fast, always run); the image's entry runs here as a
plain process; an image is built with buildah and run with podman when this machine can (the
integration test at the end; it needs root, buildah, podman, runc, mmdebstrap, and pip's index
for the packages the image installs).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from flowport.build.builder import build_command, pip_secrets, pip_settings
from flowport.build.context import NO_REQUIREMENTS
from flowport.build.image import (
    CONNECTIONS_MOUNT,
    DEFAULT_BASE_IMAGE,
    FLOW_DIR,
    HEALTH_PATH,
    IMAGE_COMMAND,
    IMAGE_PORT,
    IMAGE_USER,
    MAX_CONCURRENT_ENV,
    PIP_CERT_SECRET,
    PIP_CONFIG_SECRET,
    REQUEST_TIMEOUT_ENV,
)
from flowport.build.wheel import source_checkout
from flowport.cli.build_cmds import _environment, environment_tag
from flowport.runtime.container import ContainerError, gather_connections
from flowport.serving import settings as serving_settings
from tests.conftest import FLOWS, free_port
from tests.endpoint_harness import Flowport
from tests.test_cli import flowport

BUILD_FLOWS = Path(__file__).parent / "build_flows"
GREET = BUILD_FLOWS / "greet"
SECRET = "sk-test-5a1t-never-in-an-image"
GREETING = {
    "name": "greeting",
    "type": "custom",
    "configs": {"salutation": "Hello"},
    "secrets": {"api_key": SECRET},
}


@pytest.fixture
def wheel(tmp_path: Path) -> Path:
    """A stand-in for flowport's wheel: the context tests only check that it is copied."""
    path = tmp_path / "wheels-in" / "flowport-0.0.0-py3-none-any.whl"
    path.parent.mkdir()
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("flowport/__init__.py", "")
    return path


def build(
    home: Path, source: Path, output: Path, wheel: Path, *extra: str
) -> subprocess.CompletedProcess[str]:
    return flowport(
        "flow", "build", "--source", str(source), "--output", str(output), "--flowport-wheel", str(wheel),
        *extra, home=home,
    )  # fmt: skip


def files_below(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


def test_context_holds_the_flow_with_its_includes_requirements_and_flowport(
    tmp_path: Path, wheel: Path
) -> None:
    out = tmp_path / "ctx"
    done = build(tmp_path / "home", FLOWS / "additional_includes", out, wheel)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"output": str(out), "connections": [], "environment": []}
    assert files_below(out) == {
        ".dockerignore", ".flowport-build", "Dockerfile", "README.md", "requirements.txt", "settings.json",
        "wheels/flowport-0.0.0-py3-none-any.whl",
        "flow/flow.dag.yaml", "flow/use_helpers.py", "flow/cases.json",
        "flow/helpers.py", "flow/shared_prompt.jinja2",
        "flow/shared_pkg/__init__.py", "flow/shared_pkg/suffix.py",
    }  # fmt: skip
    flow = yaml.safe_load((out / "flow" / "flow.dag.yaml").read_text())
    assert "additional_includes" not in flow  # the included files sit in the folder already
    assert (out / "flow" / "helpers.py").read_bytes() == (FLOWS / "_shared" / "helpers.py").read_bytes()
    assert (out / "requirements.txt").read_text() == NO_REQUIREMENTS
    assert json.loads((out / "settings.json").read_text()) == {}
    # the image's non-root user must read every file: the CLI's umask is 077
    assert all(p.stat().st_mode & 0o444 == 0o444 for p in out.rglob("*"))


def test_the_image_sets_the_request_settings_serving_reads() -> None:
    assert MAX_CONCURRENT_ENV == serving_settings.MAX_CONCURRENT_ENV
    assert REQUEST_TIMEOUT_ENV == serving_settings.REQUEST_TIMEOUT_ENV


def test_dockerfile_is_slim_non_root_and_serves_on_the_image_port(tmp_path: Path, wheel: Path) -> None:
    out = tmp_path / "ctx"
    assert build(tmp_path / "home", GREET, out, wheel).returncode == 0
    text = (out / "Dockerfile").read_text()
    lines = text.splitlines()
    assert f"ARG BASE_IMAGE={DEFAULT_BASE_IMAGE}" in lines
    assert "FROM ${BASE_IMAGE}" in lines
    assert f"USER {IMAGE_USER}:{IMAGE_USER}" in lines
    assert f"EXPOSE {IMAGE_PORT}" in lines
    assert lines[-1] == f"CMD {json.dumps(list(IMAGE_COMMAND))}"
    assert f"COPY flow/ {FLOW_DIR}/" in lines
    assert f"    FLOWPORT_FLOW={FLOW_DIR} \\" in lines
    assert "python3 -m venv /opt/flowport" in text
    assert f"--mount=type=secret,id={PIP_CERT_SECRET}" in text
    # USER comes before the flow's code is ever run; nothing runs as root after it
    assert lines.index(f"USER {IMAGE_USER}:{IMAGE_USER}") < lines.index(lines[-1])
    assert (out / "requirements.txt").read_text() == (GREET / "requirements.txt").read_text()


def test_base_image_flag_sets_the_default_from(tmp_path: Path, wheel: Path) -> None:
    out = tmp_path / "ctx"
    assert (
        build(tmp_path / "home", GREET, out, wheel, "--base-image", "registry.local/py:3.11").returncode == 0
    )
    assert "ARG BASE_IMAGE=registry.local/py:3.11" in (out / "Dockerfile").read_text().splitlines()


def test_connections_become_templates_without_their_secrets(tmp_path: Path, wheel: Path) -> None:
    home = tmp_path / "home"
    spec = tmp_path / "greeting.yaml"
    spec.write_text(yaml.safe_dump(GREETING))
    assert flowport("connection", "create", "--file", str(spec), home=home).returncode == 0
    out = tmp_path / "ctx"
    done = build(home, GREET, out, wheel)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["connections"] == ["greeting"]
    template = yaml.safe_load((out / "connections" / "greeting.yaml").read_text())
    assert template == {
        "name": "greeting",
        "type": "custom",
        "configs": {"salutation": "Hello"},
        "secrets": {"api_key": "${env:GREETING_API_KEY}"},
    }
    assert json.loads((out / "settings.json").read_text()) == {"GREETING_API_KEY": ""}
    assert "docker run -p 8080:8080 -e GREETING_API_KEY=... greet:1" in (out / "README.md").read_text()
    for path in out.rglob("*"):
        if path.is_file() and path.suffix != ".whl":
            assert SECRET not in path.read_text(), path


def test_a_connection_not_stored_is_named_and_left_to_the_runtime(tmp_path: Path, wheel: Path) -> None:
    out = tmp_path / "ctx"
    done = build(tmp_path / "home", FLOWS / "chat_llm", out, wheel)
    assert done.returncode == 0, done.stderr
    assert done.stderr.splitlines()[0] == (
        "note: connection 'open_ai_connection' is not stored here; pass it when the container runs "
        """(open_ai_connection='{"type": ...}' or a mounted connections file)"""
    )
    assert not any((out / "connections").iterdir())


def test_variant_becomes_the_default_of_its_node(tmp_path: Path, wheel: Path) -> None:
    out = tmp_path / "ctx"
    done = build(tmp_path / "home", FLOWS / "variants", out, wheel, "--variant", "${summarize.variant_1}")
    assert done.returncode == 0, done.stderr
    flow = yaml.safe_load((out / "flow" / "flow.dag.yaml").read_text())
    assert flow["node_variants"]["summarize"]["default_variant_id"] == "variant_1"
    bad = build(
        tmp_path / "home", FLOWS / "variants", tmp_path / "bad", wheel, "--variant", "${summarize.nope}"
    )
    assert bad.returncode == 1
    assert bad.stderr.startswith("error: ") and "nope" in bad.stderr and "Traceback" not in bad.stderr


def test_a_prompty_image_names_its_file(tmp_path: Path, wheel: Path) -> None:
    out = tmp_path / "ctx"
    done = build(tmp_path / "home", FLOWS / "prompty_chat" / "chat.prompty", out, wheel)
    assert done.returncode == 0, done.stderr
    assert f"    FLOWPORT_FLOW={FLOW_DIR}/chat.prompty \\" in (out / "Dockerfile").read_text().splitlines()
    assert (out / "flow" / "chat.prompty").is_file()


def test_output_is_rewritten_only_when_it_holds_an_earlier_context(tmp_path: Path, wheel: Path) -> None:
    out = tmp_path / "ctx"
    assert build(tmp_path / "home", FLOWS / "additional_includes", out, wheel).returncode == 0
    assert build(tmp_path / "home", GREET, out, wheel).returncode == 0
    assert not (out / "flow" / "helpers.py").exists()  # the earlier flow is gone
    assert (out / "flow" / "greet.py").is_file()
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    broken = build(tmp_path / "home", FLOWS / "err_cycle", out, wheel)  # fails halfway: run again
    assert broken.returncode == 1
    assert build(tmp_path / "home", GREET, out, wheel).returncode == 0
    done = build(tmp_path / "home", GREET, foreign, wheel)
    assert done.returncode == 1
    assert done.stderr.strip() == (
        f"error: --output {foreign} is not empty and holds no earlier build context; "
        "give a new or empty folder"
    )
    assert (foreign / "notes.txt").read_text() == "keep me"


def test_bad_inputs_get_one_line(tmp_path: Path, wheel: Path) -> None:
    home = tmp_path / "home"
    executable = build(home, GREET, tmp_path / "a", wheel, "--format", "executable")
    assert executable.stderr.strip() == (
        "error: --format executable is not supported: flowport builds container images (--format docker)"
    )
    missing = build(home, tmp_path / "nowhere", tmp_path / "b", wheel)
    assert missing.returncode == 1 and missing.stderr.startswith("error: --source ")
    not_a_wheel = build(home, GREET, tmp_path / "c", GREET / "greet.py")
    assert not_a_wheel.stderr.strip().startswith("error: --flowport-wheel ")
    flow = tmp_path / "flow"
    shutil.copytree(GREET, flow)
    inside = build(home, flow, flow / "image", wheel)
    assert inside.stderr.strip() == (
        f"error: --output {flow / 'image'} is inside the flow folder {flow}; give a folder outside it"
    )
    assert not (flow / "image").exists()
    broken = build(home, FLOWS / "err_cycle", tmp_path / "d", wheel)
    assert broken.returncode == 1 and "Traceback" not in broken.stderr and broken.stderr.startswith("error: ")


def test_flowport_wheel_is_built_from_the_checkout_without_touching_it(tmp_path: Path) -> None:
    root = source_checkout()
    if root is None:
        pytest.skip("flowport is not installed from a source checkout")
    from flowport.build.wheel import flowport_wheel

    before = sorted(p.name for p in root.iterdir())
    wheel = flowport_wheel(tmp_path)
    assert wheel.name.startswith("flowport-") and wheel.suffix == ".whl"
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"flowport/runtime/container.py", "flowport/build/image.py", "flowport/serving/app.py"} <= names
    assert sorted(p.name for p in root.iterdir()) == before


# -- the image's entry -----------------------------------------------------------------------


def write_yaml(path: Path, data: object) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


def test_connections_come_from_templates_files_and_the_environment(tmp_path: Path) -> None:
    templates = tmp_path / "templates"
    templates.mkdir()
    shape = {**GREETING, "secrets": {"api_key": "${env:GREETING_API_KEY}"}}
    write_yaml(templates / "greeting.yaml", shape)
    rows = gather_connections(templates, None, {"GREETING_API_KEY": "from-env"})
    assert rows["greeting"]["secrets"] == {"api_key": "from-env"}
    assert rows["greeting"]["configs"] == {"salutation": "Hello"}

    mounted = write_yaml(tmp_path / "conns.yaml", [{**GREETING, "configs": {"salutation": "Hi"}}])
    rows = gather_connections(templates, mounted, {})  # the mounted file replaces the template
    assert rows["greeting"]["configs"] == {"salutation": "Hi"}
    assert rows["greeting"]["secrets"] == {"api_key": SECRET}

    folder = tmp_path / "secret-volume"
    folder.mkdir()
    write_yaml(folder / "greeting.yaml", GREETING)
    assert gather_connections(templates, folder, {})["greeting"]["secrets"] == {"api_key": SECRET}

    # <name>={json} in the environment replaces it at resolution time: the template is not read
    assert gather_connections(templates, None, {"greeting": '{"type": "custom"}'}) == {}

    with pytest.raises(ContainerError) as missing:
        gather_connections(templates, None, {})
    assert str(missing.value) == (
        f"{templates / 'greeting.yaml'}: environment variable 'GREETING_API_KEY' is not set "
        f"(referenced as '${{env:GREETING_API_KEY}}'); set it with -e or mount the connection at "
        f"{CONNECTIONS_MOUNT}"
    )
    write_yaml(tmp_path / "bad.yaml", ["not a connection"])
    with pytest.raises(ContainerError, match="must hold a connection"):
        gather_connections(templates, tmp_path / "bad.yaml", {})
    (tmp_path / "binary.yaml").write_bytes(b"name: \xff\xfe")
    with pytest.raises(ContainerError, match=r"binary\.yaml:1: the file is not UTF-8 text"):
        gather_connections(templates, tmp_path / "binary.yaml", {})


@pytest.fixture
def entry(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], int, Path]]:
    """The image's entry run here as a process on the greet flow; the connection by environment."""
    port = free_port()
    log = tmp_path / "entry.log"
    env = {
        **os.environ,
        "FLOWPORT_FLOW": str(GREET),
        "FLOWPORT_PORT": str(port),
        "FLOWPORT_CONNECTIONS": str(write_yaml(tmp_path / "none.yaml", [])),
        "greeting": json.dumps({k: v for k, v in GREETING.items() if k != "name"}),
    }
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "flowport.runtime.container"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        yield process, port, log
    finally:
        process.terminate()
        process.wait(timeout=30)


def wait_healthy(
    url: str, alive: Callable[[], bool], log: Path, timeout: float = 120, path: str = HEALTH_PATH
) -> None:
    """Until ``url + path`` answers 200; fails with the log's tail when the server exits first."""
    deadline = time.monotonic() + timeout
    while True:
        assert alive(), f"the server exited:\n{log.read_text()[-3000:]}"
        try:
            if httpx.get(url + path, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, f"no answer on {url}{path}:\n{log.read_text()[-3000:]}"
        time.sleep(0.2)


def test_entry_serves_the_flow_with_a_connection_from_the_environment(
    entry: tuple[subprocess.Popen[bytes], int, Path],
) -> None:
    process, port, log = entry
    url = f"http://127.0.0.1:{port}"
    wait_healthy(url, lambda: process.poll() is None, log)
    answer = httpx.post(f"{url}/score", json={"name": "Ada"})
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"greeting": "Hello, Ada!", "key_seen": SECRET, "uid": os.getuid()}
    check = subprocess.run(
        [sys.executable, "-m", "flowport.runtime.container", "--check"],
        env={**os.environ, "FLOWPORT_PORT": str(port)},
        check=False,
    )
    assert check.returncode == 0
    closed = subprocess.run(
        [sys.executable, "-m", "flowport.runtime.container", "--check"],
        env={**os.environ, "FLOWPORT_PORT": str(free_port())},
        check=False,
    )
    assert closed.returncode == 1


def test_entry_refuses_to_start_without_a_secret_it_needs(tmp_path: Path) -> None:
    env = {**os.environ, "FLOWPORT_FLOW": str(GREET), "FLOWPORT_CONNECTIONS": str(tmp_path / "nowhere")}
    done = subprocess.run(
        [sys.executable, "-m", "flowport.runtime.container"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert (
        done.stderr.strip() == f"error: FLOWPORT_CONNECTIONS={tmp_path / 'nowhere'}: no such file or folder"
    )


# -- building ---------------------------------------------------------------------------------


def test_pip_settings_pass_http_indexes_and_the_ca_as_build_secrets(tmp_path: Path) -> None:
    cert = tmp_path / "ca.pem"
    cert.write_text("-----BEGIN CERTIFICATE-----\n")
    environ = {
        **os.environ,
        "PIP_INDEX_URL": "https://pypi.internal/simple",
        "PIP_EXTRA_INDEX_URL": "file:///opt/local/simple https://mirror.internal/simple",
        "PIP_CERT": str(cert),
        "PIP_TRUSTED_HOST": "mirror.internal",
    }
    settings = pip_settings(environ)
    secrets = pip_secrets(tmp_path, settings)
    assert secrets[PIP_CERT_SECRET] == cert
    assert secrets[PIP_CONFIG_SECRET].read_text() == (
        "[global]\n"
        "index-url = https://pypi.internal/simple\n"
        "extra-index-url = https://mirror.internal/simple\n"  # a file:// index cannot be reached in a build
        "trusted-host = mirror.internal\n"
    )
    assert secrets[PIP_CONFIG_SECRET].stat().st_mode & 0o077 == 0
    command = build_command("buildah", tmp_path / "ctx", "img:1", base_image="base:1", secrets=secrets)
    assert command[:2] == ["buildah", "bud"] and command[-1] == str(tmp_path / "ctx")
    assert f"id={PIP_CERT_SECRET},src={cert}" in command
    assert "BASE_IMAGE=base:1" in command
    docker = build_command("docker", tmp_path / "ctx", "img:1", dockerfile=tmp_path / "D", secrets=secrets)
    assert docker == [
        "docker", "build", "--tag", "img:1", "--file", str(tmp_path / "D"),
        "--secret", f"id={PIP_CONFIG_SECRET},src={secrets[PIP_CONFIG_SECRET]}",
        "--secret", f"id={PIP_CERT_SECRET},src={cert}",
        str(tmp_path / "ctx"),
    ]  # fmt: skip


def test_environment_image_is_the_base_and_build_is_found_with_its_dockerfile(tmp_path: Path) -> None:
    assert _environment({"environment": {"image": "mcr.example/py:1"}}) == ("mcr.example/py:1", None, None)
    assert _environment({}) == (None, None, None)
    (tmp_path / "docker").mkdir()
    (tmp_path / "docker" / "Dockerfile").write_text("FROM scratch\n")
    build = {"build": {"path": str(tmp_path / "docker")}}
    assert _environment({"environment": build}) == (
        None,
        tmp_path / "docker",
        tmp_path / "docker" / "Dockerfile",
    )


def test_environment_build_image_is_named_after_the_tag() -> None:
    assert environment_tag("localhost/flows/blue:3") == "localhost/flows/blue-environment:3"
    assert environment_tag("registry:5000/blue") == "registry:5000/blue-environment:latest"


# -- an image, built with buildah and run with podman ----------------------------------------

BASE_IMAGE = "localhost/flowport-test-base:bookworm-python3"
CACHE = Path(os.environ.get("FLOWPORT_TEST_CACHE") or Path.home() / ".cache" / "flowport-tests")
PODMAN = ["podman", "--runtime", "/usr/sbin/runc", "--cgroup-manager=cgroupfs"]


def container_tools_missing() -> str | None:
    missing = [tool for tool in ("buildah", "podman", "mmdebstrap") if shutil.which(tool) is None]
    if missing or not Path("/usr/sbin/runc").exists():
        return (
            f"needs {', '.join(missing) or 'runc'} to build and run images "
            "(apt-get install -y buildah podman runc mmdebstrap)"
        )
    if os.geteuid() != 0:
        return "needs root: buildah --isolation chroot and podman with runc, as docs/containers.md runs them"
    return None


def image_id(tag: str, env: dict[str, str]) -> str:
    found = subprocess.run(
        [*PODMAN, "image", "inspect", "--format", "{{.Id}}", tag], env=env, capture_output=True
    )
    return found.stdout.decode().strip() if found.returncode == 0 else ""


def container_environment(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The environment podman and buildah run with, and a Python base image made from Debian's
    packages (no registry is reachable): the mmdebstrap tarball is cached across runs. Skips the
    test, with the reason, where this machine cannot build or run containers."""
    reason = container_tools_missing()
    if reason:
        pytest.skip(reason)
    conf = tmp_path_factory.mktemp("containers") / "containers.conf"
    conf.write_text("[containers]\ndefault_ulimits = []\n")
    env = {**os.environ, "CONTAINERS_CONF": str(conf)}
    if subprocess.run([*PODMAN, "image", "exists", BASE_IMAGE], env=env, check=False).returncode != 0:
        tarball = CACHE / "bookworm-python3.tar"
        if not tarball.is_file():
            CACHE.mkdir(parents=True, exist_ok=True)
            partial = tarball.with_suffix(".partial.tar")
            subprocess.run(
                ["mmdebstrap", "--variant=apt", "--include=python3,python3-venv,ca-certificates",
                 "bookworm", str(partial)],
                env=env, check=True, capture_output=True, timeout=900,
            )  # fmt: skip
            partial.rename(tarball)
        subprocess.run(
            [*PODMAN, "import", str(tarball), BASE_IMAGE], env=env, check=True, capture_output=True
        )
    return env


@pytest.fixture(scope="module")
def containers(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return container_environment(tmp_path_factory)


def build_image(
    server: Flowport, env: dict[str, str], endpoint: str, deployment: str, tag: str, output: Path, *extra: str
) -> subprocess.CompletedProcess[str]:
    """``flowport online-deployment build-image`` with buildah, through ``server``'s API."""
    return subprocess.run(
        [sys.executable, "-m", "flowport.cli.main", "online-deployment", "build-image",
         "-e", endpoint, "-n", deployment, "--tag", tag, "--builder", "buildah", "--output", str(output),
         *extra],
        env={**env, "FLOWPORT_URL": server.url, "FLOWPORT_ADMIN_TOKEN": server.token},
        capture_output=True, text=True, timeout=1200,
    )  # fmt: skip


def running(name: str, env: dict[str, str], log: Path) -> bool:
    """Whether container ``name`` runs; its output so far is copied to ``log``."""
    logs = subprocess.run([*PODMAN, "logs", name], env=env, capture_output=True, text=True)
    log.write_text(logs.stdout + logs.stderr)
    state = subprocess.run(
        [*PODMAN, "inspect", "--format", "{{.State.Running}}", name], env=env, capture_output=True, text=True
    )
    return state.stdout.strip() == "true"


def remove_container(name: str, env: dict[str, str]) -> subprocess.CompletedProcess[bytes]:
    """Stop ``name`` (SIGTERM, then 10 s) and remove it; the stop's result."""
    stopped = subprocess.run([*PODMAN, "stop", "--time", "10", name], env=env, capture_output=True)
    # --rm removes it after the stop returns; remove it now so that no run leaves one behind
    subprocess.run([*PODMAN, "rm", "--force", "--ignore", name], env=env, capture_output=True)
    return stopped


def test_a_deployment_image_builds_with_buildah_and_answers_under_podman(
    containers: dict[str, str], tmp_path: Path
) -> None:
    tag = "localhost/flowport-test-greet:1"
    name = f"flowport-test-greet-{os.getpid()}"
    before = image_id(tag, containers)
    with Flowport(tmp_path / "home") as server:
        server.ok("PUT", "/connections/greeting", json=GREETING)
        server.endpoint("greet-ep")
        environment = tmp_path / "environment"  # Azure's environment.build: a context and its Dockerfile
        environment.mkdir()
        (environment / "base.Dockerfile").write_text(
            f"FROM {BASE_IMAGE}\nRUN echo from-environment-build > /etc/flowport-test-marker\n"
        )
        build = {"path": str(environment), "dockerfile_path": "base.Dockerfile"}
        spec = {"model": {"path": str(GREET)}, "environment": {"build": build}}
        body = server.ok(
            "POST", "/endpoints/greet-ep/deployments", params={"name": "blue"}, json={"spec": spec}
        )
        assert server.wait(body["operation"], timeout=120)["status"] == "Succeeded"
        done = build_image(server, containers, "greet-ep", "blue", tag, tmp_path / "ctx")
    assert done.returncode == 0, done.stderr[-4000:]
    if before and before != image_id(tag, containers):  # the image this run replaced: not kept
        subprocess.run([*PODMAN, "rmi", before], env=containers, capture_output=True)
    report = json.loads(done.stdout)
    assert report["image"] == tag and report["builder"] == "buildah"
    assert (
        report["base_image"] == "localhost/flowport-test-greet-environment:1"
    )  # built from environment.build
    assert report["connections"] == ["greeting"]
    assert SECRET not in (tmp_path / "ctx" / "connections" / "greeting.yaml").read_text()
    history = subprocess.run(
        [*PODMAN, "image", "inspect", tag], env=containers, capture_output=True, text=True, check=True
    )
    assert SECRET not in history.stdout
    config = json.loads(history.stdout)[0]["Config"]
    assert config["User"] == f"{IMAGE_USER}:{IMAGE_USER}"
    assert config["Cmd"] == list(IMAGE_COMMAND)

    marker = subprocess.run(
        [*PODMAN, "run", "--rm", "--network=host", tag, "cat", "/etc/flowport-test-marker"],
        env=containers, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert marker.stdout.strip() == "from-environment-build", marker.stderr
    port = free_port()
    run = [*PODMAN, "run", "--detach", "--rm", "--name", name, "--network=host", "--no-healthcheck",
           "-e", f"FLOWPORT_PORT={port}", "-e", f"GREETING_API_KEY={SECRET}", tag]  # fmt: skip
    started = subprocess.run(run, env=containers, capture_output=True, text=True, check=False)
    assert started.returncode == 0, started.stderr
    log = tmp_path / "container.log"

    try:
        url = f"http://127.0.0.1:{port}"
        wait_healthy(url, lambda: running(name, containers, log), log)
        answer = httpx.post(f"{url}/score", json={"name": "Ada"}, timeout=30)
        assert answer.status_code == 200, answer.text
        outputs = answer.json()
        assert outputs["greeting"] == "Hello, Ada!"
        assert outputs["key_seen"] == SECRET  # the secret came from the container's environment
        assert outputs["uid"] == IMAGE_USER  # the flow's code runs as the image's user
        assert httpx.get(f"{url}/swagger.json").json()["info"]["x-flow-name"] == "greet"
        top = subprocess.run(
            [*PODMAN, "top", name, "huser", "args"],
            env=containers,
            capture_output=True,
            text=True,
            check=True,
        )
        server_rows = [
            line.split() for line in top.stdout.splitlines()[1:] if "flowport.runtime.container" in line
        ]
        assert server_rows and all(row[0] == str(IMAGE_USER) for row in server_rows), top.stdout
    finally:
        stopped = remove_container(name, containers)
    assert stopped.returncode == 0, stopped.stderr
    gone = subprocess.run([*PODMAN, "container", "exists", name], env=containers, check=False)
    assert gone.returncode == 1
