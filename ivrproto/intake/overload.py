"""
Load shedding.  Past what one process can carry, accepting more calls makes
every call late, and then every call fails (handshakes and budgets time out
behind a queue of work).  The intake refuses new calls instead, cheaply and
with ``Retry-After``, while the reactor runs late, so that the calls already
accepted still finish well.
"""

from __future__ import annotations

from typing import Optional

from twisted.application.service import Service
from twisted.internet.interfaces import IDelayedCall, IReactorTime


class LoopLag(Service):
    """
    Measures how late the reactor runs a timer, smoothed: a child service
    (named ``loop-lag monitor``) that probes while it runs, as Twisted's
    ``TimerService`` does.

    :param interval: seconds between probes
    :param limit: lag, in seconds, past which the process counts as overloaded
    """

    def __init__(self, reactor: IReactorTime, interval: float = 0.05, limit: float = 0.1) -> None:
        self._reactor = reactor
        self.interval = interval
        self.limit = limit
        self.lag = 0.0
        self._expected = 0.0
        self._call: Optional[IDelayedCall] = None
        self.setName("loop-lag monitor")

    @property
    def overloaded(self) -> bool:
        """
        Whether the smoothed lag is past :attr:`limit`.
        """
        return self.lag > self.limit

    def startService(self) -> None:
        super().startService()
        self.start()

    def stopService(self) -> None:
        super().stopService()
        self.stop()

    def start(self) -> None:
        """
        Start probing (without the service machinery: tests drive it so).
        """
        self._schedule()

    def stop(self) -> None:
        """
        Stop probing; stopping twice does nothing.
        """
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None

    def _schedule(self) -> None:
        self._expected = self._reactor.seconds() + self.interval
        self._call = self._reactor.callLater(self.interval, self._probe)

    def _probe(self) -> None:
        late = max(0.0, self._reactor.seconds() - self._expected)
        # Rise at once, fall smoothly: one late turn starts shedding, a few
        # prompt ones stop it (waiting for the average to rise lets a queue
        # build that makes every accepted call late).  A stall with few
        # calls in progress is not overload: see IVRService.overloaded.
        self.lag = late if late > self.lag else 0.7 * self.lag + 0.3 * late
        self._schedule()
