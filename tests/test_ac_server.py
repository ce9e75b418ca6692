"""
Tests for the Audio Connector server: ivrproto.audioconnector.server and
.session, driven by a scripted Genesys-side client in memory.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import wave
from typing import Any, Callable, Dict, List, Optional, Tuple

import attrs
import orjson
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from ivrproto.audioconnector.auth import Authenticator, sign_headers
from ivrproto.audioconnector.prompts import PromptError, PromptLibrary
from ivrproto.audioconnector.server import AudioConnectorFactory
from ivrproto.audioconnector.session import (
    CallInfo,
    ConnectorCall,
    ConnectorSession,
    SessionSettings,
    State,
)
from ivrproto.audioconnector.testing import (
    SESSION_ID,
    GenesysClientProtocol,
    connect_in_memory,
    upgrade_headers,
)
from twisted.test.iosim import IOPump

KEY = "the-api-key"
SECRET = "c2VjcmV0LWJ5dGVzLWZvci10aGUtdGVzdHM="
T0 = 1_800_000_000.0


def temp_dir(case: Any) -> str:
    "A fresh directory, removed when the test ends."
    path = tempfile.mkdtemp(prefix="ivr-ac-")
    case.addCleanup(shutil.rmtree, path, True)
    return path


def write_prompt(directory: str, name: str, seconds: float, language: str = "en-US") -> None:
    os.makedirs(os.path.join(directory, language), exist_ok=True)
    with wave.open(os.path.join(directory, language, f"{name}.wav"), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"\x10\x00" * int(8000 * seconds))


class RecordingListener:
    """
    Call logic for tests: records what it is told, and runs ``script``
    callbacks (event name -> callable taking the call and the argument).
    """

    def __init__(self, call: ConnectorCall, script: Dict[str, Callable[..., None]]) -> None:
        self.call = call
        self.script = script
        self.events: List[Tuple[str, Any]] = []

    def _run(self, name: str, arg: Any) -> None:
        self.events.append((name, arg))
        action = self.script.get(name)
        if action is not None:
            action(self.call, arg)

    def opened(self, info: CallInfo) -> None:
        self._run("opened", info)

    def digit_received(self, digit: str) -> None:
        self._run("digit", digit)

    def playback_completed(self) -> None:
        self._run("playback_completed", None)

    def hangup_received(self, reason: str) -> None:
        self._run("hangup", reason)

    def connection_lost(self, reason: str) -> None:
        self._run("lost", reason)

    def names(self) -> List[str]:
        return [name for name, _ in self.events]


class ServerCase(SynchronousTestCase):
    """
    A server with prompts ``welcome`` (1 s), ``menu`` (3 s) and ``bye``
    (0.4 s), one unsigned key and one signed key.
    """

    settings = SessionSettings()

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(T0)
        self.prompt_dir = temp_dir(self)
        write_prompt(self.prompt_dir, "welcome", 1.0)
        write_prompt(self.prompt_dir, "menu", 3.0)
        write_prompt(self.prompt_dir, "bye", 0.4)
        self.script: Dict[str, Callable[..., None]] = {
            "opened": lambda call, info: call.play(["welcome"], "Welcome"),
        }
        self.listeners: List[RecordingListener] = []
        self.auth = Authenticator(self.clock, {KEY: None, "signed-key": SECRET})
        self.factory = AudioConnectorFactory(
            self.clock, self.auth, {"/ivr": self.new_listener},
            PromptLibrary(self.prompt_dir), self.settings,
        )

    def tearDown(self) -> None:
        self.assertEqual(self.clock.getDelayedCalls(), [], "timers left on the clock")

    def new_listener(self, call: ConnectorCall) -> RecordingListener:
        listener = RecordingListener(call, self.script)
        self.listeners.append(listener)
        return listener

    def connect(
        self, headers: Optional[Dict[str, str]] = None, url: str = "ws://bot.example.com/ivr"
    ) -> Tuple[GenesysClientProtocol, Any, IOPump]:
        self.client, self.server, self.pump = connect_in_memory(
            self.clock, self.factory, upgrade_headers(KEY) if headers is None else headers, url
        )
        self.pump.flush()
        return self.client, self.server, self.pump

    def open(self, **kwargs: Any) -> GenesysClientProtocol:
        client, _, pump = self.connect()
        self.assertTrue(client.upgraded)
        client.send_open(**kwargs)
        pump.flush()
        return client

    def advance(self, seconds: float, step: float = 0.1) -> None:
        """
        Move time on, stopping at every timer (exactly at its time) and at
        least every ``step`` seconds, pumping bytes at each stop.
        """
        end = self.clock.seconds() + seconds
        while True:
            now = self.clock.seconds()
            if now >= end - 1e-9:
                break
            due = [c.getTime() for c in self.clock.getDelayedCalls()]
            target = min([end, now + step] + [t for t in due if t > now])
            self.clock.advance(target - now)
            self.pump.flush()

    def finish(self) -> None:
        "End the session from the client's side and let the socket go."
        if not self.client.lost:
            self.client.send("close", reason="end")
            self.pump.flush()
        self.advance(6)

    @property
    def session(self) -> ConnectorSession:
        session = self.server.session
        assert session is not None
        return session  # type: ignore[no-any-return]


# The server messages of the documented example session.
EXAMPLE_SERVER = [
    {"version": "2", "id": SESSION_ID, "type": "opened", "seq": 1, "clientseq": 1,
     "parameters": {"media": [{"type": "audio", "format": "PCMU", "channels": ["external"], "rate": 8000}]}},
    {"version": "2", "id": SESSION_ID, "type": "event", "seq": 2, "clientseq": 1,
     "parameters": {"entities": [{"type": "bot_turn_response",
                                  "data": {"disposition": "match", "text": "Welcome", "confidence": 1}}]}},
    {"version": "2", "id": SESSION_ID, "type": "pong", "seq": 3, "clientseq": 3, "parameters": {}},
    {"version": "2", "id": SESSION_ID, "type": "pong", "seq": 4, "clientseq": 4, "parameters": {}},
    {"version": "2", "id": SESSION_ID, "type": "disconnect", "seq": 5, "clientseq": 6,
     "parameters": {"reason": "completed", "info": "menu choice",
                    "outputVariables": {"intent": "billing", "digits": "1"}}},
    {"version": "2", "id": SESSION_ID, "type": "closed", "seq": 6, "clientseq": 7, "parameters": {}},
]


class TranscriptTests(ServerCase):
    settings = SessionSettings(audio_lead=0.0)

    def test_documented_example(self) -> None:
        "The documented example session, replayed by the client, gets exactly its answers."
        self.script["digit"] = lambda call, d: call.disconnect(
            "completed", {"intent": "billing", "digits": d}, "menu choice"
        )
        client = self.open(input_variables={"customerId": "C-42", "callReason": "billing"})
        self.clock.advance(0.2)
        self.pump.flush()
        client.position = 0.2
        client.send("playback_started")
        self.advance(0.8)
        client.position = 1.0
        client.send("ping")
        self.pump.flush()
        client.send("ping", rtt="PT0.002143602S")
        self.advance(0.4)
        client.position = 1.4
        client.send("playback_completed")
        self.advance(0.2)
        client.position = 1.6
        client.send("dtmf", digit="1")
        self.advance(1.0)
        self.assertEqual(client.received, EXAMPLE_SERVER)
        self.assertEqual(client.violations, [])
        # The 1 s prompt: five 1600-byte frames, one every 200 ms.
        self.assertEqual([len(f) for _, f in client.audio], [1600] * 5)
        self.assertEqual([round(t - T0, 3) for t, _ in client.audio], [0.0, 0.2, 0.4, 0.6, 0.8])
        self.assertTrue(client.lost)
        listener = self.listeners[0]
        self.assertEqual(listener.names(), ["opened", "playback_completed", "digit", "lost"])
        info = listener.events[0][1]
        self.assertEqual(info.input_variables["customerId"], "C-42")
        self.assertEqual(info.ani, "tel:+14155550100")
        self.assertEqual(info.language, "en-US")
        self.assertEqual(info.connector, "/ivr")

    def test_no_audio_before_opened(self) -> None:
        "The first thing the server sends is opened; audio only follows it."
        client = self.open()
        self.assertEqual(client.wire[0][0], "text")
        self.assertEqual(client.wire[0][1]["type"], "opened")
        self.assertIn("audio", [kind for kind, _ in client.wire[1:]])
        self.finish()


class UpgradeTests(ServerCase):
    def refused(self, headers: Dict[str, str], url: str = "ws://bot.example.com/ivr") -> GenesysClientProtocol:
        client, _, pump = self.connect(headers, url)
        self.clock.advance(0.49)
        pump.flush()
        self.assertIsNone(client.upgrade_failure, "refused before the minimum delay")
        self.clock.advance(0.01)
        pump.flush()
        self.assertFalse(client.upgraded)
        self.assertIn("401", client.upgrade_failure or "")
        self.assertEqual(self.listeners, [])
        return client

    def signed(self, **overrides: Any) -> Dict[str, str]:
        args: Dict[str, Any] = dict(
            api_key="signed-key", secret=SECRET, target="/ivr",
            # Autobahn's client always names the port in Host.
            authority="bot.example.com:80",
            organization_id="0ce25900-7fae-49e4-92e1-50518906b27c", session_id=SESSION_ID,
            correlation_id="corr", nonce="bm9uY2Utb2YtdHdlbnR5LWZvdXI=", created=int(T0),
        )
        args.update(overrides)
        headers = sign_headers(**args)
        del headers["host"]  # the client sends its own
        return headers

    def test_missing_key(self) -> None:
        "An upgrade without X-API-KEY is refused with 401 after the delay."
        headers = upgrade_headers(KEY)
        del headers["X-API-KEY"]
        self.refused(headers)
        self.assertEqual(self.factory.refusals, 1)

    def test_unknown_key(self) -> None:
        "An upgrade with an unknown key is refused with 401."
        self.refused(upgrade_headers("nope"))

    def test_unsigned_when_signature_required(self) -> None:
        "A key with a secret refuses an unsigned upgrade."
        self.refused(upgrade_headers("signed-key"))

    def test_bad_signature(self) -> None:
        "A signature with the wrong secret is refused."
        self.refused(self.signed(secret="b3RoZXItc2VjcmV0LWJ5dGVz"))

    def test_stale_and_future(self) -> None:
        "Stale or future created times are refused at the upgrade."
        self.refused(self.signed(created=int(T0) - 60))
        self.refused(self.signed(created=int(T0) + 60, nonce="x" * 24))

    def test_short_and_repeated_nonce(self) -> None:
        "A short nonce is refused, and so is a nonce used twice."
        self.refused(self.signed(nonce="short"))
        client, _, pump = self.connect(self.signed())
        self.assertTrue(client.upgraded)
        client.dropConnection(abort=True)
        pump.flush()
        self.refused(self.signed())

    def test_signed_accepted(self) -> None:
        "A correctly signed upgrade (signed over the Host and path) is accepted."
        client, _, _ = self.connect(self.signed())
        self.assertTrue(client.upgraded)
        client.send_open()
        self.pump.flush()
        self.assertEqual(client.types()[0], "opened")
        self.finish()

    def test_unknown_path(self) -> None:
        "An authenticated upgrade for a path with no route is refused with 404."
        client, _, pump = self.connect(url="ws://bot.example.com/other")
        self.assertIn("404", client.upgrade_failure or "")

    def test_path_with_query_and_slash(self) -> None:
        "The route ignores the query and a trailing slash."
        client, _, _ = self.connect(url="ws://bot.example.com/ivr/?x=1")
        self.assertTrue(client.upgraded)
        self.finish()

    def test_wrong_organization(self) -> None:
        "An open for another organization than the header's gets disconnect unauthorized."
        client = self.open(organization_id="11111111-1111-1111-1111-111111111111")
        self.assertEqual(client.types(), ["disconnect", "closed"])
        self.assertEqual(client.received[0]["parameters"]["reason"], "unauthorized")
        self.assertEqual(client.audio, [])
        self.assertEqual(self.listeners, [])
        self.finish()

    def test_organization_allow_list(self) -> None:
        "An organization outside the configured allow-list gets disconnect unauthorized."
        self.factory.settings = SessionSettings(organizations=frozenset({"someone-else"}))
        client = self.open()
        self.assertEqual(client.received[0]["parameters"]["reason"], "unauthorized")
        self.finish()


class OpeningTests(ServerCase):
    def test_probe(self) -> None:
        "A connection probe gets opened, then closed, and nothing else."
        client, _, pump = self.connect()
        client.send_probe()
        client.send("close", reason="end")
        pump.flush()
        self.advance(1)
        self.assertEqual(client.types(), ["opened", "closed"])
        self.assertEqual(client.audio, [])
        self.assertEqual(client.violations, [])
        self.assertEqual(self.listeners, [])
        self.assertTrue(client.lost)

    def test_no_supported_media(self) -> None:
        "An open without a PCMU 8 kHz external offer gets disconnect error."
        client = self.open(media=({"type": "audio", "format": "L16", "channels": ["external"], "rate": 8000},))
        self.assertEqual(client.types(), ["disconnect", "closed"])
        self.assertEqual(client.received[0]["parameters"],
                         {"reason": "error", "info": "No supported media type was found."})
        self.finish()

    def test_first_message_not_open(self) -> None:
        "A first message other than open gets disconnect error."
        client, _, pump = self.connect()
        client.send("dtmf", digit="1")
        pump.flush()
        self.assertEqual(client.types(), ["disconnect", "closed"])
        self.assertEqual(client.received[0]["parameters"]["reason"], "error")
        self.finish()

    def test_malformed_json(self) -> None:
        "A text frame that is not a message gets disconnect error."
        client, _, pump = self.connect()
        client.send_raw(b"{not json")
        pump.flush()
        self.assertEqual(client.types()[0], "disconnect")
        self.finish()

    def test_no_open_in_time(self) -> None:
        "A connection that never sends open is dropped."
        client, _, _ = self.connect()
        self.advance(5.1)
        self.assertTrue(client.lost)

    def test_media_copied_from_offer(self) -> None:
        "opened carries the chosen offer exactly as offered, extra keys included."
        offer = {"type": "audio", "format": "PCMU", "channels": ["external"], "rate": 8000, "x": 1}
        client = self.open(media=(offer,))
        self.assertEqual(client.received[0]["parameters"]["media"], [offer])
        self.finish()


class SequenceTests(ServerCase):
    def test_gap(self) -> None:
        "A client seq that skips one gets disconnect error, and close is still answered."
        client = self.open()
        client.send("ping", seq=5)
        self.pump.flush()
        self.assertEqual(client.types()[-2:], ["disconnect", "closed"])
        self.assertEqual(client.received[-2]["parameters"]["reason"], "error")
        self.advance(0.5)
        self.assertEqual(client.violations, [])
        self.assertIn("seq", self.listeners[0].events[-1][1])

    def test_repeat(self) -> None:
        "A repeated client seq gets disconnect error."
        client = self.open()
        client.send("ping", seq=1)
        self.pump.flush()
        self.assertIn("disconnect", client.types())
        self.finish()

    def test_wrong_id(self) -> None:
        "A message for another session id gets disconnect error."
        client = self.open()
        client.send_raw(orjson.dumps({"version": "2", "type": "ping", "id": "other", "seq": 2,
                                      "serverseq": 1, "parameters": {}}))
        self.pump.flush()
        self.assertEqual(client.types()[-2:], ["disconnect", "closed"])
        self.finish()

    def test_serverseq_ahead(self) -> None:
        "A serverseq beyond what we sent gets disconnect error."
        client = self.open()
        client.serverseq = 99
        client.send("ping")
        self.pump.flush()
        self.assertIn("disconnect", client.types())
        self.finish()

    def test_ping_storm(self) -> None:
        "Hundreds of pings each get a pong at once, with its seq, and the seq rules hold."
        client = self.open()
        sent = [client.send("ping") for _ in range(300)]
        self.pump.flush()
        pongs = [m for m in client.received if m["type"] == "pong"]
        self.assertEqual([p["clientseq"] for p in pongs], sent)
        self.assertEqual(client.violations, [])
        self.assertEqual(self.session.state, State.ACTIVE)
        self.finish()

    def test_unknown_types_ignored_and_throttled(self) -> None:
        "Unknown message types are ignored, and their log lines are rate-limited."
        client = self.open()
        for _ in range(20):
            client.send("brand_new_thing", anything=1)
        client.send("dtmf", digit="Z")
        self.pump.flush()
        self.assertNotIn("disconnect", client.types())
        self.assertEqual(self.session.messages_ignored, 21)
        self.assertEqual(self.factory.bad_input.suppressed("unknown-type"), 15)
        self.finish()

    def test_message_too_large(self) -> None:
        "A text message over 64 KiB closes the connection with 1009."
        client = self.open()
        client.send("update", language="x" * 70000)
        self.advance(3)
        self.assertTrue(client.lost)
        self.assertEqual(client.close_code, 1009)
        self.assertEqual(self.listeners[0].events[-1], ("lost", "message too large"))


class AudioTests(ServerCase):
    def test_pacing_with_lead(self) -> None:
        "Frames go out every 200 ms, never more than the lead ahead of real time."
        self.script["opened"] = lambda call, info: call.play(["menu"])
        client = self.open()
        self.advance(4, step=0.05)
        times = [t - T0 for t, _ in client.audio]
        self.assertEqual(len(times), 15)
        for i, t in enumerate(times):
            self.assertGreaterEqual(t + 1e-6, i * 0.2 - 0.4, f"frame {i} too early")
            self.assertLessEqual(t, max(0.0, i * 0.2 - 0.4) + 0.05 + 1e-6, f"frame {i} late")
        self.assertEqual(times[:3], [0.0, 0.0, 0.0])
        gaps = [round(b - a, 3) for a, b in zip(times[3:], times[4:])]
        self.assertEqual(set(gaps), {0.2})
        self.finish()

    def test_lead_is_a_setting(self) -> None:
        "A larger lead sends more audio at once."
        self.factory.settings = SessionSettings(audio_lead=1.0)
        self.script["opened"] = lambda call, info: call.play(["menu"])
        client = self.open()
        self.assertEqual(len(client.audio), 6)
        self.finish()

    def test_queue_follows_on(self) -> None:
        "Prompts queued while one plays continue its timeline without a burst."
        self.script["opened"] = lambda call, info: call.play(["welcome", "bye"])
        client = self.open()
        self.advance(0.3)
        self.session.play(["bye"])
        self.advance(2)
        times = [round(t - T0, 3) for t, _ in client.audio]
        self.assertEqual(len(times), 5 + 2 + 2)
        gaps = [round(b - a, 3) for a, b in zip(times[3:], times[4:])]
        self.assertEqual(set(gaps), {0.2})
        self.finish()

    def test_barge_in(self) -> None:
        "A key during a prompt stops the queue, sends barge_in, then reports the key."
        self.script["opened"] = lambda call, info: call.play(["menu", "welcome"])
        client = self.open()
        self.advance(0.5)
        frames_before = len(client.audio)
        client.send("dtmf", digit="2")
        self.pump.flush()
        self.advance(3)
        self.assertEqual(len(client.audio), frames_before)
        self.assertEqual(client.received[-1]["type"], "event")
        self.assertEqual(client.received[-1]["parameters"], {"entities": [{"type": "barge_in", "data": {}}]})
        self.assertEqual(self.listeners[0].names()[-1], "digit")
        self.assertFalse(self.session.is_playing)
        self.finish()

    def test_no_barge_in_when_idle(self) -> None:
        "A key after the prompt has played sends no barge_in."
        client = self.open()
        self.advance(1.5)
        client.send("dtmf", digit="3")
        self.pump.flush()
        self.assertEqual(client.types(), ["opened", "event"])
        self.assertEqual(self.listeners[0].events[-1], ("digit", "3"))
        self.finish()

    def test_barge_in_can_be_off(self) -> None:
        "With barge_in off a key leaves the prompt playing."
        self.factory.settings = SessionSettings(barge_in=False)
        self.script["opened"] = lambda call, info: call.play(["menu"])
        client = self.open()
        client.send("dtmf", digit="2")
        self.advance(3.5)
        self.assertEqual(len(client.audio), 15)
        self.finish()

    def test_rate_limited(self) -> None:
        "A 429 with retryAfter holds our audio for that long, then it resumes."
        self.script["opened"] = lambda call, info: call.play(["menu"])
        client = self.open()
        self.advance(0.5)
        sent = len(client.audio)
        client.send("error", code=429, message="Too many requests", retryAfter="PT1.5S")
        self.pump.flush()
        held_at = self.clock.seconds()
        self.advance(1.4)
        self.assertEqual(len(client.audio), sent)
        self.advance(0.2)
        self.assertGreater(len(client.audio), sent)
        first_after = client.audio[sent][0]
        self.assertAlmostEqual(first_after - held_at, 1.5, places=6)
        self.advance(4)
        self.assertEqual(len(client.audio), 15)
        # Never more than the lead ahead after the hold either.
        resumed = [t for t, _ in client.audio[sent:]]
        for i, t in enumerate(resumed):
            self.assertGreaterEqual(t + 1e-6, first_after + i * 0.2 - 0.4)
        self.finish()

    def test_paused_holds_audio(self) -> None:
        "While the client is paused no audio is sent; resumed restarts it."
        self.script["opened"] = lambda call, info: call.play(["menu"])
        client = self.open()
        client.send("paused")
        self.advance(1)
        sent = len(client.audio)
        self.advance(1)
        self.assertEqual(len(client.audio), sent)
        client.send("resumed", start="PT1S", discarded="PT1S")
        self.advance(0.3)
        self.assertGreater(len(client.audio), sent)
        self.finish()

    def test_unknown_prompt(self) -> None:
        "Playing a prompt with no file raises and sends nothing."
        client = self.open()
        before = list(client.wire)
        self.assertRaises(PromptError, self.session.play, ["nothing"])
        self.pump.flush()
        self.assertEqual(len(client.wire), len(before))
        self.finish()

    def test_language_from_update(self) -> None:
        "An update's language picks that language's prompts."
        write_prompt(self.prompt_dir, "bye", 0.2, language="fr-FR")
        client = self.open()
        client.send("update", language="fr-FR")
        self.pump.flush()
        self.assertEqual(self.session.language, "fr-FR")
        self.advance(1.5)
        n = len(client.audio)
        self.session.play(["bye"])
        self.advance(1)
        self.assertEqual(len(client.audio) - n, 1)
        self.finish()


class EndingTests(ServerCase):
    def test_hangup_mid_prompt(self) -> None:
        "close{end} during a prompt is answered with closed; no audio follows; the call hears of it."
        self.script["opened"] = lambda call, info: call.play(["menu"])
        client = self.open()
        self.advance(0.5)
        client.send("close", reason="end")
        self.pump.flush()
        wire_at_close = len(client.wire)
        self.assertEqual(client.wire[-1], ("text", client.received[-1]))
        self.assertEqual(client.received[-1]["type"], "closed")
        self.assertEqual(client.received[-1]["parameters"], {})
        self.advance(3)
        self.assertEqual(len(client.wire), wire_at_close)
        self.assertTrue(client.lost)
        names = self.listeners[0].names()
        self.assertEqual(names[-2:], ["hangup", "lost"])
        self.assertEqual(self.listeners[0].events[-2], ("hangup", "end"))

    def test_disconnect_waits_for_playback(self) -> None:
        "disconnect is sent only after the queued audio played and playback_completed came."
        def on_open(call: ConnectorCall, info: CallInfo) -> None:
            call.play(["welcome"])
            call.disconnect("completed", {"ivr_outcome": "selected"})
        self.script["opened"] = on_open
        client = self.open()
        client.send("playback_started")
        self.advance(2)
        self.assertNotIn("disconnect", client.types())
        client.send("playback_completed")
        self.pump.flush()
        self.assertNotIn("disconnect", client.types())
        self.advance(0.2)
        self.assertEqual(client.types()[-2:], ["disconnect", "closed"])
        self.assertEqual(client.received[-2]["parameters"]["outputVariables"], {"ivr_outcome": "selected"})
        self.advance(1)
        self.assertTrue(client.lost)
        # A disconnect we asked for is not a hang-up.
        self.assertNotIn("hangup", self.listeners[0].names())

    def test_disconnect_without_playback_events(self) -> None:
        "Without playback events, disconnect follows the audio's real-time end plus the grace."
        def on_open(call: ConnectorCall, info: CallInfo) -> None:
            call.play(["welcome"])
            call.disconnect("completed", {})
        self.script["opened"] = on_open
        client = self.open()
        self.advance(1.1)
        self.assertNotIn("disconnect", client.types())
        self.advance(0.2)
        self.assertIn("disconnect", client.types())
        self.finish()

    def test_disconnect_playback_timeout(self) -> None:
        "A client that never reports playback_completed still gets disconnect after the timeout."
        def on_open(call: ConnectorCall, info: CallInfo) -> None:
            call.play(["welcome"])
            call.disconnect("completed", {})
        self.script["opened"] = on_open
        client = self.open()
        client.send("playback_started")
        self.advance(3.9)
        self.assertNotIn("disconnect", client.types())
        self.advance(0.2)
        self.assertIn("disconnect", client.types())
        self.finish()

    def test_output_variables_strings_only(self) -> None:
        "disconnect with a non-string output variable is refused at the call."
        self.open()
        self.assertRaises(TypeError, self.session.disconnect, "completed", {"n": 1})
        self.finish()

    def test_oversized_outputs_end_with_error(self) -> None:
        "Output variables too large for one message end the session with disconnect error."
        client = self.open()
        self.session.stop_audio()
        self.session.disconnect("completed", {"x": "y" * 70000})
        self.advance(0.3)
        disconnect = [m for m in client.received if m["type"] == "disconnect"][0]
        self.assertEqual(disconnect["parameters"]["reason"], "error")
        self.finish()

    def test_kept_open_after_closed(self) -> None:
        "A client that keeps the socket open after closed is dropped after a few seconds."
        client = self.open()
        client.close_after_closed = False
        client.send("close", reason="end")
        self.advance(4.9)
        self.assertFalse(client.lost)
        self.advance(0.2)
        self.assertTrue(client.lost)

    def test_no_close_after_disconnect(self) -> None:
        "A client that never answers disconnect is dropped after the close timeout."
        client = self.open()
        client.answer_disconnect = False
        self.session.stop_audio()
        self.session.disconnect("completed", {})
        self.advance(0.3)
        self.assertIn("disconnect", client.types())
        self.advance(9.8)
        self.assertFalse(client.lost)
        self.advance(0.2)
        self.assertTrue(client.lost)
        self.assertEqual(self.listeners[0].events[-1][0], "lost")

    def test_ping_answered_while_disconnecting(self) -> None:
        "After disconnect, pings are still answered and keys are not reported."
        client = self.open()
        client.answer_disconnect = False
        self.session.stop_audio()
        self.session.disconnect("completed", {})
        self.advance(0.3)
        client.send("ping")
        client.send("dtmf", digit="1")
        self.pump.flush()
        self.assertEqual(client.types()[-1], "pong")
        self.assertNotIn("digit", self.listeners[0].names())
        self.finish()

    def test_connection_lost(self) -> None:
        "A socket lost mid-prompt stops the audio timers and tells the call once."
        self.script["opened"] = lambda call, info: call.play(["menu"])
        client = self.open()
        client.dropConnection(abort=True)
        self.pump.flush()
        self.assertEqual(self.listeners[0].events[-1], ("lost", "connection lost"))
        self.assertEqual(self.listeners[0].names().count("lost"), 1)

    def test_listener_errors_contained(self) -> None:
        "An exception in the call logic is logged and the session goes on."
        def boom(call: ConnectorCall, digit: str) -> None:
            raise RuntimeError("bug")
        self.script["digit"] = boom
        client = self.open()
        self.advance(1.5)
        client.send("dtmf", digit="1")
        client.send("ping")
        self.pump.flush()
        self.assertEqual(client.types()[-1], "pong")
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.finish()

    def test_client_error_then_close(self) -> None:
        "A client error (not 429) is logged; its close is answered with closed."
        client = self.open()
        client.send("error", code=500, message="Internal client error")
        client.send("close", reason="error")
        self.pump.flush()
        self.assertEqual(client.types()[-1], "closed")
        self.assertEqual(self.listeners[0].events[-2], ("hangup", "error"))
        self.advance(1)
        self.assertTrue(client.lost)


class UninterruptibleTests(ServerCase):
    def test_prompt_without_barge_in(self) -> None:
        "A prompt queued with barge_in=False keeps playing through a key, which is still reported."
        self.script["opened"] = lambda call, info: call.play(["menu"], barge_in=False)
        client = self.open()
        client.send("dtmf", digit="5")
        self.advance(3.5)
        self.assertEqual(len(client.audio), 15)
        self.assertNotIn("event", client.types()[2:])
        # The key is reported at once; the prompt's end (3 s) once it has played.
        self.assertEqual(self.listeners[0].events[-2:], [("digit", "5"), ("playback_completed", None)])
        self.finish()


class RefusalRaceTests(ServerCase):
    def test_client_gone_during_refusal_delay(self) -> None:
        "A client that leaves while its refusal is delayed leaves no error and no timer."
        client, _, pump = self.connect(upgrade_headers("nope"))
        client.dropConnection(abort=True)
        pump.flush()
        self.clock.advance(0.5)
        pump.flush()
        self.assertEqual(self.flushLoggedErrors(), [])
        self.assertEqual(self.listeners, [])


class BackpressureTests(ServerCase):
    """
    A client that stops reading: the transport pauses the server's write
    watch (its buffer is full); the server queues at most
    ``max_write_buffer`` bytes of audio more and drops the connection after
    ``write_timeout``.
    """

    def setUp(self) -> None:
        super().setUp()
        self.factory.max_write_buffer = 2 * 1600
        self.factory.write_timeout = 4.0
        self.script["opened"] = lambda call, info: call.play(["menu"], "Menu")

    def test_bounded_then_dropped(self) -> None:
        "Two frames more are queued, the rest held back; the socket goes after the timeout."
        client = self.open()
        self.assertEqual(len(client.audio), 3)  # the lead
        self.server._writes.pauseProducing()  # as the transport does when its buffer is full
        self.advance(3.5)
        self.assertEqual(len(client.audio), 5)
        self.assertEqual(self.server.frames_held_back, 10)
        self.assertFalse(client.lost)
        self.advance(0.6)
        self.assertTrue(client.lost)
        self.assertEqual(self.session.end_reason, "the client stopped reading")
        self.assertEqual(self.listeners[0].names()[-1], "lost")

    def test_reading_again(self) -> None:
        "A client that reads again before the timeout keeps its call; the audio goes on."
        client = self.open()
        self.server._writes.pauseProducing()
        self.advance(1.0)
        self.server._writes.resumeProducing()
        self.advance(3.5)
        self.assertFalse(client.lost)
        # Every frame of the 3 s prompt was either sent or held back while paused.
        self.assertGreater(self.server.frames_held_back, 0)
        self.assertEqual(len(client.audio) + self.server.frames_held_back, 15)
        self.finish()
