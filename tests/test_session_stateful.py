"""
The session machine under any sequence of inputs: events from the platform,
timers firing (on time or racing a state change), sends that fail or raise,
hang-ups, closes and drains.  Whatever happens: no exception escapes, the
call ends exactly once, it transfers at most once, and only to a configured
target; once the connection is gone the call has ended.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, List, Optional

import attrs
from hypothesis import HealthCheck, settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from ivrproto.config import Timing, load_config
from ivrproto.messages import Transfer
from ivrproto.session.machine import STATES, CallSession, Outcome, new_session

ROOT = Path(__file__).resolve().parent.parent
ENV = {"CLIENT_ID": "id", "CLIENT_SECRET": "secret"}
BOOKS = {
    name: load_config(str(ROOT / "examples" / name), ENV).menu for name in ("seed.toml", "rich.toml")
}
TIMING = Timing(max_keys_kept=8, max_notes=20, max_reason_length=40)
PROFILES = [None, {}, {"membership_level": "premium", "open_tickets": 2}, {"language": "fr"}]


class SendBroke(Exception):
    """What a broken transport raises (autobahn raises its Disconnected)."""


@attrs.define
class FlakyPort:
    """
    A CallPort whose sends can start to fail (answer ``False``) or raise.
    """

    broken: Optional[str] = None
    sent: List[Any] = attrs.Factory(list)
    refused: int = 0
    outcomes: List[Outcome] = attrs.Factory(list)

    def lookup_profile(self) -> None:
        pass

    def open_connection(self) -> None:
        pass

    def send(self, command: Any) -> Optional[bool]:
        if self.broken == "false":
            self.refused += 1
            return False
        if self.broken == "raise":
            self.refused += 1
            raise SendBroke()
        self.sent.append(command)
        return None

    def close(self) -> None:
        if self.broken == "raise":
            raise SendBroke()

    def abort(self) -> None:
        if self.broken == "raise":
            raise SendBroke()

    def finished(self, outcome: Outcome) -> None:
        self.outcomes.append(outcome)


class CallMachine(RuleBasedStateMachine):
    """
    One call, driven by hypothesis.
    """

    def __init__(self) -> None:
        super().__init__()
        self.clock = Clock()
        self.port = FlakyPort()
        self.book = BOOKS["rich.toml"]
        self.session: CallSession
        self.session, self.core = new_session("call-1", self.book, TIMING, self.clock, self.port)
        self.session.start()
        self.refused_before = 0

    # -- the platform and the profile ----------------------------------------

    @rule(attributes=st.sampled_from(PROFILES), how=st.sampled_from(["found", "none", "failed"]))
    def profile(self, attributes: Any, how: str) -> None:
        self.session.profile_resolved(attributes, how)

    @rule()
    def connected(self) -> None:
        self.session.connected()

    @rule(digit=st.sampled_from("0123456789*#"))
    def digit(self, digit: str) -> None:
        self.session.digit_received(digit)

    @rule(reason=st.one_of(st.none(), st.text(max_size=80)))
    def hangup(self, reason: Optional[str]) -> None:
        self.session.hangup_received(reason)

    @rule(message=st.text(max_size=80))
    def platform_error(self, message: str) -> None:
        self.session.platform_error(message)

    @rule(reason=st.sampled_from(["connection lost", "closed normally (1000)"]))
    def connection_lost(self, reason: str) -> None:
        self.session.connection_lost(reason)
        assert self.port.outcomes, "the connection went and the call did not end"

    @rule(reason=st.sampled_from(["refused", "cannot connect"]))
    def connection_failed(self, reason: str) -> None:
        self.session.connection_failed(reason)
        assert self.port.outcomes, "the connection failed and the call did not end"

    @rule(how=st.sampled_from(["false", "raise"]))
    def sends_break(self, how: str) -> None:
        self.port.broken = how
        self.refused_before = self.port.refused

    @rule()
    def drain(self) -> None:
        self.session.drain()
        assert self.port.outcomes, "a drain left the call running"

    # -- timers: on time, or racing a state that has moved on ---------------------

    @rule(seconds=st.floats(min_value=0, max_value=12))
    def time_passes(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @rule(
        timer=st.sampled_from(
            ["profile_budget_spent", "handshake_timed_out", "input_timed_out", "confirm_elapsed"]
        )
    )
    def stale_timer(self, timer: str) -> None:
        getattr(self.session, timer)()

    # -- internal inputs, arriving out of turn --------------------------------

    @rule(data=st.data())
    def internal(self, data: st.DataObject) -> None:
        kind = data.draw(
            st.sampled_from(
                ["transfer_chosen", "transfer_now", "menu_entered", "hangup_chosen", "give_up", "start"]
            )
        )
        if kind in ("transfer_chosen", "transfer_now"):
            action = data.draw(st.sampled_from(sorted(self.book.targets)))
            if kind == "transfer_chosen":
                self.session.transfer_chosen(action)
            else:
                self.session.transfer_now(action, "selected")
        elif kind == "menu_entered":
            self.session.menu_entered(data.draw(st.sampled_from(sorted(self.book.menus))))
        elif kind == "hangup_chosen":
            self.session.hangup_chosen("test")
        elif kind == "give_up":
            self.session.give_up("no-input")
        else:
            self.session.start()

    # -- what always holds ---------------------------------------------------------

    @invariant()
    def at_most_one_outcome(self) -> None:
        assert len(self.port.outcomes) <= 1, self.port.outcomes

    @invariant()
    def at_most_one_transfer_to_a_configured_target(self) -> None:
        transfers = [c.target for c in self.port.sent if isinstance(c, Transfer)]
        assert len(transfers) <= 1, transfers
        assert set(transfers) <= set(self.book.targets.values()), transfers
        if transfers:
            assert self.port.outcomes and self.port.outcomes[0].kind == "transferred"

    @invariant()
    def a_failed_send_ends_the_call(self) -> None:
        if self.port.refused > self.refused_before:
            assert self.port.outcomes, "a send failed and the call did not end"

    @invariant()
    def an_ended_call_holds_no_timer(self) -> None:
        if self.port.outcomes:
            assert self.core.phase == "ended"
            assert self.clock.getDelayedCalls() == []

    @invariant()
    def what_is_kept_is_bounded(self) -> None:
        assert len(self.core.keys) <= TIMING.max_keys_kept
        assert len(self.core.timeline) <= TIMING.max_notes
        for outcome in self.port.outcomes:
            assert len(outcome.reason) <= TIMING.max_reason_length + 40 + 60, outcome

    def teardown(self) -> None:
        # Whatever came before, the call ends exactly once within a bound of
        # its own timers (handshake, no input, confirmation), with no drain.
        for _ in range(40):
            self.clock.advance(10)
        assert len(self.port.outcomes) == 1, (self.core.phase, self.port.outcomes)
        self.session.drain()
        assert len(self.port.outcomes) == 1, self.port.outcomes
        assert self.clock.getDelayedCalls() == []


CallMachine.TestCase.settings = settings(
    max_examples=150,
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


class SessionStatefulTests(CallMachine.TestCase):  # type: ignore[misc,valid-type]
    """Any sequence of inputs: no escaped exception, one outcome, at most one allowed transfer."""


class EveryPairTests(SynchronousTestCase):
    def test_every_state_answers_every_input(self) -> None:
        """The machine has an answer (possibly doing nothing) for every input in every state."""
        from ivrproto.session.machine import IGNORED, builder

        inputs = [name for name in dir(CallSession) if not name.startswith("_")]
        self.assertEqual(len(STATES), 8)
        # Drive a call into each state, then feed it every input in turn.
        for state in STATES:
            for name in inputs:
                clock = Clock()
                port = FlakyPort()
                book = BOOKS["rich.toml"]
                session, core = new_session("call-1", book, TIMING, clock, port)
                _reach(session, state.name, book)
                _feed(session, name, book)
                # A call not yet started has no outcome to reach: start it
                # (a no-op in every other state), then drain.
                session.start()
                session.drain()
                clock.advance(120)
                self.assertEqual(len(port.outcomes), 1, (state.name, name))
        self.assertTrue(IGNORED and builder)


def _reach(session: CallSession, state: str, book: Any) -> None:
    steps: dict[str, list[tuple[str, tuple[Any, ...]]]] = {
        "idle": [],
        "awaiting_both": [("start", ())],
        "awaiting_profile": [("start", ()), ("connected", ())],
        "awaiting_connection": [("start", ()), ("profile_resolved", (None, "none"))],
        "in_menu": [("start", ()), ("connected", ()), ("profile_resolved", (None, "none"))],
        "collecting": [
            ("start", ()),
            ("connected", ()),
            ("profile_resolved", (None, "none")),
            ("digit_received", ("2",)),
            ("digit_received", ("1",)),
        ],
        "confirming": [
            ("start", ()),
            ("connected", ()),
            ("profile_resolved", (None, "none")),
            ("digit_received", ("1",)),
        ],
        "ended": [("start", ()), ("connection_failed", ("refused",))],
    }
    for name, args in steps[state]:
        getattr(session, name)(*args)


def _feed(session: CallSession, name: str, book: Any) -> None:
    from ivrproto.menu.book import Collect

    args: dict[str, tuple[Any, ...]] = {
        "profile_resolved": (None, "none"),
        "connection_failed": ("refused",),
        "digit_received": ("5",),
        "transfer_chosen": ("operator",),
        "collect_started": (
            Collect(name="account", prompt="enter_account", then=book.on_failure(None)),
        ),
        "menu_entered": ("billing",),
        "hangup_chosen": ("test",),
        "transfer_now": ("operator", "selected"),
        "give_up": ("no-input",),
        "hangup_received": (None,),
        "platform_error": ("boom",),
        "connection_lost": ("connection lost",),
    }
    getattr(session, name)(*args.get(name, ()))
