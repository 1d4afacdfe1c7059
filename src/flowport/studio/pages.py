"""The studio's page routes: each one renders a template; the page's script fetches the data."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=str(HERE / "templates"))

SignedIn = Callable[[Request], bool]

LINK_NOTICE = (
    "That login link was already used or has expired: a link works once, for a short time. "
    "Sign in with the admin token instead."
)

NAV = (
    ("endpoints", "Endpoints"),
    ("models", "Models"),
    ("connections", "Connections"),
    ("traces", "Traces"),
    ("deploy", "Deploy"),
)


def build_studio(signed_in: SignedIn) -> list[BaseRoute]:
    """The studio's routes; ``signed_in`` says whether a request carries a valid session."""

    def page(template: str, section: str, **context: Any) -> Callable[[Request], Any]:
        async def render(request: Request) -> Response:
            if not signed_in(request):
                return RedirectResponse(f"/studio/login?next={request.url.path}", status_code=303)
            params = dict(request.path_params)
            return templates.TemplateResponse(
                request, template, {"nav": NAV, "section": section, **params, **context}
            )

        return render

    async def home(request: Request) -> Response:
        return RedirectResponse(
            "/studio/endpoints" if signed_in(request) else "/studio/login", status_code=303
        )

    async def login(request: Request) -> Response:
        next_path = request.query_params.get("next", "/studio/endpoints")
        if not next_path.startswith("/studio/"):  # only ever back into the studio
            next_path = "/studio/endpoints"
        notice = LINK_NOTICE if request.query_params.get("link") == "expired" else ""
        return templates.TemplateResponse(
            request, "login.html", {"nav": (), "next": next_path, "notice": notice}
        )

    return [
        Route("/", home),
        Route("/studio/login", login),
        Route("/studio/endpoints", page("endpoints.html", "endpoints")),
        Route("/studio/endpoints/{name}", page("endpoint.html", "endpoints")),
        Route("/studio/models", page("models.html", "models")),
        Route("/studio/connections", page("connections.html", "connections")),
        Route("/studio/deploy", page("deploy.html", "deploy")),
        Route("/studio/traces", page("traces.html", "traces")),
        Route("/studio/traces/{trace_id}", page("trace.html", "traces")),
        Mount("/studio/static", StaticFiles(directory=str(HERE / "static")), name="static"),
    ]
