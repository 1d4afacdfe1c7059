"""flowport: run prompt flows as real-time online endpoints on your own machines."""

from flowport.tools.decorator import tool
from flowport.tools.metrics import log_metric

__all__ = ["log_metric", "tool"]
__version__ = "0.1.0"
