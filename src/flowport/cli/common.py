"""Shared CLI plumbing: JSON output, errors to stderr, key=value parsing, the local store."""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

import typer

from flowport.connections import (
    Cipher,
    ConnectionNotFound,
    ConnectionResolver,
    ConnectionService,
    ConnectionSpecError,
    load_or_create_key,
)
from flowport.connections.crypto import SecretKeyError
from flowport.flow import FlowError
from flowport.settings import flowport_home


def print_json(value: Any) -> None:
    typer.echo(json.dumps(value, indent=2, ensure_ascii=False, default=str))


def fail(message: str, code: int = 1) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn every expected failure into a one-paragraph message and exit code 1."""
    from flowport.engine import ExecutionError

    try:
        yield
    except FlowError as exc:
        fail(exc.message)
    except ExecutionError as exc:
        typer.echo(json.dumps(exc.response(), indent=2, ensure_ascii=False), err=True)
        raise typer.Exit(1) from None
    except (ConnectionSpecError, ConnectionNotFound, SecretKeyError) as exc:
        fail(str(exc))


def parse_pairs(items: list[str], what: str) -> dict[str, str]:
    """``["a=1", "b=x=y"]`` -> ``{"a": "1", "b": "x=y"}``."""
    pairs = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            fail(f"{what} expects key=value, got {item!r}")
        pairs[key.strip()] = value
    return pairs


def read_json_file(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        fail(f"cannot read {path}: {exc}")
    except ValueError as exc:
        fail(f"{path} is not valid JSON: {exc}")


def enter_flow_dir(flow: Path) -> Path:
    """Run from the flow's folder, as prompt flow does, so tools can open relative files.

    Returns the flow path made absolute (paths given on the command line must be resolved
    before calling this).
    """
    flow = flow.expanduser().resolve()
    folder = flow if flow.is_dir() else flow.parent
    if folder.is_dir():
        os.chdir(folder)
    return flow


def flow_source(flow: Path) -> Path | str:
    """``--flow``: a path (made absolute; the process moves to its folder) or ``module:attr`` here."""
    from flowport.flow.flex import is_entry

    if is_entry(str(flow)) and not flow.exists():
        return str(flow)
    return enter_flow_dir(flow)


def connection_service() -> ConnectionService:
    from flowport.store import ConnectionRows, open_database

    home = flowport_home()
    return ConnectionService(ConnectionRows(open_database(home)), Cipher(load_or_create_key(home)))


def connection_resolver() -> ConnectionResolver:
    """The local store's connections; the store is opened only if a flow uses one."""
    return ConnectionResolver(connection_service)


def guarded(func: Callable[..., Any]) -> Callable[..., Any]:
    """Decorator form of ``user_errors`` for command functions."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with user_errors():
            return func(*args, **kwargs)

    return wrapper
