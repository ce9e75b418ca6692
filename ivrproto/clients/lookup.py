"""
The profile lookup every call goes through: a cache in front of a profile
source, with single flight, a per-caller time budget, a client-side rate
limit and a circuit breaker.

A lookup never fails: it answers with a :class:`LookupResult` that says what
happened, so the caller can always play a menu.  Nothing here logs an
external id (a caller's identity), and nothing is logged per lookup.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Optional

from twisted.internet.defer import CancelledError, Deferred, fail, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from ivrproto._types import ProfileSource
from ivrproto.clients._cache import ProfileCache
from ivrproto.clients.limits import CircuitBreaker, RequestWindow
from ivrproto.clients.profiles import Profile, RateLimited
from ivrproto.errors import ProfileError

from ivrproto.cluster.lookup import Cached
from ivrproto.clients.outcomes import (
    CIRCUIT_OPEN_RESULT,
    FAILED_RESULT,
    FOUND,
    HIT,
    LANDED_STATS,
    NEGATIVE_HIT_RESULT,
    NOT_FOUND_RESULT,
    RATE_LIMITED_RESULT,
    TIMED_OUT_RESULT,
    LookupResult,
    LookupStats,
)

if TYPE_CHECKING:
    from ivrproto.cluster.lookup import SharedProfiles

__all__ = ["ProfileLookup"]


class _Flight:
    """
    One fetch in progress and the callers waiting for it: each caller's
    Deferred, mapped to its budget timer.
    """

    __slots__ = ("external_id", "deferred", "deadline", "probe", "waiters")

    def __init__(self, external_id: str, deadline: float) -> None:
        self.external_id = external_id
        self.deadline = deadline
        self.deferred: Optional[Deferred[Any]] = None
        self.probe = False
        self.waiters: dict[Deferred[LookupResult], Optional[IDelayedCall]] = {}

    def __repr__(self) -> str:
        # The external id is a caller's identity: not shown.
        return f"<_Flight deadline={self.deadline} waiters={len(self.waiters)}>"


class ProfileLookup:
    """
    Looks caller profiles up through a cache, one fetch per id at a time,
    within each caller's budget, a rate limit and a circuit breaker.

    :param reactor: the clock for expiry, budgets, the rate limit and the
        breaker
    :param source: where profiles come from
    :param ttl: seconds a found profile is served from the cache
    :param negative_ttl: seconds a "no profile" (404) is served from the
        cache
    :param max_entries: cache entries kept at most (least recently used
        dropped first); 0 caches nothing
    :param max_bytes: bytes of memory the cache entries take at most, as
        estimated (least recently used dropped first): a profile's
        :attr:`~ivrproto.clients.profiles.Profile.footprint`, else a walk of it
    :param max_entry_bytes: profiles larger than this are not cached (their
        callers still get them)
    :param rate_per_minute: fetches in any 60 seconds at most (the
        platform's own rule, whole requests: a fraction is dropped); all of
        them may go at once after a quiet spell
    :param request_window: the :class:`~ivrproto.clients.limits.RequestWindow` to
        count fetches in, instead of one made from ``rate_per_minute``:
        share it with the profile client so that its retries count too
    :param breaker_failures: consecutive fetch failures that open the
        circuit breaker
    :param breaker_reset: seconds the breaker stays open before a probe
    """

    log = Logger()

    def __init__(
        self,
        reactor: IReactorTime,
        source: ProfileSource,
        *,
        ttl: float = 300.0,
        negative_ttl: float = 30.0,
        max_entries: int = 10_000,
        max_bytes: int = 64 * 1024 * 1024,
        max_entry_bytes: int = 1024 * 1024,
        rate_per_minute: float = 200.0,
        request_window: Optional[RequestWindow] = None,
        breaker_failures: int = 5,
        breaker_reset: float = 10.0,
    ) -> None:
        if not ttl >= 0:
            raise ValueError("ttl must not be negative")
        if not negative_ttl >= 0:
            raise ValueError("negative_ttl must not be negative")
        if max_entries < 0:
            raise ValueError("max_entries must not be negative")
        if max_bytes < 0 or max_entry_bytes < 0:
            raise ValueError("max_bytes and max_entry_bytes must not be negative")
        if request_window is None:
            if not (1 <= rate_per_minute < math.inf):
                raise ValueError("rate_per_minute must be at least 1")
            request_window = RequestWindow(reactor, int(rate_per_minute), 60.0)
        self._reactor = reactor
        self._source = source
        self._ttl = ttl
        self._negative_ttl = negative_ttl
        self._window = request_window
        self._pause_noted_until = -math.inf
        self._breaker = CircuitBreaker(breaker_failures, breaker_reset)
        self._cache = ProfileCache(max_entries, max_bytes, max_entry_bytes)
        self._flights: dict[str, _Flight] = {}
        self._shared: Optional[SharedProfiles] = None
        self.stats = LookupStats()

    def use_shared(self, shared: SharedProfiles) -> None:
        """
        Share the cache and the rate limit with other instances: behind the
        local cache, a lookup reads the shared one, and a fetch must be let
        through by the shared window (:mod:`ivrproto.cluster.lookup`).  The
        local window, the same object as :attr:`request_window`, decides
        while Redis is unavailable.
        """
        self._shared = shared

    def __repr__(self) -> str:
        return (
            f"<ProfileLookup cached={len(self._cache)} "
            f"in_flight={len(self._flights)} breaker={self.breaker_state}>"
        )

    @property
    def breaker_state(self) -> str:
        """
        The circuit breaker's state: ``closed``, ``open`` or ``half-open``.
        """
        return self._breaker.state(self._reactor.seconds())

    @property
    def request_window(self) -> RequestWindow:
        """
        Where fetches are counted against the platform's rate limit.
        """
        return self._window

    @property
    def cache_size(self) -> int:
        """
        Entries in the cache (expired ones included until read or evicted).
        """
        return len(self._cache)

    @property
    def cache_bytes(self) -> int:
        """
        The estimated memory of the cache entries, in bytes.
        """
        return self._cache.bytes

    @property
    def in_flight(self) -> int:
        """
        Fetches in progress.
        """
        return len(self._flights)

    def lookup(self, external_id: str, budget: float) -> "Deferred[LookupResult]":
        """
        Look the profile of ``external_id`` up.

        :param budget: seconds the caller waits at most: with 0 (or a
            negative or NaN budget) a fetch is still started, to fill the
            cache, but the caller is answered at once; with ``math.inf`` it
            waits for the fetch however long that takes
        :return: a Deferred that never fails and fires within ``budget``
            with a :class:`LookupResult`: at once from the cache, or when
            the rate limit or the breaker refuses a fetch; else when the
            fetch (shared with other callers of the same id) answers, or
            with ``timed-out`` when the budget runs out first.  Cancelling
            it (it then fails with :class:`CancelledError`) gives up this
            caller only: the fetch goes on and fills the cache.
        """
        self.stats.lookups += 1
        if not budget > 0:
            budget = 0.0
        now = self._reactor.seconds()
        cached = self._cached(external_id, now)
        if cached is not None:
            return succeed(cached)
        flight = self._flights.get(external_id)
        if flight is not None:
            self.stats.shared += 1
            if budget == 0:
                self.stats.timed_out += 1
                return succeed(TIMED_OUT_RESULT)
            return self._wait(flight, budget)
        if not self._breaker.allows(now):
            self.stats.circuit_open += 1
            return succeed(CIRCUIT_OPEN_RESULT)
        if self._window.paused() if self._shared is not None else not self._window.try_take():
            # Shared: the shared window decides in _fly, but a pause this
            # instance knows of answers at once, without a round trip.
            self.stats.rate_limited += 1
            return succeed(RATE_LIMITED_RESULT)
        return self._fly(external_id, now, budget)

    def _cached(self, external_id: str, now: float) -> Optional[LookupResult]:
        """
        The cached answer for ``external_id``, counted as a hit, or ``None``
        (an expired entry is dropped).
        """
        result = self._cache.get(external_id, now)
        if result is not None:
            if result.profile is None:
                self.stats.negative_hits += 1
            else:
                self.stats.hits += 1
        return result

    def _fly(self, external_id: str, now: float, budget: float) -> "Deferred[LookupResult]":
        """
        Start the fetch of ``external_id`` (let through by the breaker and
        the window; with shared state, once the shared cache and window are
        asked) and wait for it, at most ``budget`` seconds.
        """
        flight = _Flight(external_id, now + budget)
        flight.probe = self._breaker.started(now)
        self._flights[external_id] = flight
        waiting = self._wait(flight, budget)
        if self._shared is None:
            self._send(flight)
        else:
            self._shared.before_fetch(external_id).addCallback(self._shared_said, flight)
        if budget == 0 and not waiting.called:
            self._budget_over(flight, waiting)
        return waiting

    def _send(self, flight: _Flight) -> None:
        self.stats.fetches += 1
        deadline = None if flight.deadline == math.inf else flight.deadline
        try:
            fetching = self._source.fetch(flight.external_id, deadline)
        except Exception:
            fetching = fail()
        fetching.addBoth(self._fetched, flight)
        # Set only now, so that an answer from within fetch() or addBoth()
        # is known to be synchronous (see _store).
        flight.deferred = fetching

    def _shared_said(self, answer: Any, flight: _Flight) -> None:
        """
        The shared state answered for ``flight``: a cached answer, or
        whether the shared window lets a fetch through.
        """
        if self._flights.get(flight.external_id) is not flight:
            return  # let go of by stop()
        cached = isinstance(answer, Cached)
        if not cached and answer:
            self._send(flight)
            return
        now = self._reactor.seconds()
        self._breaker.abandoned(now, flight.probe)
        if not cached:
            self._land(flight, RATE_LIMITED_RESULT)
            return
        assert self._shared is not None  # only asked with shared state
        self._shared.hits += 1
        if answer.profile is None:
            hit, ttl = NEGATIVE_HIT_RESULT, min(answer.left, self._negative_ttl)
        else:
            hit, ttl = LookupResult(answer.profile, HIT), min(answer.left, self._ttl)
        self._store(flight, now, ttl, hit)
        self._land(flight, hit)

    def stop(self) -> None:
        """
        Cancel every fetch in progress (at shutdown).  Their callers are
        answered with ``failed``, and no timer is left behind.
        """
        for flight in list(self._flights.values()):
            if flight.deferred is not None:
                flight.deferred.cancel()
            # A source whose Deferred ignored the cancellation: let go of it.
            if self._flights.get(flight.external_id) is flight:
                self._breaker.abandoned(self._reactor.seconds(), flight.probe)
                self._land(flight, None)

    def _wait(self, flight: _Flight, budget: float) -> "Deferred[LookupResult]":
        """
        A Deferred for one more caller of ``flight``, answered at the latest
        after ``budget`` seconds (the caller times out itself when it is 0).
        """
        waiting: Deferred[LookupResult] = Deferred(
            lambda d: self._caller_cancelled(flight, d)
        )
        flight.waiters[waiting] = (
            None
            if budget == 0 or budget == math.inf
            else self._reactor.callLater(budget, self._budget_over, flight, waiting)
        )
        return waiting

    def _caller_cancelled(self, flight: _Flight, waiting: Deferred[LookupResult]) -> None:
        timer = flight.waiters.pop(waiting, None)
        if timer is not None and timer.active():
            timer.cancel()
        self.stats.cancelled += 1

    def _budget_over(self, flight: _Flight, waiting: Deferred[LookupResult]) -> None:
        # Its timer is the one running now, or there is none (budget 0).
        flight.waiters.pop(waiting, None)
        self.stats.timed_out += 1
        waiting.callback(TIMED_OUT_RESULT)

    def _fetched(self, outcome: Any, flight: _Flight) -> None:
        """
        The fetch of ``flight`` ended with ``outcome``: a profile, ``None``
        or a :class:`Failure`.
        """
        if self._flights.get(flight.external_id) is not flight:
            # Let go of by stop(); its callers have been answered.
            return None
        now = self._reactor.seconds()
        result: Optional[LookupResult]
        if isinstance(outcome, Profile):
            result = LookupResult(outcome, FOUND)
            self._breaker.succeeded(now, flight.probe)
            self._store(flight, now, self._ttl, LookupResult(outcome, HIT))
            if self._shared is not None:
                self._shared.fetched(flight.external_id, outcome, self._ttl, self._negative_ttl)
        elif outcome is None:
            result = NOT_FOUND_RESULT
            self._breaker.succeeded(now, flight.probe)
            self._store(flight, now, self._negative_ttl, NEGATIVE_HIT_RESULT)
            if self._shared is not None:
                self._shared.fetched(flight.external_id, None, self._ttl, self._negative_ttl)
        elif isinstance(outcome, Failure) and outcome.check(CancelledError):
            result = None
            self._breaker.abandoned(now, flight.probe)
        elif isinstance(outcome, Failure) and outcome.check(RateLimited):
            # The platform is healthy and asks to slow down: a pause for
            # every lookup, not a failure for the breaker.
            result = None
            self._breaker.abandoned(now, flight.probe)
            retry_at = outcome.value.retry_at
            if retry_at is not None and retry_at > self._pause_noted_until:
                # Once per pause, however many lookups met it.
                if now >= self._pause_noted_until:
                    self.stats.pauses += 1
                    self.log.warn(
                        "profile API rate limit hit: no profile lookups for {delay:.3g}s",
                        delay=retry_at - now,
                    )
                self._pause_noted_until = retry_at
                self._window.pause_until(retry_at)
                if self._shared is not None:
                    # Every instance stops too, at once.
                    self._shared.pause(retry_at - now)
        else:
            result = None
            self._breaker.failed(now, flight.probe)
            if not isinstance(outcome, Failure):
                self.log.error(
                    "profile source answered with a {kind}, not a profile",
                    kind=type(outcome).__name__,
                )
            elif not outcome.check(ProfileError):
                # The message could carry anything, an external id too:
                # only the kind of error is logged.
                self.log.error(
                    "profile source failed unexpectedly: {kind}",
                    kind=getattr(outcome.type, "__name__", "exception"),
                )
        self._land(flight, result)
        return None

    def _store(
        self, flight: _Flight, now: float, ttl: float, hit: LookupResult
    ) -> None:
        if ttl <= 0 or self._cache.keeps_nothing:
            return
        evicted = self._cache.put(flight.external_id, now + ttl, hit)
        if evicted is None:
            self.stats.too_large += 1
            return
        self.stats.evictions += evicted
        # A synchronous answer (deferred not yet set) is never late, even
        # with a budget of 0.
        if flight.deferred is not None and now >= flight.deadline:
            self.stats.late_fills += 1

    def _land(self, flight: _Flight, result: Optional[LookupResult]) -> None:
        """
        Answer every caller still waiting on ``flight`` with ``result``
        (``failed`` when ``None``) and forget the flight.
        """
        del self._flights[flight.external_id]
        if result is None:
            result = FAILED_RESULT
        waiters = flight.waiters
        if not waiters:
            return
        flight.waiters = {}
        for timer in waiters.values():
            if timer is not None and timer.active():
                timer.cancel()
        stats = self.stats
        for waiting in waiters:
            # A caller's callback may have cancelled another caller.
            if not waiting.called:
                counter = LANDED_STATS.get(result.outcome, "failed")
                setattr(stats, counter, getattr(stats, counter) + 1)
                waiting.callback(result)
