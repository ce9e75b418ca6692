"""
Load shedding.  Past what one process can carry, accepting more calls makes
every call late, and then every call fails (handshakes and budgets time out
behind a queue of work).  The intake refuses new calls instead, cheaply and
with ``Retry-After``, while the reactor runs late, so that the calls already
accepted still finish well.
"""

from __future__ import annotations

import gc
import time
from typing import Any, Callable, Optional

from twisted.internet.interfaces import IDelayedCall, IReactorTime

#: Lateness forgiven per second spent collecting garbage: the pause itself
#: and the backlog of work that piled up during it.
GC_FORGIVENESS = 2.0


class LoopLag:
    """
    Measures how late the reactor runs a timer, smoothed, not counting the
    time spent in the garbage collector.

    A full collection with thousands of calls live stops the process for
    up to a second (see benchmarks/README.md): a stall, not more work than
    the process can do, and refusing calls for it would turn away callers
    while the process has capacity to spare.

    :param interval: seconds between probes
    :param limit: lag, in seconds, past which the process counts as overloaded
    :param timer: the clock that times collections (``time.perf_counter``)
    """

    def __init__(
        self,
        reactor: IReactorTime,
        interval: float = 0.05,
        limit: float = 0.1,
        timer: Callable[[], float] = time.perf_counter,
    ) -> None:
        self._reactor = reactor
        self.interval = interval
        self.limit = limit
        self.lag = 0.0
        self._expected = 0.0
        self._call: Optional[IDelayedCall] = None
        self._timer = timer
        self._collecting_since: Optional[float] = None
        #: seconds spent collecting garbage since the last probe
        self.gc_seconds = 0.0
        self._forgiven = 0.0

    @property
    def overloaded(self) -> bool:
        return self.lag > self.limit

    def start(self) -> None:
        self._schedule()
        if self.gc_callback not in gc.callbacks:
            gc.callbacks.append(self.gc_callback)

    def stop(self) -> None:
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        if self.gc_callback in gc.callbacks:
            gc.callbacks.remove(self.gc_callback)

    def gc_callback(self, phase: str, info: dict[str, Any]) -> None:
        """
        A :data:`gc.callbacks` hook: times each collection.
        """
        if phase == "start":
            self._collecting_since = self._timer()
        elif self._collecting_since is not None:
            self.gc_seconds += self._timer() - self._collecting_since
            self._collecting_since = None

    def _schedule(self) -> None:
        self._expected = self._reactor.seconds() + self.interval
        self._call = self._reactor.callLater(self.interval, self._probe)

    def _probe(self) -> None:
        late = max(0.0, self._reactor.seconds() - self._expected)
        # Forgive the time the collector took, and as much again for the
        # backlog it leaves (the requests that queued up during the pause):
        # a process with capacity to spare clears that within about the
        # pause's length; one that is really overloaded runs late beyond it.
        self._forgiven += GC_FORGIVENESS * self.gc_seconds
        self.gc_seconds = 0.0
        forgiven = min(late, self._forgiven)
        late -= forgiven
        self._forgiven = (self._forgiven - forgiven) * (1.0 if forgiven else 0.7)
        # Rise at once, fall smoothly: one late turn starts shedding, a few
        # prompt ones stop it (waiting for the average to rise lets a queue
        # build that makes every accepted call late).  A stall with few
        # calls in progress is not overload: see IVRService.overloaded.
        self.lag = late if late > self.lag else 0.7 * self.lag + 0.3 * late
        self._schedule()
