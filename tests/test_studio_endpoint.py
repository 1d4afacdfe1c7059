"""The endpoint page's Details, Consume and Logs tabs in headless Chromium, against a real server."""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.endpoint_harness import Flowport
from tests.studio_harness import screenshot

CURL = shutil.which("curl") or "/usr/bin/curl"
USE_CURL = Path(CURL).exists()
CHAT_FLOW = Path(__file__).parents[1] / "src" / "flowport" / "examples" / "chat_basic"


def open_tab(page: object, server: Flowport, endpoint: str, tab: str) -> object:
    page.goto(f"{server.url}/studio/endpoints/{endpoint}#{tab}")  # type: ignore[attr-defined]
    panel = page.locator(f"#panel-{tab}")  # type: ignore[attr-defined]
    panel.wait_for()
    return panel


def test_details_changes_the_traffic_split(studio: tuple[Flowport, object]) -> None:
    server, page = studio
    server.endpoint("split-endpoint")
    server.deploy("split-endpoint", "blue")
    server.deploy("split-endpoint", "green")
    assert server.traffic("split-endpoint", blue=100).status_code == 200
    panel = open_tab(page, server, "split-endpoint", "details")
    panel.locator("#deployments-table").get_by_role("row").filter(has_text="green").get_by_text(  # type: ignore[attr-defined]
        "Succeeded"
    ).wait_for()
    assert "/endpoints/split-endpoint/score" in panel.get_by_label("Scoring URI", exact=True).input_value()  # type: ignore[attr-defined]

    panel.get_by_label("Traffic for blue (%)", exact=True).fill("60")  # type: ignore[attr-defined]
    panel.get_by_label("Traffic for green (%)", exact=True).fill("30")  # type: ignore[attr-defined]
    panel.get_by_role("button", name="Save traffic").click()  # type: ignore[attr-defined]
    panel.get_by_role("alert").filter(has_text="add up to").wait_for()  # type: ignore[attr-defined]
    assert server.ok("GET", "/endpoints/split-endpoint")["traffic"] == {"blue": 100}

    panel.get_by_label("Traffic for blue (%)", exact=True).fill("70")  # type: ignore[attr-defined]
    panel.get_by_role("button", name="Save traffic").click()  # type: ignore[attr-defined]
    page.locator("#toast").filter(has_text="Traffic saved").wait_for()  # type: ignore[attr-defined]
    endpoints = {e["name"]: e for e in server.ok("GET", "/endpoints")}
    assert endpoints["split-endpoint"]["traffic"] == {"blue": 70, "green": 30}
    page.locator("#endpoint-summary").filter(has_text="blue 70%").wait_for()  # type: ignore[attr-defined]
    history = panel.locator("#operations-table")  # type: ignore[attr-defined]
    assert "CreateDeployment" in history.inner_text()
    page.evaluate("window.scrollTo(0, 0)")  # type: ignore[attr-defined]
    screenshot(page, "endpoint-details")


def run_sample(panel: object) -> dict[str, object]:
    """Runs the curl sample as shown (or the Python requests one when curl is missing)."""
    if USE_CURL:
        sample = panel.locator("#sample-curl").inner_text()  # type: ignore[attr-defined]
        done = subprocess.run(["bash", "-c", sample], capture_output=True, text=True, timeout=60)
    else:
        sample = panel.locator("#sample-python").inner_text()  # type: ignore[attr-defined]
        with tempfile.TemporaryDirectory() as shim:
            if importlib.util.find_spec("requests") is None:  # the sample's one call, through httpx
                Path(shim, "requests.py").write_text("from httpx import post  # noqa: F401\n")
            env = {**os.environ, "PYTHONPATH": shim}
            done = subprocess.run(
                [sys.executable, "-c", sample], capture_output=True, text=True, timeout=60, env=env
            )
    assert done.returncode == 0, done.stderr
    if done.stdout.lstrip().startswith("{'"):  # Python prints a dict
        return ast.literal_eval(done.stdout)
    return json.loads(done.stdout)


def test_consume_samples_run_and_keys_regenerate(studio: tuple[Flowport, object]) -> None:
    server, page = studio
    server.endpoint("consume-endpoint")
    server.deploy("consume-endpoint", "blue")
    server.traffic("consume-endpoint", blue=100)
    old_key = server.key("consume-endpoint")
    panel = open_tab(page, server, "consume-endpoint", "consume")
    curl = panel.locator("#sample-curl")  # type: ignore[attr-defined]
    curl.wait_for()
    assert old_key in curl.inner_text()
    assert '"text":"hi"' in curl.inner_text()  # the flow's default inputs
    assert panel.locator("#sample-openai").count() == 0  # type: ignore[attr-defined]  # not a chat flow
    assert old_key not in panel.locator("#consume-primary-key").inner_text()  # type: ignore[attr-defined]
    assert run_sample(panel) == {"echoed": "hi", "color": "flow-default"}

    screenshot(page, "endpoint-consume")
    panel.get_by_role("button", name="Show Primary key").click()  # type: ignore[attr-defined]
    assert panel.locator("#consume-primary-key").inner_text() == old_key  # type: ignore[attr-defined]

    page.on("dialog", lambda dialog: dialog.accept())  # type: ignore[attr-defined]
    panel.get_by_role("button", name="Regenerate primary").click()  # type: ignore[attr-defined]
    page.locator("#toast").filter(has_text="Primary key regenerated").wait_for()  # type: ignore[attr-defined]
    new_key = server.key("consume-endpoint")
    assert new_key != old_key
    page.wait_for_function(  # type: ignore[attr-defined]
        "key => document.getElementById('sample-curl')?.textContent.includes(key)", arg=new_key
    )
    assert server.score("consume-endpoint", {"text": "x"}, key=old_key).status_code == 401
    assert server.score("consume-endpoint", {"text": "x"}, key=new_key).status_code == 200
    assert run_sample(panel)["echoed"] == "hi"  # the refreshed sample carries the new key


def test_logs_show_a_scoring_request(studio: tuple[Flowport, object]) -> None:
    server, page = studio
    server.endpoint("logs-endpoint")
    server.deploy("logs-endpoint", "blue")
    server.traffic("logs-endpoint", blue=100)
    request_id = f"studio-logs-{time.time_ns()}"
    answer = server.score("logs-endpoint", {"text": "logged"}, **{"x-request-id": request_id})
    assert answer.status_code == 200
    panel = open_tab(page, server, "logs-endpoint", "logs")
    assert panel.get_by_label("Lines").input_value() == "200"  # type: ignore[attr-defined]
    log = panel.get_by_role("log")  # type: ignore[attr-defined]
    panel.get_by_label("Follow").check()  # type: ignore[attr-defined]
    log.filter(has_text=request_id).wait_for(timeout=20_000)
    panel.get_by_label("Filter").fill(request_id.upper())  # type: ignore[attr-defined]
    text = log.inner_text()
    assert request_id in text
    assert all(request_id in line for line in text.splitlines())
    panel.get_by_label("Filter").fill("no such text anywhere")  # type: ignore[attr-defined]
    assert request_id not in log.inner_text()
    panel.get_by_label("Filter").fill("")  # type: ignore[attr-defined]
    screenshot(page, "endpoint-logs")


def test_consume_shows_a_token_and_the_openai_sample_for_chat_flows(studio: tuple[Flowport, object]) -> None:
    server, page = studio
    server.endpoint("token-endpoint", auth_mode="aml_token")
    spec = {"model": {"path": str(CHAT_FLOW)}}
    body = server.ok(
        "POST", "/endpoints/token-endpoint/deployments", params={"name": "chat"}, json={"spec": spec}
    )
    server.wait(body["operation"])
    panel = open_tab(page, server, "token-endpoint", "consume")
    panel.get_by_role("button", name="Refresh token").wait_for()  # type: ignore[attr-defined]
    assert panel.locator("#consume-token-expiry").get_attribute("datetime")  # type: ignore[attr-defined]
    sample = panel.locator("#sample-openai").inner_text()  # type: ignore[attr-defined]
    assert "/endpoints/token-endpoint/v1" in sample
    token = panel.locator("#sample-curl").inner_text().split("Bearer ")[1].split("'")[0]  # type: ignore[attr-defined]
    assert token.count(".") == 2  # a signed token, not a key


def test_details_folds_a_long_deployment_error(studio: tuple[Flowport, object]) -> None:
    server, page = studio
    server.endpoint("crash-endpoint")
    crashing = str(Path(__file__).parent / "endpoint_flows" / "crashing")
    server.deploy(
        "crash-endpoint",
        "blue",
        expect="Failed",
        model={"path": crashing},
        environment_variables={"CRASH_ON_START": "1"},
    )
    panel = open_tab(page, server, "crash-endpoint", "details")
    row = panel.locator("#deployments-table").get_by_role("row").filter(has_text="blue")  # type: ignore[attr-defined]
    row.get_by_text("Failed", exact=True).wait_for()
    line = row.locator(".error-line")
    assert "before it was ready" in line.inner_text()
    assert "Traceback" not in line.inner_text()  # one line; the traceback is folded away
    details = row.locator("pre.error-details")
    assert not details.is_visible()
    history = panel.locator("#operations-table .error-block").first  # type: ignore[attr-defined]
    assert "\n" not in history.locator(".error-line").inner_text()

    def overflow() -> int:
        return page.evaluate("document.documentElement.scrollWidth - window.innerWidth")  # type: ignore[attr-defined,no-any-return]

    assert overflow() <= 0
    row.get_by_text("Details", exact=True).click()
    assert details.is_visible()
    assert "Traceback (most recent call last)" in details.inner_text()
    assert "/very/long/path" in details.inner_text()
    history.get_by_text("Details", exact=True).click()
    assert overflow() <= 0, "the opened error widens the page"
    box = details.bounding_box()
    assert box is not None and box["x"] + box["width"] <= 1280
