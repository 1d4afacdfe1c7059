"""Instances are untrusted: they see a minimal environment and, as root, cannot read FLOWPORT_HOME."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import site
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from flowport.runtime.base import DeploymentFailed, DeploymentKey, DeploymentPlan, InstanceConfig
from flowport.runtime.local import LocalRuntime
from flowport.runtime.local.isolation import Isolation, instance_user
from tests.endpoint_harness import FLOWS, Flowport
from tests.test_runtime_local import INFO, SERVER, alive, score

TOKEN = "admin-token-that-flow-code-must-never-see"
CLOUD = "cloud-credential-that-flow-code-must-never-see"
as_root = pytest.mark.skipif(os.geteuid() != 0, reason="instances switch users only when flowport is root")


def _runs_as_nobody(python: str) -> bool:
    nobody = pwd.getpwnam("nobody")
    try:
        done = subprocess.run(
            [python, "-c", "import flowport.runtime.instance"],
            user=nobody.pw_uid,
            group=nobody.pw_gid,
            extra_groups=[],
            cwd="/",
            capture_output=True,
        )
    except OSError:
        return False
    return done.returncode == 0


@pytest.fixture(autouse=True)
def server_umask() -> Iterator[None]:
    """As in a running server (whatever ran before in this process): nothing shared by accident."""
    previous = os.umask(0o077)
    yield
    os.umask(previous)


@pytest.fixture(scope="session")
def shared_python() -> Iterator[str]:
    """An interpreter that ``nobody`` can run, with this environment's packages (flowport included).

    The test interpreter may live where ``nobody`` cannot reach (under /root): a venv of the
    system's Python of the same version, in a world-readable folder, borrows its packages.
    """
    if os.geteuid() != 0:
        pytest.skip("instances switch users only when flowport is root")
    base = Path(f"/usr/bin/python{sys.version_info.major}.{sys.version_info.minor}")
    if not base.exists():
        pytest.skip(f"no {base} to build an interpreter that nobody can run")
    root = Path(tempfile.mkdtemp(prefix="fp-python-", dir="/tmp"))
    try:
        venv = root / "venv"
        subprocess.run([str(base), "-m", "venv", "--without-pip", str(venv)], check=True)
        python = str(venv / "bin" / "python")
        purelib = subprocess.check_output(
            [python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], text=True
        ).strip()
        lines = "".join(f"import site; site.addsitedir({p!r})\n" for p in site.getsitepackages())
        (Path(purelib) / "_test_parent.pth").write_text(lines)
        subprocess.run(["chmod", "-R", "a+rX", str(root)], check=True)
        if not _runs_as_nobody(python):
            pytest.skip("nobody cannot read this environment's packages")
        yield python
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _snoop(fp: Flowport, home: Path, **variables: str) -> dict:
    fp.endpoint("spy")
    fp.deploy("spy", "blue", model={"path": str(FLOWS / "snoop")}, environment_variables=variables)
    assert fp.traffic("spy", blue=100).status_code < 300
    response = fp.score("spy", {"home": str(home), "server_pid": os.getpid()})
    assert response.status_code == 200, response.text
    return response.json()["seen"]


def _assert_no_control_plane_environment(seen: dict, home: Path) -> None:
    environ = seen["environ"]
    for name in ("FLOWPORT_ADMIN_TOKEN", "FLOWPORT_DATABASE_URL", "FLOWPORT_HOME", "AWS_SECRET_ACCESS_KEY"):
        assert name not in environ, name
    assert not [k for k, v in environ.items() if TOKEN in v or CLOUD in v]
    assert environ["GREETING"] == "hello from the deployment"
    assert environ["HOME"].startswith("/tmp/fp-") and environ["TMPDIR"].startswith("/tmp/fp-")
    assert environ["PYTHONUNBUFFERED"] == "1"


@as_root
def test_flow_code_as_root_sees_no_control_plane_secret(
    home: Path, monkeypatch: pytest.MonkeyPatch, shared_python: str
) -> None:
    monkeypatch.setenv("FLOWPORT_INSTANCE_USER", "nobody")
    monkeypatch.setenv("FLOWPORT_ADMIN_TOKEN", TOKEN)
    monkeypatch.setenv("FLOWPORT_DATABASE_URL", f"sqlite:///{home}/flowport.db")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", CLOUD)
    monkeypatch.setenv("FLOWPORT_INSTANCE_PYTHON", shared_python)
    with Flowport(home) as fp:
        seen = _snoop(fp, home, GREETING="hello from the deployment")
    assert (home / "secret.key").exists() and (home / "flowport.db").exists()
    assert seen["uid"] == pwd.getpwnam("nobody").pw_uid
    _assert_no_control_plane_environment(seen, home)
    for probe in ("home_listing", "secret_key", "admin_token", "database", "server_environ"):
        assert seen[probe] == "PermissionError", (probe, seen[probe])


def test_flow_code_gets_a_minimal_environment_without_a_user_switch(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLOWPORT_INSTANCE_USER", "root")  # as any non-root server: the same user
    monkeypatch.setenv("FLOWPORT_ADMIN_TOKEN", TOKEN)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", CLOUD)
    monkeypatch.setenv("FLOWPORT_INSTANCE_PASS_ENV", "OTEL_SERVICE_NAME")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "passed on purpose")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", f"api-key={CLOUD}")
    monkeypatch.setenv("APPLICATIONINSIGHTS_CONNECTION_STRING", f"InstrumentationKey={CLOUD}")
    with Flowport(home) as fp:
        seen = _snoop(fp, home, GREETING="hello from the deployment")
    assert seen["uid"] == os.getuid()
    _assert_no_control_plane_environment(seen, home)
    assert seen["environ"]["OTEL_SERVICE_NAME"] == "passed on purpose"
    assert seen["environ"]["OTEL_EXPORTER_OTLP_PROTOCOL"] == "http/protobuf"  # tracing settings pass
    for credential in ("OTEL_EXPORTER_OTLP_HEADERS", "APPLICATIONINSIGHTS_CONNECTION_STRING"):
        assert credential not in seen["environ"]  # credentials stay with the server


@as_root
async def test_a_requirements_venv_is_copied_where_the_instance_user_reads_it(
    tmp_path: Path, home: Path, monkeypatch: pytest.MonkeyPatch, shared_python: str
) -> None:
    monkeypatch.setenv("PIP_NO_INDEX", "1")  # already satisfied: pip needs no network
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("pyyaml\n")
    isolation = Isolation(instance_user({"FLOWPORT_INSTANCE_USER": "nobody"}))
    runtime = LocalRuntime(home / "runtime", python=shared_python, drain_seconds=5, isolation=isolation)
    key = DeploymentKey("ep", "blue")
    try:
        config = InstanceConfig(source=str(INFO), environment_variables={"FLAVOR": "venv"})
        await runtime.apply(DeploymentPlan(key, "r1", 1, config, requirements=requirements))
        (state,) = runtime.instances(key)
        root = isolation.root
        answer = await score(state.address)
        assert answer["flavor"] == "venv"
        assert answer["prefix"].startswith(str(root / "shared"))
        assert os.stat(answer["prefix"]).st_uid == 0  # read-only to the instance user
    finally:
        await runtime.close()
    assert not root.exists()  # the copies go with the runtime


@as_root
async def test_an_unknown_instance_user_fails_the_rollout_with_a_reason(home: Path) -> None:
    isolation = Isolation.from_environment({"FLOWPORT_INSTANCE_USER": "no-such-flowport-user"})
    runtime = LocalRuntime(home / "runtime", drain_seconds=5, isolation=isolation)
    try:
        with pytest.raises(
            DeploymentFailed, match="FLOWPORT_INSTANCE_USER='no-such-flowport-user' names no user"
        ):
            await runtime.apply(
                DeploymentPlan(DeploymentKey("ep", "blue"), "r1", 1, InstanceConfig(str(INFO)))
            )
    finally:
        await runtime.close()


@as_root
async def test_an_interpreter_the_instance_user_cannot_run_is_named(home: Path, tmp_path: Path) -> None:
    hidden = tmp_path / "private"
    hidden.mkdir(mode=0o700)
    python = hidden / "python"
    python.symlink_to(sys.executable)
    isolation = Isolation(instance_user({"FLOWPORT_INSTANCE_USER": "nobody"}))
    runtime = LocalRuntime(home / "runtime", python=str(python), drain_seconds=5, isolation=isolation)
    try:
        with pytest.raises(DeploymentFailed, match=f"user 'nobody', which cannot run {python}"):
            await runtime.apply(
                DeploymentPlan(DeploymentKey("ep", "blue"), "r1", 1, InstanceConfig(str(INFO)))
            )
    finally:
        await runtime.close()


def _shared_paths(top: Path) -> list[str]:
    """Everything under ``top`` that its group or others could use (symlinks aside)."""
    found = []
    for folder, dirs, files in os.walk(top):
        for path in (folder, *(os.path.join(folder, name) for name in (*dirs, *files))):
            mode = os.lstat(path).st_mode
            if not stat.S_ISLNK(mode) and mode & 0o077:
                found.append(f"{oct(stat.S_IMODE(mode))} {path}")
    return found


def test_everything_under_the_home_is_private_whatever_the_umask(
    tmp_path: Path, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PIP_NO_INDEX", "1")  # already satisfied: pip needs no network
    flow = tmp_path / "flow"
    shutil.copytree(FLOWS / "probe", flow)
    (flow / "requirements.txt").write_text("pyyaml\n")
    subprocess.run(["chmod", "-R", "a+rX,g+w", str(flow)], check=True)  # a shared checkout
    home.mkdir(mode=0o755)  # made by someone else, before flowport ran
    previous = os.umask(0o022)
    try:
        with Flowport(home) as fp:
            fp.endpoint("modes")
            collector = {"collections": {"request": {"enabled": True}, "response": {"enabled": True}}}
            fp.deploy("modes", "blue", model={"path": str(flow)}, data_collector=collector)
            fp.traffic("modes", blue=100)
            assert fp.score("modes", {"text": "private"}).status_code == 200
            for _ in range(200):  # collected off the request path
                if list((home / "data").rglob("*.jsonl")):
                    break
                time.sleep(0.05)
            run = fp.cli("run", "create", "--flow", str(FLOWS / "probe"), "--data", str(_lines(tmp_path)))
            assert run.returncode == 0
            assert list((home / "data").rglob("*.jsonl")) and list((home / "runtime" / "venvs").iterdir())
            assert list((home / "runs").iterdir()) and list((home / "models").iterdir())
            assert _shared_paths(home) == []
    finally:
        os.umask(previous)
    assert stat.S_IMODE(home.stat().st_mode) == 0o700


def _lines(tmp_path: Path) -> Path:
    data = tmp_path / "lines.jsonl"
    data.write_text('{"text": "a"}\n{"text": "b"}\n')
    return data


def test_the_folder_of_a_server_that_died_is_swept() -> None:
    gone = subprocess.Popen(["true"])
    gone.wait()
    stale = Path(tempfile.mkdtemp(prefix=f"fp-{gone.pid}-", dir="/tmp"))
    (stale / "shared").mkdir()
    live = Path(tempfile.mkdtemp(prefix=f"fp-{os.getpid()}-", dir="/tmp"))
    isolation = Isolation()
    try:
        assert isolation.root.name.startswith(f"fp-{os.getpid()}-")
        assert not stale.exists() and live.exists()
    finally:
        isolation.close()
        shutil.rmtree(live)


@as_root
def test_instances_of_another_user_die_with_a_killed_server(
    tmp_path: Path, home: Path, monkeypatch: pytest.MonkeyPatch, shared_python: str
) -> None:
    """The parent-death signal is asked for after the user switch, which would clear it."""
    monkeypatch.setenv("FLOWPORT_INSTANCE_USER", "nobody")
    server = subprocess.Popen(
        [shared_python, "-c", SERVER, str(home / "state"), str(INFO)], stdout=subprocess.PIPE
    )
    try:
        assert server.stdout is not None
        instances = json.loads(server.stdout.readline())
    finally:
        server.kill()
        server.wait()
    pids = [pid for pid, _ in instances]
    assert len(pids) == 2 and all(
        os.stat(f"/proc/{pid}").st_uid == pwd.getpwnam("nobody").pw_uid for pid in pids
    )
    deadline = time.monotonic() + 30
    while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(alive(pid) for pid in pids)


@as_root
def test_model_create_imports_the_tools_as_the_instance_user(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, shared_python: str
) -> None:
    from flowport.control.models import snapshot_flow

    monkeypatch.setenv("FLOWPORT_INSTANCE_USER", "nobody")
    monkeypatch.setenv("FLOWPORT_INSTANCE_PYTHON", shared_python)
    home = tmp_path / "home"
    (home / "models").mkdir(parents=True, mode=0o700)
    home.chmod(0o700)
    (home / "secret.key").write_text("the key\n")
    report = Path(tempfile.mkdtemp(prefix="fp-report-", dir="/tmp"))
    report.chmod(0o777)
    flow = tmp_path / "flow"
    flow.mkdir()
    (flow / "flow.dag.yaml").write_text(
        "inputs: {t: {type: string}}\noutputs: {o: {reference: '${a.output}'}}\nnodes:\n"
        "- name: a\n  type: python\n  source: {type: code, path: a.py}\n  inputs: {t: '${inputs.t}'}\n"
    )
    (flow / "a.py").write_text(
        "import os\n"
        "try:\n"
        f"    seen = open({str(home / 'secret.key')!r}).read()\n"
        "except OSError as exc:\n"
        "    seen = type(exc).__name__\n"
        f"open({str(report / 'seen')!r}, 'w').write(f'{{os.getuid()}} {{seen}}')\n\n"
        "def a(t: str) -> str:\n    return t\n"
    )
    try:
        snapshot, _, _ = snapshot_flow(flow, home / "models")
        uid, seen = (report / "seen").read_text().split(" ", 1)
    finally:
        shutil.rmtree(report)
    assert (int(uid), seen) == (pwd.getpwnam("nobody").pw_uid, "PermissionError")
    assert (snapshot / "a.py").stat().st_uid == 0  # the snapshot itself stays the server's


SPY_BACKEND = """import os
from wheel_backend import *  # noqa: F403 - the real build

try:
    seen = open({secret!r}).read()
except OSError as exc:
    seen = type(exc).__name__
open({report!r}, "w").write(f"{{os.getuid()}} {{seen}}")
"""


@as_root
@pytest.mark.parametrize("listed_in", ["requirements.txt", "conda pip list"])
async def test_a_requirement_builds_as_the_instance_user_and_still_installs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, shared_python: str, listed_in: str
) -> None:
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    (home / "secret.key").write_text("the key\n")
    report = Path(tempfile.mkdtemp(prefix="fp-report-", dir="/tmp"))
    report.chmod(0o777)
    flow = home / "flow"  # a snapshot in FLOWPORT_HOME: the instance user cannot read it
    shutil.copytree(Path(__file__).parent / "tool_packages" / "my_tools", flow / "my_tools")
    spy = SPY_BACKEND.format(secret=str(home / "secret.key"), report=str(report / "seen"))
    (flow / "my_tools" / "spy_backend.py").write_text(spy)
    pyproject = flow / "my_tools" / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace('"wheel_backend"', '"spy_backend"'))
    (flow / "requirements.txt").write_text("./my_tools\n")
    isolation = Isolation(instance_user({"FLOWPORT_INSTANCE_USER": "nobody"}))
    runtime = LocalRuntime(home / "runtime", python=shared_python, drain_seconds=5, isolation=isolation)
    key = DeploymentKey("ep", "blue")
    nobody = pwd.getpwnam("nobody")
    try:
        config = InstanceConfig(source=str(INFO), environment_variables={"FLAVOR": "venv"})
        if listed_in == "requirements.txt":
            plan = DeploymentPlan(key, "r1", 1, config, requirements=flow / "requirements.txt")
        else:  # an absolute path into FLOWPORT_HOME (editable: installed from a copy instead)
            plan = DeploymentPlan(key, "r1", 1, config, pip_requirements=(f"-e {flow / 'my_tools'}",))
        await runtime.apply(plan)
        (state,) = runtime.instances(key)
        answer = await score(state.address)
        imported = subprocess.run(
            [
                str(Path(answer["prefix"]) / "bin" / "python"),
                "-c",
                "import my_tools; print(my_tools.__file__)",
            ],
            user=nobody.pw_uid,
            group=nobody.pw_gid,
            extra_groups=[],
            cwd="/",
            capture_output=True,
            text=True,
        )
        uid, seen = (report / "seen").read_text().split(" ", 1)
        built = list((home / "runtime" / "venvs").glob("*/lib/*/site-packages/my_tools/__init__.py"))
        builds = list(isolation.root.glob("b-*"))
    finally:
        await runtime.close()
        shutil.rmtree(report)
    assert (int(uid), seen) == (nobody.pw_uid, "PermissionError")
    assert imported.returncode == 0, imported.stderr
    assert imported.stdout.startswith(answer["prefix"])  # installed in the venv, not an editable link
    assert built and built[0].stat().st_uid == 0  # the cached venv is the server's
    assert not builds  # the build's folder is gone


def test_a_built_venv_is_taken_over_without_links_to_the_servers_files(tmp_path: Path) -> None:
    import tarfile

    from flowport.runtime.local.venvs import _as_root

    link = tarfile.TarInfo("lib/stolen")
    link.type, link.linkname = tarfile.LNKTYPE, "../../secret.key"
    with pytest.raises(tarfile.FilterError):
        _as_root(link, str(tmp_path))
    escape = tarfile.TarInfo("../outside")
    with pytest.raises(tarfile.FilterError):
        _as_root(escape, str(tmp_path))
    regular = tarfile.TarInfo("bin/tool")
    regular.mode, regular.uid = 0o4755, 65534
    taken = _as_root(regular, str(tmp_path))
    assert (taken.uid, taken.gid, taken.mode) == (0, 0, 0o755)  # root's, no set-id bit
