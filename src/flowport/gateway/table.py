"""The routing table on the request path: deployment states and compiled endpoint routes."""

from __future__ import annotations

import random
from bisect import bisect_right
from collections.abc import Callable, Mapping
from itertools import accumulate
from typing import Any

from flowport.gateway.routes import DeploymentRoute, EndpointRoute
from flowport.gateway.stats import MinuteStats
from flowport.gateway.upstream import InstancePool, Upstream


class DeploymentState:
    """What the gateway tracks of one deployment: its settings, instances, load and last hour."""

    def __init__(
        self,
        endpoint: str,
        name: str,
        on_idle: Callable[[Upstream], None],
        factory: Callable[[str], Upstream] = Upstream,
    ) -> None:
        self.endpoint = endpoint
        self.name = name
        self.settings = DeploymentRoute(name)
        self.pool = InstancePool(on_idle, factory)
        self.in_flight = 0
        self.stats = MinuteStats()
        self.live = True
        """False once the gateway dropped it: its late answers no longer add labelled series."""
        self.series: dict[int, tuple[Any, Any]] = {}
        """Its request counter (per status) and latency histogram children, as the gateway counts them."""


class EndpointTable:
    """An ``EndpointRoute`` ready for the request path: weights accumulated, mirrors listed."""

    def __init__(self, route: EndpointRoute, deployments: Mapping[str, DeploymentState]) -> None:
        self.route = route
        self.deployments = dict(deployments)
        """Every deployment the route names (in deployments, traffic or mirror_traffic)."""
        live = [(name, weight) for name, weight in route.traffic.items() if weight > 0]
        self._names = [name for name, _ in live]
        self._cumulative = list(accumulate(weight for _, weight in live))
        self.mirrors = [
            (self.deployments[name], percent / 100)
            for name, percent in route.mirror_traffic.items()
            if percent > 0
        ]

    @staticmethod
    def names(route: EndpointRoute) -> list[str]:
        return list(dict.fromkeys([*route.deployments, *route.traffic, *route.mirror_traffic]))

    def pick(self) -> DeploymentState | None:
        """A deployment drawn by the traffic weights; None when none has traffic."""
        if not self._names:
            return None
        point = random.random() * self._cumulative[-1]
        return self.deployments[self._names[bisect_right(self._cumulative, point)]]

    def mirror_targets(self) -> list[DeploymentState]:
        """The mirror deployments that get a copy of this request."""
        return [state for state, share in self.mirrors if random.random() < share]
