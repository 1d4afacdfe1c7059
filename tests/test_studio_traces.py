"""The studio's Traces: the list (page and endpoint tab) and a trace page, in headless Chromium."""

from __future__ import annotations

import time
from typing import Any

from flowport.testing.llm_server import LLMServer
from tests.endpoint_harness import Flowport
from tests.studio_harness import screenshot
from tests.test_studio_deploy import register_chat
from tests.test_traces import wait_for_trace


def test_a_chat_request_is_a_trace_with_nodes_tokens_and_messages(
    studio: tuple[Flowport, Any], llm_server: LLMServer
) -> None:
    server, page = studio
    register_chat(server, llm_server)
    server.endpoint("traced-chat")
    collector = {"collections": {"request": {"enabled": True}, "response": {"enabled": True}}}
    started = server.ok(
        "POST",
        "/endpoints/traced-chat/deployments",
        params={"name": "blue", "all_traffic": "true"},
        json={"spec": {"model": "azureml:chat:1", "data_collector": collector}},
    )
    assert server.wait(started["operation"])["status"] == "Succeeded"
    answer = server.score("traced-chat", {"question": "what is a trace?"}, **{"x-request-id": "studio-trace"})
    assert answer.status_code == 200
    failed = server.score("traced-chat", {"chat_history": "not a list"}, **{"x-request-id": "studio-bad"})
    assert failed.status_code >= 400
    wait_for_trace(server, "studio-trace", 5)  # gateway, line, two nodes, the LLM call
    wait_for_trace(server, "studio-bad", 1)

    page.goto(f"{server.url}/studio/endpoints/traced-chat#traces")
    panel = page.locator("#panel-traces")
    row = panel.locator("tr", has_text="studio-trace")
    row.wait_for()
    assert "Completed" in row.inner_text() and "blue" in row.inner_text()
    panel.get_by_label("Status").select_option("Failed")
    # studio-bad is listed before the filter applies too: wait for the filtered list to replace it
    panel.locator("tr", has_text="studio-trace").wait_for(state="detached")
    assert panel.locator("tr", has_text="studio-bad").count() == 1
    panel.get_by_label("Status").select_option("")
    row.wait_for()

    page.goto(f"{server.url}/studio/traces")
    page.locator("#traces-table tr", has_text="studio-trace").wait_for()
    screenshot(page, "traces")
    page.get_by_role("link", name="studio-trace").click()
    page.wait_for_url("**/studio/traces/*")
    spans = page.get_by_role("list", name="Spans")
    spans.locator(".span-row.llm").wait_for()
    names = [n.strip() for n in spans.locator(".span-name").all_inner_texts()]
    assert names[0] == "POST /endpoints/traced-chat/score"
    assert "chat" in names and any(n.startswith("chat ") for n in names)  # the node and its LLM call
    detail = page.locator("#span-detail")  # the LLM call is shown first
    detail.get_by_text("Messages").wait_for()
    assert detail.locator(".chat-message.user", has_text="what is a trace?").count() == 1
    assert detail.locator(".chat-message", has_text="Echo: what is a trace?").count() == 1
    assert "Tokens" in detail.inner_text()
    screenshot(page, "trace")
    spans.locator(".span-row.node").first.click()
    detail.get_by_role("heading", name="Inputs").wait_for()


def test_the_test_tab_links_an_answer_to_its_trace(studio: tuple[Flowport, Any]) -> None:
    server, page = studio
    server.endpoint("linked")
    server.deploy("linked", "blue")
    server.traffic("linked", blue=100)
    page.goto(f"{server.url}/studio/endpoints/linked#test")
    panel = page.locator("#panel-test")
    panel.get_by_role("button", name="Send").click()
    link = panel.get_by_role("link", name="Trace")
    link.wait_for()
    request_id = link.get_attribute("href").split("request_id=")[1]
    link.click()
    page.wait_for_url("**/studio/traces?request_id=*")
    assert page.get_by_label("Request id").input_value() == request_id
    deadline = time.monotonic() + 20
    while page.locator("#traces-table a", has_text=request_id).count() == 0:
        assert time.monotonic() < deadline
        page.get_by_role("button", name="Refresh").click()
        time.sleep(0.3)


def test_monitoring_outliers_and_log_request_ids_open_their_traces(studio: tuple[Flowport, Any]) -> None:
    server, page = studio
    server.endpoint("outliers")
    server.deploy("outliers", "blue")
    server.traffic("outliers", blue=100)
    assert server.score("outliers", {"text": "fine"}, **{"x-request-id": "outlier-ok"}).status_code == 200
    failed = server.score("outliers", {"fail": True}, **{"x-request-id": "outlier-bad"})
    assert failed.status_code == 424
    wait_for_trace(server, "outlier-ok", 3)
    bad_trace = wait_for_trace(server, "outlier-bad", 3)

    page.goto(f"{server.url}/studio/endpoints/outliers#monitoring")
    failed_list = page.locator("#monitor-failed")
    bad_link = failed_list.get_by_role("link", name="outlier-bad")
    bad_link.wait_for()
    assert failed_list.get_by_role("link", name="outlier-ok").count() == 0
    slowest = page.locator("#monitor-slowest")
    assert slowest.get_by_role("link", name="outlier-ok").count() == 1
    assert "Failed" in failed_list.locator("tr", has_text="outlier-bad").inner_text()
    bad_link.click()
    page.wait_for_url(f"**/studio/traces/{bad_trace['trace_id']}")
    page.get_by_role("list", name="Spans").locator(".span-name").first.wait_for()

    page.goto(f"{server.url}/studio/endpoints/outliers#logs")
    log_link = page.locator("#logs-output a", has_text="outlier-bad")
    deadline = time.monotonic() + 20
    while log_link.count() == 0:  # the instance's log line may not be written yet
        assert time.monotonic() < deadline, page.locator("#logs-output").inner_text()
        page.get_by_role("button", name="Refresh").click()
        time.sleep(0.3)
    log_link.first.click()
    page.wait_for_url("**/studio/traces?request_id=outlier-bad")
    page.locator("#traces-table a", has_text="outlier-bad").wait_for()
