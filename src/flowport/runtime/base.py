"""The one small interface between the control plane and whatever runs instances.

The control plane turns a deployment into a ``DeploymentPlan`` and hands it to a runtime;
the runtime starts, probes, restarts and drains instances and reports which of them are
ready through ``on_ready``. Nothing above this module knows which runtime runs an instance.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from flowport.runtime.autoscale import ScaleSettings, ScalingStatus

IDENTITY_ENV = {
    "flowport.endpoint": "FLOWPORT_ENDPOINT",
    "flowport.deployment": "FLOWPORT_DEPLOYMENT",
    "flowport.instance": "FLOWPORT_INSTANCE_ID",
}
"""Who an instance is: the variables a runtime sets for it, by the span attribute they become."""


@dataclass(frozen=True)
class DeploymentKey:
    endpoint: str
    deployment: str

    def __str__(self) -> str:
        return f"{self.endpoint}/{self.deployment}"


@dataclass(frozen=True)
class Probe:
    """Azure's probe settings (seconds), applied to ``/health`` (liveness) or ``/ready``."""

    initial_delay: float = 10
    period: float = 10
    timeout: float = 2
    success_threshold: int = 1
    failure_threshold: int = 30


@dataclass(frozen=True)
class InstanceConfig:
    """Everything one instance process needs to serve a flow; sent to it on stdin as JSON."""

    source: str
    """Absolute path of the flow folder (a model snapshot), or of the scoring script's code folder."""
    environment_variables: Mapping[str, str] = field(default_factory=dict)
    """The deployment's variables; they win over the flow's own ``environment_variables``."""
    connections: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    """``{name: {"type", "module", "configs", "secrets"}}`` in clear: the instance opens no store."""
    max_concurrent_requests: int = 10
    request_timeout_ms: int = 5000
    name: str = ""
    """The flow's name for clients (swagger title); empty: the source folder's name."""
    secret_variables: tuple[str, ...] = ()
    """Names of the variables whose values are secret: scrubbed from the instance's trace spans."""
    scoring_script: str = ""
    """Set: the instance runs this Azure-style script (``init()``/``run()``), relative to ``source``."""
    model_dir: str = ""
    """Set: ``AZUREML_MODEL_DIR``, the folder holding the deployment's model (Azure's layout)."""
    access_key: str = ""
    """Set: every request must carry it (``instance_keys.py``): an instance listening on a network."""

    def to_json(self) -> dict[str, Any]:
        return {
            "secret_variables": list(self.secret_variables),
            **({"scoring_script": self.scoring_script} if self.scoring_script else {}),
            **({"model_dir": self.model_dir} if self.model_dir else {}),
            **({"access_key": self.access_key} if self.access_key else {}),
            "source": self.source,
            "name": self.name,
            "environment_variables": dict(self.environment_variables),
            "connections": {k: dict(v) for k, v in self.connections.items()},
            "max_concurrent_requests": self.max_concurrent_requests,
            "request_timeout_ms": self.request_timeout_ms,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> InstanceConfig:
        return cls(
            source=data["source"],
            environment_variables=dict(data.get("environment_variables") or {}),
            connections=dict(data.get("connections") or {}),
            max_concurrent_requests=int(data.get("max_concurrent_requests", 10)),
            request_timeout_ms=int(data.get("request_timeout_ms", 5000)),
            name=str(data.get("name") or ""),
            secret_variables=tuple(data.get("secret_variables") or ()),
            scoring_script=str(data.get("scoring_script") or ""),
            model_dir=str(data.get("model_dir") or ""),
            access_key=str(data.get("access_key") or ""),
        )


@dataclass(frozen=True)
class ComputeTarget:
    """Where a deployment's instances run: an endpoint's ``compute`` (``local`` by default)."""

    name: str = "local"
    type: str = "local"
    """``local``, ``ray`` or ``kubernetes``."""
    address: str = ""
    """A Ray cluster's address (``HOST:PORT`` of its head, or ``ray://HOST:PORT``)."""


LOCAL = ComputeTarget()


@dataclass(frozen=True)
class DeploymentPlan:
    key: DeploymentKey
    revision: str
    """Changes whenever anything but ``instance_count`` changes: instances of an older
    revision are replaced one by one (new ready before old drained)."""
    instance_count: int
    config: InstanceConfig
    liveness: Probe = field(default_factory=Probe)
    readiness: Probe = field(default_factory=Probe)
    requirements: Path | None = None
    """The flow's ``requirements.txt``: installed into a virtualenv cached by its hash."""
    pip_requirements: tuple[str, ...] = ()
    """Requirement lines from the deployment's ``environment.conda_file`` (pip names, local
    paths made absolute): installed, after ``requirements``, into the same cached virtualenv."""
    masked: frozenset[str] = frozenset()
    """Secret values (variables, connection secrets) shown as ``******`` wherever the runtime
    shows the instance logs (``logs``, ``DeploymentFailed.log_tail``)."""
    compute: ComputeTarget = LOCAL
    """The compute the deployment's endpoint runs on; the data plane picks the runtime by it."""
    scale: ScaleSettings | None = None
    """``scale_settings: type: target_utilization``: the runtime keeps between ``min_instances``
    and ``max_instances`` instances (``instance_count`` is then ignored); None: ``instance_count``."""


@dataclass(frozen=True)
class InstanceState:
    id: str
    address: str
    """``unix:/path/to.sock`` or ``http://127.0.0.1:PORT``."""
    revision: str
    ready: bool
    pid: int | None
    restarts: int = 0
    node: str = ""
    """The cluster node the instance runs on (empty for a local instance)."""


class DeploymentFailed(Exception):
    """A deployment could not become ready.

    ``reason`` says why, ``log_tail`` shows the instance's last lines.
    """

    def __init__(self, reason: str, log_tail: list[str] | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.log_tail = log_tail or []

    def __str__(self) -> str:
        if not self.log_tail:
            return self.reason
        return self.reason + "\n" + "\n".join(self.log_tail)


ReadyListener = Callable[[DeploymentKey, list[str]], None]
"""Called with the addresses of a deployment's ready instances whenever that set changes."""

LoadSource = Callable[[DeploymentKey], Mapping[str, int]]
"""The requests in flight per ready-instance address of a deployment (the gateway knows them):
what an autoscaling runtime samples."""


class Runtime(Protocol):
    def set_listener(self, listener: ReadyListener) -> None: ...

    async def apply(self, plan: DeploymentPlan) -> None:
        """Bring the deployment to ``plan``; returns once all its instances are ready.

        Raises ``DeploymentFailed`` when an instance cannot become ready (the instances of
        the previous plan, if any, keep serving).
        """
        ...

    async def remove(self, key: DeploymentKey) -> None:
        """Drain and stop every instance of the deployment."""
        ...

    def deployments(self) -> list[DeploymentKey]:
        """The deployments this runtime runs (applied and not removed)."""
        ...

    def instances(self, key: DeploymentKey) -> list[InstanceState]: ...

    def scaling(self, key: DeploymentKey) -> ScalingStatus | None:
        """An autoscaled deployment's current count and scaling events; None when not autoscaled."""
        ...

    def logs(self, key: DeploymentKey, lines: int) -> list[str]:
        """The last ``lines`` lines of the deployment's instance logs (console and access log)."""
        ...

    async def close(self) -> None:
        """Stop every instance (the server is shutting down)."""
        ...
