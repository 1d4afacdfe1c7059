"""Secret deployment variables and connection secrets: never in an API answer, the CLI or the logs."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.endpoint_harness import FLOWS, Flowport

MARKED = "https://internal.example/hook-8f3a1c"
"""A value whose name (API_URL) does not look secret: marked in secret_environment_variables."""
NAMED = "named-secret-2b7e"
CONNECTION = "connection-secret-5d1f"


@pytest.fixture
def fp(home: Path) -> Iterator[Flowport]:
    with Flowport(home) as running:
        yield running


def _deploy_snoop(fp: Flowport) -> None:
    fp.ok("PUT", "/connections/hooks", json={"type": "custom", "secrets": {"token": CONNECTION}})
    fp.endpoint("vault")
    fp.deploy(
        "vault",
        "blue",
        model={"path": str(FLOWS / "snoop")},
        environment_variables={"API_URL": MARKED, "DB_PASSWORD": NAMED, "LEVEL": "info", "HOOKS": "hooks"},
        secret_environment_variables=["API_URL"],
    )
    assert fp.traffic("vault", blue=100).status_code < 300


def test_marked_and_secret_looking_variables_never_leave_in_clear(fp: Flowport, home: Path) -> None:
    _deploy_snoop(fp)
    said = f"leaking {MARKED} and {NAMED} and {CONNECTION}"
    seen = fp.score("vault", {"home": str(home), "server_pid": os.getpid(), "say": said}).json()["seen"]
    assert seen["environ"]["API_URL"] == MARKED  # the flow itself has its variables

    shown = fp.ok("GET", "/endpoints/vault/deployments/blue")
    assert shown["environment_variables"] == {
        "API_URL": "******",
        "DB_PASSWORD": "******",
        "LEVEL": "info",
        "HOOKS": "hooks",
    }
    assert shown["secret_environment_variables"] == ["API_URL"]
    answers = [
        json.dumps(shown),
        json.dumps(fp.ok("GET", "/endpoints/vault/deployments")),
        json.dumps(fp.ok("GET", "/endpoints/vault/deployments/blue/logs", params={"lines": 1000})),
        fp.cli("online-deployment", "show", "-n", "blue", "-e", "vault", "-o", "json").stdout,
        fp.cli("online-deployment", "list", "-e", "vault", "-o", "json").stdout,
    ]
    logs = fp.cli("online-deployment", "get-logs", "-n", "blue", "-e", "vault", "--lines", "1000").stdout
    assert "leaking ****** and ****** and ******" in logs  # stdout and stderr both
    for text in [*answers, logs]:
        for secret in (MARKED, NAMED, CONNECTION):
            assert secret not in text


def test_a_variable_sent_back_as_shown_keeps_its_value(fp: Flowport, home: Path) -> None:
    _deploy_snoop(fp)
    operation = fp.update(
        "vault", "blue", 'environment_variables.API_URL="******"', "environment_variables.LEVEL=debug"
    )
    assert operation["status"] == "Succeeded", operation
    seen = fp.score("vault", {"home": str(home), "server_pid": os.getpid()}).json()["seen"]
    assert (seen["environ"]["API_URL"], seen["environ"]["LEVEL"]) == (MARKED, "debug")
    assert fp.ok("GET", "/endpoints/vault/deployments/blue")["secret_environment_variables"] == ["API_URL"]


def test_a_failed_rollout_shows_its_log_tail_masked(fp: Flowport) -> None:
    fp.endpoint("vault")
    body = fp.ok(
        "POST",
        "/endpoints/vault/deployments",
        params={"name": "blue"},
        json={
            "spec": {
                "model": {"path": str(FLOWS / "leaky_broken")},
                "environment_variables": {"API_URL": MARKED},
                "secret_environment_variables": ["API_URL"],
            }
        },
    )
    operation = fp.wait(body["operation"])
    assert operation["status"] == "Failed" and MARKED not in json.dumps(operation)
    assert "cannot reach ******" in operation["error"]["message"]
    shown = fp.ok("GET", "/endpoints/vault/deployments/blue")
    tail = "\n".join(shown["error"]["log_tail"])
    assert "connecting with ******" in tail and "cannot reach ******" in tail
    assert MARKED not in json.dumps(shown)


def test_secret_environment_variables_must_name_set_variables(fp: Flowport) -> None:
    fp.endpoint("vault")
    spec = {"model": {"path": str(FLOWS / "probe")}, "secret_environment_variables": ["NOPE"]}
    answer = fp.api("POST", "/endpoints/vault/deployments", params={"name": "blue"}, json={"spec": spec})
    assert answer.status_code == 400
    assert "'NOPE' is not in environment_variables" in answer.text
