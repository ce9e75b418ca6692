"""
Hostile intake clients over real loopback sockets, with healthy calls beside
them: a client trickling bytes is dropped at the request deadline, connections
beyond the cap get 503 and stop healthy calls no longer than the deadline, and
a flood of bad requests writes a bounded number of log lines.
"""

from __future__ import annotations

import resource
from typing import Any, Optional

import attrs
import treq
from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults, inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol
from twisted.internet.task import LoopingCall
from twisted.logger import LogLevel, globalLogPublisher
from twisted.python.failure import Failure

from ivrproto.intake.guard import open_descriptors
from ivrproto.service import IVRService

from .test_integration import ServiceTestCase

DEADLINE = 1.0


class _RawClient(Protocol):
    """
    A client that sends ``data`` one byte every ``interval`` seconds (all at
    once for 0; or nothing), records what it receives, fires ``answered``
    when the first bytes come and ``lost`` when closed.
    """

    def __init__(self, data: bytes = b"", interval: float = 0.2) -> None:
        self.data = data
        self.interval = interval
        self.received = b""
        self.sent = 0
        self.lost: Deferred[float] = Deferred()
        self.answered: Deferred[None] = Deferred()
        self.opened_at = 0.0
        self._trickle: Optional[LoopingCall] = None

    def connectionMade(self) -> None:
        self.opened_at = reactor.seconds()
        if self.data and not self.interval:
            assert self.transport is not None
            self.transport.write(self.data)
        elif self.data:
            self._trickle = LoopingCall(self._one_byte)
            self._trickle.clock = reactor
            self._trickle.start(self.interval)

    def _one_byte(self) -> None:
        if self.sent < len(self.data):
            assert self.transport is not None
            self.transport.write(self.data[self.sent : self.sent + 1])
            self.sent += 1

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        if not self.answered.called:
            self.answered.callback(None)

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        if self._trickle is not None and self._trickle.running:
            self._trickle.stop()
        self.lost.callback(reactor.seconds() - self.opened_at)


class HostileIntakeTests(ServiceTestCase):
    timeout = 30
    intake: dict[str, Any] = {"request_deadline": DEADLINE, "max_connections": 10}

    @inlineCallbacks
    def setUp(self) -> Any:
        yield super().setUp()
        config = attrs.evolve(
            self.service.config, intake=attrs.evolve(self.service.config.intake, **self.intake)
        )
        service = IVRService(reactor, config, intake="tcp:0:interface=127.0.0.1", admin="tcp:0:interface=127.0.0.1")
        yield service.start()
        self.addCleanup(service.stop)
        self.service = service

    def open_raw(self, client: _RawClient) -> Deferred[Any]:
        address = self.service.intake_address
        return connectProtocol(TCP4ClientEndpoint(reactor, address.host, address.port), client)

    @inlineCallbacks
    def test_trickler_dropped_at_deadline_healthy_calls_go_on(self) -> Any:
        """A byte every 0.2 s does not extend the 1 s deadline (408), and a healthy call beside it is transferred."""
        trickler = _RawClient(b"POST /v1/calls HTTP/1.1\r\nHost: x\r\nContent-Length: 40\r\n\r\n", 0.2)
        yield self.open_raw(trickler)
        theirs, ours = yield self.call("CRM-PREMIUM", ["menu", "press:1"])
        self.assertEqual(theirs.transfer_target, "ext:transfer_premium")
        held = yield trickler.lost
        self.assertTrue(trickler.received.startswith(b"HTTP/1.1 408 "), trickler.received[:80])
        self.assertGreaterEqual(trickler.sent, 3)
        self.assertLess(trickler.sent, len(trickler.data))
        self.assertGreaterEqual(held, DEADLINE - 0.05)
        self.assertLess(held, DEADLINE + 4.0)

    @inlineCallbacks
    def test_huge_declared_body_answered_at_once(self) -> Any:
        """A Content-Length of 4,000 digits gets 413 before its body; the sender is cut off by the deadline."""
        first: list[float] = []
        client = _RawClient(b"x" * 100, 0.2)
        client.dataReceived = lambda data: (  # type: ignore[method-assign]
            first.append(reactor.seconds() - client.opened_at),
            setattr(client, "received", client.received + data),
        )
        yield self.open_raw(client)
        assert client.transport is not None
        client.transport.write(
            b"POST /v1/calls HTTP/1.1\r\nHost: x\r\nContent-Length: " + b"9" * 4000 + b"\r\n\r\n"
        )
        held = yield client.lost
        self.assertTrue(client.received.startswith(b"HTTP/1.1 413 "), client.received[:80])
        self.assertLess(first[0], DEADLINE / 2)
        self.assertLess(held, DEADLINE + 4.0)

    @inlineCallbacks
    def test_connections_beyond_the_cap(self) -> Any:
        """With the cap held by silent clients a new connection gets 503 at once; they are dropped at the deadline, then calls and /healthz go on."""
        holders = [_RawClient() for _ in range(10)]
        yield gatherResults([self.open_raw(h) for h in holders])
        extra = _RawClient()
        yield self.open_raw(extra)
        yield extra.lost
        self.assertTrue(extra.received.startswith(b"HTTP/1.1 503 "), extra.received[:80])
        self.assertIn(b"Retry-After: 1", extra.received)
        held = yield gatherResults([h.lost for h in holders])
        self.assertLess(max(held), DEADLINE + 4.0)
        response = yield treq.get(self.service.intake_url + "/healthz", timeout=5, persistent=False)
        self.assertEqual(response.code, 200)
        yield response.content()
        theirs, _ = yield self.call("CRM-PLAIN", ["menu", "press:0"])
        self.assertEqual(theirs.violations, [])
        assert self.service.intake_guard is not None
        self.assertGreaterEqual(self.service.intake_guard.refused, 1)
        self.assertEqual(self.service.intake_guard.timed_out, 10)


class DescriptorReserveTests(ServiceTestCase):
    """
    Under a low open-file limit, intake connections stop at the reserve, so
    the process's own outgoing connections still open.
    """

    timeout = 30

    @inlineCallbacks
    def setUp(self) -> Any:
        yield super().setUp()
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        now = open_descriptors()
        assert now is not None
        self.addCleanup(resource.setrlimit, resource.RLIMIT_NOFILE, (soft, hard))
        resource.setrlimit(resource.RLIMIT_NOFILE, (now + 100, hard))
        config = attrs.evolve(
            self.service.config,
            intake=attrs.evolve(
                self.service.config.intake,
                request_deadline=DEADLINE,
                idle_timeout=DEADLINE,
                fd_reserve=50,
            ),
        )
        service = IVRService(reactor, config, intake="tcp:0:interface=127.0.0.1", admin="tcp:0:interface=127.0.0.1")
        yield service.start()
        self.addCleanup(service.stop)
        self.service = service

    @inlineCallbacks
    def test_intake_stops_at_the_reserve(self) -> Any:
        """Kept-alive clients get 503 once the reserve is reached; an outgoing request and, after the idle timeout, a call still work."""
        address = self.service.intake_address
        holders = []
        for _ in range(60):
            client = _RawClient(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", 0)
            yield connectProtocol(TCP4ClientEndpoint(reactor, address.host, address.port), client)
            holders.append(client)
            yield client.answered
            if not client.received.startswith(b"HTTP/1.1 200 "):
                break
        refused = holders.pop()
        self.assertGreater(len(holders), 5)
        self.assertTrue(refused.received.startswith(b"HTTP/1.1 503 "), refused.received[:80])
        # The process still opens outgoing connections.
        response = yield treq.get(self.platform.base_url + "/", timeout=5, persistent=False)
        yield response.content()
        yield gatherResults([h.lost for h in holders])
        theirs, _ = yield self.call("CRM-PLAIN", ["menu", "press:0"])
        self.assertEqual(theirs.violations, [])


class FloodTests(ServiceTestCase):
    timeout = 60

    @inlineCallbacks
    def setUp(self) -> Any:
        yield super().setUp()
        config = attrs.evolve(
            self.service.config,
            intake=attrs.evolve(self.service.config.intake, secret="flood-secret"),
        )
        service = IVRService(reactor, config, intake="tcp:0:interface=127.0.0.1", admin="tcp:0:interface=127.0.0.1")
        yield service.start()
        self.addCleanup(service.stop)
        self.service = service

    @inlineCallbacks
    def test_flood_of_bad_requests_writes_few_log_lines(self) -> Any:
        """300 wrongly signed or unsigned requests are all answered 401, with at most a handful of warning lines."""
        lines: list[dict[str, Any]] = []

        def observer(event: dict[str, Any]) -> None:
            if event.get("log_level") in (LogLevel.warn, LogLevel.error, LogLevel.critical):
                lines.append(event)

        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)
        statuses = []
        for batch in range(6):
            responses = yield gatherResults(
                [
                    treq.post(
                        self.service.intake_url + "/v1/calls",
                        data=b'{"callControlId": "c", "externalId": "x"}',
                        headers={
                            "X-IVR-Timestamp": ["9" * 4000, "0", "soon"][i % 3],
                            "X-IVR-Signature": "v1=00",
                        }
                        if i % 2
                        else {},
                        timeout=5,
                        persistent=False,
                    )
                    for i in range(50)
                ]
            )
            for response in responses:
                statuses.append(response.code)
                yield response.content()
        self.assertEqual(statuses, [401] * 300)
        self.assertLessEqual(len(lines), 10, [e.get("log_format") for e in lines][:20])
