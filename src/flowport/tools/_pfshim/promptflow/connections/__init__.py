"""``promptflow.connections``: flowport's connection classes under prompt flow's names."""

from flowport.connections import (
    AzureOpenAIConnection,
    CustomConnection,
    OpenAIConnection,
    ServerlessConnection,
)

__all__ = ["AzureOpenAIConnection", "CustomConnection", "OpenAIConnection", "ServerlessConnection"]
