"""
Load shedding: a reactor running late makes the intake refuse new calls.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import inlineCallbacks
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from ivrproto.intake.overload import LoopLag

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
