"""Model snapshots: what is hashed is what is copied; symlinks, includes and tools are checked."""

from __future__ import annotations

import tempfile
import textwrap
from pathlib import Path

import pytest

from flowport.control.errors import ApiError
from flowport.control.models import snapshot_flow
from flowport.flow.includes import content_hash, flow_files

FLOW = """\
inputs:
  text: {type: string}
outputs:
  out: {reference: "${echo.output}"}
nodes:
- name: echo
  type: python
  source: {type: code, path: echo.py}
  inputs: {text: "${inputs.text}"}
"""


def make_flow(
    folder: Path, flow: str = FLOW, tool: str = "def echo(text: str) -> str:\n    return text\n"
) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "flow.dag.yaml").write_text(textwrap.dedent(flow))
    (folder / "echo.py").write_text(tool)
    return folder


def refused(source: Path, models: Path) -> ApiError:
    with pytest.raises(ApiError) as info:
        snapshot_flow(source, models)
    assert info.value.status == 400
    return info.value


def test_a_change_behind_a_symlinked_folder_makes_a_new_snapshot(tmp_path: Path) -> None:
    flow = make_flow(tmp_path / "flow")
    (flow / "data").mkdir()
    (flow / "data" / "prompt.txt").write_text("one")
    (flow / "linked").symlink_to(flow / "data", target_is_directory=True)
    first, first_hash, _ = snapshot_flow(flow, tmp_path / "home" / "models")
    assert (first / "linked" / "prompt.txt").read_text() == "one"
    assert not (first / "linked").is_symlink()
    (flow / "data" / "prompt.txt").write_text("two")
    second, second_hash, _ = snapshot_flow(flow, tmp_path / "home" / "models")
    assert second_hash != first_hash
    assert (second / "linked" / "prompt.txt").read_text() == "two"
    assert content_hash(flow_files(second)) == second_hash


def test_a_symlink_out_of_the_flow_is_refused_naming_it(tmp_path: Path) -> None:
    flow = make_flow(tmp_path / "flow")
    (tmp_path / "home").mkdir()
    (flow / "keys").symlink_to(tmp_path / "home", target_is_directory=True)
    error = refused(flow, tmp_path / "home" / "models")
    assert error.problems[0].code == "SymlinkOutsideFlow"
    assert str(flow / "keys") in error.message


def test_a_symlink_loop_is_a_clear_error(tmp_path: Path) -> None:
    flow = make_flow(tmp_path / "flow")
    (flow / "sub").mkdir()
    (flow / "sub" / "again").symlink_to(flow, target_is_directory=True)
    error = refused(flow, tmp_path / "home" / "models")
    assert error.problems[0].code == "SymlinkLoop"
    assert not (tmp_path / "home" / "models").exists()


def test_a_file_planted_where_the_include_cache_was_is_not_snapshotted(tmp_path: Path) -> None:
    (tmp_path / "shared.py").write_text("VALUE = 1\n")
    flow = make_flow(tmp_path / "flow", "additional_includes: [../shared.py]\n" + FLOW)
    listing = {**flow_files(flow), "shared.py": tmp_path / "shared.py"}
    planted = Path(tempfile.gettempdir()) / "flowport-flows" / content_hash(listing)[:24]
    planted.mkdir(parents=True, exist_ok=True)
    (planted / "planted.py").write_text("import os\n")
    snapshot, _, loaded = snapshot_flow(flow, tmp_path / "home" / "models")
    assert sorted(p.name for p in snapshot.iterdir()) == ["echo.py", "flow.dag.yaml", "shared.py"]
    assert loaded.additional_includes == ()


def test_a_tool_that_fails_to_import_is_refused_with_file_and_line(tmp_path: Path) -> None:
    tool = "import os\nimport flowport_no_such_module\n\ndef echo(text: str) -> str:\n    return text\n"
    flow = make_flow(tmp_path / "flow", tool=tool)
    error = refused(flow, tmp_path / "home" / "models")
    assert error.problems[0].line == 6  # the node in flow.dag.yaml
    assert "echo.py:2" in error.message
    assert "flowport_no_such_module" in error.message
    assert ".staging" not in error.message
    assert not (tmp_path / "home" / "models").exists()


def test_a_syntax_error_in_a_tool_is_refused(tmp_path: Path) -> None:
    flow = make_flow(tmp_path / "flow", tool="def echo(text: str) -> str\n    return text\n")
    error = refused(flow, tmp_path / "home" / "models")
    assert "echo.py:1" in error.message and "SyntaxError" in error.message


def test_tool_imports_run_in_a_child_without_the_servers_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLOWPORT_ADMIN_TOKEN", "server-secret")
    tool = (
        "import os\n"
        "if 'FLOWPORT_ADMIN_TOKEN' in os.environ:\n"
        "    import flowport_saw_the_token\n"
        "def echo(text: str) -> str:\n    return text\n"
    )
    flow = make_flow(tmp_path / "flow", tool=tool)
    snapshot, _, _ = snapshot_flow(flow, tmp_path / "home" / "models")
    assert not (snapshot / "__pycache__").exists()


def test_a_module_the_flow_installs_itself_is_not_required_at_registration(tmp_path: Path) -> None:
    flow = make_flow(
        tmp_path / "flow", tool="import flowport_from_requirements\n\ndef echo(text):\n    return text\n"
    )
    (flow / "requirements.txt").write_text("flowport-from-requirements\n")
    snapshot, _, _ = snapshot_flow(flow, tmp_path / "home" / "models")
    assert (snapshot / "requirements.txt").is_file()


def test_what_a_tool_writes_when_imported_is_not_in_the_snapshot(tmp_path: Path) -> None:
    tool = "open('written_at_import.txt', 'w').write('x')\n\ndef echo(text: str) -> str:\n    return text\n"
    flow = make_flow(tmp_path / "flow", tool=tool)
    snapshot, digest, _ = snapshot_flow(flow, tmp_path / "home" / "models")
    assert sorted(p.name for p in snapshot.iterdir()) == ["echo.py", "flow.dag.yaml"]
    assert not (flow / "written_at_import.txt").exists()
    assert content_hash(flow_files(snapshot)) == digest


def test_nothing_of_the_flowport_home_reaches_a_snapshot(tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / "models").mkdir(parents=True)
    (home / "secret.key").write_text("not for flows\n")
    leaky = make_flow(tmp_path / "flow", "additional_includes: [../home]\n" + FLOW)
    error = refused(leaky, home / "models")
    assert (error.status, error.code) == (400, "ModelPathInHome")
    assert "additional_includes entry '../home'" in error.message
    wide = make_flow(tmp_path / "wide", "additional_includes: [/]\n" + FLOW)
    assert refused(wide, home / "models").code == "ModelPathInHome"
    assert refused(home, home / "models").code == "ModelPathInHome"  # the home as a flow folder
    assert not list((home / "models").iterdir())
