"""The JSON shapes the control plane and the data plane exchange over the private socket."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from flowport.gateway import DataCollection, DeploymentRoute, EndpointRoute
from flowport.runtime.autoscale import ScaleSettings
from flowport.runtime.base import (
    ComputeTarget,
    DeploymentKey,
    DeploymentPlan,
    InstanceConfig,
    InstanceState,
    Probe,
)


def route_to_json(route: EndpointRoute) -> dict[str, Any]:
    data = asdict(route)
    data["key_digests"] = [digest.hex() for digest in route.key_digests]
    data["traffic"], data["mirror_traffic"] = dict(route.traffic), dict(route.mirror_traffic)
    return data


def route_from_json(data: dict[str, Any]) -> EndpointRoute:
    deployments = {}
    for name, fields in data.get("deployments", {}).items():
        collection = fields.get("data_collection")
        deployments[name] = DeploymentRoute(
            **{**fields, "data_collection": DataCollection(**collection) if collection else None}
        )
    return EndpointRoute(
        **{
            **data,
            "key_digests": tuple(bytes.fromhex(digest) for digest in data.get("key_digests", ())),
            "deployments": deployments,
        }
    )


def plan_to_json(plan: DeploymentPlan) -> dict[str, Any]:
    return {
        "endpoint": plan.key.endpoint,
        "deployment": plan.key.deployment,
        "revision": plan.revision,
        "instance_count": plan.instance_count,
        "config": plan.config.to_json(),
        "liveness": asdict(plan.liveness),
        "readiness": asdict(plan.readiness),
        "requirements": str(plan.requirements) if plan.requirements else None,
        "pip_requirements": list(plan.pip_requirements),
        "masked": sorted(plan.masked),
        "compute": asdict(plan.compute),
        "scale": plan.scale.to_json() if plan.scale else None,
    }


def plan_from_json(data: dict[str, Any]) -> DeploymentPlan:
    return DeploymentPlan(
        key=DeploymentKey(data["endpoint"], data["deployment"]),
        revision=data["revision"],
        instance_count=int(data["instance_count"]),
        config=InstanceConfig.from_json(data["config"]),
        liveness=Probe(**data["liveness"]),
        readiness=Probe(**data["readiness"]),
        requirements=Path(data["requirements"]) if data.get("requirements") else None,
        pip_requirements=tuple(data.get("pip_requirements") or ()),
        masked=frozenset(data.get("masked", ())),
        compute=ComputeTarget(**data.get("compute") or {}),
        scale=ScaleSettings.from_json(data["scale"]) if data.get("scale") else None,
    )


def instances_to_json(states: list[InstanceState]) -> list[dict[str, Any]]:
    return [asdict(state) for state in states]


def instances_from_json(data: list[dict[str, Any]]) -> list[InstanceState]:
    return [InstanceState(**fields) for fields in data]
