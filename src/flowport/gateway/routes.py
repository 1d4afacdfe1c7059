"""The routing table the control plane pushes to the gateway: plain immutable data.

The gateway never reads the store. The control plane publishes an ``EndpointRoute`` when an
endpoint, its keys, its traffic or its deployments change, and the runtime's ready-instance
changes arrive through ``Gateway.set_instances``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field


def key_digest(key: str) -> bytes:
    """What the gateway keeps of an endpoint key: its SHA-256, compared in constant time."""
    return hashlib.sha256(key.encode("utf-8")).digest()


@dataclass(frozen=True)
class DataCollection:
    """Azure's ``data_collector``: which parts of sampled requests are written to JSONL."""

    request: bool = False
    response: bool = False
    sampling_rate: float = 1.0
    """Fraction of requests recorded, 0.0-1.0."""
    rolling_rate: str = "Hour"
    """How files are partitioned by time: Minute, Hour, Day, Month or Year."""


@dataclass(frozen=True)
class DeploymentRoute:
    name: str
    max_concurrent_requests_per_instance: int = 10
    instance_count: int = 1
    request_timeout_ms: int = 5000
    data_collection: DataCollection | None = None

    @property
    def max_in_flight(self) -> int:
        """Above this many requests in flight for the deployment the gateway answers 429."""
        return 2 * self.max_concurrent_requests_per_instance * self.instance_count


@dataclass(frozen=True)
class EndpointRoute:
    name: str
    auth_mode: str = "key"
    """``key``: a bearer key whose digest is in ``key_digests``; ``aml_token``: a signed token."""
    key_digests: tuple[bytes, ...] = ()
    traffic: Mapping[str, int] = field(default_factory=dict)
    mirror_traffic: Mapping[str, int] = field(default_factory=dict)
    deployments: Mapping[str, DeploymentRoute] = field(default_factory=dict)
    incarnation: str = ""
    """A random id created with the endpoint; tokens carry it, so a re-created endpoint refuses old ones."""
