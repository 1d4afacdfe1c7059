"""The REST API under ``/api/v1``: what the CLI and the studio call. OpenAPI at ``/openapi.json``.

Every route but ``/health`` (and the sign-in routes) requires the admin token
(``Authorization: Bearer ...``) or a studio session; so do ``/openapi.json`` and ``/docs``.
Changes to endpoints and deployments return an operation; ``GET /operations/{id}`` follows it.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import JSONResponse, RedirectResponse, Response
from pydantic import BaseModel, Field

from flowport.connections import SCRUBBED, ConnectionNotFound, ConnectionSpecError, connection_from_spec
from flowport.control.data import read_records
from flowport.control.endpoints import ControlPlane
from flowport.control.errors import ApiError
from flowport.control.guard import ApiGuard
from flowport.control.sessions import COOKIE, CSRF_HEADER, SESSION_SECONDS, Sessions
from flowport.control.specs import (
    SpecError,
    apply_set,
    parse_compute,
    parse_deployment,
    parse_endpoint,
    parse_environment,
    parse_model,
    read_yaml,
)
from flowport.control.traces import MAX_TRACES, TraceQuery, TraceStore
from flowport.control.usage import deployment_tokens
from flowport.dataplane.client import DataPlaneUnavailable
from flowport.settings import instance_log_dirs


class SpecBody(BaseModel):
    """An Azure YAML document, as its text (``yaml``) or as JSON fields (``spec``)."""

    yaml: str | None = Field(None, description="The YAML file's text.")
    file: str | None = Field(None, description="The file's path, named in error messages.")
    base_dir: str | None = Field(
        None, description="Where relative paths resolve (default: the file's folder)."
    )
    spec: dict[str, Any] | None = Field(None, description="The fields as JSON, instead of yaml.")
    set: list[str] = Field(default_factory=list, description="az's --set path=value assignments.")
    add: list[tuple[str, str]] = Field(default_factory=list, description="az's --add path value.")
    remove: list[str] = Field(default_factory=list, description="az's --remove path.")
    force_string: bool = Field(False, description="az's --force-string: --set/--add values stay text.")

    def document(self, base: dict[str, Any] | None = None, **overrides: Any) -> dict[str, Any]:
        raw: Any = dict(base or {})
        if self.yaml is not None:
            raw = read_yaml(self.yaml, self.file or "<request>")
        elif self.spec is not None:
            raw = dict(self.spec)
        if not isinstance(raw, dict):
            raise ApiError(
                400, "InvalidSpec", f"{self.file or 'the document'} must be a YAML mapping of fields"
            )
        for key, value in overrides.items():
            if value is not None:
                raw[key] = value
        if not (self.set or self.add or self.remove):
            return raw
        return apply_set(raw, self.set, force_string=self.force_string, add=self.add, remove=self.remove)

    @property
    def directory(self) -> Path | None:
        if self.base_dir:
            return Path(self.base_dir)
        return Path(self.file).parent if self.file else None


class KeyBody(BaseModel):
    key_type: str = "primary"
    key_value: str | None = None


class TrafficBody(BaseModel):
    traffic: dict[str, int] | None = None
    mirror_traffic: dict[str, int] | None = None


def _error(status: int, body: dict[str, Any]) -> JSONResponse:
    return JSONResponse(body, status_code=status)


class LoginBody(BaseModel):
    token: str


SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def build_api(
    control: ControlPlane,
    sessions: Sessions,
    data_dir: Path,
    base_url: str,
    traces: TraceStore | None = None,
) -> FastAPI:
    def refuse_while_recovering(request: Request) -> None:
        if control.recovering and request.method not in SAFE_METHODS:
            raise ApiError(
                503,
                "Recovering",
                "the server is bringing its deployments back after a start; try again in a few seconds",
                headers={"retry-after": "2"},
            )

    def admin(request: Request) -> None:
        """The admin token as a bearer, or a studio session (with its CSRF token to change state)."""
        scheme, _, token = (request.headers.get("authorization") or "").partition(" ")
        if scheme.lower() == "bearer" and sessions.token_matches(token):
            refuse_while_recovering(request)
            return
        session = sessions.get(request.cookies.get(COOKIE))
        if session is not None:
            if request.method in SAFE_METHODS or sessions.csrf_ok(session, request.headers.get(CSRF_HEADER)):
                refuse_while_recovering(request)
                return
            raise ApiError(
                403, "CsrfTokenMissing", f"a studio session must send its CSRF token in {CSRF_HEADER}"
            )
        raise ApiError(
            401,
            "Unauthorized",
            "the admin API needs 'Authorization: Bearer <admin token>' (see ~/.flowport/admin_token)",
        )

    api = FastAPI(
        title="flowport",
        version="1",
        openapi_url=None,  # served below, behind the admin check
        docs_url=None,
        redoc_url=None,
        dependencies=[],
    )
    api.add_middleware(ApiGuard)  # 413 past the body limit; a 500 is one JSON line and closes

    @api.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)

    @api.exception_handler(DataPlaneUnavailable)
    async def dataplane_unavailable(request: Request, exc: DataPlaneUnavailable) -> JSONResponse:
        error = ApiError(503, "DataPlaneUnavailable", f"{exc}; try again in a few seconds")
        return _error(503, error.body())

    @api.exception_handler(SpecError)
    async def spec_error(request: Request, exc: SpecError) -> JSONResponse:
        error = ApiError(400, "InvalidSpec", str(exc), problems=exc.problems)
        return _error(400, error.body())

    @api.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        details = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        return _error(400, {"error": {"code": "InvalidRequest", "message": details}})

    @api.get("/health", tags=["server"])
    async def health() -> dict[str, Any]:
        return {"status": "ok", "recovering": control.recovering}

    secured = [Depends(admin)]

    @api.get("/openapi.json", dependencies=secured, include_in_schema=False)
    async def openapi() -> JSONResponse:
        return JSONResponse(api.openapi())

    @api.get("/docs", dependencies=secured, include_in_schema=False)
    async def docs(request: Request) -> Response:
        root = request.scope.get("root_path", "").rstrip("/")
        return get_swagger_ui_html(openapi_url=f"{root}/openapi.json", title="flowport API")

    # -- studio sessions ------------------------------------------------------------------

    def set_session_cookie(response: Response, request: Request) -> str:
        sid, session = sessions.open()
        response.set_cookie(
            COOKIE,
            sid,
            max_age=SESSION_SECONDS,
            path="/",
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )
        return session.csrf

    @api.post("/sessions", tags=["sessions"])
    async def sign_in(body: LoginBody, request: Request, response: Response) -> dict[str, str]:
        if not sessions.token_matches(body.token):
            raise ApiError(401, "Unauthorized", "that is not the admin token (see ~/.flowport/admin_token)")
        return {"csrf": set_session_cookie(response, request)}

    @api.get("/sessions/redeem", tags=["sessions"])
    async def redeem(request: Request, code: str = "") -> Response:
        """The one-time login link ``flowport server`` prints; a used or expired one leads to the
        sign-in page, which says so."""
        if not sessions.redeem(code):
            return RedirectResponse("/studio/login?link=expired", status_code=303)
        response = RedirectResponse("/", status_code=303)
        set_session_cookie(response, request)
        return response

    @api.get("/sessions/current", tags=["sessions"])
    async def current(request: Request) -> dict[str, str]:
        session = sessions.get(request.cookies.get(COOKIE))
        if session is None:
            raise ApiError(401, "Unauthorized", "not signed in")
        return {"csrf": session.csrf}

    @api.delete("/sessions/current", tags=["sessions"])
    async def sign_out(request: Request, response: Response) -> dict[str, bool]:
        sessions.close(request.cookies.get(COOKIE))
        response.delete_cookie(COOKIE, path="/")
        return {"signed_out": True}

    @api.post("/sessions/login-link", dependencies=secured, tags=["sessions"])
    async def login_link() -> dict[str, str]:
        """A new one-time studio login link (10 minutes), like the one the server prints."""
        return {"url": f"{base_url.rstrip('/')}/api/v1/sessions/redeem?code={sessions.login_code()}"}

    # -- environments ---------------------------------------------------------------------

    @api.post("/environments", status_code=201, dependencies=secured, tags=["environments"])
    async def create_environment(body: SpecBody) -> dict[str, Any]:
        spec = parse_environment(body.document(), body.file, body.directory)
        environment = await asyncio.to_thread(control.environments.register, spec)
        return {**environment, "notes": [*spec.notes, *environment.get("notes", ())]}

    @api.get("/environments", dependencies=secured, tags=["environments"])
    async def list_environments(name: str | None = None, archived: bool = False) -> list[dict[str, Any]]:
        return control.environments.list(name, archived)

    @api.get("/environments/{name}", dependencies=secured, tags=["environments"])
    async def show_environment(name: str, version: str | None = None) -> dict[str, Any]:
        return control.environments.get(name, version)

    @api.post("/environments/{name}/archive", dependencies=secured, tags=["environments"])
    async def archive_environment(name: str, version: str | None = None) -> list[dict[str, Any]]:
        return control.environments.archive(name, version)

    @api.post("/environments/{name}/restore", dependencies=secured, tags=["environments"])
    async def restore_environment(name: str, version: str | None = None) -> list[dict[str, Any]]:
        return control.environments.archive(name, version, archived=False)

    @api.delete("/environments/{name}", dependencies=secured, tags=["environments"])
    async def delete_environment(name: str, version: str | None = None) -> list[dict[str, Any]]:
        return control.environments.delete(name, version)

    # -- models ---------------------------------------------------------------------------

    @api.post("/models", status_code=201, dependencies=secured, tags=["models"])
    async def create_model(body: SpecBody) -> dict[str, Any]:
        spec = parse_model(body.document(), body.file, body.directory)
        # Snapshotting and checking a model reads files and runs a child: off the loop.
        model = await asyncio.to_thread(control.models.register, spec)
        return {**model, "notes": [*spec.notes, *model.get("notes", ())]}

    @api.get("/models", dependencies=secured, tags=["models"])
    async def list_models(name: str | None = None, archived: bool = False) -> list[dict[str, Any]]:
        return control.models.list(name, archived)

    @api.get("/models/{name}", dependencies=secured, tags=["models"])
    async def show_model(name: str, version: str | None = None) -> dict[str, Any]:
        return control.models.get(name, version)

    @api.post("/models/{name}/archive", dependencies=secured, tags=["models"])
    async def archive_model(name: str, version: str | None = None) -> list[dict[str, Any]]:
        return control.models.archive(name, version)

    # -- endpoints ------------------------------------------------------------------------

    @api.post("/endpoints", status_code=201, dependencies=secured, tags=["endpoints"])
    async def create_endpoint(body: SpecBody, name: str | None = None) -> dict[str, Any]:
        spec = parse_endpoint(body.document(name=name), body.file)
        operation = await control.create_endpoint(spec)
        return {
            "operation": operation,
            "endpoint": control.show_endpoint(spec.name),
            "notes": list(spec.notes),
        }

    @api.get("/endpoints", dependencies=secured, tags=["endpoints"])
    async def list_endpoints() -> list[dict[str, Any]]:
        return control.list_endpoints()

    @api.get("/endpoints/{name}", dependencies=secured, tags=["endpoints"])
    async def show_endpoint(name: str) -> dict[str, Any]:
        return control.show_endpoint(name)

    @api.patch("/endpoints/{name}", dependencies=secured, tags=["endpoints"])
    async def update_endpoint(name: str, body: SpecBody) -> dict[str, Any]:
        current = control.show_endpoint(name)
        # --set/--add/--remove edit what the endpoint has (az's generic update), not an empty document
        base = {key: current[key] for key in ("description", "tags", "properties") if key in current}
        raw = body.document(base, name=name)
        fields = set(raw)
        raw.setdefault("auth_mode", current["auth_mode"])  # in place: the document keeps its lines
        spec = parse_endpoint(raw, body.file)
        operation = await control.update_endpoint(spec, fields)
        return {"operation": operation, "endpoint": control.show_endpoint(name), "notes": list(spec.notes)}

    @api.put("/endpoints/{name}/traffic", dependencies=secured, tags=["endpoints"])
    async def set_traffic(name: str, body: TrafficBody) -> dict[str, Any]:
        operation = await control.set_traffic(name, body.traffic, body.mirror_traffic)
        return {"operation": operation, "endpoint": control.show_endpoint(name)}

    @api.delete("/endpoints/{name}", status_code=202, dependencies=secured, tags=["endpoints"])
    async def delete_endpoint(name: str) -> dict[str, Any]:
        return {"operation": await control.delete_endpoint(name)}

    @api.post("/endpoints/{name}/credentials", dependencies=secured, tags=["endpoints"])
    async def credentials(name: str) -> dict[str, Any]:
        return control.credentials(name)

    @api.post("/endpoints/{name}/export", dependencies=secured, tags=["endpoints"])
    async def export(name: str, deployment: str | None = None) -> dict[str, Any]:
        """The endpoint (or one deployment) as plain data for artifact builders; secrets in clear."""
        return control.export(name, deployment)

    @api.post("/endpoints/{name}/regenerate-keys", dependencies=secured, tags=["endpoints"])
    async def regenerate_keys(name: str, body: KeyBody) -> dict[str, Any]:
        return await control.regenerate_key(name, body.key_type, body.key_value)

    @api.get("/endpoints/{name}/operations", dependencies=secured, tags=["operations"])
    async def endpoint_operations(name: str) -> list[dict[str, Any]]:
        control.show_endpoint(name)
        with contextlib.suppress(DataPlaneUnavailable):
            await control.collect_scaling(name)
        return control.operations.list(name)

    @api.get("/endpoints/{name}/stats", dependencies=secured, tags=["endpoints"])
    async def endpoint_stats(name: str) -> dict[str, Any]:
        control.show_endpoint(name)
        return await control.dataplane.stats(name)

    @api.get("/endpoints/{name}/compare", dependencies=secured, tags=["endpoints"])
    async def endpoint_compare(name: str, deployments: list[str] = Query([])) -> dict[str, Any]:
        """Agreement, latency and token deltas of two deployments on mirrored traffic."""
        return await control.compare(name, deployments)

    @api.delete("/endpoints/{name}/compare", dependencies=secured, tags=["endpoints"])
    async def endpoint_compare_clear(name: str) -> dict[str, Any]:
        """Forget the recorded pairs (after changing a deployment, to judge it afresh)."""
        control.show_endpoint(name)
        await control.dataplane.forget_pairs(name)
        return {}

    # -- deployments ----------------------------------------------------------------------

    @api.post(
        "/endpoints/{endpoint}/deployments", status_code=202, dependencies=secured, tags=["deployments"]
    )
    async def create_deployment(
        endpoint: str, body: SpecBody, name: str | None = None, all_traffic: bool = False
    ) -> dict[str, Any]:
        raw = body.document(name=name)
        _same_endpoint(raw, endpoint)
        raw["endpoint_name"] = endpoint  # set in place: the document keeps its line numbers
        spec = parse_deployment(raw, body.file, body.directory)
        operation = await control.create_deployment(spec, all_traffic)
        notes = [*spec.notes, *operation.pop("environment_notes", ())]
        return {"operation": operation, "notes": [*notes, *control.compute_notes(endpoint, spec.name)]}

    @api.patch(
        "/endpoints/{endpoint}/deployments/{name}",
        status_code=202,
        dependencies=secured,
        tags=["deployments"],
    )
    async def update_deployment(
        endpoint: str, name: str, body: SpecBody, all_traffic: bool = False
    ) -> dict[str, Any]:
        base = control.deployment_document(endpoint, name)
        raw = _keep_scrubbed_variables(body.document(base, name=name), base)
        _same_endpoint(raw, endpoint)
        raw["endpoint_name"] = endpoint
        spec = parse_deployment(raw, body.file, body.directory)
        operation = await control.update_deployment(spec, all_traffic)
        notes = [*spec.notes, *operation.pop("environment_notes", ())]
        return {"operation": operation, "notes": [*notes, *control.compute_notes(endpoint, spec.name)]}

    @api.get("/endpoints/{endpoint}/deployments", dependencies=secured, tags=["deployments"])
    async def list_deployments(endpoint: str) -> list[dict[str, Any]]:
        return await control.list_deployments(endpoint)

    @api.get("/endpoints/{endpoint}/deployments/{name}", dependencies=secured, tags=["deployments"])
    async def show_deployment(endpoint: str, name: str) -> dict[str, Any]:
        return await control.show_deployment(endpoint, name)

    @api.delete(
        "/endpoints/{endpoint}/deployments/{name}",
        status_code=202,
        dependencies=secured,
        tags=["deployments"],
    )
    async def delete_deployment(endpoint: str, name: str) -> dict[str, Any]:
        return {"operation": await control.delete_deployment(endpoint, name)}

    @api.get("/endpoints/{endpoint}/deployments/{name}/logs", dependencies=secured, tags=["deployments"])
    async def deployment_logs(
        endpoint: str, name: str, lines: int = Query(100, ge=1, le=100_000)
    ) -> dict[str, Any]:
        return {"lines": await control.logs(endpoint, name, lines)}

    @api.get("/endpoints/{endpoint}/deployments/{name}/usage", dependencies=secured, tags=["deployments"])
    async def deployment_usage(endpoint: str, name: str) -> dict[str, Any]:
        """LLM tokens since the deployment's ready instances started (prompt, completion)."""
        addresses = await control.ready_addresses(endpoint, name)
        return {"instances": len(addresses), "tokens": await deployment_tokens(addresses)}

    @api.get("/endpoints/{endpoint}/deployments/{name}/data", dependencies=secured, tags=["deployments"])
    async def deployment_data(endpoint: str, name: str, since: str | None = None) -> Response:
        await control.show_deployment(endpoint, name)
        body = b"".join(read_records(data_dir / endpoint / name, since))
        return Response(body, media_type="application/x-ndjson")

    # -- computes -------------------------------------------------------------------------

    @api.post("/computes", status_code=201, dependencies=secured, tags=["computes"])
    async def create_compute(body: SpecBody, name: str | None = None) -> dict[str, Any]:
        """Register where instances run: a ``ray`` cluster (``address``) or a ``kubernetes`` one."""
        spec = parse_compute(body.document(name=name), body.file)
        return {**control.computes.create(spec), "notes": list(spec.notes)}

    @api.get("/computes", dependencies=secured, tags=["computes"])
    async def list_computes() -> list[dict[str, Any]]:
        return control.computes.list()

    @api.get("/computes/{name}", dependencies=secured, tags=["computes"])
    async def show_compute(name: str) -> dict[str, Any]:
        return control.computes.get(name)

    @api.delete("/computes/{name}", dependencies=secured, tags=["computes"])
    async def delete_compute(name: str) -> dict[str, Any]:
        control.computes.delete(name)
        return {"deleted": name}

    # -- traces ---------------------------------------------------------------------------

    local_logs, *other_logs = instance_log_dirs(data_dir.parent)
    trace_store = traces or TraceStore(local_logs, also=other_logs)

    @api.get("/traces", dependencies=secured, tags=["traces"])
    async def list_traces(query: TraceQuery = Depends()) -> dict[str, Any]:
        """Recent traces in the built-in store, newest first (filters: endpoint, deployment, request
        id, time range, status)."""
        if not 1 <= query.limit <= MAX_TRACES:
            raise ApiError(
                400, "InvalidLimit", f"limit must be between 1 and {MAX_TRACES}, got {query.limit}"
            )
        return {"value": await asyncio.to_thread(trace_store.list, query)}

    @api.get("/traces/{trace_id}", dependencies=secured, tags=["traces"])
    async def show_trace(trace_id: str) -> dict[str, Any]:
        """One trace: its summary and every span (gateway, line, nodes, LLM calls)."""
        return await asyncio.to_thread(trace_store.get, trace_id)

    # -- operations -----------------------------------------------------------------------

    @api.get("/operations/{op_id}", dependencies=secured, tags=["operations"])
    async def show_operation(op_id: str) -> dict[str, Any]:
        return control.operations.get(op_id)

    # -- connections ----------------------------------------------------------------------

    @api.get("/connections", dependencies=secured, tags=["connections"])
    async def list_connections() -> list[dict[str, Any]]:
        return [c.to_dict() for c in control.connections.list()]

    @api.get("/connections/{name}", dependencies=secured, tags=["connections"])
    async def show_connection(name: str) -> dict[str, Any]:
        try:
            return control.connections.get(name).to_dict()
        except ConnectionNotFound as exc:
            raise ApiError(404, "ConnectionNotFound", str(exc)) from None

    @api.put("/connections/{name}", dependencies=secured, tags=["connections"])
    async def save_connection(name: str, body: dict[str, Any]) -> dict[str, Any]:
        spec = {**body, "name": name}
        try:
            existing = control.connections.get(name)
        except ConnectionNotFound:
            existing = None
        if existing is not None:
            spec = _keep_secrets(spec, existing.secrets)
        try:
            connection = control.connections.save(connection_from_spec(spec, environ={}))
        except ConnectionSpecError as exc:
            raise ApiError(400, "InvalidConnection", str(exc)) from None
        return connection.to_dict()

    @api.delete("/connections/{name}", dependencies=secured, tags=["connections"])
    async def delete_connection(name: str) -> dict[str, Any]:
        try:
            control.connections.delete(name)
        except ConnectionNotFound as exc:
            raise ApiError(404, "ConnectionNotFound", str(exc)) from None
        return {"deleted": name}

    return api


def _same_endpoint(raw: dict[str, Any], endpoint: str) -> None:
    named = raw.get("endpoint_name")
    if named and named != endpoint:
        raise ApiError(
            400,
            "EndpointMismatch",
            f"endpoint_name: the file names endpoint {named!r} but the request is for {endpoint!r}",
        )


def _keep_scrubbed_variables(raw: dict[str, Any], base: dict[str, Any]) -> dict[str, Any]:
    """A variable sent back as shown (``******``) keeps its stored value: a shown deployment re-applies."""
    variables, stored = raw.get("environment_variables"), base.get("environment_variables") or {}
    if not isinstance(variables, dict):
        return raw
    for key, value in variables.items():  # in place: the document keeps its line numbers
        if value == SCRUBBED and key in stored:
            variables[key] = stored[key]
    return raw


def _keep_secrets(spec: dict[str, Any], stored: dict[str, Any]) -> dict[str, Any]:
    """A secret sent back scrubbed (or left out) keeps its stored value: editing never needs it shown."""
    nested = isinstance(spec.get("secrets"), dict)
    target = dict(spec["secrets"]) if nested else spec
    for field, value in stored.items():
        if target.get(field) in (None, SCRUBBED):
            target[field] = value
    return {**spec, "secrets": target} if nested else target
