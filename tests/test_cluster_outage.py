"""
A real ``redis-server`` stopped, paused (``SIGSTOP``) and restarted under
the shared operations: each one falls back to local state within its
timeout and never raises, one line says Redis is down and one that it is
back, and the shared state is used again once it is.
"""

from __future__ import annotations

from typing import Any, Callable, List

from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults, inlineCallbacks, succeed
from twisted.logger import formatEvent
from twisted.trial.unittest import SkipTest, TestCase

from ivrproto.clients.limits import RequestWindow
from ivrproto.cluster import SharedRedis, Unavailable
from ivrproto.cluster.cache import MISS, Hit, SharedProfileCache
from ivrproto.cluster.claims import SharedClaims
from ivrproto.cluster.ratelimit import Admission, SharedRequestWindow
from ivrproto.cluster.tokens import SharedToken, TokenGrant

from .test_cluster_shared import RedisTestCase

#: Short, so that the fallbacks come quickly; long enough for a loaded
#: test machine to answer the round trips made while Redis is up.
OUTAGE_TIMEOUT = 0.25


class Instance:
    "One instance's shared operations, and its local token fetches."

    def __init__(self, shared: SharedRedis) -> None:
        self.shared = shared
        self.window = SharedRequestWindow(shared, "client", RequestWindow(reactor, 100))
        self.cache = SharedProfileCache(shared)
        self.token = SharedToken(shared, "client", wait_bound=0.5)
        self.claims = SharedClaims(shared)
        self.fetches = 0
        self.calls = 0

    def fetch(self) -> "Deferred[TokenGrant]":
        self.fetches += 1
        return succeed(TokenGrant(f"token-{self.fetches}", 3600.0))

    def operations(self) -> List[Callable[[], "Deferred[Any]"]]:
        "Each shared operation once, as a call would use them, not yet run."
        self.calls += 1
        call = f"call-{self.calls}"
        return [
            self.window.try_take,
            lambda: self.cache.get("+15550001111"),
            lambda: self.cache.set("+15550001111", b'{"a": 1}', 30.0),
            self.token.read,
            lambda: self.claims.claim(call, 60.0),
            lambda: self.claims.write_outcome(call, {"outcome": "transferred"}, 60.0),
            lambda: self.claims.read_outcome(call),
        ]

    def start_all(self) -> List["Deferred[Any]"]:
        "Start every operation at once."
        return [operation() for operation in self.operations()]

    @inlineCallbacks
    def run_all(self) -> Any:
        "Run :meth:`operations` one after the other; their results."
        results = []
        for operation in self.operations():
            results.append((yield operation()))
        return results


def fell_back(result: Any) -> bool:
    if isinstance(result, Admission):
        return not result.shared
    return isinstance(result, Unavailable)


class OutageTests(RedisTestCase):
    shared_timeout = OUTAGE_TIMEOUT

    def setUp(self) -> None:
        super().setUp()
        self.one = Instance(self.instance())

    def lines(self, text: str) -> List[str]:
        return [line for line in map(formatEvent, self.events) if text in line]

    @inlineCallbacks
    def check_outage(self, expected_reasons: set[str]) -> Any:
        """
        With Redis out: every operation falls back (the first ones on their
        timeout or a lost connection, the rest at once), one down line.
        """
        results = yield self.one.run_all()
        self.assertTrue(all(fell_back(r) for r in results), results)
        reasons = {r.reason for r in results if isinstance(r, Unavailable)}
        self.assertLessEqual(reasons, expected_reasons | {"down"})
        self.assertTrue(reasons & expected_reasons, reasons)
        self.assertFalse(self.one.shared.health.up)
        # Down: every operation now falls back without waiting at all.
        now = self.one.start_all()
        self.assertTrue(all(d.called for d in now))
        again = yield gatherResults(now)
        self.assertEqual({r.reason for r in again if isinstance(r, Unavailable)}, {"down"})
        # The local limiter and token fetch take over.
        self.assertTrue(again[0].allowed)
        grant = yield self.one.token.obtain(self.one.fetch)
        self.assertEqual((grant.token, self.one.fetches), ("token-1", 1))
        self.assertEqual(len(self.lines("unavailable")), 1)
        self.assertEqual(self.lines("is back"), [])

    @inlineCallbacks
    def check_back(self) -> Any:
        "Redis is back: one back line, and the shared state is used again."
        yield self.one.shared.health.when_up()
        results = yield self.one.run_all()
        self.assertFalse([r for r in results if fell_back(r)], results)
        self.assertEqual(len(self.lines("unavailable")), 1)
        self.assertEqual(len(self.lines("is back")), 1)
        return results

    @inlineCallbacks
    def test_stopped_and_restarted(self) -> None:
        "Stopped: fallbacks; restarted (its data gone): shared again."
        before = yield self.one.run_all()
        self.assertFalse([r for r in before if fell_back(r)], before)
        self.server.stop()
        yield self.check_outage({"timeout", "connection"})
        self.server.restart()
        results = yield self.check_back()
        # The restarted server kept nothing, and says so honestly.
        self.assertIs(results[1], MISS)
        self.assertIsNone(results[3])

    @inlineCallbacks
    def test_paused_and_resumed(self) -> None:
        "Paused (SIGSTOP): fallbacks on timeouts; resumed: shared again."
        yield self.one.run_all()
        self.server.pause()
        yield self.check_outage({"timeout"})
        self.server.resume()
        results = yield self.check_back()
        self.assertEqual(results[1], Hit(b'{"a": 1}'))

    @inlineCallbacks
    def test_restarted_mid_run(self) -> None:
        "Operations in flight when Redis restarts end, shared or not; none raises."
        yield self.one.run_all()
        in_flight = [d for _ in range(20) for d in self.one.start_all()]
        self.server.restart()
        results = yield gatherResults(in_flight)
        self.assertEqual(len(results), 140)
        yield self.one.shared.health.when_up()
        after = yield self.one.run_all()
        self.assertFalse([r for r in after if fell_back(r)], after)
        # At most one outage, and as many lines as transitions.
        self.assertEqual(len(self.lines("unavailable")), self.one.shared.health.outages)
        self.assertEqual(len(self.lines("is back")), self.one.shared.health.outages)


class NeverReachedTests(TestCase):
    "A Redis that was never there: every operation falls back, none hangs."

    timeout = 30

    @inlineCallbacks
    def test_nothing_listening(self) -> None:
        from twisted.logger import Logger

        from ivrproto.cluster import KeyScheme, SharedHealth, connect, parse_redis_url

        from .redis_server import _free_port

        events: List[dict[str, Any]] = []
        address = parse_redis_url(f"redis://127.0.0.1:{_free_port()}/0", {})
        shared = SharedRedis(
            reactor,
            connect(reactor, address),
            SharedHealth(reactor, Logger(observer=events.append)),
            KeyScheme(),
            timeout=0.05,
        )
        self.addCleanup(shared.close)
        results = yield Instance(shared).run_all()
        self.assertTrue(all(fell_back(r) for r in results), results)
        self.assertEqual(len(events), 1)


class PasswordTests(RedisTestCase):
    "A server with a password: AUTH on every connection, never a password in a log."

    def setUp(self) -> None:
        from .redis_server import RedisServer

        self.server = RedisServer("--requirepass", "pw-from-env")
        self.server.start()
        self.addCleanup(self.server.cleanup)
        self.events = []
        self.everything: List[dict[str, Any]] = []
        from twisted.logger import globalLogPublisher

        globalLogPublisher.addObserver(self.everything.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.everything.append)

    def with_password(self, password: str) -> SharedRedis:
        from twisted.logger import Logger

        from ivrproto.cluster import KeyScheme, SharedHealth, connect, parse_redis_url

        address = parse_redis_url(self.server.url, {"IVR_REDIS_PASSWORD": password})
        shared = SharedRedis(
            reactor,
            connect(reactor, address, max_reconnect_delay=0.5),
            SharedHealth(reactor, Logger(observer=self.events.append), probe_interval=0.1),
            KeyScheme(),
            timeout=OUTAGE_TIMEOUT,
        )
        self.addCleanup(shared.close)
        return shared

    @inlineCallbacks
    def test_password_from_environment(self) -> None:
        "The password from IVR_REDIS_PASSWORD authenticates the pool."
        claims = SharedClaims(self.with_password("pw-from-env"))
        self.assertIs((yield claims.claim("call-1", 10.0)), True)

    @inlineCallbacks
    def test_wrong_password(self) -> None:
        "A refused password: fallbacks, one line, no secret logged."
        shared = self.with_password("wrong-pw")
        claims = SharedClaims(shared)
        results = []
        for n in range(4):
            results.append((yield claims.claim(f"call-{n}", 10.0)))
        self.assertTrue(all(isinstance(r, Unavailable) for r in results), results)
        self.assertFalse(shared.health.up)
        self.assertEqual(len(self.events), 1)
        text = " ".join(formatEvent(e) for e in self.everything)
        self.assertNotIn("wrong-pw", text)
        self.assertNotIn("pw-from-env", text)


class TLSTests(TestCase):
    "rediss://: the server's certificate checked against the host name."

    timeout = 30

    def setUp(self) -> None:
        from .certs import TestCA
        from .redis_server import SKIP_REASON, RedisServer

        if SKIP_REASON:
            raise SkipTest(SKIP_REASON)
        self.ca = TestCA()
        issued = self.ca.issue(["localhost", "127.0.0.1"])
        self.server = RedisServer(tls=(issued.cert_pem, issued.key_pem))
        try:
            self.server.start()
        except RuntimeError:
            raise SkipTest("this redis-server does not speak TLS")
        self.addCleanup(self.server.cleanup)

    def shared(self, trusted: bytes) -> SharedRedis:
        from twisted.internet.ssl import Certificate
        from twisted.logger import Logger

        from ivrproto.cluster import KeyScheme, SharedHealth, connect, parse_redis_url

        address = parse_redis_url(f"rediss://localhost:{self.server.port}/0", {})
        shared = SharedRedis(
            reactor,
            connect(reactor, address, trust_root=Certificate.loadPEM(trusted)),
            SharedHealth(reactor, Logger(observer=lambda e: None)),
            KeyScheme(),
            timeout=2.0,
        )
        self.addCleanup(shared.close)
        return shared

    @inlineCallbacks
    def test_trusted(self) -> None:
        "A certificate from the trusted CA: the operations go through."
        claims = SharedClaims(self.shared(self.ca.cert_pem))
        self.assertIs((yield claims.claim("call-1", 10.0)), True)

    @inlineCallbacks
    def test_untrusted(self) -> None:
        "A certificate from another CA: refused, the operation falls back."
        from .certs import TestCA

        claims = SharedClaims(self.shared(TestCA("other").cert_pem))
        self.assertIsInstance((yield claims.claim("call-1", 10.0)), Unavailable)
