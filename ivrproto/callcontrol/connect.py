"""
Opening a Call Control connection: the Autobahn factory that makes the
:class:`~ivrproto.callcontrol.protocol.CallControlProtocol` of a call, and
:func:`connect_call_control`, which chooses the endpoint (TLS for
``wss://``, no resolver for an IP address, ``ws://`` only to loopback).

Every call goes to the same URL with the same token (until it is renewed)
and options, so :func:`connect_call_control` keeps one
:class:`CallControlFactory` per (reactor, URL, token, options) and gives
each connection a small :class:`_OneCall` factory that names the call on
the protocol.  Building an Autobahn factory per call costs a
``random.seed()``, a timer, a URL parse and the option checks.
"""

from __future__ import annotations

import functools
import ipaddress
from typing import Any, Optional, cast
from urllib.parse import urlsplit

from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import (
    HostnameEndpoint,
    TCP4ClientEndpoint,
    TCP6ClientEndpoint,
    wrapClientTLS,
)
from twisted.internet.interfaces import IAddress, IReactorTCP, IReactorTime, IStreamClientEndpoint
from twisted.internet.protocol import Factory
from twisted.internet.ssl import optionsForClientTLS
from twisted.logger import Logger

from ivrproto._autobahn import QuietAutobahnLog, ReactorTimer
from ivrproto._net import is_loopback_host
from ivrproto.callcontrol.protocol import (
    CLOSE_GRACE,
    MAX_MESSAGE_SIZE,
    MAX_WRITE_BUFFER,
    CallControlListener,
    CallControlProtocol,
)
from ivrproto.logthrottle import LogThrottle
from ivrproto.messages import DEFAULT_CAPABILITIES

__all__ = ["CallControlFactory", "connect_call_control"]

#: The protocol options Autobahn would copy from the factory in
#: ``_connectionMade``; :meth:`CallControlFactory.buildProtocol` copies them
#: instead (``CallControlProtocol.CONFIG_ATTRS`` is empty).
_OPTION_NAMES: tuple[str, ...] = tuple(WebSocketClientProtocol.CONFIG_ATTRS)

#: How many shared factories :func:`connect_call_control` keeps before it
#: starts afresh (one per token is in use at a time).
_FACTORY_CACHE_SIZE = 8


def _is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


class CallControlFactory(WebSocketClientFactory):
    """
    Makes :class:`CallControlProtocol` connections to one URL with one token.

    :param url: the ``ws://`` or ``wss://`` URL of the Call Control endpoint
    :param token: the bearer token sent on the upgrade
    :param call_control_id: the call of the protocols this factory builds
        itself; ``None`` for a factory shared by many calls, whose protocols
        are named by :class:`_OneCall`
    :param listener: what those protocols report to
    """

    protocol = CallControlProtocol  # type: ignore[assignment]
    noisy = False
    log = QuietAutobahnLog(Logger(namespace="ivrproto.callcontrol.protocol.autobahn"))

    def __init__(
        self,
        reactor: IReactorTime,
        url: str,
        token: str,
        call_control_id: Optional[str],
        listener: Optional[CallControlListener],
        capabilities: tuple[str, ...] = DEFAULT_CAPABILITIES,
        open_handshake_timeout: float = 10.0,
        auto_ping_interval: float = 20.0,
        auto_ping_timeout: float = 10.0,
        max_frame_size: int = MAX_MESSAGE_SIZE,
        max_write_buffer: int = MAX_WRITE_BUFFER,
        close_timeout: float = CLOSE_GRACE,
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
        self.max_write_buffer = int(max_write_buffer)
        self.max_frame_size = int(max_frame_size)
        #: Lines about what the platform sent wrong, a few a minute.
        self.bad_input = LogThrottle(reactor, Logger(namespace="ivrproto.protocol"))
        self.close_timeout = close_timeout
        self.setProtocolOptions(
            maxFramePayloadSize=int(max_frame_size),
            maxMessagePayloadSize=int(max_frame_size),
            openHandshakeTimeout=open_handshake_timeout,
            # On our reactor (``ReactorTimer``): bounded.
            closeHandshakeTimeout=min(2.0, close_timeout),
            # Autobahn would time the server's TCP drop on the global
            # reactor; ``close`` and ``onCloseFrame`` keep their own timer
            # (``close_timeout``) on ours instead.
            serverConnectionDropTimeout=0,
            # Fail by dropping TCP (RFC 6455 section 7.1.7): nothing more of
            # a broken frame is read or parsed.
            failByDrop=True,
            autoPingInterval=auto_ping_interval,
            autoPingTimeout=auto_ping_timeout,
            tcpNoDelay=True,
        )

    def buildProtocol(self, addr: Optional[IAddress]) -> CallControlProtocol:  # type: ignore[override]
        protocol = cast(CallControlProtocol, super().buildProtocol(addr))
        # Autobahn's own copy of these (``_connectionMade``) would also
        # pformat them for a debug line: see ``CallControlProtocol.CONFIG_ATTRS``.
        protocol.__dict__.update({name: getattr(self, name) for name in _OPTION_NAMES})
        protocol.call_control_id = self.call_control_id  # type: ignore[assignment]
        protocol.listener = self.listener  # type: ignore[assignment]
        protocol.capabilities = self.capabilities
        return protocol

    def __repr__(self) -> str:
        # The default repr would show the headers, bearer token included.
        return f"<CallControlFactory {self.url} {self.call_control_id!r}>"


class _OneCall(Factory):
    """
    The factory an endpoint connects for one call: the protocol comes from
    the shared :class:`CallControlFactory` (its ``factory``), and is named
    for this call.
    """

    noisy = False

    def __init__(
        self,
        shared: CallControlFactory,
        call_control_id: str,
        listener: CallControlListener,
        capabilities: tuple[str, ...],
    ) -> None:
        self._shared = shared
        self._call_control_id = call_control_id
        self._listener = listener
        self._capabilities = capabilities

    def buildProtocol(self, addr: Optional[IAddress]) -> CallControlProtocol:  # type: ignore[override]
        protocol = self._shared.buildProtocol(addr)
        protocol.call_control_id = self._call_control_id
        protocol.listener = self._listener
        protocol.capabilities = self._capabilities
        return protocol


_factories: dict[tuple[Any, ...], CallControlFactory] = {}


def shared_factory(
    reactor: IReactorTime, url: str, token: str, **options: float
) -> CallControlFactory:
    """
    The :class:`CallControlFactory` for ``url``, ``token`` and ``options``
    on ``reactor``, made on first use.  A renewed token makes a new one; the
    cache starts afresh when it holds :data:`_FACTORY_CACHE_SIZE`.
    """
    key = (reactor, url, token, tuple(sorted(options.items())))
    factory = _factories.get(key)
    if factory is None:
        if len(_factories) >= _FACTORY_CACHE_SIZE:
            _factories.clear()
        factory = CallControlFactory(reactor, url, token, None, None, **options)  # type: ignore[arg-type]
        _factories[key] = factory
    return factory


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
    capabilities: tuple[str, ...] = DEFAULT_CAPABILITIES,
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
    factory = _OneCall(
        shared_factory(reactor, url, token, **options),  # type: ignore[arg-type]
        call_control_id,
        listener,
        capabilities,
    )
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
