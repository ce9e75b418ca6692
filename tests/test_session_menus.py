"""
The per-call state machine with the menus of the menu book: sub-menus, play,
repeat, hang-up, multi-digit entry, on-failure actions, per-menu settings
and prompt languages.  Driven by hand with a recording port and a Clock.
"""

from __future__ import annotations

import copy
from typing import Any, List, Mapping, Optional

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from ivrproto.config import Timing
from ivrproto.menu.load import parse_menu
from ivrproto.messages import Hangup, Play, Transfer
from ivrproto.session.machine import CallSession, Outcome, SessionCore, new_session

from .test_session import RecordingPort

AUDIO = "https://example.com/a/"
DIGITS = tuple("0123456789")

TIMING = Timing(
    handshake_timeout=10.0,
    profile_budget=0.8,
    no_input_timeout=10.0,
    menu_repeats=2,
    confirm_delay=1.5,
    max_invalid=3,
)

MAIN_KEYS = ("1", "2", "3", "4", "8", "9", "0")
MAIN_PROMPTS = ["billing.mp3", "hours.mp3", "account.mp3", "pin.mp3", "bye.mp3", "again.mp3", "op.mp3"]
BILLING_KEYS = ("1", "2", "*")

TABLE: dict[str, Any] = {
    "targets": {
        "billing": "ext:billing",
        "sales": "ext:sales",
        "transfer_operator": "ext:op",
        "fallback": "ext:fallback",
    },
    "language_attribute": "language",
    "prompts": {
        "en": {
            "confirm": "en/confirm.mp3",
            "invalid": "en/invalid.mp3",
            "welcome": "en/welcome.mp3",
            "enter": "en/enter.mp3",
        },
        "fr": {
            "confirm": "fr/confirm.mp3",
            "invalid": "fr/invalid.mp3",
            "welcome": "fr/welcome.mp3",
            "enter": "fr/enter.mp3",
        },
    },
    "confirm_prompt": "confirm",
    "invalid_prompt": "invalid",
    "options": [
        {"key": "1", "prompt": "billing.mp3", "submenu": "billing"},
        {"key": "2", "prompt": "hours.mp3", "play": "hours_info.mp3"},
        {
            "key": "3",
            "prompt": "account.mp3",
            "collect": {
                "prompt": "enter",
                "name": "account",
                "min_digits": 4,
                "max_digits": 6,
                "inter_digit_timeout": 3,
                "then": {"transfer": "billing"},
            },
        },
        {
            "key": "4",
            "prompt": "pin.mp3",
            "collect": {
                "prompt": "pin_enter.mp3",
                "name": "pin",
                "min_digits": 2,
                "max_digits": 4,
                "terminator": "",
                "inter_digit_timeout": 2,
                "then": {"submenu": "billing"},
            },
        },
        {"key": "8", "prompt": "bye.mp3", "hangup": True},
        {"key": "9", "prompt": "again.mp3", "repeat": True},
        {"key": "0", "prompt": "op.mp3", "action": "transfer_operator"},
    ],
    "menus": {
        "billing": {
            "intro": "welcome",
            "options": [
                {"prompt": "pay.mp3", "transfer": "billing"},
                {"prompt": "sales.mp3", "transfer": "sales"},
                {"key": "*", "prompt": "back.mp3", "submenu": "main"},
            ],
            "no_input_timeout": 4,
            "max_no_input": 1,
            "max_invalid": 2,
            "invalid_prompt": "billing_invalid.mp3",
            "no_input_prompt": "billing_silence.mp3",
            "on_failure": {"transfer": "fallback"},
        },
    },
}


def _table(**billing: Any) -> dict[str, Any]:
    """
    The test table, with settings of the billing sub-menu replaced (``None``
    removes one).
    """
    table = copy.deepcopy(TABLE)
    for name, value in billing.items():
        if value is None:
            table["menus"]["billing"].pop(name, None)
        else:
            table["menus"]["billing"][name] = value
    return table


def _menu(prompts: List[str], keys: tuple[str, ...]) -> List[Play]:
    return [Play("call-1", AUDIO + p, True, keys) for p in prompts]


class MenuSessionTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.port = RecordingPort(audio=AUDIO)
        self.session: Optional[CallSession] = None

    def live(
        self,
        table: Optional[dict[str, Any]] = None,
        attributes: Optional[Mapping[str, Any]] = None,
        timing: Timing = TIMING,
    ) -> tuple[CallSession, SessionCore]:
        """
        A call in its start menu, with what was sent so far forgotten.
        """
        book = parse_menu(TABLE if table is None else table, AUDIO)
        session, core = new_session("call-1", book, timing, self.clock, self.port)
        self.session = session
        self.addCleanup(self.assertNoTimers)
        self.addCleanup(self.assertEndIsFinal)
        session.start()
        session.profile_resolved({} if attributes is None else attributes, "found")
        session.connected()
        self.assertEqual(self.port.take(), _menu(MAIN_PROMPTS, MAIN_KEYS))
        return session, core

    def assertNoTimers(self) -> None:
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def assertEndIsFinal(self) -> None:
        """
        Once ended, nothing the platform or a timer does sends anything; at
        most one transfer was ever sent.
        """
        self.assertLessEqual(len(self.port.transfers()), 1)
        self.assertLessEqual(len(self.port.outcomes), 1)
        if not self.port.outcomes:
            return
        assert self.session is not None
        before = list(self.port.sent)
        for digit in "1*#":
            self.session.digit_received(digit)
        self.session.input_timed_out()
        self.session.confirm_elapsed()
        self.session.platform_error("late")
        self.session.hangup_received(None)
        self.session.connection_lost("closed normally (1000)")
        self.assertEqual(self.port.sent, before)
        self.assertEqual(len(self.port.outcomes), 1)

    def wait(self, *steps: float) -> None:
        """
        Let time pass in steps: a timer set by a timer counts from when it was set.
        """
        for step in steps:
            self.clock.advance(step)

    def press(self, session: CallSession, keys: str) -> None:
        for key in keys:
            session.digit_received(key)

    def assertConfirmedTransfer(self, target: str, action: str, confirm: str = "en/confirm.mp3") -> None:
        """
        The confirmation with DTMF off, then after the delay the one transfer.
        """
        self.assertEqual(self.port.take(), [Play("call-1", AUDIO + confirm, False)])
        self.clock.advance(1.49)
        self.assertEqual(self.port.sent, [])
        self.clock.advance(0.01)
        self.assertEqual(self.port.take(), [Transfer("call-1", target)])
        self.assertEqual(self.port.closes, 1)
        self.assertEqual(self.port.outcomes, [Outcome("transferred", "selected", target, action)])

    def assertTransferNow(self, target: str, action: str, reason: str) -> None:
        """
        A transfer without a confirmation, as the last thing sent.
        """
        self.assertEqual(self.port.take(), [Transfer("call-1", target)])
        self.assertEqual(self.port.closes, 1)
        self.assertEqual(self.port.outcomes, [Outcome("transferred", reason, target, action)])


class SubMenuTests(MenuSessionTestCase):
    def test_submenu_sends_its_menu(self) -> None:
        """A sub-menu option sends the sub-menu's intro and prompts, listening for its keys."""
        session, core = self.live()
        session.digit_received("1")
        self.assertEqual(
            self.port.take(),
            _menu(["en/welcome.mp3", "pay.mp3", "sales.mp3", "back.mp3"], BILLING_KEYS),
        )
        assert core.menu is not None
        self.assertEqual(core.menu.name, "billing")
        self.assertIn("menu billing", [what for _, what in core.timeline])
        session.hangup_received(None)

    def test_keys_select_submenu_options(self) -> None:
        """In the sub-menu, its own keys select its own options."""
        session, core = self.live()
        session.digit_received("1")
        self.port.take()
        session.digit_received("2")
        self.assertConfirmedTransfer("ext:sales", "sales")
        self.assertEqual(core.keys, ["1", "2"])

    def test_first_submenu_key(self) -> None:
        """The sub-menu's first option (an auto key 1) confirms and transfers."""
        session, core = self.live()
        session.digit_received("1")
        self.port.take()
        session.digit_received("1")
        self.assertConfirmedTransfer("ext:billing", "billing")

    def test_parent_key_is_invalid(self) -> None:
        """A key of the start menu that the sub-menu lacks is invalid there."""
        session, core = self.live()
        session.digit_received("1")
        self.port.take()
        session.digit_received("8")
        self.assertEqual(self.port.take(), [Play("call-1", AUDIO + "billing_invalid.mp3", True, BILLING_KEYS)])
        self.assertFalse(any(isinstance(c, Hangup) for c in self.port.sent))
        session.hangup_received(None)

    def test_back_to_start(self) -> None:
        """A sub-menu can lead back to the start menu, whose keys work again."""
        session, core = self.live()
        self.press(session, "1*")
        sent = self.port.take()
        self.assertEqual(sent[-7:], _menu(MAIN_PROMPTS, MAIN_KEYS))
        session.digit_received("0")
        self.assertConfirmedTransfer("ext:op", "transfer_operator")

    def test_counters_reset_in_submenu(self) -> None:
        """Entering a menu starts its no-input and invalid counts afresh."""
        session, core = self.live()
        self.press(session, "77")
        self.assertEqual(core.invalid, 2)
        session.digit_received("1")
        self.assertEqual((core.invalid, core.repeats), (0, 0))
        session.hangup_received(None)


class PlayRepeatHangupTests(MenuSessionTestCase):
    def test_play_then_menu(self) -> None:
        """A play option plays its prompt, listening for the menu's keys, then the menu again."""
        session, core = self.live()
        session.digit_received("2")
        self.assertEqual(
            self.port.take(),
            _menu(["hours_info.mp3"] + MAIN_PROMPTS, MAIN_KEYS),
        )
        self.assertEqual(self.port.transfers(), [])
        self.clock.advance(10)
        self.assertEqual(self.port.take(), _menu(MAIN_PROMPTS, MAIN_KEYS))
        session.hangup_received(None)

    def test_repeat(self) -> None:
        """A repeat option sends the menu again."""
        session, core = self.live()
        session.digit_received("9")
        self.assertEqual(self.port.take(), _menu(MAIN_PROMPTS, MAIN_KEYS))
        session.digit_received("0")
        self.assertConfirmedTransfer("ext:op", "transfer_operator")

    def test_repeat_restarts_no_input_timer(self) -> None:
        """After a repeat the caller has the whole no-input timeout again."""
        session, core = self.live()
        self.clock.advance(9)
        session.digit_received("9")
        self.port.take()
        self.clock.advance(9.99)
        self.assertEqual(self.port.sent, [])
        self.clock.advance(0.01)
        self.assertEqual(self.port.take(), _menu(MAIN_PROMPTS, MAIN_KEYS))
        session.hangup_received(None)

    def test_hangup(self) -> None:
        """A hang-up option sends the hangup command and closes: the call is hung up."""
        session, core = self.live()
        session.digit_received("8")
        self.assertEqual(self.port.take(), [Hangup("call-1")])
        self.assertEqual(Hangup("call-1").to_json(), {"callControlId": "call-1", "action": "hangup"})
        self.assertEqual(self.port.closes, 1)
        self.assertEqual(self.port.outcomes, [Outcome("hungup", "by the menu (selected)")])
        self.assertEqual(core.phase, "ended")


class CollectTests(MenuSessionTestCase):
    ACCOUNT_KEYS = DIGITS + ("#",)

    def collecting(self, **kwargs: Any) -> tuple[CallSession, SessionCore]:
        session, core = self.live(**kwargs)
        session.digit_received("3")
        return session, core

    def test_prompt(self) -> None:
        """The collect prompt is played listening for the valid keys and the terminator."""
        session, core = self.collecting()
        self.assertEqual(self.port.take(), [Play("call-1", AUDIO + "en/enter.mp3", True, self.ACCOUNT_KEYS)])
        self.assertEqual(core.phase, "collecting")
        session.hangup_received(None)

    def test_digits_then_terminator(self) -> None:
        """Digits then the terminator: the value is kept and the transfer confirmed."""
        session, core = self.collecting()
        self.port.take()
        self.press(session, "7531")
        self.assertEqual(self.port.sent, [])
        session.digit_received("#")
        self.assertEqual(core.collected, {"account": "7531"})
        self.assertConfirmedTransfer("ext:billing", "billing")

    def test_max_digits_ends_entry(self) -> None:
        """The entry ends by itself at max_digits."""
        session, core = self.collecting()
        self.port.take()
        self.press(session, "975310")
        self.assertEqual(core.collected, {"account": "975310"})
        self.assertConfirmedTransfer("ext:billing", "billing")

    def test_pause_with_enough_digits(self) -> None:
        """A pause of inter_digit_timeout after at least min_digits ends the entry."""
        session, core = self.collecting()
        self.port.take()
        self.press(session, "97531")
        self.clock.advance(2.99)
        self.assertEqual(self.port.sent, [])
        self.clock.advance(0.01)
        self.assertEqual(core.collected, {"account": "97531"})
        self.assertConfirmedTransfer("ext:billing", "billing")

    def test_each_digit_restarts_pause(self) -> None:
        """The pause is counted from the last digit."""
        session, core = self.collecting()
        self.port.take()
        for digit in "9753":
            self.clock.advance(2.5)
            session.digit_received(digit)
        self.assertEqual(core.digits, "9753")
        self.assertEqual(self.port.sent, [])
        self.clock.advance(3)
        self.assertEqual(core.collected, {"account": "9753"})
        self.assertConfirmedTransfer("ext:billing", "billing")

    def test_pause_with_too_few_digits(self) -> None:
        """A pause before min_digits is an invalid try: the invalid prompt, then the prompt again."""
        session, core = self.collecting()
        self.port.take()
        self.press(session, "97")
        self.clock.advance(3)
        self.assertEqual(
            self.port.take(),
            [
                Play("call-1", AUDIO + "en/invalid.mp3", True, self.ACCOUNT_KEYS),
                Play("call-1", AUDIO + "en/enter.mp3", True, self.ACCOUNT_KEYS),
            ],
        )
        self.assertEqual(core.collected, {})
        self.press(session, "1357#")
        self.assertEqual(core.collected, {"account": "1357"})
        self.assertConfirmedTransfer("ext:billing", "billing")

    def test_terminator_too_early(self) -> None:
        """The terminator before min_digits is an invalid try too."""
        session, core = self.collecting()
        self.port.take()
        self.press(session, "97#")
        self.assertEqual(self.port.plays(), ["en/invalid.mp3", "en/enter.mp3"])
        self.assertEqual(core.digits, "")
        session.hangup_received(None)

    def test_invalid_key(self) -> None:
        """A key that is neither a digit nor the terminator starts the entry again."""
        session, core = self.collecting()
        self.port.take()
        self.press(session, "97*")
        self.assertEqual(
            self.port.take(),
            [
                Play("call-1", AUDIO + "en/invalid.mp3", True, self.ACCOUNT_KEYS),
                Play("call-1", AUDIO + "en/enter.mp3", True, self.ACCOUNT_KEYS),
            ],
        )
        self.press(session, "1357#")
        self.assertEqual(core.collected, {"account": "1357"})
        self.assertConfirmedTransfer("ext:billing", "billing")

    def test_too_many_invalid_tries(self) -> None:
        """After max_invalid invalid tries, the menu's on-failure action (the operator)."""
        session, core = self.collecting()
        self.port.take()
        self.press(session, "1*2*3")
        self.assertEqual(self.port.plays().count("en/invalid.mp3"), 2)
        session.digit_received("*")
        self.assertEqual(self.port.transfers(), ["ext:op"])
        self.assertEqual(self.port.outcomes, [Outcome("transferred", "invalid-input", "ext:op", "transfer_operator")])
        self.assertNotIn("en/confirm.mp3", self.port.plays())

    def test_no_input(self) -> None:
        """No digit at all: the prompt again, up to max_no_input times, then on-failure."""
        session, core = self.collecting()
        self.port.take()
        self.clock.advance(9.99)
        self.assertEqual(self.port.sent, [])
        self.clock.advance(0.01)
        self.assertEqual(self.port.take(), [Play("call-1", AUDIO + "en/enter.mp3", True, self.ACCOUNT_KEYS)])
        self.clock.advance(10)
        self.assertEqual(self.port.take(), [Play("call-1", AUDIO + "en/enter.mp3", True, self.ACCOUNT_KEYS)])
        self.clock.advance(10)
        self.assertTransferNow("ext:op", "transfer_operator", "no-input")

    def test_no_input_prompt_listens_for_digits(self) -> None:
        """A no-input prompt during entry listens for the entry's keys, not the menu's."""
        table = copy.deepcopy(TABLE)
        table["no_input_prompt"] = "silence.mp3"
        session, core = self.collecting(table=table)
        self.port.take()
        self.clock.advance(10)
        self.assertEqual(
            self.port.take(),
            [
                Play("call-1", AUDIO + "silence.mp3", True, self.ACCOUNT_KEYS),
                Play("call-1", AUDIO + "en/enter.mp3", True, self.ACCOUNT_KEYS),
            ],
        )
        session.hangup_received(None)

    def test_then_submenu(self) -> None:
        """A collection can lead to a sub-menu, whose keys then work."""
        session, core = self.live()
        session.digit_received("4")
        self.assertEqual(self.port.take(), [Play("call-1", AUDIO + "pin_enter.mp3", True, DIGITS)])
        self.press(session, "86")
        self.clock.advance(2)
        self.assertEqual(core.collected, {"pin": "86"})
        self.assertEqual(
            self.port.take(),
            _menu(["en/welcome.mp3", "pay.mp3", "sales.mp3", "back.mp3"], BILLING_KEYS),
        )
        self.assertEqual(core.phase, "in_menu")
        session.digit_received("2")
        self.assertConfirmedTransfer("ext:sales", "sales")

    def test_no_terminator(self) -> None:
        """Without a terminator, # is an invalid key and max_digits ends the entry."""
        session, core = self.live()
        session.digit_received("4")
        session.digit_received("#")
        self.assertEqual(self.port.plays()[-2:], ["en/invalid.mp3", "pin_enter.mp3"])
        self.press(session, "8642")
        self.assertEqual(core.collected, {"pin": "8642"})
        self.assertEqual(core.menu.name if core.menu else None, "billing")
        session.hangup_received(None)

    def test_digits_are_not_recorded(self) -> None:
        """Collected digits are PII: they appear neither in the keys nor in the timeline."""
        session, core = self.collecting()
        self.press(session, "8642#")
        self.clock.advance(1.5)
        self.assertEqual(core.keys, ["3"])
        whats = [what for _, what in core.timeline]
        self.assertIn("collected account (4 digits)", whats)
        for what in whats:
            self.assertNotIn("8642", what)
            for digit in "8642":
                self.assertNotIn(f"key {digit}", what)
        self.assertNotIn("8642", repr(self.port.outcomes))

    def test_invalid_entry_digits_are_not_recorded(self) -> None:
        """Digits of an entry that failed are not recorded either."""
        session, core = self.collecting()
        self.press(session, "86*")
        session.hangup_received(None)
        self.assertEqual(core.keys, ["3"])
        self.assertEqual(core.collected, {})
        for _, what in core.timeline:
            self.assertNotIn("86", what)

    def test_platform_error(self) -> None:
        """A platform error while collecting hands the caller to the operator."""
        session, core = self.collecting()
        self.press(session, "86")
        self.port.take()
        session.platform_error("cannot play audio")
        self.assertTransferNow("ext:op", "transfer_operator", "platform-error")

    def test_hangup(self) -> None:
        """A hangup while collecting ends the call; nothing is transferred."""
        session, core = self.collecting()
        self.press(session, "86")
        session.hangup_received("caller")
        self.assertEqual(self.port.outcomes, [Outcome("hungup", "caller")])
        self.assertEqual(self.port.transfers(), [])
        self.assertEqual(self.port.closes, 1)

    def test_connection_lost(self) -> None:
        """A dropped connection while collecting ends the call as failed."""
        session, core = self.collecting()
        session.connection_lost("platform internal error (1011)")
        self.assertEqual(self.port.outcomes, [Outcome("failed", "platform internal error (1011)")])

    def test_keys_while_confirming_after_collect(self) -> None:
        """Keys during the confirmation after an entry change nothing."""
        session, core = self.collecting()
        self.press(session, "8642#")
        self.press(session, "1234#")
        self.assertEqual(core.collected, {"account": "8642"})
        self.clock.advance(1.5)
        self.assertEqual(self.port.transfers(), ["ext:billing"])


class OnFailureTests(MenuSessionTestCase):
    def in_billing(self, **billing: Any) -> tuple[CallSession, SessionCore]:
        session, core = self.live(_table(**billing))
        session.digit_received("1")
        self.port.take()
        return session, core

    def test_transfer_without_confirmation(self) -> None:
        """on_failure transfer goes to its target at once, without the confirmation."""
        session, core = self.in_billing()
        self.clock.advance(4)
        self.assertEqual(
            self.port.take(),
            [Play("call-1", AUDIO + "billing_silence.mp3", True, BILLING_KEYS)]
            + _menu(["en/welcome.mp3", "pay.mp3", "sales.mp3", "back.mp3"], BILLING_KEYS),
        )
        self.clock.advance(4)
        self.assertTransferNow("ext:fallback", "fallback", "no-input")

    def test_after_invalid_keys(self) -> None:
        """on_failure also follows the last invalid key."""
        session, core = self.in_billing()
        self.press(session, "77")
        self.assertEqual(self.port.plays(), ["billing_invalid.mp3"])
        self.assertEqual(self.port.transfers(), ["ext:fallback"])
        self.assertEqual(self.port.outcomes[0].reason, "invalid-input")

    def test_hangup(self) -> None:
        """on_failure hangup sends the hangup command and closes."""
        session, core = self.in_billing(on_failure={"hangup": True})
        self.wait(4, 4)
        self.assertEqual(self.port.sent[-1], Hangup("call-1"))
        self.assertEqual(self.port.transfers(), [])
        self.assertEqual(self.port.closes, 1)
        self.assertEqual(self.port.outcomes, [Outcome("hungup", "by the menu (no-input)")])

    def test_submenu(self) -> None:
        """on_failure submenu offers that menu, with fresh counts and its own failure."""
        session, core = self.in_billing(on_failure={"submenu": "main"})
        self.wait(4, 4)
        self.assertEqual(self.port.take()[-7:], _menu(MAIN_PROMPTS, MAIN_KEYS))
        assert core.menu is not None
        self.assertEqual((core.menu.name, core.repeats), ("main", 0))
        self.wait(10, 10)
        self.assertEqual(self.port.take(), _menu(MAIN_PROMPTS, MAIN_KEYS) * 2)
        self.clock.advance(10)
        self.assertTransferNow("ext:op", "transfer_operator", "no-input")

    def test_submenu_then_key(self) -> None:
        """After an on_failure sub-menu, its keys work as usual."""
        session, core = self.in_billing(on_failure={"submenu": "main"})
        self.wait(4, 4)
        self.port.take()
        session.digit_received("0")
        self.assertConfirmedTransfer("ext:op", "transfer_operator")

    def test_during_collect(self) -> None:
        """A collection that fails ends with its menu's on_failure."""
        table = _table()
        table["on_failure"] = {"hangup": True}
        session, core = self.live(table)
        session.digit_received("3")
        self.wait(10, 10, 10)
        self.assertEqual(self.port.sent[-1], Hangup("call-1"))
        self.assertEqual(self.port.outcomes, [Outcome("hungup", "by the menu (no-input)")])

    def test_during_collect_submenu(self) -> None:
        """A collection that fails can go on to a sub-menu."""
        table = _table()
        table["on_failure"] = {"submenu": "billing"}
        session, core = self.live(table)
        session.digit_received("3")
        self.press(session, "*" * 3)
        self.assertEqual(
            self.port.sent[-4:],
            _menu(["en/welcome.mp3", "pay.mp3", "sales.mp3", "back.mp3"], BILLING_KEYS),
        )
        self.assertEqual(core.phase, "in_menu")
        self.assertIsNone(core.collect)
        session.digit_received("1")
        self.clock.advance(1.5)
        self.assertEqual(self.port.transfers(), ["ext:billing"])


class PerMenuSettingTests(MenuSessionTestCase):
    def test_no_input_timeout(self) -> None:
        """A menu's no_input_timeout replaces [timing]'s in that menu only."""
        session, core = self.live()
        session.digit_received("1")
        self.port.take()
        self.clock.advance(3.99)
        self.assertEqual(self.port.sent, [])
        self.clock.advance(0.01)
        self.assertEqual(self.port.plays()[0], "billing_silence.mp3")
        self.press(session, "*")
        self.port.take()
        self.clock.advance(9.99)
        self.assertEqual(self.port.sent, [])
        self.clock.advance(0.01)
        self.assertEqual(self.port.take(), _menu(MAIN_PROMPTS, MAIN_KEYS))
        session.hangup_received(None)

    def test_max_no_input(self) -> None:
        """A menu's max_no_input replaces menu_repeats; 0 gives up at the first timeout."""
        session, core = self.live(_table(max_no_input=0))
        session.digit_received("1")
        self.port.take()
        self.clock.advance(4)
        self.assertTransferNow("ext:fallback", "fallback", "no-input")

    def test_default_max_no_input(self) -> None:
        """Without its own max_no_input a menu repeats menu_repeats times."""
        session, core = self.live(_table(max_no_input=None))
        session.digit_received("1")
        self.port.take()
        self.wait(4, 4)
        self.assertEqual(self.port.transfers(), [])
        self.clock.advance(4)
        self.assertEqual(self.port.transfers(), ["ext:fallback"])

    def test_max_invalid(self) -> None:
        """A menu's max_invalid replaces [timing]'s; 0 means no limit."""
        session, core = self.live(_table(max_invalid=0))
        session.digit_received("1")
        self.press(session, "7" * 10)
        self.assertEqual(self.port.plays().count("billing_invalid.mp3"), 10)
        self.assertEqual(self.port.transfers(), [])
        session.hangup_received(None)

    def test_timing_max_invalid_elsewhere(self) -> None:
        """The start menu, without its own, keeps [timing]'s max_invalid."""
        session, core = self.live()
        self.press(session, "77")
        self.assertEqual(self.port.take(), [Play("call-1", AUDIO + "en/invalid.mp3", True, MAIN_KEYS)] * 2)
        session.digit_received("7")
        self.assertTransferNow("ext:op", "transfer_operator", "invalid-input")

    def test_invalid_prompt(self) -> None:
        """A menu's invalid_prompt replaces the book's in that menu only."""
        session, core = self.live(_table(max_invalid=0))
        session.digit_received("7")
        self.assertEqual(self.port.take(), [Play("call-1", AUDIO + "en/invalid.mp3", True, MAIN_KEYS)])
        session.digit_received("1")
        self.port.take()
        session.digit_received("7")
        self.assertEqual(self.port.take(), [Play("call-1", AUDIO + "billing_invalid.mp3", True, BILLING_KEYS)])
        session.hangup_received(None)

    def test_no_input_prompt(self) -> None:
        """A menu's no_input_prompt plays before the menu is repeated; the book's elsewhere."""
        table = _table(no_input_prompt=None, max_no_input=3)
        table["no_input_prompt"] = "book_silence.mp3"
        table["menus"]["billing"]["no_input_prompt"] = "billing_silence.mp3"
        session, core = self.live(table)
        self.clock.advance(10)
        self.assertEqual(self.port.take(), _menu(["book_silence.mp3"] + MAIN_PROMPTS, MAIN_KEYS))
        session.digit_received("1")
        self.port.take()
        self.clock.advance(4)
        self.assertEqual(self.port.plays()[0], "billing_silence.mp3")
        session.hangup_received(None)

    def test_no_no_input_prompt(self) -> None:
        """Without any no_input_prompt (the seed's flow) only the menu is repeated."""
        session, core = self.live(_table(no_input_prompt=None))
        session.digit_received("1")
        self.port.take()
        self.clock.advance(4)
        self.assertEqual(
            self.port.take(), _menu(["en/welcome.mp3", "pay.mp3", "sales.mp3", "back.mp3"], BILLING_KEYS)
        )
        session.hangup_received(None)


class LanguageTests(MenuSessionTestCase):
    def test_french_caller(self) -> None:
        """A profile with language fr hears the fr set, the confirmation included."""
        session, core = self.live(attributes={"language": "fr"})
        session.digit_received("1")
        self.assertEqual(self.port.plays()[0], "fr/welcome.mp3")
        self.port.take()
        session.digit_received("1")
        self.assertConfirmedTransfer("ext:billing", "billing", confirm="fr/confirm.mp3")

    def test_french_invalid_and_collect(self) -> None:
        """The invalid and collect prompts are in the caller's language too."""
        session, core = self.live(attributes={"language": "fr"})
        session.digit_received("7")
        self.assertEqual(self.port.plays(), ["fr/invalid.mp3"])
        session.digit_received("3")
        self.assertEqual(self.port.plays()[-1], "fr/enter.mp3")
        self.press(session, "12#")
        self.assertEqual(self.port.plays()[-2:], ["fr/invalid.mp3", "fr/enter.mp3"])
        self.press(session, "1234#")
        self.assertEqual(self.port.plays()[-1], "fr/confirm.mp3")
        self.clock.advance(1.5)

    def test_unknown_language(self) -> None:
        """A language without a prompt set gets the default one."""
        session, core = self.live(attributes={"language": "de"})
        session.digit_received("1")
        self.assertEqual(self.port.plays()[0], "en/welcome.mp3")
        session.digit_received("1")
        self.assertEqual(self.port.plays()[-1], "en/confirm.mp3")
        self.clock.advance(1.5)

    def test_no_profile(self) -> None:
        """A caller without a profile hears the default language."""
        book = parse_menu(TABLE, AUDIO)
        session, core = new_session("call-1", book, TIMING, self.clock, self.port)
        self.session = session
        self.addCleanup(self.assertNoTimers)
        session.start()
        session.connected()
        self.clock.advance(0.8)
        self.assertEqual(self.port.take(), _menu(MAIN_PROMPTS, MAIN_KEYS))
        assert core.menu is not None
        self.assertEqual(core.menu.language, "en")
        session.digit_received("1")
        self.assertEqual(self.port.plays()[0], "en/welcome.mp3")
        session.hangup_received(None)


class TransferOnceTests(MenuSessionTestCase):
    def test_every_path(self) -> None:
        """Through every way a call can end in a transfer, exactly one transfer is sent."""
        paths: list[tuple[list[Any], str]] = [
            (["0", 1.5], "ext:op"),
            (["12", 1.5], "ext:sales"),
            (["1*0", 1.5], "ext:op"),
            (["37531#", 1.5], "ext:billing"),
            (["3", "97531", 3, 1.5], "ext:billing"),
            (["4", "86", 2, "2", 1.5], "ext:sales"),
            (["1", 4, 4], "ext:fallback"),
            (["177"], "ext:fallback"),
            (["777"], "ext:op"),
            ([10, 10, 10], "ext:op"),
            (["3", 10, 10, 10], "ext:op"),
            (["3*0*0*"], "ext:op"),
            (["2", "9", 10, 10, 10], "ext:op"),
            (["3", "12"], "ext:op"),
        ]
        for steps, target in paths:
            with self.subTest(steps=steps):
                self.port = RecordingPort(audio=AUDIO)
                self.clock = Clock()
                session, core = self.live()
                for step in steps:
                    if isinstance(step, str):
                        self.press(session, step)
                    else:
                        self.clock.advance(step)
                if steps == ["3", "12"]:
                    session.platform_error("cannot play audio")
                self.assertEqual(self.port.transfers(), [target])
                self.assertEqual(len(self.port.outcomes), 1)
                self.assertEndIsFinal()
                self.assertNoTimers()
