"""An Azure-style scoring script (``score.py`` with ``init()`` and ``run()``), loaded once.

As ``azureml-inference-server-http`` calls it: ``run`` gets the request body as text (a
``GET`` sends the query parameters as a JSON object), the request itself with ``@rawhttp``,
or keyword arguments from a JSON object when ``inference-schema``'s ``@input_schema``
decorates it; a parameter named ``request_headers`` gets the request's headers. ``init`` and
``run`` may be ``async``. Errors name the script's file and line, never a traceback.
"""

from __future__ import annotations

import inspect
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from flowport.serving.aml import install_azureml_shim, wants_raw_request
from flowport.tools.compat import install_promptflow_shim
from flowport.tools.python_tool import ToolLoadError, import_module_from_file

FAILED_TO_START = "the scoring script failed to start: "
"""How an instance says (on stderr, one line) that its script could not load or ``init()`` failed."""


class ScriptError(Exception):
    """The scoring script cannot be loaded or its ``init()`` failed: one line saying where and why."""


class InputMode:
    TEXT = "text"
    """The body as text (``GET``: the query parameters as a JSON object)."""
    RAW = "raw"
    """``@rawhttp``: an ``AMLRequest``."""
    SCHEMA = "schema"
    """``@input_schema``: the JSON body's fields as keyword arguments."""


def located(exc: BaseException, folder: Path) -> str:
    """``file:line`` of the deepest frame inside ``folder`` (a syntax error: its own line)."""
    if isinstance(exc, SyntaxError) and exc.filename:
        return f"{_shown(Path(exc.filename), folder)}:{exc.lineno}"
    where = None
    frame = exc.__traceback__
    prefix = str(folder) + os.sep
    while frame is not None:
        file = frame.tb_frame.f_code.co_filename
        if file.startswith(prefix):
            where = f"{_shown(Path(file), folder)}:{frame.tb_lineno}"
        frame = frame.tb_next
    return where or "(outside the scoring script)"


def _shown(path: Path, folder: Path) -> str:
    try:
        return path.relative_to(folder).as_posix()
    except ValueError:
        return path.name


def describe(exc: BaseException, folder: Path) -> str:
    """``score.py:12: (ValueError) the message``."""
    return f"{located(exc, folder)}: ({type(exc).__name__}) {exc}"


@dataclass
class UserScript:
    """The script's module, its ``init`` and ``run``, and how ``run`` takes its input."""

    path: Path
    folder: Path
    init: Callable[..., Any]
    run: Callable[..., Any]
    mode: str
    input_name: str
    parameters: tuple[str, ...]
    """``run``'s input parameters (for ``@input_schema``: the JSON fields it takes)."""
    wants_headers: bool

    @property
    def name(self) -> str:
        return self.path.name

    @classmethod
    def load(cls, folder: Path, script: str) -> UserScript:
        """Import ``folder/script`` (its folder first on ``sys.path``) and check ``init`` and ``run``."""
        folder = folder.resolve()
        path = (folder / script).resolve()
        if not path.is_file():
            raise ScriptError(f"the scoring script {script!r} is not in the code folder {folder}")
        install_azureml_shim()
        install_promptflow_shim()
        for entry in (str(path.parent), str(folder)):
            if entry not in sys.path:
                sys.path.insert(0, entry)
        module = _import(path)
        init, run = getattr(module, "init", None), getattr(module, "run", None)
        for name, func in (("init", init), ("run", run)):
            if not callable(func):
                needs = "a scoring script needs init() and run()"
                raise ScriptError(f"{script}: defines no {name}() function; {needs}")
        assert init is not None and run is not None
        return cls(path, folder, init, run, *_input_shape(run, script))

    async def call_init(self) -> None:
        """Run ``init()`` (awaited when async); a failure is a ScriptError naming file and line."""
        try:
            result = self.init()
            if inspect.isawaitable(result):
                await result
        except (Exception, SystemExit) as exc:
            raise ScriptError(f"init() failed at {describe(exc, self.folder)}") from None


def _import(path: Path) -> ModuleType:
    try:
        return import_module_from_file(path)
    except ToolLoadError as exc:
        raise ScriptError(str(exc)) from None


def _schema_decorated(run: Callable[..., Any]) -> bool:
    """``inference-schema``'s ``@input_schema`` (only when that package is installed)."""
    try:
        from inference_schema.schema_util import is_schema_decorated  # type: ignore[import-not-found]
    except ImportError:
        return False
    try:
        return bool(is_schema_decorated(run))
    except Exception:
        return False


def _input_shape(run: Callable[..., Any], script: str) -> tuple[str, str, tuple[str, ...], bool]:
    """(mode, first input parameter, input parameters, takes request_headers), as Azure checks them."""
    try:
        target = inspect.unwrap(run)
        params = list(inspect.signature(target).parameters.values())
    except (TypeError, ValueError):
        raise ScriptError(f"{script}: run is not a function flowport can inspect") from None
    if any(p.kind not in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) for p in params):
        raise ScriptError(f"{script}: run() cannot take positional-only arguments, *args or **kwargs")
    wants_headers = any(p.name == "request_headers" for p in params)
    inputs = tuple(p.name for p in params if p.name != "request_headers")
    if not inputs:
        raise ScriptError(f"{script}: run() needs a parameter for the input data")
    raw, schema = wants_raw_request(run), _schema_decorated(run)
    if raw and schema:
        raise ScriptError(f"{script}: run() cannot have both @rawhttp and @input_schema")
    mode = InputMode.RAW if raw else InputMode.SCHEMA if schema else InputMode.TEXT
    return mode, inputs[0], inputs, wants_headers
