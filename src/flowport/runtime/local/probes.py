"""HTTP probes of one instance over its Unix socket."""

from __future__ import annotations

import httpx


class InstanceClient:
    """Asks an instance's ``/health`` or ``/ready`` whether it answers 200 in time."""

    def __init__(self, socket: str) -> None:
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
