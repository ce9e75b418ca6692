"""
In-memory fakes for testing code that embeds the Call Control protocol, in
the spirit of ``treq.testing``: no sockets, no real time.

- :class:`RecordingListener` is a :class:`~ivrproto.protocol.CallControlListener`
  that records what it is told.
- :class:`ScriptedPlatformProtocol` is a fake Call Control server that answers
  the handshake as a :class:`PlatformScript` says and lets the test push
  frames and closes at will.
- :func:`connect_in_memory` connects a real
  :class:`~ivrproto.protocol.CallControlProtocol` to it over
  :mod:`twisted.test.iosim`, with every Autobahn timer on a
  :class:`~twisted.internet.task.Clock`.

A typical test::

    clock = Clock()
    listener = RecordingListener()
    client, server, pump = connect_in_memory(clock, listener)
    server.send_event("dtmf", digit="1")
    pump.flush()
    assert listener.digits == ["1"]
"""

from __future__ import annotations

import json
from http import HTTPStatus
from typing import Any, Optional, Union

import attrs
from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.protocol import WebSocketProtocol
from autobahn.websocket.types import ConnectionDeny, ConnectionRequest
from twisted.internet.address import IPv4Address
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import Clock
from twisted.logger import Logger
from twisted.test.iosim import FakeTransport, IOPump, connect

from ivrproto._autobahn import QuietAutobahnLog, ReactorTimer
from ivrproto.callcontrol.connect import CallControlFactory
from ivrproto.callcontrol.protocol import CallControlListener, CallControlProtocol

__all__ = [
    "ANSWERS",
    "ListenerFailure",
    "PlatformScript",
    "RecordingListener",
    "ScriptedPlatformFactory",
    "ScriptedPlatformProtocol",
    "URL",
    "connect_in_memory",
]

#: The URL the in-memory client believes it connects to.
URL = "ws://127.0.0.1:9/api/v2/callcontrol/websocket"

#: How :class:`ScriptedPlatformProtocol` answers the connect frame:
#: ``connected``; an ``error`` event followed by a close 1008;
#: a close 1008 without an event; or nothing at all.
ANSWERS = ("connected", "error", "policy-close", "nothing")

_LISTENER_METHODS = (
    "connected",
    "handshake_failed",
    "digit_received",
    "hangup_received",
    "platform_error",
    "connection_closed",
)


class ListenerFailure(Exception):
    """
    What :class:`RecordingListener` raises when asked to (``raise_in``).
    """


@attrs.define
class RecordingListener:
    """
    A :class:`~ivrproto.protocol.CallControlListener` that records every call.

    :ivar calls: ``(method_name, *args)`` for each call, in order
    :ivar raise_in: the name of a listener method that raises
        :class:`ListenerFailure` after recording its call, or ``None``
    """

    raise_in: Optional[str] = attrs.field(
        default=None,
        validator=attrs.validators.optional(attrs.validators.in_(_LISTENER_METHODS)),
    )
    calls: list[tuple[Any, ...]] = attrs.field(factory=list, init=False)

    def _record(self, name: str, *args: Any) -> None:
        self.calls.append((name, *args))
        if name == self.raise_in:
            raise ListenerFailure(name)

    def connected(self, protocol: CallControlProtocol) -> None:
        "See :meth:`CallControlListener.connected`: recorded."
        self._record("connected", protocol)

    def handshake_failed(self, reason: str, status: Optional[int]) -> None:
        "See :meth:`CallControlListener.handshake_failed`: recorded."
        self._record("handshake_failed", reason, status)

    def digit_received(self, digit: str) -> None:
        "See :meth:`CallControlListener.digit_received`: recorded."
        self._record("digit_received", digit)

    def hangup_received(self, reason: Optional[str]) -> None:
        "See :meth:`CallControlListener.hangup_received`: recorded."
        self._record("hangup_received", reason)

    def platform_error(self, message: str, code: Optional[str]) -> None:
        "See :meth:`CallControlListener.platform_error`: recorded."
        self._record("platform_error", message, code)

    def connection_closed(self, code: Optional[int], reason: str) -> None:
        "See :meth:`CallControlListener.connection_closed`: recorded."
        self._record("connection_closed", code, reason)

    # -- accessors ------------------------------------------------------------

    def names(self) -> list[str]:
        """
        :return: the name of each method called, in order
        """
        return [call[0] for call in self.calls]

    def args_of(self, name: str) -> list[tuple[Any, ...]]:
        """
        :param name: a listener method name
        :return: the arguments of each call of that method, in order
        """
        return [call[1:] for call in self.calls if call[0] == name]

    @property
    def digits(self) -> list[str]:
        """
        Every digit received, in order.
        """
        return [args[0] for args in self.args_of("digit_received")]


@attrs.frozen
class PlatformScript:
    """
    How a :class:`ScriptedPlatformProtocol` answers the upgrade and the
    connect frame.

    :ivar refuse_status: refuse the upgrade with this HTTP status, or ``None``
        to accept it
    :ivar answer: one of :data:`ANSWERS`
    :ivar connected_id: the ``callControlId`` sent in ``connected``; ``None``
        echoes the one of the connect frame
    :ivar error_message: the ``message`` of the ``error`` answer
    """

    refuse_status: Optional[int] = None
    answer: str = attrs.field(default="connected", validator=attrs.validators.in_(ANSWERS))
    connected_id: Optional[str] = None
    error_message: str = "no active call with that id"


class ScriptedPlatformProtocol(WebSocketServerProtocol):
    """
    The server end of one in-memory Call Control connection.

    :ivar request: the upgrade request, once received
    :ivar received: every frame from the client, in order: the decoded JSON
        of a text frame, or the raw ``bytes`` of a binary frame or of a text
        frame that is not JSON
    :ivar closed: ``(was_clean, code, reason)`` once the connection closed
    """

    # Autobahn's default logger would log the upgrade request (bearer token
    # included) at debug level.
    log = QuietAutobahnLog(Logger(namespace="ivrproto.testing.autobahn"))
    factory: "ScriptedPlatformFactory"

    def __init__(self) -> None:
        super().__init__()
        self.request: Optional[ConnectionRequest] = None
        self.received: list[Any] = []
        self.closed: Optional[tuple[bool, Optional[int], Optional[str]]] = None

    @property
    def authorization(self) -> Optional[str]:
        """
        The ``Authorization`` header of the upgrade, if any.
        """
        if self.request is None:
            return None
        return self.request.headers.get("authorization")

    @property
    def can_send(self) -> bool:
        """
        Whether frames can be sent (the upgrade succeeded, no close yet).
        """
        return self.state == WebSocketProtocol.STATE_OPEN

    # -- Autobahn callbacks ----------------------------------------------------

    def onConnect(self, request: ConnectionRequest) -> None:
        self.request = request
        status = self.factory.script.refuse_status
        if status is not None:
            try:
                phrase = HTTPStatus(status).phrase
            except ValueError:
                phrase = "Refused"
            raise ConnectionDeny(status, phrase)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        frame: Any = payload
        if not isBinary:
            try:
                frame = json.loads(payload)
            except ValueError:
                pass
        first = not self.received
        self.received.append(frame)
        if first:
            self._answer(frame)

    def onClose(self, wasClean: bool, code: Optional[int], reason: Optional[str]) -> None:
        self.closed = (wasClean, code, reason)

    def _answer(self, frame: Any) -> None:
        script = self.factory.script
        if script.answer == "connected":
            asked = frame.get("callControlId") if isinstance(frame, dict) else None
            self.send_event(
                "connected",
                callControlId=script.connected_id or asked,
                session={"id": "session-1", "media": "audio"},
            )
        elif script.answer == "error":
            self.send_event("error", message=script.error_message)
            self.close(1008, script.error_message)
        elif script.answer == "policy-close":
            self.close(1008, "bad handshake frame")

    # -- what a test does --------------------------------------------------------

    def send_event(self, event: str, **fields: Any) -> None:
        """
        Send ``{"event": event, **fields}`` as a text frame.
        """
        self.send_json({"event": event, **fields})

    def send_json(self, value: Any) -> None:
        """
        Send any JSON value (an object or not) as a text frame.
        """
        self.send_text(json.dumps(value))

    def send_text(self, text: Union[str, bytes]) -> None:
        """
        Send a text frame with this payload, JSON or not.
        """
        payload = text.encode("utf-8") if isinstance(text, str) else text
        self.sendMessage(payload, isBinary=False)

    def send_binary(self, payload: bytes) -> None:
        """
        Send a binary frame.
        """
        self.sendMessage(payload, isBinary=True)

    def close(self, code: int = 1000, reason: str = "") -> None:
        """
        Start a closing handshake with any close code (Autobahn's
        ``sendClose`` refuses 1008 and 1011, which the contract uses).
        """
        if self.can_send:
            self.sendCloseFrame(code=code, reasonUtf8=reason.encode("utf-8")[:120])


class ScriptedPlatformFactory(WebSocketServerFactory):
    """
    Builds :class:`ScriptedPlatformProtocol` with all of its timers on
    ``clock``; handshake timeouts and auto-ping are off.

    :param clock: where Autobahn's timers go
    :param script: how the handshake is answered
    """

    protocol = ScriptedPlatformProtocol  # type: ignore[assignment]
    log = QuietAutobahnLog(Logger(namespace="ivrproto.testing.autobahn"))

    def __init__(self, clock: IReactorTime, script: PlatformScript = PlatformScript()) -> None:
        super().__init__(URL, server="ivrproto-testing", reactor=clock)
        self._batched_timer = ReactorTimer(clock)
        self.script = script
        self.setProtocolOptions(
            openHandshakeTimeout=0, closeHandshakeTimeout=0, autoPingInterval=0
        )


def connect_in_memory(
    clock: Clock,
    listener: CallControlListener,
    call_control_id: str = "call-1",
    token: str = "tok",
    server: PlatformScript = PlatformScript(),
    **factory_options: Any,
) -> tuple[CallControlProtocol, ScriptedPlatformProtocol, IOPump]:
    """
    Connect a :class:`~ivrproto.protocol.CallControlProtocol` to a
    :class:`ScriptedPlatformProtocol` in memory and run the handshake as far
    as the script lets it go.

    :param clock: the reactor of both ends; the pump advances it by 0 only
    :param listener: the client's :class:`~ivrproto.protocol.CallControlListener`
    :param call_control_id: the call the client asks for
    :param token: the bearer token of the upgrade
    :param server: how the fake platform answers
    :param factory_options: more keyword arguments of
        :class:`~ivrproto.protocol.CallControlFactory`
    :return: the client protocol, the server protocol, and the
        :class:`~twisted.test.iosim.IOPump` that moves bytes between them
        (``flush()`` until quiet)
    """
    client_factory = CallControlFactory(
        clock, URL, token, call_control_id, listener, **factory_options
    )
    server_factory = ScriptedPlatformFactory(clock, server)
    client_address = IPv4Address("TCP", "127.0.0.1", 40000)
    server_address = IPv4Address("TCP", "127.0.0.1", 9)
    client = client_factory.buildProtocol(server_address)
    platform = server_factory.buildProtocol(client_address)
    pump = connect(
        platform,
        FakeTransport(platform, True, server_address, client_address),
        client,
        FakeTransport(client, False, client_address, server_address),
        clock=clock,
    )
    return client, platform, pump  # type: ignore[return-value]
