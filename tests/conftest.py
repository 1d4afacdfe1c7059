"""Shared fixtures: an isolated flowport home, the test LLM server, stored connections."""

from __future__ import annotations

import datetime
import ipaddress
import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from sqlalchemy import create_engine, text

from flowport.connections import Cipher, ConnectionService, connection_from_spec, load_or_create_key
from flowport.flow.yaml import parse_yaml
from flowport.store import ConnectionRows, open_database
from flowport.testing.llm_server import LLMServer

FLOWS = Path(__file__).parent / "flows"
TOOL_PACKAGE = Path(__file__).parent / "tool_packages" / "my_tools"
"""A prompt flow tool package (``package_tools`` entry point); its own build backend, so pip
installs it offline."""
POSTGRES_ENV = "FLOWPORT_TEST_DATABASE_URL"

# Tests run as root with an interpreter under /root (0700), which the default instance user
# (nobody) cannot run: instances keep root here, except in the tests of that isolation.
os.environ.setdefault("FLOWPORT_INSTANCE_USER", "root")


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


@pytest.fixture(scope="session")
def tool_package_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding tests/tool_packages/my_tools installed (``pip install --target``)."""
    target = tmp_path_factory.mktemp("tool_package_site")
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index"]
    subprocess.run([*pip, "--target", str(target), str(TOOL_PACKAGE)], check=True, capture_output=True)
    return target


@pytest.fixture
def tool_package(tool_package_site: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """my_tools importable (and its entry point found) in this process, for one test."""
    monkeypatch.syspath_prepend(str(tool_package_site))
    yield tool_package_site
    for name in [m for m in sys.modules if m == "my_tools" or m.startswith("my_tools.")]:
        del sys.modules[name]


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
    """The connections the recorded flows use (``bench/record_cases.py`` makes the same ones
    for prompt flow): OpenAI and Azure OpenAI pointing at the test LLM server, and a custom
    connection written with an unquoted date and number, which flowport keeps as text."""
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
    azure = {"name": "azure_open_ai_connection", "type": "azure_open_ai", "api_key": "test-key"}
    connections.save(connection_from_spec({**azure, "api_base": llm_server.url, "api_version": "2024-02-01"}))
    connections.save(connection_from_spec(parse_yaml(CUSTOM_CONNECTION_YAML)))
    return connections


CUSTOM_CONNECTION_YAML = """\
name: custom_connection
type: custom
configs:
  endpoint: https://example.invalid/api
  api_version: 2024-02-01
  retries: 3
secrets:
  api_key: custom-secret
"""


@pytest.fixture(scope="session")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """A self-signed certificate for 127.0.0.1: (certificate file, key file)."""
    folder = tmp_path_factory.mktemp("tls")
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "flowport test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return str(cert_file), str(key_file)


def free_port() -> int:
    """A loopback port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def postgres_url() -> str | None:
    return os.environ.get(POSTGRES_ENV)


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database: SQLite in a temp folder, or a new PostgreSQL schema."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'store.db'}"
        return
    base = postgres_url()
    if not base:
        pytest.skip(f"set {POSTGRES_ENV} to run the PostgreSQL variant")
    schema = f"fp_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(base)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    sep = "&" if "?" in base else "?"
    try:
        yield f"{base}{sep}options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()
