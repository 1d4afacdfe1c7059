"""Long-running operations: one at a time per endpoint, recorded in the store.

An operation runs as an asyncio task in the server; its document says what it does and
how it ended (``Running`` -> ``Succeeded`` | ``Failed`` with the error).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from flowport.control.errors import ApiError
from flowport.dataplane.client import DataPlaneUnavailable
from flowport.store import Documents
from flowport.store.tables import utcnow

log = logging.getLogger("flowport.control")


class Operations:
    def __init__(self, rows: Documents) -> None:
        self.rows = rows
        self.busy: dict[str, str] = {}
        """endpoint -> id of the operation running on it."""
        self.tasks: set[asyncio.Task[None]] = set()

    def ensure_free(self, endpoint: str) -> None:
        """409 while another operation runs on ``endpoint``."""
        running = self.busy.get(endpoint)
        if running is not None:
            current = self.get(running)
            raise ApiError(
                409,
                "OperationInProgress",
                f"endpoint {endpoint!r} has an operation in progress ({current['kind']} {current['target']}, "
                f"id {running}); wait for it to finish (GET /api/v1/operations/{running}) and try again",
            )

    def claim(self, endpoint: str, kind: str, target: str) -> dict[str, Any]:
        """Record a new operation on ``endpoint``; 409 while another one runs there."""
        self.ensure_free(endpoint)
        op_id = uuid.uuid4().hex
        self.busy[endpoint] = op_id
        document = {"kind": kind, "target": target, "status": "Running", "error": None}
        self.rows.put({"id": op_id}, document, endpoint=endpoint, created_at=utcnow(), updated_at=utcnow())
        return self.get(op_id)

    def start(self, operation: dict[str, Any], work: Callable[[], Awaitable[None]]) -> None:
        """Run ``work`` in the background; its outcome completes the operation."""
        task = asyncio.get_running_loop().create_task(self._run(operation, work))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def run_now(self, operation: dict[str, Any], work: Callable[[], Awaitable[None]]) -> dict[str, Any]:
        await self._run(operation, work)
        return self.get(operation["id"])

    async def _run(self, operation: dict[str, Any], work: Callable[[], Awaitable[None]]) -> None:
        status, error = "Succeeded", None
        try:
            await work()
        except ApiError as exc:
            status, error = "Failed", exc.body()["error"]
        except DataPlaneUnavailable as exc:  # the server is stopping (or was killed)
            status, error = "Failed", {"code": "ServerRestarted", "message": f"the server stopped: {exc}"}
        except Exception as exc:  # an operation's failure is its result, never the server's
            log.exception("operation %s failed", operation["id"])
            status, error = "Failed", {"code": "InternalError", "message": f"{type(exc).__name__}: {exc}"}
        finally:
            self.busy.pop(operation["endpoint"], None)
        self.finish(operation, status, error)

    def finish(self, operation: dict[str, Any], status: str, error: dict[str, Any] | None) -> None:
        document = {k: operation[k] for k in ("kind", "target")}
        self.rows.put({"id": operation["id"]}, {**document, "status": status, "error": error})

    def record(self, op_id: str, endpoint: str, document: dict[str, Any], at: datetime) -> None:
        """An operation carried out elsewhere (the data plane's autoscaler): stored once, as it ended."""
        if self.rows.get(id=op_id) is None:
            self.rows.put({"id": op_id}, document, endpoint=endpoint, created_at=at, updated_at=at)

    def get(self, op_id: str) -> dict[str, Any]:
        row = self.rows.get(id=op_id)
        if row is None:
            raise ApiError(404, "OperationNotFound", f"operation {op_id!r} does not exist")
        return row

    def list(self, endpoint: str) -> list[dict[str, Any]]:
        return sorted(self.rows.list(endpoint=endpoint), key=lambda r: str(r["created_at"]))

    async def wait_all(self) -> None:
        if self.tasks:
            await asyncio.gather(*self.tasks, return_exceptions=True)
