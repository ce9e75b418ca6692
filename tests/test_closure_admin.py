"""
The emergency closure's admin endpoint (:mod:`ivrproto.intake.admin`'s
``/v1/closure``, :mod:`ivrproto.menu.closure`'s switch): what a ``PUT``
body may say, how the endpoint and the flag file combine, calls in progress
keeping their menu, a reload, and the change logged once with who.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs
from twisted.internet.task import Clock
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from ivrproto.menu.closure import (
    ADMIN,
    FLAG_FILE,
    ClosureConfig,
    ClosureSwitch,
    Notice,
    admin_by,
    admin_notice,
    closure_stats,
    iso_time,
)

from .test_schedules import CallsTestCase, book, local, menu_table

CONFIG = ClosureConfig("/nonexistent/ivrproto-closed", "closed.mp3", "callback", wait=5.0)
TARGETS = {"agents": "ext:agents", "op": "ext:op", "callback": "ext:callback"}


def prompt_ok(prompt: str) -> bool:
    return prompt.endswith(".mp3")


class AdminNoticeTests(SynchronousTestCase):
    """
    What a ``PUT /v1/closure`` body may say.
    """

    def refused(self, data: Any) -> str:
        with self.assertRaises(ValueError) as e:
            admin_notice(data, CONFIG, TARGETS, prompt_ok)
        return str(e.exception)

    def test_full_body(self) -> None:
        """Prompt, target, who and why are taken as given."""
        notice = admin_notice(
            {"prompt": "storm.mp3", "target": "op", "by": "duty manager", "reason": "storm"},
            CONFIG, TARGETS, prompt_ok,
        )
        self.assertEqual(notice, Notice("storm", "duty manager", ADMIN, "storm.mp3", "op", False))

    def test_defaults_are_the_config_s(self) -> None:
        """Left out, the prompt and target are the [closure]'s; hangup = true hangs up."""
        notice = admin_notice({"by": "ops"}, CONFIG, TARGETS, prompt_ok)
        self.assertEqual((notice.prompt, notice.target, notice.hangup), ("closed.mp3", "callback", False))
        notice = admin_notice({"by": "ops", "hangup": True}, CONFIG, TARGETS, prompt_ok)
        self.assertEqual((notice.target, notice.hangup), (None, True))
        hangup_config = attrs.evolve(CONFIG, target=None)
        notice = admin_notice({"by": "ops"}, hangup_config, TARGETS, prompt_ok)
        self.assertEqual((notice.target, notice.hangup), (None, True))

    def test_unknown_target_names_the_known_ones(self) -> None:
        """A target that is not a configured name is refused, naming the known ones; so is a raw number."""
        message = self.refused({"by": "ops", "target": "ext:+15551234"})
        self.assertIn("'ext:+15551234' is not a configured transfer target", message)
        self.assertIn("known: agents, callback, op", message)

    def test_refused_bodies(self) -> None:
        """No who, a prompt with no file, both target and hangup, a stray field, or not an object."""
        self.assertIn("by must be", self.refused({"target": "op"}))
        self.assertIn("by must be", self.refused({"by": "  "}))
        self.assertIn("by must be", self.refused({"by": 7}))
        self.assertIn("has no file", self.refused({"by": "ops", "prompt": "closed"}))
        self.assertIn("not both", self.refused({"by": "ops", "target": "op", "hangup": True}))
        self.assertIn("hangup must be", self.refused({"by": "ops", "hangup": "yes"}))
        self.assertIn("unknown field 'flag_file'", self.refused({"by": "ops", "flag_file": "/x"}))
        self.assertIn("JSON object", self.refused(["by", "ops"]))

    def test_delete_body(self) -> None:
        """A DELETE body names who, and nothing else."""
        self.assertEqual(admin_by({"by": "duty\nmanager"}), "duty manager")
        for data in ({}, {"by": ""}, {"by": "x", "prompt": "p.mp3"}, "by"):
            self.assertRaises(ValueError, admin_by, data)


class AdminSwitchTests(SynchronousTestCase):
    """
    The endpoint's closure on the switch, beside the flag file.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1_800_000_000)
        self.flag = Path(self.mktemp())
        self.switch = ClosureSwitch(self.clock, attrs.evolve(CONFIG, flag_file=str(self.flag)))
        self.events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)
        self.storm = admin_notice(
            {"by": "duty manager", "target": "op", "reason": "storm"}, self.switch.config, TARGETS, prompt_ok
        )

    def logged(self) -> list[str]:
        return [formatEvent(e) for e in self.events if "emergency closure" in formatEvent(e)]

    def test_on_at_once_and_logged_once(self) -> None:
        """On at once (no check interval), logged once with who, where from, and the state before and after."""
        self.assertIsNone(self.switch.current())
        self.assertTrue(self.switch.switch_on(self.storm, "10.0.0.7:5123"))
        self.assertEqual(self.switch.current(), self.storm)
        self.assertFalse(self.switch.switch_on(self.storm, "10.0.0.7:5123"))  # the same again: no change
        (line,) = self.logged()
        self.assertIn("emergency closure on by duty manager from 10.0.0.7:5123 (admin endpoint)", line)
        self.assertIn("was off, now on (prompt closed.mp3, target op, reason 'storm')", line)
        self.clock.advance(30)
        self.assertTrue(self.switch.switch_off("night lead", "10.0.0.8:1"))
        self.assertIsNone(self.switch.current())
        self.assertFalse(self.switch.switch_off("night lead", "10.0.0.8:1"))
        self.assertEqual(len(self.logged()), 2)
        self.assertIn("emergency closure off by night lead from 10.0.0.8:1", self.logged()[1])
        self.assertIn("was on (prompt closed.mp3, target op", self.logged()[1])
        self.assertEqual(self.switch.changes, 2)

    def test_changed(self) -> None:
        """A second PUT with other settings is a change, logged with both states."""
        self.switch.switch_on(self.storm, "p")
        hangup = attrs.evolve(self.storm, target=None, hangup=True, by="ops")
        self.switch.switch_on(hangup, "p")
        self.assertIn("emergency closure changed by ops", self.logged()[1])
        self.assertIn("was on (prompt closed.mp3, target op", self.logged()[1])
        self.assertIn("now on (prompt closed.mp3, hang up", self.logged()[1])

    def test_either_closes_and_get_says_which(self) -> None:
        """Closed while either says so; the endpoint's serves while both do; off, the flag file's stays."""
        self.flag.write_text('{"reason": "flood", "by": "site"}')
        self.switch.check()
        state = self.switch.state()
        self.assertEqual((state["state"], state["source"], state["by"]), ("on", FLAG_FILE, "site"))
        self.assertEqual((state["prompt"], state["target"], state["hangup"]), ("closed.mp3", "callback", False))
        self.assertEqual(state["since"], iso_time(1_800_000_000))
        self.assertEqual(state["sources"][ADMIN], {"state": "off"})
        self.assertEqual(state["sources"][FLAG_FILE]["path"], str(self.flag))

        self.clock.advance(5)
        self.switch.switch_on(self.storm, "p")
        state = self.switch.state()
        self.assertEqual((state["source"], state["target"], state["by"]), (ADMIN, "op", "duty manager"))
        self.assertEqual(state["since"], "2027-01-15T08:00:05Z")
        self.assertEqual(state["sources"][FLAG_FILE]["state"], "on")
        self.assertEqual(closure_stats(self.switch), {"flag_file": 1, "admin": 1})

        self.switch.switch_off("ops", "p")
        self.assertEqual(self.switch.state()["source"], FLAG_FILE)
        self.flag.unlink()
        self.clock.advance(1)
        self.assertEqual(self.switch.state(), {
            "state": "off", "source": None,
            "sources": {FLAG_FILE: {"state": "off", "path": str(self.flag)}, ADMIN: {"state": "off"}},
        })
        self.assertEqual(closure_stats(self.switch), {"flag_file": 0, "admin": 0})
        self.assertEqual(closure_stats(None), {"flag_file": 0, "admin": 0})


class AdminClosureCallTests(CallsTestCase):
    """
    The endpoint's closure switched on and off mid-run, with calls in
    progress, and across a reload.
    """

    closure = {"flag_file": "/nonexistent/ivrproto-closed", "prompt": "closed.mp3",
               "target": "callback", "wait": 5.0}

    def start(self) -> ClosureSwitch:
        self.make_registry(book(menu_table(), closure=self.closure), local("Europe/Berlin", 2026, 12, 4, 10, 0))
        switch = self.registry.closure
        assert switch is not None
        return switch

    def notice(self, **data: Any) -> Notice:
        menu_book = self.registry.context.book
        assert menu_book.closure is not None
        return admin_notice(dict(data, by="site lead"), menu_book.closure, menu_book.targets, menu_book.prompts.has)

    def test_switched_on_and_off_mid_run(self) -> None:
        """New calls get the endpoint's prompt and target at once; the call in progress keeps its menu."""
        switch = self.start()
        self.registry.start_call("before", "CRM-1")
        self.assertEqual(self.offered("before"), ("1", "2", "0"))

        switch.switch_on(self.notice(prompt="storm.mp3", target="op", reason="storm"), "127.0.0.1:1")
        self.registry.start_call("during", "CRM-2")  # no clock advance: at once
        plays = self.connections["during"].sent
        self.assertEqual([p.audio for p in plays], ["https://example.com/ivr/audio/storm.mp3"])
        self.listeners["before"].digit_received("2")
        self.assertEqual(self.offered("before"), ("1", "0"))
        self.clock.advance(5)
        self.assertEqual(self.transferred("during"), "ext:op")
        (record,) = self.ended
        self.assertEqual(record.hours["closure"], {
            "reason": "storm", "by": "site lead", "source": ADMIN, "prompt": "storm.mp3", "target": "op",
        })
        self.assertEqual(self.registry.hours_served, {"closure": 1})

        switch.switch_off("site lead", "127.0.0.1:1")
        self.registry.start_call("after", "CRM-3")
        self.assertEqual(self.offered("after"), ("1", "2", "0"))
        self.listeners["before"].digit_received("1")
        self.clock.advance(self.timing.confirm_delay)
        self.assertEqual(self.transferred("before"), "ext:agents")

    def test_hangup(self) -> None:
        """hangup = true in the PUT hangs up after the message, though [closure] has a target."""
        switch = self.start()
        switch.switch_on(self.notice(hangup=True), "p")
        self.registry.start_call("c", "CRM-1")
        self.clock.advance(5)
        (record,) = self.ended
        self.assertEqual(record.outcome.kind, "hungup")

    def test_closure_menu_gives_up_as_the_closure(self) -> None:
        """The book tells the closure's menu from the others, for the call's outcome."""
        switch = self.start()
        switch.switch_on(self.notice(), "p")
        menu_book = self.registry.context.book
        closed = menu_book.menu_for(None, hours=self.registry.hours_now())
        self.assertTrue(menu_book.is_closure_menu(closed))
        self.assertEqual(menu_book.give_up_reason(closed, "no-input"), "closure")
        normal = menu_book.menu_for(None)
        self.assertFalse(menu_book.is_closure_menu(normal))
        self.assertEqual(menu_book.give_up_reason(normal, "no-input"), "no-input")
        self.assertEqual(menu_book.give_up_reason(None, "no-input"), "no-input")

    def test_reload(self) -> None:
        """A reload keeps the endpoint's closure; a target it removed gives way to [closure]'s; no [closure] ends it."""
        switch = self.start()
        switch.switch_on(self.notice(target="agents"), "p")
        targets = {"op": "ext:op", "callback": "ext:callback", "agents2": "ext:agents"}
        options = [{"key": "0", "prompt": "op.mp3", "action": "op"}]
        reloaded = book(menu_table(targets=targets, options=options, menus={}), schedules={},
                        closure=dict(self.closure, wait=3.0))
        self.registry.context = attrs.evolve(self.registry.context, book=reloaded)
        new_switch = self.registry.closure
        assert new_switch is not None
        self.assertIsNot(new_switch, switch)
        self.assertEqual(new_switch.current(), switch.admin)
        self.registry.start_call("c", "CRM-1")
        self.clock.advance(3)
        self.assertEqual(self.transferred("c"), "ext:callback")
        self.registry.context = attrs.evolve(self.registry.context, book=book(menu_table()))
        self.assertIsNone(self.registry.closure)
        self.registry.start_call("d", "CRM-2")
        self.assertEqual(self.offered("d"), ("1", "2", "0"))


class AdminTokenConfigTests(SynchronousTestCase):
    """
    The admin listener's token comes from the environment only, and is
    never shown.
    """

    def test_from_the_environment(self) -> None:
        """IVR_ADMIN_TOKEN gives [admin]'s token; unset or empty, there is none; repr never shows it."""
        from ivrproto.config import load_config

        from .test_schedules import ENV, HOURS

        config = load_config(HOURS, dict(ENV, IVR_ADMIN_TOKEN="s3cret-admin-token"))
        self.assertEqual(config.admin.token, "s3cret-admin-token")
        self.assertNotIn("s3cret-admin-token", repr(config))
        self.assertIsNone(load_config(HOURS, ENV).admin.token)
        self.assertIsNone(load_config(HOURS, dict(ENV, IVR_ADMIN_TOKEN="")).admin.token)
