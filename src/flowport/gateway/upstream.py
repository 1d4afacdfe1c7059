"""The ready instances of one deployment, each with its pooled keep-alive connections.

The gateway picks the instance with the fewest outstanding requests (ties at random). An
address withdrawn by ``set_instances`` is never picked again; its connections close once its
last outstanding request is done.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterable, Sequence

from flowport.transport import HTTP11Transport

FAILURE_PENALTY_SECONDS = 1.0
"""After a failed connect an instance is avoided this long, unless it is the only one."""


class Upstream:
    """One instance address: its pooled connections and how many requests it is answering now."""

    __slots__ = ("address", "closed", "failed_until", "outstanding", "retired", "transport")

    def __init__(self, address: str, fixed_headers: Sequence[tuple[bytes, bytes]] = ()) -> None:
        self.address = address
        self.transport = HTTP11Transport(address, fixed_headers=fixed_headers)
        self.outstanding = 0
        self.retired = False
        self.closed = False
        self.failed_until = 0.0

    def mark_failed(self) -> None:
        self.failed_until = time.monotonic() + FAILURE_PENALTY_SECONDS

    def __repr__(self) -> str:
        return f"Upstream({self.address!r}, outstanding={self.outstanding})"


class InstancePool:
    """The ready instances of one deployment.

    ``update`` may run on any thread: it swaps an immutable tuple that ``choose`` reads.
    Retired upstreams go to ``on_idle`` as soon as nothing is outstanding; it closes them on the
    event loop after checking again that nothing is outstanding (a request may just have picked one).
    """

    def __init__(
        self, on_idle: Callable[[Upstream], None], factory: Callable[[str], Upstream] = Upstream
    ) -> None:
        self.active: tuple[Upstream, ...] = ()
        self.on_idle = on_idle
        self.factory = factory

    def update(self, addresses: Iterable[str]) -> None:
        wanted = list(dict.fromkeys(addresses))
        current = {upstream.address: upstream for upstream in self.active}
        self.active = tuple(current.get(address) or self.factory(address) for address in wanted)
        for address, upstream in current.items():
            if address not in wanted:
                self.retire(upstream)

    def retire_all(self) -> None:
        active, self.active = self.active, ()
        for upstream in active:
            self.retire(upstream)

    def retire(self, upstream: Upstream) -> None:
        upstream.retired = True
        if upstream.outstanding == 0:
            self.on_idle(upstream)

    def choose(self, avoid: Upstream | None = None) -> Upstream | None:
        """The least busy instance, preferring ones that did not just fail and are not ``avoid``."""
        active = self.active
        if len(active) <= 1:
            return active[0] if active else None
        now = time.monotonic()
        candidates = [u for u in active if u is not avoid and u.failed_until <= now]
        if not candidates:
            candidates = [u for u in active if u is not avoid] or list(active)
        fewest = min(u.outstanding for u in candidates)
        return random.choice([u for u in candidates if u.outstanding == fewest])

    def acquire(self, upstream: Upstream) -> None:
        upstream.outstanding += 1

    def release(self, upstream: Upstream) -> None:
        upstream.outstanding -= 1
        if upstream.retired and upstream.outstanding == 0:
            self.on_idle(upstream)
