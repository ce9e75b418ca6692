"""
Tests for :mod:`ivrproto.logthrottle`.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.task import Clock
from twisted.logger import Logger, LogLevel, formatEvent
from twisted.trial.unittest import SynchronousTestCase

from ivrproto.logthrottle import LogThrottle


class LogThrottleTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.events: list[dict[str, Any]] = []
        self.throttle = LogThrottle(
            self.clock, Logger(observer=self.events.append), burst=2, interval=10.0
        )

    def test_burst_then_suppressed(self) -> None:
        "Past the burst, lines of one kind are counted, not written."
        written = [self.throttle.warn("bad-frame", "bad frame {n}", n=n) for n in range(5)]
        self.assertEqual(written, [True, True, False, False, False])
        self.assertEqual(len(self.events), 2)
        self.assertEqual(self.throttle.suppressed("bad-frame"), 3)

    def test_kinds_are_separate(self) -> None:
        "One kind using up its burst does not silence another."
        for _ in range(3):
            self.throttle.warn("a", "a")
        self.assertTrue(self.throttle.warn("b", "b"))

    def test_next_interval_reports_count(self) -> None:
        "The first line of the next interval says how many were suppressed."
        for _ in range(5):
            self.throttle.warn("k", "bad {what}", what="x")
        self.clock.advance(10.0)
        self.assertTrue(self.throttle.warn("k", "bad {what}", what="y"))
        last = self.events[-1]
        self.assertEqual(last["log_level"], LogLevel.warn)
        self.assertEqual(formatEvent(last), "bad y (3 similar lines suppressed)")
        self.assertEqual(self.throttle.suppressed("k"), 0)
