"""The studio's monitoring tab, models page and connections page in headless Chromium."""

from __future__ import annotations

from tests.endpoint_harness import FLOWS, Flowport
from tests.studio_harness import screenshot


def test_monitoring_shows_requests_errors_and_latency(studio: tuple[Flowport, object]) -> None:
    server, page = studio
    server.endpoint("watched")
    server.deploy("watched", "blue")
    server.traffic("watched", blue=100)
    key = server.key("watched")
    for text in ("a", "b", "c"):
        assert server.score("watched", {"text": text}, key=key).status_code == 200
    assert server.score("watched", {"text": "x", "fail": True}, key=key).status_code == 424

    page.goto(f"{server.url}/studio/endpoints/watched#monitoring")  # type: ignore[attr-defined]
    headline = page.locator("#monitor-headline")  # type: ignore[attr-defined]
    headline.get_by_text("4 requests").wait_for()
    assert "25.0%" in headline.inner_text()
    assert " ms" in headline.inner_text()
    charts = page.get_by_role("img")  # type: ignore[attr-defined]
    assert charts.count() >= 3
    summary = charts.first.locator("desc").text_content()
    assert summary == "4 requests in the last hour, 1 with status 400 or above."
    tables = page.locator("#panel-monitoring table.sr-only")  # type: ignore[attr-defined]
    assert "424: 1" in tables.nth(0).text_content()
    assert "424: 1" in tables.nth(2).text_content()
    page.get_by_label("Deployment", exact=True).select_option("blue")  # type: ignore[attr-defined]
    headline.get_by_text("4 requests").wait_for()
    page.get_by_role("rowheader", name="blue").wait_for()  # type: ignore[attr-defined]
    screenshot(page, "endpoint-monitoring")


def test_monitoring_lists_only_current_deployments(studio: tuple[Flowport, object]) -> None:
    server, page = studio
    server.endpoint("pruned")
    server.deploy("pruned", "blue")
    server.deploy("pruned", "green")
    server.traffic("pruned", blue=100)
    assert server.score("pruned", {"text": "to blue"}).status_code == 200
    # (a deleted deployment's per-minute stats go with it: the gateway keeps none for old names)
    assert (
        server.wait(server.ok("DELETE", "/endpoints/pruned/deployments/green")["operation"])["status"]
        == "Succeeded"
    )
    missing: list[str] = []
    page.on(  # type: ignore[attr-defined]
        "response", lambda r: missing.append(r.url) if r.status == 404 and "/api/" in r.url else None
    )

    page.goto(f"{server.url}/studio/endpoints/pruned#monitoring")  # type: ignore[attr-defined]
    page.locator("#monitor-headline").get_by_text("1 request").wait_for()  # type: ignore[attr-defined]
    options = page.locator("#monitor-deployment option").all_inner_texts()  # type: ignore[attr-defined]
    assert options == ["All deployments", "blue"]
    assert page.locator("#panel-monitoring [role=alert]").inner_text() == ""  # type: ignore[attr-defined]
    assert missing == []


def test_models_list_details_and_archive(studio: tuple[Flowport, object]) -> None:
    server, page = studio
    model = server.ok("POST", "/models", json={"spec": {"name": "probe", "path": str(FLOWS / "probe")}})
    page.goto(f"{server.url}/studio/models")  # type: ignore[attr-defined]
    row = page.get_by_role("row").filter(has_text="probe")  # type: ignore[attr-defined]
    row.get_by_role("button", name="Details of probe version 1").click()
    details = page.locator("tr.model-details").first  # type: ignore[attr-defined]
    details.get_by_text("Inputs").wait_for()
    assert "fail" in details.inner_text() and "echoed" in details.inner_text()
    deploy = row.get_by_role("link", name="Deploy probe version 1")
    assert deploy.get_attribute("href") == "/studio/deploy?model=azureml%3Aprobe%3A1"
    assert model["content_hash"].removeprefix("sha256:")[:12] in row.inner_text()
    screenshot(page, "models")

    page.once("dialog", lambda dialog: dialog.accept())  # type: ignore[attr-defined]
    row.get_by_role("button", name="Archive probe version 1").click()
    page.get_by_text("No models yet").wait_for()  # type: ignore[attr-defined]
    assert server.ok("GET", "/models", params={"archived": "true"})[0]["archived"] is True
    page.get_by_label("Show archived versions").check()  # type: ignore[attr-defined]
    page.get_by_role("row").filter(has_text="archived").get_by_text("probe").wait_for()  # type: ignore[attr-defined]


def test_connections_create_edit_keep_secret_and_delete(studio: tuple[Flowport, object]) -> None:
    server, page = studio
    secret = "sk-very-secret-value-123"
    page.goto(f"{server.url}/studio/connections")  # type: ignore[attr-defined]
    page.get_by_role("button", name="New connection").click()  # type: ignore[attr-defined]
    page.get_by_label("Name", exact=True).fill("my-openai")  # type: ignore[attr-defined]
    page.get_by_label("Type").select_option("open_ai")  # type: ignore[attr-defined]
    page.get_by_role("button", name="Create connection").click()  # type: ignore[attr-defined]
    page.get_by_role("alert").filter(has_text="API key is required").wait_for()  # type: ignore[attr-defined]
    page.get_by_label("API key").fill(secret)  # type: ignore[attr-defined]
    page.get_by_label("Base URL").fill("https://one.example/v1")  # type: ignore[attr-defined]
    page.get_by_role("button", name="Create connection").click()  # type: ignore[attr-defined]
    row = page.get_by_role("row").filter(has_text="my-openai")  # type: ignore[attr-defined]
    row.get_by_text("https://one.example/v1").wait_for()
    assert "stored" in row.inner_text()
    assert secret not in page.content()  # type: ignore[attr-defined]

    row.get_by_role("button", name="Edit my-openai").click()
    key_input = page.get_by_label("API key")  # type: ignore[attr-defined]
    assert key_input.input_value() == "" and key_input.get_attribute("type") == "password"
    assert "leave empty to keep the stored value" in page.locator("#connection-editor").inner_text()  # type: ignore[attr-defined]
    assert secret not in page.content()  # type: ignore[attr-defined]
    page.get_by_label("Base URL").fill("https://two.example/v1")  # type: ignore[attr-defined]
    screenshot(page, "connections")
    page.get_by_role("button", name="Save changes").click()  # type: ignore[attr-defined]
    row.get_by_text("https://two.example/v1").wait_for()
    assert server.ok("GET", "/connections/my-openai")["base_url"] == "https://two.example/v1"
    assert server.connection("my-openai").api_key == secret
    assert secret not in page.content()  # type: ignore[attr-defined]

    page.get_by_role("button", name="New connection").click()  # type: ignore[attr-defined]
    page.get_by_label("Name", exact=True).fill("broken")  # type: ignore[attr-defined]
    page.get_by_label("Type").select_option("custom")  # type: ignore[attr-defined]
    page.get_by_label("Configs").fill("no equals sign")  # type: ignore[attr-defined]
    page.get_by_role("button", name="Create connection").click()  # type: ignore[attr-defined]
    page.get_by_role("alert").filter(has_text="write key=value").wait_for()  # type: ignore[attr-defined]
    page.get_by_label("Configs").fill("endpoint=https://x.example")  # type: ignore[attr-defined]
    page.get_by_label("Secrets").fill("token=abc-secret-987")  # type: ignore[attr-defined]
    page.get_by_role("button", name="Create connection").click()  # type: ignore[attr-defined]
    page.get_by_role("row").filter(has_text="broken").get_by_text("https://x.example").wait_for()  # type: ignore[attr-defined]
    assert "abc-secret-987" not in page.content()  # type: ignore[attr-defined]
    assert server.connection("broken").token == "abc-secret-987"

    page.once("dialog", lambda dialog: dialog.accept())  # type: ignore[attr-defined]
    row.get_by_role("button", name="Delete my-openai").click()
    row.wait_for(state="detached")
    assert server.api("GET", "/connections/my-openai").status_code == 404
