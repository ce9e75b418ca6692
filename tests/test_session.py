"""
The per-call state machine, driven by hand with a recording port and a Clock.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, List, Optional

import attrs
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from ivrproto.config import Timing, load_config
from ivrproto.messages import Hangup, Play, Transfer
from ivrproto.session.machine import CallSession, Outcome, SessionCore, new_session

SEED = str(Path(__file__).resolve().parent.parent / "examples" / "seed.toml")
AUDIO = "https://example.com/ivr/audio/"
PREMIUM_TICKETS = {"membership_level": "premium", "open_tickets": 2}


@attrs.define
class RecordingPort:
    """
    A CallPort that records what the session asks of it.

    :ivar audio: the prompts' base URL, left out by :meth:`plays`
    """

    audio: str = AUDIO
    lookups: int = 0
    opens: int = 0
    sent: List[Any] = attrs.Factory(list)
    closes: int = 0
    aborts: int = 0
    outcomes: List[Outcome] = attrs.Factory(list)

    def lookup_profile(self) -> None:
        self.lookups += 1

    def open_connection(self) -> None:
        self.opens += 1

    def send(self, command: Any) -> None:
        self.sent.append(command)

    def close(self) -> None:
        self.closes += 1

    def abort(self) -> None:
        self.aborts += 1

    def finished(self, outcome: Outcome) -> None:
        self.outcomes.append(outcome)

    def plays(self) -> List[str]:
        return [c.audio[len(self.audio):] for c in self.sent if isinstance(c, Play)]

    def transfers(self) -> List[str]:
        return [c.target for c in self.sent if isinstance(c, Transfer)]

    def take(self) -> List[Any]:
        """
        What was sent since the last call, and forget it.
        """
        sent, self.sent = self.sent, []
        return sent


TIMING = Timing(
    handshake_timeout=10.0,
    profile_budget=0.8,
    no_input_timeout=10.0,
    menu_repeats=2,
    confirm_delay=1.5,
    max_invalid=3,
)


class SessionTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.config = load_config(SEED, {"CLIENT_ID": "id", "CLIENT_SECRET": "secret"})
        self.clock = Clock()
        self.port = RecordingPort()

    def make(self, timing: Timing = TIMING) -> tuple[CallSession, SessionCore]:
        session, core = new_session("call-1", self.config.menu, timing, self.clock, self.port)
        self.addCleanup(self.assertNoTimers)
        return session, core

    def assertNoTimers(self) -> None:
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def live(
        self, attributes: Optional[dict[str, Any]] = PREMIUM_TICKETS, how: str = "found"
    ) -> tuple[CallSession, SessionCore]:
        session, core = self.make()
        session.start()
        session.profile_resolved(attributes, how)
        session.connected()
        return session, core


class StartTests(SessionTestCase):
    def test_start_asks_for_profile_and_connection(self) -> None:
        """Starting a call looks the profile up and opens the connection at once."""
        session, core = self.make()
        session.start()
        self.assertEqual((self.port.lookups, self.port.opens), (1, 1))
        self.assertEqual(self.port.sent, [])
        session.connection_failed("test over")

    def test_profile_then_connected_sends_menu(self) -> None:
        """With the profile first, the menu goes out when the platform says connected."""
        session, core = self.make()
        session.start()
        session.profile_resolved(PREMIUM_TICKETS, "found")
        self.assertEqual(self.port.sent, [])
        session.connected()
        self.assertEqual(
            self.port.plays(),
            ["premium_priority.mp3", "ticket_status.mp3", "general_operator.mp3"],
        )
        for play in self.port.sent:
            self.assertEqual((play.dtmf_enabled, play.keys), (True, ("1", "2", "0")))
            self.assertEqual(play.call_control_id, "call-1")
        session.hangup_received(None)

    def test_connected_then_profile_sends_menu(self) -> None:
        """With the connection first, the menu goes out when the profile arrives."""
        session, core = self.make()
        session.start()
        session.connected()
        self.assertEqual(self.port.sent, [])
        session.profile_resolved({"open_tickets": 1}, "found")
        self.assertEqual(self.port.plays(), ["ticket_status.mp3", "general_operator.mp3"])
        session.hangup_received(None)

    def test_budget_spent_gives_default_menu(self) -> None:
        """A lookup slower than its budget gives the default menu; the late answer changes nothing."""
        session, core = self.make()
        session.start()
        session.connected()
        self.clock.advance(0.8)
        self.assertEqual(
            self.port.plays(),
            ["general_welcome.mp3", "general_support.mp3", "general_operator.mp3"],
        )
        self.assertEqual(core.profile, "timed-out")
        session.profile_resolved(PREMIUM_TICKETS, "found")
        self.assertEqual(len(self.port.sent), 3)
        session.hangup_received(None)

    def test_budget_spent_before_connected(self) -> None:
        """The budget can run out before the connection is up; the default menu follows connected."""
        session, core = self.make()
        session.start()
        self.clock.advance(0.8)
        self.assertEqual(self.port.sent, [])
        session.connected()
        self.assertEqual(self.port.plays()[0], "general_welcome.mp3")
        session.hangup_received(None)

    def test_no_profile_gives_default_menu(self) -> None:
        """No profile (404 or failure) gives the default menu of contract item 4."""
        session, core = self.live(None, "not-found")
        self.assertEqual(
            self.port.plays(),
            ["general_welcome.mp3", "general_support.mp3", "general_operator.mp3"],
        )
        self.assertEqual(self.port.sent[0].keys, ("1", "2", "0"))
        session.hangup_received(None)


class ConnectionFailureTests(SessionTestCase):
    def test_handshake_timeout(self) -> None:
        """No connected within the handshake timeout: abort, and the call fails."""
        session, core = self.make()
        session.start()
        session.profile_resolved(None, "not-found")
        self.clock.advance(10.0)
        self.assertEqual(self.port.aborts, 1)
        self.assertEqual(self.port.outcomes, [Outcome("failed", "handshake timed out")])

    def test_handshake_timer_cancelled_once_connected(self) -> None:
        """Once connected, the handshake timeout never closes the session."""
        session, core = self.live()
        self.clock.advance(9.9)
        self.clock.advance(0.2)
        self.assertEqual(self.port.aborts, 0)
        self.assertEqual(self.port.outcomes, [])
        session.hangup_received("caller")

    def test_refused(self) -> None:
        """A refused handshake ends the call as failed, with the reason."""
        session, core = self.make()
        session.start()
        session.connection_failed("upgrade refused (HTTP 403)")
        self.assertEqual(self.port.outcomes, [Outcome("failed", "upgrade refused (HTTP 403)")])
        self.assertEqual(self.port.sent, [])


class SelectionTests(SessionTestCase):
    def test_valid_key_confirms_then_transfers(self) -> None:
        """A valid key plays the confirmation with DTMF off, then transfers after the delay."""
        session, core = self.live()
        self.port.sent.clear()
        session.digit_received("1")
        self.assertEqual(self.port.sent, [Play("call-1", AUDIO + "selection_confirmed.mp3", False)])
        self.clock.advance(1.49)
        self.assertEqual(self.port.transfers(), [])
        self.clock.advance(0.01)
        self.assertEqual(self.port.transfers(), ["ext:transfer_premium"])
        self.assertEqual(self.port.closes, 1)
        self.assertEqual(
            self.port.outcomes,
            [Outcome("transferred", "selected", "ext:transfer_premium", "transfer_premium")],
        )

    def test_invalid_key_then_valid(self) -> None:
        """An invalid key plays invalid_selection with DTMF on and keeps waiting."""
        session, core = self.live({"membership_level": "premium"})
        self.port.sent.clear()
        session.digit_received("7")
        self.assertEqual(
            self.port.sent,
            [Play("call-1", AUDIO + "invalid_selection.mp3", True, ("1", "0"))],
        )
        session.digit_received("0")
        self.clock.advance(1.5)
        self.assertEqual(self.port.transfers(), ["ext:transfer_operator"])
        self.assertEqual(core.keys, ["7", "0"])

    def test_key_of_another_menu_is_invalid(self) -> None:
        """Key 2 is invalid for a caller whose menu has no key 2."""
        session, core = self.live({"membership_level": "premium"})
        session.digit_received("2")
        self.assertEqual(self.port.plays()[-1], "invalid_selection.mp3")
        session.hangup_received(None)

    def test_too_many_invalid_keys_go_to_operator(self) -> None:
        """After max_invalid invalid keys the caller goes to the operator."""
        session, core = self.live()
        for digit in "789":
            session.digit_received(digit)
        self.assertEqual(self.port.transfers(), ["ext:transfer_operator"])
        self.assertEqual(self.port.outcomes[0].reason, "invalid-input")
        self.assertEqual(self.port.plays().count("invalid_selection.mp3"), 2)

    def test_no_limit_on_invalid_keys(self) -> None:
        """With max_invalid 0 (the seed's flow), invalid keys never end the call."""
        session, core = self.make(attrs.evolve(TIMING, max_invalid=0))
        session.start()
        session.profile_resolved(None, "not-found")
        session.connected()
        for _ in range(10):
            session.digit_received("9")
        self.assertEqual(self.port.plays().count("invalid_selection.mp3"), 10)
        self.assertEqual(self.port.transfers(), [])
        session.hangup_received(None)

    def test_keys_while_confirming_are_ignored(self) -> None:
        """Keys after a selection change nothing: one transfer, to the first choice."""
        session, core = self.live()
        session.digit_received("2")
        session.digit_received("1")
        session.digit_received("0")
        self.clock.advance(1.5)
        self.assertEqual(self.port.transfers(), ["ext:play_ticket_info"])

    def test_transfer_exactly_once(self) -> None:
        """Nothing after the transfer sends a second one."""
        session, core = self.live()
        session.digit_received("1")
        self.clock.advance(1.5)
        session.digit_received("0")
        session.hangup_received(None)
        session.platform_error("late")
        session.connection_lost("closed normally (1000)")
        session.input_timed_out()
        session.confirm_elapsed()
        self.assertEqual(len(self.port.transfers()), 1)
        self.assertEqual(len(self.port.outcomes), 1)


class NoInputTests(SessionTestCase):
    def test_silent_caller(self) -> None:
        """No key: the menu is repeated twice, 10 s apart, then the operator."""
        session, core = self.live(None, "not-found")
        self.assertEqual(len(self.port.plays()), 3)
        self.clock.advance(9.99)
        self.assertEqual(len(self.port.plays()), 3)
        self.clock.advance(0.01)
        self.assertEqual(len(self.port.plays()), 6)
        self.clock.advance(10)
        self.assertEqual(len(self.port.plays()), 9)
        self.assertEqual(self.port.transfers(), [])
        self.clock.advance(10)
        self.assertEqual(self.port.transfers(), ["ext:transfer_operator"])
        self.assertEqual(self.port.outcomes[0].reason, "no-input")

    def test_key_during_repeat(self) -> None:
        """A key pressed after a repeat is handled as usual."""
        session, core = self.live(None, "not-found")
        self.clock.advance(10)
        session.digit_received("2")
        self.clock.advance(1.5)
        self.assertEqual(self.port.transfers(), ["ext:transfer_support"])

    def test_configurable_timings(self) -> None:
        """The no-input timeout, repeats and confirmation delay come from config."""
        timing = attrs.evolve(TIMING, no_input_timeout=0.5, menu_repeats=0, confirm_delay=0)
        session, core = self.make(timing)
        session.start()
        session.profile_resolved(None, "not-found")
        session.connected()
        self.clock.advance(0.5)
        self.assertEqual(self.port.transfers(), ["ext:transfer_operator"])


class EndTests(SessionTestCase):
    def test_hangup_mid_menu(self) -> None:
        """A hangup ends the call: no transfer, timers cancelled."""
        session, core = self.live()
        session.hangup_received("caller")
        self.assertEqual(self.port.outcomes, [Outcome("hungup", "caller")])
        self.assertEqual(self.port.transfers(), [])

    def test_hangup_while_confirming(self) -> None:
        """A hangup during the confirmation cancels the pending transfer."""
        session, core = self.live()
        session.digit_received("1")
        session.hangup_received(None)
        self.clock.advance(5)
        self.assertEqual(self.port.transfers(), [])

    def test_connection_lost_mid_call(self) -> None:
        """A 1011 or a dropped connection ends the call as failed."""
        session, core = self.live()
        session.connection_lost("platform internal error (1011)")
        self.assertEqual(
            self.port.outcomes, [Outcome("failed", "platform internal error (1011)")]
        )

    def test_platform_error_routes_to_operator(self) -> None:
        """An error event while in the menu hands the caller to the operator."""
        session, core = self.live()
        session.platform_error("cannot play audio")
        self.assertEqual(self.port.transfers(), ["ext:transfer_operator"])
        self.assertEqual(self.port.outcomes[0].reason, "platform-error")

    def test_platform_error_while_confirming_keeps_transfer(self) -> None:
        """An error during the confirmation does not change where the caller goes."""
        session, core = self.live()
        session.digit_received("2")
        session.platform_error("cannot play audio")
        self.clock.advance(1.5)
        self.assertEqual(self.port.transfers(), ["ext:play_ticket_info"])

    def test_timeline(self) -> None:
        """The session keeps a timeline for the call's log line."""
        session, core = self.live()
        session.digit_received("1")
        self.clock.advance(1.5)
        whats = [what for _, what in core.timeline]
        self.assertEqual(whats[0], "call accepted")
        self.assertIn("key 1", whats)
        self.assertEqual(whats[-1], "ended: transferred (selected)")

    def test_no_hangup_command_needed(self) -> None:
        """The session never sends the hangup command on its own."""
        session, core = self.live()
        session.digit_received("0")
        self.clock.advance(1.5)
        self.assertFalse(any(isinstance(c, Hangup) for c in self.port.sent))
