"""
Tests for :mod:`ivrproto.cluster.health` and the time bound of
:class:`ivrproto.cluster.redis.SharedRedis`, on a fake clock and a fake
txredisapi handler.
"""

from __future__ import annotations

from typing import Any, List

from prometheus_client.core import CollectorRegistry
from prometheus_client import generate_latest
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.logger import Logger, formatEvent
from twisted.trial.unittest import SynchronousTestCase
import txredisapi

from ivrproto.cluster.health import SharedHealth, Unavailable
from ivrproto.cluster.redis import KeyScheme, RedisConnection, SharedRedis


class FakeConnection:
    "Stands for :class:`ivrproto.cluster.redis.RedisConnection`."

    def __init__(self) -> None:
        self.handler = object()
        self.rebuilt = 0
        self.closed = False

    def rebuild(self) -> None:
        self.rebuilt += 1

    def close(self) -> "Deferred[None]":
        self.closed = True
        return succeed(None)


class Ping:
    "A handler whose ping() answers as told."

    def __init__(self) -> None:
        self.answer: Any = None  # None: never answers

    def ping(self) -> "Deferred[Any]":
        if self.answer is None:
            return Deferred()
        return succeed(self.answer)


def lines(events: List[dict[str, Any]]) -> List[str]:
    return [formatEvent(e) for e in events]


class HealthTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.events: List[dict[str, Any]] = []
        self.health = SharedHealth(
            self.clock, Logger(observer=self.events.append), trip_after=2
        )

    def test_trips_after_failures_in_a_row(self) -> None:
        "Down after trip_after failures in a row; a success in between resets."
        self.health.failed(Unavailable("cache_get", "timeout"))
        self.health.succeeded()
        self.health.failed(Unavailable("cache_get", "timeout"))
        self.assertTrue(self.health.up)
        self.health.failed(Unavailable("claim", "connection"))
        self.assertFalse(self.health.up)
        self.assertEqual(self.health.fallbacks, {"cache_get": 2, "claim": 1})

    def test_one_line_down_one_line_back(self) -> None:
        "However many failures, one line when down and one when back."
        for _ in range(10):
            self.health.failed(Unavailable("ratelimit", "timeout"))
        self.clock.advance(3)
        self.health.succeeded()
        self.health.succeeded()
        text = lines(self.events)
        self.assertEqual(len(text), 2, text)
        self.assertIn("unavailable (timeout on ratelimit)", text[0])
        self.assertIn("back after 3.0s", text[1])
        self.assertEqual(self.health.outages, 1)

    def test_when_up(self) -> None:
        "when_up fires at once when up, else when Redis is back."
        self.assertTrue(self.health.when_up().called)
        for _ in range(2):
            self.health.failed(Unavailable("probe", "timeout"))
        d = self.health.when_up()
        self.assertFalse(d.called)
        self.health.succeeded()
        self.assertTrue(d.called)

    def test_metrics(self) -> None:
        "ivr_shared_fallbacks_total by operation, ivr_shared_up."
        self.health.failed(Unavailable("cache_get", "timeout"))

        class Collector:
            def collect(inner) -> Any:
                return self.health.metric_families()

        registry = CollectorRegistry()
        registry.register(Collector())  # type: ignore[arg-type]
        text = generate_latest(registry).decode()
        self.assertIn('ivr_shared_fallbacks_total{operation="cache_get"} 1.0', text)
        self.assertIn("ivr_shared_up 1.0", text)

    def test_unavailable_is_falsy(self) -> None:
        "An Unavailable result is never mistaken for a success."
        self.assertFalse(Unavailable("claim", "down"))


class SharedRedisTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.events: List[dict[str, Any]] = []
        self.health = SharedHealth(
            self.clock, Logger(observer=self.events.append), trip_after=1, probe_interval=1.0
        )
        self.connection = FakeConnection()
        self.redis = SharedRedis(
            self.clock, self.connection, self.health, timeout=0.05, probe_timeout=0.2  # type: ignore[arg-type]
        )

    def test_timeout(self) -> None:
        "A round trip with no answer gives Unavailable(timeout) after the timeout."
        d = self.redis.run("cache_get", lambda r: Deferred())
        self.clock.advance(0.049)
        self.assertNoResult(d)
        self.clock.advance(0.001)
        self.assertEqual(self.successResultOf(d), Unavailable("cache_get", "timeout"))

    def test_errors_become_unavailable(self) -> None:
        "Connection errors, Redis errors and exceptions never reach the caller."
        cases = [
            (lambda r: fail(txredisapi.ConnectionError("Lost connection")), "connection"),
            (lambda r: fail(txredisapi.ResponseError("OOM command not allowed")), "error"),
            (lambda r: 1 / 0, "error"),
        ]
        for command, reason in cases:
            self.health.succeeded()
            d = self.redis.run("claim", command)
            self.assertEqual(self.successResultOf(d), Unavailable("claim", reason))

    def test_down_means_no_wait(self) -> None:
        "While down, operations fall back at once and Redis is not asked."
        self.redis.run("claim", lambda r: Deferred())
        self.clock.advance(0.05)
        asked: List[int] = []
        d = self.redis.run("claim", lambda r: asked.append(1) or Deferred())
        self.assertEqual(self.successResultOf(d), Unavailable("claim", "down"))
        self.assertEqual(asked, [])
        self.assertEqual(self.health.fallbacks["claim"], 2)

    def test_probe_until_back(self) -> None:
        "While down a PING every probe_interval; its success brings Redis back."
        ping = Ping()
        self.connection.handler = ping
        self.redis.run("claim", lambda r: Deferred())
        self.clock.advance(0.05)
        self.clock.advance(1.0)  # first probe: no answer
        self.clock.advance(0.2)
        self.assertFalse(self.health.up)
        ping.answer = "PONG"
        self.clock.advance(1.0)
        self.assertTrue(self.health.up)
        self.assertEqual(self.connection.rebuilt, 2)
        self.assertEqual(len(self.events), 2)
        self.assertNotIn("probe", self.health.fallbacks)

    def test_close_stops_probing(self) -> None:
        "After close(), no probe is left scheduled."
        self.redis.run("claim", lambda r: Deferred())
        self.clock.advance(0.05)
        self.redis.close()
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertTrue(self.connection.closed)


class KeySchemeTests(SynchronousTestCase):
    def test_no_raw_values(self) -> None:
        "Keys carry a digest of the value, never the value; the salt changes it."
        plain = KeyScheme(prefix="dep1:")
        salted = KeyScheme(prefix="dep1:", salt=b"s3cret")
        key = plain.key("profile", "+15551234567")
        self.assertTrue(key.startswith("dep1:profile:"))
        self.assertNotIn("5551234567", key)
        self.assertNotEqual(key, salted.key("profile", "+15551234567"))
        self.assertNotIn("s3cret", repr(salted))

    def test_prefix_checked(self) -> None:
        with self.assertRaises(ValueError):
            KeyScheme(prefix="has space")


class FakeFactory:
    "Stands for a txredisapi RedisFactory."

    def __init__(self) -> None:
        self.handler = object()
        self.stopped = False
        self.size = 0
        self.disconnected = False

    def disconnect(self) -> "Deferred[None]":
        self.stopped = self.disconnected = True
        return succeed(None)


class RedisConnectionTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.made: List[FakeFactory] = []

        def make() -> FakeFactory:
            self.made.append(FakeFactory())
            return self.made[-1]

        self.connection = RedisConnection(make)

    def test_rebuilt_when_stuck(self) -> None:
        "A pool that stopped reconnecting (failed AUTH or SELECT) is replaced."
        self.connection.rebuild()
        self.assertEqual(len(self.made), 1)
        self.made[0].stopped = True  # what txredisapi's stopTrying() leaves
        self.assertTrue(self.connection.stuck)
        self.connection.rebuild()
        self.assertEqual(len(self.made), 2)
        self.assertTrue(self.made[0].disconnected)
        self.assertIs(self.connection.handler, self.made[1].handler)

    def test_not_rebuilt_after_close(self) -> None:
        "A pool closed on purpose stays closed."
        self.connection.close()
        self.assertFalse(self.connection.stuck)
        self.connection.rebuild()
        self.assertEqual(len(self.made), 1)
