"""
The Call Control client protocol (contract section 3), driven in memory
against the scripted platform of :mod:`ivrproto.testing`.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import attrs
import txaio
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import ILogObserver, LogEvent, LogLevel, formatEvent, globalLogPublisher
from twisted.test.iosim import IOPump
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from ivrproto.messages import Hangup, Play, Transfer
from ivrproto.callcontrol.connect import CallControlFactory, connect_call_control
from ivrproto.callcontrol.protocol import MAX_MESSAGE_SIZE, CallControlProtocol, describe_close
from ivrproto.testing import (
    URL,
    ListenerFailure,
    PlatformScript,
    RecordingListener,
    ScriptedPlatformProtocol,
    connect_in_memory,
)

CALL_ID = "call-1"
TOKEN = "tok-3c1f9e0a-secret"

CONNECT_FRAME = {
    "callControlId": CALL_ID,
    "media": "audio",
    "capabilities": ["play", "dtmf", "transfer", "hangup"],
}


def _global_delayed_calls() -> set[Any]:
    from twisted.internet import reactor

    return set(reactor.getDelayedCalls())  # type: ignore[attr-defined]


@implementer(ILogObserver)
@attrs.define
class _LogCapture:
    """
    Every log event published while it is attached.
    """

    events: list[LogEvent] = attrs.field(factory=list)

    def __call__(self, event: LogEvent) -> None:
        self.events.append(event)

    def texts(self) -> list[str]:
        return [formatEvent(e) + repr(e) for e in self.events]


class _InMemoryCase(SynchronousTestCase):
    """
    Connects the protocol to the scripted platform, and checks at cleanup
    that the connection left no timer behind.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.listener = RecordingListener()
        self._global_before = _global_delayed_calls()
        self.addCleanup(self._check_no_timers)

    def connect(
        self, script: PlatformScript = PlatformScript(), **options: Any
    ) -> tuple[CallControlProtocol, ScriptedPlatformProtocol, IOPump]:
        self.client, self.server, self.pump = connect_in_memory(
            self.clock, self.listener, CALL_ID, TOKEN, script, **options
        )
        return self.client, self.server, self.pump

    def capture_logs(self) -> _LogCapture:
        capture = _LogCapture()
        globalLogPublisher.addObserver(capture)
        self.addCleanup(globalLogPublisher.removeObserver, capture)
        return capture

    def _check_no_timers(self) -> None:
        pump = getattr(self, "pump", None)
        if pump is not None and self.client.state != CallControlProtocol.STATE_CLOSED:
            self.client.close()
            pump.flush()
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(_global_delayed_calls() - self._global_before, set())

    def assertOpen(self) -> None:
        self.assertEqual(self.client.state, CallControlProtocol.STATE_OPEN)
        self.assertIsNone(self.server.closed)


class HandshakeTests(_InMemoryCase):
    """
    The upgrade, the connect frame and the answers to it.
    """

    def test_connect_frame_first(self) -> None:
        """The client's first frame is exactly the contract's connect frame."""
        self.connect(PlatformScript(answer="nothing"))
        self.assertEqual(self.server.received, [CONNECT_FRAME])

    def test_bearer_token(self) -> None:
        """The upgrade request carries the token as a bearer credential."""
        self.connect()
        self.assertEqual(self.server.authorization, f"Bearer {TOKEN}")

    def test_connected(self) -> None:
        """A ``connected`` answer is reported with the protocol."""
        client, _, _ = self.connect()
        self.assertEqual(self.listener.calls, [("connected", client)])
        self.assertTrue(client.is_connected)
        self.assertOpen()

    def test_connected_without_id(self) -> None:
        """A ``connected`` that names no call is accepted."""
        client, server, pump = self.connect(PlatformScript(answer="nothing"))
        server.send_event("connected")
        pump.flush()
        self.assertEqual(self.listener.calls, [("connected", client)])

    def test_error_before_connected(self) -> None:
        """An ``error`` answer fails the handshake once and ends the connection."""
        _, server, _ = self.connect(PlatformScript(answer="error", error_message="no call"))
        self.assertEqual(self.listener.calls, [("handshake_failed", "refused: no call", None)])
        self.assertIsNotNone(server.closed)

    def test_policy_close(self) -> None:
        """A close 1008 instead of an answer fails the handshake, naming 1008."""
        _, server, _ = self.connect(PlatformScript(answer="policy-close"))
        [(reason, status)] = self.listener.args_of("handshake_failed")
        self.assertEqual(self.listener.names(), ["handshake_failed"])
        self.assertIn("1008", reason)
        self.assertIsNone(status)
        self.assertIsNotNone(server.closed)

    def test_close_before_connected(self) -> None:
        """A close 1000 before ``connected`` is a failed handshake, not a closed call."""
        _, server, pump = self.connect(PlatformScript(answer="nothing"))
        server.close(1000)
        pump.flush()
        self.assertEqual(
            self.listener.calls, [("handshake_failed", describe_close(1000, None), None)]
        )

    def test_tcp_lost_before_connected(self) -> None:
        """A dropped TCP connection before ``connected`` is a failed handshake."""
        _, server, pump = self.connect(PlatformScript(answer="nothing"))
        server.transport.abortConnection()
        pump.flush()
        self.assertEqual(self.listener.calls, [("handshake_failed", "connection lost", None)])

    def test_upgrade_refused_401(self) -> None:
        """An upgrade refused with 401 is reported with its status; no frame is sent."""
        _, server, _ = self.connect(PlatformScript(refuse_status=401))
        self.assertEqual(
            self.listener.calls, [("handshake_failed", "upgrade refused (HTTP 401)", 401)]
        )
        self.assertEqual(server.received, [])

    def test_upgrade_refused_403(self) -> None:
        """An upgrade refused with 403 is reported with its status."""
        self.connect(PlatformScript(refuse_status=403))
        self.assertEqual(
            self.listener.calls, [("handshake_failed", "upgrade refused (HTTP 403)", 403)]
        )

    def test_connected_for_another_call(self) -> None:
        """A ``connected`` naming another call fails the handshake and closes."""
        client, server, _ = self.connect(PlatformScript(connected_id="call-2"))
        self.assertEqual(
            self.listener.calls, [("handshake_failed", "connected for another call", None)]
        )
        self.assertFalse(client.is_connected)
        self.assertIsNotNone(server.closed)

    def test_connected_for_another_call_listener_raises(self) -> None:
        """The connection to another call closes even when the listener raises."""
        self.listener = RecordingListener(raise_in="handshake_failed")
        client, server, _ = self.connect(PlatformScript(connected_id="call-2"))
        self.assertEqual(len(self.flushLoggedErrors(ListenerFailure)), 1)
        self.assertIsNotNone(server.closed)


    def test_events_before_connected_ignored(self) -> None:
        """``dtmf`` and ``hangup`` before ``connected`` are ignored."""
        client, server, pump = self.connect(PlatformScript(answer="nothing"))
        server.send_event("dtmf", digit="1")
        server.send_event("hangup")
        pump.flush()
        self.assertEqual(self.listener.calls, [])
        server.send_event("connected", callControlId=CALL_ID)
        pump.flush()
        self.assertEqual(self.listener.calls, [("connected", client)])

    def test_abort_before_connected(self) -> None:
        """``abort()`` before ``connected`` drops the socket and reports nothing."""
        client, server, pump = self.connect(PlatformScript(answer="nothing"))
        client.abort()
        pump.flush()
        self.assertEqual(self.listener.calls, [])
        self.assertIsNotNone(server.closed)
        self.assertEqual(client.state, CallControlProtocol.STATE_CLOSED)


class EventTests(_InMemoryCase):
    """
    Events after ``connected``.
    """

    def setUp(self) -> None:
        super().setUp()
        self.connect()
        del self.listener.calls[:]

    def test_dtmf(self) -> None:
        """Each ``dtmf`` event is reported as a digit, in order."""
        for digit in "19*#0":
            self.server.send_event("dtmf", digit=digit)
        self.pump.flush()
        self.assertEqual(self.listener.digits, list("19*#0"))

    def test_hangup(self) -> None:
        """A ``hangup`` event is reported with its reason."""
        self.server.send_event("hangup", reason="caller hung up")
        self.pump.flush()
        self.assertEqual(self.listener.calls, [("hangup_received", "caller hung up")])

    def test_hangup_without_reason(self) -> None:
        """A ``hangup`` event without a reason is reported with ``None``."""
        self.server.send_event("hangup")
        self.pump.flush()
        self.assertEqual(self.listener.calls, [("hangup_received", None)])

    def test_platform_error(self) -> None:
        """An ``error`` event is reported with its message and code, and ends nothing."""
        self.server.send_event("error", message="bad audio url", code="E42")
        self.server.send_event("error", message="again")
        self.pump.flush()
        self.assertEqual(
            self.listener.calls,
            [("platform_error", "bad audio url", "E42"), ("platform_error", "again", None)],
        )
        self.assertOpen()

    def test_close_1011(self) -> None:
        """A close 1011 is reported as a platform internal error."""
        self.server.close(1011, "boom")
        self.pump.flush()
        self.assertEqual(
            self.listener.calls, [("connection_closed", 1011, "platform internal error (1011)")]
        )

    def test_close_1000(self) -> None:
        """A close 1000 is reported as a normal close by the platform."""
        self.server.close(1000)
        self.pump.flush()
        self.assertEqual(
            self.listener.calls, [("connection_closed", 1000, "closed normally (1000)")]
        )

    def test_hangup_then_close(self) -> None:
        """The usual end: ``hangup``, then the platform's close, in that order."""
        self.server.send_event("hangup", reason="transfer")
        self.server.close(1000)
        self.pump.flush()
        self.assertEqual(self.listener.names(), ["hangup_received", "connection_closed"])

    def test_tcp_lost(self) -> None:
        """A connection dropped without a close frame is reported as lost."""
        self.server.transport.abortConnection()
        self.pump.flush()
        self.assertEqual(self.listener.calls, [("connection_closed", 1006, "connection lost")])


class IgnoredFrameTests(_InMemoryCase):
    """
    Frames without control meaning are ignored and never end the session.
    """

    def setUp(self) -> None:
        super().setUp()
        self.connect()
        del self.listener.calls[:]

    def assertIgnored(self, send: Callable[[ScriptedPlatformProtocol], None]) -> None:
        """
        Send a frame, then a ``dtmf``: only the digit may be reported, and
        the connection must stay open.
        """
        del self.listener.calls[:]
        send(self.server)
        self.server.send_event("dtmf", digit="7")
        self.pump.flush()
        self.assertEqual(self.listener.calls, [("digit_received", "7")])
        self.assertOpen()

    def test_media(self) -> None:
        """A ``media`` event is ignored."""
        self.assertIgnored(lambda s: s.send_event("media", payload="AAAA"))
        self.assertEqual(self.client.ignored_frames, 1)

    def test_unknown_event(self) -> None:
        """An event the contract does not list is ignored."""
        self.assertIgnored(lambda s: s.send_event("recording_started", id=3))
        self.assertEqual(self.client.ignored_frames, 1)

    def test_not_json(self) -> None:
        """A text frame that is not JSON is ignored, and a warning logged."""
        capture = self.capture_logs()
        self.assertIgnored(lambda s: s.send_text("{not json caller-secret"))
        self.assertEqual(self.client.ignored_frames, 1)
        warnings = [e for e in capture.events if e["log_level"] == LogLevel.warn]
        self.assertEqual(len(warnings), 1)
        self.assertNotIn("caller-secret", formatEvent(warnings[0]))

    def test_json_array(self) -> None:
        """A JSON array is ignored."""
        self.assertIgnored(lambda s: s.send_json(["event", "dtmf"]))
        self.assertEqual(self.client.ignored_frames, 1)

    def test_json_scalar(self) -> None:
        """A JSON string is ignored."""
        self.assertIgnored(lambda s: s.send_json("dtmf"))

    def test_no_event_field(self) -> None:
        """An object without an ``event`` is ignored."""
        self.assertIgnored(lambda s: s.send_json({"digit": "1"}))

    def test_dtmf_invalid_digit(self) -> None:
        """A ``dtmf`` whose digit is not a single valid key is ignored."""
        self.assertIgnored(lambda s: s.send_event("dtmf", digit="A"))
        self.assertIgnored(lambda s: s.send_event("dtmf", digit="12"))
        self.assertIgnored(lambda s: s.send_event("dtmf", digit=""))
        self.assertIgnored(lambda s: s.send_event("dtmf", digit=1))

    def test_dtmf_missing_digit(self) -> None:
        """A ``dtmf`` without a digit is ignored."""
        self.assertIgnored(lambda s: s.send_event("dtmf"))

    def test_binary(self) -> None:
        """A binary frame is ignored, even when it holds a valid event."""
        self.assertIgnored(lambda s: s.send_binary(b'{"event": "dtmf", "digit": "1"}'))
        self.assertEqual(self.client.ignored_frames, 1)

    def test_second_connected(self) -> None:
        """A second ``connected`` is not reported again."""
        self.assertIgnored(lambda s: s.send_event("connected", callControlId=CALL_ID))


class CommandTests(_InMemoryCase):
    """
    Commands reach the platform as the contract's JSON.
    """

    def setUp(self) -> None:
        super().setUp()
        self.connect()

    def test_play(self) -> None:
        """``send_command(Play)`` sends the contract's ``play`` object."""
        url = "https://example.com/ivr/audio/general_welcome.mp3"
        self.client.send_command(Play(CALL_ID, url, True, ("1", "2", "0")))
        self.pump.flush()
        self.assertEqual(
            self.server.received[1:],
            [
                {
                    "callControlId": CALL_ID,
                    "action": "play",
                    "audio": url,
                    "dtmf": {"enabled": True, "keys": ["1", "2", "0"]},
                }
            ],
        )

    def test_play_without_dtmf(self) -> None:
        """A ``play`` with DTMF disabled sends no keys."""
        url = "https://example.com/ivr/audio/selection_confirmed.mp3"
        self.client.send_command(Play(CALL_ID, url, False))
        self.pump.flush()
        self.assertEqual(self.server.received[-1]["dtmf"], {"enabled": False})

    def test_transfer_and_hangup(self) -> None:
        """``transfer`` and ``hangup`` are sent in order, as the contract writes them."""
        self.client.send_command(Transfer(CALL_ID, "ext:transfer_operator"))
        self.client.send_command(Hangup(CALL_ID))
        self.pump.flush()
        self.assertEqual(
            self.server.received[1:],
            [
                {
                    "callControlId": CALL_ID,
                    "action": "transfer",
                    "target": "ext:transfer_operator",
                    "type": "number",
                },
                {"callControlId": CALL_ID, "action": "hangup"},
            ],
        )

    def test_close(self) -> None:
        """``close()`` ends the connection with 1000 and reports the close."""
        self.client.close()
        self.pump.flush()
        self.assertEqual(self.server.closed, (True, 1000, None))
        self.assertEqual(self.listener.names(), ["connected", "connection_closed"])
        self.assertEqual(self.listener.args_of("connection_closed")[0][0], 1000)

    def test_close_stays_on_clock(self) -> None:
        """A close started by the client schedules nothing on the global reactor."""
        before = _global_delayed_calls()
        self.client.close()
        self.pump.pump()  # the close frame reaches the platform, which answers
        self.pump.pump()  # the answer reaches the client; TCP is still up
        self.assertEqual(_global_delayed_calls() - before, set())
        self.pump.flush()



class ListenerFailureTests(_InMemoryCase):
    """
    An exception from the listener is logged and never drops the connection.
    """

    def test_digit_received_raises(self) -> None:
        """A failing ``digit_received`` is logged; later events still arrive."""
        self.listener = RecordingListener(raise_in="digit_received")
        self.connect()
        self.server.send_event("dtmf", digit="1")
        self.pump.flush()
        self.assertEqual(len(self.flushLoggedErrors(ListenerFailure)), 1)
        self.assertOpen()
        self.server.send_event("hangup", reason="done")
        self.server.send_event("dtmf", digit="2")
        self.pump.flush()
        self.assertEqual(len(self.flushLoggedErrors(ListenerFailure)), 1)
        self.assertEqual(
            self.listener.calls[1:],
            [("digit_received", "1"), ("hangup_received", "done"), ("digit_received", "2")],
        )
        self.assertOpen()

    def test_connected_raises(self) -> None:
        """A failing ``connected`` is logged; the call is still live."""
        self.listener = RecordingListener(raise_in="connected")
        client, server, pump = self.connect()
        self.assertEqual(len(self.flushLoggedErrors(ListenerFailure)), 1)
        self.assertTrue(client.is_connected)
        server.send_event("dtmf", digit="5")
        pump.flush()
        self.assertEqual(self.listener.digits, ["5"])

    def test_connection_closed_raises(self) -> None:
        """A failing ``connection_closed`` is logged and the close completes."""
        self.listener = RecordingListener(raise_in="connection_closed")
        client, server, pump = self.connect()
        server.close(1011)
        pump.flush()
        self.assertEqual(len(self.flushLoggedErrors(ListenerFailure)), 1)
        self.assertEqual(client.state, CallControlProtocol.STATE_CLOSED)

    def test_handshake_failed_raises(self) -> None:
        """A failing ``handshake_failed`` after a refused upgrade is logged."""
        self.listener = RecordingListener(raise_in="handshake_failed")
        self.connect(PlatformScript(refuse_status=401))
        self.assertEqual(len(self.flushLoggedErrors(ListenerFailure)), 1)
        self.assertEqual(self.listener.names(), ["handshake_failed"])


class TimerTests(_InMemoryCase):
    """
    Autobahn's timers run on the injected clock and end with the connection.
    """

    def test_no_timer_after_close(self) -> None:
        """Once the platform closes, nothing is left on the clock."""
        _, server, pump = self.connect()
        self.assertNotEqual(self.clock.getDelayedCalls(), [])
        server.close(1000)
        pump.flush()
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_auto_ping_answered(self) -> None:
        """A platform that answers pings keeps a quiet call alive."""
        self.connect(auto_ping_interval=5, auto_ping_timeout=2)
        for _ in range(10):
            self.clock.advance(5)
            self.pump.flush()
        self.assertOpen()
        self.assertEqual(self.listener.names(), ["connected"])

    def test_auto_ping_timeout(self) -> None:
        """A platform that stops answering pings is dropped after the timeout."""
        self.connect(auto_ping_interval=5, auto_ping_timeout=2)
        self.clock.advance(5)  # the ping is not pumped: no pong
        self.clock.advance(2)
        self.pump.flush()
        self.assertEqual(self.listener.names(), ["connected", "connection_closed"])
        self.assertEqual(self.client.state, CallControlProtocol.STATE_CLOSED)


class FactoryTests(_InMemoryCase):
    """
    The factory's options and what it lets out of the process.
    """

    def make_factory(self, **options: Any) -> CallControlFactory:
        return CallControlFactory(Clock(), URL, TOKEN, CALL_ID, RecordingListener(), **options)

    def test_repr_hides_token(self) -> None:
        """The factory's repr names the call but never the token."""
        text = repr(self.make_factory())
        self.assertNotIn(TOKEN, text)
        self.assertIn(CALL_ID, text)

    def test_finite_limits(self) -> None:
        """Payload limits, timeouts and auto-ping are finite and non-zero by default."""
        factory = self.make_factory()
        for name in (
            "maxMessagePayloadSize",
            "maxFramePayloadSize",
            "autoPingInterval",
            "autoPingTimeout",
            "openHandshakeTimeout",
            "closeHandshakeTimeout",
        ):
            value = getattr(factory, name)
            self.assertTrue(0 < value < math.inf, f"{name} = {value!r}")
        self.assertEqual(factory.maxMessagePayloadSize, MAX_MESSAGE_SIZE)

    def test_options(self) -> None:
        """The timeouts given to the factory reach Autobahn."""
        factory = self.make_factory(
            open_handshake_timeout=3, auto_ping_interval=7, auto_ping_timeout=4
        )
        self.assertEqual(
            (factory.openHandshakeTimeout, factory.autoPingInterval, factory.autoPingTimeout),
            (3, 7, 4),
        )

    def test_oversized_frame(self) -> None:
        """A frame above the message limit ends the connection instead of buffering."""
        self.connect()
        self.server.send_event("media", payload="x" * MAX_MESSAGE_SIZE)
        self.pump.flush()
        self.assertEqual(self.listener.names(), ["connected", "connection_closed"])
        self.assertEqual(self.client.state, CallControlProtocol.STATE_CLOSED)

    def _log_everything(self) -> _LogCapture:
        level = txaio.get_global_log_level()
        txaio.set_global_log_level("trace")
        self.addCleanup(txaio.set_global_log_level, level)
        return self.capture_logs()

    def test_token_not_logged(self) -> None:
        """No log event at any level carries the token during a whole call."""
        capture = self._log_everything()
        _, server, pump = self.connect()
        server.send_event("dtmf", digit="1")
        server.send_text("not json")
        server.close(1011)
        pump.flush()
        self.assertEqual(server.authorization, f"Bearer {TOKEN}")
        for text in capture.texts():
            self.assertNotIn(TOKEN, text)

    def test_token_not_logged_on_refusal(self) -> None:
        """No log event at any level carries the token when the upgrade is refused."""
        capture = self._log_everything()
        self.connect(PlatformScript(refuse_status=401))
        self.assertNotEqual(capture.events, [])
        for text in capture.texts():
            self.assertNotIn(TOKEN, text)


class ConnectCallControlTests(SynchronousTestCase):
    """
    :func:`connect_call_control` and the schemes it allows.
    """

    def connect(self, url: str) -> MemoryReactorClock:
        reactor = MemoryReactorClock()
        connect_call_control(reactor, url, TOKEN, CALL_ID, RecordingListener())
        return reactor

    def test_plain_ws_remote_refused(self) -> None:
        """Plain ``ws://`` to a host that is not loopback is refused."""
        reactor = MemoryReactorClock()
        for url in ("ws://example.com/ws", "ws://10.0.0.1:8080/ws", "http://127.0.0.1/ws"):
            with self.assertRaises(ValueError):
                connect_call_control(reactor, url, TOKEN, CALL_ID, RecordingListener())
        self.assertEqual(reactor.tcpClients, [])

    def test_plain_ws_loopback(self) -> None:
        """Plain ``ws://`` to a loopback address connects to that port."""
        reactor = self.connect("ws://127.0.0.1:9/api/v2/callcontrol/websocket")
        [(host, port, _, timeout, _)] = reactor.tcpClients
        self.assertEqual((host, port, timeout), ("127.0.0.1", 9, 10.0))

    def test_wss_default_port(self) -> None:
        """``wss://`` without a port connects to 443."""
        reactor = self.connect("wss://api.example.com/api/v2/callcontrol/websocket")
        [(_, port, _, _, _)] = reactor.tcpClients
        self.assertEqual(port, 443)


class DescribeCloseTests(SynchronousTestCase):
    """
    :func:`describe_close`.
    """

    def test_codes(self) -> None:
        """Each close code of the contract has its own description."""
        self.assertEqual(describe_close(1011, None), "platform internal error (1011)")
        self.assertIn("1008", describe_close(1008, "x"))
        self.assertEqual(describe_close(1000, None), "closed normally (1000)")
        self.assertEqual(describe_close(None, None), "connection lost")
        self.assertEqual(describe_close(1006, "x"), "connection lost")
        self.assertEqual(describe_close(4000, "x"), "closed with code 4000")


class RecordingListenerTests(SynchronousTestCase):
    """
    The recording listener of :mod:`ivrproto.testing`.
    """

    def test_records_and_raises(self) -> None:
        """Calls are recorded before the chosen method raises."""
        listener = RecordingListener(raise_in="platform_error")
        listener.digit_received("1")
        with self.assertRaises(ListenerFailure):
            listener.platform_error("m", None)
        self.assertEqual(listener.calls, [("digit_received", "1"), ("platform_error", "m", None)])
        self.assertEqual(listener.names(), ["digit_received", "platform_error"])
        self.assertEqual(listener.digits, ["1"])

    def test_unknown_method(self) -> None:
        """Raising from a method the listener does not have is refused."""
        with self.assertRaises(ValueError):
            RecordingListener(raise_in="digit")
