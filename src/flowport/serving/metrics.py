"""Prometheus metrics of one instance, in a registry of its own."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from flowport.engine import LineRun

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)

CONTENT_TYPE = CONTENT_TYPE_LATEST


class InstanceMetrics:
    def __init__(self, node_labels: dict[str, tuple[str, str]]) -> None:
        """``node_labels``: for each LLM node, its (connection, model) labels."""
        self.registry = CollectorRegistry()
        self.node_labels = node_labels
        self.requests = Counter(
            "flowport_requests", "Requests by route and status", ["route", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "flowport_request_seconds",
            "Request latency: 'first' byte and 'last' byte (they differ for streams)",
            ["route", "phase"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.in_flight = Gauge("flowport_in_flight", "Requests being answered", registry=self.registry)
        self.node_latency = Histogram(
            "flowport_node_seconds",
            "Node run time",
            ["node"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.tokens = Counter(
            "flowport_llm_tokens",
            "LLM tokens by connection, model and type (prompt, completion)",
            ["connection", "model", "type"],
            registry=self.registry,
        )
        self.errors = Counter("flowport_errors", "Errors by code", ["code"], registry=self.registry)
        self._children: dict[tuple[str, ...], Any] = {}

    def child(self, metric: Any, *labels: str) -> Any:
        """A labelled child, looked up once: ``labels()`` costs microseconds on the hot path."""
        key = (metric._name, *labels)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*labels)
        return found

    def observe_run(self, run: LineRun) -> None:
        for node_run in run.node_runs.values():
            if node_run.duration is not None:
                self.child(self.node_latency, node_run.node).observe(node_run.duration)
            labels = self.node_labels.get(node_run.node)
            usage = node_run.usage
            if labels and usage.total_tokens:
                self.child(self.tokens, *labels, "prompt").inc(usage.prompt_tokens)
                self.child(self.tokens, *labels, "completion").inc(usage.completion_tokens)

    def render(self) -> bytes:
        return generate_latest(self.registry)
