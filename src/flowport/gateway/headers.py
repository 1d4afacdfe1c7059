"""Which headers cross the gateway: end-to-end ones do; hop-by-hop ones, host and credentials don't."""

from __future__ import annotations

from flowport import instance_keys

HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)
_NOT_FORWARDED = HOP_BY_HOP | {b"host", b"authorization", b"content-length", b"expect", instance_keys.HEADER}
_NOT_RETURNED = HOP_BY_HOP | {b"date", b"server", b"x-request-id", b"azureml-model-deployment"}
"""The gateway's server writes its own date and server; request id and deployment are the gateway's."""

_IDS = frozenset({b"x-request-id", b"x-ms-client-request-id"})
"""Replaced by the ids the gateway accepted (``flowport.request_ids``)."""
_NOT_FORWARDED_OR_IDS = _NOT_FORWARDED | _IDS

PIN_HEADERS = (b"azureml-model-deployment", b"flowport-model-deployment")
TRACEPARENT = b"traceparent"

Headers = list[tuple[bytes, bytes]]


def _connection_tokens(value: bytes) -> set[bytes]:
    """Headers named in ``Connection`` are hop-by-hop too."""
    return {token.strip().lower() for token in value.split(b",")}


def _kept(raw: Headers, dropped: frozenset[bytes], traceparent: str | None) -> Headers:
    """``raw`` without the ``dropped`` names, those that ``Connection`` names and, when the gateway
    sets its own, ``traceparent``: one pass, each name lowered once (most requests have no
    ``Connection`` header; the pairs it names are taken out after)."""
    out: Headers = []
    named: set[bytes] | None = None
    for pair in raw:
        lower = pair[0].lower()
        if lower in dropped:
            if lower == b"connection":
                named = _connection_tokens(pair[1]) | (named or set())
            continue
        if traceparent and lower == TRACEPARENT:
            continue
        out.append(pair)
    if named:
        out = [pair for pair in out if pair[0].lower() not in named]
    return out


def upstream_headers(
    raw: Headers, request_id: str, client_id: str | None = None, traceparent: str | None = None
) -> Headers:
    """The request headers an instance gets, with the request ids the gateway accepted and,
    while the gateway traces, its span's ``traceparent`` in place of the client's."""
    out = _kept(raw, _NOT_FORWARDED_OR_IDS, traceparent)
    out.append((b"x-request-id", request_id.encode("latin-1")))
    if client_id:
        out.append((b"x-ms-client-request-id", client_id.encode("latin-1")))
    if traceparent:
        out.append((TRACEPARENT, traceparent.encode("latin-1")))
    return out


def downstream_headers(
    raw: Headers, request_id: str, deployment: str, traceparent: str | None = None
) -> Headers:
    """The instance's response headers the client gets, plus the request id and the deployment
    (and the gateway span's ``traceparent`` in place of the instance's, while tracing)."""
    out = _kept(raw, _NOT_RETURNED, traceparent)
    out.append((b"x-request-id", request_id.encode("latin-1")))
    out.append((b"azureml-model-deployment", deployment.encode("latin-1")))
    if traceparent:
        out.append((TRACEPARENT, traceparent.encode("latin-1")))
    return out
