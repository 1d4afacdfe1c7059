"""When to scale a deployment to how many instances: the policy, runtime-neutral and pure.

``scale_settings: type: target_utilization`` keeps the requests in flight per instance near
``target_utilization_percentage`` of ``max_concurrent_requests_per_instance``. A runtime calls
``Autoscaler.poll(now, current, in_flight)`` as often as it likes; the policy samples every
``polling_interval`` seconds and answers how many instances to run, or None to stay:

- up at once to the count the load needs (``ceil(in_flight / (capacity * target))``);
- down only to the highest count the load needed over the last ``cooldown_seconds`` and only
  once that long has passed since the last change (no flapping on a bursty load);
- never below ``min_instances`` nor above ``max_instances``.

The runtime owns the rest: starting instances (routed once ready), draining those it removes,
recording ``ScalingEvent``s. Nothing here does I/O or reads a clock.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

DEFAULT_COOLDOWN_SECONDS = 60.0
"""How long the load must stay low before instances are removed (flowport's ``cooldown_seconds``)."""
MIN_POLLING_INTERVAL = 0.1
EVENTS_KEPT = 50
"""Scaling events a runtime keeps per deployment for the control plane to collect."""


@dataclass(frozen=True)
class ScaleSettings:
    """``scale_settings: type: target_utilization`` with Azure's defaults (1, 1, 70 %, 1 s)."""

    min_instances: int = 1
    max_instances: int = 1
    target_utilization_percentage: int = 70
    polling_interval: float = 1.0
    """Seconds between two samples of the load."""
    cooldown_seconds: float = DEFAULT_COOLDOWN_SECONDS
    """flowport's own field: seconds of low load (and since the last change) before scaling down."""

    def clamp(self, count: int) -> int:
        return max(self.min_instances, min(self.max_instances, count))

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ScaleSettings:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})

    @classmethod
    def from_scale_settings(cls, document: Mapping[str, Any] | None) -> ScaleSettings | None:
        """The settings of a (validated) ``scale_settings`` mapping; None unless ``target_utilization``."""
        if not document or document.get("type") != "target_utilization":
            return None
        return cls.from_json(document)


@dataclass(frozen=True)
class ScaleDecision:
    count: int
    reason: str


@dataclass(frozen=True)
class ScalingEvent:
    """One change of a deployment's instance count, as the runtime carried it out."""

    id: str
    time: str
    """ISO 8601, UTC."""
    from_count: int
    to_count: int
    reason: str
    succeeded: bool = True
    error: str = ""


@dataclass(frozen=True)
class ScalingStatus:
    """What a runtime reports of an autoscaled deployment: settings, current count, events."""

    settings: ScaleSettings
    current_instances: int
    events: tuple[ScalingEvent, ...] = field(default_factory=tuple)

    def to_json(self) -> dict[str, Any]:
        return {
            "settings": self.settings.to_json(),
            "current_instances": self.current_instances,
            "events": [asdict(event) for event in self.events],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ScalingStatus:
        return cls(
            settings=ScaleSettings.from_json(data["settings"]),
            current_instances=int(data["current_instances"]),
            events=tuple(ScalingEvent(**event) for event in data.get("events", ())),
        )


class Autoscaler:
    """The target-utilization policy for one deployment (one per deployment, kept across polls)."""

    def __init__(self, settings: ScaleSettings, capacity: int) -> None:
        self.settings = settings
        self.capacity = max(1, capacity)
        """``max_concurrent_requests_per_instance``: 100 % utilization of one instance."""
        self._samples: deque[tuple[float, int]] = deque()
        self._next_poll: float | None = None
        self._changed_at: float | None = None

    @property
    def interval(self) -> float:
        return max(MIN_POLLING_INTERVAL, float(self.settings.polling_interval))

    def needed(self, in_flight: int) -> int:
        """The instances ``in_flight`` requests need at the target utilization (within the bounds)."""
        per_instance = self.capacity * self.settings.target_utilization_percentage / 100
        return self.settings.clamp(math.ceil(max(0, in_flight) / per_instance))

    def due(self, now: float) -> bool:
        return self._next_poll is None or now >= self._next_poll

    def changed(self, now: float) -> None:
        """The runtime changed the count (scaled, or applied a plan): the cool-down starts again."""
        self._changed_at = now
        self._samples.clear()

    def poll(self, now: float, current: int, in_flight: int) -> ScaleDecision | None:
        """The count to scale ``current`` instances to, or None (nothing to do, or not due yet)."""
        if not self.due(now):
            return None
        self._next_poll = now + self.interval
        if self._changed_at is None:
            self._changed_at = now
        needed = self.needed(in_flight)
        cooldown = self.settings.cooldown_seconds
        self._samples.append((now, needed))
        while self._samples and self._samples[0][0] < now - cooldown:
            self._samples.popleft()
        utilization = 100 * in_flight / (self.capacity * current) if current else 0.0
        load = (
            f"{in_flight} request(s) in flight on {current} instance(s): {utilization:.0f}% "
            f"utilization, target {self.settings.target_utilization_percentage}%"
        )
        bounded = self.settings.clamp(current)
        if bounded != current:
            return ScaleDecision(bounded, f"{current} instance(s) is outside {self._bounds()}")
        if needed > current:
            return ScaleDecision(needed, load)
        if needed < current and now - self._changed_at >= cooldown:
            highest = max(count for _, count in self._samples)
            if highest < current:
                return ScaleDecision(highest, f"{load}; low for {cooldown:g} s")
        return None

    def _bounds(self) -> str:
        return f"min_instances {self.settings.min_instances} / max_instances {self.settings.max_instances}"
