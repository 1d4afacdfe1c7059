"""Loading flow.dag.yaml: YAML rules, references, variants, includes and validation errors."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from flowport.flow import FlowError, build_plan, load_flow
from flowport.flow.reference import InputRef, Literal, NodeRef, parse_binding, resolve_path
from flowport.flow.yaml import parse_yaml


def write_flow(folder: Path, yaml_text: str, files: dict[str, str] | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "flow.dag.yaml").write_text(textwrap.dedent(yaml_text))
    for name, body in (files or {"echo.py": "def echo(text: str = ''):\n    return text\n"}).items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(textwrap.dedent(body))
    return folder


def problems(folder: Path) -> list[tuple[str, int | None]]:
    with pytest.raises(FlowError) as info:
        load_flow(folder)
    return [(p.code, p.line) for p in info.value.problems]


def test_yaml_follows_1_2_scalars_and_keeps_lines() -> None:
    data = parse_yaml("a: yes\nb: on\nc: true\nd: 0x10\ne: 1:20\nf:\n  g: 1.5\n")
    assert data == {"a": "yes", "b": "on", "c": True, "d": 16, "e": "1:20", "f": {"g": 1.5}}
    assert data.line_of("d") == 4
    assert data["f"].line_of("g") == 7


def test_yaml_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    folder = tmp_path / "f"
    folder.mkdir()
    (folder / "flow.dag.yaml").write_text("inputs:\n  x: [unclosed\nnodes: []\n")
    [(code, line)] = problems(folder)
    assert code == "InvalidYaml"
    assert line == 3


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("${inputs.question}", InputRef("question")),
        ("${flow.question}", InputRef("question")),
        ("${answer}", NodeRef("answer", "output", "", ())),
        ("${answer.output}", NodeRef("answer", "output", "", ())),
        ("${answer.output.a.b}", NodeRef("answer", "output", "a.b", ("a", "b"))),
        ("${answer.output.a['k'][0]}", NodeRef("answer", "output", "a['k'][0]", ("a", "k", 0))),
        ("${inputs.x} and more", Literal("${inputs.x} and more")),
        ("$inputs.x", Literal("$inputs.x")),
        (3, Literal(3)),
    ],
)
def test_references_parse_as_prompt_flow_reads_them(text: object, expected: object) -> None:
    assert parse_binding(text) == expected


def test_resolve_path_reads_keys_indexes_and_attributes() -> None:
    class Obj:
        attr = {"k": [10, 20]}

    assert resolve_path({"a": [{"b": 1}]}, ("a", 0, "b")) == 1
    assert resolve_path(Obj(), ("attr", "k", 1)) == 20


def test_every_validation_problem_is_reported_with_code_and_line(tmp_path: Path) -> None:
    folder = write_flow(
        tmp_path / "bad",
        """\
        inputs:
          text:
            type: strin
          ok:
            type: string
        outputs:
          out:
            reference: ${missing_node.output}
        nodes:
        - name: a
          type: python
          source: {type: code, path: echo.py}
          inputs:
            text: ${inputs.nope}
        - name: a
          type: python
          source: {type: code, path: echo.py}
        - name: b
          type: shell
          source: {type: code, path: echo.py}
        - name: c
          type: python
          source: {type: code, path: gone.py}
        """,
    )
    found = problems(folder)
    assert ("InvalidInputType", 2) in found
    assert ("OutputReferenceNotFound", 7) in found
    assert ("InputReferenceNotFound", 14) in found
    assert ("DuplicateNodeName", 15) in found
    assert ("UnknownNodeType", 19) in found
    assert ("InvalidSource", 23) in found


def test_cycle_is_reported(tmp_path: Path) -> None:
    folder = write_flow(
        tmp_path / "cycle",
        """\
        outputs:
          out: {reference: "${a.output}"}
        nodes:
        - name: a
          type: python
          source: {type: code, path: echo.py}
          inputs: {text: "${b.output}"}
        - name: b
          type: python
          source: {type: code, path: echo.py}
          inputs: {text: "${a.output}"}
        """,
    )
    with pytest.raises(FlowError) as info:
        load_flow(folder)
    assert info.value.code == "NodeCircularDependency"
    assert "a -> b -> a" in info.value.message


def test_variants_default_and_selected(tmp_path: Path) -> None:
    folder = write_flow(
        tmp_path / "v",
        """\
        outputs:
          out: {reference: "${pick.output}"}
        nodes:
        - name: pick
          use_variants: true
        node_variants:
          pick:
            default_variant_id: variant_0
            variants:
              variant_0:
                node:
                  type: python
                  source: {type: code, path: echo.py}
                  inputs: {text: zero}
              variant_1:
                node:
                  type: python
                  source: {type: code, path: echo.py}
                  inputs: {text: one}
        """,
    )
    assert load_flow(folder).nodes["pick"].inputs["text"] == Literal("zero")
    chosen = load_flow(folder, variant="${pick.variant_1}").nodes["pick"]
    assert chosen.inputs["text"] == Literal("one")
    assert chosen.variant_id == "variant_1"
    with pytest.raises(FlowError) as info:
        load_flow(folder, variant="${pick.variant_9}")
    assert info.value.code == "VariantNotFound"
    with pytest.raises(FlowError) as info:
        load_flow(folder, variant="pick.variant_1")
    assert info.value.code == "InvalidVariant"


def test_additional_includes_are_placed_in_a_content_addressed_copy(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "helper.py").write_text("VALUE = 1\n")
    folder = write_flow(
        tmp_path / "inc",
        """\
        additional_includes: [../shared/helper.py]
        outputs:
          out: {reference: "${a.output}"}
        nodes:
        - name: a
          type: python
          source: {type: code, path: echo.py}
        """,
    )
    first = load_flow(folder, includes_dir=tmp_path / "cache")
    assert (first.path / "helper.py").read_text() == "VALUE = 1\n"
    assert load_flow(folder, includes_dir=tmp_path / "cache").path == first.path
    (shared / "helper.py").write_text("VALUE = 2\n")
    assert load_flow(folder, includes_dir=tmp_path / "cache").path != first.path


def test_missing_include_is_an_error(tmp_path: Path) -> None:
    folder = write_flow(
        tmp_path / "inc",
        """\
        additional_includes: [../nowhere.py]
        nodes: []
        """,
    )
    assert problems(folder)[0][0] == "IncludeNotFound"


def test_plan_orders_nodes_and_finds_stream_candidates(tmp_path: Path) -> None:
    folder = write_flow(
        tmp_path / "plan",
        """\
        outputs:
          out: {reference: "${c.output}"}
        nodes:
        - name: c
          type: python
          source: {type: code, path: echo.py}
          inputs: {text: "${b.output}"}
        - name: b
          type: python
          source: {type: code, path: echo.py}
          inputs: {text: "${a.output}"}
        - name: a
          type: python
          source: {type: code, path: echo.py}
        """,
    )
    plan = build_plan(load_flow(folder))
    assert [p.node.name for p in plan.line_nodes] == ["a", "b", "c"]
    assert [p.node.name for p in plan.line_nodes if p.feeds_only_outputs] == ["c"]


def test_flow_not_found_is_clear(tmp_path: Path) -> None:
    with pytest.raises(FlowError) as info:
        load_flow(tmp_path / "nothing")
    assert info.value.code == "FlowNotFound"


def test_chat_markers_are_read() -> None:
    flow = load_flow(Path(__file__).parent / "flows" / "chat_llm")
    assert flow.is_chat
    assert (flow.chat_input, flow.chat_history, flow.chat_output) == ("question", "chat_history", "answer")
    assert not load_flow(Path(__file__).parent / "flows" / "three_node_python").is_chat
