"""
Whether the shared Redis is usable, as the shared operations find it.

Every shared operation reports its outcome here.  After ``trip_after``
failures in a row Redis is *down*: one log line says so, and operations
fall back to the local state at once without waiting on Redis, while a
probe (``PING``, run by :class:`~ivrproto.cluster.redis.SharedRedis`)
checks every ``probe_interval`` seconds.  The first success makes it *up*
again, and one line says that.  Flapping cannot flood the log: the lines go
through a :class:`~ivrproto.logthrottle.LogThrottle`.

Each fallback is counted by operation (``ivr_shared_fallbacks_total``), so
a scrape shows which shared guarantee ran on local state, and how often.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Iterator, List, Optional

import attrs
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from ivrproto.logthrottle import LogThrottle

__all__ = ["SharedHealth", "Unavailable", "OPERATIONS"]

#: The operations that report here (the ``operation`` label): a bounded set.
OPERATIONS = (
    "ratelimit",
    "pause",
    "cache_get",
    "cache_set",
    "token_get",
    "token_lock",
    "token_set",
    "token_invalidate",
    "claim",
    "claim_release",
    "outcome_set",
    "outcome_get",
    "probe",
)

#: Why an operation fell back (the ``reason`` of :class:`Unavailable`).
REASONS = ("timeout", "connection", "error", "down")


@attrs.frozen
class Unavailable:
    """
    What a shared operation returns instead of a result when Redis did not
    answer in time, was not reachable, answered with an error, or is known
    to be down: the caller uses its local state.

    :ivar operation: one of :data:`OPERATIONS`
    :ivar reason: one of :data:`REASONS`
    """

    operation: str
    reason: str

    def __bool__(self) -> bool:
        # ``if result:`` must never mistake a fallback for a success.
        return False


class SharedHealth:
    """
    The state of the shared Redis, as the operations find it.

    :param clock: the clock for the probe schedule and the log throttle
    :param log: where the down and back lines go
    :param trip_after: failures in a row that make Redis down
    :param probe_interval: seconds between probes while down
    """

    def __init__(
        self,
        clock: IReactorTime,
        log: Optional[Logger] = None,
        *,
        trip_after: int = 3,
        probe_interval: float = 0.5,
    ) -> None:
        if trip_after < 1:
            raise ValueError("trip_after must be at least 1")
        self._clock = clock
        self._log = log if log is not None else Logger(namespace="ivrproto.cluster")
        self._throttle = LogThrottle(clock, self._log, burst=3, interval=300.0)
        self.trip_after = trip_after
        self.probe_interval = probe_interval
        self._failures = 0
        self._down_since: Optional[float] = None
        self._waiting: List[Deferred[None]] = []
        #: fallbacks by operation
        self.fallbacks: Counter[str] = Counter()
        #: how many times Redis went down
        self.outages = 0

    @property
    def up(self) -> bool:
        "Whether operations should go to Redis."
        return self._down_since is None

    def fell_back(self, result: Unavailable) -> Unavailable:
        """
        Count a fallback that did not touch Redis (it is down), and return it.
        """
        self.fallbacks[result.operation] += 1
        return result

    def failed(self, result: Unavailable) -> Unavailable:
        """
        Record that an operation sent to Redis failed; Redis goes down after
        ``trip_after`` of them in a row.

        :return: ``result``
        """
        self.fallbacks[result.operation] += 1
        self._failures += 1
        if self._down_since is None and self._failures >= self.trip_after:
            self._down_since = self._clock.seconds()
            self.outages += 1
            self._throttle.warn(
                "shared-down",
                "shared state on Redis unavailable ({reason} on {operation}): "
                "using local state until it answers again",
                reason=result.reason,
                operation=result.operation,
            )
        return result

    def succeeded(self) -> None:
        "Record that Redis answered an operation."
        self._failures = 0
        if self._down_since is None:
            return
        down_for = self._clock.seconds() - self._down_since
        self._down_since = None
        self._throttle.warn(
            "shared-up",
            "shared state on Redis is back after {down_for:.1f}s",
            down_for=down_for,
        )
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            d.callback(None)

    def when_up(self) -> "Deferred[None]":
        """
        A Deferred that fires when Redis is up (at once if it is).
        """
        if self.up:
            return succeed(None)
        d: Deferred[None] = Deferred(self._waiting.remove)
        self._waiting.append(d)
        return d

    def stats(self) -> dict[str, Any]:
        "The counters, for the service's stats."
        return {
            "shared_up": self.up,
            "shared_outages": self.outages,
            "shared_fallbacks": dict(self.fallbacks),
        }

    def metric_families(self) -> Iterator[Any]:
        """
        ``ivr_shared_fallbacks_total{operation}``, ``ivr_shared_up`` and
        ``ivr_shared_outages_total``, for a collector read at scrape time.
        """
        fallbacks = CounterMetricFamily(
            "ivr_shared_fallbacks",
            "Shared-state operations that used local state instead of Redis",
            labels=["operation"],
        )
        for operation in OPERATIONS:
            fallbacks.add_metric([operation], self.fallbacks.get(operation, 0))
        yield fallbacks
        yield GaugeMetricFamily(
            "ivr_shared_up", "Whether the shared Redis answers (1) or not (0)",
            value=1 if self.up else 0,
        )
        yield CounterMetricFamily(
            "ivr_shared_outages", "Times the shared Redis went down", value=self.outages
        )
