"""Compute targets: where an endpoint's deployments run (``flowport compute ...``).

``local`` is built in (this server's machine, the default). A ``ray`` compute names a Ray
cluster; a ``kubernetes`` compute names a cluster whose manifests ``online-endpoint export``
writes. An endpoint picks one with ``compute: azureml:NAME`` when it is created.
"""

from __future__ import annotations

from typing import Any

from flowport.control.errors import ApiError
from flowport.control.specs import ComputeSpec
from flowport.runtime.base import LOCAL, ComputeTarget
from flowport.store import Documents

BUILT_IN = {
    "name": LOCAL.name,
    "type": LOCAL.type,
    "description": "processes on the machine that runs flowport server (the default)",
    "tags": {},
}


class Computes:
    def __init__(self, rows: Documents, endpoints: Documents) -> None:
        self.rows = rows
        self.endpoints = endpoints

    def create(self, spec: ComputeSpec) -> dict[str, Any]:
        if self.rows.get(name=spec.name) is not None:
            raise ApiError(
                409,
                "ComputeExists",
                f"compute {spec.name!r} already exists; "
                f"delete it first (flowport compute delete -n {spec.name})",
            )
        document = {
            "type": spec.type,
            "description": spec.description,
            "tags": spec.tags,
            **{
                key: value
                for key, value in (
                    ("address", spec.address),
                    ("kubeconfig", spec.kubeconfig),
                    ("context", spec.context),
                    ("namespace", spec.namespace),
                )
                if value
            },
        }
        self.rows.put({"name": spec.name}, document)
        return self.get(spec.name)

    def list(self) -> list[dict[str, Any]]:
        return [BUILT_IN, *(self._view(row) for row in self.rows.list())]

    def get(self, name: str) -> dict[str, Any]:
        if name == LOCAL.name:
            return BUILT_IN
        row = self.rows.get(name=name)
        if row is None:
            raise ApiError(404, "ComputeNotFound", f"compute {name!r} does not exist (flowport compute list)")
        return self._view(row)

    def delete(self, name: str) -> None:
        if name == LOCAL.name:
            raise ApiError(400, "BuiltInCompute", "the local compute is built in and cannot be deleted")
        self.get(name)
        users = sorted(e["name"] for e in self.endpoints.list() if e.get("compute") == name)
        if users:
            raise ApiError(
                409,
                "ComputeInUse",
                f"compute {name!r} runs endpoint(s) {', '.join(users)}; delete them first",
            )
        self.rows.delete(name=name)

    def target(self, name: str | None) -> ComputeTarget:
        """The compute an endpoint names (None: local), as the runtime needs it."""
        if not name:
            return LOCAL
        view = self.get(name)
        return ComputeTarget(name=name, type=view["type"], address=view.get("address", ""))

    def check_reference(self, name: str) -> ComputeTarget:
        """An endpoint's ``compute``: a 400 naming the fix when no such compute is registered."""
        try:
            return self.target(name)
        except ApiError:
            raise ApiError(
                400,
                "ComputeNotFound",
                f"compute: {name!r} is not a registered compute; register it with "
                f"flowport compute create --name {name} --type ray|kubernetes ... (flowport compute list)",
            ) from None

    @staticmethod
    def _view(row: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in row.items() if k != "document"}
