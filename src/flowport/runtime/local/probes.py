"""HTTP probes of one instance, over its Unix socket or (a cluster's instance) its URL."""

from __future__ import annotations

import httpx


class InstanceClient:
    """Asks an instance's ``/health`` or ``/ready`` whether it answers 200 in time."""

    def __init__(self, socket: str = "", url: str = "", headers: dict[str, str] | None = None) -> None:
        if url:
            self._client = httpx.AsyncClient(base_url=url, trust_env=False, headers=headers)
        else:
            self._client = httpx.AsyncClient(
                transport=httpx.AsyncHTTPTransport(uds=socket), base_url="http://instance"
            )

    async def ok(self, path: str, timeout: float) -> bool:
        try:
            response = await self._client.get(path, timeout=timeout)
        except (httpx.HTTPError, OSError):
            return False
        return response.status_code == 200

    async def aclose(self) -> None:
        await self._client.aclose()
