"""``promptflow.core`` as flows use it: ``tool`` and ``log_metric``."""

from flowport.connections.model_config import AzureOpenAIModelConfiguration, OpenAIModelConfiguration
from flowport.tools.decorator import tool
from flowport.tools.metrics import log_metric

__all__ = ["AzureOpenAIModelConfiguration", "OpenAIModelConfiguration", "log_metric", "tool"]
