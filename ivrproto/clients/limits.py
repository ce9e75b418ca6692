"""
Limits the HTTP clients keep: the retry budget, the sliding window of
requests per minute, and the circuit breaker in front of the profile
source.  All of them are pure: the time is passed in.
"""


from __future__ import annotations

import math
from collections import deque


from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger


__all__ = [
    "RetryBudget",
    "RequestWindow",
    "CircuitBreaker",
    "CLOSED",
    "OPEN",
    "HALF_OPEN",
]


class RetryBudget:
    """
    How many retries a group of clients may make: at most ``ratio`` of the
    recent first attempts, plus ``min_per_second`` retries a second, so that
    a platform outage does not turn every call into several requests (a
    retry storm).  Share one budget between the clients that talk to the
    same platform.

    Both counts decay exponentially with the time constant ``window``, read
    from ``clock`` when they are used: no timer is ever scheduled.  A retry
    is allowed while ``retries + 1 <= ratio * attempts + min_per_second *
    window``; in a steady state that is a retry rate of at most ``ratio``
    times the attempt rate plus ``min_per_second``.

    :param clock: the clock the counts decay on
    :param ratio: the share of first attempts that may be retried
    :param min_per_second: retries a second allowed however few attempts
        there are
    :param window: the time constant of the decay in seconds ("recent")
    """

    def __init__(
        self,
        clock: IReactorTime,
        *,
        ratio: float = 0.2,
        min_per_second: float = 5.0,
        window: float = 10.0,
    ) -> None:
        if not (math.isfinite(ratio) and ratio >= 0):
            raise ValueError("ratio must be a finite number, 0 or more")
        if not (math.isfinite(min_per_second) and min_per_second >= 0):
            raise ValueError("min_per_second must be a finite number, 0 or more")
        if not (math.isfinite(window) and window > 0):
            raise ValueError("window must be a positive number")
        self._clock = clock
        self._ratio = ratio
        self._floor = min_per_second * window
        self._window = window
        self._attempts = 0.0
        self._retries = 0.0
        self._updated = clock.seconds()
        #: retries refused since this budget was made
        self.refused = 0

    def __repr__(self) -> str:
        return (
            f"<RetryBudget ratio={self._ratio:g} "
            f"min_per_second={self._floor / self._window:g}>"
        )

    def _decay(self) -> None:
        now = self._clock.seconds()
        elapsed = now - self._updated
        if elapsed > 0:
            factor = math.exp(-elapsed / self._window)
            self._attempts *= factor
            self._retries *= factor
            self._updated = now
        elif elapsed < 0:
            # The clock went back: keep the counts, restart from now.
            self._updated = now

    @property
    def available(self) -> float:
        """
        How many retries may be made right now (a float; a retry needs 1).
        """
        self._decay()
        return max(0.0, self._ratio * self._attempts + self._floor - self._retries)

    def record_attempt(self) -> None:
        """
        Count one first attempt (not a retry): it earns ``ratio`` of a retry.
        """
        self._decay()
        self._attempts += 1.0

    def try_spend(self) -> bool:
        """
        Ask for one retry.

        :return: ``True``, and the retry is counted, when the budget allows
            it; ``False`` otherwise (the caller gives up instead)
        """
        if self.available >= 1.0:
            self._retries += 1.0
            return True
        self.refused += 1
        return False


class RequestWindow:
    """
    A client-side rate limit that is the platform's own rule: at most
    ``limit`` requests in any ``window`` seconds, and none while the
    platform asked (``429`` with ``Retry-After``) to wait.

    It keeps the times of the requests of the last ``window`` seconds (at
    most ``limit`` of them) and lets a request through while fewer than
    ``limit`` of them are recent.  Unlike a token bucket it never lets
    through more than the platform accepts in a window (a full bucket of
    ``limit`` refilling ``limit / window`` a second allows about twice
    ``limit`` in one window), and never refuses what it would accept (a
    bucket holding less than ``limit`` refuses a burst after a quiet
    spell).  Computed from ``clock`` when used: no timer.

    :param clock: the clock it counts on
    :param limit: requests allowed in any ``window`` seconds; at least 1
    :param window: the window in seconds
    """

    def __init__(self, clock: IReactorTime, limit: int, window: float = 60.0) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        if not (0 < window < math.inf):
            raise ValueError("window must be a positive finite number")
        self._clock = clock
        self.limit = limit
        self.window = window
        self._times: deque[float] = deque()
        self._paused_until = -math.inf

    def __repr__(self) -> str:
        return f"<RequestWindow {self.limit} in {self.window:g}s>"

    @property
    def paused_until(self) -> float:
        """
        Until when, on the clock, every request is refused (``-inf`` when
        no pause was asked for).
        """
        return self._paused_until

    def paused(self) -> bool:
        """
        Whether a pause asked for by the platform is in force now.
        """
        return self._clock.seconds() < self._paused_until

    def pause_until(self, when: float) -> None:
        """
        Refuse every request until ``when`` (a longer pause in force is
        kept).
        """
        if when > self._paused_until:
            self._paused_until = when

    def recent(self) -> int:
        """
        Requests counted in the window ending now.
        """
        self._forget(self._clock.seconds())
        return len(self._times)

    def _forget(self, now: float) -> None:
        # A request at t still counts at t + window: the platform's window
        # may be closed at both ends.
        times = self._times
        horizon = now - self.window
        while times and times[0] < horizon:
            times.popleft()

    def try_take(self) -> bool:
        """
        Count one request now if the window and any pause allow it.

        :return: whether the request may be sent
        """
        now = self._clock.seconds()
        if now < self._paused_until:
            return False
        self._forget(now)
        if len(self._times) >= self.limit:
            return False
        self._times.append(now)
        return True


class CircuitBreaker:
    """
    A circuit breaker over consecutive failures, computed from the time it
    is given: no timers.

    Closed, it lets everything through and counts consecutive failures; at
    ``failures`` it opens for ``reset`` seconds and lets nothing through.
    Then it is half-open: it lets exactly one probe through, which closes it
    by succeeding and opens it again by failing.  The outcome of an attempt
    that was let through in an earlier state (not the probe) is ignored
    once the breaker has left the closed state.

    :param failures: consecutive failures that open it; at least 1
    :param reset: seconds it stays open
    """

    log = Logger()

    def __init__(self, failures: int, reset: float) -> None:
        if failures < 1:
            raise ValueError("breaker failures must be at least 1")
        if not reset >= 0:
            raise ValueError("breaker reset must not be negative")
        self.failures = failures
        self.reset = reset
        self._state = CLOSED
        self._consecutive = 0
        self._open_until = 0.0
        self._probing = False

    def state(self, now: float) -> str:
        """
        The state at ``now``: ``closed``, ``open`` or ``half-open``.
        """
        if self._state == OPEN and now >= self._open_until:
            self._state = HALF_OPEN
            self._probing = False
            self.log.info("profile circuit breaker half-open: letting one probe through")
        return self._state

    def allows(self, now: float) -> bool:
        """
        Whether an attempt may start at ``now``.  Nothing is claimed: call
        :meth:`started` when it does start.
        """
        state = self.state(now)
        return state == CLOSED or (state == HALF_OPEN and not self._probing)

    def started(self, now: float) -> bool:
        """
        An attempt that :meth:`allows` let through has started.

        :return: whether it is the half-open probe; pass that back to
            :meth:`succeeded`, :meth:`failed` or :meth:`abandoned`
        """
        if self.state(now) == HALF_OPEN:
            self._probing = True
            return True
        return False

    def succeeded(self, now: float, probe: bool) -> None:
        """
        An attempt succeeded.
        """
        state = self.state(now)
        if probe and state == HALF_OPEN:
            self._state = CLOSED
            self._consecutive = 0
            self._probing = False
            self.log.info("profile circuit breaker closed: the probe succeeded")
        elif state == CLOSED:
            self._consecutive = 0

    def failed(self, now: float, probe: bool) -> None:
        """
        An attempt failed.
        """
        state = self.state(now)
        if probe and state == HALF_OPEN:
            self._open(now)
            self.log.warn(
                "profile circuit breaker open again for {reset}s: the probe failed",
                reset=self.reset,
            )
        elif state == CLOSED:
            self._consecutive += 1
            consecutive = self._consecutive
            if consecutive >= self.failures:
                # _open() starts the count again: the count is read first.
                self._open(now)
                self.log.warn(
                    "profile circuit breaker open for {reset}s after "
                    "{failures} consecutive failures",
                    reset=self.reset,
                    failures=consecutive,
                )

    def abandoned(self, now: float, probe: bool) -> None:
        """
        An attempt ended with neither success nor failure (cancelled): a
        probe slot is given back.
        """
        if probe and self.state(now) == HALF_OPEN:
            self._probing = False

    def _open(self, now: float) -> None:
        self._state = OPEN
        self._open_until = now + self.reset
        self._consecutive = 0
        self._probing = False


# The breaker states, as :attr:`ProfileLookup.breaker_state` shows them.
CLOSED = "closed"


OPEN = "open"


HALF_OPEN = "half-open"
