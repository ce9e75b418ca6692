"""
TLS against a real server on loopback, with certificates made by the test
(:mod:`tests.certs`): the token request, the profile request and the Call
Control WebSocket each refuse a certificate for another host name, from an
unknown CA or past its end date before a byte of the client secret or the
token is sent, and work with the right CA.

The clients are the ones the service builds (its HTTP client and
:func:`~ivrproto.protocol.connect_call_control`), with the platform's trust
store: the tests make it hold only their CA through ``SSL_CERT_FILE`` and
``SSL_CERT_DIR``, which OpenSSL reads when a TLS context is made.  Every
server records the bytes it receives twice: as they come off TCP
(ciphertext) and as the application under TLS gets them (plaintext).
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Optional

import attrs
from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from OpenSSL import SSL
import treq
from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks, succeed
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.protocol import Factory
from twisted.internet.interfaces import (
    IListeningPort,
    IOpenSSLContextFactory,
    IProtocolFactory,
    IStreamServerEndpoint,
)
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.client import RequestTransmissionFailed
from zope.interface import directlyProvides, implementer, providedBy

from ivrproto.clients._http import describe_request_failure
from ivrproto.config import load_config
from ivrproto.emulator import Platform
from ivrproto.errors import ProfileError, TokenError
from ivrproto.clients._token_endpoint import basic_auth_header
from ivrproto.callcontrol.connect import connect_call_control
from ivrproto.callcontrol.protocol import CallControlProtocol
from ivrproto.service import IVRService

from .certs import Issued, TestCA

ROOT = Path(__file__).resolve().parent.parent
SEED = str(ROOT / "examples" / "seed.toml")

CLIENT_ID = "tls-client"
SECRET = "tls-s3cret-never-in-clear"
PROFILES = {"CRM-PREMIUM": {"membership_level": "premium", "open_tickets": 0}}
WEBSOCKET_PATH = "/api/v2/callcontrol/websocket"


class _Recorder(ProtocolWrapper):
    """
    Passes bytes on to the wrapped protocol after recording them.
    """

    factory: "RecordingFactory"

    def dataReceived(self, data: bytes) -> None:
        self.factory.received += data
        super().dataReceived(data)


class RecordingFactory(WrappingFactory):
    """
    Records every byte its connections receive, and tells when none is left.
    """

    protocol = _Recorder

    def __init__(self, wrapped: IProtocolFactory) -> None:
        super().__init__(wrapped)
        self.received = b""
        self.connections = 0
        self._idle: list[Deferred[None]] = []

    def registerProtocol(self, p: Any) -> None:
        self.connections += 1
        super().registerProtocol(p)

    def unregisterProtocol(self, p: Any) -> None:
        super().unregisterProtocol(p)
        if not self.protocols:
            idle, self._idle = self._idle, []
            for d in idle:
                d.callback(None)

    def when_idle(self) -> Deferred[None]:
        """
        Fires once no connection is open.
        """
        if not self.protocols:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._idle.append(d)
        return d


class _Tap:
    """
    Stands for an application protocol under TLS, recording the plaintext it
    receives; the protocol's transport is still the TLS connection itself
    (Autobahn asks it for the TLS channel).
    """

    def __init__(self, protocol: Any, factory: "PlainRecorder") -> None:
        self._protocol = protocol
        self._factory = factory
        directlyProvides(self, providedBy(protocol))

    def dataReceived(self, data: bytes) -> None:
        self._factory.received += data
        self._protocol.dataReceived(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._protocol, name)


class PlainRecorder(Factory):
    """
    Builds ``wrapped``'s protocols, each behind a :class:`_Tap`.
    """

    def __init__(self, wrapped: IProtocolFactory) -> None:
        self.wrapped = wrapped
        self.received = b""

    def doStart(self) -> None:
        self.wrapped.doStart()

    def doStop(self) -> None:
        self.wrapped.doStop()

    def buildProtocol(self, addr: Any) -> Any:
        protocol = self.wrapped.buildProtocol(addr)
        return None if protocol is None else _Tap(protocol, self)


@implementer(IOpenSSLContextFactory)
@attrs.frozen
class _ServerContext:
    """
    The server's TLS context: ``issued`` and its key, nothing else.
    """

    issued: Issued

    def getContext(self) -> SSL.Context:
        context = SSL.Context(SSL.TLS_SERVER_METHOD)
        context.use_certificate(x509.load_pem_x509_certificate(self.issued.cert_pem))
        key = serialization.load_pem_private_key(self.issued.key_pem, None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        context.use_privatekey(key)
        return context


@implementer(IStreamServerEndpoint)
@attrs.define
class RecordingTLSEndpoint:
    """
    A TLS server on 127.0.0.1 (a port of its own) presenting ``issued``;
    :attr:`raw` records what arrives off TCP and :attr:`plain` what the
    application gets once TLS is up.
    """

    issued: Issued
    raw: Optional[RecordingFactory] = None
    plain: Optional[PlainRecorder] = None
    port: Optional[IListeningPort] = None

    def listen(self, factory: IProtocolFactory) -> Deferred[IListeningPort]:
        options = _ServerContext(self.issued)
        self.plain = PlainRecorder(factory)
        self.raw = RecordingFactory(TLSMemoryBIOFactory(options, False, self.plain))
        endpoint = TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1")

        def listening(port: IListeningPort) -> IListeningPort:
            self.port = port
            return port

        return endpoint.listen(self.raw).addCallback(listening)

    @property
    def url(self) -> str:
        """
        ``https://localhost:<port>``: a name the certificates can be made for.
        """
        assert self.port is not None
        return f"https://localhost:{self.port.getHost().port}"  # type: ignore[attr-defined]


class _Outcome:
    """
    A :class:`~ivrproto.protocol.CallControlListener` that tells how the
    handshake ended: ``("connected", protocol)`` or ``("failed", reason)``.
    """

    def __init__(self) -> None:
        self.ended: Deferred[tuple[str, Any]] = Deferred()

    def _end(self, value: tuple[str, Any]) -> None:
        if not self.ended.called:
            self.ended.callback(value)

    def connected(self, protocol: CallControlProtocol) -> None:
        self._end(("connected", protocol))

    def handshake_failed(self, reason: str, status: Optional[int]) -> None:
        self._end(("failed", reason))

    def digit_received(self, digit: str) -> None:
        pass

    def hangup_received(self, reason: Optional[str]) -> None:
        pass

    def platform_error(self, message: str, code: Optional[str]) -> None:
        pass

    def connection_closed(self, code: Optional[int], reason: str) -> None:
        pass


def expired(ca: TestCA) -> Issued:
    """
    A certificate for ``localhost`` that expired yesterday.
    """
    return ca.issue(
        ["localhost"],
        not_before=datetime.timedelta(days=-10),
        not_after=datetime.timedelta(days=-1),
    )


class TLSTestCase(TestCase):
    """
    A CA the clients trust (and nothing else), platforms behind TLS servers
    that record what they receive, and the service.
    """

    timeout = 30

    def setUp(self) -> None:
        self.ca = TestCA()
        directory = Path(tempfile.mkdtemp())
        self.addCleanup(shutil.rmtree, directory)
        bundle = self.ca.write(directory / "ca.pem")
        empty = directory / "certs"
        empty.mkdir()
        self.set_environ("SSL_CERT_FILE", str(bundle))
        self.set_environ("SSL_CERT_DIR", str(empty))

    def set_environ(self, name: str, value: str) -> None:
        old = os.environ.get(name)
        os.environ[name] = value

        def restore() -> None:
            if old is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = old

        self.addCleanup(restore)

    @inlineCallbacks
    def platform(self, issued: Issued, **options: Any) -> Any:
        """
        An emulated platform behind a TLS server presenting ``issued``;
        stopped, and its connections gone, at cleanup.
        """
        platform = Platform(reactor, clients={CLIENT_ID: SECRET}, profiles=PROFILES, **options)
        endpoint = RecordingTLSEndpoint(issued)
        yield platform.listen(endpoint)

        @inlineCallbacks
        def stop() -> Any:
            yield platform.stop()
            assert endpoint.raw is not None
            yield endpoint.raw.when_idle()

        self.addCleanup(stop)
        return platform, endpoint

    @inlineCallbacks
    def service(self, api: RecordingTLSEndpoint, login: RecordingTLSEndpoint) -> Any:
        """
        The service, with its API and login URLs on ``api`` and ``login``.
        """
        config = load_config(
            SEED,
            {
                "GENESYS_BASE_URL": api.url,
                "GENESYS_LOGIN_URL": login.url,
                "CLIENT_ID": CLIENT_ID,
                "CLIENT_SECRET": SECRET,
            },
        )
        config = attrs.evolve(
            config,
            intake=attrs.evolve(config.intake, max_loop_lag=30.0),
            timing=attrs.evolve(
                config.timing, handshake_timeout=5.0, profile_budget=5.0, confirm_delay=0.05
            ),
        )
        service = IVRService(reactor, config, intake="tcp:0:interface=127.0.0.1", admin="tcp:0:interface=127.0.0.1")
        yield service.start()
        self.addCleanup(service.stop)
        return service

    def assert_no_secret(self, endpoint: RecordingTLSEndpoint, *secrets: bytes) -> None:
        """
        None of ``secrets`` (nor the client secret, in any form) crossed the
        wire in clear.
        """
        assert endpoint.raw is not None
        wire = endpoint.raw.received
        for secret in (SECRET.encode(), basic_auth_header(CLIENT_ID, SECRET), *secrets):
            self.assertNotIn(secret, wire)

    def assert_refused(self, endpoint: RecordingTLSEndpoint, *secrets: bytes) -> None:
        """
        A client connected, but the application behind TLS received nothing.
        """
        assert endpoint.raw is not None and endpoint.plain is not None
        self.assertGreater(endpoint.raw.connections, 0, "the client never connected")
        self.assertEqual(endpoint.plain.received, b"")
        self.assert_no_secret(endpoint, *secrets)


def bad_certificates(ca: TestCA) -> dict[str, Issued]:
    """
    A certificate of each kind a client must refuse.
    """
    return {
        "another host name": ca.issue(["platform.example", "127.0.0.1"]),
        "an unknown CA": TestCA("not trusted").issue(["localhost"]),
        "an expired certificate": expired(ca),
    }


#: What the HTTP clients' errors say for each kind.
REFUSED_BECAUSE = {
    "another host name": "TLS refused: the server's certificate is not for this host name",
    "an unknown CA": "TLS refused: the server's certificate is not trusted",
    "an expired certificate": "TLS refused: the server's certificate is not trusted",
}


class TokenRequestTests(TLSTestCase):
    """
    The token request refuses a server it cannot verify before sending the
    client credentials.
    """

    @inlineCallbacks
    def check(self, name: str) -> Any:
        _, login = yield self.platform(bad_certificates(self.ca)[name])
        _, api = yield self.platform(self.ca.issue(["localhost"]))
        service = yield self.service(api, login)
        error = yield self.assertFailure(service.tokens.get_token(), TokenError)
        self.assertIn(REFUSED_BECAUSE[name], str(error))
        self.assert_refused(login)

    def test_wrong_host_name(self) -> Any:
        "A certificate for another host name: no token request is sent."
        return self.check("another host name")

    def test_unknown_ca(self) -> Any:
        "A certificate from a CA the client does not trust: no token request is sent."
        return self.check("an unknown CA")

    def test_expired(self) -> Any:
        "An expired certificate: no token request is sent."
        return self.check("an expired certificate")

    @inlineCallbacks
    def test_trusted(self) -> Any:
        "The right name from the trusted CA: a token, the credentials encrypted on the wire."
        _, login = yield self.platform(self.ca.issue(["localhost"]))
        service = yield self.service(login, login)
        token = yield service.tokens.get_token()
        self.assertIn(b"POST /oauth/token", login.plain.received)
        self.assert_no_secret(login, token.encode())


class ProfileRequestTests(TLSTestCase):
    """
    The profile request refuses a server it cannot verify before sending the
    bearer token.
    """

    @inlineCallbacks
    def check(self, name: str) -> Any:
        _, login = yield self.platform(self.ca.issue(["localhost"]))
        _, api = yield self.platform(bad_certificates(self.ca)[name])
        service = yield self.service(api, login)
        token = yield service.tokens.get_token()
        error = yield self.assertFailure(service.source.lookup("CRM-PREMIUM"), ProfileError)
        self.assertIn(REFUSED_BECAUSE[name], str(error))
        self.assert_refused(api, token.encode())

    def test_wrong_host_name(self) -> Any:
        "A certificate for another host name: the token is not sent."
        return self.check("another host name")

    def test_unknown_ca(self) -> Any:
        "A certificate from a CA the client does not trust: the token is not sent."
        return self.check("an unknown CA")

    def test_expired(self) -> Any:
        "An expired certificate: the token is not sent."
        return self.check("an expired certificate")

    @inlineCallbacks
    def test_trusted(self) -> Any:
        "The right name from the trusted CA: the profile, the token encrypted on the wire."
        _, endpoint = yield self.platform(self.ca.issue(["localhost"]))
        service = yield self.service(endpoint, endpoint)
        token = yield service.tokens.get_token()
        profile = yield service.source.lookup("CRM-PREMIUM")
        self.assertIsNotNone(profile)
        self.assertIn(b"Bearer " + token.encode(), endpoint.plain.received)
        self.assert_no_secret(endpoint, token.encode())


class _CallControlServer(WebSocketServerProtocol):
    """
    Just enough of the platform's Call Control: accepts the upgrade, and
    answers the first frame with ``connected``.
    """

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.sendMessage(json.dumps({"event": "connected", "callControlId": "call-tls"}).encode())


class CallControlTests(TLSTestCase):
    """
    The Call Control WebSocket refuses a server it cannot verify before
    sending the upgrade with its bearer token.
    """

    TOKEN = "tls-bearer-token-never-in-clear"

    @inlineCallbacks
    def connect(self, endpoint: RecordingTLSEndpoint, token: str) -> Any:
        """
        Connect for ``call-tls``; fire with how the handshake ended.
        """
        outcome = _Outcome()
        url = endpoint.url.replace("https://", "wss://") + WEBSOCKET_PATH
        try:
            protocol = yield connect_call_control(
                reactor,
                url,
                token,
                "call-tls",
                outcome,
                connect_timeout=5.0,
                open_handshake_timeout=5.0,
            )
        except Exception:
            return ("failed", Failure())
        kind, detail = yield outcome.ended
        if kind == "connected":
            # Whatever the test expected, the connection is not kept.
            detail.abort()
        return kind, detail

    @inlineCallbacks
    def server(self, issued: Issued) -> Any:
        """
        A Call Control server behind a TLS server presenting ``issued``.
        """
        factory = WebSocketServerFactory()
        factory.protocol = _CallControlServer
        factory.setProtocolOptions(
            openHandshakeTimeout=0, closeHandshakeTimeout=0, autoPingInterval=0
        )
        endpoint = RecordingTLSEndpoint(issued)
        port = yield endpoint.listen(factory)
        assert endpoint.raw is not None
        self.addCleanup(endpoint.raw.when_idle)
        self.addCleanup(port.stopListening)
        return endpoint

    @inlineCallbacks
    def check(self, name: str) -> Any:
        endpoint = yield self.server(bad_certificates(self.ca)[name])
        kind, _ = yield self.connect(endpoint, self.TOKEN)
        self.assertEqual(kind, "failed")
        yield endpoint.raw.when_idle()
        self.assert_refused(endpoint, self.TOKEN.encode())

    def test_wrong_host_name(self) -> Any:
        "A certificate for another host name: the upgrade is not sent."
        return self.check("another host name")

    def test_unknown_ca(self) -> Any:
        "A certificate from a CA the client does not trust: the upgrade is not sent."
        return self.check("an unknown CA")

    def test_expired(self) -> Any:
        "An expired certificate: the upgrade is not sent."
        return self.check("an expired certificate")

    @inlineCallbacks
    def test_trusted(self) -> Any:
        "The right name from the trusted CA: the handshake completes, the token encrypted."
        endpoint = yield self.server(self.ca.issue(["localhost"]))
        kind, _ = yield self.connect(endpoint, self.TOKEN)
        self.assertEqual(kind, "connected")
        self.assertIn(b"GET " + WEBSOCKET_PATH.encode(), endpoint.plain.received)
        self.assertIn(b"Authorization: Bearer " + self.TOKEN.encode(), endpoint.plain.received)
        self.assert_no_secret(endpoint, self.TOKEN.encode())


class TLSFailureDescriptionTests(SynchronousTestCase):
    """
    A TLS failure that is not about the certificate is described as such.
    """

    def test_other_handshake_failure(self) -> None:
        "An OpenSSL error other than a refused certificate reads 'TLS handshake failed'."
        error = SSL.Error([("SSL routines", "", "sslv3 alert handshake failure")])
        self.assertEqual(
            describe_request_failure(RequestTransmissionFailed([Failure(error)]), 5),
            "TLS handshake failed",
        )
