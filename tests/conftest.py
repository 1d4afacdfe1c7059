"""Shared fixtures: an isolated flowport home, the test LLM server, stored connections."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from flowport.connections import Cipher, ConnectionService, connection_from_spec, load_or_create_key
from flowport.store import ConnectionRows, open_database
from flowport.testing.llm_server import LLMServer

FLOWS = Path(__file__).parent / "flows"
POSTGRES_ENV = "FLOWPORT_TEST_DATABASE_URL"


@pytest.fixture(autouse=True)
def restore_environ() -> Iterator[None]:
    """Flows set their environment_variables in the process: undo that after each test."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture(scope="session")
def llm_server() -> Iterator[LLMServer]:
    with LLMServer() as server:
        yield server


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh FLOWPORT_HOME; the secret key comes from its key file."""
    path = tmp_path / "home"
    monkeypatch.setenv("FLOWPORT_HOME", str(path))
    monkeypatch.delenv("FLOWPORT_SECRET_KEY", raising=False)
    monkeypatch.delenv("FLOWPORT_DATABASE_URL", raising=False)
    return path


@pytest.fixture
def connections(home: Path) -> ConnectionService:
    return ConnectionService(ConnectionRows(open_database(home)), Cipher(load_or_create_key(home)))


@pytest.fixture
def openai_connection(connections: ConnectionService, llm_server: LLMServer) -> ConnectionService:
    """``open_ai_connection`` pointing at the test LLM server, as the recorded flows expect."""
    connections.save(
        connection_from_spec(
            {
                "name": "open_ai_connection",
                "type": "open_ai",
                "api_key": "test-key",
                "base_url": llm_server.base_url,
            }
        )
    )
    return connections


def postgres_url() -> str | None:
    return os.environ.get(POSTGRES_ENV)
