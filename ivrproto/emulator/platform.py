"""
The emulated platform: the token endpoint, the profile API, the External
Contacts identifier lookup and the Call Control WebSocket, on one HTTP port
(contract sections 1 to 3).

This module is the facade (:class:`Platform`: listen, stop, expect calls,
issue tokens) and the routing; the endpoints are in
:mod:`ivrproto.emulator.auth` (tokens), :mod:`ivrproto.emulator.rest`
(profiles and contacts), :mod:`ivrproto.emulator.callcontrol` (the
WebSocket) and :mod:`ivrproto.emulator.byhand` (calls placed by hand).

This is an independent implementation of the server side of the contract:
it does not import ivrproto's client modules and does its own parsing.
"""

from __future__ import annotations

import hmac
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence, Union

import attrs
from autobahn.twisted.resource import WebSocketResource
from twisted.internet.defer import Deferred, gatherResults, maybeDeferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import (
    IDelayedCall,
    IListeningPort,
    IReactorTime,
    IStreamServerEndpoint,
)
from twisted.logger import Logger
from twisted.web.resource import IResource

from ivrproto.emulator.auth import ALL_SCOPES, TokenResource, TokenStore, checked_client_scopes
from ivrproto.emulator.byhand import HandCallsResource, HandPlacement
from ivrproto.emulator.calllog import CallLog
from ivrproto.emulator.callcontrol import WS_SCOPES, CallControlServerFactory
from ivrproto.emulator.faults import FAULT_KINDS, Fault, Faults
from ivrproto.emulator.rest import ContactsResource, ProfileResource, checked_profiles, iso_utc
from ivrproto.emulator.routes import WEBSOCKET_PATH, Root
from ivrproto.emulator.script import parse_script
from ivrproto.emulator.site import ConnectionTracker, FirstRequestRouter, QuietSite

__all__ = ["ALL_SCOPES", "FAULT_KINDS", "Fault", "Faults", "Platform", "PlatformStats"]


@attrs.define
class PlatformStats:
    """
    Counters, for tests and benchmarks.
    """

    token_requests: int = 0
    tokens_issued: int = 0
    profile_requests: int = 0
    contact_requests: int = 0
    ws_upgrades: int = 0
    ws_refused: int = 0
    calls_connected: int = 0


class Platform:
    """
    An emulated platform: tokens, profiles, external contacts and Call
    Control on one port.

    :param reactor: provides time, and listening when ``listen`` is given a
        string
    :param clients: client id -> client secret
    :param profiles: external id -> the profile's attributes
    :param token_ttl: the lifetime of issued tokens, in seconds
    :param client_scopes: client id -> the scopes it may have; by default
        every client may have all three
    :param close_after_transfer: seconds between a ``transfer`` command and
        the server's close (1000); 0 closes right away

    :ivar stats: counters (:class:`PlatformStats`)
    :ivar faults: fault injection (:class:`Faults`)
    """

    _log = Logger()

    def __init__(
        self,
        reactor: Any,
        *,
        clients: Mapping[str, str] = {"ivrproto-local": "local-secret"},
        profiles: Mapping[str, Mapping[str, Any]] = {},
        token_ttl: int = 3600,
        client_scopes: Optional[Mapping[str, Sequence[str]]] = None,
        close_after_transfer: float = 0.0,
    ) -> None:
        if token_ttl <= 0:
            raise ValueError("token_ttl must be positive")
        if close_after_transfer < 0:
            raise ValueError("close_after_transfer must not be negative")
        self._reactor = reactor
        self._clients = dict(clients)
        self._profiles = checked_profiles(profiles)
        self.token_ttl = int(token_ttl)
        self._client_scopes = checked_client_scopes(client_scopes or {})
        self.close_after_transfer = float(close_after_transfer)
        self.stats = PlatformStats()
        self.faults = Faults()
        self._tokens = TokenStore(reactor)
        self._calls: dict[str, CallLog] = {}
        self._timers: set[IDelayedCall] = set()
        self._by_hand = HandPlacement(self)
        self._port: Optional[IListeningPort] = None
        self._base_url: Optional[str] = None
        self._date_modified = iso_utc(reactor.seconds())
        ws = CallControlServerFactory(self, reactor)
        self._root = Root(
            TokenResource(self),
            ContactsResource(self),
            HandCallsResource(self._by_hand),
            WebSocketResource(ws),
            lambda external_id: ProfileResource(self, external_id),
        )
        site = QuietSite(self._root, reactor=reactor)
        self._tracker = ConnectionTracker(FirstRequestRouter(site, ws, WEBSOCKET_PATH, reactor))

    # Public API

    def resource(self) -> IResource:
        """
        :return: the root resource: ``/oauth/token``,
            ``/api/v2/profiles/external/<id>``,
            ``/api/v2/externalcontacts/identifierlookup/contacts`` and
            ``/api/v2/callcontrol/websocket``
        """
        return self._root

    def listen(
        self,
        endpoint: Union[str, IStreamServerEndpoint] = "tcp:0:interface=127.0.0.1",
    ) -> Deferred[IListeningPort]:
        """
        Start listening; :attr:`base_url` is set once this fires.

        :param endpoint: a server endpoint, or an endpoint string; a ``tcp``
            string without a ``backlog`` gets ``backlog=1024`` (Twisted's
            default of 50 makes a burst of calls time out)
        """
        if isinstance(endpoint, str):
            if endpoint.split(":", 1)[0] in ("tcp", "tcp6") and "backlog=" not in endpoint:
                endpoint += ":backlog=1024"
            endpoint = serverFromString(self._reactor, endpoint)

        def listening(port: IListeningPort) -> IListeningPort:
            self._port = port
            address = port.getHost()
            host = getattr(address, "host", "127.0.0.1")
            if host in ("0.0.0.0", ""):
                host = "127.0.0.1"
            elif host == "::":
                host = "::1"
            if ":" in host:
                host = f"[{host}]"
            self._base_url = f"http://{host}:{address.port}"  # type: ignore[attr-defined]
            return port

        return endpoint.listen(self._tracker).addCallback(listening)  # type: ignore[union-attr]

    @property
    def base_url(self) -> str:
        """
        ``http://127.0.0.1:<port>``, once listening.
        """
        if self._base_url is None:
            raise RuntimeError("the platform is not listening")
        return self._base_url

    @property
    def ws_url(self) -> str:
        """
        The Call Control WebSocket URL, once listening.
        """
        return "ws" + self.base_url[4:] + WEBSOCKET_PATH.decode("ascii")

    def forget(self, call_id: str) -> None:
        """
        Drop the record of a finished call (long load runs keep memory
        bounded this way).
        """
        record = self._calls.get(call_id)
        if record is not None and record.finished:
            del self._calls[call_id]

    @property
    def calls(self) -> Mapping[str, CallLog]:
        """
        Every expected call, by call id.
        """
        return self._calls

    def expect_call(
        self,
        call_id: str,
        external_id: str,
        script: Sequence[str] = (),
        handshake: str = "ok",
    ) -> CallLog:
        """
        Expect a Call Control connection for ``call_id``.

        :param call_id: the ``callControlId`` the client will present
        :param external_id: the caller's external id
        :param script: the caller script (see :class:`~ivrproto.emulator.scripted.ScriptedCall`)
        :param handshake: ``"ok"``, or ``"error"`` to answer the handshake
            with an ``error`` event and a close
        :return: the record of the call, filled in as it goes
        :raises ValueError: a bad script step or handshake, or a call with
            that id is already expected and not finished
        """
        if not isinstance(call_id, str) or not call_id:
            raise ValueError("call_id must be a non-empty string")
        if handshake not in ("ok", "error"):
            raise ValueError(f'handshake must be "ok" or "error", not {handshake!r}')
        steps = parse_script(script)
        existing = self._calls.get(call_id)
        if existing is not None and not existing.finished:
            raise ValueError(f"call {call_id!r} is already expected")
        record = CallLog(
            call_id, external_id, tuple(script), handshake, steps=steps  # type: ignore[arg-type]
        )
        self._calls[call_id] = record
        return record

    def announce_calls_to(
        self,
        intake_url: str,
        announcer: Callable[[CallLog], object],
        on_call: Optional[Callable[[CallLog], object]] = None,
    ) -> None:
        """
        Announce calls placed with :meth:`place_call` (and so ``POST
        /emulator/calls``) to a service's intake (see
        :meth:`~ivrproto.emulator.byhand.HandPlacement.announce_to`).
        :func:`~ivrproto.emulator.scenario.place_calls` sets this up when it
        is given an intake.
        """
        self._by_hand.announce_to(intake_url, announcer, on_call)

    @property
    def intake_url(self) -> Optional[str]:
        """
        Where :meth:`place_call` announces calls, if anywhere.
        """
        return self._by_hand.intake_url

    def place_call(
        self,
        external_id: str,
        script: Sequence[str] = (),
        *,
        call_id: Optional[str] = None,
        announce: bool = True,
    ) -> tuple[CallLog, Optional[str]]:
        """
        Place a call by hand: expect it and, when asked and an intake is
        known (:meth:`announce_calls_to`), announce it there (see
        :meth:`~ivrproto.emulator.byhand.HandPlacement.place`).
        """
        return self._by_hand.place(external_id, script, call_id, announce)

    def issue_token(
        self,
        client_id: str = "ivrproto-local",
        scopes: Optional[Iterable[str]] = None,
        ttl: Optional[float] = None,
    ) -> str:
        """
        Issue a token (the token endpoint does, and tests may without an
        HTTP request).

        :param scopes: the token's scopes; by default all of the client's
        :param ttl: its lifetime in seconds; by default ``token_ttl``
        """
        granted = self.scopes_of(client_id) if scopes is None else frozenset(scopes)
        self.stats.tokens_issued += 1
        return self._tokens.issue(client_id, granted, self.token_ttl if ttl is None else ttl)

    def revoke_tokens(self) -> None:
        """
        Forget every issued token: each becomes unknown (401).
        """
        self._tokens.clear()

    def stop(self) -> Deferred[None]:
        """
        Stop listening, abort every open connection (HTTP and WebSocket) and
        cancel every timer; fires once all connections are gone.
        """
        waiting: list[Deferred[Any]] = []
        if self._port is not None:
            waiting.append(maybeDeferred(self._port.stopListening))
            self._port = None
        for timer in list(self._timers):
            if timer.active():
                timer.cancel()
        self._timers.clear()
        waiting.append(self._tracker.abort_all())
        return gatherResults(waiting).addCallback(lambda _: None)

    # For the endpoints (endpoint.PlatformView, auth.TokenIssuer,
    # rest.ProfileSource) and the WebSocket server (callcontrol.CallGate)

    @property
    def clock(self) -> IReactorTime:
        """The platform's time."""
        return self._reactor  # type: ignore[no-any-return]

    @property
    def date_modified(self) -> str:
        """The ``dateModified`` of every profile: when the platform was made."""
        return self._date_modified

    def count(self, counter: str) -> None:
        """Add one to the :class:`PlatformStats` field ``counter``."""
        setattr(self.stats, counter, getattr(self.stats, counter) + 1)

    def call_later(self, delay: float, f: Callable[[], object]) -> IDelayedCall:
        """Call ``f`` in ``delay`` seconds, unless :meth:`stop` comes first."""

        def fire() -> None:
            self._timers.discard(timer)
            f()

        timer: IDelayedCall = self._reactor.callLater(delay, fire)
        self._timers.add(timer)
        return timer

    def cancel_timer(self, timer: IDelayedCall) -> None:
        """Cancel a timer of :meth:`call_later`, if it is still pending."""
        if timer.active():
            timer.cancel()
        self._timers.discard(timer)

    def profile(self, external_id: str) -> Optional[Mapping[str, Any]]:
        """:return: the attributes of the profile ``external_id``, if there is one"""
        return self._profiles.get(external_id)

    def authenticate_client(self, client_id: str, client_secret: str) -> bool:
        """
        :return: whether ``client_id`` is a client and ``client_secret`` its secret
        """
        expected = self._clients.get(client_id)
        return expected is not None and hmac.compare_digest(
            expected.encode("utf-8"), client_secret.encode("utf-8")
        )

    def scopes_of(self, client_id: str) -> frozenset[str]:
        """:return: the scopes ``client_id`` may have"""
        return self._client_scopes.get(client_id, frozenset(ALL_SCOPES))

    def check_bearer(self, token: Optional[str], required: Sequence[str]) -> Optional[int]:
        """
        :return: ``None`` when ``token`` is valid and has every scope in
            ``required``, 401 when it is missing, unknown or expired, 403
            when it lacks a scope
        """
        return self._tokens.check(token, required)

    #: The name this had when it was private (tests still use it).
    _check_bearer = check_bearer

    def authorize_upgrade(self, token: Optional[str]) -> Optional[int]:
        """
        Decide on a Call Control WebSocket upgrade (see
        :class:`~ivrproto.emulator.callcontrol.CallGate`): the bearer token
        first, then any injected ``websocket`` fault.
        """
        status = self.check_bearer(token, WS_SCOPES)
        if status is None:
            status = self.faults.take_refusal("websocket")
        if status is None:
            self.stats.ws_upgrades += 1
        else:
            self.stats.ws_refused += 1
        return status

    def claim_call(self, call_id: str) -> Optional[CallLog]:
        """
        :return: the expected call ``call_id``, when it is neither
            connected nor finished
        """
        record = self._calls.get(call_id)
        if record is None or record.connected or record.finished:
            return None
        return record

    def call_connected(self, log: CallLog) -> None:
        """The Call Control server answered ``log``'s handshake with ``connected``."""
        self.stats.calls_connected += 1
