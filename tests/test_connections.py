"""Connections: YAML shape, encrypted storage on SQLite and PostgreSQL, environment overrides."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from sqlalchemy import text

from flowport.connections import (
    SCRUBBED,
    Cipher,
    ConnectionNotFound,
    ConnectionResolver,
    ConnectionService,
    ConnectionSpecError,
    CustomConnection,
    OpenAIConnection,
    apply_env_overrides,
    apply_set,
    connection_from_spec,
    load_or_create_key,
)
from flowport.connections.crypto import SecretKeyError
from flowport.store import ConnectionRows, Database
from flowport.store.database import HEAD_REVISION


@pytest.fixture
def service(database_url: str, tmp_path: Path) -> ConnectionService:
    db = Database(database_url)
    db.migrate()
    return ConnectionService(ConnectionRows(db), Cipher(load_or_create_key(tmp_path / "home")))


def test_connection_yaml_shapes_and_env_references(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_KEY", "sk-from-env")
    openai = connection_from_spec({"name": "o", "type": "open_ai", "api_key": "${env:MY_KEY}"})
    assert isinstance(openai, OpenAIConnection)
    assert openai.api_key == "sk-from-env"
    azure = connection_from_spec(
        {"name": "a", "type": "azure_open_ai", "api_key": "k", "api_base": "https://x", "api_version": "v1"}
    )
    assert azure.configs == {"api_base": "https://x", "api_type": "azure", "api_version": "v1"}
    custom = connection_from_spec(
        {"name": "c", "type": "custom", "configs": {"url": "u"}, "secrets": {"token": "${env:MY_KEY}"}}
    )
    assert custom.token == "sk-from-env"
    assert custom.to_dict() == {
        "name": "c",
        "type": "custom",
        "configs": {"url": "u"},
        "secrets": {"token": SCRUBBED},
    }


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"type": "open_ai", "api_key": "k"}, "needs a 'name'"),
        ({"name": "x", "api_key": "k"}, "needs a 'type'"),
        ({"name": "x", "type": "nope"}, "unknown connection type"),
        ({"name": "x", "type": "open_ai"}, "missing api_key"),
        ({"name": "x", "type": "open_ai", "api_key": "k", "colour": "red"}, "does not take colour"),
        ({"name": "x", "type": "open_ai", "api_key": "${env:FLOWPORT_SURELY_UNSET}"}, "is not set"),
    ],
)
def test_bad_connection_specs_say_what_is_wrong(spec: dict, message: str) -> None:
    with pytest.raises(ConnectionSpecError, match=message):
        connection_from_spec(spec)


def test_set_overrides_fields_and_sections() -> None:
    spec = apply_set({"name": "c", "type": "custom"}, ["configs.url=http://u", "secrets.key=s", "name=d"])
    assert spec == {"name": "d", "type": "custom", "configs": {"url": "http://u"}, "secrets": {"key": "s"}}
    with pytest.raises(ConnectionSpecError):
        apply_set({}, ["novalue"])


def test_store_round_trip_keeps_secrets_encrypted_at_rest(service: ConnectionService) -> None:
    service.save(OpenAIConnection(name="openai", api_key="sk-very-secret", base_url="http://llm"))
    service.save(CustomConnection(name="custom", configs={"a": 1}, secrets={"token": "tok-secret"}))
    assert service.get("openai").api_key == "sk-very-secret"
    assert service.get("custom").token == "tok-secret"
    assert [c.name for c in service.list()] == ["custom", "openai"]
    with service.rows.db.engine.connect() as conn:
        raw = " ".join(str(v) for row in conn.execute(text("SELECT * FROM connections")) for v in row)
    assert "sk-very-secret" not in raw and "tok-secret" not in raw
    service.save(OpenAIConnection(name="openai", api_key="sk-rotated"))
    assert service.get("openai").api_key == "sk-rotated"
    service.delete("openai")
    with pytest.raises(ConnectionNotFound):
        service.get("openai")
    with pytest.raises(ConnectionNotFound):
        service.delete("openai")


def test_migrations_are_idempotent(database_url: str) -> None:
    db = Database(database_url)
    db.migrate()
    db.migrate()
    with db.engine.connect() as conn:
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == HEAD_REVISION


def test_key_file_is_created_private_and_reused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FLOWPORT_SECRET_KEY", raising=False)
    key = load_or_create_key(tmp_path)
    assert stat.S_IMODE(os.stat(tmp_path / "secret.key").st_mode) == 0o600
    assert load_or_create_key(tmp_path) == key
    monkeypatch.setenv("FLOWPORT_SECRET_KEY", "a passphrase")
    derived = load_or_create_key(tmp_path)
    assert derived != key
    token = Cipher(key).encrypt("x")
    with pytest.raises(SecretKeyError):
        Cipher(derived).decrypt(token)


def test_environment_overrides_fields_swap_and_inline_json() -> None:
    base = OpenAIConnection(name="my conn", api_key="k1", base_url="http://a")
    other = OpenAIConnection(name="other", api_key="k2")
    field = apply_env_overrides("my conn", base, {}, {"MY_CONN_API_KEY": "k-env"})
    assert (field.api_key, field.base_url) == ("k-env", "http://a")
    swapped = apply_env_overrides("my conn", base, {"other": other}, {"my conn": "other"})
    assert swapped is other
    inline = apply_env_overrides(
        "my conn", base, {}, {"my conn": '{"api_key": "k3", "base_url": "http://b"}'}
    )
    assert (inline.type, inline.api_key, inline.base_url) == ("open_ai", "k3", "http://b")
    with pytest.raises(ConnectionSpecError, match="does not exist"):
        apply_env_overrides("my conn", base, {}, {"my conn": "ghost"})


def test_resolver_reads_only_what_is_asked_and_applies_overrides(
    service: ConnectionService, monkeypatch: pytest.MonkeyPatch
) -> None:
    service.save(CustomConnection(name="svc", configs={"url": "u"}, secrets={"key": "stored"}))
    monkeypatch.setenv("SVC_KEY", "from-env")
    resolver = ConnectionResolver(service)
    assert resolver["svc"].key == "from-env"
    assert resolver["svc"].url == "u"
    assert list(resolver) == ["svc"]
    with pytest.raises(KeyError):
        resolver["missing"]


def test_head_revision_constant_matches_the_migration_scripts(database_url: str) -> None:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    from flowport.store.database import _MIGRATIONS, HEAD_REVISION

    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS))
    assert ScriptDirectory.from_config(config).get_current_head() == HEAD_REVISION
    db = Database(database_url)
    assert db.revision() is None
    db.migrate()
    assert db.revision() == HEAD_REVISION


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"type": "open_ai", "api_key": ["a"]}, "connection 'c': api_key must be a string, not a list"),
        ({"type": "custom", "configs": ["a"]}, "configs of connection 'c' must be a mapping"),
        ({"type": "custom", "secrets": {"k": {"x": 1}}}, "secrets of connection 'c': k must be a string"),
        ({"type": "open_ai", "api_key": "k" * 70_000}, "api_key is longer than 65,536 characters"),
    ],
)
def test_wrongly_shaped_connection_fields_are_spec_errors(spec: dict[str, object], message: str) -> None:
    with pytest.raises(ConnectionSpecError) as caught:
        connection_from_spec({"name": "c", **spec}, environ={})
    assert message in str(caught.value)


def test_unquoted_dates_and_numbers_are_kept_as_the_text_written() -> None:
    from flowport.flow.yaml import parse_yaml

    azure = connection_from_spec(
        parse_yaml("name: a\ntype: azure_open_ai\napi_key: k\napi_base: https://x\napi_version: 2024-02-01\n")
    )
    assert azure.api_version == "2024-02-01"
    custom = connection_from_spec(
        parse_yaml("name: c\ntype: custom\nconfigs:\n  v: 2024-02-01\n  n: 3\n  b: true\nsecrets:\n  s: 12\n")
    )
    assert custom.configs == {"v": "2024-02-01", "n": "3", "b": "true"}
    assert custom.secrets == {"s": "12"}


def test_custom_connection_is_a_mapping_of_its_fields() -> None:
    conn = CustomConnection(
        name="c", configs={"url": "u", "both": "config"}, secrets={"key": "s", "both": "secret"}
    )
    assert dict(conn) == {"url": "u", "both": "secret", "key": "s"}
    assert {**conn}["both"] == "secret"
    assert conn["url"] == "u" and conn.url == "u" and conn.key == "s"
    assert "url" in conn and "nope" not in conn
    assert list(conn) == ["url", "both", "key"]
    assert conn.get("nope", 1) == 1
    with pytest.raises(KeyError, match="Key 'nope' not found in connection 'c'"):
        conn["nope"]
    with pytest.raises(AttributeError):
        conn.nope  # noqa: B018
