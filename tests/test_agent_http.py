"""
Tests for :mod:`ivrproto.clients._agent`: the profile clients' HTTP client
on twisted's ``Agent`` and its cached endpoints, alone and against a real
server on loopback.  (Its TLS checks are in :mod:`tests.test_tls`, through
the service's own clients.)
"""

from __future__ import annotations

import json
from typing import Any, Optional

from twisted.internet import reactor
from twisted.internet.defer import CancelledError, Deferred, inlineCallbacks, succeed
from twisted.internet.endpoints import (
    HostnameEndpoint,
    TCP4ClientEndpoint,
    TCP6ClientEndpoint,
    TCP4ServerEndpoint,
)
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.client import URI, Agent, HTTPConnectionPool
from twisted.web.error import SchemeNotSupported
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgentEndpointFactory
from twisted.web.resource import Resource
from twisted.web.server import Request, Site
from zope.interface.verify import verifyObject

from ivrproto.clients._agent import AgentHTTP, CachedEndpoints
from ivrproto.clients.profiles import Profile
from ivrproto.clients.sources import ExternalContactsClient, ProfileClient


def uri(text: str) -> URI:
    return URI.fromBytes(text.encode("ascii"))


class CachedEndpointsTests(SynchronousTestCase):
    """
    One endpoint per (scheme, host, port), of the kind the host calls for.
    """

    def setUp(self) -> None:
        self.endpoints = CachedEndpoints(MemoryReactorClock())

    def test_interface(self) -> None:
        "It is an IAgentEndpointFactory."
        self.assertTrue(verifyObject(IAgentEndpointFactory, self.endpoints))

    def test_kept(self) -> None:
        "The same scheme, host and port give the same endpoint; another port another."
        first = self.endpoints.endpointForURI(uri("http://127.0.0.1:8080/a"))
        again = self.endpoints.endpointForURI(uri("http://127.0.0.1:8080/b?c=d"))
        other = self.endpoints.endpointForURI(uri("http://127.0.0.1:8081/a"))
        self.assertIs(first, again)
        self.assertIsNot(first, other)

    def test_ip_literals(self) -> None:
        "IP literals connect without a name lookup."
        self.assertIsInstance(
            self.endpoints.endpointForURI(uri("http://127.0.0.1:80/")), TCP4ClientEndpoint
        )
        self.assertIsInstance(
            self.endpoints.endpointForURI(uri("http://[::1]:80/")), TCP6ClientEndpoint
        )

    def test_host_name(self) -> None:
        "A host name goes through HostnameEndpoint (resolved, happy eyeballs)."
        self.assertIsInstance(
            self.endpoints.endpointForURI(uri("http://api.example:80/")), HostnameEndpoint
        )

    def test_https(self) -> None:
        "https asks the TLS policy for the host, once per endpoint."
        asked: list[tuple[bytes, int]] = []

        class Policy:
            def creatorForNetloc(self, host: bytes, port: int) -> object:
                asked.append((host, port))
                return object()

        endpoints = CachedEndpoints(MemoryReactorClock(), Policy())  # type: ignore[arg-type]
        first = endpoints.endpointForURI(uri("https://api.example/x"))
        again = endpoints.endpointForURI(uri("https://api.example/y"))
        self.assertIs(first, again)
        self.assertNotIsInstance(first, HostnameEndpoint)
        self.assertEqual(asked, [(b"api.example", 443)])

    def test_other_scheme(self) -> None:
        "Only http and https."
        self.assertRaises(
            SchemeNotSupported, self.endpoints.endpointForURI, uri("ftp://127.0.0.1/")
        )


class FakeAgent:
    """
    Records requests; each answers with a Deferred the test fires.
    """

    def __init__(self) -> None:
        self.requests: list[tuple[bytes, bytes, Headers, Any, Deferred[Any]]] = []

    def request(
        self, method: bytes, uri: bytes, headers: Optional[Headers] = None, bodyProducer: Any = None
    ) -> "Deferred[Any]":
        d: Deferred[Any] = Deferred()
        self.requests.append((method, uri, headers, bodyProducer, d))  # type: ignore[arg-type]
        return d


class AgentHTTPTests(SynchronousTestCase):
    """
    treq's request keywords, on an agent.
    """

    def setUp(self) -> None:
        self.agent = FakeAgent()
        self.http = AgentHTTP(self.agent)  # type: ignore[arg-type]
        self.clock = Clock()

    def test_request(self) -> None:
        "Method and URL as bytes, the headers as Headers, no body."
        d = self.http.request(
            "GET", "http://127.0.0.1:1/p/a%20b", headers={b"Accept": [b"application/json"]},
            timeout=2.0, reactor=self.clock,
        )
        [(method, url, headers, body, answer)] = self.agent.requests
        self.assertEqual((method, url, body), (b"GET", b"http://127.0.0.1:1/p/a%20b", None))
        self.assertEqual(headers.getRawHeaders(b"accept"), [b"application/json"])
        answer.callback("response")
        self.assertEqual(self.successResultOf(d), "response")

    def test_body(self) -> None:
        "A body goes as a producer of known length."
        self.http.request("POST", "http://127.0.0.1:1/", data=b"{}", reactor=self.clock)
        [(_, _, _, body, _)] = self.agent.requests
        self.assertEqual(body.length, 2)

    def test_timeout(self) -> None:
        "No response headers within the timeout: the request is cancelled."
        d = self.http.request("GET", "http://127.0.0.1:1/", timeout=2.0, reactor=self.clock)
        self.clock.advance(1.9)
        self.assertNoResult(d)
        self.clock.advance(0.1)
        self.failureResultOf(d, CancelledError)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_answered(self) -> None:
        "An answer in time stops the timer."
        d = self.http.request("GET", "http://127.0.0.1:1/", timeout=2.0, reactor=self.clock)
        self.agent.requests[0][4].callback("response")
        self.successResultOf(d)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_no_timeout(self) -> None:
        "No timeout, no timer."
        self.http.request("GET", "http://127.0.0.1:1/", reactor=self.clock)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_redirects_and_buffering_refused(self) -> None:
        "What it does not do is refused, not ignored."
        self.assertRaises(
            ValueError, self.http.request, "GET", "http://h/", allow_redirects=True
        )
        self.assertRaises(ValueError, self.http.request, "GET", "http://h/", unbuffered=False)


class Profiles(Resource):
    """
    The profile endpoint and the External Contacts lookup of a tiny
    platform, recording what they get.
    """

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[bytes, bytes, Optional[bytes], bytes]] = []
        self.peers: set[int] = set()

    def render(self, request: Request) -> bytes:
        auth = request.getHeader(b"authorization")
        body = request.content.read()
        self.seen.append((request.method, request.uri, auth, body))
        self.peers.add(request.getClientAddress().port)
        request.setHeader(b"content-type", b"application/json")
        if request.uri.endswith(b"/nobody"):
            request.setResponseCode(404)
            return b"{}"
        if request.method == b"POST":
            value = json.loads(body)["value"]
            return json.dumps({"id": "c1", "customFields": {"value": value}}).encode()
        return json.dumps({"id": "p1", "attributes": {"tier": "gold"}}).encode()


class Tokens:
    def get_token(self) -> "Deferred[str]":
        return succeed("tok")

    def invalidate(self, token: str) -> None:
        pass


class LoopbackTests(TestCase):
    """
    The profile clients through AgentHTTP, against a real server on
    127.0.0.1, on a persistent pool.
    """

    timeout = 10

    @inlineCallbacks
    def setUp(self) -> Any:
        self.resource = Profiles()
        port = yield TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
            Site(self.resource)
        )
        self.addCleanup(port.stopListening)
        self.api = f"http://127.0.0.1:{port.getHost().port}"
        pool = HTTPConnectionPool(reactor, persistent=True)
        self.addCleanup(pool.closeCachedConnections)
        self.http = AgentHTTP(
            Agent.usingEndpointFactory(reactor, CachedEndpoints(reactor), pool=pool)
        )

    @inlineCallbacks
    def test_profiles(self) -> Any:
        "Found and not found, the token sent, one kept-alive connection."
        client = ProfileClient(reactor, self.http, self.api, Tokens())
        profile = yield client.lookup("CRM 1")
        self.assertIsInstance(profile, Profile)
        self.assertEqual(dict(profile.attributes), {"tier": "gold"})
        nobody = yield client.lookup("nobody")
        self.assertIsNone(nobody)
        self.assertEqual(
            [(m, u, a) for m, u, a, _ in self.resource.seen],
            [
                (b"GET", b"/api/v2/profiles/external/CRM%201", b"Bearer tok"),
                (b"GET", b"/api/v2/profiles/external/nobody", b"Bearer tok"),
            ],
        )
        self.assertEqual(len(self.resource.peers), 1)

    @inlineCallbacks
    def test_external_contacts(self) -> Any:
        "The POST and its JSON body."
        client = ExternalContactsClient(reactor, self.http, self.api, Tokens())
        profile = yield client.lookup("+15550100")
        self.assertEqual(dict(profile.attributes), {"value": "+15550100"})
        [(method, _, _, body)] = self.resource.seen
        self.assertEqual(method, b"POST")
        self.assertEqual(json.loads(body), {"type": "Phone", "value": "+15550100"})


class _Transport:
    aborted = False

    def abortConnection(self) -> None:
        self.aborted = True


class _SilentResponse:
    """
    Response headers whose body never comes.
    """

    code = 200
    length = 10
    headers = Headers({})

    def __init__(self) -> None:
        self.transport = _Transport()

    def deliverBody(self, protocol: Any) -> None:
        protocol.makeConnection(self.transport)


class _HeadersThenNothing:
    def __init__(self) -> None:
        self.response = _SilentResponse()
        self.requests: list[Deferred[Any]] = []

    def request(self, method: str, url: str, **options: Any) -> "Deferred[Any]":
        self.requests.append(Deferred())
        return self.requests[-1]


class FetchCancelTests(SynchronousTestCase):
    """
    Cancelling a lookup stops the step in progress, whichever it is, and
    leaves nothing on the clock.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.http = _HeadersThenNothing()
        self.client = ProfileClient(self.clock, self.http, "http://127.0.0.1:1", Tokens())

    def test_cancel_while_reading_body(self) -> None:
        "Cancelled while the body is awaited: the connection is dropped, no timer left."
        d = self.client.lookup("CRM-1")
        self.http.requests[0].callback(self.http.response)
        self.assertNoResult(d)
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.assertTrue(self.http.response.transport.aborted)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual((self.client.stats.errors, self.client.stats.requests), (0, 1))

    def test_body_timeout_retried(self) -> None:
        "A body that never comes is retried after its timeout, then given up."
        d = self.client.fetch("CRM-1", None)
        for _ in range(3):
            self.http.requests[-1].callback(self.http.response)
            self.clock.advance(2.0)
            self.clock.advance(1.0)
        error = self.failureResultOf(d).value
        self.assertIn("gave up after 3 attempts", str(error))
        self.assertEqual(self.clock.getDelayedCalls(), [])
