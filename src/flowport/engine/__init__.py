"""Executing flows: one line, a single node, or a bulk run over JSONL."""

from flowport.engine.errors import ExecutionError
from flowport.engine.executor import FlowExecutor, LineResult
from flowport.engine.flex import FlexExecutor, load_executor
from flowport.engine.flex_init import parse_init
from flowport.engine.records import LineRun, NodeRun, Status
from flowport.engine.streams import NodeStream
from flowport.tools.multimedia import PFBytes, base64_reference, persist_images

__all__ = [
    "ExecutionError",
    "FlexExecutor",
    "FlowExecutor",
    "LineResult",
    "LineRun",
    "NodeRun",
    "NodeStream",
    "PFBytes",
    "Status",
    "base64_reference",
    "load_executor",
    "parse_init",
    "persist_images",
]
