"""
Tests for the intake request's direct route (``CappedRequest.process``):
``POST /v1/calls`` reaches the calls resource without the site's traversal,
with the answer the traversal gives, and every other request goes the
usual way.
"""

from __future__ import annotations

from typing import Any, Optional

from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from ivrproto.intake._body import capped_request, json_answer
from ivrproto.intake.resources import JSONResource


class Calls(Resource):
    """
    A calls resource that records what it renders.
    """

    def __init__(self, fail: bool = False) -> None:
        super().__init__()
        self.fail = fail
        self.bodies: list[bytes] = []
        self.prepaths: list[list[bytes]] = []

    def getChild(self, path: bytes, request: Request) -> Resource:
        return self

    def render_GET(self, request: Request) -> bytes:
        return json_answer(request, 200, {"active": 0})

    def render_POST(self, request: Request) -> bytes:
        if self.fail:
            raise RuntimeError("broken")
        assert request.content is not None
        self.bodies.append(request.content.read())
        self.prepaths.append(list(request.prepath))
        request.setHeader(b"location", b"/v1/calls/c1")
        return json_answer(request, 202, {"callControlId": "c1"})


class Traversed(JSONResource):
    """
    A node that counts the traversals through it.
    """

    def __init__(self) -> None:
        super().__init__()
        self.traversals = 0

    def getChildWithDefault(self, path: bytes, request: Request) -> Any:
        self.traversals += 1
        return super().getChildWithDefault(path, request)


def site(calls: Optional[Resource], clock: Clock) -> tuple[Site, Traversed]:
    root = Traversed()
    v1 = JSONResource()
    root.putChild(b"v1", v1)
    if calls is not None:
        v1.putChild(b"calls", calls)
    made = Site(root, requestFactory=capped_request(1024), reactor=clock)
    made.displayTracebacks = False
    return made, root


def ask(made: Site, raw: bytes) -> tuple[bytes, dict[bytes, bytes], bytes]:
    """
    Send one request on a new connection: the status line, the headers
    (lower-cased names) and the body of the answer.
    """
    protocol = made.buildProtocol(IPv4Address("TCP", "127.0.0.1", 1))
    transport = StringTransport()
    protocol.makeConnection(transport)
    protocol.dataReceived(raw)
    head, _, body = transport.value().partition(b"\r\n\r\n")
    status, *lines = head.split(b"\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(b": ")
        headers[name.lower()] = value
    protocol.connectionLost(None)
    return status, headers, body


def post(path: bytes, body: bytes = b'{"x": 1}') -> bytes:
    return (
        b"POST " + path + b" HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )


class RouteTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1_700_000_000.25)
        self.calls = Calls()
        self.site, self.root = site(self.calls, self.clock)

    def test_direct(self) -> None:
        "POST /v1/calls is rendered without a traversal, with the resource's answer."
        status, headers, body = ask(self.site, post(b"/v1/calls"))
        self.assertEqual(status, b"HTTP/1.1 202 Accepted")
        self.assertEqual(body, b'{"callControlId":"c1"}')
        self.assertEqual(headers[b"content-length"], b"%d" % len(body))
        self.assertEqual(headers[b"location"], b"/v1/calls/c1")
        self.assertEqual(self.root.traversals, 0)
        self.assertEqual(self.calls.bodies, [b'{"x": 1}'])
        self.assertEqual(self.calls.prepaths, [[b"v1", b"calls"]])

    def test_same_as_traversal(self) -> None:
        "The answer is the one the traversal gives (here through /v1/calls/)."
        direct = ask(self.site, post(b"/v1/calls"))
        traversed = ask(self.site, post(b"/v1/calls/"))
        self.assertEqual(self.root.traversals, 1)
        # The traversal's Date is twisted.web's, read from the wall clock.
        del direct[1][b"date"], traversed[1][b"date"]
        self.assertEqual(direct, traversed)

    def test_date_per_second(self) -> None:
        "The Date header is the clock's, made again each second."
        _, first, _ = ask(self.site, post(b"/v1/calls"))
        self.assertEqual(first[b"date"], b"Tue, 14 Nov 2023 22:13:20 GMT")
        self.clock.advance(0.5)
        _, same, _ = ask(self.site, post(b"/v1/calls"))
        self.assertEqual(same[b"date"], first[b"date"])
        self.clock.advance(0.5)
        _, later, _ = ask(self.site, post(b"/v1/calls"))
        self.assertEqual(later[b"date"], b"Tue, 14 Nov 2023 22:13:21 GMT")

    def test_broken(self) -> None:
        "A resource that raises gives a 500, as through the traversal."
        made, _ = site(Calls(fail=True), self.clock)
        status, _, _ = ask(made, post(b"/v1/calls"))
        self.assertTrue(status.startswith(b"HTTP/1.1 500 "), status)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_other_requests(self) -> None:
        "Other methods and paths go through the traversal."
        status, _, body = ask(self.site, b"GET /v1/calls HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertEqual((status, body), (b"HTTP/1.1 200 OK", b'{"active":0}'))
        status, _, _ = ask(self.site, post(b"/v1/other"))
        self.assertTrue(status.startswith(b"HTTP/1.1 404 "), status)
        self.assertEqual(self.root.traversals, 2)

    def test_no_post(self) -> None:
        "No calls resource of its own, or none at all: the usual JSON 404."
        made, root = site(JSONResource(), self.clock)
        status, _, body = ask(made, post(b"/v1/calls"))
        self.assertTrue(status.startswith(b"HTTP/1.1 404 "), status)
        made, root = site(None, self.clock)
        status, _, _ = ask(made, post(b"/v1/calls"))
        self.assertTrue(status.startswith(b"HTTP/1.1 404 "), status)
        self.assertEqual(root.traversals, 1)

    def test_no_post_method(self) -> None:
        "A calls resource that does not take POST: the usual JSON 405."
        class GetOnly(JSONResource):
            def render_GET(self, request: Request) -> bytes:
                return json_answer(request, 200, {})

        made, root = site(GetOnly(), self.clock)
        status, headers, body = ask(made, post(b"/v1/calls"))
        self.assertTrue(status.startswith(b"HTTP/1.1 405 "), status)
        self.assertIn(b"GET", headers[b"allow"])
        self.assertEqual(root.traversals, 1)
