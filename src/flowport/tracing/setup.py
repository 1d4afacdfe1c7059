"""Turning tracing on in a process: which exporters, from the standard OpenTelemetry variables.

- ``OTEL_EXPORTER_OTLP_ENDPOINT`` / ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``: OTLP, over HTTP/protobuf
  unless ``OTEL_EXPORTER_OTLP[_TRACES]_PROTOCOL`` is ``grpc`` (which needs the gRPC exporter package).
- ``APPLICATIONINSIGHTS_CONNECTION_STRING``: Azure Monitor, when its exporter package is installed.
- neither: the built-in store (a JSON lines file the server reads), when the caller gives one.

Which traces are recorded: ``sampling.py`` (``FLOWPORT_TRACE_RATE``, ``OTEL_TRACES_SAMPLER``).
``FLOWPORT_TRACING=off`` turns all of it off; ``FLOWPORT_TRACE_CONTENT`` (or OpenTelemetry's
``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT``) keeps inputs, outputs and LLM messages.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from flowport.tracing import spans
from flowport.tracing.export import Exporter, JsonLinesExporter, QueueProcessor, SdkExporter
from flowport.tracing.sampling import Sampler, sampler_from

log = logging.getLogger("flowport.tracing")

TRACING_ENV = "FLOWPORT_TRACING"
CONTENT_ENV = "FLOWPORT_TRACE_CONTENT"
OTEL_CONTENT_ENV = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
AZURE_ENV = "APPLICATIONINSIGHTS_CONNECTION_STRING"
OTLP_ENVS = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
AZURE_PACKAGE = "azure-monitor-opentelemetry-exporter"
_TRUE = frozenset({"1", "true", "yes", "on"})


def _flag(environ: Mapping[str, str], name: str) -> bool:
    return environ.get(name, "").strip().lower() in _TRUE


def tracing_off(environ: Mapping[str, str]) -> bool:
    return environ.get(TRACING_ENV, "").strip().lower() in {"0", "false", "no", "off"}


def wants_content(environ: Mapping[str, str]) -> bool:
    return _flag(environ, CONTENT_ENV) or _flag(environ, OTEL_CONTENT_ENV)


def otlp_configured(environ: Mapping[str, str]) -> bool:
    return any(environ.get(name) for name in OTLP_ENVS)


@dataclass
class Tracing:
    """Tracing as set up in this process; ``shutdown`` exports what is queued."""

    processor: QueueProcessor
    exporters: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def dropped(self) -> int:
        return self.processor.dropped

    def flush(self) -> None:
        self.processor.flush()

    def shutdown(self) -> None:
        """Stop tracing; export what is queued."""
        if spans.STATE.sink == self.processor.on_end:
            spans.install(None)
        self.processor.shutdown()


def _otlp(environ: Mapping[str, str], resource: Any) -> tuple[Any, str]:
    protocol = (
        environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or environ.get("OTEL_EXPORTER_OTLP_PROTOCOL") or ""
    ).strip()
    if protocol == "grpc":
        try:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as Grpc
        except ImportError:
            return None, (
                "OTEL_EXPORTER_OTLP_PROTOCOL is grpc, but the gRPC exporter is not installed "
                "(pip install 'flowport[otlp-grpc]'); traces are not exported"
            )
        return Grpc(), "otlp-grpc"
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as Http

    endpoint = environ.get(OTLP_ENVS[0])
    if not endpoint:
        endpoint = environ[OTLP_ENVS[1]].rstrip("/") + "/v1/traces"
    return Http(endpoint=endpoint), "otlp-http"


def _azure(environ: Mapping[str, str], resource: Any) -> tuple[Any, str]:
    try:
        from azure.monitor.opentelemetry.exporter import AzureMonitorTraceExporter
    except ImportError:
        return None, (
            f"{AZURE_ENV} is set, but {AZURE_PACKAGE} is not installed (pip install 'flowport[azure]'); "
            "traces go to the built-in store instead"
        )
    from opentelemetry.sdk.trace import TracerProvider

    # The exporter reads the resource from a tracer provider (else it logs a traceback per
    # export): one of its own, never installed as the global one.
    provider = TracerProvider(resource=resource, shutdown_on_exit=False)
    try:
        exporter = AzureMonitorTraceExporter(connection_string=environ[AZURE_ENV], tracer_provider=provider)
    except ValueError as exc:  # the package's check of the connection string
        return None, f"{AZURE_ENV} is not valid ({exc}); traces go to the built-in store instead"
    return exporter, "azure-monitor"


def configure(
    service: str,
    environ: Mapping[str, str],
    *,
    resource: Mapping[str, Any] | None = None,
    builtin: BinaryIO | None = None,
    scrub: Callable[[str], str] | None = None,
    on_drop: Callable[[int], None] = lambda count: None,
    force: bool = False,
) -> Tracing | None:
    """Install a tracer for this process, or None when tracing is off or has nowhere to go.

    ``builtin``: the built-in store's file, used when no exporter is configured (or ``force``,
    as ``flow test --trace`` does, which always keeps its own copy and records every trace).
    """
    if tracing_off(environ) and not force:
        return None
    attributes = {"service.name": service, **(resource or {})}
    exporters: list[Exporter] = []
    names: list[str] = []
    notes: list[str] = []
    for wanted, make in ((otlp_configured(environ), _otlp), (bool(environ.get(AZURE_ENV)), _azure)):
        if not wanted:
            continue
        from opentelemetry.sdk.resources import Resource  # only when exporting through the SDK

        sdk_resource = Resource.create(attributes)
        exporter, said = make(environ, sdk_resource)
        if exporter is None:
            notes.append(said)
        else:
            exporters.append(SdkExporter(exporter, sdk_resource, scrub))
            names.append(said)
    if builtin is not None and (not exporters or force):
        exporters.append(JsonLinesExporter(builtin, dict(attributes), scrub))
        names.append("builtin")
    sampler, said = (Sampler(), None) if force else sampler_from(environ)
    if said is not None:
        notes.append(said)
    for note in notes:
        log.warning("tracing: %s", note)
    if not exporters:
        return None
    processor = QueueProcessor(exporters, on_drop)
    processor.start()
    spans.install(processor.on_end, wants_content(environ), sampler)
    log.info("tracing to %s: %s, and every failed or slow one", ", ".join(names), sampler.describe())
    return Tracing(processor, names, notes)
