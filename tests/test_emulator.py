"""
Tests for the platform emulator (``ivrproto.emulator``): the token endpoint,
the profile API, the Call Control WebSocket with its scripted callers,
scenarios, ``place_calls`` and the ``twistd`` plugin.

Most tests run over real loopback sockets (the emulator is what integration
tests run against, so it is tested the way it is used); the caller script
logic and the delays are tested with a ``Clock``.
"""

from __future__ import annotations

import io
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any, Optional
from urllib.parse import quote

import attrs
from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from treq.client import HTTPClient
from treq.testing import StubTreq
from twisted.internet import reactor
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, serverFromString
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python import usage
from twisted.test.iosim import FakeTransport
from twisted.test.iosim import connect as iosim_connect
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.resource import Resource
from twisted.web.server import Site

from ivrproto._autobahn import ReactorTimer
from ivrproto.callcontrol.connect import CallControlFactory
from ivrproto.emulator import (
    CallLog,
    CallSpec,
    Platform,
    Scenario,
    load_scenario,
    parse_scenario,
    parse_step,
    accept_calls_by_hand,
    place_calls,
)
from ivrproto.emulator.callcontrol import CallControlServerFactory
from ivrproto.emulator.script import PROMPT_SETTLE, parse_script
from ivrproto.emulator.scripted import ScriptedCall, check_command
from ivrproto.emulator.site import ConnectionTracker, FirstRequestRouter
from ivrproto.emulator.tap import EmulatorService, Options, makeService
from ivrproto.errors import ConfigError
from ivrproto.testing import URL, RecordingListener

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "emulator.toml"

CLIENT = ("ivrproto-local", "local-secret")
PROFILES = {
    "CRM-PREMIUM-TICKETS": {"membership_level": "premium", "open_tickets": 2},
    "CRM/EU 42": {"membership_level": "standard", "open_tickets": 1},
}
AUDIO = "https://example.com/ivr/audio/"
HELLO = {"media": "audio", "capabilities": ["play", "dtmf", "transfer", "hangup"]}


def temporary_directory(test: SynchronousTestCase) -> Path:
    """
    A new directory, removed after the test (``mktemp`` would write into the
    working directory when pytest runs the tests).
    """
    directory = Path(tempfile.mkdtemp(prefix="ivrproto-emulator-"))
    test.addCleanup(shutil.rmtree, directory, True)
    return directory


def menu_play(call_id: str, prompt: str, keys: list[str]) -> dict[str, Any]:
    return {
        "callControlId": call_id,
        "action": "play",
        "audio": AUDIO + prompt,
        "dtmf": {"enabled": True, "keys": keys},
    }


def confirm_play(call_id: str) -> dict[str, Any]:
    return {
        "callControlId": call_id,
        "action": "play",
        "audio": AUDIO + "selection_confirmed.mp3",
        "dtmf": {"enabled": False},
    }


def transfer(call_id: str, target: str = "ext:transfer_premium") -> dict[str, Any]:
    return {"callControlId": call_id, "action": "transfer", "target": target, "type": "number"}


class UpgradeRefused(Exception):
    """
    The test client's WebSocket upgrade did not succeed.
    """


class _TestClient(WebSocketClientProtocol):
    """
    A WebSocket client that keeps every frame it receives.
    """

    def __init__(self) -> None:
        super().__init__()
        self.received: list[Any] = []
        self._read = 0
        self._waiting: list[Deferred[Any]] = []
        self.opened: Deferred[_TestClient] = Deferred()
        self.closed: Deferred[Optional[int]] = Deferred()
        self.close_code: Optional[int] = None
        self.close_reason: Optional[str] = None

    def onOpen(self) -> None:
        self.opened.callback(self)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        if isBinary:
            self.received.append(("binary", payload))
        else:
            try:
                self.received.append(json.loads(payload))
            except ValueError:
                self.received.append(("text", payload))
        self._deliver()

    def onClose(self, wasClean: bool, code: Optional[int], reason: Optional[str]) -> None:
        if self.closeHandshakeTimeoutCall is not None:
            self.closeHandshakeTimeoutCall.cancel()
            self.closeHandshakeTimeoutCall = None
        self.close_code = code
        self.close_reason = reason
        if not self.opened.called:
            self.opened.errback(UpgradeRefused(reason))
        self._deliver()
        if not self.closed.called:
            self.closed.callback(code)

    def _deliver(self) -> None:
        while self._waiting and self._read < len(self.received):
            self._read += 1
            self._waiting.pop(0).callback(self.received[self._read - 1])
        if self.closed.called or self.close_code is not None:
            while self._waiting:
                self._waiting.pop(0).errback(ConnectionError("closed"))

    def receive(self) -> Deferred[Any]:
        """
        :return: the next frame not yet read
        """
        d: Deferred[Any] = Deferred()
        self._waiting.append(d)
        self._deliver()
        return d

    def send_json(self, value: Any) -> None:
        self.sendMessage(json.dumps(value).encode("utf-8"), isBinary=False)


class EmulatorTestCase(TestCase):
    """
    A running platform on a loopback port, an HTTP client and WebSocket
    clients, all cleaned up after the test.
    """

    timeout = 15

    async def start(self, **kwargs: Any) -> Platform:
        kwargs.setdefault("profiles", PROFILES)
        platform = Platform(reactor, **kwargs)
        await platform.listen()
        self.addCleanup(platform.stop)
        pool = HTTPConnectionPool(reactor, persistent=True)
        self.addCleanup(pool.closeCachedConnections)
        self.http = HTTPClient(Agent(reactor, pool=pool))
        self.clients: list[_TestClient] = []
        self.addCleanup(self._close_clients)
        return platform

    async def _close_clients(self) -> None:
        for client in self.clients:
            if not client.closed.called:
                client.transport.abortConnection()
            await client.closed

    async def token(self, platform: Platform, **form: str) -> dict[str, Any]:
        form.setdefault("grant_type", "client_credentials")
        response = await self.http.post(
            platform.base_url + "/oauth/token", data=form, auth=CLIENT
        )
        self.assertEqual(response.code, 200)
        body: dict[str, Any] = await response.json()
        return body

    async def connect(self, platform: Platform, token: Optional[str]) -> _TestClient:
        headers = {} if token is None else {"Authorization": f"Bearer {token}"}
        factory = WebSocketClientFactory(platform.ws_url, headers=headers, reactor=reactor)
        factory.protocol = _TestClient
        factory.setProtocolOptions(openHandshakeTimeout=5, closeHandshakeTimeout=5)
        port = int(platform.base_url.rsplit(":", 1)[1])
        client = await TCP4ClientEndpoint(reactor, "127.0.0.1", port).connect(factory)
        self.clients.append(client)
        await client.opened
        return client

    async def open_call(
        self,
        platform: Platform,
        call_id: str = "call-1",
        script: tuple[str, ...] = (),
        external_id: str = "CRM-PREMIUM-TICKETS",
    ) -> tuple[_TestClient, CallLog]:
        record = platform.expect_call(call_id, external_id, script)
        client = await self.connect(platform, platform.issue_token())
        client.send_json(dict(HELLO, callControlId=call_id))
        connected = await client.receive()
        self.assertEqual(connected["event"], "connected")
        return client, record


class TokenTests(EmulatorTestCase):
    """
    ``POST /oauth/token``.
    """

    async def test_basic_auth(self) -> None:
        """A client authenticated by HTTP Basic gets a bearer token."""
        platform = await self.start(token_ttl=120)
        response = await self.http.post(
            platform.base_url + "/oauth/token",
            data={"grant_type": "client_credentials", "scope": "profile:read callcontrol:inbound callcontrol:media"},
            auth=CLIENT,
        )
        self.assertEqual(response.code, 200)
        self.assertEqual(response.headers.getRawHeaders("cache-control"), ["no-store"])
        body = await response.json()
        self.assertEqual(set(body), {"access_token", "token_type", "expires_in"})
        self.assertEqual(body["token_type"], "bearer")
        self.assertEqual(body["expires_in"], 120)
        self.assertEqual((platform.stats.token_requests, platform.stats.tokens_issued), (1, 1))

    async def test_body_auth(self) -> None:
        """client_id and client_secret in the form body authenticate too."""
        platform = await self.start()
        response = await self.http.post(
            platform.base_url + "/oauth/token",
            data={
                "grant_type": "client_credentials",
                "client_id": CLIENT[0],
                "client_secret": CLIENT[1],
            },
        )
        self.assertEqual(response.code, 200)
        body = await response.json()
        self.assertIsNone(platform._check_bearer(body["access_token"], ["profile:read"]))

    async def test_bad_secret(self) -> None:
        """A wrong secret, or no credentials at all, is 401 invalid_client."""
        platform = await self.start()
        for kwargs in (
            {"auth": (CLIENT[0], "wrong")},
            {"auth": ("nobody", CLIENT[1])},
            {},
        ):
            response = await self.http.post(
                platform.base_url + "/oauth/token",
                data={"grant_type": "client_credentials"},
                **kwargs,
            )
            self.assertEqual(response.code, 401)
            self.assertEqual((await response.json())["error"], "invalid_client")
        self.assertEqual(platform.stats.tokens_issued, 0)

    async def test_bad_grant(self) -> None:
        """Another grant type is unsupported_grant_type; none is invalid_request."""
        platform = await self.start()
        for form, error in (
            ({"grant_type": "password"}, "unsupported_grant_type"),
            ({}, "invalid_request"),
            ({"grant_type": "client_credentials", "scope": "admin"}, "invalid_scope"),
        ):
            response = await self.http.post(
                platform.base_url + "/oauth/token", data=form, auth=CLIENT
            )
            self.assertEqual(response.code, 400)
            self.assertEqual((await response.json())["error"], error)

    async def test_content_type(self) -> None:
        """A JSON body is invalid_request."""
        platform = await self.start()
        response = await self.http.post(
            platform.base_url + "/oauth/token",
            json={"grant_type": "client_credentials"},
            auth=CLIENT,
        )
        self.assertEqual(response.code, 400)
        self.assertEqual((await response.json())["error"], "invalid_request")

    async def test_client_scopes(self) -> None:
        """A client gets the allowed part of what it asks for (and says so), all by default."""
        platform = await self.start(client_scopes={CLIENT[0]: ["profile:read"]})
        body = await self.token(platform, scope="profile:read callcontrol:inbound callcontrol:media")
        self.assertEqual(body["scope"], "profile:read")
        token = body["access_token"]
        self.assertIsNone(platform._check_bearer(token, ["profile:read"]))
        self.assertEqual(platform._check_bearer(token, ["callcontrol:media"]), 403)
        self.assertNotIn("scope", await self.token(platform))
        response = await self.http.post(
            platform.base_url + "/oauth/token",
            data={"grant_type": "client_credentials", "scope": "callcontrol:media"},
            auth=CLIENT,
        )
        self.assertEqual(response.code, 400)
        self.assertEqual((await response.json())["error"], "invalid_scope")

    async def test_fault(self) -> None:
        """An injected 429 answers the next request, with its Retry-After."""
        platform = await self.start()
        platform.faults.add("token", status=429, headers={"Retry-After": "3"})
        response = await self.http.post(
            platform.base_url + "/oauth/token",
            data={"grant_type": "client_credentials"},
            auth=CLIENT,
        )
        self.assertEqual(response.code, 429)
        self.assertEqual(response.headers.getRawHeaders("retry-after"), ["3"])
        await response.content()
        await self.token(platform)

    async def test_get(self) -> None:
        """GET is not allowed on the token endpoint."""
        platform = await self.start()
        response = await self.http.get(platform.base_url + "/oauth/token")
        self.assertEqual(response.code, 405)
        await response.content()


class ProfileTests(EmulatorTestCase):
    """
    ``GET /api/v2/profiles/external/<id>``.
    """

    async def get(self, platform: Platform, segment: str, token: Optional[str]) -> Any:
        headers = {"Accept": "application/json"}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        return await self.http.get(
            platform.base_url + "/api/v2/profiles/external/" + segment, headers=headers
        )

    async def test_found(self) -> None:
        """A known profile is 200 with id, externalId, attributes, dateModified."""
        platform = await self.start()
        token = (await self.token(platform))["access_token"]
        response = await self.get(platform, "CRM-PREMIUM-TICKETS", token)
        self.assertEqual(response.code, 200)
        body = await response.json()
        self.assertEqual(body["externalId"], "CRM-PREMIUM-TICKETS")
        self.assertEqual(body["attributes"], PROFILES["CRM-PREMIUM-TICKETS"])
        self.assertIsInstance(body["dateModified"], str)
        again = await (await self.get(platform, "CRM-PREMIUM-TICKETS", token)).json()
        self.assertEqual(again["id"], body["id"])
        self.assertEqual(platform.stats.profile_requests, 2)

    async def test_not_found(self) -> None:
        """An unknown external id is a JSON 404."""
        platform = await self.start()
        response = await self.get(platform, "CRM-UNKNOWN", platform.issue_token())
        self.assertEqual(response.code, 404)
        self.assertEqual((await response.json())["status"], 404)

    async def test_encoded_id(self) -> None:
        """A percent-encoded slash and space stay inside the id; a raw slash does not."""
        platform = await self.start()
        token = platform.issue_token()
        response = await self.get(platform, quote("CRM/EU 42", safe=""), token)
        self.assertEqual(response.code, 200)
        self.assertEqual((await response.json())["externalId"], "CRM/EU 42")
        response = await self.get(platform, "CRM/EU%2042", token)
        self.assertEqual(response.code, 404)
        await response.content()

    async def test_unauthorized(self) -> None:
        """A missing, unknown, expired or revoked token is 401."""
        platform = await self.start()
        for token in (None, "nonsense", platform.issue_token(ttl=-1)):
            response = await self.get(platform, "CRM-PREMIUM-TICKETS", token)
            self.assertEqual(response.code, 401)
            await response.content()
        token = platform.issue_token()
        platform.revoke_tokens()
        response = await self.get(platform, "CRM-PREMIUM-TICKETS", token)
        self.assertEqual(response.code, 401)
        await response.content()

    async def test_forbidden(self) -> None:
        """A token without profile:read is 403."""
        platform = await self.start()
        token = platform.issue_token(scopes=["callcontrol:inbound", "callcontrol:media"])
        response = await self.get(platform, "CRM-PREMIUM-TICKETS", token)
        self.assertEqual(response.code, 403)
        await response.content()

    async def test_faults(self) -> None:
        """Faults answer the next requests in order, then requests are normal."""
        platform = await self.start()
        token = platform.issue_token()
        platform.faults.add("profile", status=429, headers={"Retry-After": "1"})
        platform.faults.add("profile", status=500, count=2)
        self.assertEqual(platform.faults.pending("profile"), 3)
        codes = []
        for _ in range(4):
            response = await self.get(platform, "CRM-PREMIUM-TICKETS", token)
            codes.append(response.code)
            if response.code == 429:
                self.assertEqual(response.headers.getRawHeaders("retry-after"), ["1"])
            await response.content()
        self.assertEqual(codes, [429, 500, 500, 200])

    async def test_no_answer(self) -> None:
        """status=0 aborts the connection without an answer."""
        platform = await self.start()
        platform.faults.add("profile", status=0)
        d = self.get(platform, "CRM-PREMIUM-TICKETS", platform.issue_token())
        with self.assertRaises(Exception):
            await d


class DelayedAnswerTests(SynchronousTestCase):
    """
    Delayed answers, with a Clock and an in-memory HTTP client.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.platform = Platform(self.clock, profiles=PROFILES)
        self.stub = StubTreq(self.platform.resource())
        self.url = "http://emulator/api/v2/profiles/external/CRM-PREMIUM-TICKETS"
        self.headers = {"Authorization": "Bearer " + self.platform.issue_token()}

    def test_normal_after_delay(self) -> None:
        """status=None with a delay answers normally, after the delay."""
        self.platform.faults.add("profile", delay=2.0)
        d = self.stub.get(self.url, headers=self.headers)
        self.stub.flush()
        self.assertNoResult(d)
        self.clock.advance(2.0)
        self.stub.flush()
        self.assertEqual(self.successResultOf(d).code, 200)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_fault_after_delay(self) -> None:
        """A fault with a delay answers its status after the delay."""
        self.platform.faults.add("profile", status=503, delay=1.0)
        d = self.stub.get(self.url, headers=self.headers)
        self.stub.flush()
        self.assertNoResult(d)
        self.clock.advance(1.0)
        self.stub.flush()
        self.assertEqual(self.successResultOf(d).code, 503)

    def test_stop_cancels(self) -> None:
        """stop() cancels the timer of a delayed answer."""
        self.platform.faults.add("token", status=500, delay=5.0)
        self.stub.post("http://emulator/oauth/token", data={"grant_type": "client_credentials"})
        self.stub.flush()
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.successResultOf(self.platform.stop())
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_bad_faults(self) -> None:
        """Faults of an unknown kind, a bad count or a bad status are refused."""
        for kwargs in (
            {"kind": "dns", "status": 500},
            {"kind": "token", "status": 500, "count": 0},
            {"kind": "token", "status": 99},
            {"kind": "websocket", "status": None},
        ):
            self.assertRaises(ValueError, self.platform.faults.add, **kwargs)


CONTACTS = "/api/v2/externalcontacts/identifierlookup/contacts"


class ContactsTests(EmulatorTestCase):
    """
    ``POST /api/v2/externalcontacts/identifierlookup/contacts``.
    """

    async def post(
        self, platform: Platform, body: Any, token: Optional[str], raw: Optional[bytes] = None
    ) -> Any:
        headers = {"Accept": "application/json", "Content-Type": "application/json"}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        data = raw if raw is not None else json.dumps(body).encode()
        return await self.http.post(platform.base_url + CONTACTS, data=data, headers=headers)

    async def test_found(self) -> None:
        """A known value is 200 with a stable id, customFields and modifiedDate."""
        platform = await self.start()
        token = (await self.token(platform))["access_token"]
        bodies = []
        for lookup_type in ("Phone", "ExternalId", "Email"):
            response = await self.post(platform, {"type": lookup_type, "value": "CRM/EU 42"}, token)
            self.assertEqual(response.code, 200)
            bodies.append(await response.json())
        self.assertEqual(bodies[0], bodies[1])
        self.assertEqual(bodies[0]["customFields"], PROFILES["CRM/EU 42"])
        self.assertIsInstance(bodies[0]["id"], str)
        self.assertIsInstance(bodies[0]["modifiedDate"], str)
        self.assertEqual(platform.stats.contact_requests, 3)
        self.assertEqual(platform.stats.profile_requests, 0)

    async def test_not_found(self) -> None:
        """An unknown value is a JSON 404."""
        platform = await self.start()
        response = await self.post(platform, {"type": "Phone", "value": "+15550000"}, platform.issue_token())
        self.assertEqual(response.code, 404)
        self.assertEqual((await response.json())["status"], 404)

    async def test_unauthorized_and_forbidden(self) -> None:
        """No or a bad token is 401; a token without profile:read is 403."""
        platform = await self.start()
        body = {"type": "Phone", "value": "CRM-PREMIUM-TICKETS"}
        for token in (None, "nonsense", platform.issue_token(ttl=-1)):
            response = await self.post(platform, body, token)
            self.assertEqual(response.code, 401)
            await response.content()
        token = platform.issue_token(scopes=["callcontrol:inbound", "callcontrol:media"])
        response = await self.post(platform, body, token)
        self.assertEqual(response.code, 403)
        await response.content()

    async def test_bad_requests(self) -> None:
        """A body that is not {type, value} is 400; GET is 405."""
        platform = await self.start()
        token = platform.issue_token()
        for body in (
            [1],
            {"value": "CRM-PLAIN"},
            {"type": "Fax", "value": "CRM-PLAIN"},
            {"type": "Phone"},
            {"type": "Phone", "value": 42},
            {"type": "Phone", "value": ""},
        ):
            response = await self.post(platform, body, token)
            self.assertEqual(response.code, 400, body)
            await response.content()
        response = await self.post(platform, None, token, raw=b"{not json")
        self.assertEqual(response.code, 400)
        await response.content()
        response = await self.http.get(
            platform.base_url + CONTACTS, headers={"Authorization": f"Bearer {token}"}
        )
        self.assertEqual(response.code, 405)
        await response.content()

    async def test_faults_are_their_own_kind(self) -> None:
        """"contacts" faults answer contact lookups only; "profile" faults do not touch them."""
        platform = await self.start()
        token = platform.issue_token()
        platform.faults.add("profile", status=500)
        platform.faults.add("contacts", status=503, count=2)
        body = {"type": "ExternalId", "value": "CRM-PREMIUM-TICKETS"}
        codes = []
        for _ in range(3):
            response = await self.post(platform, body, token)
            codes.append(response.code)
            await response.content()
        self.assertEqual(codes, [503, 503, 200])
        self.assertEqual(platform.faults.pending("profile"), 1)
        self.assertEqual(platform.faults.injected["contacts"], 2)

    async def test_dropped_connection(self) -> None:
        """A contacts fault with status 0 aborts the connection."""
        platform = await self.start()
        platform.faults.add("contacts", status=0)
        d = self.post(platform, {"type": "Phone", "value": "CRM-PLAIN"}, platform.issue_token())
        with self.assertRaises(Exception):
            await d


class FaultFormTests(SynchronousTestCase):
    """
    Every fault form, with a Clock and an in-memory HTTP client.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1_700_000_000)
        self.platform = Platform(self.clock, profiles=PROFILES)
        self.stub = StubTreq(self.platform.resource())
        self.token = self.platform.issue_token()
        self.addCleanup(self.assert_no_timers)

    def assert_no_timers(self) -> None:
        self.stub.flush()
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def request(self, kind: str) -> Any:
        """One request of ``kind``; its response (body read)."""
        bearer = {"Authorization": "Bearer " + self.token}
        if kind == "token":
            d = self.stub.post(
                "http://emulator/oauth/token",
                data={"grant_type": "client_credentials"},
                auth=CLIENT,
            )
        elif kind == "profile":
            d = self.stub.get(
                "http://emulator/api/v2/profiles/external/CRM-PREMIUM-TICKETS", headers=bearer
            )
        else:
            d = self.stub.post(
                "http://emulator" + CONTACTS,
                json={"type": "ExternalId", "value": "CRM-PREMIUM-TICKETS"},
                headers=bearer,
            )
        self.stub.flush()
        response = self.successResultOf(d)
        body = self.stub.content(response)
        self.stub.flush()
        response.body = self.successResultOf(body)
        return response

    def test_retry_after_seconds(self) -> None:
        """retry_after writes delay-seconds, rounded up."""
        for kind in ("token", "profile", "contacts"):
            self.platform.faults.add(kind, 429, retry_after=2.5)
            response = self.request(kind)
            self.assertEqual(response.code, 429)
            self.assertEqual(response.headers.getRawHeaders("retry-after"), ["3"])

    def test_retry_after_http_date(self) -> None:
        """retry_after_date writes an HTTP-date, from the time of the answer."""
        self.platform.faults.add("profile", 429, retry_after=7, retry_after_date=True)
        self.platform.faults.add("token", 429, retry_after=7, retry_after_date=True, delay=3)
        response = self.request("profile")
        self.assertEqual(
            response.headers.getRawHeaders("retry-after"), ["Tue, 14 Nov 2023 22:13:27 GMT"]
        )
        d = self.stub.post("http://emulator/oauth/token", data={"grant_type": "client_credentials"}, auth=CLIENT)
        self.stub.flush()
        self.clock.advance(3)
        self.stub.flush()
        response = self.successResultOf(d)
        self.assertEqual(
            response.headers.getRawHeaders("retry-after"), ["Tue, 14 Nov 2023 22:13:30 GMT"]
        )
        self.stub.flush()

    def test_token_400_is_rate_limit(self) -> None:
        """A token 400 without a body is Genesys's rate-limit answer; a 401 is invalid_client."""
        self.platform.faults.add("token", 400, retry_after=1)
        self.platform.faults.add("token", 401)
        response = self.request("token")
        self.assertEqual(response.code, 400)
        self.assertEqual(
            json.loads(response.body),
            {"error": "invalid_request", "error_description": "rate limit exceeded"},
        )
        self.assertEqual(response.headers.getRawHeaders("retry-after"), ["1"])
        response = self.request("token")
        self.assertEqual((response.code, json.loads(response.body)["error"]), (401, "invalid_client"))
        self.assertEqual(self.request("token").code, 200)

    def test_5xx_and_headers(self) -> None:
        """A 5xx fault with its own body and headers."""
        self.platform.faults.add("contacts", 502, headers={"X-Test": "1"}, body="upstream down")
        response = self.request("contacts")
        self.assertEqual((response.code, response.body), (502, b"upstream down"))
        self.assertEqual(response.headers.getRawHeaders("x-test"), ["1"])

    def test_slow_contacts(self) -> None:
        """A contacts fault with a delay and no status answers normally, late."""
        self.platform.faults.add("contacts", delay=2.0)
        d = self.stub.post(
            "http://emulator" + CONTACTS,
            json={"type": "Phone", "value": "CRM-PREMIUM-TICKETS"},
            headers={"Authorization": "Bearer " + self.token},
        )
        self.stub.flush()
        self.assertNoResult(d)
        self.clock.advance(2.0)
        self.stub.flush()
        self.assertEqual(self.successResultOf(d).code, 200)

    def test_failure_rate_deterministic(self) -> None:
        """A seeded failure rate fails the same requests on every run, about rate of them."""

        def run() -> list[int]:
            platform = Platform(self.clock, profiles=PROFILES)
            self.platform, self.stub = platform, StubTreq(platform.resource())
            self.token = platform.issue_token()
            platform.faults.set_failure_rate("profile", 0.25, 503, seed=42)
            return [self.request("profile").code for _ in range(400)]

        first, second = run(), run()
        self.assertEqual(first, second)
        self.assertEqual(set(first), {200, 503})
        self.assertTrue(70 <= first.count(503) <= 130, first.count(503))
        self.assertEqual(self.platform.faults.injected["profile"], first.count(503))
        self.assertEqual(self.platform.faults.failure_rate("profile"), 0.25)

    def test_failure_rate_forms(self) -> None:
        """Rate 1 fails every request, with any fault form; queued faults go first; 0 turns it off."""
        faults = self.platform.faults
        faults.set_failure_rate("token", 1.0, 429, seed=1, retry_after=5, retry_after_date=True)
        faults.add("token", 500)
        self.assertEqual(self.request("token").code, 500)
        response = self.request("token")
        self.assertEqual(response.code, 429)
        self.assertEqual(response.headers.getRawHeaders("retry-after"), ["Tue, 14 Nov 2023 22:13:25 GMT"])
        self.assertEqual(faults.pending("token"), 0)
        self.assertIsNone(faults.set_failure_rate("token", 0))
        self.assertEqual(self.request("token").code, 200)
        faults.set_failure_rate("contacts", 1.0, None, delay=1.0)
        faults.set_failure_rate("profile", 1.0)
        faults.clear()
        self.assertEqual(faults.failure_rate("profile"), 0.0)
        self.assertEqual(self.request("profile").code, 200)

    def test_websocket_failure_rate(self) -> None:
        """Upgrades can be refused at a rate too; they take only a status."""
        faults = self.platform.faults
        faults.set_failure_rate("websocket", 1.0, 503, seed=0)
        self.assertEqual(faults._take_refusal("websocket"), 503)
        self.assertRaises(ValueError, faults.set_failure_rate, "websocket", 0.5, 503, delay=1)

    def test_bad_settings(self) -> None:
        """Bad rates, statuses, kinds and Retry-After values are refused."""
        faults = self.platform.faults
        for args, kwargs in (
            (("profile", 1.5), {}),
            (("profile", -0.1), {}),
            (("profile", 0.5, 99), {}),
            (("dns", 0.5), {}),
            (("profile", 0.5), {"delay": -1}),
            (("profile", 0.5), {"retry_after": -1}),
        ):
            self.assertRaises(ValueError, faults.set_failure_rate, *args, **kwargs)
        self.assertRaises(ValueError, faults.add, "websocket", 503, retry_after=1)
        self.assertRaises(ValueError, faults.add, "profile", 429, retry_after=float("nan"))


class UpgradeTests(EmulatorTestCase):
    """
    The WebSocket upgrade and the handshake frame.
    """

    async def test_unauthorized(self) -> None:
        """An upgrade without a valid token is refused with 401."""
        platform = await self.start()
        for token in (None, "nonsense", platform.issue_token(ttl=-1)):
            with self.assertRaises(UpgradeRefused) as caught:
                await self.connect(platform, token)
            self.assertIn("[401]", str(caught.exception))
        self.assertEqual((platform.stats.ws_refused, platform.stats.ws_upgrades), (3, 0))

    async def test_forbidden(self) -> None:
        """A token without callcontrol:media is refused with 403."""
        platform = await self.start()
        token = platform.issue_token(scopes=["profile:read", "callcontrol:inbound"])
        with self.assertRaises(UpgradeRefused) as caught:
            await self.connect(platform, token)
        self.assertIn("[403]", str(caught.exception))

    async def test_fault(self) -> None:
        """A websocket fault refuses the next upgrade with its status."""
        platform = await self.start()
        platform.faults.add("websocket", status=503)
        with self.assertRaises(UpgradeRefused) as caught:
            await self.connect(platform, platform.issue_token())
        self.assertIn("[503]", str(caught.exception))
        await self.connect(platform, platform.issue_token())

    async def test_bad_first_frames(self) -> None:
        """Each malformed first frame is closed with 1008 and no event."""
        platform = await self.start()
        record = platform.expect_call("call-1", "CRM-PREMIUM-TICKETS")
        good = dict(HELLO, callControlId="call-1")
        frames: list[bytes] = [
            b"not json",
            b"[1, 2]",
            json.dumps({k: v for k, v in good.items() if k != "callControlId"}).encode(),
            json.dumps(dict(good, callControlId=42)).encode(),
            json.dumps({k: v for k, v in good.items() if k != "capabilities"}).encode(),
            json.dumps(dict(good, capabilities=[])).encode(),
            json.dumps(dict(good, capabilities="play")).encode(),
            json.dumps(dict(good, capabilities=["play", "video"])).encode(),
            json.dumps({k: v for k, v in good.items() if k != "media"}).encode(),
            json.dumps(dict(good, media="video")).encode(),
        ]
        for frame in frames:
            client = await self.connect(platform, platform.issue_token())
            client.sendMessage(frame, isBinary=False)
            code = await client.closed
            self.assertEqual((code, client.received), (1008, []), frame)
        self.assertFalse(record.connected)
        self.assertIsNone(record.outcome)
        client = await self.connect(platform, platform.issue_token())
        client.send_json(dict(good, capabilities=["play", "record", "dtmf", "transfer", "hangup"]))
        self.assertEqual((await client.receive())["event"], "connected")

    async def test_unknown_call(self) -> None:
        """An unknown call id gets an error event, then a 1008 close."""
        platform = await self.start()
        client = await self.connect(platform, platform.issue_token())
        client.send_json(dict(HELLO, callControlId="call-nobody"))
        self.assertEqual(
            await client.receive(),
            {"event": "error", "message": "no active call with that id"},
        )
        self.assertEqual(await client.closed, 1008)

    async def test_already_connected(self) -> None:
        """A second connection for a live call is refused like an unknown one."""
        platform = await self.start()
        first, record = await self.open_call(platform)
        second = await self.connect(platform, platform.issue_token())
        second.send_json(dict(HELLO, callControlId="call-1"))
        self.assertEqual((await second.receive())["event"], "error")
        self.assertEqual(await second.closed, 1008)
        self.assertIsNone(record.outcome)
        self.assertEqual(platform.stats.calls_connected, 1)

    async def test_handshake_error(self) -> None:
        """handshake="error" refuses a known call: error event, 1008, outcome refused."""
        platform = await self.start()
        record = platform.expect_call("call-1", "CRM-PLAIN", handshake="error")
        client = await self.connect(platform, platform.issue_token())
        client.send_json(dict(HELLO, callControlId="call-1"))
        self.assertEqual((await client.receive())["event"], "error")
        self.assertEqual(await client.closed, 1008)
        finished = await record.when_finished()
        self.assertIs(finished, record)
        self.assertEqual((record.outcome, record.close_code), ("refused", 1008))
        self.assertFalse(record.connected)

    async def test_connected(self) -> None:
        """A valid handshake for an expected call is answered with connected; the token is never logged."""
        from twisted.logger import formatEvent, globalLogPublisher

        logged: list[str] = []

        def observe(event: dict[str, Any]) -> None:
            logged.append(repr(event) + (formatEvent(event) or ""))

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)
        platform = await self.start()
        record = platform.expect_call("call-1", "CRM-PREMIUM-TICKETS")
        token = platform.issue_token()
        client = await self.connect(platform, token)
        client.send_json(dict(HELLO, callControlId="call-1"))
        connected = await client.receive()
        self.assertEqual(connected["event"], "connected")
        self.assertEqual(connected["callControlId"], "call-1")
        self.assertEqual(connected["session"]["media"], "audio")
        self.assertIsInstance(connected["session"]["id"], str)
        self.assertTrue(record.connected)
        self.assertIsNotNone(record.connected_at)
        self.assertEqual(platform.stats.ws_upgrades, 1)
        client.send_json(dict(HELLO, callControlId="call-1"))
        self.assertEqual((await client.receive())["code"], "invalid_command")
        self.assertEqual(record.violations, ["command without action"])
        self.assertFalse([line for line in logged if token in line])


class CallTests(EmulatorTestCase):
    """
    Live calls: commands, the caller scripts, and how calls end.
    """

    async def test_seed_flow(self) -> None:
        """Menu, key 1, confirmation, transfer: all recorded, no violations."""
        platform = await self.start()
        client, record = await self.open_call(platform, script=("menu", "press:1", "play"))
        keys = ["1", "2", "0"]
        for prompt in ("premium_priority.mp3", "ticket_status.mp3", "general_operator.mp3"):
            client.send_json(menu_play("call-1", prompt, keys))
        self.assertEqual(await client.receive(), {"event": "dtmf", "digit": "1"})
        client.send_json(confirm_play("call-1"))
        client.send_json(transfer("call-1"))
        client.sendClose(1000)
        await record.when_finished()
        self.assertEqual(record.outcome, "transferred")
        self.assertEqual(record.transfer_target, "ext:transfer_premium")
        self.assertEqual(record.keys_pressed, ["1"])
        self.assertEqual(len(record.plays), 4)
        self.assertEqual(record.plays[-1], AUDIO + "selection_confirmed.mp3")
        self.assertEqual(len(record.commands), 5)
        self.assertEqual(record.violations, [])
        self.assertEqual(record.close_code, 1000)
        self.assertLessEqual(record.first_play_at, record.transfer_at)
        self.assertLessEqual(record.transfer_at, record.ended_at)
        await client.closed

    async def test_close_after_transfer(self) -> None:
        """The server closes 1000 after close_after_transfer; later commands are violations."""
        platform = await self.start(close_after_transfer=0.05)
        client, record = await self.open_call(platform)
        client.send_json(transfer("call-1"))
        client.send_json(transfer("call-1", "ext:other"))
        self.assertEqual((await client.receive())["code"], "invalid_command")
        self.assertEqual(await client.closed, 1000)
        await record.when_finished()
        self.assertEqual((record.outcome, record.transfer_target), ("transferred", "ext:transfer_premium"))
        self.assertEqual(record.violations, ["transfer command after the call ended"])
        self.assertEqual(record.close_code, 1000)

    async def test_violations(self) -> None:
        """Each bad command is recorded and answered with invalid_command; the call goes on."""
        platform = await self.start()
        client, record = await self.open_call(platform)
        good = menu_play("call-1", "x.mp3", ["1"])
        bad: list[Any] = [
            {k: v for k, v in good.items() if k != "callControlId"},
            dict(good, callControlId="call-2"),
            dict(good, action="dance"),
            {"callControlId": "call-1"},
            dict(good, audio="/relative.mp3"),
            dict(good, audio="ftp://example.com/a.mp3"),
            {k: v for k, v in good.items() if k != "dtmf"},
            dict(good, dtmf={"enabled": "yes"}),
            dict(good, dtmf={"enabled": True, "keys": []}),
            dict(good, dtmf={"enabled": True, "keys": ["12"]}),
            dict(transfer("call-1"), type="queue"),
            dict(transfer("call-1"), target=5),
            [1, 2],
        ]
        for command in bad:
            client.send_json(command)
            error = await client.receive()
            self.assertEqual((error["event"], error["code"]), ("error", "invalid_command"), command)
        client.sendMessage(b"{not json", isBinary=False)
        self.assertEqual((await client.receive())["code"], "invalid_command")
        client.sendMessage(b"\x00binary", isBinary=True)
        client.send_json(confirm_play("call-1"))
        client.send_json({"callControlId": "call-1", "action": "hangup"})
        self.assertEqual(await client.closed, 1000)
        await record.when_finished()
        self.assertEqual(len(record.violations), len(bad) + 1)
        self.assertEqual(len(record.commands), len(bad) - 1 + 2)
        self.assertEqual(record.plays, [AUDIO + "selection_confirmed.mp3"])
        self.assertEqual(record.outcome, "hungup-by-client")

    async def test_caller_hangup(self) -> None:
        """The hangup step sends a hangup event and closes 1000."""
        platform = await self.start()
        client, record = await self.open_call(platform, script=("hangup",))
        self.assertEqual(await client.receive(), {"event": "hangup", "reason": "caller"})
        self.assertEqual(await client.closed, 1000)
        await record.when_finished()
        self.assertEqual((record.outcome, record.close_code), ("hungup-by-caller", 1000))

    async def test_drop(self) -> None:
        """The drop step closes with 1011."""
        platform = await self.start()
        client, record = await self.open_call(platform, script=("drop",))
        self.assertEqual(await client.closed, 1011)
        await record.when_finished()
        self.assertEqual((record.outcome, record.close_code), ("dropped", 1011))

    async def test_odd_frames(self) -> None:
        """error, media, unknown, garbage, binary and odd digits are sent as scripted."""
        platform = await self.start()
        client, record = await self.open_call(
            platform,
            script=("error:boom", "media", "unknown", "garbage", "binary", "wait:0.01", "press:x", "hangup"),
        )
        received = [await client.receive() for _ in range(7)]
        self.assertEqual(
            received,
            [
                {"event": "error", "message": "boom"},
                {"event": "media", "payload": "AAAA"},
                {"event": "surprise", "x": 1},
                ("text", b"this is not json {"),
                ("binary", b"\x00\x01\x02\xff"),
                {"event": "dtmf", "digit": "x"},
                {"event": "hangup", "reason": "caller"},
            ],
        )
        await record.when_finished()
        self.assertEqual(record.keys_pressed, ["x"])

    async def test_early_menu(self) -> None:
        """A menu sent together with the handshake still satisfies the menu step."""
        platform = await self.start()
        record = platform.expect_call("call-1", "CRM-PLAIN", ["menu", "press:0"])
        client = await self.connect(platform, platform.issue_token())
        client.send_json(dict(HELLO, callControlId="call-1"))
        client.send_json(menu_play("call-1", "general_operator.mp3", ["0"]))
        self.assertEqual((await client.receive())["event"], "connected")
        self.assertEqual(await client.receive(), {"event": "dtmf", "digit": "0"})
        self.assertEqual(record.plays, [AUDIO + "general_operator.mp3"])

    async def test_client_close(self) -> None:
        """A client that closes without transfer or hangup leaves outcome closed."""
        platform = await self.start()
        client, record = await self.open_call(platform, script=("menu",))
        client.sendClose(1000)
        await client.closed
        await record.when_finished()
        self.assertEqual((record.outcome, record.close_code), ("closed", 1000))

    async def test_stop_aborts(self) -> None:
        """stop() aborts live calls and stops listening."""
        platform = await self.start()
        client, record = await self.open_call(platform, script=("wait:60",))
        await platform.stop()
        await client.closed
        self.assertEqual(record.outcome, "closed")
        self.assertEqual(record.close_code, 1006)
        self.assertEqual(
            [c for c in reactor.getDelayedCalls() if c.active() and c.func.__name__ == "_wait_over"],
            [],
        )


class _FakeWire:
    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.raw: list[tuple[bytes, bool]] = []
        self.closes: list[int] = []

    def send_event(self, event: dict[str, Any]) -> None:
        self.events.append(event)

    def send_raw(self, payload: bytes, binary: bool) -> None:
        self.raw.append((payload, binary))

    def close(self, code: int, reason: str) -> None:
        self.closes.append(code)


class SessionTests(SynchronousTestCase):
    """
    The caller script and command rules, with a Clock and a fake wire.
    """

    def session(self, script: list[str], close_after: float = 0.0) -> tuple[ScriptedCall, CallLog, _FakeWire, Clock]:
        clock = Clock()
        platform = Platform(clock)
        record = platform.expect_call("c", "e", script)
        wire = _FakeWire()
        session = ScriptedCall(record, wire, clock, close_after)
        session.started()
        return session, record, wire, clock

    def test_menu_counts_keys_of_latest_play(self) -> None:
        """The menu step waits for as many enabled plays as the latest one has keys."""
        session, record, wire, _ = self.session(["menu", "press:1"])
        session.command_received(menu_play("c", "a.mp3", ["1", "0"]))
        session.command_received(confirm_play("c"))
        self.assertEqual(wire.events, [])
        session.command_received(menu_play("c", "b.mp3", ["1", "0"]))
        self.assertEqual(wire.events, [{"event": "dtmf", "digit": "1"}])

    def test_consumption(self) -> None:
        """Plays consumed by a menu do not count for the next step; earlier unconsumed ones do."""
        session, record, wire, clock = self.session(["wait:1", "menu", "press:1", "play", "press:2"])
        session.command_received(menu_play("c", "a.mp3", ["1"]))
        clock.advance(1)
        self.assertEqual(wire.events, [{"event": "dtmf", "digit": "1"}])
        session.command_received(confirm_play("c"))
        self.assertEqual(wire.events[-1], {"event": "dtmf", "digit": "2"})

    def test_play_step_waits(self) -> None:
        """The play step waits for a play received after the previous menu."""
        session, record, wire, _ = self.session(["menu", "play", "press:3"])
        session.command_received(menu_play("c", "a.mp3", ["1"]))
        self.assertEqual(wire.events, [])
        session.command_received(confirm_play("c"))
        self.assertEqual(wire.events, [{"event": "dtmf", "digit": "3"}])

    def test_transfer_timer(self) -> None:
        """A transfer closes after close_after_transfer; a lost connection cancels the timer."""
        session, record, wire, clock = self.session(["wait:5"], close_after=2.0)
        session.command_received(transfer("c"))
        self.assertEqual(len(clock.getDelayedCalls()), 1)
        clock.advance(2.0)
        self.assertEqual(wire.closes, [1000])
        session, record, wire, clock = self.session([], close_after=2.0)
        session.command_received(transfer("c"))
        session.connection_closed(1006)
        self.assertEqual(clock.getDelayedCalls(), [])
        self.assertEqual((record.outcome, record.close_code), ("transferred", 1006))
        self.assertTrue(record.finished)

    def test_prompts_step_takes_a_batch(self) -> None:
        """prompts waits for plays, then for a quiet spell, whatever the menu's shape."""
        session, record, wire, clock = self.session(["prompts:0.25", "press:1"])
        clock.advance(1.0)
        self.assertEqual(wire.events, [])
        session.command_received(menu_play("c", "intro.mp3", ["1", "2"]))
        session.command_received(menu_play("c", "a.mp3", ["1", "2"]))
        clock.advance(0.125)
        session.command_received(menu_play("c", "b.mp3", ["1", "2"]))
        clock.advance(0.125)
        self.assertEqual(wire.events, [])
        clock.advance(0.125)
        self.assertEqual(wire.events, [{"event": "dtmf", "digit": "1"}])
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_prompts_step_waits_for_the_next_batch(self) -> None:
        """A second prompts step waits for plays after the first batch (a silent caller)."""
        session, record, wire, clock = self.session(["prompts:0.1", "prompts:0.1", "press:0"])
        session.command_received(menu_play("c", "a.mp3", ["1", "0"]))
        clock.advance(0.1)
        clock.advance(10.0)
        self.assertEqual(wire.events, [])
        session.command_received(menu_play("c", "a.mp3", ["1", "0"]))
        clock.advance(0.1)
        self.assertEqual(wire.events, [{"event": "dtmf", "digit": "0"}])

    def test_prompts_step_counts_earlier_plays(self) -> None:
        """Plays that came before the step started count for it; one entry prompt is enough."""
        session, record, wire, clock = self.session(["wait:1", "prompts", "press:4", "press:2"])
        session.command_received(menu_play("c", "enter_account.mp3", list("0123456789#")))
        clock.advance(1.0)
        self.assertEqual(wire.events, [])
        clock.advance(PROMPT_SETTLE)
        self.assertEqual([e["digit"] for e in wire.events], ["4", "2"])

    def test_prompts_step_ends_with_the_call(self) -> None:
        """A transfer while prompts settles cancels its timer."""
        session, record, wire, clock = self.session(["prompts", "press:1"])
        session.command_received(confirm_play("c"))
        session.command_received(transfer("c"))
        self.assertEqual(clock.getDelayedCalls(), [])
        self.assertEqual(wire.events, [])

    def test_times_are_recorded(self) -> None:
        """Each command and each key press is recorded with the time it happened."""
        session, record, wire, clock = self.session(["prompts", "press:1"])
        clock.advance(2.0)
        session.command_received(menu_play("c", "a.mp3", ["1"]))
        clock.advance(PROMPT_SETTLE)
        clock.advance(1.0)
        session.command_received(confirm_play("c"))
        self.assertEqual(record.command_times, [2.0, 3.0 + PROMPT_SETTLE])
        self.assertEqual(record.key_times, [2.0 + PROMPT_SETTLE])
        self.assertEqual(len(record.commands), len(record.command_times))

    def test_check_command(self) -> None:
        """check_command accepts the seed's commands."""
        for command in (menu_play("c", "a.mp3", ["1", "2", "0"]), confirm_play("c"), transfer("c"), {"callControlId": "c", "action": "hangup"}):
            self.assertIsNone(check_command(command, "c"))

    def test_steps(self) -> None:
        """parse_step knows every step and rejects the rest."""
        self.assertEqual(parse_step("press:#"), ("press", "#"))
        self.assertEqual(parse_step("wait:0.5"), ("wait", 0.5))
        self.assertEqual(parse_step("error:a:b"), ("error", "a:b"))
        self.assertEqual(parse_step("prompts"), ("prompts", PROMPT_SETTLE))
        self.assertEqual(parse_step("prompts:0.2"), ("prompts", 0.2))
        for bad in ("dance", "press:", "wait:x", "wait:-1", "menu:3", "press", 3,
                    "prompts:", "prompts:x", "prompts:-1", "prompts:inf"):
            self.assertRaises(ValueError, parse_step, bad)
        clock = Clock()
        self.assertRaises(ValueError, Platform(clock).expect_call, "c", "e", ["menu", "fly"])
        self.assertRaises(ValueError, Platform(clock).expect_call, "c", "e", handshake="maybe")


class ScenarioTests(SynchronousTestCase):
    """
    Scenario files.
    """

    def write(self, text: str, profiles: Optional[str] = None) -> Path:
        directory = temporary_directory(self)
        if profiles is not None:
            (directory / "profiles.json").write_text(profiles)
        path = directory / "scenario.toml"
        path.write_text(text)
        return path

    def test_example(self) -> None:
        """The example file loads, with its profiles."""
        scenario = load_scenario(EXAMPLE)
        self.assertIn("CRM/EU 42", scenario.profiles)
        self.assertNotIn("CRM-UNKNOWN", scenario.profiles)
        self.assertEqual(scenario.profiles["CRM-ODD-TYPES"]["open_tickets"], "3")
        self.assertEqual(scenario.calls[0].script, ("menu", "press:1", "play"))
        self.assertEqual(scenario.intake, "http://127.0.0.1:8080/v1/calls")

    def test_defaults(self) -> None:
        """An empty table is a scenario with the defaults; it is frozen."""
        scenario = parse_scenario({}, Path("."), "test")
        self.assertEqual(scenario, Scenario())
        self.assertEqual(scenario.listen, "tcp:0:interface=127.0.0.1")
        with self.assertRaises(AttributeError):
            scenario.listen = "x"  # type: ignore[misc]

    def test_embedded(self) -> None:
        """parse_scenario takes the emulator table and calls list of a bigger config."""
        scenario = parse_scenario(
            {
                "emulator": {"profiles": {"A": {"x": 1}}, "call_interval": 1},
                "calls": [{"call_id": "c", "external_id": "A"}],
            },
            Path("."),
            "ivr.toml",
        )
        self.assertEqual(scenario.profiles, {"A": {"x": 1}})
        self.assertEqual(scenario.calls, (CallSpec("c", "A"),))
        self.assertEqual(scenario.call_interval, 1.0)

    def assertConfigError(self, text: str, key: str, profiles: Optional[str] = None) -> ConfigError:
        path = self.write(text, profiles)
        error = self.assertRaises(ConfigError, load_scenario, path)
        self.assertEqual(error.key, key)
        self.assertEqual(error.source, str(path))
        return error

    def test_errors(self) -> None:
        """Each bad setting is a ConfigError naming its key."""
        calls = '[[calls]]\ncall_id = "a"\nexternal_id = "A"\n'
        cases = [
            ('[emulator]\ntoken_ttl = "1h"\n', "emulator.token_ttl"),
            ("[emulator]\ntoken_ttl = 0\n", "emulator.token_ttl"),
            ("[emulator]\nport = 1\n", "emulator.port"),
            ("[emulator]\ncall_interval = -1\n", "emulator.call_interval"),
            ('[emulator]\nintake = "localhost:8080"\n', "emulator.intake"),
            ('[emulator]\nprofiles = "missing.json"\n', "emulator.profiles"),
            ("[emulator]\nprofiles = 3\n", "emulator.profiles"),
            ('[[calls]]\nexternal_id = "A"\n', "calls[0].call_id"),
            ('[[calls]]\ncall_id = "a"\n', "calls[0].external_id"),
            (calls + calls, "calls[1].call_id"),
            (calls + calls.replace('"a"', '"b"') + 'script = ["menu", "fly"]\n', "calls[1].script[1]"),
            (calls + 'script = "menu"\n', "calls[0].script"),
            (calls + 'handshake = "maybe"\n', "calls[0].handshake"),
            (calls + "extra = 1\n", "calls[0].extra"),
            ("calls = 3\n", "calls"),
            ("[emulatr]\n", "emulatr"),
            ("this is = not toml = at all\n", "file"),
        ]
        for text, key in cases:
            self.assertConfigError(text, key)

    def test_bad_profiles_file(self) -> None:
        """A profiles file that is not JSON, or not objects, is named in the error."""
        text = '[emulator]\nprofiles = "profiles.json"\n'
        error = self.assertConfigError(text, "emulator.profiles", "{nope")
        self.assertIn("not valid JSON", str(error))
        self.assertConfigError(text, "emulator.profiles", "[1]")
        self.assertConfigError(text, 'emulator.profiles["A"]', '{"A": 1}')

    def test_missing_file(self) -> None:
        """A missing scenario file is a ConfigError."""
        self.assertRaises(ConfigError, load_scenario, temporary_directory(self) / "none.toml")


class PlaceCallsUnitTests(SynchronousTestCase):
    """
    ``place_calls`` with a Clock and an in-memory intake.
    """

    def test_spacing_and_intake(self) -> None:
        """Calls are spaced by the interval and each is POSTed to the intake."""
        clock = Clock()
        platform = Platform(clock)
        posted: list[Any] = []

        class Intake(Resource):
            isLeaf = True

            def render_POST(self, request: Any) -> bytes:
                posted.append(json.loads(request.content.read()))
                request.setResponseCode(202)
                return b"{}"

        specs = [CallSpec("c1", "A", ("hangup",)), CallSpec("c2", "B")]
        placed: list[CallLog] = []
        d = place_calls(clock, platform, specs, "http://intake/v1/calls", http=StubTreq(Intake()), interval=1.0, on_call=placed.append)
        self.assertEqual(list(platform.calls), ["c1"])
        self.assertEqual(posted, [{"callControlId": "c1", "externalId": "A"}])
        clock.advance(1.0)
        self.assertEqual(list(platform.calls), ["c1", "c2"])
        self.assertEqual(len(posted), 2)
        self.assertNoResult(d)
        for record in placed:
            record.finish(clock.seconds(), "closed")
        self.assertEqual(self.successResultOf(d), placed)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_intake_refuses(self) -> None:
        """An intake that answers 503 makes the call intake-failed; nothing is raised."""
        clock = Clock()
        platform = Platform(clock)

        class Intake(Resource):
            isLeaf = True

            def render_POST(self, request: Any) -> bytes:
                request.setResponseCode(503)
                return b""

        d = place_calls(clock, platform, [CallSpec("c1", "A")], "http://intake/", http=StubTreq(Intake()))
        (record,) = self.successResultOf(d)
        self.assertEqual(record.outcome, "intake-failed")
        self.assertEqual(record.violations, ["intake POST failed: HTTP 503"])

    def test_intake_wait(self) -> None:
        """A refused intake connection is tried again until intake_wait runs out."""
        from twisted.internet.defer import fail, succeed
        from twisted.internet.error import ConnectionRefusedError

        clock = Clock()
        platform = Platform(clock)
        answers = [ConnectionRefusedError(), ConnectionRefusedError(), 202]

        class Response:
            code = 202

            def content(self) -> Deferred[bytes]:
                return succeed(b"")

        class Http:
            def post(self, url: str, **kwargs: Any) -> Deferred[Any]:
                answer = answers.pop(0)
                return succeed(Response()) if answer == 202 else fail(answer)

        d = place_calls(clock, platform, [CallSpec("c1", "A")], "http://intake/", http=Http(), intake_wait=1.0)
        clock.advance(0.5)
        clock.advance(0.5)
        self.assertEqual(answers, [])
        record = platform.calls["c1"]
        self.assertEqual((record.outcome, record.violations), (None, []))
        self.assertEqual(clock.getDelayedCalls(), [])
        answers.extend([ConnectionRefusedError()] * 2)
        record.finish(clock.seconds())
        self.successResultOf(d)
        d = place_calls(clock, platform, [CallSpec("c2", "A")], "http://intake/", http=Http(), intake_wait=0.6)
        clock.advance(0.5)
        self.assertEqual(platform.calls["c2"].outcome, "intake-failed")

    def test_cancel(self) -> None:
        """Cancelling stops placing further calls."""
        clock = Clock()
        platform = Platform(clock)
        d = place_calls(clock, platform, [CallSpec("c1", "A"), CallSpec("c2", "B")], None, interval=5)
        d.cancel()
        self.failureResultOf(d)
        self.assertEqual(clock.getDelayedCalls(), [])
        self.assertEqual(list(platform.calls), ["c1"])


class _ServiceSide(Resource):
    """
    A stand-in for the service's intake: on each POST it connects to the
    platform, performs the handshake and plays the seed's default menu, then
    transfers whatever key the caller presses.
    """

    isLeaf = True

    def __init__(self, test: EmulatorTestCase, platform: Platform) -> None:
        super().__init__()
        self.test = test
        self.platform = platform
        self.posted: list[Any] = []

    def render_POST(self, request: Any) -> bytes:
        body = json.loads(request.content.read())
        self.posted.append(body)
        Deferred.fromCoroutine(self.run_call(body["callControlId"]))
        request.setResponseCode(202)
        return b""

    async def run_call(self, call_id: str) -> None:
        client = await self.test.connect(self.platform, self.platform.issue_token())
        client.send_json(dict(HELLO, callControlId=call_id))
        if (await client.receive())["event"] != "connected":
            return
        for prompt in ("general_welcome.mp3", "general_support.mp3", "general_operator.mp3"):
            client.send_json(menu_play(call_id, prompt, ["1", "2", "0"]))
        event = await client.receive()
        client.send_json(confirm_play(call_id))
        client.send_json(transfer(call_id, "ext:key-" + event["digit"]))
        client.sendClose(1000)


class PlaceCallsTests(EmulatorTestCase):
    """
    ``place_calls`` over real sockets, with an intake that answers the calls.
    """

    async def test_calls_through_intake(self) -> None:
        """Every call is announced, answered by the intake's client and transferred."""
        platform = await self.start()
        intake = _ServiceSide(self, platform)
        tracker = ConnectionTracker(Site(intake))
        port = await serverFromString(reactor, "tcp:0:interface=127.0.0.1").listen(tracker)
        self.addCleanup(tracker.abort_all)
        self.addCleanup(port.stopListening)
        url = f"http://127.0.0.1:{port.getHost().port}/v1/calls"
        specs = [CallSpec(f"call-{i}", "CRM-UNKNOWN", ("menu", f"press:{i}", "play")) for i in range(3)]
        records = await place_calls(reactor, platform, specs, url, http=self.http, interval=0.01)
        self.assertEqual([r.outcome for r in records], ["transferred"] * 3)
        self.assertEqual([r.transfer_target for r in records], ["ext:key-0", "ext:key-1", "ext:key-2"])
        self.assertEqual(intake.posted[1], {"callControlId": "call-1", "externalId": "CRM-UNKNOWN"})
        self.assertEqual([r.violations for r in records], [[], [], []])

    async def test_no_intake(self) -> None:
        """An intake that does not answer the connection makes the call intake-failed."""
        platform = await self.start()
        port = await serverFromString(reactor, "tcp:0:interface=127.0.0.1").listen(Site(Resource()))
        address = port.getHost()
        await port.stopListening()
        records = await place_calls(
            reactor, platform, [CallSpec("c1", "A")], f"http://127.0.0.1:{address.port}/v1/calls", http=self.http
        )
        self.assertEqual(records[0].outcome, "intake-failed")
        self.assertEqual(len(records[0].violations), 1)


@attrs.define
class _FakeGate:
    """
    A :class:`~ivrproto.emulator.callcontrol.CallGate` that refuses or
    hands out calls as a test says, and remembers what it was asked.
    """

    clock: Clock
    refuse_with: Optional[int] = None
    calls: dict[str, CallLog] = attrs.field(factory=dict)
    close_after_transfer: float = 0.0
    tokens: list[Optional[str]] = attrs.field(factory=list)
    claimed: list[str] = attrs.field(factory=list)
    connected: list[CallLog] = attrs.field(factory=list)

    def authorize_upgrade(self, token: Optional[str]) -> Optional[int]:
        self.tokens.append(token)
        return self.refuse_with

    def claim_call(self, call_id: str) -> Optional[CallLog]:
        self.claimed.append(call_id)
        return self.calls.pop(call_id, None)

    def call_connected(self, log: CallLog) -> None:
        self.connected.append(log)


class CallControlServerTests(SynchronousTestCase):
    """
    The Call Control server protocol against a fake gate, in memory
    (``iosim``) on a Clock, with ivrproto's own client at the other end.
    """

    def connect(self, gate: _FakeGate, call_id: str = "c") -> tuple[RecordingListener, Any]:
        listener = RecordingListener()
        client_factory = CallControlFactory(gate.clock, URL, "tok", call_id, listener)
        server_factory = CallControlServerFactory(gate, gate.clock)
        client_address = IPv4Address("TCP", "127.0.0.1", 40000)
        server_address = IPv4Address("TCP", "127.0.0.1", 9)
        client = client_factory.buildProtocol(server_address)
        server = server_factory.buildProtocol(client_address)
        pump = iosim_connect(
            server,
            FakeTransport(server, True, server_address, client_address),
            client,
            FakeTransport(client, False, client_address, server_address),
            clock=gate.clock,
        )
        return listener, pump

    def expect(self, gate: _FakeGate, call_id: str, script: list[str]) -> CallLog:
        log = CallLog(call_id, "e", tuple(script), steps=parse_script(script))
        gate.calls[call_id] = log
        return log

    def test_refused_upgrade(self) -> None:
        """The gate's status refuses the upgrade; the gate saw the bearer token."""
        gate = _FakeGate(Clock(), refuse_with=403)
        listener, pump = self.connect(gate)
        pump.flush()
        self.assertEqual(gate.tokens, ["tok"])
        self.assertEqual([args[1] for args in listener.args_of("handshake_failed")], [403])
        self.assertEqual(gate.claimed, [])

    def test_call_claimed_and_played(self) -> None:
        """A claimed call is connected (the gate is told) and its script runs."""
        gate = _FakeGate(Clock())
        log = self.expect(gate, "c", ["press:1", "hangup"])
        listener, pump = self.connect(gate)
        pump.flush()
        self.assertEqual(gate.claimed, ["c"])
        self.assertEqual(gate.connected, [log])
        self.assertEqual(listener.digits, ["1"])
        self.assertEqual(listener.args_of("hangup_received"), [("caller",)])
        self.assertEqual(log.outcome, "hungup-by-caller")
        self.assertTrue(log.finished)
        self.assertEqual(log.close_code, 1000)

    def test_unknown_call(self) -> None:
        """A call the gate does not hand out is refused with an error event."""
        gate = _FakeGate(Clock())
        listener, pump = self.connect(gate, "nobody")
        pump.flush()
        self.assertEqual(gate.claimed, ["nobody"])
        self.assertEqual(gate.connected, [])
        self.assertEqual(
            listener.args_of("handshake_failed"), [("refused: no active call with that id", None)]
        )

    def test_timers_on_the_injected_clock(self) -> None:
        """Autobahn's server timers go on the factory's clock: nothing lands on the global reactor."""
        gate = _FakeGate(Clock())
        self.expect(gate, "c", ["wait:1", "hangup"])
        before = set(reactor.getDelayedCalls())
        listener, pump = self.connect(gate)
        pump.flush()
        self.assertTrue(gate.clock.getDelayedCalls())
        self.assertEqual(set(reactor.getDelayedCalls()) - before, set())
        gate.clock.advance(1)
        pump.flush()
        self.assertIn("hangup_received", listener.names())
        self.assertEqual(set(reactor.getDelayedCalls()) - before, set())

    def test_factory_timer(self) -> None:
        """The factory's Autobahn timer is a ReactorTimer on the clock it is given."""
        clock = Clock()
        factory = CallControlServerFactory(_FakeGate(clock), clock)
        self.assertIsInstance(factory._batched_timer, ReactorTimer)
        factory._batched_timer.call_later(3, lambda: None)
        self.assertEqual([call.getTime() for call in clock.getDelayedCalls()], [3])


class DefaultHttpTests(SynchronousTestCase):
    """
    Without ``http=``, the intake POSTs go out on the given reactor.
    """

    def test_place_calls_uses_the_given_reactor(self) -> None:
        """place_calls connects to the intake through the reactor it is given, not treq's global one."""
        fake = MemoryReactorClock()
        platform = Platform(fake)
        place_calls(fake, platform, [CallSpec("c1", "A")], "http://127.0.0.1:9/v1/calls")
        self.assertEqual([(host, port) for host, port, *_ in fake.tcpClients], [("127.0.0.1", 9)])

    def test_by_hand_uses_the_given_reactor(self) -> None:
        """accept_calls_by_hand announces through the reactor it is given."""
        fake = MemoryReactorClock()
        platform = Platform(fake)
        accept_calls_by_hand(fake, platform, "http://127.0.0.1:9/v1/calls")
        platform.place_call("A")
        self.assertEqual([(host, port) for host, port, *_ in fake.tcpClients], [("127.0.0.1", 9)])


class TapTests(TestCase):
    """
    ``twistd ivr-emulator``: options, service and plugin.
    """

    def test_options(self) -> None:
        """--config is loaded; --listen overrides the file's listen."""
        options = Options()
        options.parseOptions(["--config", str(EXAMPLE), "--listen", "tcp:0"])
        self.assertEqual(options.scenario.listen, "tcp:0")
        self.assertEqual(len(options.scenario.calls), 6)
        service = makeService(options)  # which binds the emulator's port
        self.addCleanup(service.stopService)
        self.assertIsInstance(service, EmulatorService)

    def test_config_required(self) -> None:
        """Without --config the options are refused."""
        self.assertRaises(usage.UsageError, Options().parseOptions, [])

    def test_bad_config(self) -> None:
        """A bad scenario is one UsageError naming the key."""
        path = temporary_directory(self) / "bad.toml"
        path.write_text('[emulator]\ntoken_ttl = "soon"\n')
        error = self.assertRaises(usage.UsageError, Options().parseOptions, ["--config", str(path)])
        self.assertIn("emulator.token_ttl", str(error))

    async def test_service(self) -> None:
        """The service listens, prints its URL, places calls and stops cleanly."""
        out = io.StringIO()
        scenario = Scenario(
            calls=(CallSpec("c1", "A", ("hangup",)),),
        )
        service = EmulatorService(reactor, scenario, out=out)
        service.startService()
        self.addCleanup(service.stopService)
        line = out.getvalue().strip()
        self.assertRegex(line, r"^ivr-emulator listening on http://127\.0\.0\.1:\d+$")
        self.assertNotEqual(line.rsplit(":", 1)[1], "0")
        assert service.platform is not None
        self.assertEqual(list(service.platform.calls), ["c1"])

    def test_plugin(self) -> None:
        """twistd finds the ivr-emulator plugin."""
        from twisted.application.service import IServiceMaker
        from twisted.plugin import getPlugins

        names = {p.tapname: p for p in getPlugins(IServiceMaker)}
        self.assertIn("ivr-emulator", names)
        self.assertEqual(names["ivr-emulator"].module, "ivrproto.emulator.tap")


class _Recorder(Protocol):
    """A protocol that keeps what it was given."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.received = b""

    def dataReceived(self, data: bytes) -> None:
        self.received += data


class _RecorderFactory(Factory):
    timeOut: Optional[float] = 60.0

    def __init__(self, name: str) -> None:
        self.name = name
        self.built: list[_Recorder] = []

    def buildProtocol(self, addr: Any) -> _Recorder:
        protocol = _Recorder(self.name)
        self.built.append(protocol)
        return protocol


class FirstRequestRouterTests(SynchronousTestCase):
    """
    The platform's port hands a Call Control upgrade straight to the
    WebSocket server, and every other connection to the HTTP site.
    """

    def connect(self) -> tuple[Any, StringTransport]:
        self.clock = Clock()
        self.site = _RecorderFactory("site")
        self.ws = _RecorderFactory("ws")
        router = FirstRequestRouter(
            self.site, self.ws, b"/api/v2/callcontrol/websocket", self.clock  # type: ignore[arg-type]
        )
        wrapper = ConnectionTracker(router).buildProtocol(IPv4Address("TCP", "127.0.0.1", 1))
        transport = StringTransport()
        wrapper.makeConnection(transport)
        return wrapper, transport

    def test_upgrade_goes_to_the_websocket_server(self) -> None:
        """The upgrade request, read in pieces, reaches the WebSocket server whole."""
        for line in (
            b"GET /api/v2/callcontrol/websocket HTTP/1.1\r\nHost: x\r\n\r\n",
            b"GET /api/v2/callcontrol/websocket?x=1 HTTP/1.1\r\n\r\n",
        ):
            wrapper, _ = self.connect()
            wrapper.dataReceived(line[:10])
            wrapper.dataReceived(line[10:33])
            self.assertEqual((self.ws.built, self.site.built), ([], []))
            wrapper.dataReceived(line[33:])
            self.assertEqual([p.received for p in self.ws.built], [line])
            self.assertEqual(self.site.built, [])
            self.assertIs(wrapper.wrappedProtocol, self.ws.built[0])

    def test_everything_else_goes_to_the_site(self) -> None:
        """Other paths, other methods and longer paths are the site's."""
        for line in (
            b"GET /api/v2/profiles/external/A HTTP/1.1\r\n\r\n",
            b"POST /api/v2/callcontrol/websocket HTTP/1.1\r\n\r\n",
            b"GET /api/v2/callcontrol/websocketx HTTP/1.1\r\n\r\n",
            b"GET /api/v2/callcontrol/websocket/more HTTP/1.1\r\n\r\n",
        ):
            wrapper, _ = self.connect()
            wrapper.dataReceived(line)
            self.assertEqual([p.received for p in self.site.built], [line])
            self.assertEqual(self.ws.built, [])

    def test_silent_connection_is_closed(self) -> None:
        """A connection that sends nothing is closed after the site's idle timeout."""
        wrapper, transport = self.connect()
        self.clock.advance(59)
        self.assertFalse(transport.disconnecting)
        self.clock.advance(1)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_timer_cancelled(self) -> None:
        """Neither a hand-over nor a lost connection leaves the idle timer behind."""
        wrapper, _ = self.connect()
        wrapper.dataReceived(b"GET / HTTP/1.1\r\n\r\n")
        self.assertEqual(self.clock.getDelayedCalls(), [])
        wrapper, _ = self.connect()
        wrapper.connectionLost(None)
        self.assertEqual(self.clock.getDelayedCalls(), [])
