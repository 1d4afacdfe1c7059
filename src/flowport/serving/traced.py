"""Turning tracing on for a scoring process (a deployment's instance, ``flowport flow serve``)."""

from __future__ import annotations

import atexit
import os
from collections.abc import Callable, Mapping
from typing import Any, BinaryIO

from flowport.serving.app import ScoringApp
from flowport.serving.script_app import ScriptApp
from flowport.tracing.setup import Tracing, configure

TRACE_FD_ENV = "FLOWPORT_TRACE_FD"
"""Set by the local runtime: the built-in store's file, opened for the instance."""
TRACE_FILE_ENV = "FLOWPORT_TRACE_FILE"
"""A built-in store file to append spans to (``flow serve``, benchmarks)."""


def _builtin_file(environ: Mapping[str, str]) -> BinaryIO | None:
    try:
        if environ.get(TRACE_FD_ENV):
            return os.fdopen(int(environ[TRACE_FD_ENV]), "ab", buffering=0)
        if environ.get(TRACE_FILE_ENV):
            return open(environ[TRACE_FILE_ENV], "ab", buffering=0)
    except (OSError, ValueError):
        return None
    return None


def trace_app(
    app: ScoringApp | ScriptApp,
    service: str,
    resource: Mapping[str, Any] | None = None,
    scrub: Callable[[str], str] | None = None,
) -> Tracing | None:
    """Spans to the exporters the environment names, else to the built-in store's file (when
    there is one); drops counted on the app's /metrics. None: this process does not trace."""
    tracing = configure(
        service,
        os.environ,
        resource={"flowport.flow": app.name, **(resource or {})},
        builtin=_builtin_file(os.environ),
        scrub=scrub,
        on_drop=app.metrics.trace_dropped.inc,
    )
    if tracing is not None:
        atexit.register(tracing.shutdown)
    return tracing
