"""The studio in headless Chromium: sign-in, the endpoints list, sessions and CSRF."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.endpoint_harness import Flowport
from tests.studio_harness import screenshot


def test_sign_in_and_see_endpoints(studio: tuple[Flowport, object]) -> None:
    server, page = studio
    server.endpoint("first-endpoint")
    server.deploy("first-endpoint", "blue")
    server.traffic("first-endpoint", blue=100)
    page.reload()  # type: ignore[attr-defined]
    row = page.get_by_role("row").filter(has_text="first-endpoint")  # type: ignore[attr-defined]
    row.get_by_text("blue: Succeeded").wait_for()
    assert "blue 100%" in row.inner_text()
    screenshot(page, "endpoints")


def test_a_wrong_token_is_refused_with_a_message(home: Path, browser: object) -> None:
    with Flowport(home) as server:
        page = browser.new_page()  # type: ignore[attr-defined]
        page.goto(f"{server.url}/studio/endpoints")
        assert "/studio/login" in page.url  # pages need a session
        page.get_by_label("Admin token").fill("not-the-token")
        page.get_by_role("button", name="Sign in").click()
        page.get_by_role("alert").filter(has_text="not the admin token").wait_for()
        screenshot(page, "sign-in")
        page.close()


def test_sessions_need_the_csrf_token_to_change_anything(home: Path) -> None:
    with Flowport(home) as server, httpx.Client(base_url=server.url) as client:
        signed = client.post("/api/v1/sessions", json={"token": server.token})
        cookie = signed.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie
        csrf = signed.json()["csrf"]
        assert client.get("/api/v1/endpoints").status_code == 200  # reading needs the cookie only
        refused = client.post("/api/v1/endpoints", json={"spec": {"name": "via-cookie"}})
        assert refused.status_code == 403
        assert refused.json()["error"]["code"] == "CsrfTokenMissing"
        created = client.post(
            "/api/v1/endpoints", json={"spec": {"name": "via-cookie"}}, headers={"x-csrf-token": csrf}
        )
        assert created.status_code == 201
        client.delete("/api/v1/sessions/current")
        assert client.get("/api/v1/endpoints").status_code == 401


def test_the_one_time_login_link_works_once(home: Path) -> None:
    with Flowport(home) as server, httpx.Client(base_url=server.url) as client:
        code = server.login_code()
        first = client.get(f"/api/v1/sessions/redeem?code={code}")
        assert (first.status_code, first.headers["location"]) == (303, "/")
        assert client.get("/api/v1/endpoints").status_code == 200
        with httpx.Client(base_url=server.url) as other:
            again = other.get(f"/api/v1/sessions/redeem?code={code}")
            assert (again.status_code, again.headers["location"]) == (303, "/studio/login?link=expired")
            assert "set-cookie" not in again.headers
            assert other.get("/api/v1/endpoints").status_code == 401
            assert other.get("/api/v1/sessions/redeem").headers["location"] == "/studio/login?link=expired"


def test_a_used_login_link_opens_the_sign_in_page_with_a_message(home: Path, browser: object) -> None:
    with Flowport(home) as server:
        code = server.login_code()
        page = browser.new_page()  # type: ignore[attr-defined]
        page.goto(f"{server.url}/api/v1/sessions/redeem?code={code}")
        page.wait_for_url("**/studio/endpoints")
        other = browser.new_page()  # type: ignore[attr-defined]
        other.goto(f"{server.url}/api/v1/sessions/redeem?code={code}")
        other.wait_for_url("**/studio/login?link=expired")
        other.get_by_role("alert").filter(has_text="already used or has expired").wait_for()
        assert "{" not in other.locator("main").inner_text()  # a page, not raw JSON
        other.get_by_label("Admin token").fill(server.token)
        other.get_by_role("button", name="Sign in").click()
        other.wait_for_url("**/studio/endpoints")
        page.close()
        other.close()


def test_pages_fit_a_narrow_window(studio: tuple[Flowport, object]) -> None:
    server, page = studio
    server.endpoint("narrow-endpoint")
    page.set_viewport_size({"width": 400, "height": 800})  # type: ignore[attr-defined]
    for path in (
        "/studio/endpoints",
        "/studio/endpoints/narrow-endpoint",
        "/studio/deploy",
        "/studio/models",
    ):
        page.goto(f"{server.url}{path}")  # type: ignore[attr-defined]
        page.wait_for_load_state("networkidle")  # type: ignore[attr-defined]
        overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")  # type: ignore[attr-defined]
        assert overflow <= 0, f"{path} scrolls sideways by {overflow}px at 400px wide"
    screenshot(page, "narrow-window")
