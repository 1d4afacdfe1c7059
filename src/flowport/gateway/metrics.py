"""Endpoint-level Prometheus metrics of the gateway, in a registry of its own.

Labels name only endpoints and deployments the control plane published: a request for an
unknown name counts under ``endpoint="<unknown>"``, so no caller can add series, and a
withdrawn endpoint or deployment takes its series with it.
"""

from __future__ import annotations

import contextlib

from prometheus_client import Counter, Gauge, Histogram

from flowport.metrics import CONTENT_TYPE, LATENCY_BUCKETS, Metrics

__all__ = ["CONTENT_TYPE", "UNKNOWN", "GatewayMetrics"]

UNKNOWN = "<unknown>"
"""The endpoint label of requests for names the gateway does not serve."""


class GatewayMetrics(Metrics):
    def __init__(self) -> None:
        super().__init__()
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
            buckets=LATENCY_BUCKETS,
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
        self.compare_recorded = Counter(
            "flowport_gateway_compare_pairs",
            "Pairs of answers (a request's primary and a mirror) recorded for comparison",
            registry=self.registry,
        )
        self.compare_dropped = Counter(
            "flowport_gateway_compare_dropped",
            "Pairs of answers not recorded, by reason (queue_full, pending_full, error)",
            ["reason"],
            registry=self.registry,
        )
        self.trace_dropped = Counter(
            "flowport_gateway_trace_spans_dropped",
            "Finished trace spans dropped: the export queue was full or an export failed",
            registry=self.registry,
        )
        self.collection_written = Counter(
            "flowport_gateway_data_collection_written",
            "Data collection records written",
            registry=self.registry,
        )

    def forget(self, endpoint: str, deployment: str | None = None) -> None:
        """Drop the series of a withdrawn endpoint, or of one of its deployments."""
        by_name = {
            m._name: m for m in (self.requests, self.latency, self.in_flight, self.retries, self.mirrored)
        }
        for key in list(self._children):
            if key[0] not in by_name or key[1] != endpoint:
                continue
            if deployment is not None and key[2] != deployment:
                continue
            self._children.pop(key, None)
            with contextlib.suppress(KeyError):
                by_name[key[0]].remove(*key[1:])
