"""flowport's stand-in for the parts of prompt flow that flows import.

On sys.path only when the real ``promptflow`` is not installed.
"""

from flowport.tools.decorator import ToolProvider, tool
from flowport.tools.metrics import log_metric

__all__ = ["ToolProvider", "log_metric", "tool"]
