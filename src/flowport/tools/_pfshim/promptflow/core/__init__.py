"""``promptflow.core`` as flows use it: ``tool`` and ``log_metric``."""

from flowport.tools.decorator import tool
from flowport.tools.metrics import log_metric

__all__ = ["log_metric", "tool"]
