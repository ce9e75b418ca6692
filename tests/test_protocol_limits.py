"""
The Call Control protocol's bounds and its frame policy (docs/call-control.md):
invalid UTF-8 and oversized frames fail the connection with the real reason,
a platform that stops reading is dropped past the write-buffer bound, a
close frame is reported at once and its TCP dropped on our clock, and an
upgrade answer that is not UTF-8 is a refused upgrade, not an unhandled error.
"""

from __future__ import annotations

import json
import struct
from typing import Any

from hypothesis import given, settings, strategies as st
from twisted.trial.unittest import SynchronousTestCase

from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import LogLevel
from twisted.python.failure import Failure

from ivrproto.messages import Play
from ivrproto.callcontrol.connect import CallControlFactory
from ivrproto.callcontrol.protocol import CallControlProtocol
from ivrproto.testing import URL, RecordingListener, connect_in_memory

from .test_protocol import CALL_ID, TOKEN, _InMemoryCase


class FramePolicyTests(_InMemoryCase):
    def test_invalid_utf8_fails_with_its_reason(self) -> None:
        """A text frame with invalid UTF-8 fails the connection, and the reason says so."""
        self.connect()
        self.server.sendMessage(b'{"event": "media", "data": "\xff\xfe"}', isBinary=False)
        self.pump.flush()
        self.assertEqual(self.listener.names(), ["connected", "connection_closed"])
        (code, reason), = self.listener.args_of("connection_closed")
        self.assertIn("invalid UTF-8", reason)
        self.assertIn("the service closed", reason)
        self.assertEqual(self.client.state, CallControlProtocol.STATE_CLOSED)

    def test_oversized_frame_fails_with_its_reason(self) -> None:
        """A frame over max_frame_size fails the connection, and the reason names the bound."""
        self.connect(max_frame_size=4096)
        self.server.send_event("media", payload="x" * 5000)
        self.pump.flush()
        (code, reason), = self.listener.args_of("connection_closed")
        self.assertIn("frame over 4096 bytes", reason)

    def test_media_within_the_bound_is_ignored(self) -> None:
        """A media frame just under the bound is ignored; the call stays up."""
        self.connect(max_frame_size=8192)
        self.server.send_event("media", payload="x" * 8000)
        self.pump.flush()
        self.assertEqual(self.listener.names(), ["connected"])
        self.assertOpen()

    def test_large_frame_refused_at_its_header(self) -> None:
        """A 10 MB frame is refused on its header: nothing of it is buffered or parsed (item 9)."""
        client, _, _ = self.connect()
        header = b"\x81\x7f" + struct.pack("!Q", 10 * 1024 * 1024)
        client.dataReceived(header + b"x" * 65536)
        self.assertEqual(client.state, CallControlProtocol.STATE_CLOSED)
        self.pump.flush()
        (code, reason), = self.listener.args_of("connection_closed")
        self.assertIn("frame over", reason)

    def test_default_bound_is_small(self) -> None:
        """By default frames are bounded well under a megabyte, so parsing never stalls the reactor."""
        factory = CallControlFactory(self.clock, URL, TOKEN, CALL_ID, self.listener)
        self.assertLessEqual(factory.maxFramePayloadSize, 1024 * 1024)
        self.assertEqual(factory.maxMessagePayloadSize, factory.maxFramePayloadSize)


class CloseTests(_InMemoryCase):
    def test_send_after_close_answers_false(self) -> None:
        """Sending on a closing or closed connection answers False and raises nothing."""
        client, _, pump = self.connect()
        client.close()
        self.assertFalse(client.send_command(Play(CALL_ID, "https://a/b.mp3", True, ("1",))))
        pump.flush()
        self.assertFalse(client.send_command(Play(CALL_ID, "https://a/b.mp3", True, ("1",))))

    def test_half_closed_platform_is_dropped_on_our_clock(self) -> None:
        """A platform that sends a close frame and keeps TCP open is dropped after close_timeout."""
        client, server, pump = self.connect(close_timeout=1.5)
        # The platform's close frame reaches the client, but the platform
        # never reads the answer nor closes TCP.
        server.sendCloseFrame(code=1000)
        server.transport.pauseProducing()
        server.dataReceived = lambda data: None  # type: ignore[method-assign]
        pump.flush()
        self.assertEqual(self.listener.names(), ["connected", "connection_closed"])
        self.assertNotEqual(client.state, CallControlProtocol.STATE_CLOSED)
        self.clock.advance(1.5)
        pump.flush()
        self.assertEqual(client.state, CallControlProtocol.STATE_CLOSED)
        self.assertEqual(self.listener.names(), ["connected", "connection_closed"])


class WriteBufferTests(_InMemoryCase):
    def test_platform_that_stops_reading_is_dropped(self) -> None:
        """Pongs to a platform that stopped reading stop at max_write_buffer: the peer is dropped."""
        client, server, pump = self.connect(max_write_buffer=4096)
        written: list[int] = []
        write = client.transport.write

        producer = client.transport.producer

        def counting(data: bytes) -> None:
            written.append(len(data))
            write(data)
            # What a TCP transport does on every write once its buffer is full.
            producer.pauseProducing()

        client.transport.write = counting  # type: ignore[method-assign]
        producer.pauseProducing()
        for _ in range(200):
            server.sendPing(b"p" * 100)
        pump.flush()
        self.assertLessEqual(sum(written), 4096)
        self.assertEqual(client.state, CallControlProtocol.STATE_CLOSED)
        (code, reason), = self.listener.args_of("connection_closed")
        self.assertIn("stopped reading", reason)

    def test_a_buffer_that_drains_resets_the_count(self) -> None:
        """Once the transport has flushed its buffer, writing goes on as usual."""
        client, server, pump = self.connect(max_write_buffer=4096)
        producer = client.transport.producer
        for _ in range(10):
            producer.pauseProducing()
            for _ in range(20):
                server.sendPing(b"p" * 100)
            pump.flush()
            producer.resumeProducing()
        self.assertOpen()


class UpgradeAnswerTests(_InMemoryCase):
    def test_non_utf8_upgrade_answer_is_a_failed_upgrade(self) -> None:
        """An upgrade answer with bytes that are not UTF-8 is a refused upgrade, logged as no error."""
        capture = self.capture_logs()
        clock = Clock()
        listener = RecordingListener()
        factory = CallControlFactory(clock, URL, TOKEN, CALL_ID, listener)
        protocol: Any = factory.buildProtocol(None)
        transport = StringTransport()
        protocol.makeConnection(transport)
        protocol.dataReceived(b"HTTP/1.1 101 Switching \xff\xfe\r\nUpgrade: websocket\r\n\r\n")
        self.assertTrue(transport.disconnecting)
        protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(listener.names(), ["handshake_failed"])
        self.assertEqual(listener.args_of("handshake_failed")[0][0], "upgrade failed")
        errors = [e for e in capture.events if e.get("log_level") in (LogLevel.error, LogLevel.critical)]
        self.assertEqual(errors, [])
        self.assertEqual(self.flushLoggedErrors(), [])
        clock.advance(60)


class BadInputLogTests(_InMemoryCase):
    def test_malformed_frames_are_logged_a_few_times(self) -> None:
        """A thousand malformed frames give a handful of log lines, not a thousand."""
        capture = self.capture_logs()
        self.connect()
        for _ in range(1000):
            self.server.send_text("not json")
        self.pump.flush()
        lines = [e for e in capture.events if "ignored a frame" in e.get("log_format", "")]
        self.assertLessEqual(len(lines), 10)
        self.assertGreater(len(lines), 0)
        self.assertEqual(self.client.ignored_frames, 1000)
        self.assertOpen()


_JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
_EVENTS = st.fixed_dictionaries(
    {"event": st.sampled_from(["dtmf", "media", "hangup", "error", "connected", "odd"])},
    optional={"digit": _JSON_VALUES, "reason": _JSON_VALUES, "message": _JSON_VALUES},
)
_FRAMES = st.one_of(
    _EVENTS.map(lambda e: ("text", json.dumps(e).encode("utf-8"))),
    _JSON_VALUES.map(lambda v: ("text", json.dumps(v).encode("utf-8"))),
    st.binary(max_size=64).map(lambda b: ("text", b)),
    st.binary(max_size=64).map(lambda b: ("binary", b)),
)


class FuzzedFrameTests(SynchronousTestCase):
    @settings(max_examples=150, deadline=None)
    @given(frames=st.lists(_FRAMES, max_size=8))
    def test_any_frames(self, frames: list[tuple[str, bytes]]) -> None:
        """Any frames: nothing escapes, and a connection that closes says why (never just 'lost')."""
        clock = Clock()
        listener = RecordingListener()
        client, server, pump = connect_in_memory(clock, listener, CALL_ID, TOKEN)
        for kind, payload in frames:
            if server.state != server.STATE_OPEN:
                break
            server.sendMessage(payload, isBinary=kind == "binary")
            pump.flush()
        self.assertEqual(self.flushLoggedErrors(), [])
        for code, reason in listener.args_of("connection_closed"):
            self.assertNotEqual(reason, "connection lost")
        if client.state == client.STATE_OPEN:
            client.close()
            pump.flush()
        clock.advance(60)
        pump.flush()
