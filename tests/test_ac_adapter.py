"""
Tests for ivrproto.audioconnector.adapter: the call's state machine (the
seed's menus) driving an Audio Connector session through SessionBridge.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, List, Tuple

from twisted.trial.unittest import SynchronousTestCase

from ivrproto.audioconnector.adapter import OutputNames, SessionBridge, outcome_value, prompt_name
from ivrproto.audioconnector.session import ConnectorCall
from ivrproto.config import Timing, load_config
from ivrproto.session.machine import CallSession, Outcome, SessionCore, new_session

from .test_ac_server import ServerCase, write_prompt

SEED = str(Path(__file__).resolve().parent.parent / "examples" / "seed.toml")
PROMPTS = (
    "premium_priority", "ticket_status", "general_operator", "general_welcome",
    "general_support", "selection_confirmed",
)
TIMING = Timing(
    handshake_timeout=10.0,
    profile_budget=0.8,
    no_input_timeout=10.0,
    menu_repeats=2,
    confirm_delay=1.5,
    max_invalid=3,
)


class BridgeCase(ServerCase):
    names = OutputNames()

    def setUp(self) -> None:
        super().setUp()
        for name in PROMPTS:
            write_prompt(self.prompt_dir, name, 0.6)
        self.config = load_config(SEED, {"CLIENT_ID": "id", "CLIENT_SECRET": "secret"})
        self.calls: List[Tuple[SessionBridge, CallSession, SessionCore]] = []
        self.outcomes: List[Outcome] = []
        self.factory.routes["/ivr"] = self.new_bridge

    def new_bridge(self, call: ConnectorCall) -> SessionBridge:
        bridge = SessionBridge(call, lambda: None, self.names, self.outcomes.append)
        session, core = new_session("ac-1", self.config.menu, TIMING, self.clock, bridge)
        bridge.attach(session, lambda: core.collected, core)
        self.calls.append((bridge, session, core))
        return bridge

    def disconnect(self) -> Any:
        found = [m for m in self.client.received if m["type"] == "disconnect"]
        self.assertEqual(len(found), 1)
        return found[0]["parameters"]


class BridgeTests(BridgeCase):
    def test_premium_selection(self) -> None:
        "A premium caller pressing 1 mid-menu is confirmed, then disconnected with the target."
        client = self.open()
        bridge, session, core = self.calls[0]
        session.profile_resolved({"membership_level": "premium", "open_tickets": 2}, "found")
        self.advance(0.3)
        frames = len(client.audio)
        client.send("dtmf", digit="1")
        self.pump.flush()
        barge = {"entities": [{"type": "barge_in", "data": {}}]}
        self.assertIn(barge, [m["parameters"] for m in client.received])
        # The confirmation is not cut short by another key.
        client.send("dtmf", digit="9")
        self.advance(4)
        self.assertEqual(len(client.audio) - frames, 3)
        self.assertEqual([m["parameters"] for m in client.received].count(barge), 1)
        self.assertEqual(
            self.disconnect(),
            {"reason": "completed", "info": "selected", "outputVariables": {
                "ivr_target": "ext:transfer_premium", "ivr_outcome": "selected",
                "ivr_option": "transfer_premium", "ivr_digits": "", "ivr_reason": "selected"}},
        )
        self.assertEqual(client.types()[-1], "closed")
        self.assertEqual(client.violations, [])
        self.assertEqual(self.outcomes[0].kind, "transferred")
        self.assertTrue(client.lost)

    def test_menu_prompts_in_order(self) -> None:
        "The menu's prompts are played in order, one bot turn each."
        client = self.open()
        _, session, _ = self.calls[0]
        session.profile_resolved(None, "not-found")
        self.advance(2)
        # general_welcome, general_support, general_operator: 3 x 3 frames.
        self.assertEqual(len(client.audio), 9)
        self.assertEqual(client.types(), ["opened", "event", "event", "event"])
        self.finish()

    def test_no_input_goes_to_operator(self) -> None:
        "A caller who presses nothing ends on the operator path."
        client = self.open()
        self.advance(0.9)  # the profile budget is spent: the default menu
        self.advance(40)
        params = self.disconnect()
        self.assertEqual(params["reason"], "completed")
        self.assertEqual(params["outputVariables"]["ivr_outcome"], "operator")
        self.assertEqual(params["outputVariables"]["ivr_target"], "ext:transfer_operator")
        self.assertEqual(params["outputVariables"]["ivr_digits"], "")

    def test_caller_hangs_up(self) -> None:
        "close{end} mid-menu records a hang-up and sends no disconnect."
        client = self.open()
        _, session, core = self.calls[0]
        session.profile_resolved(None, "not-found")
        self.advance(0.5)
        client.send("close", reason="end")
        self.advance(1)
        self.assertNotIn("disconnect", client.types())
        self.assertEqual(self.outcomes[0].kind, "hungup")
        self.assertEqual(core.phase, "ended")

    def test_socket_lost(self) -> None:
        "A lost socket ends the call as failed, once."
        client = self.open()
        _, session, _ = self.calls[0]
        session.profile_resolved(None, "not-found")
        client.dropConnection(abort=True)
        self.pump.flush()
        self.assertEqual(len(self.outcomes), 1)
        self.assertEqual(self.outcomes[0].kind, "failed")

    def test_missing_prompt_skipped(self) -> None:
        "A menu prompt without a file is skipped and its key still works."
        import os
        os.remove(os.path.join(self.prompt_dir, "en-US", "general_welcome.wav"))
        client = self.open()
        _, session, _ = self.calls[0]
        session.profile_resolved(None, "not-found")
        self.advance(0.5)
        client.send("dtmf", digit="2")
        self.advance(5)
        self.assertEqual(self.disconnect()["outputVariables"]["ivr_target"], "ext:transfer_support")
        self.assertEqual(len(self.flushLoggedErrors()), 0)


class NoInputAfterTheMenuTests(BridgeCase):
    """
    The no-input timer runs from the end of the menu's audio, not from when
    it was queued: a 5 s menu with the 10 s timeout gives the caller 10 s
    after the last prompt, as over Call Control.
    """

    def setUp(self) -> None:
        super().setUp()
        for name, seconds in (("premium_priority", 1.6), ("ticket_status", 1.8),
                              ("general_operator", 1.6)):
            write_prompt(self.prompt_dir, name, seconds)  # 25 frames: 5.0 s

    def notes(self, core: SessionCore) -> List[str]:
        return [what for _, what in core.timeline]

    def test_timer_from_the_end_of_the_audio(self) -> None:
        "No input 10 s after the 5 s menu has played (not 10 s after it was queued)."
        client = self.open()
        _, session, core = self.calls[0]
        session.profile_resolved({"membership_level": "premium", "open_tickets": 2}, "found")
        start = self.clock.seconds()
        self.advance(14.9)
        self.assertEqual(len(client.audio), 25)
        self.assertNotIn("no input", self.notes(core))
        self.advance(0.2)
        self.assertIn("no input", self.notes(core))
        when = [t for t, what in core.timeline if what == "no input"][0]
        self.assertAlmostEqual(core.started_at + when - start, 15.0, places=6)
        self.finish()

    def test_timer_from_the_clients_playback_completed(self) -> None:
        "A client that reports its playback: the timer runs from its playback_completed."
        client = self.open()
        _, session, core = self.calls[0]
        session.profile_resolved({"membership_level": "premium", "open_tickets": 2}, "found")
        start = self.clock.seconds()
        client.send("playback_started")
        self.advance(5.5)
        client.send("playback_completed")  # 0.5 s after the audio's real-time end
        self.pump.flush()
        self.advance(9.9)
        self.assertNotIn("no input", self.notes(core))
        self.advance(0.2)
        when = [t for t, what in core.timeline if what == "no input"][0]
        self.assertAlmostEqual(core.started_at + when - start, 15.5, places=6)
        self.finish()

    def test_key_during_the_menu_still_works(self) -> None:
        "A key pressed while the menu plays is taken at once (the held timer is cancelled)."
        client = self.open()
        _, session, core = self.calls[0]
        session.profile_resolved({"membership_level": "premium", "open_tickets": 2}, "found")
        self.advance(1.0)
        client.send("dtmf", digit="1")
        self.pump.flush()
        self.advance(6)
        self.assertNotIn("no input", self.notes(core))
        self.assertEqual(self.outcomes[0].target, "ext:transfer_premium")


class CollectTests(BridgeCase):
    def test_collected_digits_returned(self) -> None:
        "The digits of a collect step are returned in the digits output."
        self.open()
        bridge, session, core = self.calls[0]
        session.profile_resolved(None, "not-found")
        core.collected["account"] = "12345"
        session.digit_received("1")
        self.advance(5)
        self.assertEqual(self.disconnect()["outputVariables"]["ivr_digits"], "12345")


class RenamedOutputsTests(BridgeCase):
    names = OutputNames(target="transferTo", digits=None, reason=None, option=None)

    def test_names_follow_settings(self) -> None:
        "Output variable names come from OutputNames; None leaves one out."
        client = self.open()
        _, session, _ = self.calls[0]
        session.profile_resolved(None, "not-found")
        self.advance(0.3)
        client.send("dtmf", digit="1")
        self.advance(5)
        self.assertEqual(self.disconnect()["outputVariables"],
                         {"transferTo": "ext:transfer_sales", "ivr_outcome": "selected"})


class MappingTests(SynchronousTestCase):
    def test_prompt_name(self) -> None:
        "A Play URL names the prompt by its file name without extension."
        self.assertEqual(prompt_name("https://example.com/ivr/audio/en-US/welcome.mp3?v=2"), "welcome")
        self.assertEqual(prompt_name("general_operator.wav"), "general_operator")

    def test_outcome_values(self) -> None:
        "Outcomes map to selected, operator, hangup or failed."
        self.assertEqual(outcome_value(Outcome("transferred", "selected", "t", "a")), "selected")
        self.assertEqual(outcome_value(Outcome("transferred", "no-input", "t", "a")), "operator")
        self.assertEqual(outcome_value(Outcome("hungup", "caller")), "hangup")
        self.assertEqual(outcome_value(Outcome("failed", "x")), "failed")
