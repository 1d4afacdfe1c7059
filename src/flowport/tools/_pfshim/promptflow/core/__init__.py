"""``promptflow.core`` as flows use it: ``tool``, ``log_metric``, model configurations, ``Prompty``."""

from flowport.connections.model_config import AzureOpenAIModelConfiguration, OpenAIModelConfiguration
from flowport.tools.decorator import ToolProvider, tool
from flowport.tools.metrics import log_metric
from promptflow.core._prompty import AsyncPrompty, Prompty

__all__ = [
    "AsyncPrompty",
    "AzureOpenAIModelConfiguration",
    "OpenAIModelConfiguration",
    "Prompty",
    "ToolProvider",
    "log_metric",
    "tool",
]
