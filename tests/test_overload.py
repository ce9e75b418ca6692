"""
Load shedding: a reactor running late makes the intake refuse new calls.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import inlineCallbacks
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from ivrproto.overload import LoopLag

from .test_integration import ServiceTestCase


class LoopLagTests(SynchronousTestCase):
    def test_on_time(self) -> None:
        """Timers that run on time show no lag."""
        clock = Clock()
        lag = LoopLag(clock, interval=0.05, limit=0.1)
        lag.start()
        for _ in range(10):
            clock.advance(0.05)
        self.assertEqual(lag.lag, 0.0)
        self.assertFalse(lag.overloaded)
        lag.stop()
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_late_then_recovering(self) -> None:
        """A late turn starts shedding at once; prompt turns end it."""
        clock = Clock()
        lag = LoopLag(clock, interval=0.05, limit=0.1)
        lag.start()
        clock.advance(0.3)  # the probe runs 0.25 s late
        self.assertAlmostEqual(lag.lag, 0.25)
        self.assertTrue(lag.overloaded)
        for _ in range(4):
            clock.advance(0.05)
        self.assertFalse(lag.overloaded)
        lag.stop()

    def test_garbage_collection_is_not_overload(self) -> None:
        """A turn late only because the garbage collector ran does not count as lag."""
        clock = Clock()
        now = [0.0]
        lag = LoopLag(clock, interval=0.05, limit=0.1, timer=lambda: now[0])
        lag.start()
        self.addCleanup(lag.stop)
        # a 0.6 s collection, then the probe runs 0.6 s late
        lag.gc_callback("start", {"generation": 2})
        now[0] += 0.6
        lag.gc_callback("stop", {"generation": 2})
        clock.advance(0.65)
        self.assertAlmostEqual(lag.lag, 0.0)
        self.assertFalse(lag.overloaded)
        # the backlog the pause left makes the next turns late: forgiven up
        # to the pause's length again
        clock.advance(0.35)  # late 0.3
        self.assertAlmostEqual(lag.lag, 0.0)
        clock.advance(0.35)  # late 0.3: the rest of the 0.6 s
        self.assertAlmostEqual(lag.lag, 0.0)
        # past that, lateness counts again: overload
        clock.advance(0.3)
        self.assertAlmostEqual(lag.lag, 0.25)
        self.assertTrue(lag.overloaded)

    def test_forgiveness_fades(self) -> None:
        """What a collection leaves unforgiven fades over prompt turns."""
        clock = Clock()
        now = [0.0]
        lag = LoopLag(clock, interval=0.05, limit=0.1, timer=lambda: now[0])
        lag.start()
        self.addCleanup(lag.stop)
        lag.gc_callback("start", {"generation": 2})
        now[0] += 0.5
        lag.gc_callback("stop", {"generation": 2})
        clock.advance(0.55)  # late 0.5, forgiven; 0.5 left
        for _ in range(20):
            clock.advance(0.05)  # prompt turns
        clock.advance(0.3)  # late 0.25: hardly anything left to forgive
        self.assertGreater(lag.lag, 0.24)
        self.assertTrue(lag.overloaded)

    def test_hooked_into_the_collector_while_started(self) -> None:
        """start() hooks gc.callbacks (a real collection is timed); stop() unhooks."""
        import gc

        lag = LoopLag(Clock())
        lag.start()
        self.assertIn(lag.gc_callback, gc.callbacks)
        gc.collect()
        self.assertGreater(lag.gc_seconds, 0.0)
        lag.stop()
        self.assertNotIn(lag.gc_callback, gc.callbacks)


class ShedTests(ServiceTestCase):
    @inlineCallbacks
    def test_overloaded_intake_refuses(self) -> Any:
        """While overloaded, new calls get 503 with Retry-After and start nothing."""
        self.service.loop_lag.stop()
        self.service.loop_lag.limit = 0.1
        self.service.loop_lag.lag = 1.0
        self.service.shed_floor = 0
        response = yield self.post({"callControlId": "c-1", "externalId": "CRM-PLAIN"})
        self.assertEqual(response.code, 503)
        self.assertEqual(response.headers.getRawHeaders(b"retry-after"), [b"1"])
        body = yield response.json()
        self.assertIn("overloaded", body["error"])
        self.assertEqual(self.service.registry.active, {})

    def test_few_calls_never_shed(self) -> None:
        """With fewer calls than the floor, a late reactor is a stall, not overload."""
        self.service.loop_lag.limit = 0.1
        self.service.loop_lag.lag = 1.0
        self.assertFalse(self.service.overloaded())
