"""
The shared paths of the profile lookup, the token source and the intake on
a :class:`~twisted.internet.task.Clock`, with a Redis that never answers (a
paused server) or refuses at once (a stopped one): every caller is
answered within its budget, from local state, and the health says so once.
"""

from __future__ import annotations

from typing import Any, List

from twisted.internet.defer import Deferred, fail
from twisted.internet.task import Clock
from twisted.logger import Logger
from twisted.trial.unittest import SynchronousTestCase
import txredisapi

from ivrproto.clients.limits import RequestWindow
from ivrproto.clients.lookup import ProfileLookup
from ivrproto.clients.profiles import Shape
from ivrproto.cluster import KeyScheme, SharedHealth, SharedRedis
from ivrproto.cluster.cache import SharedProfileCache
from ivrproto.cluster.lookup import SharedProfiles, encode_profile
from ivrproto.cluster.ratelimit import SharedRequestWindow
from ivrproto.cluster.tokens import SharedToken

from .test_lookup import CALLER, T0, FakeSource, profile_for

SHAPE = Shape(attributes="attributes", attributes_required=True,
              date_modified="dateModified", external_id="externalId")


class _Handler:
    "Every command: a Deferred that never fires (paused) or fails at once (stopped)."

    def __init__(self) -> None:
        self.stopped = False
        self.sent: List[str] = []

    def __getattr__(self, name: str) -> Any:
        def command(*args: Any, **kwargs: Any) -> Deferred[Any]:
            self.sent.append(name)
            if self.stopped:
                return fail(txredisapi.ConnectionError("connection refused"))
            return Deferred()

        return command


class _Connection:
    stuck = False

    def __init__(self) -> None:
        self.handler = _Handler()

    def rebuild(self) -> None:
        pass

    def close(self) -> Any:
        return None


class SharedTestsBase(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(T0)
        self.events: List[dict[str, Any]] = []
        self.health = SharedHealth(self.clock, Logger(observer=self.events.append))
        self.connection = _Connection()
        self.redis = SharedRedis(self.clock, self.connection, self.health, KeyScheme(),  # type: ignore[arg-type]
                                 timeout=0.05)
        self.addCleanup(self.redis.close)

    def lines(self, text: str) -> List[dict[str, Any]]:
        return [e for e in self.events if text in e.get("log_format", "")]


class LookupFallbackTests(SharedTestsBase):
    def make(self, limit: int = 3) -> ProfileLookup:
        self.source = FakeSource()
        lookup = ProfileLookup(self.clock, self.source, rate_per_minute=limit)
        window = SharedRequestWindow(self.redis, "client", lookup.request_window)
        lookup.use_shared(SharedProfiles(window, SharedProfileCache(self.redis), SHAPE))
        self.addCleanup(lookup.stop)
        return lookup

    def test_paused_redis_costs_two_timeouts_then_the_local_window(self) -> None:
        """Redis does not answer: the cache read and the window each time out (50 ms), then the fetch goes."""
        lookup = self.make()
        d = lookup.lookup(CALLER, 0.5)
        self.assertEqual(self.source.fetches, [])
        self.clock.advance(0.05)
        self.assertEqual(self.source.fetches, [])
        self.clock.advance(0.05)
        self.assertEqual(len(self.source.fetches), 1)
        self.source.last().found()
        self.assertEqual(self.successResultOf(d).outcome, "found")
        self.assertEqual(dict(self.health.fallbacks), {"cache_get": 1, "ratelimit": 1})

    def test_down_redis_falls_back_at_once_with_one_line(self) -> None:
        """Three failures make Redis down: later lookups send nothing to it, and one line says so."""
        lookup = self.make(limit=2)
        self.connection.handler.stopped = True
        results = []
        for n in range(4):
            results.append(lookup.lookup(f"+1 555 01{n:02d}", 0.5))
        for fetch in self.source.pending:
            fetch.missing()
        outcomes = [self.successResultOf(d).outcome for d in results]
        # The local window (2 a minute) decides while Redis is down.
        self.assertEqual(outcomes, ["not-found", "not-found", "rate-limited", "rate-limited"])
        self.assertFalse(self.health.up)
        self.assertEqual(len(self.lines("unavailable")), 1)
        sent = len(self.connection.handler.sent)
        lookup.lookup("+1 555 0199", 0.5)
        self.assertEqual(len(self.connection.handler.sent), sent)

    def test_budget_holds_while_redis_is_slow(self) -> None:
        """A caller with a 30 ms budget is answered at 30 ms even though Redis has not answered."""
        lookup = self.make()
        d = lookup.lookup(CALLER, 0.03)
        self.clock.advance(0.03)
        self.assertEqual(self.successResultOf(d).outcome, "timed-out")
        self.clock.advance(0.02)  # the cache read times out
        self.clock.advance(0.05)  # the window's too: the fetch still goes, to fill the cache
        self.assertEqual(len(self.source.fetches), 1)
        self.source.last().found()

    def test_a_known_pause_answers_without_a_round_trip(self) -> None:
        """While the local window knows of a pause, lookups are rate-limited at once."""
        lookup = self.make()
        lookup.request_window.pause_until(T0 + 10)
        sent = len(self.connection.handler.sent)
        self.assertEqual(self.successResultOf(lookup.lookup(CALLER, 0.5)).outcome, "rate-limited")
        self.assertEqual(len(self.connection.handler.sent), sent)


class EncodeTests(SynchronousTestCase):
    def test_round_trip(self) -> None:
        """A stored profile reads back equal, nested values included."""
        profile = profile_for(CALLER)
        nested = type(profile)(id="p", external_id=CALLER,
                               attributes={"a": {"b": [1, {"c": None}]}, "n": 1.5},
                               date_modified="2026-01-01T00:00:00Z")
        for p in (profile, nested):
            body = encode_profile(SHAPE, p)
            back = SHAPE.read(body, CALLER, lambda what: AssertionError(what))  # type: ignore[arg-type,return-value]
            self.assertEqual(back, p)
            self.assertNotIn(CALLER.encode(), body.replace(b'"externalId":"' + CALLER.encode(), b""))


class TokenFallbackTests(SharedTestsBase):
    def test_unavailable_redis_fetches_its_own(self) -> None:
        """With Redis refusing, obtain() fetches this instance's own token."""
        from ivrproto.cluster.tokens import TokenGrant

        self.connection.handler.stopped = True
        shared = SharedToken(self.redis, "client")
        fetched = []

        async def fetch() -> TokenGrant:
            fetched.append(1)
            return TokenGrant("tok", 3600)

        grant = self.successResultOf(shared.obtain(fetch, 60))
        self.assertEqual((grant.token, fetched), ("tok", [1]))
        self.assertEqual(dict(self.health.fallbacks), {"token_get": 1})
