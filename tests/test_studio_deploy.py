"""The studio's deploy wizard and the endpoint's Test tab, in headless Chromium against a real server."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import httpx

from flowport.testing.llm_server import LLMServer
from tests.endpoint_harness import Flowport
from tests.studio_harness import screenshot

ROOT = Path(__file__).parents[1]
CHAT_BASIC = ROOT / "src" / "flowport" / "examples" / "chat_basic"
DRIP = Path(__file__).parent / "gateway_flows" / "drip"
CHAT_PROMPTY = Path(__file__).parent / "flows" / "prompty_chat_history" / "chat.prompty"


def register(server: Flowport, name: str, path: Path) -> dict[str, Any]:
    return server.ok("POST", "/models", json={"spec": {"name": name, "path": str(path)}})


def add_openai_connection(server: Flowport, llm_server: LLMServer) -> None:
    server.ok(
        "PUT",
        "/connections/open_ai_connection",
        json={"type": "open_ai", "api_key": "k", "base_url": llm_server.base_url},
    )


def deploy(server: Flowport, endpoint: str, deployment: str, model: str) -> None:
    """A new endpoint with one deployment of ``model`` taking all its traffic."""
    server.endpoint(endpoint)
    started = server.ok(
        "POST",
        f"/endpoints/{endpoint}/deployments",
        params={"name": deployment, "all_traffic": "true"},
        json={"spec": {"model": model}},
    )
    assert server.wait(started["operation"])["status"] == "Succeeded"


def register_chat(server: Flowport, llm_server: LLMServer) -> None:
    """The chat example registered as ``chat:1``, its connection pointing at the test LLM server."""
    add_openai_connection(server, llm_server)
    register(server, "chat", CHAT_BASIC)


def open_test_tab(server: Flowport, page: Any, endpoint: str) -> None:
    page.goto(f"{server.url}/studio/endpoints/{endpoint}#test")
    page.get_by_role("tab", name="Test").wait_for()
    page.locator("#panel-test").wait_for(state="visible")


def ask(page: Any, question: str) -> None:
    page.get_by_label("Message", exact=True).fill(question)
    page.get_by_label("Message", exact=True).press("Enter")


def test_deploy_a_chat_flow_with_the_wizard_then_chat_with_it(
    studio: tuple[Flowport, Any], llm_server: LLMServer
) -> None:
    server, page = studio
    register_chat(server, llm_server)

    page.goto(f"{server.url}/studio/deploy?model=azureml:chat:1")
    page.locator("#model option[value='azureml:chat:1']").wait_for(state="attached")
    assert page.get_by_label("Model version", exact=True).input_value() == "azureml:chat:1"
    page.get_by_role("button", name="Next").click()  # nothing filled in: the name is refused
    name_error = page.locator("#endpoint-name-error")
    name_error.filter(has_text="3-32 characters").wait_for()
    page.get_by_label("Endpoint name", exact=True).fill("c-")  # still wrong: the message stays
    assert "3-32 characters" in name_error.inner_text()
    page.get_by_label("Endpoint name", exact=True).fill("chat-endpoint")  # right: it goes as you type
    assert name_error.inner_text() == ""
    assert page.get_by_label("Endpoint name", exact=True).get_attribute("aria-invalid") is None
    page.get_by_label("Deployment name", exact=True).fill("")
    page.get_by_role("button", name="Next").click()
    page.locator("#deployment-name-error").filter(has_text="3-32 characters").wait_for()
    assert name_error.inner_text() == ""
    page.get_by_label("Deployment name", exact=True).fill("blue")
    page.get_by_role("button", name="Next").click()

    page.get_by_role("heading", name="Advanced: endpoint").wait_for()
    page.get_by_label("Description", exact=True).fill("Chat from the wizard")
    page.get_by_label("Tags", exact=True).fill("team=docs\nstage=test")
    page.get_by_role("button", name="Next").click()

    page.get_by_role("heading", name="Advanced: outputs & connections").wait_for()
    assert page.get_by_role("checkbox", name="answer").is_checked()
    assert page.get_by_role("checkbox", name="topic").is_checked()
    assert page.get_by_label("open_ai_connection", exact=True).input_value() == ""  # keep the flow's own
    page.get_by_role("button", name="Next").click()

    page.get_by_role("heading", name="Review + Create").wait_for()
    summary = page.locator("#summary").inner_text()
    assert "azureml:chat:1" in summary and "chat-endpoint (new, key auth)" in summary
    assert "team=docs, stage=test" in summary
    screenshot(page, "deploy-wizard")
    page.get_by_role("button", name="Create").click()
    page.locator("#progress").get_by_text("Succeeded").wait_for(timeout=90_000)

    endpoint = server.ok("GET", "/endpoints/chat-endpoint")
    assert endpoint["traffic"] == {"blue": 100}
    assert endpoint["tags"] == {"team": "docs", "stage": "test"}
    deployment = server.ok("GET", "/endpoints/chat-endpoint/deployments/blue")
    assert deployment["model"] == "azureml:chat:1"

    page.get_by_role("link", name="Open endpoint chat-endpoint").click()
    page.get_by_role("tab", name="Test").click()
    ask(page, "hello there")
    assistant = page.locator(".chat-message.assistant")
    assistant.first.get_by_text("Echo: hello there").wait_for()
    ask(page, "and again")
    assistant.nth(1).get_by_text("Echo: and again").wait_for()
    page.locator(".chat-message.assistant:not(.streaming)").nth(1).wait_for()
    assert page.locator(".chat-message.user").count() == 2
    assert page.locator(".chat-message.assistant").first.get_by_text("Echo: hello there").is_visible()
    screenshot(page, "endpoint-test-chat")

    ask(page, "cut me off [[cut:2]]")  # the LLM drops the stream midway: an error, not an output
    failed = page.locator(".chat-message.assistant.failed")
    failed.get_by_role("alert").wait_for()
    assert "error" not in failed.locator("dl.chat-extras").all_inner_texts()


def test_the_chat_window_streams_the_answer_and_sends_the_history(studio: tuple[Flowport, Any]) -> None:
    server, page = studio
    register(server, "drip", DRIP)
    deploy(server, "drip-endpoint", "slow", "azureml:drip:1")

    open_test_tab(server, page, "drip-endpoint")
    page.get_by_label("pause", exact=True).fill("0.3")
    ask(page, "one two three four five six")
    # Part of the answer shows while the rest is still on its way.
    page.wait_for_function(
        """() => {
          const bubble = document.querySelector('.chat-message.assistant .chat-text');
          const text = bubble ? bubble.textContent : '';
          return text.startsWith('one') && !text.includes('six');
        }""",
        polling=20,
    )
    assert page.locator(".chat-message.assistant.streaming").count() == 1
    page.locator(".chat-message.assistant").get_by_text("one two three four five six").wait_for()

    # The second request carries the first turn as chat_history (the page records what it sent).
    page.evaluate(
        """() => {
          const original = window.fetch;
          window.sentBodies = [];
          window.fetch = (url, options) => {
            if (String(url).includes('/score')) window.sentBodies.push(JSON.parse(options.body));
            return original(url, options);
          };
        }"""
    )
    page.get_by_label("pause", exact=True).fill("0")
    ask(page, "seven eight")
    page.locator(".chat-message.assistant").nth(1).get_by_text("seven eight").wait_for()
    sent = page.evaluate("window.sentBodies")
    assert sent[0]["chat_history"] == [
        {
            "inputs": {"question": "one two three four five six"},
            "outputs": {"answer": "one two three four five six"},
        }
    ]
    assert sent[0]["question"] == "seven eight" and sent[0]["pause"] == 0
    assert page.locator(".chat-message.user").count() == 2


def test_a_standard_flow_gets_a_form_and_a_json_editor(studio: tuple[Flowport, Any]) -> None:
    server, page = studio
    server.endpoint("probe-endpoint")
    server.deploy("probe-endpoint", "blue")
    server.traffic("probe-endpoint", blue=100)

    open_test_tab(server, page, "probe-endpoint")
    page.get_by_label("text", exact=True).fill("from the form")
    assert page.get_by_label("seconds", exact=True).input_value() == "0"
    assert not page.get_by_label("fail", exact=True).is_checked()
    page.get_by_role("button", name="Send").click()
    response = page.locator(".test-response")
    response.get_by_text('"echoed": "from the form"').wait_for()
    assert "200" in page.locator(".test-status").inner_text()

    page.get_by_role("button", name="JSON").click()
    editor = page.get_by_label("Request body (JSON)", exact=True)
    assert '"text": "from the form"' in editor.input_value()
    editor.fill('{"text": "from json", "seconds": 0, "fail": false}')
    page.get_by_role("button", name="Send").click()
    response.get_by_text('"echoed": "from json"').wait_for()

    # A failing run shows its status and message inline; the form picks up the JSON's values.
    page.get_by_role("button", name="Form").click()
    assert page.get_by_label("text", exact=True).input_value() == "from json"
    page.get_by_label("fail", exact=True).check()
    page.get_by_label("Deployment", exact=True).select_option("blue")
    page.get_by_role("button", name="Send").click()
    page.locator(".test-status.error").filter(has_text="424").wait_for()


def test_the_test_form_shows_defaults_and_refuses_an_empty_required_input(
    studio: tuple[Flowport, Any],
) -> None:
    server, page = studio
    server.endpoint("required-endpoint")
    server.deploy(
        "required-endpoint",
        "blue",
        model={"path": str(Path(__file__).parent / "endpoint_flows" / "required")},
    )
    server.traffic("required-endpoint", blue=100)
    scored: list[str] = []
    page.on("request", lambda r: scored.append(r.url) if r.url.endswith("/score") else None)

    open_test_tab(server, page, "required-endpoint")
    topic, count, style = (page.get_by_label(n, exact=True) for n in ("topic", "count", "style"))
    assert count.input_value() == "3"
    assert style.input_value() == "plain" and style.get_attribute("placeholder") == "plain"
    form = page.locator("#test-form-pane")
    assert "string · required" in form.inner_text()
    assert "int · default 3" in form.inner_text()
    assert topic.get_attribute("aria-required") == "true"

    page.get_by_role("button", name="Send").click()
    page.locator(".test-status.error").filter(has_text="Fill in the required input: topic").wait_for()
    assert topic.get_attribute("aria-invalid") == "true"
    assert scored == []  # nothing was sent

    topic.fill("cats")
    style.fill("")  # empty with a default: the flow's default applies
    page.get_by_role("button", name="Send").click()
    page.locator(".test-response").get_by_text('"line": "3 plain lines on cats"').wait_for()
    assert topic.get_attribute("aria-invalid") is None
    assert len(scored) == 1

    page.get_by_role("button", name="JSON").click()
    editor = page.get_by_label("Request body (JSON)", exact=True)
    editor.fill('{"count": 2}')
    page.get_by_role("button", name="Send").click()
    page.locator("#test-json-error").filter(has_text="Fill in the required input: topic").wait_for()
    assert len(scored) == 1


def test_a_flow_folder_replaces_an_existing_deployment_after_confirmation(
    studio: tuple[Flowport, Any],
) -> None:
    server, page = studio
    server.endpoint("probe-endpoint")
    server.deploy("probe-endpoint", "blue")

    page.goto(f"{server.url}/studio/deploy")
    page.get_by_role("radio", name="A flow folder on the server").check()
    page.get_by_label("Flow folder", exact=True).fill(str(ROOT / "tests" / "endpoint_flows" / "probe"))
    assert page.get_by_label("Model name", exact=True).input_value() == "probe"
    page.get_by_role("radio", name="Existing endpoint").check()
    page.locator("#endpoint-existing option[value='probe-endpoint']").wait_for(state="attached")
    page.get_by_label("Deployment name", exact=True).fill("blue")
    replace = page.get_by_role("checkbox", name="Replace the existing deployment blue")
    replace.wait_for()
    page.get_by_label("Instance count", exact=True).fill("2")
    page.get_by_role("button", name="Next").click()
    page.locator("#replace-error").filter(has_text="confirm to replace it").wait_for()
    replace.check()
    page.get_by_role("button", name="Next").click()

    page.get_by_text("The existing endpoint keeps its settings.").wait_for()
    page.get_by_role("button", name="Next").click()
    page.get_by_role("checkbox", name="color").uncheck()
    page.get_by_role("button", name="Next").click()
    summary = page.locator("#summary")
    summary.get_by_text("blue (replaces the existing one)").wait_for()
    assert "echoed" in summary.inner_text()
    page.get_by_role("button", name="Create").click()
    page.locator("#progress").get_by_text("Succeeded").wait_for(timeout=90_000)

    deployment = server.ok("GET", "/endpoints/probe-endpoint/deployments/blue")
    assert deployment["model"] == "azureml:probe:1"
    assert deployment["instance_count"] == 2
    assert deployment["environment_variables"]["PROMPTFLOW_RESPONSE_INCLUDED_FIELDS"] == '["echoed"]'
    answer = server.score("probe-endpoint", {"text": "hi"}, **{"azureml-model-deployment": "blue"})
    assert answer.json() == {"echoed": "hi"}


def test_chat_with_a_deployed_chat_prompty(
    studio: tuple[Flowport, Any], llm_server: LLMServer, tmp_path: Path
) -> None:
    server, page = studio
    add_openai_connection(server, llm_server)
    folder = tmp_path / "chat_prompty"
    folder.mkdir()
    shutil.copy(CHAT_PROMPTY, folder)
    model = register(server, "prompty", folder)
    assert model["flow"]["chat_history_format"] == "messages"
    deploy(server, "prompty-chat", "blue", "azureml:prompty:1")

    open_test_tab(server, page, "prompty-chat")
    httpx.delete(f"{llm_server.url}/_requests")
    ask(page, "First")
    page.locator(".chat-message.assistant").first.get_by_text("Echo: First").wait_for()
    ask(page, "Second")
    page.locator(".chat-message.assistant").nth(1).get_by_text("Echo: Second").wait_for()
    sent = httpx.get(f"{llm_server.url}/_requests").json()
    assert sent[-1]["body"]["messages"] == [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "First"},
        {"role": "assistant", "content": "Echo: First"},
        {"role": "user", "content": "Second"},
    ]
