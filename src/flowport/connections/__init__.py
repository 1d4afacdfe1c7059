"""Connections: types, YAML, environment overrides and encrypted storage."""

from flowport.connections.crypto import Cipher, load_or_create_key
from flowport.connections.service import (
    ConnectionNotFound,
    ConnectionResolver,
    ConnectionService,
    ConnectionSource,
    StaticConnections,
    connection_row,
)
from flowport.connections.spec import (
    apply_env_overrides,
    apply_set,
    connection_from_spec,
    connection_template,
)
from flowport.connections.types import (
    SCRUBBED,
    AzureOpenAIConnection,
    Connection,
    ConnectionSpecError,
    CustomConnection,
    OpenAIConnection,
    ServerlessConnection,
    build_connection,
)

__all__ = [
    "SCRUBBED",
    "AzureOpenAIConnection",
    "Cipher",
    "Connection",
    "ConnectionNotFound",
    "ConnectionResolver",
    "ConnectionService",
    "ConnectionSource",
    "ConnectionSpecError",
    "CustomConnection",
    "OpenAIConnection",
    "ServerlessConnection",
    "StaticConnections",
    "apply_env_overrides",
    "apply_set",
    "build_connection",
    "connection_from_spec",
    "connection_row",
    "connection_template",
    "load_or_create_key",
]
