"""
The Call Control WebSocket client: an Autobahn protocol that performs the
handshake of contract section 3 and turns frames into calls on a
:class:`CallControlListener`.  It holds no call logic: that lives in the
session.  Embed it in your own Twisted code with :func:`connect_call_control`.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from typing import Any, Optional, Protocol as TypingProtocol
from urllib.parse import urlsplit

from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import (
    HostnameEndpoint,
    TCP4ClientEndpoint,
    TCP6ClientEndpoint,
    wrapClientTLS,
)
from twisted.internet.interfaces import (
    IDelayedCall,
    IReactorTCP,
    IReactorTime,
    IStreamClientEndpoint,
)
from twisted.internet.ssl import optionsForClientTLS
from twisted.logger import Logger

from ._autobahn import QuietAutobahnLog, ReactorTimer
from .config import is_loopback_host
from .errors import MalformedFrame
from .messages import (
    DEFAULT_CAPABILITIES,
    Command,
    Connect,
    Connected,
    DtmfReceived,
    HangupReceived,
    Ignored,
    PlatformError,
    encode,
    parse_event,
)

#: Close codes of the contract.
CLOSE_NORMAL = 1000
CLOSE_POLICY = 1008
CLOSE_INTERNAL_ERROR = 1011

_UPGRADE_STATUS = re.compile(r"upgrade failed \[(\d{3})\]")

#: Seconds a closed connection may take to go away before it is dropped.
CLOSE_GRACE = 3.0

#: Frames larger than this end the connection.  Control frames are small,
#: but ``media`` events carry audio of any size and must be ignored, not
#: refused: the bound only keeps a broken peer from exhausting memory.
MAX_MESSAGE_SIZE = 16 * 1024 * 1024


class CallControlListener(TypingProtocol):
    """
    What a :class:`CallControlProtocol` reports, as the frames arrive.
    Exceptions raised by these methods are logged by the protocol and never
    drop the connection.
    """

    def connected(self, protocol: "CallControlProtocol") -> None:
        "The platform answered ``connected``: the call is live."

    def handshake_failed(self, reason: str, status: Optional[int]) -> None:
        "The upgrade was refused, or ``error`` or a close came before ``connected``."

    def digit_received(self, digit: str) -> None:
        "A valid ``dtmf`` event."

    def hangup_received(self, reason: Optional[str]) -> None:
        "A ``hangup`` event."

    def platform_error(self, message: str, code: Optional[str]) -> None:
        "An ``error`` event after ``connected``."

    def connection_closed(self, code: Optional[int], reason: str) -> None:
        "The connection closed after ``connected``."


class CallControlProtocol(WebSocketClientProtocol):
    """
    One Call Control connection: one call.

    The factory gives it ``call_control_id`` and ``listener``.
    """

    # Autobahn's own logging (``log``) is replaced: see ``_autobahn``.
    log = QuietAutobahnLog(Logger(namespace="ivrproto.protocol.autobahn"))
    _log = Logger()
    factory: "CallControlFactory"

    def __init__(self) -> None:
        super().__init__()
        self.is_connected = False
        self._failed_upgrade: Optional[str] = None
        self._reported = False
        self._drop_timer: Optional[IDelayedCall] = None
        self.ignored_frames = 0

    # -- Autobahn callbacks ----------------------------------------------------

    def failHandshake(self, reason: str) -> None:
        self._failed_upgrade = reason
        super().failHandshake(reason)

    def onOpen(self) -> None:
        f = self.factory
        self.sendMessage(encode(Connect(f.call_control_id, f.capabilities)), isBinary=False)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        if isBinary:
            self.ignored_frames += 1
            return
        try:
            event = parse_event(payload)
        except MalformedFrame as e:
            self.ignored_frames += 1
            self._log.warn(
                "{call_control_id}: ignored a frame: {reason}",
                call_control_id=self.factory.call_control_id,
                reason=e.reason,
            )
            return
        try:
            self._dispatch(event)
        except Exception:
            self._log.failure(
                "{call_control_id}: error while handling {event}",
                call_control_id=self.factory.call_control_id,
                event=type(event).__name__,
            )

    def onClose(self, wasClean: bool, code: Optional[int], reason: Optional[str]) -> None:
        # Autobahn leaves its closing-handshake timer scheduled after the
        # connection is gone (it fires as a no-op); cancel it with the
        # connection so that nothing of an ended call stays on the reactor.
        if self.closeHandshakeTimeoutCall is not None:
            self.closeHandshakeTimeoutCall.cancel()
            self.closeHandshakeTimeoutCall = None
        if self._drop_timer is not None:
            if self._drop_timer.active():
                self._drop_timer.cancel()
            self._drop_timer = None
        listener = self.factory.listener
        try:
            if self.is_connected:
                listener.connection_closed(code, describe_close(code, reason))
            elif not self._reported:
                self._reported = True
                status = None
                why = describe_close(code, reason)
                if self._failed_upgrade is not None:
                    match = _UPGRADE_STATUS.search(self._failed_upgrade)
                    status = int(match.group(1)) if match else None
                    why = f"upgrade refused (HTTP {status})" if status else "upgrade failed"
                listener.handshake_failed(why, status)
        except Exception:
            self._log.failure(
                "{call_control_id}: error while handling the close",
                call_control_id=self.factory.call_control_id,
            )

    # -- ours ------------------------------------------------------------------

    def _dispatch(self, event: object) -> None:
        listener = self.factory.listener
        if not self.is_connected:
            if isinstance(event, Connected):
                if event.call_control_id not in (None, self.factory.call_control_id):
                    self._reported = True
                    self.close()
                    listener.handshake_failed("connected for another call", None)
                    return
                self.is_connected = True
                listener.connected(self)
            elif isinstance(event, PlatformError):
                self._reported = True
                self.close()
                listener.handshake_failed(f"refused: {event.message}", None)
            else:
                self.ignored_frames += 1
            return
        if isinstance(event, DtmfReceived):
            listener.digit_received(event.digit)
        elif isinstance(event, HangupReceived):
            listener.hangup_received(event.reason)
        elif isinstance(event, PlatformError):
            listener.platform_error(event.message, event.code)
        elif isinstance(event, Ignored):
            self.ignored_frames += 1
        # A second ``connected`` carries nothing new: ignored.

    def send_command(self, command: Command) -> None:
        """
        Send one command as a text frame.
        """
        self.sendMessage(encode(command), isBinary=False)

    def close(self) -> None:
        """
        Close normally; drop the connection if the platform has not closed
        its end within :data:`CLOSE_GRACE` seconds.
        """
        self.sendClose(CLOSE_NORMAL)
        if self._drop_timer is None:
            self._drop_timer = self.factory.reactor.callLater(
                CLOSE_GRACE, self.dropConnection, abort=True
            )

    def abort(self) -> None:
        """
        Drop the connection at once.
        """
        self._reported = True
        self.dropConnection(abort=True)


def _is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def describe_close(code: Optional[int], reason: Optional[str]) -> str:
    """
    A short description of a close, for outcomes and logs.
    """
    if code == CLOSE_INTERNAL_ERROR:
        return "platform internal error (1011)"
    if code == CLOSE_POLICY:
        return "handshake refused by policy (1008)"
    if code == CLOSE_NORMAL:
        return "closed normally (1000)"
    if code is None or code == 1006:
        return "connection lost"
    return f"closed with code {code}"


class CallControlFactory(WebSocketClientFactory):
    """
    Makes the :class:`CallControlProtocol` of one call.

    :param url: the ``ws://`` or ``wss://`` URL of the Call Control endpoint
    :param token: the bearer token sent on the upgrade
    """

    protocol = CallControlProtocol  # type: ignore[assignment]
    noisy = False
    log = QuietAutobahnLog(Logger(namespace="ivrproto.protocol.autobahn"))

    def __init__(
        self,
        reactor: IReactorTime,
        url: str,
        token: str,
        call_control_id: str,
        listener: CallControlListener,
        capabilities: tuple[str, ...] = DEFAULT_CAPABILITIES,
        open_handshake_timeout: float = 10.0,
        auto_ping_interval: float = 20.0,
        auto_ping_timeout: float = 10.0,
    ) -> None:
        super().__init__(
            url,
            headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
            reactor=reactor,
        )
        self._batched_timer = ReactorTimer(reactor)
        self.call_control_id = call_control_id
        self.listener = listener
        self.capabilities = capabilities
        self.setProtocolOptions(
            maxFramePayloadSize=MAX_MESSAGE_SIZE,
            maxMessagePayloadSize=MAX_MESSAGE_SIZE,
            openHandshakeTimeout=open_handshake_timeout,
            closeHandshakeTimeout=2.0,
            # Autobahn would time the server's TCP drop on the global
            # reactor; ``close`` keeps its own timer on ours instead.
            serverConnectionDropTimeout=0,
            autoPingInterval=auto_ping_interval,
            autoPingTimeout=auto_ping_timeout,
            tcpNoDelay=True,
        )

    def __repr__(self) -> str:
        # The default repr would show the headers, bearer token included.
        return f"<CallControlFactory {self.url} {self.call_control_id!r}>"


@functools.lru_cache(maxsize=16)
def _websocket_target(url: str) -> tuple[bool, str, int, bool]:
    """
    ``(TLS?, host, port, host is an IP address?)`` for a Call Control URL
    (the same for every call: worked out once).
    """
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.scheme == "wss":
        port = parts.port or 443
    elif parts.scheme == "ws" and is_loopback_host(host):
        port = parts.port or 80
    else:
        raise ValueError("Call Control needs wss:// (ws:// only for loopback hosts)")
    return parts.scheme == "wss", host, port, _is_ip_literal(host)


def connect_call_control(
    reactor: IReactorTCP,
    url: str,
    token: str,
    call_control_id: str,
    listener: CallControlListener,
    connect_timeout: float = 10.0,
    **options: float,
) -> Deferred[CallControlProtocol]:
    """
    Open a Call Control connection for one call.

    TLS with hostname verification is used for ``wss://``; plain ``ws://``
    is refused for any host that is not loopback.

    :return: fires with the protocol once TCP (and TLS) is up; the handshake's
        result is reported to ``listener``
    """
    secure, host, port, ip_literal = _websocket_target(url)
    factory = CallControlFactory(reactor, url, token, call_control_id, listener, **options)  # type: ignore[arg-type]
    endpoint: IStreamClientEndpoint
    if ip_literal:
        # No name to resolve: skip HostnameEndpoint's resolver round and
        # connection racing, which cost more than the rest of the connect.
        kind = TCP6ClientEndpoint if ":" in host else TCP4ClientEndpoint
        endpoint = kind(reactor, host, port, timeout=connect_timeout)
    else:
        endpoint = HostnameEndpoint(reactor, host, port, timeout=connect_timeout)
    if secure:
        endpoint = wrapClientTLS(optionsForClientTLS(host), endpoint)
    connecting: Deferred[Any] = endpoint.connect(factory)
    return connecting
