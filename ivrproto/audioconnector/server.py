"""
The Audio Connector WebSocket server: an Autobahn protocol that
authenticates the upgrade, routes on the request path (the connector id) and
hands every frame to a :class:`~.session.ConnectorSession`.  It holds no
protocol rules and no call logic.

Serve it with any Twisted server endpoint::

    factory = AudioConnectorFactory(reactor, authenticator, {"/ivr": new_listener}, prompts)
    serverFromString(reactor, "tcp:8080:interface=127.0.0.1").listen(factory)
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Callable, Dict, Mapping, Optional
from urllib.parse import urlsplit

from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.types import ConnectionDeny, ConnectionRequest
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IPushProducer, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from ivrproto._autobahn import QuietAutobahnLog, ReactorTimer, cancel_close_handshake_timer
from ivrproto.logthrottle import LogThrottle
from ivrproto.audioconnector.auth import Accepted, Authenticator, AuthRefused
from ivrproto.audioconnector.prompts import PromptLibrary
from ivrproto.audioconnector.session import (
    PROTOCOL_ERRORS,
    ConnectorCall,
    ConnectorListener,
    ConnectorSession,
    SessionSettings,
)

#: The largest text message accepted from the client (64 KiB).
MAX_MESSAGE_SIZE = 64 * 1024

#: Why an upgrade was refused, as the metrics label it: a bounded set
#: (401, 404, and 503 while the service drains).
REFUSALS = ("unauthorized", "unknown-path", "draining")

#: Makes the call logic of one call, given its session's commands.
NewListener = Callable[[ConnectorCall], ConnectorListener]


def _session_counts(session: ConnectorSession) -> Counter:  # type: ignore[type-arg]
    counts = Counter(session.protocol_errors)
    counts["frames_sent"] = session.frames_sent
    counts["rate_limit_pauses"] = session.rate_limit_pauses
    return counts


def normalize_path(path: str) -> str:
    "A request path as routes are keyed: no query, no trailing slash."
    path = urlsplit(path).path or "/"
    if len(path) > 1:
        path = path.rstrip("/") or "/"
    return path


@implementer(IPushProducer)
class _WriteWatch:
    """
    Registered with the transport as a streaming producer: the transport
    pauses it when its write buffer is full (the client stopped reading)
    and resumes it once the buffer has drained.  While paused it counts the
    audio written, and after ``timeout`` seconds it calls ``timed_out``.
    """

    def __init__(self, clock: IReactorTime, timeout: float, timed_out: Callable[[], None]) -> None:
        self._clock = clock
        self._timeout = timeout
        self._timed_out = timed_out
        self._timer: Optional[IDelayedCall] = None
        self.paused = False
        self.unsent = 0

    def pauseProducing(self) -> None:
        # Twisted calls this on every write while its buffer is full: only
        # the first call starts the count and the timer.
        if not self.paused:
            self.paused = True
            self.unsent = 0
            self._timer = self._clock.callLater(self._timeout, self._expired)

    def resumeProducing(self) -> None:
        self.paused = False
        self.unsent = 0
        self.cancel()

    def stopProducing(self) -> None:
        self.cancel()

    def cancel(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _expired(self) -> None:
        self._timer = None
        self._timed_out()


class AudioConnectorServerProtocol(WebSocketServerProtocol):
    """
    One Audio Connector connection: one session.
    """

    # Autobahn logs the upgrade request, API key and signature included, at
    # debug level: its own logging is replaced (see ``ivrproto._autobahn``).
    log = QuietAutobahnLog(Logger(namespace="ivrproto.audioconnector.autobahn"))
    _log = Logger()
    factory: "AudioConnectorFactory"

    def __init__(self) -> None:
        super().__init__()
        self.session: Optional[ConnectorSession] = None
        self._accepted: Optional[Accepted] = None
        self._route: Optional[NewListener] = None
        self._connector = ""
        self._writes: Optional[_WriteWatch] = None
        #: Audio frames not queued because the client stopped reading.
        self.frames_held_back = 0

    # -- Autobahn callbacks ----------------------------------------------------

    def connectionMade(self) -> None:
        super().connectionMade()
        f = self.factory
        self._writes = _WriteWatch(f.reactor, f.write_timeout, self._stopped_reading)
        # Autobahn unregisters it in dropConnection.
        self.registerProducer(self._writes, True)

    def onConnect(self, request: ConnectionRequest) -> "Deferred[None]":  # type: ignore[override]
        # Autobahn waits for a Deferred from onConnect (its typing says
        # otherwise): a refusal is answered after the authenticator's delay.
        f = self.factory
        target = self.http_request_uri
        headers: Mapping[str, str] = request.headers

        def accepted(result: Accepted) -> None:
            connector = normalize_path(target)
            route = f.routes.get(connector)
            if route is None:
                f.refused("unknown-path")
                f.bad_input.warn("unknown-path", "Audio Connector upgrade for an unknown path")
                raise ConnectionDeny(404, "Not Found")
            self._accepted, self._route, self._connector = result, route, connector

        def refused(failure: Failure) -> None:
            failure.trap(AuthRefused)
            f.refused("unauthorized")
            f.bad_input.warn(
                "refused",
                "Audio Connector upgrade refused: {reason}",
                reason=failure.value.reason,  # type: ignore[union-attr]
            )
            raise ConnectionDeny(401, "Unauthorized")

        if not f.accepting:
            # Draining: Genesys takes the action's failure path at once.
            f.refused("draining")
            raise ConnectionDeny(503, "Service Unavailable")
        d = f.authenticator.authenticate(headers, target)
        return d.addCallbacks(accepted, refused)

    def onOpen(self) -> None:
        f = self.factory
        assert self._accepted is not None and self._route is not None
        self.session = ConnectorSession(
            f.reactor,
            self,
            self._accepted,
            self._connector,
            self._route,
            f.prompts,
            f.settings,
            f.bad_input,
        )
        f.sessions.add(self.session)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        session = self.session
        if session is None:
            return
        try:
            if isBinary:
                session.audio_received(payload)
            else:
                session.text_received(payload)
        except Exception:
            self._log.failure("error while handling an Audio Connector message")

    def onClose(self, wasClean: bool, code: Optional[int], reason: Optional[str]) -> None:
        if self._writes is not None:
            self._writes.cancel()
        cancel_close_handshake_timer(self)
        session = self.session
        if session is None:
            return
        self.factory.session_closed(session)
        if self.localCloseCode == 1009:
            why = "message too large"
        else:
            why = "socket closed" if wasClean else "connection lost"
        try:
            session.connection_lost(why)
        except Exception:
            self._log.failure("error while ending an Audio Connector session")

    # -- SessionTransport ------------------------------------------------------

    def send_text(self, payload: bytes) -> None:
        if self.state == self.STATE_OPEN:
            self.sendMessage(payload, isBinary=False)

    def send_audio(self, frame: bytes) -> None:
        if self.state != self.STATE_OPEN:
            return
        writes = self._writes
        if writes is not None and writes.paused:
            # The client is not reading: queue no more than the bound.
            if writes.unsent + len(frame) > self.factory.max_write_buffer:
                self.frames_held_back += 1
                return
            writes.unsent += len(frame)
        self.sendMessage(frame, isBinary=True)

    def _stopped_reading(self) -> None:
        self._log.warn(
            "Audio Connector session {session_id}: dropping the connection: the client "
            "has not read for {timeout:g}s",
            session_id=None if self.session is None else self.session.session_id,
            timeout=self.factory.write_timeout,
        )
        if self.session is not None:
            self.session.abort("the client stopped reading")
        else:
            self.dropConnection(abort=True)

    def drop(self) -> None:
        self.dropConnection(abort=True)


class AudioConnectorFactory(WebSocketServerFactory):
    """
    Builds :class:`AudioConnectorServerProtocol` for every connection.

    :param reactor: the clock of every timer and of the audio pacing
    :param authenticator: checks the upgrade
    :param routes: request path (e.g. ``/ivr``) -> what makes a call's listener
    :param prompts: the prompt library shared by every call
    :param settings: how sessions behave
    :param max_message_size: the largest text (or binary) message accepted;
        a larger one closes the connection with 1009
    :param open_handshake_timeout: seconds for the upgrade (authentication's
        delay included)
    :param max_write_buffer: bytes of audio written to a client that has
        stopped reading (its socket's buffer full) before further frames are
        not queued
    :param write_timeout: seconds a client may leave the buffer full before
        the connection is dropped
    """

    protocol = AudioConnectorServerProtocol  # type: ignore[assignment]
    noisy = False
    log = QuietAutobahnLog(Logger(namespace="ivrproto.audioconnector.autobahn"))

    def __init__(
        self,
        reactor: IReactorTime,
        authenticator: Authenticator,
        routes: Mapping[str, NewListener],
        prompts: PromptLibrary,
        settings: SessionSettings = SessionSettings(),
        max_message_size: int = MAX_MESSAGE_SIZE,
        open_handshake_timeout: float = 10.0,
        close_handshake_timeout: float = 2.0,
        max_write_buffer: int = 64 * 1024,
        write_timeout: float = 10.0,
    ) -> None:
        super().__init__(server="ivrproto", reactor=reactor)
        self._batched_timer = ReactorTimer(reactor)
        self.reactor = reactor
        self.authenticator = authenticator
        self.routes: Dict[str, NewListener] = {normalize_path(p): r for p, r in routes.items()}
        self.prompts = prompts
        self.settings = settings
        self.max_write_buffer = max_write_buffer
        self.write_timeout = write_timeout
        #: Lines about what clients sent wrong, a few a minute.
        self.bad_input = LogThrottle(reactor, Logger(namespace="ivrproto.audioconnector"))
        #: The sessions open now.
        self.sessions: "set[ConnectorSession]" = set()
        #: Upgrades refused by authentication.
        self.refusals = 0
        #: Upgrades refused, by reason (:data:`REFUSALS`).
        self.refusals_by_reason: Dict[str, int] = dict.fromkeys(REFUSALS, 0)
        #: The counts of the sessions that have ended (see :meth:`counts`).
        self._ended = Counter()  # type: ignore[var-annotated]
        #: Whether new upgrades are taken (``False`` while the service drains:
        #: they are refused with 503).
        self.accepting = True
        self._idle_waiters: "list[Deferred[None]]" = []
        self.setProtocolOptions(
            maxFramePayloadSize=int(max_message_size),
            maxMessagePayloadSize=int(max_message_size),
            openHandshakeTimeout=open_handshake_timeout,
            closeHandshakeTimeout=close_handshake_timeout,
            # Genesys pings at the protocol level (``ping`` messages): no
            # WebSocket pings of our own.
            autoPingInterval=0,
            # Close with 1009 (not a TCP drop) for a message over the limit,
            # so that the client learns why.
            failByDrop=False,
            tcpNoDelay=True,
        )

    def __repr__(self) -> str:
        return f"<AudioConnectorFactory {sorted(self.routes)}>"

    def refused(self, reason: str) -> None:
        "Count an upgrade refused for ``reason`` (one of :data:`REFUSALS`)."
        self.refusals_by_reason[reason] += 1
        if reason == "unauthorized":
            self.refusals += 1

    def counts(self) -> Dict[str, Any]:
        """
        Every session's counts, those ended and those open: ``frames_sent``,
        ``rate_limit_pauses`` and ``protocol_errors`` (by kind).
        """
        total = Counter(self._ended)
        for session in self.sessions:
            total.update(_session_counts(session))
        return {
            "frames_sent": total["frames_sent"],
            "rate_limit_pauses": total["rate_limit_pauses"],
            "protocol_errors": {kind: total[kind] for kind in PROTOCOL_ERRORS},
        }

    def session_closed(self, session: ConnectorSession) -> None:
        "A session's socket has gone: tell the idle waiters when it was the last."
        if session in self.sessions:
            self._ended.update(_session_counts(session))
        self.sessions.discard(session)
        if not self.sessions:
            waiters, self._idle_waiters = self._idle_waiters, []
            for d in waiters:
                d.callback(None)

    def when_idle(self) -> "Deferred[None]":
        "Fires once no session is open (at once when none is)."
        d: Deferred[None] = Deferred()
        if self.sessions:
            self._idle_waiters.append(d)
        else:
            d.callback(None)
        return d

    def abort_sessions(self) -> None:
        "Drop the socket of every session still open."
        for session in list(self.sessions):
            session.abort("the service stopped")

