"""LLM token counts of a deployment, read from its instances' ``/metrics`` (for the studio)."""

from __future__ import annotations

import re

import httpx

_TOKENS = re.compile(r"^flowport_llm_tokens_total\{(?P<labels>[^}]*)\}\s+(?P<value>[0-9.eE+-]+)$")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def parse_tokens(text: str) -> dict[str, float]:
    """``{"prompt": n, "completion": n}`` summed over connections and models."""
    totals = {"prompt": 0.0, "completion": 0.0}
    for line in text.splitlines():
        match = _TOKENS.match(line)
        if match:
            labels = dict(_LABEL.findall(match["labels"]))
            kind = labels.get("type", "")
            totals[kind] = totals.get(kind, 0.0) + float(match["value"])
    return totals


async def instance_metrics(address: str) -> str:
    """One instance's Prometheus text; empty when it does not answer."""
    if address.startswith("unix:"):
        transport = httpx.AsyncHTTPTransport(uds=address[len("unix:") :])
        base = "http://instance"
    else:
        transport, base = httpx.AsyncHTTPTransport(), address
    try:
        async with httpx.AsyncClient(transport=transport, base_url=base, timeout=2) as client:
            response = await client.get("/metrics")
            return response.text if response.status_code == 200 else ""
    except httpx.HTTPError:
        return ""


async def deployment_tokens(addresses: list[str]) -> dict[str, float]:
    """Tokens used since each ready instance started, summed over the instances."""
    totals = {"prompt": 0.0, "completion": 0.0}
    for address in addresses:
        for kind, value in parse_tokens(await instance_metrics(address)).items():
            totals[kind] = totals.get(kind, 0.0) + value
    return totals
