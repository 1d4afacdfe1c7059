"""Endpoint-level Prometheus metrics of the gateway, in a registry of its own."""

from __future__ import annotations

import contextlib
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

CONTENT_TYPE = CONTENT_TYPE_LATEST
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class GatewayMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "flowport_gateway_requests",
            "Requests answered, by endpoint, deployment ('' before one was chosen) and status",
            ["endpoint", "deployment", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "flowport_gateway_request_seconds",
            "Time from the request to the last byte of the answer",
            ["endpoint", "deployment"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "flowport_gateway_in_flight",
            "Requests being answered, by endpoint and deployment",
            ["endpoint", "deployment"],
            registry=self.registry,
        )
        self.retries = Counter(
            "flowport_gateway_upstream_retries",
            "Requests sent to a second instance because the first could not be reached",
            ["endpoint", "deployment"],
            registry=self.registry,
        )
        self.mirrored = Counter(
            "flowport_gateway_mirrored_requests",
            "Copies of requests sent to a mirror deployment, by outcome (ok, error, dropped)",
            ["endpoint", "deployment", "outcome"],
            registry=self.registry,
        )
        self.collection_dropped = Counter(
            "flowport_gateway_data_collection_dropped",
            "Data collection records dropped, by reason (queue_full, write_error)",
            ["reason"],
            registry=self.registry,
        )
        self.collection_written = Counter(
            "flowport_gateway_data_collection_written",
            "Data collection records written",
            registry=self.registry,
        )
        self._children: dict[tuple[str, ...], Any] = {}

    def child(self, metric: Any, *labels: str) -> Any:
        """A labelled child, looked up once: ``labels()`` costs microseconds on the hot path."""
        key = (metric._name, *labels)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*labels)
        return found

    def forget(self, endpoint: str) -> None:
        """Drop the series of a withdrawn endpoint."""
        by_name = {
            m._name: m for m in (self.requests, self.latency, self.in_flight, self.retries, self.mirrored)
        }
        for key in [k for k in list(self._children) if k[0] in by_name and k[1] == endpoint]:
            del self._children[key]
            with contextlib.suppress(KeyError):
                by_name[key[0]].remove(*key[1:])

    def render(self) -> bytes:
        return generate_latest(self.registry)
