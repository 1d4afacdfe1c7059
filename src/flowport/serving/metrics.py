"""Prometheus metrics of one instance, in a registry of its own."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from flowport.engine import LineRun
from flowport.metrics import CONTENT_TYPE, LATENCY_BUCKETS, Metrics

__all__ = ["CONTENT_TYPE", "InstanceMetrics"]


class InstanceMetrics(Metrics):
    def __init__(self, node_labels: dict[str, tuple[str, str]]) -> None:
        """``node_labels``: for each LLM node, its (connection, model) labels."""
        super().__init__()
        self.node_labels = node_labels
        self.requests = Counter(
            "flowport_requests", "Requests by route and status", ["route", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "flowport_request_seconds",
            "Request latency: 'first' byte and 'last' byte (they differ for streams)",
            ["route", "phase"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.in_flight = Gauge("flowport_in_flight", "Requests being answered", registry=self.registry)
        self.node_latency = Histogram(
            "flowport_node_seconds",
            "Node run time",
            ["node"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.tokens = Counter(
            "flowport_llm_tokens",
            "LLM tokens by connection, model and type (prompt, completion)",
            ["connection", "model", "type"],
            registry=self.registry,
        )
        self.errors = Counter("flowport_errors", "Errors by code", ["code"], registry=self.registry)
        self.trace_dropped = Counter(
            "flowport_trace_spans_dropped",
            "Finished trace spans dropped: the export queue was full or an export failed",
            registry=self.registry,
        )

    def observe_run(self, run: LineRun) -> None:
        for node_run in run.node_runs.values():
            if node_run.duration is not None:
                self.child(self.node_latency, node_run.node).observe(node_run.duration)
            labels = self.node_labels.get(node_run.node)
            usage = node_run.usage
            if labels and usage.total_tokens:
                self.child(self.tokens, *labels, "prompt").inc(usage.prompt_tokens)
                self.child(self.tokens, *labels, "completion").inc(usage.completion_tokens)
