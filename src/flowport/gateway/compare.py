"""Side-by-side answers of mirrored traffic: what the primary and its mirror said to one request.

The request path only notes which sides to wait for (``expect``) and hands over each side's raw
answer as it ends (``answered``); nothing is parsed there. When every side of a request has
answered, the pair goes on a bounded queue; one background thread parses, compares, scrubs
secrets and keeps it in a ring per endpoint, bounded in count and bytes. A full queue, too
many pending requests or a failed parse drops the pair and counts it: recording never slows or
fails a live answer. The ring lives in the gateway's memory (a restart empties it); the
control plane reads reports through the data plane's private API.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

from flowport.gateway.background import Background
from flowport.gateway.collector import parse_events, parse_json
from flowport.scrub import scrub_json

MAX_PAIRS = 500
"""Pairs kept per endpoint (the oldest go first)."""
MAX_BYTES = 4 * 1024 * 1024
"""Bytes of stored pairs kept per endpoint (the oldest go first)."""
MAX_STORED_BYTES = 16 * 1024
"""Of each request and answer, at most this much JSON text is stored; longer ones are cut
(after they were compared whole: an answer is captured up to 1 MiB)."""
SHOWN_CHARS = 2000
"""Of each answer of a differing pair in a report, at most this many characters."""
SHOWN_PAIRS = 50
"""Differing pairs listed in a report (the most recent)."""
QUEUE_SIZE = 1000
MAX_PENDING = 2000
"""Requests whose sides have not all answered yet; past this the oldest is dropped."""


@dataclass(slots=True)
class Side:
    """One deployment's answer, raw, as the request path leaves it."""

    deployment: str
    status: int
    latency_ms: float
    body: bytes
    events: bool = False
    truncated: bool = False


@dataclass(slots=True)
class Pending:
    endpoint: str
    primary: str
    mirrors: set[str]
    request_id: str
    time: float
    request: bytes
    secrets: tuple[str, ...]
    sides: dict[str, Side] = field(default_factory=dict)

    def complete(self) -> bool:
        return self.primary in self.sides and all(name in self.sides for name in self.mirrors)


def _stored(value: Any) -> tuple[Any, bool]:
    """``value`` as kept: itself, or its JSON text cut to ``MAX_STORED_BYTES``."""
    text = orjson.dumps(value)
    if len(text) <= MAX_STORED_BYTES:
        return value, False
    return text[:MAX_STORED_BYTES].decode("utf-8", "ignore"), True


def _tokens(answer: Any) -> int | None:
    """``usage.total_tokens`` of an answer (chat completions), or of the last event that has it."""
    for value in reversed(answer) if isinstance(answer, list) else (answer,):
        usage = value.get("usage") if isinstance(value, dict) else None
        if isinstance(usage, dict) and isinstance(usage.get("total_tokens"), int):
            return int(usage["total_tokens"])
    return None


def same_json(a: Any, b: Any) -> bool:
    """Equal as JSON values: ``true`` is not ``1``, ``1`` is not ``1.0`` (Python's ``==`` says they are)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same_json(v, b[k]) for k, v in a.items())
    if isinstance(a, list):
        return len(a) == len(b) and all(same_json(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def field_agreement(a: Any, b: Any) -> dict[str, bool]:
    """For two JSON objects, whether each output field (of either) is equal; {} otherwise."""
    if not isinstance(a, dict) or not isinstance(b, dict):
        return {}
    return {name: name in a and name in b and same_json(a[name], b[name]) for name in dict.fromkeys([*a, *b])}


def _pair(pending: Pending, mirror: str) -> dict[str, Any]:
    """The stored form of the primary's and one mirror's answers: compared, then scrubbed."""
    answers = {}
    sides = {}
    for name in (pending.primary, mirror):
        side = pending.sides[name]
        answer = parse_events(side.body) if side.events else parse_json(side.body) if side.body else None
        answers[name] = answer
        kept, cut = _stored(scrub_json(answer, pending.secrets))
        sides[name] = {
            "deployment": name,
            "status": side.status,
            "latency_ms": round(side.latency_ms, 3),
            "tokens": _tokens(answer),
            "answer": kept,
            "truncated": side.truncated or cut,
        }
    a, b = answers[pending.primary], answers[mirror]
    statuses_equal = sides[pending.primary]["status"] == sides[mirror]["status"]
    fields = field_agreement(a, b) if statuses_equal else {}
    complete = not pending.sides[pending.primary].truncated and not pending.sides[mirror].truncated
    request, request_cut = _stored(scrub_json(parse_json(pending.request), pending.secrets))
    return {
        "request_id": pending.request_id,
        "time": pending.time,
        "request": request,
        "request_truncated": request_cut,
        "primary": sides[pending.primary],
        "mirror": sides[mirror],
        "agree": statuses_equal and complete and same_json(a, b),
        "fields": fields,
    }


class Comparisons(Background[Pending]):
    """Pairs of answers of mirrored requests, per endpoint; see the module's docstring."""

    thread_name = "flowport-compare"

    def __init__(
        self,
        on_drop: Callable[[str], None] = lambda reason: None,
        on_recorded: Callable[[], None] = lambda: None,
        max_pairs: int = MAX_PAIRS,
        max_bytes: int = MAX_BYTES,
        queue_size: int = QUEUE_SIZE,
    ) -> None:
        super().__init__(on_drop, queue_size)
        self.on_recorded = on_recorded
        self.max_pairs = max_pairs
        self.max_bytes = max_bytes
        self._pending: OrderedDict[int, Pending] = OrderedDict()
        self._tickets = itertools.count(1)
        self._rings: dict[str, deque[tuple[dict[str, Any], int]]] = {}
        self._sizes: dict[str, int] = {}
        self._rings_lock = threading.Lock()

    # -- the request path (the gateway's event loop) ------------------------------------------

    def expect(
        self,
        endpoint: str,
        primary: str,
        mirrors: Iterable[str],
        request_id: str,
        request: bytes,
        secrets: tuple[str, ...],
    ) -> int:
        """Wait for ``primary``'s and each mirror's answer to this request; a ticket for them."""
        ticket = next(self._tickets)
        if len(request) > 2 * MAX_STORED_BYTES:  # only the start is ever stored: hold no more
            request = request[: 2 * MAX_STORED_BYTES]
        if len(self._pending) >= MAX_PENDING:
            self._pending.popitem(last=False)
            self.on_drop("pending_full")
        self._pending[ticket] = Pending(
            endpoint, primary, set(mirrors), request_id, time.time(), request, secrets
        )
        return ticket

    def cancel(self, ticket: int | None) -> None:
        """The primary gave no answer of its own (refused or failed): nothing to compare."""
        if ticket is not None:
            self._pending.pop(ticket, None)

    def answered(self, ticket: int, side: Side) -> None:
        """One side's answer is over; the pair is queued once every side has answered."""
        pending = self._pending.get(ticket)
        if pending is None:
            return
        pending.sides[side.deployment] = side
        if side.deployment != pending.primary and side.status == 0:  # the copy was never sent
            pending.mirrors.discard(side.deployment)
            pending.sides.pop(side.deployment)
        if not pending.complete():
            return
        del self._pending[ticket]
        if pending.mirrors:
            self.submit(pending)

    # -- the background thread ----------------------------------------------------------------

    def _handle(self, items: list[Pending]) -> None:
        for pending in items:
            for mirror in sorted(pending.mirrors):
                try:
                    pair = _pair(pending, mirror)
                    size = len(orjson.dumps(pair))
                except Exception:  # an answer that cannot be kept is dropped, never raised
                    self.on_drop("error")
                    continue
                self._keep(pending.endpoint, pair, size)
                self.on_recorded()

    def _keep(self, endpoint: str, pair: dict[str, Any], size: int) -> None:
        with self._rings_lock:
            ring = self._rings.setdefault(endpoint, deque())
            ring.append((pair, size))
            total = self._sizes.get(endpoint, 0) + size
            while len(ring) > self.max_pairs or (total > self.max_bytes and len(ring) > 1):
                total -= ring.popleft()[1]
            self._sizes[endpoint] = total

    # -- reading --------------------------------------------------------------------------------

    def pairs(self, endpoint: str) -> list[dict[str, Any]]:
        """The stored pairs of ``endpoint``, oldest first."""
        with self._rings_lock:
            return [pair for pair, _ in self._rings.get(endpoint, ())]

    def stored_bytes(self, endpoint: str) -> int:
        with self._rings_lock:
            return self._sizes.get(endpoint, 0)

    def forget(self, endpoint: str) -> None:
        """The endpoint was withdrawn: its pairs go with it."""
        with self._rings_lock:
            self._rings.pop(endpoint, None)
            self._sizes.pop(endpoint, None)


def _percentile(values: list[float], share: float) -> float | None:
    """Nearest-rank percentile of ``values``; None when there are none."""
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[max(0, min(len(ordered) - 1, int(-(-share * len(ordered) // 1)) - 1))], 3)


def _shown(value: Any) -> Any:
    text = orjson.dumps(value).decode()
    return value if len(text) <= SHOWN_CHARS else text[:SHOWN_CHARS] + "…"


def report(
    endpoint: str, pairs: list[dict[str, Any]], a: str, b: str, shown: int = SHOWN_PAIRS
) -> dict[str, Any]:
    """Agreement, latency and token deltas of ``a``'s and ``b``'s answers to the same requests.

    Uses the pairs where one of the two served the request and the other was its mirror.
    """
    oriented = []
    for pair in pairs:
        names = (pair["primary"]["deployment"], pair["mirror"]["deployment"])
        if names == (a, b):
            oriented.append((pair, pair["primary"], pair["mirror"]))
        elif names == (b, a):
            oriented.append((pair, pair["mirror"], pair["primary"]))
    agreed = sum(1 for pair, _, _ in oriented if pair["agree"])
    field_counts: dict[str, list[int]] = {}
    for pair, _, _ in oriented:
        for name, same in pair["fields"].items():
            counts = field_counts.setdefault(name, [0, 0])
            counts[0] += int(same)
            counts[1] += 1
    latency: dict[str, Any] = {}
    for name, index in ((a, 1), (b, 2)):
        values = [sides[index]["latency_ms"] for sides in oriented]
        latency[name] = {"p50": _percentile(values, 0.5), "p95": _percentile(values, 0.95)}
    latency["delta"] = {
        q: None if latency[a][q] is None else round(latency[b][q] - latency[a][q], 3) for q in ("p50", "p95")
    }
    with_tokens = [
        (x["tokens"], y["tokens"])
        for _, x, y in oriented
        if x["tokens"] is not None and y["tokens"] is not None
    ]
    tokens = None
    if with_tokens:
        total_a, total_b = sum(t for t, _ in with_tokens), sum(t for _, t in with_tokens)
        tokens = {
            "pairs": len(with_tokens),
            a: {"total": total_a, "mean": round(total_a / len(with_tokens), 3)},
            b: {"total": total_b, "mean": round(total_b / len(with_tokens), 3)},
            "delta": {"total": total_b - total_a, "mean": round((total_b - total_a) / len(with_tokens), 3)},
        }
    differing = [
        {
            "request_id": pair["request_id"],
            "time": pair["time"],
            "request": _shown(pair["request"]),
            "fields": sorted(name for name, same in pair["fields"].items() if not same),
            a: {"status": x["status"], "latency_ms": x["latency_ms"], "answer": _shown(x["answer"])},
            b: {"status": y["status"], "latency_ms": y["latency_ms"], "answer": _shown(y["answer"])},
        }
        for pair, x, y in oriented
        if not pair["agree"]
    ]
    count = len(oriented)
    return {
        "endpoint": endpoint,
        "deployments": [a, b],
        "pairs": count,
        "agreed": agreed,
        "agreement_rate": round(agreed / count, 4) if count else None,
        "field_agreement": {name: round(same / total, 4) for name, (same, total) in field_counts.items()},
        "latency_ms": latency,
        "tokens": tokens,
        "differing_count": len(differing),
        "differing": differing[-shown:][::-1],
    }
