"""prompt flow's model configurations (``promptflow.core.OpenAIModelConfiguration`` and the Azure
one): where to reach a model, given inline or by a connection's name."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from flowport.connections.types import Connection


class ModelConfigError(ValueError):
    """A model configuration that cannot be built (both inline fields and a connection, ...)."""


@dataclass
class OpenAIModelConfiguration:
    model: str
    base_url: str | None = None
    api_key: str | None = None
    organization: str | None = None
    connection: str | None = None

    def __post_init__(self) -> None:
        if self.connection and any([self.base_url, self.api_key, self.organization]):
            raise ModelConfigError("Cannot configure model config and connection at the same time.")

    @classmethod
    def from_connection(cls, connection: Connection, model: str) -> OpenAIModelConfiguration:
        return cls(
            model=model,
            base_url=getattr(connection, "base_url", None),
            api_key=getattr(connection, "api_key", None),
            organization=getattr(connection, "organization", None),
        )


@dataclass
class AzureOpenAIModelConfiguration:
    azure_deployment: str
    azure_endpoint: str | None = None
    api_version: str | None = None
    api_key: str | None = None
    connection: str | None = None

    def __post_init__(self) -> None:
        if self.connection and any([self.azure_endpoint, self.api_key, self.api_version]):
            raise ModelConfigError("Cannot configure model config and connection at the same time.")

    @classmethod
    def from_connection(cls, connection: Connection, azure_deployment: str) -> AzureOpenAIModelConfiguration:
        return cls(
            azure_deployment=azure_deployment,
            azure_endpoint=getattr(connection, "api_base", None),
            api_version=getattr(connection, "api_version", None),
            api_key=getattr(connection, "api_key", None),
        )


MODEL_CONFIGURATIONS = {c.__name__: c for c in (OpenAIModelConfiguration, AzureOpenAIModelConfiguration)}


def build_model_config(kind: type, values: Mapping[str, Any], connections: Mapping[str, Connection]) -> Any:
    """``kind`` (either class, or prompt flow's own of the same name) from a dict; a ``connection``
    name in it is replaced by that connection's endpoint and key, as prompt flow does."""
    values = dict(values)
    name = values.pop("connection", None)
    known = {f.name for f in fields(MODEL_CONFIGURATIONS[kind.__name__])}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ModelConfigError(f"{kind.__name__} has no field(s) {', '.join(unknown)}")
    if name:
        connection = connections[name]  # KeyError: the caller names the missing connection
        built = MODEL_CONFIGURATIONS[kind.__name__].from_connection(connection, **values)
        return kind(**{f.name: getattr(built, f.name) for f in fields(built)})
    return kind(**values)
