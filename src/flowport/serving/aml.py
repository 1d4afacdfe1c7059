"""Azure's scoring-script helpers, flowport's own: ``AMLResponse``, ``AMLRequest`` and ``@rawhttp``.

``azureml-inference-server-http`` documents them for ``score.py`` files: ``@rawhttp`` on
``run`` hands it the HTTP request itself, and ``run`` may answer an ``AMLResponse`` (a body,
a status and headers) instead of a value. A script imports them from
``azureml.contrib.services.aml_response`` / ``aml_request`` or from
``azureml_inference_server_http.api.*``; ``install_azureml_shim`` puts modules of those names
on ``sys.path`` when the real packages are not installed, so such scripts run unchanged.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

SHIM_ROOT = str(Path(__file__).parent / "_amlshim")
RAW_MARK = "__flowport_rawhttp__"
_RAW_MODULES = ("azureml.contrib.services.aml_request", "azureml_inference_server_http.api.aml_request")

F = TypeVar("F", bound=Callable[..., Any])


def install_azureml_shim() -> bool:
    """Put the stand-ins on sys.path unless the real modules import. True if installed."""
    if SHIM_ROOT in sys.path:
        return True
    try:
        real = importlib.util.find_spec("azureml.contrib.services.aml_response") is not None
    except (ImportError, ValueError):
        real = False
    if real:
        return False
    sys.path.append(SHIM_ROOT)
    return True


def rawhttp(func: F) -> F:
    """Mark ``run`` as taking the raw request (an ``AMLRequest``) instead of the body as text."""
    setattr(func, RAW_MARK, True)
    return func


def wants_raw_request(run: Callable[..., Any]) -> bool:
    """``@rawhttp`` from flowport's stand-in or from either real Azure module."""
    if getattr(run, RAW_MARK, False):
        return True
    return any(getattr(sys.modules.get(name), "_rawHttpRequested", False) for name in _RAW_MODULES)


class AMLResponse:
    """What ``run`` may answer: a body, a status and headers, sent as given.

    As Azure's: ``json_str=True`` sends ``message`` as JSON; otherwise ``message`` (text,
    bytes, or an iterable of them to stream) is sent as is, with the ``Content-Type`` from
    ``response_headers`` (default ``text/html; charset=utf-8``, as Flask's). ``None`` sends
    ``{}``. A header value with commas is sent as one header per part.
    """

    def __init__(
        self,
        message: Any,
        status_code: int,
        response_headers: Mapping[str, str] | None = None,
        json_str: bool = False,
        run_function_failed: bool = False,
    ) -> None:
        self.status_code = int(status_code)
        self.headers: list[tuple[str, str]] = []
        given = dict(response_headers or {})
        content_type = next((v for k, v in given.items() if k.lower() == "content-type"), None)
        self.response: bytes | Iterable[Any]
        if message is None or json_str:
            self.response = json.dumps({} if message is None else message).encode()
            self.mimetype = "application/json"
        else:
            self.response = message.encode() if isinstance(message, str) else message
            self.mimetype = content_type or "text/html; charset=utf-8"
        self.headers.append(("x-ms-run-function-failed", str(bool(run_function_failed))))
        for name, value in given.items():
            if name.lower() == "content-type":
                continue
            self.headers.extend((name, part.strip()) for part in str(value).split(","))

    @property
    def is_streamed(self) -> bool:
        return not isinstance(self.response, bytes | bytearray)

    def get_data(self, as_text: bool = False) -> bytes | str:
        data = self.response if isinstance(self.response, bytes) else b""
        return data.decode() if as_text else data

    @property
    def data(self) -> bytes:
        return self.response if isinstance(self.response, bytes) else b""


class AMLRequest:
    """The request ``@rawhttp`` hands to ``run``: Flask's request attributes that scripts use."""

    def __init__(
        self,
        method: str,
        path: str,
        query: str,
        url: str,
        headers: Mapping[str, str],
        args: Any,
        body: bytes,
    ) -> None:
        self.method = method
        self.path = path
        self.full_path = f"{path}?{query}"
        self.query_string = query.encode()
        self.url = url
        self.headers = headers
        self.args = args
        """The query parameters: ``get(name)``, ``getlist(name)``, ``keys()`` ..."""
        self.data = body
        self.content_type = headers.get("content-type")
        self.mimetype = (self.content_type or "").split(";")[0].strip().lower()
        self.content_length = len(body)

    def get_data(self, cache: bool = True, as_text: bool = False, parse_form_data: bool = False) -> Any:
        return self.data.decode("utf-8", "replace") if as_text else self.data

    def get_json(self, force: bool = False, silent: bool = False, cache: bool = True) -> Any:
        if not force and self.mimetype != "application/json" and not self.mimetype.endswith("+json"):
            if silent:
                return None
            raise ValueError("the request's Content-Type is not application/json")
        try:
            return json.loads(self.data)
        except ValueError:
            if silent:
                return None
            raise

    @property
    def json(self) -> Any:
        return self.get_json(silent=True)
