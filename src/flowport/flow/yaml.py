"""YAML loading that remembers line numbers, with YAML 1.2 or YAML 1.1 scalar rules.

prompt flow reads YAML as 1.2 (only ``true``/``false`` are booleans, no sexagesimal
numbers), so ``is: yes`` stays the string ``"yes"``. Azure's endpoint, deployment and model
files are read as Azure ML's SDK reads them, with PyYAML's safe loader: YAML 1.1, where
``on``/``yes``/``no``/``off`` are booleans, ``010`` is octal 8 and ``1:30`` is 90
(``parse_yaml(..., yaml11=True)``). Mappings come back as ``YamlMap``, which records the
line of every key, so errors can point at the line that is wrong.

Inputs are bounded before any work: a document larger than ``MAX_YAML_BYTES`` is refused
unread, and aliases may not expand a document beyond ``MAX_YAML_NODES`` nodes (an "alias
bomb": a few hundred bytes that expand to gigabytes once copied or stored) nor refer to
themselves.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from flowport.flow.errors import FlowError


class YamlMap(dict):
    """A dict that knows the 1-based line of itself and of each of its keys."""

    line: int | None = None
    key_lines: dict[str, int]

    def line_of(self, key: str) -> int | None:
        return self.key_lines.get(key, self.line)


class YamlList(list):
    """A list that knows its 1-based line."""

    line: int | None = None


MAX_YAML_BYTES = 1024 * 1024
"""The largest YAML document read: a flow file, an Azure spec, a connection file."""
MAX_YAML_EXPANDED_CHARS = 4 * 1024 * 1024
"""The text a document may stand for once its aliases are expanded (a file is at most 1 MiB)."""
MAX_YAML_NODES = 100_000
"""The most nodes a document may hold once its aliases are expanded."""


class _Yaml11Loader(yaml.SafeLoader):
    """SafeLoader (YAML 1.1 scalars, as ``yaml.safe_load``) with line tracking and an expansion bound."""

    def get_single_node(self) -> yaml.Node | None:
        node = super().get_single_node()
        if node is not None:
            _check_expansion(node)
        return node


class _Loader(_Yaml11Loader):
    """The same with YAML 1.2 core-schema scalars."""


class _Refused(Exception):
    def __init__(self, code: str, message: str, line: int | None) -> None:
        super().__init__(message)
        self.code = code
        self.line = line


def _check_expansion(root: yaml.Node) -> None:
    """Count the values and the text ``root`` stands for with every alias expanded; refuse past a bound.

    Each node's expanded size is computed once (aliases share node objects), so a document
    of N nodes is checked in O(N) however much its aliases would expand.
    """
    sizes: dict[int, tuple[int, int]] = {}
    open_nodes: set[int] = set()

    def size(node: yaml.Node) -> tuple[int, int]:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in open_nodes:
            raise _Refused(
                "RecursiveAlias", "an alias refers to a node that contains it", node.start_mark.line + 1
            )
        open_nodes.add(key)
        values, chars = 1, 0
        if isinstance(node, yaml.SequenceNode):
            children = node.value
        elif isinstance(node, yaml.MappingNode):
            children = [item for pair in node.value for item in pair]
        else:
            children, chars = [], len(node.value)
        for child in children:
            child_values, child_chars = size(child)
            values, chars = values + child_values, chars + child_chars
            if values > MAX_YAML_NODES or chars > MAX_YAML_EXPANDED_CHARS:
                raise _Refused(
                    "YamlTooLarge",
                    f"the document expands to more than {MAX_YAML_NODES:,} values or "
                    f"{MAX_YAML_EXPANDED_CHARS:,} characters (aliases *name counted each time they are "
                    "used); use fewer aliases or a smaller document",
                    node.start_mark.line + 1,
                )
        open_nodes.discard(key)
        sizes[key] = values, chars
        return values, chars

    size(root)


_YAML11_ONLY = {"tag:yaml.org,2002:bool", "tag:yaml.org,2002:int", "tag:yaml.org,2002:float"}
_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag not in _YAML11_ONLY]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:int",
    re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$"),
    list("-+0123456789"),
)
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
        r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
    ),
    list("-+0123456789."),
)


def _construct_int(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> int:
    text = loader.construct_scalar(node)
    if text.startswith("0o"):
        return int(text[2:], 8)
    return int(text, 0) if text.startswith("0x") else int(text, 10)


def _construct_bool(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> bool:
    return loader.construct_scalar(node).lower() == "true"


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> YamlMap:
    loader.flatten_mapping(node)
    result = YamlMap()
    result.line = node.start_mark.line + 1
    result.key_lines = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if isinstance(key, list | dict):
            raise yaml.constructor.ConstructorError(
                None, None, "a mapping key must be a plain value, not a list or mapping", key_node.start_mark
            )
        result[key] = loader.construct_object(value_node, deep=True)
        result.key_lines[key] = key_node.start_mark.line + 1
    return result


def _construct_sequence(loader: yaml.SafeLoader, node: yaml.SequenceNode) -> YamlList:
    result = YamlList(loader.construct_object(child, deep=True) for child in node.value)
    result.line = node.start_mark.line + 1
    return result


_Yaml11Loader.add_constructor("tag:yaml.org,2002:map", _construct_mapping)
_Yaml11Loader.add_constructor("tag:yaml.org,2002:seq", _construct_sequence)
_Loader.add_constructor("tag:yaml.org,2002:int", _construct_int)
_Loader.add_constructor("tag:yaml.org,2002:bool", _construct_bool)


def parse_yaml(text: str, file: str = "<string>", *, yaml11: bool = False) -> Any:
    """Parse YAML text; a syntax error or an oversized document is a FlowError with file and line.

    ``yaml11``: YAML 1.1 scalars, as ``yaml.safe_load`` reads them (Azure's files); else YAML 1.2.
    """
    if len(text) > MAX_YAML_BYTES:
        raise _too_big(file)
    try:
        return yaml.load(text, Loader=_Yaml11Loader if yaml11 else _Loader)
    except _Refused as exc:
        raise FlowError.single(exc.code, str(exc), file, exc.line) from None
    except RecursionError:
        raise FlowError.single("YamlTooLarge", "the document nests too deeply", file) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        detail = exc.problem or str(exc)
        raise FlowError.single("InvalidYaml", f"invalid YAML: {detail}", file, line) from None
    except yaml.YAMLError as exc:
        raise FlowError.single("InvalidYaml", f"invalid YAML: {exc}", file) from None


def _too_big(file: str) -> FlowError:
    return FlowError.single(
        "YamlTooLarge",
        f"the document is larger than {MAX_YAML_BYTES // 1024} KiB; flowport reads no more",
        file,
    )


def read_text_file(path: Path) -> str:
    """A YAML file's text: at most ``MAX_YAML_BYTES``, UTF-8, else a FlowError with file and line."""
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_YAML_BYTES + 1)
    except FileNotFoundError:
        raise FlowError.single("FileNotFound", f"no such file: {path}", str(path)) from None
    except OSError as exc:
        raise FlowError.single(
            "FileNotReadable", f"cannot read {path}: {exc.strerror or exc}", str(path)
        ) from None
    if len(data) > MAX_YAML_BYTES:
        raise _too_big(str(path))
    return decode_utf8(data, str(path))


def decode_utf8(data: bytes, file: str) -> str:
    """Bytes as UTF-8 text; otherwise a FlowError naming the line of the first bad byte."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise FlowError.single(
            "InvalidEncoding",
            f"the file is not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start}); "
            "save it as UTF-8",
            file,
            line,
        ) from None


def load_yaml_file(path: Path) -> Any:
    """Read and parse a YAML file, with a clear error when it cannot be read."""
    return parse_yaml(read_text_file(path), str(path))


def to_plain(value: Any) -> Any:
    """Deep-copy YAML containers into plain dicts and lists (tools see ordinary types)."""
    if isinstance(value, dict):
        return {k: to_plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [to_plain(v) for v in value]
    return value
