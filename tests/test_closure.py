"""
The emergency closure (:mod:`ivrproto.menu.closure`): a flag file switched on and
off while the service runs, seen by new calls within the check interval,
logged with who changed it; calls in progress keep their menu.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import attrs

from twisted.internet.task import Clock
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from ivrproto.menu.closure import MAX_TEXT, ClosureConfig, ClosureSwitch, Notice, read_notice
from ivrproto.errors import ConfigError

from .test_schedules import CallsTestCase, book, local, menu_table


class ReadNoticeTests(SynchronousTestCase):
    """
    What a flag file says.
    """

    def test_json(self) -> None:
        """A JSON object gives the reason and who."""
        notice = read_notice(b'{"reason": "flooding", "by": "duty manager"}')
        self.assertEqual(notice, Notice("flooding", "duty manager"))
        self.assertEqual(read_notice(b'{"who": "ops"}'), Notice("", "ops"))

    def test_empty_or_text(self) -> None:
        """An empty file is a closure by the flag file; plain text is the reason."""
        self.assertEqual(read_notice(b""), Notice("", "flag file created"))
        self.assertEqual(read_notice(b"storm\n"), Notice("storm", "flag file created"))

    def test_outside_text_is_cleaned(self) -> None:
        """Control characters go, and long text is cut."""
        notice = read_notice(json.dumps({"reason": "a\nb\x1b[31m" + "x" * 1000}).encode())
        self.assertNotIn("\n", notice.reason)
        self.assertNotIn("\x1b", notice.reason)
        self.assertEqual(len(notice.reason), MAX_TEXT)


class SwitchTests(SynchronousTestCase):
    """
    The switch looks at the file at most once per interval on its clock.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.flag = Path(self.mktemp())
        self.switch = ClosureSwitch(self.clock, ClosureConfig(str(self.flag), "closed.mp3", "op"))
        self.events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def logged(self) -> list[str]:
        return [formatEvent(e) for e in self.events if "emergency closure" in formatEvent(e)]

    def test_on_and_off_within_the_interval(self) -> None:
        """Creating and removing the file is seen at the next check, not before, and logged with who."""
        self.assertIsNone(self.switch.current())
        self.flag.write_text('{"reason": "flooding", "by": "duty manager"}')
        self.clock.advance(0.5)
        self.assertIsNone(self.switch.current())  # looked at 0.5s ago
        self.clock.advance(0.5)
        self.assertEqual(self.switch.current(), Notice("flooding", "duty manager"))
        self.assertEqual(len(self.logged()), 1)
        self.assertIn("emergency closure on by duty manager: flooding", self.logged()[0])
        self.flag.unlink()
        self.clock.advance(1)
        self.assertIsNone(self.switch.current())
        self.assertIn("emergency closure off: flag file removed", self.logged()[1])
        self.assertEqual(self.switch.changes, 2)

    def test_changed_content(self) -> None:
        """A new reason in the file is logged as a change; the same file is not read again."""
        self.flag.write_text("storm")
        self.switch.check()
        self.switch.check()
        self.assertEqual(len(self.logged()), 1)
        self.assertIn("by flag file created: storm", self.logged()[0])
        self.flag.write_text('{"reason": "power cut", "by": "ops"}')
        os.utime(self.flag, ns=(1, 10**18))
        self.switch.check()
        self.assertIn("emergency closure changed by ops: power cut", self.logged()[1])

    def test_timer_logs_without_calls(self) -> None:
        """Started, the switch looks every interval on its own; stopped, it leaves no timer."""
        self.switch.start()
        self.flag.write_text("")
        self.clock.advance(1)
        self.assertEqual(self.switch.notice, Notice())
        self.switch.stop()
        self.assertEqual(self.clock.getDelayedCalls(), [])


class ClosureLoadTests(SynchronousTestCase):
    """
    What ``[closure]`` refuses.
    """

    def refused(self, closure: dict[str, Any], key: str) -> None:
        with self.assertRaises(ConfigError) as e:
            book(closure=closure)
        self.assertEqual(e.exception.key, key)

    def test_needs_a_target_or_hangup(self) -> None:
        """Exactly one of target and hangup = true."""
        base = {"flag_file": "/run/x", "prompt": "closed.mp3"}
        self.refused(base, "closure")
        self.refused(dict(base, target="op", hangup=True), "closure")
        self.refused(dict(base, target="nowhere"), "closure.target")
        self.assertIsNotNone(book(closure=dict(base, hangup=True)).closure)

    def test_settings(self) -> None:
        """A prompt with no file, a bad wait, or a stray key is refused."""
        base = {"flag_file": "/run/x", "prompt": "closed.mp3", "target": "op"}
        self.refused(dict(base, prompt="closed"), "closure.prompt")
        self.refused(dict(base, wait=0), "closure.wait")
        self.refused(dict(base, check_interval=True), "closure.check_interval")
        self.refused(dict(base, flagfile="/x"), "closure.flagfile")


class ClosureCallTests(CallsTestCase):
    """
    The closure switched on and off mid-run, with calls in progress.
    """

    def test_switched_on_and_off_mid_run(self) -> None:
        """New calls get the closure within a second; the call in progress keeps its menu; then back to normal."""
        flag = Path(self.mktemp())
        closure = {"flag_file": str(flag), "prompt": "closed.mp3", "target": "callback", "wait": 5.0}
        self.make_registry(book(menu_table(), closure=closure), local("Europe/Berlin", 2026, 12, 4, 10, 0))
        self.registry.start_call("before", "CRM-1")
        self.assertEqual(self.offered("before"), ("1", "2", "0"))

        flag.write_text('{"reason": "fire drill", "by": "site lead"}')
        self.clock.advance(1)
        self.registry.start_call("during", "CRM-2")
        plays = self.connections["during"].sent
        self.assertEqual([p.audio for p in plays], ["https://example.com/ivr/audio/closed.mp3"])
        # Any key goes at once; the platform refuses a play listening for none.
        self.assertEqual(plays[0].keys, tuple("0123456789*#"))
        # The call in progress still has its own menu.
        self.listeners["before"].digit_received("2")
        self.assertEqual(self.offered("before"), ("1", "0"))
        # The closed call goes to the closure's target after its wait.
        self.clock.advance(5)
        self.assertEqual(self.transferred("during"), "ext:callback")
        (record,) = self.ended
        self.assertEqual(
            record.hours,
            {"schedules": {"agents": "open"}, "closure": {"reason": "fire drill", "by": "site lead"}},
        )
        self.assertEqual(self.registry.hours_served, {"closure": 1})
        # Its outcome says why: the closure, not "no input".
        self.assertEqual((record.outcome.kind, record.outcome.reason), ("transferred", "closure"))

        flag.unlink()
        self.clock.advance(1)
        self.registry.start_call("after", "CRM-3")
        self.assertEqual(self.offered("after"), ("1", "2", "0"))
        self.listeners["before"].digit_received("1")
        self.clock.advance(self.timing.confirm_delay)
        self.assertEqual(self.transferred("before"), "ext:agents")

    def test_a_key_goes_at_once(self) -> None:
        """A key pressed during the closure message goes to the target without waiting; hangup = true hangs up."""
        flag = Path(self.mktemp())
        flag.write_text("")
        closure = {"flag_file": str(flag), "prompt": "closed.mp3", "hangup": True}
        self.make_registry(book(menu_table(), closure=closure), local("Europe/Berlin", 2026, 12, 4, 10, 0))
        self.registry.start_call("c", "CRM-1")
        self.listeners["c"].digit_received("5")
        (record,) = self.ended
        self.assertEqual(record.outcome.kind, "hungup")
        self.assertEqual(record.outcome.reason, "by the menu (closure)")

    def test_watched_without_calls(self) -> None:
        """Watched, the registry's switch notices the file with no call; a reload without [closure] stops it."""
        flag = Path(self.mktemp())
        closure = {"flag_file": str(flag), "prompt": "closed.mp3", "target": "callback"}
        self.make_registry(book(menu_table(), closure=closure), local("Europe/Berlin", 2026, 12, 4, 10, 0))
        self.registry.watch_closure()
        flag.write_text("")
        self.clock.advance(1)
        switch = self.registry.closure
        assert switch is not None
        self.assertEqual(switch.notice, Notice())
        self.registry.context = attrs.evolve(self.registry.context, book=book(menu_table()))
        self.assertIsNone(self.registry.closure)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.registry.context = attrs.evolve(self.registry.context, book=book(menu_table(), closure=closure))
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.registry.stop_watching_closure()
        self.assertEqual(self.clock.getDelayedCalls(), [])
