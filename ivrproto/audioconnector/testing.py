"""
A scripted Genesys-side client for testing code that embeds the Audio
Connector server, in memory (:func:`connect_in_memory`) or over a socket.

:class:`GenesysClientProtocol` is an Autobahn client that numbers its
messages as Genesys does (``seq`` from 1, ``serverseq`` the last server
``seq`` seen), records everything the server sends (JSON in order, audio
with its arrival time on the clock), checks the server's sequence rules, and
answers ``disconnect`` with ``close``.  Its checks are the emulator's
Genesys side's (:class:`~ivrproto.emulator.genesys_checks.ServerChecks`), so
that the rules are written once.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

import orjson
from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import Clock
from twisted.logger import Logger
from twisted.test.iosim import FakeTransport, IOPump, connect

from ivrproto._autobahn import QuietAutobahnLog, ReactorTimer
from ivrproto.audioconnector.messages import format_duration
from ivrproto.emulator.genesys_checks import ServerChecks

SESSION_ID = "f686b643-e229-407f-a2f0-b0d210ae02ef"
ORGANIZATION_ID = "0ce25900-7fae-49e4-92e1-50518906b27c"
CONVERSATION_ID = "b6cf730c-371a-4682-9779-5ee2e8d0c190"

#: The media offers of a typical ``open``.
OFFERS = (
    {"type": "audio", "format": "PCMU", "channels": ["external"], "rate": 8000},
    {"type": "audio", "format": "PCMU", "channels": ["internal"], "rate": 8000},
)


def open_parameters(
    ani: str = "tel:+14155550100",
    input_variables: Optional[Mapping[str, str]] = None,
    language: Optional[str] = "en-US",
    organization_id: str = ORGANIZATION_ID,
    conversation_id: str = CONVERSATION_ID,
    participant_id: str = "91c32d13-d078-40ab-8750-42bd52c48f6d",
    media: Tuple[Mapping[str, Any], ...] = OFFERS,
) -> Dict[str, Any]:
    "The parameters of an ``open``."
    params: Dict[str, Any] = {
        "organizationId": organization_id,
        "conversationId": conversation_id,
        "participant": {"id": participant_id, "ani": ani, "aniName": "Test Caller",
                        "dnis": "tel:+18005550199"},
        "media": [dict(m) for m in media],
    }
    if language is not None:
        params["language"] = language
    if input_variables is not None:
        params["inputVariables"] = dict(input_variables)
    return params


class GenesysClientProtocol(WebSocketClientProtocol):
    """
    The Genesys side of one session.

    :ivar received: the server's JSON messages, in order
    :ivar audio: ``(clock time, frame)`` of each binary frame from the server
    :ivar wire: everything in arrival order: ``("text", message)`` or
        ``("audio", len)``
    :ivar violations: the server's breaches of the protocol's rules
    """

    log = QuietAutobahnLog(Logger(namespace="ivrproto.audioconnector.testing"))
    factory: "GenesysClientFactory"

    def __init__(self) -> None:
        super().__init__()
        self.seq = 0
        self.serverseq = 0
        self.position = 0.0
        self.received: List[Dict[str, Any]] = []
        self.audio: List[Tuple[float, bytes]] = []
        self.wire: List[Tuple[str, Any]] = []
        self.violations: List[str] = []
        self.upgraded = False
        self.upgrade_failure: Optional[str] = None
        self.close_code: Optional[int] = None
        self.lost = False
        #: Answer ``disconnect`` with ``close{disconnect}``.
        self.answer_disconnect = True
        #: Close the WebSocket once ``closed`` arrives, as Genesys does.
        self.close_after_closed = True
        #: Fires (with the protocol) when the connection is gone.
        self.done: Deferred[GenesysClientProtocol] = Deferred()
        #: The protocol's rules, as the emulator's Genesys side checks them
        #: (made at the first ``open``, which names the offers).
        self.checks: Optional[ServerChecks] = None
        self._highest_seq = 0
        self._close_sent = False
        self._pings: List[int] = []

    def onOpen(self) -> None:
        self.upgraded = True
        if self.factory.open_on_upgrade:
            self.send_open()

    def failHandshake(self, reason: str) -> None:
        self.upgrade_failure = reason
        super().failHandshake(reason)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        hook = self.factory.on_message
        if isBinary:
            if self.checks is not None:
                self.violations.extend(self.checks.audio(payload))
            else:
                self.violations.append("audio before opened")
            self.audio.append((self.factory.clock.seconds(), payload))
            self.wire.append(("audio", len(payload)))
            if hook is not None:
                hook(self, "audio", payload)
            return
        message = orjson.loads(payload)
        self.received.append(message)
        self.wire.append(("text", message))
        if self.checks is None:
            self.checks = ServerChecks(self.factory.session_id, OFFERS)
        ping = self._pings.pop(0) if message.get("type") == "pong" and self._pings else None
        self.violations.extend(self.checks.text(
            message, len(payload.decode("utf-8", "replace")), self._highest_seq,
            self._close_sent, ping,
        ))
        self.serverseq = self.checks.serverseq
        if message.get("type") == "disconnect" and self.answer_disconnect:
            self.send("close", reason="disconnect")
        if message.get("type") == "closed" and self.close_after_closed:
            self.sendClose()
        if hook is not None:
            hook(self, "text", message)

    def onClose(self, wasClean: bool, code: Optional[int], reason: Optional[str]) -> None:
        self.lost = True
        self.close_code = code
        if not self.done.called:
            self.done.callback(self)

    # -- sending -----------------------------------------------------------------

    def send(self, type: str, seq: Optional[int] = None, **parameters: Any) -> int:
        """
        Send one message, numbered as Genesys numbers them (or with ``seq``).

        :return: the seq it carried
        """
        if seq is None:
            self.seq += 1
            seq = self.seq
        message = {
            "version": "2",
            "type": type,
            "id": self.factory.session_id,
            "seq": seq,
            "serverseq": self.serverseq,
            "position": format_duration(self.position),
            "parameters": parameters,
        }
        if type == "open" and self.checks is None:
            self.checks = ServerChecks(self.factory.session_id, parameters.get("media") or ())
        elif type == "ping":
            self._pings.append(seq)
        elif type == "close":
            self._close_sent = True
        self._highest_seq = max(self._highest_seq, seq)
        self.send_raw(orjson.dumps(message))
        return seq

    def send_raw(self, payload: bytes) -> None:
        "Send one text frame as it is."
        self.sendMessage(payload, isBinary=False)

    def send_open(self, **kwargs: Any) -> int:
        "Send ``open`` (see :func:`open_parameters`)."
        return self.send("open", **open_parameters(**kwargs))

    def send_probe(self) -> None:
        "Send a connection probe: an ``open`` for nobody, then ``close``."
        null = "00000000-0000-0000-0000-000000000000"
        params = open_parameters(ani="", conversation_id=null, participant_id=null, language=None)
        params["participant"]["aniName"] = params["participant"]["dnis"] = ""
        self.checks = ServerChecks(self.factory.session_id, params["media"], probe=True)
        self.send("open", **params)

    def send_audio(self, frame: bytes = b"\xff" * 1600) -> None:
        "Send caller audio."
        self.sendMessage(frame, isBinary=True)
        self.position += len(frame) / 8000

    def types(self) -> List[str]:
        "The types of the server's messages, in order."
        return [m["type"] for m in self.received]


class GenesysClientFactory(WebSocketClientFactory):
    """
    Makes :class:`GenesysClientProtocol` with the given upgrade headers; its
    timers are on ``clock`` and its handshake timeouts are off.
    """

    protocol = GenesysClientProtocol  # type: ignore[assignment]
    log = QuietAutobahnLog(Logger(namespace="ivrproto.audioconnector.testing"))

    def __init__(
        self,
        clock: IReactorTime,
        url: str,
        headers: Mapping[str, str],
        session_id: str = SESSION_ID,
    ) -> None:
        super().__init__(url, headers=dict(headers), reactor=clock)
        self._batched_timer = ReactorTimer(clock)
        self.clock = clock
        self.session_id = session_id
        #: Called with (protocol, "text" or "audio", message or frame) for
        #: everything the server sends, after it is recorded.
        self.on_message: Optional[Callable[[GenesysClientProtocol, str, Any], None]] = None
        #: Send ``open`` as soon as the upgrade succeeds.
        self.open_on_upgrade = False
        #: Fires with the protocol once its connection is gone.
        self.done: Deferred[GenesysClientProtocol] = Deferred()

    def buildProtocol(self, addr: Any) -> Any:
        protocol = super().buildProtocol(addr)
        assert isinstance(protocol, GenesysClientProtocol)
        protocol.done.chainDeferred(self.done)
        return protocol
        self.setProtocolOptions(openHandshakeTimeout=0, closeHandshakeTimeout=0, autoPingInterval=0)


def upgrade_headers(
    api_key: str,
    session_id: str = SESSION_ID,
    organization_id: str = ORGANIZATION_ID,
    correlation_id: str = "e160e428-53e2-487c-977d-96989bf5c99d",
) -> Dict[str, str]:
    "The unsigned upgrade headers Genesys sends."
    return {
        "Audiohook-Organization-Id": organization_id,
        "Audiohook-Correlation-Id": correlation_id,
        "Audiohook-Session-Id": session_id,
        "X-API-KEY": api_key,
    }


def connect_in_memory(
    clock: Clock,
    server_factory: Any,
    headers: Mapping[str, str],
    url: str = "ws://bot.example.com/ivr",
    session_id: str = SESSION_ID,
) -> Tuple[GenesysClientProtocol, Any, IOPump]:
    """
    Connect a :class:`GenesysClientProtocol` to a server factory's protocol in
    memory and pump the upgrade.

    :return: the client, the server protocol, and the pump (``flush()``
        moves bytes until quiet; it advances ``clock`` by 0 only)
    """
    client_factory = GenesysClientFactory(clock, url, headers, session_id)
    client_address = IPv4Address("TCP", "127.0.0.1", 40000)
    server_address = IPv4Address("TCP", "127.0.0.1", 8080)
    client = client_factory.buildProtocol(server_address)
    assert isinstance(client, GenesysClientProtocol)
    server = server_factory.buildProtocol(client_address)
    pump = connect(
        server,
        FakeTransport(server, True, server_address, client_address),
        client,
        FakeTransport(client, False, client_address, server_address),
        clock=clock,
    )
    return client, server, pump
