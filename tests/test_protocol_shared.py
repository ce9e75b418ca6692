"""
One shared :class:`~ivrproto.callcontrol.connect.CallControlFactory` serves
every call with the same URL, token and options: each connection is still
named for its own call, and carries Autobahn's options without Autobahn
copying (and formatting) them per connection.
"""

from __future__ import annotations

from typing import Any, cast

from autobahn.twisted.websocket import WebSocketClientProtocol
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.test.iosim import FakeTransport, connect
from twisted.trial.unittest import SynchronousTestCase

from ivrproto.callcontrol import connect as connect_module
from ivrproto.callcontrol.connect import CallControlFactory, connect_call_control, shared_factory
from ivrproto.callcontrol.protocol import CallControlProtocol
from ivrproto.testing import (
    URL,
    PlatformScript,
    RecordingListener,
    ScriptedPlatformFactory,
    ScriptedPlatformProtocol,
)

TOKEN = "tok-shared-secret"
WS_URL = "ws://127.0.0.1:9/api/v2/callcontrol/websocket"
SERVER = IPv4Address("TCP", "127.0.0.1", 9)
CLIENT = IPv4Address("TCP", "127.0.0.1", 40000)


def _built(reactor: MemoryReactorClock, index: int) -> CallControlProtocol:
    """
    The Call Control protocol the ``index``-th connection attempt builds.
    """
    wrapping = reactor.tcpClients[index][2].buildProtocol(SERVER)
    return cast(CallControlProtocol, wrapping._wrappedProtocol)


class SharedFactoryTests(SynchronousTestCase):
    """
    :func:`connect_call_control` reuses its factory across calls.
    """

    def setUp(self) -> None:
        connect_module._factories.clear()
        self.addCleanup(connect_module._factories.clear)
        self.reactor = MemoryReactorClock()

    def call(self, call_id: str, token: str = TOKEN, **options: Any) -> RecordingListener:
        listener = RecordingListener()
        connect_call_control(self.reactor, WS_URL, token, call_id, listener, **options)
        return listener

    def test_two_calls_share_one_factory(self) -> None:
        """Two calls with the same URL, token and options use one factory."""
        first, second = self.call("call-1"), self.call("call-2")
        a, b = _built(self.reactor, 0), _built(self.reactor, 1)
        self.assertIs(a.factory, b.factory)
        self.assertIsInstance(a.factory, CallControlFactory)
        self.assertEqual((a.call_control_id, b.call_control_id), ("call-1", "call-2"))
        self.assertIs(a.listener, first)
        self.assertIs(b.listener, second)
        self.assertEqual(len(connect_module._factories), 1)

    def test_new_token_new_factory(self) -> None:
        """A renewed token makes a new factory, whose upgrade carries it."""
        self.call("call-1")
        self.call("call-2", token="tok-renewed")
        a, b = _built(self.reactor, 0), _built(self.reactor, 1)
        self.assertIsNot(a.factory, b.factory)
        self.assertEqual(b.factory.headers["Authorization"], "Bearer tok-renewed")

    def test_other_options_other_factory(self) -> None:
        """Calls with other options do not share a factory."""
        self.call("call-1", open_handshake_timeout=3.0)
        self.call("call-2", open_handshake_timeout=4.0)
        a, b = _built(self.reactor, 0), _built(self.reactor, 1)
        self.assertIsNot(a.factory, b.factory)
        self.assertEqual((a.openHandshakeTimeout, b.openHandshakeTimeout), (3.0, 4.0))

    def test_cache_bounded(self) -> None:
        """The cache starts afresh instead of growing with every token."""
        for i in range(connect_module._FACTORY_CACHE_SIZE * 3):
            shared_factory(self.reactor, WS_URL, f"tok-{i}")
            self.assertLessEqual(len(connect_module._factories), connect_module._FACTORY_CACHE_SIZE)

    def test_options_copied(self) -> None:
        """A protocol built by the factory has every attribute in
        ``WebSocketClientProtocol.CONFIG_ATTRS``, with the factory's value."""
        self.call("call-1", open_handshake_timeout=3.0, max_frame_size=4096)
        protocol = _built(self.reactor, 0)
        self.assertEqual(CallControlProtocol.CONFIG_ATTRS, [])
        for name in WebSocketClientProtocol.CONFIG_ATTRS:
            self.assertIn(name, protocol.__dict__, name)
            self.assertEqual(getattr(protocol, name), getattr(protocol.factory, name), name)
        self.assertEqual(protocol.maxFramePayloadSize, 4096)

    def test_factory_built_protocol(self) -> None:
        """A factory given a call (the embedding API) names its protocols for it."""
        listener = RecordingListener()
        factory = CallControlFactory(Clock(), URL, TOKEN, "call-9", listener)
        protocol = factory.buildProtocol(SERVER)
        self.assertEqual(protocol.call_control_id, "call-9")
        self.assertIs(protocol.listener, listener)
        for name in WebSocketClientProtocol.CONFIG_ATTRS:
            self.assertIn(name, protocol.__dict__, name)


class SharedHandshakeTests(SynchronousTestCase):
    """
    Each call on a shared factory makes its own upgrade and connect frame.
    """

    def test_each_call_own_handshake(self) -> None:
        """Two calls on one factory: each upgrade has the URL's path and the
        bearer header, and each connect frame names its own call."""
        clock = Clock()
        connect_module._factories.clear()
        self.addCleanup(connect_module._factories.clear)
        factory = shared_factory(clock, URL, TOKEN)
        servers: list[ScriptedPlatformProtocol] = []
        listeners: list[RecordingListener] = []
        for call_id in ("call-1", "call-2"):
            listener = RecordingListener()
            one = connect_module._OneCall(factory, call_id, listener, ("play", "dtmf"))
            client = one.buildProtocol(SERVER)
            server = cast(
                ScriptedPlatformProtocol,
                ScriptedPlatformFactory(clock, PlatformScript()).buildProtocol(CLIENT),
            )
            pump = connect(
                server,
                FakeTransport(server, True, SERVER, CLIENT),
                client,
                FakeTransport(client, False, CLIENT, SERVER),
                clock=clock,
            )
            pump.flush()
            self.assertIs(client.factory, factory)
            servers.append(server)
            listeners.append(listener)
            client.close()
            pump.flush()
        for server, call_id in zip(servers, ("call-1", "call-2")):
            self.assertEqual(server.authorization, f"Bearer {TOKEN}")
            self.assertEqual(server.request.path, "/api/v2/callcontrol/websocket")
            self.assertEqual(server.received[0]["callControlId"], call_id)
            self.assertEqual(server.received[0]["capabilities"], ["play", "dtmf"])
        for listener in listeners:
            self.assertEqual(listener.names()[0], "connected")
        self.assertEqual(clock.getDelayedCalls(), [])
