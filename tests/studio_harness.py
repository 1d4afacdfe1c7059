"""The studio in a real browser: Debian's Chromium driven by Playwright, against a real server.

Loaded as a pytest plugin (pyproject: ``-p tests.studio_harness``): its fixtures serve every test file.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.endpoint_harness import Flowport

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SCREENSHOTS = Path(__file__).parents[1] / "docs" / "studio"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    """Headless Chromium for one test module: Playwright's sync API keeps an event loop running in
    the main thread while it is open, which async tests in later modules could not share."""
    if not Path(CHROMIUM).exists():
        pytest.skip("Chromium is not installed (make test installs Debian's chromium package)")
    playwright_api = pytest.importorskip("playwright.sync_api")
    with playwright_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def studio(home: Path, browser: object) -> Iterator[tuple[Flowport, object]]:
    """A running server and a browser page signed in to its studio (1280x800)."""
    with Flowport(home) as server:
        context = browser.new_context(viewport={"width": 1280, "height": 800})  # type: ignore[attr-defined]
        page = context.new_page()
        page.set_default_timeout(15_000)
        sign_in(page, server)
        yield server, page
        context.close()


def sign_in(page: object, server: Flowport) -> None:
    page.goto(f"{server.url}/")  # type: ignore[attr-defined]
    page.get_by_label("Admin token").fill(server.token)  # type: ignore[attr-defined]
    page.get_by_role("button", name="Sign in").click()  # type: ignore[attr-defined]
    page.wait_for_url("**/studio/endpoints")  # type: ignore[attr-defined]


def screenshot(page: object, name: str) -> None:
    """Keep a picture of the page for the README (docs/studio/<name>.png)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=False)  # type: ignore[attr-defined]
