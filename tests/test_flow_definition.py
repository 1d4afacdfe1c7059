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


def test_additional_includes_are_copied_into_a_fresh_private_folder(tmp_path: Path) -> None:
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
    assert first.path.stat().st_mode & 0o777 == 0o700
    second = load_flow(folder, includes_dir=tmp_path / "cache")
    assert second.path != first.path
    (shared / "helper.py").write_text("VALUE = 2\n")
    assert (load_flow(folder).path / "helper.py").read_text() == "VALUE = 2\n"


def test_a_file_planted_in_the_old_shared_cache_is_not_used(tmp_path: Path) -> None:
    """The old cache lived at <tmp>/flowport-flows/<content hash>: anyone could pre-create it."""
    import tempfile

    from flowport.flow.includes import content_hash, flow_files

    (tmp_path / "shared.py").write_text("VALUE = 1\n")
    folder = write_flow(
        tmp_path / "inc",
        """\
        additional_includes: [../shared.py]
        nodes: []
        """,
    )
    listing = {**flow_files(folder), "shared.py": tmp_path / "shared.py"}
    for digest in {content_hash(listing), content_hash(flow_files(folder))}:
        planted = Path(tempfile.gettempdir()) / "flowport-flows" / digest[:24]
        planted.mkdir(parents=True, exist_ok=True)
        (planted / "flow.dag.yaml").write_text("nodes: []\n")
        (planted / "evil.py").write_text("raise SystemExit('planted')\n")
    flow = load_flow(folder)
    assert not (flow.path / "evil.py").exists()
    assert (flow.path / "shared.py").read_text() == "VALUE = 1\n"


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


def _alias_bomb(levels: int) -> str:
    text = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
    previous = "a"
    for name in "bcdefghij"[:levels]:
        text += f"{name}: &{name} [{', '.join([f'*{previous}'] * 9)}]\n"
        previous = name
    return text


def test_an_alias_bomb_is_refused_before_it_expands(tmp_path: Path) -> None:
    bomb = _alias_bomb(7)
    assert len(bomb) < 400
    with pytest.raises(FlowError) as info:
        parse_yaml(bomb, "bomb.yaml")
    problem = info.value.problems[0]
    assert (problem.code, problem.file, problem.line) == ("YamlTooLarge", "bomb.yaml", 6)
    assert "aliases" in problem.message
    folder = write_flow(tmp_path / "bomb", "inputs: {}\nnodes: []\n")
    (folder / "flow.dag.yaml").write_text(bomb + "nodes: []\n")
    assert problems(folder) == [("YamlTooLarge", 6)]


def test_a_long_text_repeated_by_aliases_is_refused_by_its_size() -> None:
    """Few values, but each alias stands for 600 KB of text: about 48 GB once expanded."""
    text = "b: &b " + "x" * 600_000 + "\nlist:\n" + "".join("- *b\n" for _ in range(80_000))
    with pytest.raises(FlowError) as info:
        parse_yaml(text, "big.yaml")
    problem = info.value.problems[0]
    assert (problem.code, problem.line) == ("YamlTooLarge", 3)  # the list that repeats it
    assert "characters" in problem.message


def test_aliases_within_the_bound_and_merge_keys_still_work() -> None:
    data = parse_yaml("base: &b {x: 1}\nother:\n  <<: *b\n  y: 2\nsame: *b\n")
    assert data == {"base": {"x": 1}, "other": {"x": 1, "y": 2}, "same": {"x": 1}}


def test_a_self_referencing_alias_is_refused() -> None:
    with pytest.raises(FlowError) as info:
        parse_yaml("a: &a\n  b: *a\n", "loop.yaml")
    assert (info.value.code, info.value.problems[0].line) == ("RecursiveAlias", 1)


def test_an_oversized_yaml_file_is_refused_unread(tmp_path: Path) -> None:
    from flowport.flow.yaml import MAX_YAML_BYTES

    folder = write_flow(tmp_path / "big", "nodes: []\n")
    (folder / "flow.dag.yaml").write_text("description: '" + "x" * MAX_YAML_BYTES + "'\nnodes: []\n")
    with pytest.raises(FlowError) as info:
        load_flow(folder)
    assert info.value.code == "YamlTooLarge"
    assert "KiB" in info.value.message and "flow.dag.yaml" in info.value.message


def test_non_utf8_yaml_names_the_file_and_line(tmp_path: Path) -> None:
    folder = write_flow(tmp_path / "latin", "nodes: []\n")
    (folder / "flow.dag.yaml").write_bytes(
        "inputs:\n  x: {default: caf\u00e9}\nnodes: []\n".encode("latin-1")
    )
    with pytest.raises(FlowError) as info:
        load_flow(folder)
    problem = info.value.problems[0]
    assert (problem.code, problem.line) == ("InvalidEncoding", 2)
    assert "UTF-8" in problem.message and "0xe9" in problem.message


def test_wrongly_shaped_fields_are_errors_with_lines(tmp_path: Path) -> None:
    folder = write_flow(
        tmp_path / "shapes",
        """\
        environment_variables:
          FINE: text
          LISTED: [1, 2]
        nodes:
        - name: a
          type: python
          source: {type: code, path: echo.py}
          inputs: "${inputs.text}"
        """,
    )
    assert sorted(problems(folder)) == [("InvalidFlow", 3), ("InvalidNode", 8)]


def test_additional_includes_as_a_string_is_an_error_not_a_walk(tmp_path: Path) -> None:
    folder = write_flow(tmp_path / "inc", "additional_includes: ../shared\nnodes: []\n")
    with pytest.raises(FlowError) as info:
        load_flow(folder)
    problem = info.value.problems[0]
    assert (problem.code, problem.line) == ("InvalidFlow", 1)
    assert "must be a list" in problem.message


def test_symlinks_inside_the_flow_are_followed_and_others_refused(tmp_path: Path) -> None:
    from flowport.flow.includes import flow_files

    folder = write_flow(tmp_path / "links", "nodes: []\n", {"lib/util.py": "X = 1\n"})
    (folder / "alias").symlink_to(folder / "lib", target_is_directory=True)
    assert sorted(flow_files(folder)) == ["alias/util.py", "flow.dag.yaml", "lib/util.py"]

    outside = tmp_path / "secret"
    outside.mkdir()
    (folder / "leak").symlink_to(outside, target_is_directory=True)
    with pytest.raises(FlowError) as info:
        flow_files(folder)
    assert info.value.code == "SymlinkOutsideFlow"
    assert str(folder / "leak") in info.value.message
    (folder / "leak").unlink()

    (folder / "lib" / "up").symlink_to(folder, target_is_directory=True)
    with pytest.raises(FlowError) as info:
        flow_files(folder)
    assert info.value.code == "SymlinkLoop"
    (folder / "lib" / "up").unlink()

    (folder / "self").symlink_to(folder / "self")
    with pytest.raises(FlowError) as info:
        flow_files(folder)
    assert info.value.code == "SymlinkLoop"
    assert str(folder / "self") in info.value.message


def test_a_list_as_a_key_is_an_error() -> None:
    with pytest.raises(FlowError) as info:
        parse_yaml("? [a]\n: b\n", "keys.yaml")
    assert (info.value.code, info.value.problems[0].line) == ("InvalidYaml", 1)
    assert "mapping key must be a plain value" in info.value.message


def test_an_include_that_is_a_symlink_loop_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    folder = write_flow(tmp_path / "inc", "additional_includes: [../loop]\nnodes: []\n")
    with pytest.raises(FlowError) as info:
        load_flow(folder)
    assert info.value.code == "SymlinkLoop"
    assert "'../loop'" in info.value.message


@pytest.mark.parametrize(
    ("value", "words"),
    [("openai-vision", "is not supported by flowport yet"), ("fancy", "Invalid message format 'fancy'")],
)
def test_a_message_format_other_than_basic_is_refused_by_name(tmp_path: Path, value: str, words: str) -> None:
    text = f"message_format: {value}\ninputs:\n  x:\n    type: string\noutputs: {{}}\nnodes: []\n"
    folder = write_flow(tmp_path, text)
    with pytest.raises(FlowError) as info:
        load_flow(folder)
    [problem] = info.value.problems
    assert (problem.code, problem.line) == ("InvalidMessageFormatType", 1)
    assert words in problem.message


def test_the_basic_message_format_loads(tmp_path: Path) -> None:
    folder = write_flow(
        tmp_path, "message_format: basic\ninputs:\n  x:\n    type: image\noutputs: {}\nnodes: []\n"
    )
    assert load_flow(folder).inputs["x"].type.value == "image"
