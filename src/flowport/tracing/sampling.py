"""Which traces are recorded: all of them at a modest rate, and the ones worth a look at any rate.

A trace that starts in this process (no caller's ``traceparent``) is recorded while the rate
allows: ``per_second`` traces a second, in bursts of as many (a token bucket). Past that, a
request is recorded only if it ends badly: failed, or slow (more than ``SLOW_FACTOR`` times the
recent mean of its kind), its spans then made after the fact (``Span.end``, ``engine/spans.py``).
A trace a caller continues follows the caller's sampled flag (the gateway's decision reaches its
instances this way). Recording costs about as much as a line of a small Python flow; deciding
costs well under a microsecond (docs/traces.md).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

RATE_ENV = "FLOWPORT_TRACE_RATE"
"""Traces a second each process records in full; ``all`` for every one."""
OTEL_SAMPLER_ENV = "OTEL_TRACES_SAMPLER"
OTEL_SAMPLER_ARG_ENV = "OTEL_TRACES_SAMPLER_ARG"
DEFAULT_RATE = 10.0
SLOW_FACTOR = 4.0
"""A span is slow when it lasts more than this many times the recent mean of spans of its name."""
_WEIGHT = 0.05
"""The weight of the newest duration in the running mean."""
_WARM = 20
"""Durations seen before a span of that name can be judged slow."""
_ALL = frozenset({"always_on", "parentbased_always_on"})
_NONE = frozenset({"always_off", "parentbased_always_off"})
_RATIO = frozenset({"traceidratio", "parentbased_traceidratio"})


class Sampler:
    """The decision for a trace that starts here (``root``), and whether an unsampled span that
    ended is slow (``slow``). ``per_second`` None: every trace; ``ratio``: a share of trace ids."""

    __slots__ = ("_capacity", "_clock", "_last", "_means", "_tokens", "per_second", "ratio")

    def __init__(
        self,
        per_second: float | None = None,
        ratio: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.per_second = per_second
        self.ratio = ratio
        self._clock = clock
        self._tokens = self._capacity = max(per_second or 0.0, 1.0) if per_second else 0.0
        """The bucket holds a second's worth, at least one trace (a rate under 1 still records)."""
        self._last = clock()
        self._means: dict[str, tuple[float, int]] = {}

    def root(self, trace_id: int) -> bool:
        """Whether a trace that starts here is recorded."""
        if self.ratio is not None:
            return (trace_id & 0xFFFFFFFFFFFFFFFF) < self.ratio * 2**64
        rate = self.per_second
        if rate is None:
            return True
        now = self._clock()
        tokens = min(self._capacity, self._tokens + (now - self._last) * rate)
        self._last = now
        if tokens >= 1.0:
            self._tokens = tokens - 1.0
            return True
        self._tokens = tokens
        return False

    def slow(self, name: str, duration_ns: int) -> bool:
        """Whether an unsampled span of ``name`` that lasted ``duration_ns`` is kept as slow."""
        mean, seen = self._means.get(name, (float(duration_ns), 0))
        self._means[name] = (mean + (duration_ns - mean) * _WEIGHT, seen + 1)
        return seen >= _WARM and duration_ns > SLOW_FACTOR * mean

    def describe(self) -> str:
        """What is recorded, for the process's log."""
        if self.ratio is not None:
            return f"{self.ratio:g} of traces"
        if self.per_second is None:
            return "every trace"
        return f"up to {self.per_second:g} traces a second"


def sampler_from(environ: Mapping[str, str]) -> tuple[Sampler, str | None]:
    """The sampler the environment asks for, and a note when a setting was not understood.

    ``FLOWPORT_TRACE_RATE`` (a number, or ``all``) wins; else OpenTelemetry's
    ``OTEL_TRACES_SAMPLER`` (``always_on``, ``always_off``, ``traceidratio`` with
    ``OTEL_TRACES_SAMPLER_ARG``, and their ``parentbased_`` forms); else ``DEFAULT_RATE``."""
    rate = environ.get(RATE_ENV, "").strip().lower()
    if rate:
        if rate in {"all", "always_on"}:
            return Sampler(), None
        try:
            value = float(rate)
        except ValueError:
            value = -1.0
        if value >= 0:
            return Sampler(value), None
        return Sampler(DEFAULT_RATE), (
            f"{RATE_ENV}={rate!r} is not a number of traces a second (or 'all'); using {DEFAULT_RATE:g}"
        )
    name = environ.get(OTEL_SAMPLER_ENV, "").strip().lower()
    if not name:
        return Sampler(DEFAULT_RATE), None
    if name in _ALL:
        return Sampler(), None
    if name in _NONE:
        return Sampler(0.0), None
    if name in _RATIO:
        try:
            ratio = float(environ.get(OTEL_SAMPLER_ARG_ENV, "1"))
        except ValueError:
            ratio = -1.0
        if 0.0 <= ratio <= 1.0:
            return Sampler(ratio=ratio), None
        return Sampler(DEFAULT_RATE), (
            f"{OTEL_SAMPLER_ARG_ENV} must be a ratio between 0 and 1 for {name}; "
            f"using {DEFAULT_RATE:g} traces a second"
        )
    return Sampler(DEFAULT_RATE), (
        f"{OTEL_SAMPLER_ENV}={name!r} is not one flowport knows (always_on, always_off, traceidratio "
        f"and their parentbased_ forms); using {DEFAULT_RATE:g} traces a second"
    )
