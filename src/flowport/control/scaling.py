"""Autoscaling as the control plane shows it: ``scaling`` in ``show`` and events in the history.

The data plane's autoscaler scales on its own (also while the control plane is down) and keeps
its last events; the control plane collects them whenever it asks the data plane about a
deployment, and records each one once as a ``ScaleDeployment`` operation.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from flowport.control.operations import Operations
from flowport.runtime.autoscale import ScalingEvent, ScalingStatus

KIND = "ScaleDeployment"


def view(status: ScalingStatus) -> dict[str, Any]:
    """The read-only ``scaling`` field of a shown deployment."""
    settings = status.settings
    last = status.events[-1] if status.events else None
    return {
        "current_instances": status.current_instances,
        "min_instances": settings.min_instances,
        "max_instances": settings.max_instances,
        "target_utilization_percentage": settings.target_utilization_percentage,
        "polling_interval": settings.polling_interval,
        "cooldown_seconds": settings.cooldown_seconds,
        "last_scaling": _event(last) if last else None,
    }


def record(operations: Operations, endpoint: str, deployment: str, status: ScalingStatus) -> None:
    """Record the events not yet in the history (an event's id makes it one operation)."""
    for event in status.events:
        operations.record(
            f"scale-{event.id}",
            endpoint,
            {
                "kind": KIND,
                "target": deployment,
                "status": "Succeeded" if event.succeeded else "Failed",
                "error": None if event.succeeded else {"code": "ScalingFailed", "message": event.error},
                **_event(event),
            },
            datetime.fromisoformat(event.time),
        )


def _event(event: ScalingEvent) -> dict[str, Any]:
    return {
        "time": event.time,
        "from_instances": event.from_count,
        "to_instances": event.to_count,
        "reason": event.reason,
    }
