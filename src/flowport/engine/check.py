"""``python -m flowport.engine.check FLOW_DIR``: import a flow's tools and compile its templates.

The control plane must not run flow code, so it validates a model by running this module in
a short-lived process (see ``flowport.control.tool_check``). Standard output carries one JSON
list of problems (``code``, ``message``, ``file``, ``line``); anything the tools print goes to
standard error. Failures that may depend on the deployment (an exception other than a syntax
or import error while importing, which may read a variable only the deployment sets) are not
reported: they surface when the deployment starts.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import json
import os
import sys
from pathlib import Path
from typing import Any

from flowport.engine.flex_signature import signature_inputs
from flowport.flow import MISSING, FlowError, NodeDef, Problem, build_plan, load_flow
from flowport.flow.flex import flex_file, load_flex
from flowport.tools.compat import install_promptflow_shim
from flowport.tools.installed_tools import InstalledTools, PackageToolError
from flowport.tools.package_tools import BUILTIN_PACKAGE_TOOLS, PROMPT_LLM_TOOL, VISION_TOOLS
from flowport.tools.python_tool import ToolLoadError, find_tool_function, import_module_from_file
from flowport.tools.templates import TemplateError, compile_template


def check_flex(folder: Path, *, has_requirements: bool) -> list[Problem]:
    """A flex flow's entry: its module imports and holds the function or class named."""
    try:
        definition = load_flex(folder)
    except FlowError as exc:
        return exc.problems
    where = str(definition.file)
    sys.path.insert(0, str(definition.path))
    try:
        module = importlib.import_module(definition.module)
    except Exception as exc:
        if not _reportable(exc, has_requirements):
            return []
        return [
            Problem("EntryImportError", f"entry {definition.entry!r}: ({type(exc).__name__}) {exc}", where)
        ]
    if not callable(getattr(module, definition.attr, None)):
        message = (
            f"entry {definition.entry!r}: {definition.module} has no function or class {definition.attr!r}"
        )
        return [Problem("EntryNotFound", message, where)]
    return []


def flex_inputs(folder: Path) -> dict[str, dict[str, Any]]:
    """A flex entry's inputs as the model document lists them (type, JSON default), for the studio.
    Read from the signature only: a class entry is not built. Empty when anything fails."""
    try:
        definition = load_flex(folder)
        entry = getattr(importlib.import_module(definition.module), definition.attr)
        func = entry.__call__ if inspect.isclass(entry) else entry
        inputs = signature_inputs(func)
    except Exception:
        return {}
    if inspect.isclass(entry):
        inputs.pop(next(iter(inputs), ""), None)  # self
    shown: dict[str, dict[str, Any]] = {}
    for name, spec in inputs.items():
        shown[name] = {"type": str(spec.type)}
        if spec.default is not MISSING:
            with contextlib.suppress(TypeError, ValueError):  # a default JSON cannot hold is left out
                shown[name]["default"] = json.loads(json.dumps(spec.default))
    return shown


def check_flow(folder: Path, *, has_requirements: bool) -> list[Problem]:
    """Every tool import and template problem of the flow in ``folder``."""
    install_promptflow_shim()
    if flex_file(folder) is not None:
        return check_flex(folder, has_requirements=has_requirements)
    try:
        flow = load_flow(folder)
    except FlowError as exc:
        return exc.problems
    plan = build_plan(flow)
    problems = []
    installed = InstalledTools()
    for node_plan in (*plan.line_nodes, *plan.aggregation_nodes):
        node = node_plan.node
        if node.source_type in ("package", "package_with_prompt"):
            problems += _check_package_tool(node, str(flow.file), installed, has_requirements)
        if not node.source_path:
            continue
        path = flow.path / node.source_path
        try:
            if node.type == "python":
                find_tool_function(import_module_from_file(path), path, node.source_tool)
            else:
                compile_template(path.read_text(encoding="utf-8"), path.name)
        except ToolLoadError as exc:
            if _reportable(exc.__cause__, has_requirements):
                problems.append(Problem(exc.code, f"node {node.name!r}: {exc}", str(flow.file), node.line))
        except (OSError, UnicodeDecodeError, TemplateError) as exc:
            problems.append(
                Problem("InvalidTemplate", f"node {node.name!r}: {exc}", str(flow.file), node.line)
            )
    return problems


def _check_package_tool(
    node: NodeDef, where: str, installed: InstalledTools, has_requirements: bool
) -> list[Problem]:
    """A package tool is built in or installed here, and its module imports. One that is not
    installed may come with the flow's requirements.txt: then the deployment tells."""
    if node.source_tool in BUILTIN_PACKAGE_TOOLS or node.source_tool in (PROMPT_LLM_TOOL, *VISION_TOOLS):
        return []
    try:
        installed.find(str(node.source_tool)).load()
    except PackageToolError as exc:
        if exc.code == "PackageToolNotFoundError" and has_requirements:
            return []
        return [Problem(exc.code, f"node {node.name!r}: {exc}", where, node.line)]
    return []


def _reportable(cause: BaseException | None, has_requirements: bool) -> bool:
    """No function found, a syntax error, or a missing module the flow does not bring itself."""
    if cause is None or isinstance(cause, SyntaxError):
        return True
    if isinstance(cause, ModuleNotFoundError):
        return not has_requirements
    return isinstance(cause, ImportError)


def main() -> None:
    out = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)  # what tools print at import must not mix with the answer
    folder = Path(sys.argv[1])
    problems = check_flow(folder, has_requirements="--requirements" in sys.argv[2:])
    answer: Any = [p.to_dict() for p in problems]
    if flex_file(folder) is not None and not problems:  # a flex flow: its inputs too
        answer = {"problems": answer, "inputs": flex_inputs(folder)}
    out.write(json.dumps(answer))
    out.flush()


if __name__ == "__main__":
    main()
