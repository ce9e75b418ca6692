"""
Tests for :mod:`ivrproto.clients.lookup`.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Optional

import attrs
from hypothesis import given, settings, strategies as st
from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.task import Clock
from twisted.logger import formatEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from ivrproto.errors import ProfileError
from ivrproto.clients.limits import CircuitBreaker
from ivrproto._types import ProfileSource
from ivrproto.clients.lookup import ProfileLookup
from ivrproto.clients.outcomes import LookupResult, LookupStats
from ivrproto.clients.limits import RequestWindow
from ivrproto.clients.profiles import Profile, RateLimited

T0 = 1_700_000_000.0
CALLER = "+1 555 0100"
OTHER = "+1 555 0199"
ENDPOINT = "http://api.example.test/api/v2/profiles/external/{externalId}"


def profile_for(external_id: str, tier: str = "gold") -> Profile:
    """
    A profile for ``external_id``.
    """
    return Profile(id="p-" + external_id[-4:], external_id=external_id, attributes={"tier": tier})


def caller(n: int) -> str:
    """
    The ``n``-th made-up caller id.
    """
    return f"+1 555 {n:04d}"


@attrs.define(eq=False)
class Fetch:
    """
    One fetch the fake source was asked for, answered by the test.
    """

    external_id: str
    deadline: Optional[float]
    deferred: "Deferred[Optional[Profile]]"
    cancelled: bool = False

    def found(self, tier: str = "gold") -> Profile:
        """Answer with a profile."""
        profile = profile_for(self.external_id, tier)
        self.deferred.callback(profile)
        return profile

    def missing(self) -> None:
        """Answer 404."""
        self.deferred.callback(None)

    def fail(self, error: Optional[Exception] = None) -> None:
        """Fail with ``error``, a :class:`ProfileError` by default."""
        if error is None:
            error = ProfileError(ENDPOINT, 503, "server error")
        self.deferred.errback(Failure(error))


class FakeSource:
    """
    A profile source that records fetches and leaves them to the test.
    """

    def __init__(self) -> None:
        self.fetches: list[Fetch] = []

    def fetch(self, external_id: str, deadline: Optional[float]) -> "Deferred[Optional[Profile]]":
        fetch: Fetch

        def cancel(d: Deferred[Any]) -> None:
            fetch.cancelled = True

        fetch = Fetch(external_id, deadline, Deferred(cancel))
        self.fetches.append(fetch)
        return fetch.deferred

    @property
    def pending(self) -> list[Fetch]:
        """Fetches not answered yet."""
        return [f for f in self.fetches if not f.deferred.called]

    def last(self) -> Fetch:
        """The latest fetch."""
        return self.fetches[-1]


class LookupTestsMixin:
    """
    A :class:`ProfileLookup` on a :class:`Clock` and a :class:`FakeSource`,
    with captured log events and a check that no timer is left.
    """

    clock: Clock
    source: FakeSource
    events: list[dict[str, Any]]

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(T0)
        self.source = FakeSource()
        self.events = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)  # type: ignore[attr-defined]
        self.addCleanup(self.assert_no_timers)  # type: ignore[attr-defined]

    def assert_no_timers(self) -> None:
        self.assertEqual(self.clock.getDelayedCalls(), [])  # type: ignore[attr-defined]

    def make(self, **kwargs: Any) -> ProfileLookup:
        lookup = ProfileLookup(self.clock, self.source, **kwargs)
        self.addCleanup(lookup.stop)  # type: ignore[attr-defined]
        return lookup

    def result_of(self, d: "Deferred[LookupResult]") -> LookupResult:
        result: LookupResult = self.successResultOf(d)  # type: ignore[attr-defined]
        return result

    def shown(self) -> str:
        """Every log event so far, formatted and as repr."""
        return "\n".join(f"{formatEvent(e)} {e!r}" for e in self.events)


class LookupResultTests(SynchronousTestCase):
    """
    :class:`LookupResult` and :class:`LookupStats`.
    """

    def test_attributes(self) -> None:
        """attributes are the profile's, or None without a profile."""
        profile = profile_for(CALLER)
        self.assertEqual(LookupResult(profile, "found").attributes, {"tier": "gold"})
        self.assertIsNone(LookupResult(None, "not-found").attributes)

    def test_unknown_outcome(self) -> None:
        """An outcome outside the list is refused."""
        self.assertRaises(ValueError, LookupResult, None, "maybe")

    def test_frozen(self) -> None:
        """A result cannot be changed."""
        result = LookupResult(None, "failed")
        self.assertRaises(attrs.exceptions.FrozenInstanceError, setattr, result, "outcome", "hit")

    def test_repr_hides_caller(self) -> None:
        """The repr of a result does not show the caller id."""
        self.assertNotIn(CALLER, repr(LookupResult(profile_for(CALLER), "hit")))

    def test_stats_start_at_zero(self) -> None:
        """Fresh stats are all zero."""
        self.assertEqual(set(attrs.asdict(LookupStats()).values()), {0})


class ArgumentTests(SynchronousTestCase):
    """
    Nonsense settings are refused when built.
    """

    def test_refused(self) -> None:
        """Negative ttls and sizes and a rate below 1 raise ValueError."""
        clock, source = Clock(), FakeSource()
        refused: list[dict[str, Any]] = [
            {"ttl": -1},
            {"negative_ttl": math.nan},
            {"max_entries": -1},
            {"rate_per_minute": 0},
            {"rate_per_minute": 0.5},
            {"breaker_failures": 0},
            {"breaker_reset": -1},
        ]
        for kwargs in refused:
            self.assertRaises(ValueError, ProfileLookup, clock, source, **kwargs)

    def test_fake_is_a_source(self) -> None:
        """The test source fits the ProfileSource protocol."""
        source: ProfileSource = FakeSource()
        self.assertTrue(callable(source.fetch))


class CacheTests(LookupTestsMixin, SynchronousTestCase):
    """
    Positive and negative caching, expiry and LRU eviction.
    """

    def test_miss_then_hit(self) -> None:
        """A miss fetches and answers found; the next lookup is a hit without a fetch."""
        lookup = self.make()
        d = lookup.lookup(CALLER, 2.0)
        self.assertNoResult(d)
        self.assertEqual([f.external_id for f in self.source.fetches], [CALLER])
        profile = self.source.last().found()
        self.assertEqual(self.result_of(d), LookupResult(profile, "found"))
        again = self.result_of(lookup.lookup(CALLER, 2.0))
        self.assertEqual(again, LookupResult(profile, "hit"))
        self.assertEqual(again.attributes, {"tier": "gold"})
        self.assertEqual(len(self.source.fetches), 1)
        self.assertEqual((lookup.stats.found, lookup.stats.hits), (1, 1))

    def test_ttl_expiry(self) -> None:
        """A profile is served until ttl has passed, then fetched again."""
        lookup = self.make(ttl=60.0)
        lookup.lookup(CALLER, 2.0)
        self.source.last().found()
        self.clock.advance(59.9)
        self.assertEqual(self.result_of(lookup.lookup(CALLER, 2.0)).outcome, "hit")
        self.clock.advance(0.1)
        d = lookup.lookup(CALLER, 2.0)
        self.assertEqual(len(self.source.fetches), 2)
        self.source.last().found("silver")
        self.assertEqual(self.result_of(d).attributes, {"tier": "silver"})

    def test_negative_cache(self) -> None:
        """A 404 is cached as "no profile" for negative_ttl, shorter than ttl."""
        lookup = self.make(ttl=300.0, negative_ttl=30.0)
        d = lookup.lookup(CALLER, 2.0)
        self.source.last().missing()
        self.assertEqual(self.result_of(d), LookupResult(None, "not-found"))
        self.clock.advance(29.9)
        hit = self.result_of(lookup.lookup(CALLER, 2.0))
        self.assertEqual(hit, LookupResult(None, "negative-hit"))
        self.assertIsNone(hit.attributes)
        self.assertEqual(len(self.source.fetches), 1)
        self.clock.advance(0.1)
        lookup.lookup(CALLER, 2.0)
        self.assertEqual(len(self.source.fetches), 2)
        self.source.last().found()
        self.assertEqual((lookup.stats.negative_hits, lookup.stats.not_found), (1, 1))

    def test_lru_eviction(self) -> None:
        """Past max_entries the least recently used entry goes, and the size stays bounded."""
        lookup = self.make(max_entries=3)
        for n in range(3):
            lookup.lookup(caller(n), 2.0)
            self.source.last().found()
        # Reading caller 0 makes caller 1 the least recently used.
        self.assertEqual(self.result_of(lookup.lookup(caller(0), 2.0)).outcome, "hit")
        lookup.lookup(caller(3), 2.0)
        self.source.last().missing()
        self.assertEqual(lookup.cache_size, 3)
        self.assertEqual(lookup.stats.evictions, 1)
        for n in (0, 2, 3):
            self.assertIn(self.result_of(lookup.lookup(caller(n), 2.0)).outcome, {"hit", "negative-hit"})
        self.assertEqual(len(self.source.fetches), 4)
        lookup.lookup(caller(1), 2.0)
        self.assertEqual(len(self.source.fetches), 5)
        self.source.last().found()
        self.assertEqual(lookup.cache_size, 3)
        self.assertEqual(lookup.stats.evictions, 2)

    def test_nothing_cached(self) -> None:
        """With max_entries 0 every lookup fetches."""
        lookup = self.make(max_entries=0)
        for _ in range(2):
            d = lookup.lookup(CALLER, 2.0)
            self.source.last().found()
            self.assertEqual(self.result_of(d).outcome, "found")
        self.assertEqual(len(self.source.fetches), 2)
        self.assertEqual(lookup.cache_size, 0)

    def test_failure_not_cached(self) -> None:
        """A failed fetch answers failed and the next lookup fetches again."""
        lookup = self.make()
        d = lookup.lookup(CALLER, 2.0)
        self.source.last().fail()
        self.assertEqual(self.result_of(d), LookupResult(None, "failed"))
        lookup.lookup(CALLER, 2.0)
        self.assertEqual(len(self.source.fetches), 2)
        self.source.last().found()
        self.assertEqual(lookup.stats.failed, 1)

    def test_hit_is_synchronous(self) -> None:
        """A cache hit answers at once, without a timer."""
        lookup = self.make()
        lookup.lookup(CALLER, 2.0)
        self.source.last().found()
        d = lookup.lookup(CALLER, 2.0)
        self.assertTrue(d.called)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.result_of(d)


class SingleFlightTests(LookupTestsMixin, SynchronousTestCase):
    """
    Concurrent lookups of one id share one fetch.
    """

    def test_hundred_callers_one_fetch(self) -> None:
        """100 concurrent lookups of one id make one fetch and all get the profile."""
        lookup = self.make()
        waiting = [lookup.lookup(CALLER, 2.0) for _ in range(100)]
        self.assertEqual(len(set(map(id, waiting))), 100)
        self.assertEqual(len(self.source.fetches), 1)
        profile = self.source.last().found()
        for d in waiting:
            self.assertEqual(self.result_of(d), LookupResult(profile, "found"))
        self.assertEqual(lookup.stats.shared, 99)
        self.assertEqual(lookup.stats.fetches, 1)
        self.assertEqual(lookup.stats.found, 100)
        self.assertEqual(lookup.in_flight, 0)

    def test_different_ids_fetch_apart(self) -> None:
        """Lookups of different ids do not share."""
        lookup = self.make()
        first, second = lookup.lookup(CALLER, 2.0), lookup.lookup(OTHER, 2.0)
        self.assertEqual([f.external_id for f in self.source.fetches], [CALLER, OTHER])
        self.source.fetches[1].missing()
        self.assertEqual(self.result_of(second).outcome, "not-found")
        self.assertNoResult(first)
        self.source.fetches[0].found()
        self.assertEqual(self.result_of(first).outcome, "found")

    def test_budget_over_then_late_fill(self) -> None:
        """A caller whose budget runs out gets timed-out; the late answer fills the cache."""
        lookup = self.make()
        d = lookup.lookup(CALLER, 1.5)
        self.clock.advance(1.4)
        self.assertNoResult(d)
        self.clock.advance(0.1)
        self.assertEqual(self.result_of(d), LookupResult(None, "timed-out"))
        fetch = self.source.last()
        self.assertFalse(fetch.cancelled)
        self.clock.advance(3)
        profile = fetch.found()
        self.assertEqual(self.result_of(lookup.lookup(CALLER, 1.5)), LookupResult(profile, "hit"))
        self.assertEqual(len(self.source.fetches), 1)
        self.assertEqual((lookup.stats.timed_out, lookup.stats.late_fills), (1, 1))

    def test_in_time_is_not_late(self) -> None:
        """A fetch that answers within the budget is not a late fill."""
        lookup = self.make()
        d = lookup.lookup(CALLER, 1.5)
        self.clock.advance(1.0)
        self.source.last().found()
        self.result_of(d)
        self.assertEqual(lookup.stats.late_fills, 0)

    def test_late_failure_is_not_a_fill(self) -> None:
        """A late failure fills nothing and is not counted as a late fill."""
        lookup = self.make()
        d = lookup.lookup(CALLER, 1.0)
        self.clock.advance(1.0)
        self.assertEqual(self.result_of(d).outcome, "timed-out")
        self.source.last().fail()
        self.assertEqual(lookup.stats.late_fills, 0)
        lookup.lookup(CALLER, 1.0)
        self.assertEqual(len(self.source.fetches), 2)
        self.source.last().missing()

    def test_joiner_keeps_its_own_budget(self) -> None:
        """A caller joining a fetch is answered within its own budget, not the first caller's."""
        lookup = self.make()
        first = lookup.lookup(CALLER, 5.0)
        self.clock.advance(1)
        second = lookup.lookup(CALLER, 0.5)
        self.clock.advance(0.5)
        self.assertEqual(self.result_of(second).outcome, "timed-out")
        self.assertNoResult(first)
        self.source.last().found()
        self.assertEqual(self.result_of(first).outcome, "found")

    def test_joiner_after_first_timed_out(self) -> None:
        """A lookup during a fetch whose callers all gave up joins it rather than fetching again."""
        lookup = self.make()
        first = lookup.lookup(CALLER, 1.0)
        self.clock.advance(1.0)
        self.result_of(first)
        second = lookup.lookup(CALLER, 1.0)
        self.assertEqual(len(self.source.fetches), 1)
        self.source.last().found()
        self.assertEqual(self.result_of(second).outcome, "found")
        self.assertEqual(lookup.stats.late_fills, 1)

    def test_deadline_is_first_callers(self) -> None:
        """The source gets the first caller's now + budget as its deadline."""
        lookup = self.make()
        lookup.lookup(CALLER, 2.5)
        self.clock.advance(1)
        lookup.lookup(CALLER, 10.0)
        self.assertEqual([f.deadline for f in self.source.fetches], [T0 + 2.5])
        self.source.last().found()

    def test_unbounded_budget(self) -> None:
        """An infinite budget sets no timer and passes no deadline."""
        lookup = self.make()
        d = lookup.lookup(CALLER, math.inf)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertIsNone(self.source.last().deadline)
        self.clock.advance(3600)
        self.source.last().found()
        self.assertEqual(self.result_of(d).outcome, "found")

    def test_zero_and_negative_budget(self) -> None:
        """A budget of 0 or less still fetches to fill the cache, but answers timed-out at once."""
        lookup = self.make()
        zero, negative = lookup.lookup(CALLER, 0), lookup.lookup(OTHER, -5)
        joined = lookup.lookup(CALLER, math.nan)
        self.assertEqual([f.deadline for f in self.source.fetches], [T0, T0])
        self.assertEqual(self.clock.getDelayedCalls(), [])
        for d in (zero, negative, joined):
            self.assertEqual(self.result_of(d).outcome, "timed-out")
        for fetch in self.source.fetches:
            fetch.found()
        self.assertEqual(lookup.stats.late_fills, 2)
        self.assertEqual(self.result_of(lookup.lookup(CALLER, 0)).outcome, "hit")

    def test_zero_budget_synchronous_source(self) -> None:
        """With a budget of 0, a source that answers at once is still answered."""

        class Instant:
            def fetch(self, external_id: str, deadline: Optional[float]) -> "Deferred[Optional[Profile]]":
                return succeed(None)

        lookup = ProfileLookup(self.clock, Instant())
        self.assertEqual(self.result_of(lookup.lookup(CALLER, 0)).outcome, "not-found")
        self.assertEqual(lookup.stats.late_fills, 0)

    def test_cancel_one_caller(self) -> None:
        """Cancelling one caller's Deferred cancels neither the fetch nor the other callers."""
        lookup = self.make()
        first, second, third = (lookup.lookup(CALLER, 2.0) for _ in range(3))
        second.cancel()
        self.failureResultOf(second, CancelledError)
        fetch = self.source.last()
        self.assertFalse(fetch.cancelled)
        self.assertEqual(len(self.clock.getDelayedCalls()), 2)
        profile = fetch.found()
        self.assertEqual(self.result_of(first), LookupResult(profile, "found"))
        self.assertEqual(self.result_of(third), LookupResult(profile, "found"))
        self.assertEqual((lookup.stats.cancelled, lookup.stats.found), (1, 2))

    def test_cancel_every_caller(self) -> None:
        """With every caller gone the fetch goes on and fills the cache."""
        lookup = self.make()
        d = lookup.lookup(CALLER, 2.0)
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertFalse(self.source.last().cancelled)
        self.source.last().found()
        self.assertEqual(self.result_of(lookup.lookup(CALLER, 2.0)).outcome, "hit")
        self.assertEqual(lookup.stats.late_fills, 0)

    def test_caller_cancels_another_on_answer(self) -> None:
        """A caller's callback cancelling another caller already answered or not does not break the rest."""
        lookup = self.make()
        first, second, third = (lookup.lookup(CALLER, 2.0) for _ in range(3))

        def cancel_second(result: LookupResult) -> LookupResult:
            second.cancel()
            return result

        first.addCallback(cancel_second)
        self.source.last().found()
        self.assertEqual(self.result_of(first).outcome, "found")
        self.failureResultOf(second, CancelledError)
        self.assertEqual(self.result_of(third).outcome, "found")

    def test_relookup_from_callback(self) -> None:
        """A caller looking the same id up again from its callback gets a hit."""
        lookup = self.make()
        again: list[Deferred[LookupResult]] = []
        d = lookup.lookup(CALLER, 2.0)

        def look_again(result: LookupResult) -> None:
            again.append(lookup.lookup(CALLER, 2.0))

        d.addCallback(look_again)
        self.source.last().found()
        self.assertEqual(self.result_of(again[0]).outcome, "hit")

    def test_synchronous_source(self) -> None:
        """A source that answers at once is answered at once, without a timer left."""

        class Instant:
            def fetch(self, external_id: str, deadline: Optional[float]) -> "Deferred[Optional[Profile]]":
                return succeed(profile_for(external_id))

        lookup = ProfileLookup(self.clock, Instant())
        self.assertEqual(self.result_of(lookup.lookup(CALLER, 2.0)).outcome, "found")
        self.assertEqual(lookup.stats.late_fills, 0)
        self.assertEqual(self.result_of(lookup.lookup(CALLER, 2.0)).outcome, "hit")

    def test_source_raises(self) -> None:
        """A source raising at once is a failure, logged by kind only."""

        class Broken:
            def fetch(self, external_id: str, deadline: Optional[float]) -> "Deferred[Optional[Profile]]":
                raise KeyError(external_id)

        lookup = ProfileLookup(self.clock, Broken(), breaker_failures=1)
        self.assertEqual(self.result_of(lookup.lookup(CALLER, 2.0)).outcome, "failed")
        self.assertEqual(lookup.breaker_state, "open")
        self.assertIn("KeyError", self.shown())
        self.assertNotIn(CALLER, self.shown())

    def test_source_answers_nonsense(self) -> None:
        """A source answering something that is not a profile is a failure."""
        lookup = self.make()
        d = lookup.lookup(CALLER, 2.0)
        self.source.last().deferred.callback({"id": "p-1"})  # type: ignore[arg-type]
        self.assertEqual(self.result_of(d).outcome, "failed")
        self.assertEqual(lookup.cache_size, 0)
        self.assertIn("dict", self.shown())


class RateLimitTests(LookupTestsMixin, SynchronousTestCase):
    """
    The client-side limit is the platform's rule, N fetches in any 60 s:
    never stricter, never looser.
    """

    def answer_all(self) -> None:
        for fetch in self.source.pending:
            fetch.found()

    def test_whole_minute_at_once_after_quiet_spell(self) -> None:
        """50 calls at once after a quiet spell all get a fetch (the old bucket held rate/6 = 33)."""
        lookup = self.make()
        self.clock.advance(3600)
        results = [lookup.lookup(caller(n), 2.0) for n in range(50)]
        self.assertEqual(len(self.source.fetches), 50)
        self.answer_all()
        self.assertEqual({self.result_of(d).outcome for d in results}, {"found"})
        self.assertEqual(lookup.stats.rate_limited, 0)

    def test_limit_then_limited(self) -> None:
        """rate_per_minute fetches go out at once; the next lookup is rate-limited without a fetch."""
        lookup = self.make(rate_per_minute=3)
        waiting = [lookup.lookup(caller(n), 2.0) for n in range(3)]
        limited = self.result_of(lookup.lookup(caller(3), 2.0))
        self.assertEqual(limited, LookupResult(None, "rate-limited"))
        self.assertEqual(len(self.source.fetches), 3)
        self.answer_all()
        for d in waiting:
            self.result_of(d)
        self.assertEqual(lookup.stats.rate_limited, 1)

    def test_slots_come_back_sixty_seconds_later(self) -> None:
        """A fetch's slot comes back 60 s after it, not before."""
        lookup = self.make(rate_per_minute=2)
        lookup.lookup(caller(0), 2.0)
        self.clock.advance(30)
        lookup.lookup(caller(1), 2.0)
        self.answer_all()
        self.clock.advance(30)
        self.assertEqual(self.result_of(lookup.lookup(caller(2), 2.0)).outcome, "rate-limited")
        self.clock.advance(0.001)
        lookup.lookup(caller(3), 2.0)
        self.assertEqual(len(self.source.fetches), 3)
        self.assertEqual(self.result_of(lookup.lookup(caller(4), 2.0)).outcome, "rate-limited")
        self.answer_all()

    def test_never_more_than_limit_in_any_window(self) -> None:
        """However lookups arrive, no 60 s window holds more than rate_per_minute fetches; a steady stream gets them all."""
        lookup = self.make(rate_per_minute=200)
        times: list[float] = []
        n = 0
        for step in [0.01] * 3000 + [0.3] * 1000 + [0.0] * 400:
            before = len(self.source.fetches)
            lookup.lookup(caller(n), 2.0)
            n += 1
            if len(self.source.fetches) > before:
                times.append(self.clock.seconds())
            self.answer_all()
            self.clock.advance(step)
        # Every fetch that starts a window: the fetches within 60 s of it.
        j = 0
        for i, start in enumerate(times):
            while j < len(times) and times[j] <= start + 60:
                j += 1
            self.assertLessEqual(j - i, 200)
        # 0.3 s apart is 200 a minute: none of those was refused once the
        # window had emptied.
        self.assertGreater(len(times), 200 * 3)

    def test_fraction_dropped_and_at_least_one(self) -> None:
        """rate_per_minute 1.5 allows one fetch a minute; below 1 is refused."""
        lookup = self.make(rate_per_minute=1.5)
        lookup.lookup(CALLER, 2.0)
        self.assertEqual(self.result_of(lookup.lookup(OTHER, 2.0)).outcome, "rate-limited")
        self.assertEqual(len(self.source.fetches), 1)
        self.answer_all()
        self.assertRaises(ValueError, ProfileLookup, self.clock, self.source, rate_per_minute=0.5)

    def test_hits_and_joins_not_limited(self) -> None:
        """Cache hits and joins onto a fetch in flight take no slot."""
        lookup = self.make(rate_per_minute=1)
        joined = [lookup.lookup(CALLER, 2.0) for _ in range(10)]
        self.source.last().found()
        for d in joined:
            self.assertEqual(self.result_of(d).outcome, "found")
        for _ in range(10):
            self.assertEqual(self.result_of(lookup.lookup(CALLER, 2.0)).outcome, "hit")
        self.assertEqual(self.result_of(lookup.lookup(OTHER, 2.0)).outcome, "rate-limited")
        self.assertEqual(len(self.source.fetches), 1)

    def test_limit_does_not_feed_breaker(self) -> None:
        """Rate-limited lookups are not failures for the breaker."""
        lookup = self.make(rate_per_minute=1, breaker_failures=1)
        lookup.lookup(CALLER, 2.0)
        for _ in range(5):
            self.result_of(lookup.lookup(OTHER, 2.0))
        self.assertEqual(lookup.breaker_state, "closed")
        self.answer_all()

    def test_shared_window(self) -> None:
        """A window given to the lookup is the one it counts in."""
        window = RequestWindow(self.clock, 2)
        self.assertTrue(window.try_take())
        lookup = self.make(request_window=window)
        lookup.lookup(CALLER, 2.0)
        self.assertEqual(self.result_of(lookup.lookup(OTHER, 2.0)).outcome, "rate-limited")
        self.assertIs(lookup.request_window, window)
        self.answer_all()


class PauseTests(LookupTestsMixin, SynchronousTestCase):
    """
    A 429 with Retry-After pauses every lookup until then.
    """

    def throttle(self, lookup: ProfileLookup, retry_after: float) -> None:
        lookup.lookup(CALLER, 2.0)
        self.source.last().fail(
            RateLimited(ENDPOINT, 429, "rate limited", self.clock.seconds() + retry_after)
        )

    def test_pause_until_retry_after(self) -> None:
        """After a 429 with Retry-After 20, lookups answer rate-limited at once for 20 s, with no fetch."""
        lookup = self.make()
        self.throttle(lookup, 20.0)
        for n in range(30):
            self.assertEqual(self.result_of(lookup.lookup(caller(n), 2.0)).outcome, "rate-limited")
            self.clock.advance(0.6)
        self.assertEqual(len(self.source.fetches), 1)
        self.clock.advance(2.01)
        lookup.lookup(caller(99), 2.0)
        self.assertEqual(len(self.source.fetches), 2)
        self.source.last().found()
        self.assertEqual(lookup.stats.pauses, 1)
        self.assertIn("no profile lookups for 20s", self.shown())

    def test_pause_is_not_a_breaker_failure(self) -> None:
        """429s do not open the breaker, and cache hits are still served during a pause."""
        lookup = self.make(breaker_failures=1)
        lookup.lookup(OTHER, 2.0)
        self.source.last().found()
        self.throttle(lookup, 5.0)
        self.assertEqual(lookup.breaker_state, "closed")
        self.assertEqual(self.result_of(lookup.lookup(OTHER, 2.0)).outcome, "hit")
        self.assertEqual(self.result_of(lookup.lookup(caller(7), 2.0)).outcome, "rate-limited")

    def test_rate_limited_without_retry_at(self) -> None:
        """A RateLimited failure with no retry_at answers failed and pauses nothing."""
        lookup = self.make()
        d = lookup.lookup(CALLER, 2.0)
        self.source.last().fail(RateLimited(ENDPOINT, 429, "window full", None))
        self.assertEqual(self.result_of(d).outcome, "failed")
        lookup.lookup(OTHER, 2.0)
        self.assertEqual(len(self.source.fetches), 2)
        self.source.last().found()
        self.assertEqual(lookup.stats.pauses, 0)


class RequestWindowTests(SynchronousTestCase):
    """
    The window on its own.
    """

    def test_window(self) -> None:
        """limit requests at once, a slot back window seconds after each, refused while paused."""
        clock = Clock()
        window = RequestWindow(clock, 3, 10.0)
        self.assertEqual([window.try_take() for _ in range(4)], [True, True, True, False])
        clock.advance(10.0)
        self.assertFalse(window.try_take())
        clock.advance(0.001)
        self.assertTrue(window.try_take())
        self.assertEqual(window.recent(), 1)
        window.pause_until(clock.seconds() + 5)
        window.pause_until(clock.seconds() + 1)  # a shorter pause does not shorten it
        self.assertTrue(window.paused())
        clock.advance(4.99)
        self.assertFalse(window.try_take())
        clock.advance(0.01)
        self.assertTrue(window.try_take())
        self.assertRaises(ValueError, RequestWindow, clock, 0)
        self.assertRaises(ValueError, RequestWindow, clock, 1, 0.0)


class BreakerTests(LookupTestsMixin, SynchronousTestCase):
    """
    The circuit breaker.
    """

    def fail_times(self, lookup: ProfileLookup, count: int, start: int = 0) -> None:
        for n in range(start, start + count):
            d = lookup.lookup(caller(n), 2.0)
            self.source.last().fail()
            self.assertEqual(self.result_of(d).outcome, "failed")

    def test_opens_after_failures(self) -> None:
        """N consecutive failures open the breaker; then lookups answer circuit-open without fetching."""
        lookup = self.make(breaker_failures=3, breaker_reset=10.0)
        self.fail_times(lookup, 2)
        self.assertEqual(lookup.breaker_state, "closed")
        self.fail_times(lookup, 1, start=2)
        self.assertEqual(lookup.breaker_state, "open")
        result = self.result_of(lookup.lookup(CALLER, 2.0))
        self.assertEqual(result, LookupResult(None, "circuit-open"))
        self.assertEqual(len(self.source.fetches), 3)
        self.assertEqual(lookup.stats.circuit_open, 1)

    def test_success_resets_count(self) -> None:
        """A success (404 included) between failures resets the count."""
        lookup = self.make(breaker_failures=3)
        self.fail_times(lookup, 2)
        lookup.lookup(CALLER, 2.0)
        self.source.last().missing()
        self.fail_times(lookup, 2, start=10)
        self.assertEqual(lookup.breaker_state, "closed")
        self.fail_times(lookup, 1, start=20)
        self.assertEqual(lookup.breaker_state, "open")

    def test_unexpected_errors_count(self) -> None:
        """Any exception from the source counts as a failure, not only ProfileError."""
        lookup = self.make(breaker_failures=2)
        for n in range(2):
            d = lookup.lookup(caller(n), 2.0)
            self.source.last().fail(RuntimeError("boom " + caller(n)))
            self.assertEqual(self.result_of(d).outcome, "failed")
        self.assertEqual(lookup.breaker_state, "open")
        self.assertIn("RuntimeError", self.shown())
        self.assertNotIn(caller(0), self.shown())

    def test_half_open_probe_success(self) -> None:
        """After breaker_reset one probe goes through; others answer circuit-open; success closes."""
        lookup = self.make(breaker_failures=2, breaker_reset=10.0)
        self.fail_times(lookup, 2)
        self.clock.advance(9.9)
        self.assertEqual(lookup.breaker_state, "open")
        self.clock.advance(0.1)
        self.assertEqual(lookup.breaker_state, "half-open")
        probe = lookup.lookup(CALLER, 2.0)
        self.assertEqual(self.result_of(lookup.lookup(OTHER, 2.0)).outcome, "circuit-open")
        joined = lookup.lookup(CALLER, 2.0)
        self.assertEqual(len(self.source.fetches), 3)
        self.source.last().found()
        self.assertEqual(self.result_of(probe).outcome, "found")
        self.assertEqual(self.result_of(joined).outcome, "found")
        self.assertEqual(lookup.breaker_state, "closed")
        lookup.lookup(OTHER, 2.0)
        self.source.last().found()
        self.assertEqual(len(self.source.fetches), 4)

    def test_half_open_probe_failure(self) -> None:
        """A failed probe opens the breaker again for another breaker_reset."""
        lookup = self.make(breaker_failures=2, breaker_reset=10.0)
        self.fail_times(lookup, 2)
        self.clock.advance(10)
        self.fail_times(lookup, 1, start=5)
        self.assertEqual(lookup.breaker_state, "open")
        self.clock.advance(9.9)
        self.assertEqual(self.result_of(lookup.lookup(CALLER, 2.0)).outcome, "circuit-open")
        self.clock.advance(0.1)
        self.assertEqual(lookup.breaker_state, "half-open")

    def test_probe_404_closes(self) -> None:
        """A 404 is a success: it closes a half-open breaker."""
        lookup = self.make(breaker_failures=1, breaker_reset=1.0)
        self.fail_times(lookup, 1)
        self.clock.advance(1)
        d = lookup.lookup(CALLER, 2.0)
        self.source.last().missing()
        self.assertEqual(self.result_of(d).outcome, "not-found")
        self.assertEqual(lookup.breaker_state, "closed")

    def test_probe_timing_out_still_counts(self) -> None:
        """A probe whose caller timed out still decides the breaker when it ends."""
        lookup = self.make(breaker_failures=1, breaker_reset=1.0)
        self.fail_times(lookup, 1)
        self.clock.advance(1)
        d = lookup.lookup(CALLER, 0.5)
        self.clock.advance(0.5)
        self.assertEqual(self.result_of(d).outcome, "timed-out")
        self.assertEqual(self.result_of(lookup.lookup(OTHER, 2.0)).outcome, "circuit-open")
        self.source.last().found()
        self.assertEqual(lookup.breaker_state, "closed")

    def test_hits_served_while_open(self) -> None:
        """Cached profiles and 404s are served while the breaker is open."""
        lookup = self.make(breaker_failures=1)
        lookup.lookup(CALLER, 2.0)
        self.source.last().found()
        lookup.lookup(OTHER, 2.0)
        self.source.last().missing()
        self.fail_times(lookup, 1)
        self.assertEqual(lookup.breaker_state, "open")
        self.assertEqual(self.result_of(lookup.lookup(CALLER, 2.0)).outcome, "hit")
        self.assertEqual(self.result_of(lookup.lookup(OTHER, 2.0)).outcome, "negative-hit")

    def test_old_fetches_ignored_once_open(self) -> None:
        """Fetches started while closed do not close or re-open the breaker after it opened."""
        lookup = self.make(breaker_failures=1, breaker_reset=10.0)
        slow_ok, slow_fail = lookup.lookup(caller(1), 20.0), lookup.lookup(caller(2), 20.0)
        ok_fetch, fail_fetch = self.source.fetches
        self.fail_times(lookup, 1, start=3)
        ok_fetch.found()
        self.assertEqual(lookup.breaker_state, "open")
        self.clock.advance(10)
        self.assertEqual(lookup.breaker_state, "half-open")
        fail_fetch.fail()
        self.assertEqual(lookup.breaker_state, "half-open")
        self.result_of(slow_ok)
        self.result_of(slow_fail)

    def test_cancelled_not_a_failure(self) -> None:
        """A fetch cancelled at stop() is not counted as a failure."""
        lookup = self.make(breaker_failures=1)
        lookup.lookup(CALLER, 2.0)
        lookup.stop()
        self.assertEqual(lookup.breaker_state, "closed")

    def test_cancelled_probe_frees_slot(self) -> None:
        """A probe cancelled at stop() lets another probe through."""
        lookup = self.make(breaker_failures=1, breaker_reset=1.0)
        self.fail_times(lookup, 1)
        self.clock.advance(1)
        lookup.lookup(CALLER, 2.0)
        lookup.stop()
        self.assertEqual(lookup.breaker_state, "half-open")
        lookup.lookup(OTHER, 2.0)
        self.assertEqual(len(self.source.fetches), 3)
        self.source.last().found()

    def test_state_changes_logged(self) -> None:
        """Opening, half-opening and closing are logged, without caller ids."""
        lookup = self.make(breaker_failures=1, breaker_reset=1.0)
        self.fail_times(lookup, 1)
        self.clock.advance(1)
        lookup.lookup(CALLER, 2.0)
        self.source.last().found()
        shown = self.shown()
        for phrase in ("open for 1.0s", "half-open", "closed"):
            self.assertIn(phrase, shown)
        self.assertNotIn(caller(0), shown)
        self.assertNotIn(CALLER, shown)

    def test_open_log_counts_failures(self) -> None:
        """The breaker's log line names the real count of failures in a row, not 0."""
        lookup = self.make(breaker_failures=3)
        for n in range(3):
            lookup.lookup(caller(n), 2.0)
            self.source.last().fail()
        self.assertEqual(lookup.breaker_state, "open")
        self.assertIn("after 3 consecutive failures", self.shown())
        self.assertNotIn("after 0 consecutive", self.shown())

    def test_breaker_alone(self) -> None:
        """The breaker on its own, driven by explicit times."""
        breaker = CircuitBreaker(failures=2, reset=5.0)
        self.assertTrue(breaker.allows(0.0))
        for _ in range(2):
            breaker.failed(0.0, breaker.started(0.0))
        self.assertEqual(breaker.state(4.9), "open")
        self.assertFalse(breaker.allows(4.9))
        self.assertTrue(breaker.allows(5.0))
        probe = breaker.started(5.0)
        self.assertTrue(probe)
        self.assertFalse(breaker.allows(5.0))
        breaker.abandoned(5.0, probe)
        self.assertTrue(breaker.allows(5.0))
        breaker.succeeded(6.0, breaker.started(6.0))
        self.assertEqual(breaker.state(6.0), "closed")
        self.assertRaises(ValueError, CircuitBreaker, 0, 1.0)


class StopTests(LookupTestsMixin, SynchronousTestCase):
    """
    Shutdown.
    """

    def test_stop_cancels_fetches(self) -> None:
        """stop() cancels every fetch, answers its callers with failed and leaves no timer."""
        lookup = self.make()
        waiting = [lookup.lookup(CALLER, 2.0), lookup.lookup(CALLER, 3.0), lookup.lookup(OTHER, 2.0)]
        lookup.stop()
        self.assertEqual([f.cancelled for f in self.source.fetches], [True, True])
        for d in waiting:
            self.assertEqual(self.result_of(d).outcome, "failed")
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(lookup.in_flight, 0)
        self.assertEqual(lookup.cache_size, 0)

    def test_stop_idle(self) -> None:
        """stop() with nothing in flight does nothing, twice."""
        lookup = self.make()
        lookup.stop()
        lookup.stop()

    def test_stubborn_source(self) -> None:
        """A fetch that ignores cancellation is let go of; its late answer changes nothing."""

        class Stubborn:
            def __init__(self) -> None:
                self.callbacks: list[Callable[..., Any]] = []

            def addBoth(self, f: Callable[..., Any], *args: Any) -> "Stubborn":
                self.callbacks.append(lambda result: f(result, *args))
                return self

            def cancel(self) -> None:
                pass

        stubborn = Stubborn()

        class Source:
            def fetch(self, external_id: str, deadline: Optional[float]) -> Any:
                return stubborn

        lookup = ProfileLookup(self.clock, Source())
        d = lookup.lookup(CALLER, 2.0)
        lookup.stop()
        self.assertEqual(self.result_of(d).outcome, "failed")
        for callback in stubborn.callbacks:
            callback(profile_for(CALLER))
        self.assertEqual(lookup.cache_size, 0)
        self.assertEqual(lookup.stats.found, 0)


class StatsTests(LookupTestsMixin, SynchronousTestCase):
    """
    The counters add up.
    """

    def test_counters(self) -> None:
        """Each outcome moves its counter, and every lookup is counted once."""
        lookup = self.make(rate_per_minute=4, breaker_failures=1, breaker_reset=60, max_entries=2)
        lookup.lookup(caller(1), 2.0)
        lookup.lookup(caller(1), 2.0)
        self.source.last().found()  # found x2, shared
        lookup.lookup(caller(1), 2.0)  # hit
        lookup.lookup(caller(2), 2.0)
        self.source.last().missing()  # not found
        lookup.lookup(caller(2), 2.0)  # negative hit
        cancelled = lookup.lookup(caller(3), 1.0)
        cancelled.cancel()
        self.failureResultOf(cancelled, CancelledError)
        lookup.lookup(caller(4), 1.0)
        self.clock.advance(1)  # timed out (x1), and the fetch of 3 still pending
        self.source.fetches[2].found()  # late fill of 3, evicts 1
        self.source.fetches[3].fail()  # no caller left to count it; the breaker opens
        self.assertEqual(self.result_of(lookup.lookup(caller(5), 2.0)).outcome, "circuit-open")
        stats = lookup.stats
        self.assertEqual(
            attrs.asdict(stats),
            {
                "lookups": 8,
                "hits": 1,
                "negative_hits": 1,
                "found": 2,
                "not_found": 1,
                "failed": 0,
                "rate_limited": 0,
                "circuit_open": 1,
                "timed_out": 1,
                "cancelled": 1,
                "shared": 1,
                "fetches": 4,
                "late_fills": 1,
                "evictions": 1,
                "pauses": 0,
                "too_large": 0,
            },
        )
        answered = sum(
            getattr(stats, name)
            for name in (
                "hits negative_hits found not_found failed rate_limited circuit_open timed_out cancelled"
            ).split()
        )
        self.assertEqual(answered, stats.lookups)

    def test_repr_hides_callers(self) -> None:
        """The lookup's repr shows sizes and state, no caller id."""
        lookup = self.make()
        lookup.lookup(CALLER, 2.0)
        self.assertNotIn(CALLER, repr(lookup))
        self.assertIn("in_flight=1", repr(lookup))
        self.source.last().found()


# One step of the random script: ("lookup", id, budget), ("advance", seconds),
# ("answer", which pending fetch, how) or ("cancel", which caller).
steps = st.one_of(
    st.tuples(st.just("lookup"), st.integers(0, 5), st.sampled_from([0.0, 0.5, 1.0, 3.0, math.inf])),
    st.tuples(st.just("advance"), st.sampled_from([0.0, 0.1, 0.5, 1.0, 2.0, 5.0, 30.0])),
    st.tuples(st.just("answer"), st.integers(0, 20), st.sampled_from(["ok", "404", "fail", "boom"])),
    st.tuples(st.just("cancel"), st.integers(0, 50)),
)


class PropertyTests(SynchronousTestCase):
    """
    Random scripts of lookups, time and answers.
    """

    @settings(max_examples=300, deadline=None)
    @given(
        script=st.lists(steps, max_size=60),
        max_entries=st.integers(0, 3),
        rate=st.sampled_from([1.0, 2.0, 5.0]),
        breaker_failures=st.integers(1, 3),
    )
    def test_random_scripts(
        self, script: list[tuple[Any, ...]], max_entries: int, rate: float, breaker_failures: int
    ) -> None:
        """Nothing raises, every caller is answered within its budget, and the cache stays bounded."""
        clock = Clock()
        source = FakeSource()
        lookup = ProfileLookup(
            clock,
            source,
            ttl=5.0,
            negative_ttl=1.0,
            max_entries=max_entries,
            rate_per_minute=rate,
            breaker_failures=breaker_failures,
            breaker_reset=3.0,
        )
        callers: list[tuple[float, Deferred[LookupResult]]] = []
        outcomes: list[str] = []

        def answered(result: LookupResult) -> LookupResult:
            outcomes.append(result.outcome)
            return result

        def cancelled(failure: Failure) -> None:
            failure.trap(CancelledError)

        for step in script:
            kind = step[0]
            if kind == "lookup":
                d = lookup.lookup(caller(step[1]), step[2])
                d.addCallback(answered)
                callers.append((clock.seconds() + step[2], d))
            elif kind == "advance":
                clock.advance(step[1])
            elif kind == "answer":
                pending = source.pending
                if pending:
                    fetch = pending[step[1] % len(pending)]
                    how = step[2]
                    if how == "ok":
                        fetch.found()
                    elif how == "404":
                        fetch.missing()
                    elif how == "fail":
                        fetch.fail()
                    else:
                        fetch.fail(ValueError("boom"))
            elif callers:
                callers[step[1] % len(callers)][1].cancel()
            now = clock.seconds()
            for deadline, d in callers:
                if deadline <= now:
                    self.assertTrue(d.called, (deadline, now))
            self.assertLessEqual(lookup.cache_size, max_entries)
            self.assertLessEqual(lookup.in_flight, len(source.pending))
            self.assertIn(lookup.breaker_state, {"closed", "open", "half-open"})
        lookup.stop()
        self.assertEqual(clock.getDelayedCalls(), [])
        self.assertEqual(source.pending, [])
        for _, d in callers:
            self.assertTrue(d.called)
            d.addErrback(cancelled)
        stats = lookup.stats
        self.assertEqual(stats.lookups, len(callers))
        self.assertEqual(len(outcomes) + stats.cancelled, len(callers))
        self.assertEqual(
            len(outcomes),
            stats.hits
            + stats.negative_hits
            + stats.found
            + stats.not_found
            + stats.failed
            + stats.rate_limited
            + stats.circuit_open
            + stats.timed_out,
        )
