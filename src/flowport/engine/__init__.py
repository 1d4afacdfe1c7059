"""Executing flows: one line, a single node, or a bulk run over JSONL."""

from flowport.engine.errors import ExecutionError
from flowport.engine.executor import FlowExecutor, LineResult
from flowport.engine.flex import FlexExecutor, load_executor, parse_init
from flowport.engine.records import LineRun, NodeRun, Status
from flowport.engine.streams import NodeStream

__all__ = [
    "ExecutionError",
    "FlexExecutor",
    "FlowExecutor",
    "LineResult",
    "LineRun",
    "NodeRun",
    "NodeStream",
    "Status",
    "load_executor",
    "parse_init",
]
