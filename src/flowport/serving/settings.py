"""What one scoring instance is allowed to do: limits, timeouts, filters, from flags or env."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass

MAX_CONCURRENT_ENV = "FLOWPORT_MAX_CONCURRENT_REQUESTS"
REQUEST_TIMEOUT_ENV = "FLOWPORT_REQUEST_TIMEOUT_MS"
"""The two settings a deployment's ``request_settings`` sets (``build/image.py`` names them too:
``build`` may not import ``serving``; ``tests/test_build.py`` keeps the two in step)."""
WORKERS_ENV = "PROMPTFLOW_WORKER_NUM"
"""Processes sharing one port (prompt flow's name), read where the server starts, not per process."""


class SettingsError(ValueError):
    """A serving setting has a value it cannot take."""


def _int(environ: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a whole number, got {raw!r}") from None
    if not low <= value <= high:
        raise SettingsError(f"{name} must be between {low} and {high}, got {value}")
    return value


@dataclass(frozen=True)
class ServeSettings:
    max_concurrent_requests: int = 10
    """Lines running at once; more wait up to ``max_queue_wait_ms``, then get 429."""
    max_queue_wait_ms: int = 500
    request_timeout_ms: int = 5000
    """A line running longer is cancelled and answered 408 (Azure allows up to 300000)."""
    max_body_bytes: int = 32 * 1024 * 1024
    response_included_fields: tuple[str, ...] | None = None
    """PROMPTFLOW_RESPONSE_INCLUDED_FIELDS: only these outputs are returned."""
    worker_threads: int | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ServeSettings:
        env = os.environ if environ is None else environ
        fields = env.get("PROMPTFLOW_RESPONSE_INCLUDED_FIELDS")
        included = None
        if fields:
            try:
                parsed = json.loads(fields)
            except ValueError:
                raise SettingsError(
                    f"PROMPTFLOW_RESPONSE_INCLUDED_FIELDS must be a JSON list of output names, got {fields!r}"
                ) from None
            if not isinstance(parsed, list) or not all(isinstance(f, str) for f in parsed):
                raise SettingsError("PROMPTFLOW_RESPONSE_INCLUDED_FIELDS must be a JSON list of strings")
            included = tuple(parsed)
        threads = env.get("PROMPTFLOW_WORKER_THREADS")
        return cls(
            max_concurrent_requests=_int(env, MAX_CONCURRENT_ENV, 10, 1, 100_000),
            max_queue_wait_ms=_int(env, "FLOWPORT_MAX_QUEUE_WAIT_MS", 500, 0, 300_000),
            request_timeout_ms=_int(env, REQUEST_TIMEOUT_ENV, 5000, 1, 300_000),
            max_body_bytes=_int(env, "FLOWPORT_MAX_BODY_BYTES", 32 * 1024 * 1024, 1, 1 << 31),
            response_included_fields=included,
            worker_threads=_int(env, "PROMPTFLOW_WORKER_THREADS", 16, 1, 1024) if threads else None,
        )
