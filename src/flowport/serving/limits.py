"""The instance's concurrency limit: a short, bounded wait, then a clear refusal."""

from __future__ import annotations

import asyncio


class Overloaded(Exception):
    """No slot freed up within the queue wait."""


class ConcurrencyLimit:
    """At most ``limit`` holders at once; others wait up to ``max_wait`` seconds, in order."""

    def __init__(self, limit: int, max_wait: float) -> None:
        self.limit = limit
        self.max_wait = max_wait
        self._semaphore = asyncio.Semaphore(limit)
        self.in_flight = 0

    async def __aenter__(self) -> None:
        if self._semaphore.locked():
            try:
                async with asyncio.timeout(self.max_wait):
                    await self._semaphore.acquire()
            except TimeoutError:
                raise Overloaded from None
        else:
            await self._semaphore.acquire()
        self.in_flight += 1

    async def __aexit__(self, *exc_info: object) -> None:
        self.in_flight -= 1
        self._semaphore.release()
