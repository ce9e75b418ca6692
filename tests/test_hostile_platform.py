"""
The real service against a hostile Call Control platform over loopback
sockets: connections that half-close (a close frame, TCP kept open), reset,
stop reading while flooding pings, send invalid UTF-8 or oversized frames.
Healthy calls run beside them on the same service, and each hostile call
ends with its real reason within a bound.

Tokens and profiles come from the emulator; only the Call Control
WebSocket points at the hostile platform below.
"""

from __future__ import annotations

from typing import Any, Optional

import attrs
from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults, inlineCallbacks
from twisted.internet.interfaces import IListeningPort

from ivrproto.testing import ScriptedPlatformFactory, ScriptedPlatformProtocol

from .test_integration import ServiceTestCase

MENU_PLAYS = 3  # the default menu (the callers below have no profile)


class HostileProtocol(ScriptedPlatformProtocol):
    """
    One call on the hostile platform; what it does after the menu is out
    depends on the call's id (``<behaviour>-<n>``).
    """

    factory: "HostileFactory"

    def __init__(self) -> None:
        super().__init__()
        self.call_id: Optional[str] = None
        self.plays = 0
        self.transfers: list[str] = []
        self.flooding = False
        self.closed_at: Optional[float] = None

    @property
    def behaviour(self) -> str:
        return (self.call_id or "").rsplit("-", 1)[0]

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        super().onMessage(payload, isBinary)
        frame = self.received[-1]
        if not isinstance(frame, dict):
            return
        if self.call_id is None:
            self.call_id = frame.get("callControlId")
            self.factory.calls[str(self.call_id)] = self
            if self.behaviour == "flood":
                # Stop reading, and ping as fast as we can.
                self.transport.pauseProducing()
                self.flooding = True
                self._flood()
            return
        action = frame.get("action")
        if action == "play":
            self.plays += 1
            if self.plays == MENU_PLAYS:
                self.after_menu()
        elif action == "transfer":
            self.transfers.append(frame["target"])
            self.close(1000)

    def after_menu(self) -> None:
        behaviour = self.behaviour
        if behaviour == "healthy":
            self.send_event("dtmf", digit="2")
        elif behaviour == "halfclose":
            self.sendCloseFrame(code=1000)
            # Never read the answer, never close TCP.
            self.transport.pauseProducing()
        elif behaviour == "reset":
            self.transport.abortConnection()
        elif behaviour == "utf8":
            self.sendMessage(b'{"event": "media", "data": "\xff\xfe\xfd"}', isBinary=False)
        elif behaviour == "oversized":
            self.send_event("media", payload="x" * (self.factory.max_frame_size * 3))

    def _flood(self) -> None:
        if not self.flooding or self.state != self.STATE_OPEN:
            return
        for _ in range(2000):
            self.sendPing(b"p" * 120)
        reactor.callLater(0, self._flood)  # type: ignore[attr-defined]

    def onClose(self, wasClean: bool, code: Optional[int], reason: Optional[str]) -> None:
        super().onClose(wasClean, code, reason)
        self.flooding = False
        self.closed_at = reactor.seconds()  # type: ignore[attr-defined]
        waiter = self.factory.closed.pop(str(self.call_id), None)
        if waiter is not None:
            waiter.callback(self)


class HostileFactory(ScriptedPlatformFactory):
    protocol = HostileProtocol  # type: ignore[assignment]

    def __init__(self, max_frame_size: int) -> None:
        super().__init__(reactor)  # type: ignore[arg-type]
        self.max_frame_size = max_frame_size
        self.calls: dict[str, HostileProtocol] = {}
        self.closed: dict[str, Deferred[HostileProtocol]] = {}


class HostilePlatformTests(ServiceTestCase):
    timeout = 60
    timing = {
        **ServiceTestCase.timing,
        "no_input_timeout": 30.0,
        "confirm_delay": 0.05,
        "close_timeout": 1.0,
        "max_frame_size": 64 * 1024,
        "max_write_buffer": 64 * 1024,
    }

    @inlineCallbacks
    def setUp(self) -> Any:
        yield super().setUp()
        self.hostile = HostileFactory(self.timing["max_frame_size"])
        port: IListeningPort = reactor.listenTCP(  # type: ignore[attr-defined]
            0, self.hostile, interface="127.0.0.1"
        )
        self.addCleanup(port.stopListening)
        self.addCleanup(self._abort_platform_connections)
        address = port.getHost()
        registry = self.service.registry
        registry.context = attrs.evolve(
            registry.context,
            websocket_url=f"ws://127.0.0.1:{address.port}/api/v2/callcontrol/websocket",
        )

    def _abort_platform_connections(self) -> None:
        # A platform end that stopped reading never notices the drop.
        for protocol in self.hostile.calls.values():
            if protocol.closed_at is None:
                protocol.transport.abortConnection()

    @inlineCallbacks
    def until(self, condition: Any) -> Any:
        """
        Wait (polling the reactor, at most 10 s) until ``condition()`` holds.
        """
        deadline = reactor.seconds() + 10  # type: ignore[attr-defined]
        while not condition():
            self.assertLess(reactor.seconds(), deadline, "timed out waiting")  # type: ignore[attr-defined]
            d: Deferred[None] = Deferred()
            reactor.callLater(0.01, d.callback, None)  # type: ignore[attr-defined]
            yield d

    def platform_closed(self, calls: list[str]) -> bool:
        protocols = [self.hostile.calls.get(c) for c in calls]
        return all(p is not None and p.closed_at is not None for p in protocols)

    @inlineCallbacks
    def place(self, call_id: str) -> Any:
        response = yield self.post({"callControlId": call_id, "externalId": "CRM-NOBODY-" + call_id})
        self.assertEqual(response.code, 202)
        yield response.content()

    @inlineCallbacks
    def test_hostile_connections_beside_healthy_calls(self) -> Any:
        """Each hostile call ends with its real reason; the healthy calls beside them transfer."""
        hostile = ["halfclose-1", "reset-1", "flood-1", "utf8-1", "oversized-1"]
        healthy = [f"healthy-{i}" for i in range(5)]
        calls = hostile + healthy
        ended = {call_id: self.service.registry.when_ended(call_id) for call_id in calls}
        for call_id in calls:
            yield self.place(call_id)
        records = yield gatherResults([ended[c] for c in calls])
        outcomes = {c: r.outcome for c, r in zip(calls, records)}
        yield self.until(lambda: self.platform_closed(healthy))
        for call_id in healthy:
            self.assertEqual(outcomes[call_id].kind, "transferred", call_id)
            self.assertEqual(outcomes[call_id].target, "ext:transfer_support", call_id)
            self.assertEqual(self.hostile.calls[call_id].transfers, ["ext:transfer_support"])
        for call_id in hostile:
            self.assertEqual(outcomes[call_id].kind, "failed", call_id)
        self.assertEqual(outcomes["halfclose-1"].reason, "closed normally (1000)")
        self.assertEqual(outcomes["reset-1"].reason, "connection lost")
        self.assertIn("stopped reading", outcomes["flood-1"].reason)
        self.assertIn("invalid UTF-8", outcomes["utf8-1"].reason)
        self.assertIn("frame over 65536 bytes", outcomes["oversized-1"].reason)
        # Every connection goes, the half-closed one included (close_timeout).
        yield self.service.registry.when_idle()
        self.assertEqual(self.service.registry.active, {})

    @inlineCallbacks
    def test_drain_with_a_half_closed_call_and_30_silent_callers(self) -> Any:
        """A drain with one half-closed call transfers all 30 silent callers to the operator."""
        silent = [f"silent-{i}" for i in range(30)]
        calls = ["halfclose-1"] + silent
        ended = {call_id: self.service.registry.when_ended(call_id) for call_id in calls}
        for call_id in calls:
            yield self.place(call_id)
        # Wait for every menu to be out (and the half-close to happen).
        yield self.until(
            lambda: len([p for p in self.hostile.calls.values() if p.plays >= MENU_PLAYS])
            == len(calls)
        )
        yield self.service.drain(deadline=0.2)
        records = yield gatherResults([ended[c] for c in calls])
        outcomes = {c: r.outcome for c, r in zip(calls, records)}
        yield self.until(lambda: self.platform_closed(silent))
        for call_id in silent:
            self.assertEqual(
                (outcomes[call_id].kind, outcomes[call_id].target, outcomes[call_id].reason),
                ("transferred", "ext:transfer_operator", "draining"),
                call_id,
            )
            self.assertEqual(self.hostile.calls[call_id].transfers, ["ext:transfer_operator"])
        self.assertEqual(outcomes["halfclose-1"].kind, "failed")
        self.assertEqual(self.service.registry.active, {})
        self.assertEqual(self.service.registry.connections, set())
