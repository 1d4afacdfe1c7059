"""The package table of docs/architecture.md holds: each package imports only what its row allows."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "flowport"

ALLOWED: dict[str, set[str]] = {
    "flow": set(),
    "connections": set(),
    "store": set(),
    "settings": set(),
    "request_ids": set(),
    "instance_keys": set(),
    "metrics": set(),
    "http_limits": set(),
    "transport": set(),
    "tracing": set(),
    "scrub": set(),
    "testing": set(),
    "studio": set(),
    "examples": set(),  # flows shipped as data: they import promptflow, as users' flows do
    "tools": {"connections", "transport", "tracing"},
    "engine": {"flow", "tools", "connections", "tracing"},
    "serving": {"engine", "flow", "tools", "request_ids", "metrics", "http_limits", "tracing"},
    "build": {"flow"},
    "runtime": {"serving", "engine", "flow", "connections", "build", "settings", "tracing", "instance_keys"},
    "gateway": {"transport", "request_ids", "metrics", "tracing", "scrub", "instance_keys"},
    "dataplane": {"gateway", "runtime", "connections", "transport", "http_limits", "settings", "tracing"},
    "control": {
        *("store", "dataplane", "runtime", "gateway", "flow", "connections"),
        *("studio", "settings", "tracing", "scrub"),
    },
    "cli": {
        *("engine", "flow", "connections", "store", "serving", "control", "build", "runtime"),
        *("dataplane", "testing", "settings", "tracing"),
    },
    "demo": {"connections", "engine", "runtime", "testing"},
    "__init__": {"tools"},
}


def _package(path: Path) -> str:
    return path.relative_to(SRC).parts[0].removesuffix(".py")


def _imported(path: Path) -> set[str]:
    """The flowport packages a module imports (absolute or relative), by their first name."""
    module = ["flowport", *path.relative_to(SRC).with_suffix("").parts]
    if module[-1] == "__init__":
        module.pop()
    else:
        module = module[:-1]  # the package a relative import starts from
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = module[: len(module) - node.level + 1] if node.level else []
            full = ".".join([*base, node.module] if node.module else base)
            names = [full, *(f"{full}.{alias.name}" for alias in node.names)]
        for name in names:
            parts = name.split(".")
            if parts[0] == "flowport" and len(parts) > 1 and parts[1] in ALLOWED:
                found.add(parts[1])
    return found


def test_every_package_imports_only_what_the_table_allows() -> None:
    wrong = []
    for path in sorted(SRC.rglob("*.py")):
        package = _package(path)
        assert package in ALLOWED, f"{package} (from {path}) is missing from the table"
        for target in sorted(_imported(path) - ALLOWED[package] - {package}):
            wrong.append(f"{path.relative_to(SRC)} imports flowport.{target}")
    assert not wrong, "\n".join(wrong)


def test_the_package_graph_has_no_cycle() -> None:
    graph = {package: allowed - {package} for package, allowed in ALLOWED.items()}
    done: set[str] = set()

    def visit(package: str, path: tuple[str, ...]) -> None:
        assert package not in path, " -> ".join((*path, package))
        if package not in done:
            for target in graph[package]:
                visit(target, (*path, package))
            done.add(package)

    for package in graph:
        visit(package, ())


def test_the_check_sees_imports() -> None:
    assert "transport" in _imported(SRC / "gateway" / "proxy.py")
    assert "engine" in _imported(SRC / "serving" / "app.py")
    assert "tools" in _imported(SRC / "__init__.py")
