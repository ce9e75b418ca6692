"""
The intake site, driven byte by byte through its real HTTP channel and its
connection guard (StringTransport, Clock): hostile bodies and headers get
the 4xx the contract names in JSON, never a 500 or a traceback; a request's
deadline does not restart on every byte; connections beyond the cap or the
descriptor reserve get 503.
"""

from __future__ import annotations

import json
import re
from typing import Any, Callable, Optional

from hypothesis import example, HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, fail
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import LogLevel, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from ivrproto.session.runner import CallContext
from ivrproto.session.registry import CallRegistry
from ivrproto.config import load_config
from ivrproto.intake.guard import IntakeGuard
from ivrproto.intake.resources import make_site
from ivrproto.intake.signing import SignatureCheck, sign

from .test_integration import SEED

SECRET = b"intake-shared-secret"
ADDRESS = IPv4Address("TCP", "127.0.0.1", 40000)
STATUS = re.compile(rb"HTTP/1\.[01] (\d{3}) ")


class _NoTokens:
    "A token source that never answers: calls stay starting, no I/O."

    def get_token(self) -> "Deferred[str]":
        return Deferred()

    def invalidate(self, token: str) -> None:
        pass


class _NoProfiles:
    def lookup(self, external_id: str, budget: float) -> "Deferred[Any]":
        return Deferred()


def _never(*args: Any, **kwargs: Any) -> "Deferred[Any]":
    return Deferred()


def make_guard(
    clock: Clock,
    signatures: Optional[SignatureCheck] = None,
    max_connections: int = 100,
    request_deadline: float = 10.0,
    fd_reserve: int = 0,
    open_descriptors: Callable[[], Optional[int]] = lambda: 10,
    descriptor_limit: Optional[int] = None,
    max_body: int = 16 * 1024,
) -> IntakeGuard:
    config = load_config(SEED, {"CLIENT_ID": "a", "CLIENT_SECRET": "b"})
    context = CallContext(
        reactor=clock,
        tokens=_NoTokens(),
        profiles=_NoProfiles(),
        book=config.menu,
        timing=config.timing,
        websocket_url="ws://127.0.0.1:1/x",
        log_key=b"k",
        connect=_never,
    )
    registry = CallRegistry(context, max_active=50, retention=0)
    site = make_site(
        registry,
        lambda: False,  # the token source is not ready
        lambda: False,
        max_body,
        signatures=signatures,
        clock=clock,
    )
    return IntakeGuard(
        site,
        clock,
        max_connections,
        request_deadline,
        fd_reserve,
        open_descriptors=open_descriptors,
        descriptor_limit=lambda: descriptor_limit,
    )


def connect(guard: IntakeGuard) -> tuple[Any, StringTransport]:
    protocol = guard.buildProtocol(ADDRESS)
    transport = StringTransport()
    protocol.makeConnection(transport)
    return protocol, transport


def answers(raw: bytes) -> list[tuple[int, bytes]]:
    """
    The (status, body) of each response in ``raw``.
    """
    found = []
    for match in STATUS.finditer(raw):
        head_end = raw.find(b"\r\n\r\n", match.start())
        head = raw[match.start() : head_end]
        length = re.search(rb"(?im)^content-length: (\d+)", head)
        start = head_end + 4
        body = raw[start : start + int(length.group(1))] if length else b""
        found.append((int(match.group(1)), body))
    return found


def request(method: bytes, path: bytes, body: bytes = b"", headers: Optional[dict[bytes, bytes]] = None) -> bytes:
    lines = [method + b" " + path + b" HTTP/1.1", b"Host: intake"]
    all_headers = {b"Content-Length": b"%d" % len(body), **(headers or {})}
    lines += [name + b": " + value for name, value in all_headers.items()]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


class _Failures:
    "Collects logged failures (tracebacks) and error or critical lines."

    def __init__(self, case: Optional[SynchronousTestCase] = None) -> None:
        self.events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(self)
        if case is not None:
            case.addCleanup(self.stop)

    def stop(self) -> None:
        globalLogPublisher.removeObserver(self)

    def __call__(self, event: dict[str, Any]) -> None:
        if "log_failure" in event or event.get("log_level") in (LogLevel.error, LogLevel.critical):
            self.events.append(event)


class BodyTests(SynchronousTestCase):
    def test_deeply_nested_json_is_400(self) -> None:
        """JSON nested past both parsers' depth (within max_body) is a 400 naming it, not a 500; so are other bodies that are not JSON."""
        failures = _Failures(self)
        guard = make_guard(Clock(), max_body=64 * 1024)
        for depth in (1025, 3000, 7000):
            for opening, closing in ((b"[", b"]"), (b'{"a":', b"}")):
                body = opening * depth + b"1" + closing * depth
                protocol, transport = connect(guard)
                protocol.dataReceived(request(b"POST", b"/v1/calls", body))
                [(status, answer)] = answers(transport.value())
                self.assertEqual(status, 400)
                self.assertIn("nested too deeply", json.loads(answer)["error"])
        for body in (
            b"\xff\xfe\x00{",
            b'{"callControlId": "\xc3\x28", "externalId": "x"}',
            b'{"callControlId": ' + b"9" * 5000 + b', "externalId": "x"}',
            b'{"callControlId": 1e999999, "externalId": "x"}',
            b'{"callControlId": "\\ud800", "externalId": "x"}',
            b"[NaN]",
        ):
            protocol, transport = connect(guard)
            protocol.dataReceived(request(b"POST", b"/v1/calls", body))
            [(status, answer)] = answers(transport.value())
            self.assertEqual(status, 400, body[:40])
            self.assertIn("error", json.loads(answer))
        self.assertEqual(failures.events, [])

    def test_too_large_answered_before_the_body(self) -> None:
        """A declared or chunked body over max_body is answered 413 at once, not when (or if) it ends."""
        guard = make_guard(Clock(), max_body=1024)
        for head, first in (
            (b"Content-Length: " + b"9" * 4000, b"x" * 10),
            (b"Content-Length: 2000\r\nExpect: 100-continue", b""),
            (b"Transfer-Encoding: chunked", b"800\r\n" + b"x" * 2048 + b"\r\n"),
        ):
            protocol, transport = connect(guard)
            protocol.dataReceived(b"POST /v1/calls HTTP/1.1\r\n" + head + b"\r\n\r\n" + first)
            [(status, answer)] = answers(transport.value())
            self.assertEqual(status, 413, head)
            self.assertNotIn(b"100 Continue", transport.value())
            self.assertIn("too large", json.loads(answer)["error"])
            self.assertTrue(transport.disconnecting)

    def test_unknown_paths_and_methods_answer_json(self) -> None:
        """An unknown path is a JSON 404, a method a resource lacks a JSON 405 with Allow."""
        guard = make_guard(Clock())
        for method, path, expected in (
            (b"GET", b"/nowhere", 404),
            (b"GET", b"/v1/nowhere/deeper", 404),
            (b"DELETE", b"/v1/calls", 405),
            (b"PATCH", b"/healthz", 405),
            (b"BREW", b"/v1/calls/c-1", 405),
            (b"POST", b"/readyz", 405),
            (b"HEAD", b"/healthz", 200),
        ):
            protocol, transport = connect(guard)
            protocol.dataReceived(request(method, path))
            [(status, answer)] = answers(transport.value())
            self.assertEqual(status, expected, (method, path))
            if method != b"HEAD":
                self.assertIn("error" if expected >= 400 else "status", json.loads(answer))
            if expected == 405:
                self.assertIn(b"\r\nAllow: ", transport.value())


class SignedHeaderTests(SynchronousTestCase):
    def test_bad_timestamp_refused_before_the_body(self) -> None:
        """A signed intake keeps none of the body of a request whose timestamp is bad (401)."""
        clock = Clock()
        clock.advance(1_000_000)
        guard = make_guard(clock, signatures=SignatureCheck(SECRET))
        body = b'{"callControlId": "c-1", "externalId": "x"}'
        for timestamp in (b"9" * 4000, b"12", b"soon"):
            protocol, transport = connect(guard)
            protocol.dataReceived(
                request(
                    b"POST",
                    b"/v1/calls",
                    body,
                    {b"X-IVR-Timestamp": timestamp, b"X-IVR-Signature": b"v1=00"},
                )
            )
            [(status, answer)] = answers(transport.value())
            self.assertEqual(status, 401)
            self.assertIn("X-IVR-Timestamp", json.loads(answer)["error"])

    def test_refused_in_headers_keeps_no_body(self) -> None:
        """A request refused on its headers keeps no body and is answered 401 before the body ends."""
        clock = Clock()
        clock.advance(1_000_000)
        guard = make_guard(clock, signatures=SignatureCheck(SECRET))
        protocol, transport = connect(guard)
        head = request(b"POST", b"/v1/calls", b"", {b"Content-Length": b"1000"})
        protocol.dataReceived(head + b"x" * 500)
        [channel_request] = protocol.wrappedProtocol._channel.requests
        self.assertIn("missing", channel_request.refused)
        self.assertEqual(channel_request.content.tell(), 0)
        [(status, answer)] = answers(transport.value())
        self.assertEqual(status, 401)
        self.assertIn("missing", json.loads(answer)["error"])
        self.assertTrue(transport.disconnecting)

    def test_signed_request_still_accepted(self) -> None:
        """A correctly signed request gets through the early check and starts a call."""
        clock = Clock()
        clock.advance(1_000_000)
        guard = make_guard(clock, signatures=SignatureCheck(SECRET))
        body = b'{"callControlId": "c-1", "externalId": "x"}'
        protocol, transport = connect(guard)
        protocol.dataReceived(
            request(
                b"POST",
                b"/v1/calls",
                body,
                {
                    b"X-IVR-Timestamp": b"1000000",
                    b"X-IVR-Signature": sign(SECRET, 1_000_000, body).encode(),
                },
            )
        )
        [(status, _)] = answers(transport.value())
        self.assertEqual(status, 202)


class DeadlineTests(SynchronousTestCase):
    def test_trickle_dropped_at_deadline(self) -> None:
        """One byte every 3 s does not extend the deadline: 408 and close at 10 s."""
        clock = Clock()
        guard = make_guard(clock, request_deadline=10.0)
        protocol, transport = connect(guard)
        for byte in b"POST /v1/calls HTTP/1.1\r\n":
            protocol.dataReceived(bytes([byte]))
            if transport.disconnecting:
                break
            clock.advance(3)
        self.assertEqual(clock.seconds(), 12)
        self.assertTrue(transport.disconnecting)
        [(status, answer)] = answers(transport.value())
        self.assertEqual(status, 408)
        self.assertIn("error", json.loads(answer))
        self.assertEqual(guard.timed_out, 1)

    def test_silent_connection_dropped(self) -> None:
        """A connection that never sends a byte is closed at the deadline."""
        clock = Clock()
        protocol, transport = connect(make_guard(clock, request_deadline=5.0))
        clock.advance(4.9)
        self.assertFalse(transport.disconnecting)
        clock.advance(0.1)
        self.assertTrue(transport.disconnecting)

    def test_unread_connection_is_cut_off(self) -> None:
        """A connection that does not take its 408 is aborted shortly after."""
        clock = Clock()
        protocol, transport = connect(make_guard(clock, request_deadline=5.0))
        clock.advance(5)
        self.assertFalse(transport.disconnected)
        aborted: list[bool] = []
        transport.abortConnection = lambda: aborted.append(True)  # type: ignore[method-assign]
        clock.advance(2)
        self.assertEqual(aborted, [True])

    def test_keep_alive_requests_each_get_the_deadline(self) -> None:
        """Answered requests on a kept-alive connection each get a whole deadline; answering takes none."""
        clock = Clock()
        guard = make_guard(clock, request_deadline=10.0)
        protocol, transport = connect(guard)
        for _ in range(3):
            clock.advance(9)
            protocol.dataReceived(request(b"GET", b"/healthz"))
        self.assertEqual([status for status, _ in answers(transport.value())], [200, 200, 200])
        self.assertFalse(transport.disconnecting)
        # After an answer the next request's deadline starts at its first byte.
        clock.advance(20)
        protocol.dataReceived(b"GET /hea")
        clock.advance(9.9)
        self.assertFalse(transport.disconnecting)
        clock.advance(0.1)
        self.assertTrue(transport.disconnecting)

    def test_closed_connection_leaves_no_timer(self) -> None:
        """A connection that goes away cancels its deadline."""
        clock = Clock()
        protocol, transport = connect(make_guard(clock))
        protocol.dataReceived(b"GET /")
        protocol.connectionLost(None)
        self.assertEqual([c for c in clock.getDelayedCalls() if c.func.__name__ == "_expired"], [])


class CapTests(SynchronousTestCase):
    def test_connections_beyond_the_cap_get_503(self) -> None:
        """Past max_connections a new connection gets 503 and is closed; one slot frees one."""
        clock = Clock()
        guard = make_guard(clock, max_connections=3)
        held = [connect(guard) for _ in range(3)]
        protocol, transport = connect(guard)
        [(status, answer)] = answers(transport.value())
        self.assertEqual(status, 503)
        self.assertTrue(transport.disconnecting)
        self.assertIn(b"Retry-After: 1", transport.value())
        self.assertEqual(guard.refused, 1)
        held[0][0].connectionLost(None)
        protocol, transport = connect(guard)
        protocol.dataReceived(request(b"GET", b"/healthz"))
        [(status, _)] = answers(transport.value())
        self.assertEqual(status, 200)

    def test_descriptor_reserve(self) -> None:
        """With fewer than fd_reserve descriptors left below the limit, new connections get 503."""
        clock = Clock()
        open_now = [100]
        guard = make_guard(
            clock, fd_reserve=50, open_descriptors=lambda: open_now[0], descriptor_limit=200
        )
        _, transport = connect(guard)
        self.assertEqual(transport.value(), b"")
        open_now[0] = 150
        clock.advance(guard.RECOUNT_INTERVAL)
        _, transport = connect(guard)
        self.assertEqual([status for status, _ in answers(transport.value())], [503])
        self.assertTrue(transport.disconnecting)

    def test_descriptors_listed_seldom(self) -> None:
        """Far from the limit the descriptors are listed once per interval, not per connection; near it, every time."""
        clock = Clock()
        listings = []

        def count() -> int:
            listings.append(clock.seconds())
            return 100

        guard = make_guard(clock, fd_reserve=50, open_descriptors=count, descriptor_limit=200)
        for _ in range(10):
            connect(guard)
        self.assertEqual(len(listings), 1)
        clock.advance(guard.RECOUNT_INTERVAL)
        connect(guard)
        self.assertEqual(len(listings), 2)
        # 100 open + 3 for each of 17 connections since reaches the floor of 150:
        # the estimate is checked against a fresh listing.
        for _ in range(17):
            connect(guard)
        self.assertEqual(len(listings), 3)

    def test_start_logs_the_effective_cap(self) -> None:
        """At start the guard logs the cap the descriptor limit allows, or warns that there is no room."""
        lines: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(lines.append)
        self.addCleanup(globalLogPublisher.removeObserver, lines.append)
        guard = make_guard(Clock(), fd_reserve=50, open_descriptors=lambda: 100, descriptor_limit=200)
        guard.doStart()
        self.addCleanup(guard.doStop)
        [line] = [e for e in lines if e.get("log_namespace", "").endswith("IntakeGuard")]
        self.assertEqual((line["cap"], line["log_level"]), (50, LogLevel.info))
        lines.clear()
        tight = make_guard(Clock(), fd_reserve=150, open_descriptors=lambda: 100, descriptor_limit=200)
        tight.doStart()
        self.addCleanup(tight.doStop)
        [line] = [e for e in lines if e.get("log_namespace", "").endswith("IntakeGuard")]
        self.assertEqual(line["log_level"], LogLevel.warn)

    def test_refusals_log_a_bounded_number_of_lines(self) -> None:
        """A thousand refused connections write only a few log lines."""
        lines: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(lines.append)
        self.addCleanup(globalLogPublisher.removeObserver, lines.append)
        guard = make_guard(Clock(), max_connections=1)
        connect(guard)
        for _ in range(1000):
            connect(guard)
        refused = [e for e in lines if "refused" in e.get("log_format", "")]
        self.assertEqual(guard.refused, 1000)
        self.assertLessEqual(len(refused), 5)


# A hostile request: any method, path, headers and body; or a near-valid
# one with a hostile part.
_token = st.sampled_from([b"GET", b"POST", b"HEAD", b"PUT", b"DELETE", b"OPTIONS", b"BREW", b"G\xffT"])
_path = st.one_of(
    st.sampled_from(
        [
            b"/v1/calls",
            b"/v1/calls/",
            b"/v1/calls/c-1",
            b"/v1/calls/%ff%00",
            b"/healthz",
            b"/readyz",
            b"//v1//calls",
            b"/v1/calls/../../etc",
            b"*",
            b"http://elsewhere/v1/calls",
        ]
    ),
    st.binary(min_size=1, max_size=40).map(lambda b: b"/" + b.replace(b" ", b"").replace(b"\r", b"").replace(b"\n", b"")),
)
_header_value = st.one_of(
    st.binary(max_size=60).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b"")),
    st.integers(min_value=-(10**30), max_value=10**4000).map(lambda n: str(n).encode()),
    st.sampled_from([b"9" * 4000, "\u0661\u0662".encode(), b"chunked", b"v1=" + b"0" * 64]),
)
_header_name = st.sampled_from(
    [b"X-IVR-Timestamp", b"X-IVR-Signature", b"Content-Type", b"Content-Length", b"Transfer-Encoding", b"X-\xff", b"Expect"]
)


def _nested(depth: int) -> bytes:
    return b'{"callControlId":' * depth + b'"c"' + b"}" * depth


_json_value = st.recursive(
    st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)
_body = st.one_of(
    st.binary(max_size=200),
    st.integers(min_value=1000, max_value=6000).map(_nested),
    _json_value.map(lambda v: json.dumps(v).encode()),
    st.fixed_dictionaries(
        {"callControlId": _json_value | st.text(max_size=300), "externalId": _json_value | st.text(max_size=300)}
    ).map(lambda v: json.dumps(v).encode()),
)


class FuzzTests(SynchronousTestCase):
    @settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
    @given(
        method=_token,
        path=_path,
        headers=st.lists(st.tuples(_header_name, _header_value), max_size=5),
        body=_body,
        signed=st.sampled_from(["no", "good", "bad"]),
        protected=st.booleans(),
    )
    # Found by this test: HEAD on a path that is only a node of the tree.
    @example(method=b"HEAD", path=b"/v1", headers=[], body=b"", signed="no", protected=False)
    @example(method=b"GET", path=b"/v1", headers=[], body=b"", signed="no", protected=False)
    def test_hostile_requests_get_4xx_json_never_500(
        self, method: bytes, path: bytes, headers: list[tuple[bytes, bytes]], body: bytes, signed: str, protected: bool
    ) -> None:
        """Any method, path, headers and body: a 2xx, 4xx or 503 answer (JSON where it has a body), no traceback."""
        failures = _Failures()
        try:
            clock = Clock()
            clock.advance(1_000_000)
            guard = make_guard(clock, signatures=SignatureCheck(SECRET) if protected else None, max_body=8 * 1024)
            lines = [method + b" " + path + b" HTTP/1.1", b"Host: intake"]
            if signed == "good":
                lines += [b"X-IVR-Timestamp: 1000000", b"X-IVR-Signature: " + sign(SECRET, 1_000_000, body).encode()]
            elif signed == "bad":
                lines += [b"X-IVR-Timestamp: 1000000", b"X-IVR-Signature: v1=" + b"0" * 64]
            if not any(name.lower() in (b"content-length", b"transfer-encoding") for name, _ in headers):
                lines.append(b"Content-Length: %d" % len(body))
            lines += [name + b": " + value for name, value in headers]
            protocol, transport = connect(guard)
            protocol.dataReceived(b"\r\n".join(lines) + b"\r\n\r\n" + body)
            if not transport.value():
                # An incomplete request (a Content-Length beyond the body...)
                # is answered at its deadline.
                clock.advance(guard.request_deadline)
            raw = transport.value()
            found = answers(raw)
            if not found:
                # twisted.web's own refusal of what it cannot parse: a bare
                # 400 without headers, or nothing, and the connection closed.
                self.assertTrue(transport.disconnecting or raw.startswith(b"HTTP/1.1 400"), raw[:200])
            for status, answer in found:
                self.assertTrue(200 <= status < 500 or status == 503, (status, raw[:300]))
                if status >= 400 and answer:
                    # An error names itself; /readyz's 503 says its status.
                    self.assertTrue({"error", "status"} & set(json.loads(answer)), raw[:300])
        finally:
            failures.stop()
        self.assertEqual(failures.events, [])
