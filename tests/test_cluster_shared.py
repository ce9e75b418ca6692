"""
The shared operations of :mod:`ivrproto.cluster` against a real
``redis-server``, each "instance" with a pool of its own, on the real
reactor.
"""

from __future__ import annotations

from typing import Any, List

from twisted.internet import reactor
from twisted.internet.defer import gatherResults, inlineCallbacks, succeed
from twisted.logger import Logger
from twisted.trial.unittest import TestCase

from ivrproto.clients.limits import RequestWindow
from ivrproto.cluster import KeyScheme, SharedHealth, SharedRedis, connect, parse_redis_url
from ivrproto.cluster.cache import MISS, NEGATIVE, Hit, SharedProfileCache
from ivrproto.cluster.claims import SharedClaims
from ivrproto.cluster.ratelimit import SharedRequestWindow
from ivrproto.cluster.tokens import SharedToken, TokenGrant

from .redis_server import SKIP_REASON, RedisServer

#: Generous: these tests are about sharing, not about the time bound, and
#: a busy test machine must not turn a round trip into a fallback.
TIMEOUT = 2.0


class RedisTestCase(TestCase):
    """
    Starts a redis-server; :meth:`instance` makes a SharedRedis with a pool
    of its own, closed at the end.
    """

    if SKIP_REASON:
        skip = SKIP_REASON
    timeout = 60
    shared_timeout = TIMEOUT

    def setUp(self) -> None:
        self.server = RedisServer()
        self.server.start()
        self.addCleanup(self.server.cleanup)
        self.events: List[dict[str, Any]] = []

    def instance(self, prefix: str = "test:") -> SharedRedis:
        address = parse_redis_url(self.server.url, {})
        health = SharedHealth(reactor, Logger(observer=self.events.append))
        shared = SharedRedis(
            reactor,
            connect(reactor, address, max_reconnect_delay=0.5),
            health,
            KeyScheme(prefix=prefix),
            timeout=self.shared_timeout,
            probe_timeout=self.shared_timeout,
        )
        self.addCleanup(shared.close)
        return shared

    def raw(self, shared: SharedRedis, *command: Any) -> Any:
        "One raw command on an instance's pool (for checks)."
        return shared.connection.handler.execute_command(*command)


class RateLimitTests(RedisTestCase):
    @inlineCallbacks
    def test_limit_shared_by_two_instances(self) -> None:
        "Two instances with one client id take N between them, not N each."
        a, b = self.instance(), self.instance()
        wa = SharedRequestWindow(a, "client-1", RequestWindow(reactor, 5))
        wb = SharedRequestWindow(b, "client-1", RequestWindow(reactor, 5))
        results = []
        for _ in range(6):
            results.append((yield wa.try_take()))
            results.append((yield wb.try_take()))
        self.assertEqual(sum(r.allowed for r in results), 5)
        self.assertTrue(all(r.shared for r in results))
        refused = [r for r in results if not r.allowed]
        self.assertTrue(all(50 < r.retry_in <= 60 and not r.paused for r in refused))
        # Another client id has its own limit.
        other = SharedRequestWindow(a, "client-2", RequestWindow(reactor, 5))
        self.assertTrue((yield other.try_take()).allowed)

    @inlineCallbacks
    def test_sliding_window_on_server_clock(self) -> None:
        "Requests older than the window are forgotten, newer ones still count."
        a = self.instance()
        w = SharedRequestWindow(a, "client-1", RequestWindow(reactor, 3))
        seconds, micros = yield self.raw(a, "TIME")
        now = int(seconds) * 1_000_000 + int(micros)
        key = a.keys.key("rl", "client-1")
        # Two requests 61 s ago (gone) and two 59 s ago (still counted).
        yield self.raw(a, "ZADD", key, now - 61_000_000, "old1", now - 61_000_000, "old2")
        yield self.raw(a, "ZADD", key, now - 59_000_000, "new1", now - 59_000_000, "new2")
        first = yield w.try_take()
        second = yield w.try_take()
        self.assertEqual((first.allowed, second.allowed), (True, False))
        self.assertTrue(0 < second.retry_in <= 1.5, second)

    @inlineCallbacks
    def test_key_has_no_client_id(self) -> None:
        "The client id is in no key."
        a = self.instance()
        w = SharedRequestWindow(a, "my-client-id", RequestWindow(reactor, 3))
        yield w.try_take()
        yield w.pause_for(1.0)
        keys = yield self.raw(a, "KEYS", "*")
        self.assertEqual(len(keys), 2)
        self.assertFalse([k for k in keys if b"my-client-id" in k])

    @inlineCallbacks
    def test_pause_propagates(self) -> None:
        "A pause set by one instance refuses lookups on the other at once."
        a, b = self.instance(), self.instance()
        wa = SharedRequestWindow(a, "client-1", RequestWindow(reactor, 50))
        wb = SharedRequestWindow(b, "client-1", RequestWindow(reactor, 50))
        self.assertTrue((yield wb.try_take()).allowed)
        left = yield wa.pause_for(30.0)
        self.assertEqual(left, 30000)
        refused = yield wb.try_take()
        self.assertEqual((refused.allowed, refused.shared, refused.paused), (False, True, True))
        self.assertTrue(25 < refused.retry_in <= 30)
        # b now knows the pause locally too, for when Redis is unavailable.
        self.assertTrue(wb.local.paused())
        # A shorter pause does not cut a longer one.
        self.assertGreater((yield wb.pause_for(1.0)), 25000)


class CacheTests(RedisTestCase):
    @inlineCallbacks
    def test_hit_miss_negative_ttl(self) -> None:
        "Profiles as bytes, negative entries, TTLs; read by another instance."
        a, b = self.instance(), self.instance()
        ca, cb = SharedProfileCache(a), SharedProfileCache(b)
        body = b'{"membership_level": "premium", "n": 007, "\xff": ""}'
        self.assertIs((yield cb.get("+15550001111")), MISS)
        yield ca.set("+15550001111", body, ttl=30.0)
        yield ca.set_negative("CRM-NOBODY", ttl=5.0)
        yield ca.set("CRM-EMPTY", b"", ttl=5.0)
        self.assertEqual((yield cb.get("+15550001111")), Hit(body))
        self.assertIs((yield cb.get("CRM-NOBODY")), NEGATIVE)
        self.assertEqual((yield cb.get("CRM-EMPTY")), Hit(b""))
        key = a.keys.key("profile", "+15550001111")
        ttl = yield self.raw(a, "PTTL", key)
        self.assertTrue(25_000 < int(ttl) <= 30_000, ttl)
        negative_ttl = yield self.raw(a, "PTTL", a.keys.key("profile", "CRM-NOBODY"))
        self.assertTrue(0 < int(negative_ttl) <= 5_000)
        keys = yield self.raw(a, "KEYS", "*")
        self.assertFalse([k for k in keys if b"5550001111" in k or b"CRM" in k], keys)

    @inlineCallbacks
    def test_expired_entry_is_a_miss(self) -> None:
        "An entry past its TTL reads as a miss."
        a = self.instance()
        cache = SharedProfileCache(a)
        yield cache.set("k", b"{}", ttl=30.0)
        # Expire it now on the server instead of waiting 30 s.
        yield self.raw(a, "PEXPIREAT", a.keys.key("profile", "k"), 1)
        self.assertIs((yield cache.get("k")), MISS)

    @inlineCallbacks
    def test_prefixes_keep_deployments_apart(self) -> None:
        "Two key prefixes on one Redis do not see each other's entries."
        one, two = self.instance("dep1:"), self.instance("dep2:")
        yield SharedProfileCache(one).set("k", b"{}", ttl=10.0)
        self.assertIs((yield SharedProfileCache(two).get("k")), MISS)


class TokenTests(RedisTestCase):
    @inlineCallbacks
    def test_one_refresh_for_three_instances(self) -> None:
        "Three cold instances asking at once make one token request."
        tokens = [SharedToken(self.instance(), "client-1") for _ in range(3)]
        fetches: List[int] = []

        def fetch() -> Any:
            fetches.append(1)
            return succeed(TokenGrant(f"token-{len(fetches)}", 3600.0))

        grants = yield gatherResults([t.obtain(fetch, 60.0) for t in tokens])
        self.assertEqual(len(fetches), 1)
        self.assertEqual({g.token for g in grants}, {"token-1"})
        # Later askers get the stored one, with its remaining validity.
        again = yield tokens[2].obtain(fetch, 60.0)
        self.assertEqual(again.token, "token-1")
        self.assertTrue(3500 < again.expires_in <= 3600)
        self.assertEqual(len(fetches), 1)

    @inlineCallbacks
    def test_invalidate_everywhere_but_not_a_newer_one(self) -> None:
        "invalidate() deletes the refused token for all; a newer one is kept."
        a, b = SharedToken(self.instance(), "c"), SharedToken(self.instance(), "c")
        yield a.obtain(lambda: succeed(TokenGrant("old", 3600.0)))
        self.assertEqual((yield b.invalidate("old")), 1)
        self.assertIsNone((yield a.read()))
        yield b.obtain(lambda: succeed(TokenGrant("new", 3600.0)))
        self.assertEqual((yield a.invalidate("old")), 0)
        self.assertEqual((yield a.read()).token, "new")

    @inlineCallbacks
    def test_refresh_failure_releases_the_lock(self) -> None:
        "A failed fetch releases the lock, so the next instance can refresh."
        a, b = SharedToken(self.instance(), "c"), SharedToken(self.instance(), "c")

        def broken() -> Any:
            raise RuntimeError("token endpoint down")

        with self.assertRaises(RuntimeError):
            yield a.obtain(broken)
        grant = yield b.obtain(lambda: succeed(TokenGrant("t", 60.0)))
        self.assertEqual(grant.token, "t")


    @inlineCallbacks
    def test_old_token_while_another_refreshes(self) -> None:
        "While another instance holds the lock, a still-valid old token is used."
        shared = self.instance()
        token = SharedToken(shared, "c")
        yield token.obtain(lambda: succeed(TokenGrant("old", 5.0)))
        yield self.raw(shared, "SET", shared.keys.key("token", "c", ":lock"), "other", "PX", 10000)

        def fetch() -> Any:
            raise AssertionError("no fetch while another instance refreshes")

        grant = yield token.obtain(fetch, min_validity=60.0)
        self.assertEqual(grant.token, "old")

    @inlineCallbacks
    def test_dead_holder(self) -> None:
        "No token and a lock whose holder never publishes: fetch after the wait bound."
        shared = self.instance()
        token = SharedToken(shared, "c", wait_bound=0.2, poll_interval=0.05)
        yield self.raw(shared, "SET", shared.keys.key("token", "c", ":lock"), "dead", "PX", 10000)
        grant = yield token.obtain(lambda: succeed(TokenGrant("mine", 60.0)))
        self.assertEqual(grant.token, "mine")

    @inlineCallbacks
    def test_token_not_in_keys(self) -> None:
        "The client id is in no key; the token only in its value."
        shared = self.instance()
        yield SharedToken(shared, "client-xyz").obtain(lambda: succeed(TokenGrant("t0k", 60.0)))
        keys = yield self.raw(shared, "KEYS", "*")
        self.assertEqual(len(keys), 1)
        self.assertNotIn(b"client-xyz", keys[0])


class ClaimTests(RedisTestCase):
    @inlineCallbacks
    def test_claim_refused_by_other_instances(self) -> None:
        "An id claimed on one instance is refused on the others in the window."
        a, b = SharedClaims(self.instance()), SharedClaims(self.instance())
        self.assertIs((yield a.claim("call-1", 60.0)), True)
        self.assertIs((yield b.claim("call-1", 60.0)), False)
        self.assertIs((yield a.claim("call-1", 60.0)), False)
        self.assertIs((yield b.claim("call-2", 60.0)), True)
        # Only the holder releases.
        self.assertEqual((yield b.release("call-1")), 0)
        self.assertEqual((yield a.release("call-1")), 1)
        self.assertIs((yield b.claim("call-1", 60.0)), True)

    @inlineCallbacks
    def test_outcome_readable_anywhere(self) -> None:
        "An outcome written by one instance is read by another."
        a, b = SharedClaims(self.instance()), SharedClaims(self.instance())
        outcome = {"callControlId": "call-9", "outcome": "transferred", "keys": ["1"]}
        yield a.write_outcome("call-9", outcome, ttl=600.0)
        self.assertEqual((yield b.read_outcome("call-9")), outcome)
        self.assertIsNone((yield b.read_outcome("call-unknown")))
