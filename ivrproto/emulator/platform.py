"""
The emulated platform: the token endpoint, the profile API, the External
Contacts identifier lookup and the Call Control WebSocket, on one HTTP port
(contract sections 1 to 3).

This is an independent implementation of the server side of the contract:
it does not import ivrproto's client modules and does its own parsing.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import math
import random
import secrets
import uuid
from datetime import datetime, timezone
from email.utils import formatdate
from typing import Any, Callable, Mapping, Optional, Sequence, Union
from urllib.parse import parse_qsl, unquote, unquote_to_bytes

import attrs
from autobahn.twisted.resource import WebSocketResource
from twisted.internet.defer import Deferred, gatherResults, maybeDeferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import (
    IDelayedCall,
    IListeningPort,
    IStreamServerEndpoint,
)
from twisted.logger import Logger
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.web.resource import IResource, Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

from ivrproto.emulator.byhand import CALLS_PATH, HandCallsResource
from ivrproto.emulator.callcontrol import CallControlServerFactory, CallRecord, parse_script

__all__ = ["ALL_SCOPES", "FAULT_KINDS", "Fault", "Faults", "Platform", "PlatformStats"]

#: Every scope the platform knows, and what a client gets by default.
ALL_SCOPES = ("profile:read", "callcontrol:inbound", "callcontrol:media")

TOKEN_PATH = b"/oauth/token"
PROFILES_PREFIX = b"/api/v2/profiles/external/"
WEBSOCKET_PATH = b"/api/v2/callcontrol/websocket"
CONTACTS_PATH = b"/api/v2/externalcontacts/identifierlookup/contacts"

#: Largest token request body, or contact lookup body, accepted.
MAX_FORM_BODY = 16 * 1024

#: What the External Contacts identifier lookup can look up by.
CONTACT_LOOKUP_TYPES = ("Phone", "ExternalId", "Email")

#: The kinds of request faults can be injected into: the token endpoint,
#: the profile API, the External Contacts lookup (its own kind: a
#: ``"profile"`` fault does not touch it) and WebSocket upgrades.
FAULT_KINDS = ("token", "profile", "contacts", "websocket")

#: The body of an injected 400 on the token endpoint, unless one is given:
#: Genesys's way of saying its rate limit was hit.
TOKEN_RATE_LIMITED = {
    "error": "invalid_request",
    "error_description": "rate limit exceeded",
}

_GENESYS_CODES = {
    400: "bad.request",
    401: "bad.credentials",
    403: "missing.any.permissions",
    404: "not.found",
    429: "too.many.requests",
    500: "internal.server.error",
    502: "bad.gateway",
    503: "service.unavailable",
    504: "gateway.timeout",
}


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


@attrs.frozen
class Fault:
    """
    A canned answer for requests of one kind.

    :ivar kind: one of :data:`FAULT_KINDS`
    :ivar status: the HTTP status to answer with; ``None`` answers normally
        (after ``delay``); ``0`` answers nothing and aborts the connection
        (after ``delay``)
    :ivar headers: extra response headers (``{"Retry-After": "2"}``)
    :ivar body: the response body: ``bytes``, ``str``, or a JSON value;
        ``None`` for a JSON error body that suits the kind and status (for
        the token endpoint: ``invalid_client`` on 401, and on 400 the
        rate-limit answer :data:`TOKEN_RATE_LIMITED`)
    :ivar delay: seconds to wait before answering
    :ivar retry_after: when given, a ``Retry-After`` header saying this
        many seconds, computed when the answer is sent
    :ivar retry_after_date: write ``retry_after`` as an HTTP-date (the
        emulator's time plus ``retry_after``) instead of delay-seconds
    """

    kind: str
    status: Optional[int]
    headers: Mapping[str, str] = attrs.field(factory=dict)
    body: Any = None
    delay: float = 0.0
    retry_after: Optional[float] = None
    retry_after_date: bool = False

    def retry_after_header(self, now: float) -> Optional[str]:
        """
        :param now: the emulator's time, in seconds since the epoch
        :return: the ``Retry-After`` value this fault sends, if any
        """
        if self.retry_after is None:
            return None
        if self.retry_after_date:
            return formatdate(now + self.retry_after, usegmt=True)
        return str(math.ceil(self.retry_after))


class Faults:
    """
    Fault injection.

    Each fault added with :meth:`add` answers the next ``count`` requests of
    its kind, in the order the faults were added.  A request of a kind with
    no such fault pending fails with the probability set by
    :meth:`set_failure_rate`, drawn from a seeded generator so that a run
    can be repeated.
    """

    def __init__(self) -> None:
        self._queues: dict[str, list[list[Any]]] = {kind: [] for kind in FAULT_KINDS}
        self._rates: dict[str, tuple[float, Fault, random.Random]] = {}
        #: how many requests of each kind got an injected fault
        self.injected: dict[str, int] = {kind: 0 for kind in FAULT_KINDS}

    def add(
        self,
        kind: str,
        status: Optional[int] = None,
        headers: Optional[Mapping[str, str]] = None,
        body: Any = None,
        count: int = 1,
        delay: float = 0.0,
        retry_after: Optional[float] = None,
        retry_after_date: bool = False,
    ) -> Fault:
        """
        Answer the next ``count`` requests of ``kind`` with ``status``.

        ``kind="websocket"`` refuses the next upgrades with ``status`` (the
        WebSocket kind takes neither ``headers``, ``body``, ``delay`` nor
        ``retry_after``).

        Examples: ``add("profile", 429, retry_after=2)`` (delay-seconds),
        ``add("token", 429, retry_after=2, retry_after_date=True)``
        (HTTP-date), ``add("token", 400)`` (Genesys's rate-limit answer),
        ``add("contacts", 503, count=5)``, ``add("profile", delay=3)``
        (slow), ``add("profile", 0)`` (connection dropped).

        :param kind: one of :data:`FAULT_KINDS`
        :param status: see :class:`Fault`
        :param headers: see :class:`Fault`
        :param body: see :class:`Fault`
        :param count: how many requests get this answer
        :param delay: see :class:`Fault`
        :param retry_after: see :class:`Fault`
        :param retry_after_date: see :class:`Fault`
        :return: the fault
        """
        if count < 1:
            raise ValueError("count must be at least 1")
        fault = self._fault(kind, status, headers, body, delay, retry_after, retry_after_date)
        self._queues[kind].append([fault, count])
        return fault

    def set_failure_rate(
        self,
        kind: str,
        rate: float,
        status: Optional[int] = 503,
        *,
        seed: Any = None,
        headers: Optional[Mapping[str, str]] = None,
        body: Any = None,
        delay: float = 0.0,
        retry_after: Optional[float] = None,
        retry_after_date: bool = False,
    ) -> Optional[Fault]:
        """
        Make a fraction of the requests of ``kind`` fail, for load tests.

        Each request of ``kind`` that no :meth:`add` fault answers gets the
        fault with probability ``rate``, drawn from ``random.Random(seed)``
        (one generator per kind, so the same requests fail on every run with
        the same seed).  A rate of 0 turns it off.

        :param rate: the probability, from 0 to 1
        :param status: and the other parameters: as for :meth:`add`
        :param seed: the seed of the generator; ``None`` seeds from the OS
        :return: the fault given to failing requests, or ``None`` when off
        """
        if not (0.0 <= rate <= 1.0):
            raise ValueError("rate must be between 0 and 1")
        fault = self._fault(kind, status, headers, body, delay, retry_after, retry_after_date)
        if rate == 0:
            self._rates.pop(kind, None)
            return None
        self._rates[kind] = (float(rate), fault, random.Random(seed))
        return fault

    def failure_rate(self, kind: str) -> float:
        """
        :return: the probability set by :meth:`set_failure_rate` for ``kind``
        """
        entry = self._rates.get(kind)
        return 0.0 if entry is None else entry[0]

    def pending(self, kind: str) -> int:
        """
        :return: how many more requests of ``kind`` will get a fault added
            with :meth:`add`
        """
        return sum(count for _, count in self._queues[kind])

    def clear(self) -> None:
        """
        Drop every pending fault and every failure rate.
        """
        for queue in self._queues.values():
            queue.clear()
        self._rates.clear()

    def _fault(
        self,
        kind: str,
        status: Optional[int],
        headers: Optional[Mapping[str, str]],
        body: Any,
        delay: float,
        retry_after: Optional[float],
        retry_after_date: bool,
    ) -> Fault:
        if kind not in self._queues:
            raise ValueError(f"unknown fault kind {kind!r} (known: {', '.join(FAULT_KINDS)})")
        if not delay >= 0:
            raise ValueError("delay must not be negative")
        if status is not None and status != 0 and not 100 <= status <= 599:
            raise ValueError(f"bad HTTP status {status}")
        if retry_after is not None and not (0 <= retry_after < 1e9):
            raise ValueError("retry_after must be a number of seconds, 0 or more")
        if kind == "websocket" and (
            status is None
            or status == 0
            or headers
            or body is not None
            or delay
            or retry_after is not None
        ):
            raise ValueError("a websocket fault takes only an HTTP error status")
        return Fault(
            kind,
            status,
            dict(headers or {}),
            body,
            float(delay),
            None if retry_after is None else float(retry_after),
            bool(retry_after_date),
        )

    def _take(self, kind: str) -> Optional[Fault]:
        queue = self._queues[kind]
        fault: Optional[Fault] = None
        if queue:
            entry = queue[0]
            entry[1] -= 1
            if entry[1] == 0:
                del queue[0]
            fault = entry[0]
        else:
            rated = self._rates.get(kind)
            if rated is not None:
                rate, candidate, generator = rated
                if generator.random() < rate:
                    fault = candidate
        if fault is not None:
            self.injected[kind] += 1
        return fault

    def _take_refusal(self, kind: str) -> Optional[int]:
        fault = self._take(kind)
        return None if fault is None else fault.status


@attrs.frozen
class _Token:
    client_id: str
    scopes: frozenset[str]
    expires_at: float


def _json(request: Request, status: int, body: Any) -> bytes:
    request.setResponseCode(status)
    request.setHeader(b"Content-Type", b"application/json")
    return json.dumps(body).encode("utf-8")


def _api_error(request: Request, status: int, message: str) -> bytes:
    return _json(
        request,
        status,
        {
            "status": status,
            "code": _GENESYS_CODES.get(status, "error"),
            "message": message,
        },
    )


def _oauth_error(request: Request, status: int, error: str, description: str) -> bytes:
    if status == 401:
        request.setHeader(b"WWW-Authenticate", b'Basic realm="ivrproto-emulator"')
    return _json(request, status, {"error": error, "error_description": description})


def _only(request: Request, methods: tuple[bytes, ...]) -> Optional[bytes]:
    """
    :return: a JSON 405 answer when the method is not one of ``methods``
    """
    if request.method in methods:
        return None
    request.setHeader(b"Allow", b", ".join(methods))
    return _api_error(request, 405, "method not allowed")


class _PlatformResource(Resource):
    """
    One endpoint of the emulated platform: its methods (others get 405),
    a request counter in :class:`PlatformStats`, and the faults set for it
    (see :class:`Faults`); :meth:`_answer` answers a request that passed.
    """

    isLeaf = True
    #: the methods served (HEAD is answered as GET, without the body)
    methods: tuple[bytes, ...] = (b"POST",)
    #: the ``PlatformStats`` field that counts the requests
    counter: str
    #: the ``Faults`` kind that applies
    fault_kind: str

    def __init__(self, platform: Platform) -> None:
        super().__init__()
        self._platform = platform

    def render(self, request: Request) -> Union[bytes, int]:
        refusal = _only(request, self.methods)
        if refusal is not None:
            return refusal
        platform = self._platform
        setattr(platform.stats, self.counter, getattr(platform.stats, self.counter) + 1)
        fault = platform.faults._take(self.fault_kind)
        if fault is not None:
            return platform._answer_fault(request, fault, self._answer)
        return self._answer(request)

    def _answer(self, request: Request) -> bytes:
        raise NotImplementedError


class _TokenResource(_PlatformResource):
    counter = "token_requests"
    fault_kind = "token"

    def _answer(self, request: Request) -> bytes:
        platform = self._platform
        content_type = (request.getHeader(b"content-type") or b"").split(b";")[0]
        if content_type.strip().lower() != b"application/x-www-form-urlencoded":
            return _oauth_error(
                request, 400, "invalid_request",
                "Content-Type must be application/x-www-form-urlencoded",
            )
        assert request.content is not None
        request.content.seek(0)
        raw = request.content.read(MAX_FORM_BODY + 1)
        if len(raw) > MAX_FORM_BODY:
            return _oauth_error(request, 400, "invalid_request", "body too large")
        try:
            pairs = parse_qsl(raw.decode("utf-8"), keep_blank_values=True)
        except (UnicodeDecodeError, ValueError):
            return _oauth_error(request, 400, "invalid_request", "malformed form body")
        form: dict[str, str] = {}
        for name, value in pairs:
            if name in form:
                return _oauth_error(
                    request, 400, "invalid_request", f"parameter {name} repeated"
                )
            form[name] = value

        credentials = _client_credentials(request, form)
        if isinstance(credentials, str):
            return _oauth_error(request, 400, "invalid_request", credentials)
        if credentials is None:
            return _oauth_error(
                request, 401, "invalid_client", "no client authentication"
            )
        client_id, client_secret = credentials
        expected = platform._clients.get(client_id)
        if expected is None or not hmac.compare_digest(
            expected.encode("utf-8"), client_secret.encode("utf-8")
        ):
            return _oauth_error(
                request, 401, "invalid_client", "client authentication failed"
            )

        grant_type = form.get("grant_type")
        if not grant_type:
            return _oauth_error(request, 400, "invalid_request", "grant_type missing")
        if grant_type != "client_credentials":
            return _oauth_error(
                request, 400, "unsupported_grant_type",
                "only client_credentials is supported",
            )

        # RFC 6749 section 3.3: the server may grant fewer scopes than
        # asked for, and then says which.  Scopes that do not exist, or a
        # request of which nothing can be granted, are invalid_scope.
        allowed = platform._scopes_of(client_id)
        requested = frozenset(form.get("scope", "").split())
        unknown = requested - frozenset(ALL_SCOPES)
        if unknown:
            return _oauth_error(
                request, 400, "invalid_scope",
                "unknown scope: " + " ".join(sorted(unknown)),
            )
        granted = (requested & allowed) if requested else allowed
        if not granted:
            return _oauth_error(
                request, 400, "invalid_scope", "none of the scopes is allowed"
            )

        token = platform._new_token(client_id, granted)
        request.setHeader(b"Cache-Control", b"no-store")
        request.setHeader(b"Pragma", b"no-cache")
        body: dict[str, Any] = {
            "access_token": token,
            "token_type": "bearer",
            "expires_in": platform.token_ttl,
        }
        if requested and granted != requested:
            body["scope"] = " ".join(sorted(granted))
        return _json(request, 200, body)


def _client_credentials(
    request: Request, form: Mapping[str, str]
) -> Union[None, str, tuple[str, str]]:
    """
    :return: ``(client_id, client_secret)`` from HTTP Basic or the form
        body, ``None`` when there are none or they cannot be decoded, or a
        string saying why the request is malformed
    """
    body_id = form.get("client_id")
    body_secret = form.get("client_secret")
    header = request.getHeader(b"authorization")
    if header:
        scheme, _, encoded = header.strip().partition(b" ")
        if scheme.lower() == b"basic":
            try:
                decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError):
                return None
            user, colon, password = decoded.partition(":")
            if not colon:
                return None
            # RFC 6749 section 2.3.1: both are form-encoded before Basic.
            client_id, client_secret = unquote(user.replace("+", " ")), unquote(
                password.replace("+", " ")
            )
            if (body_id is not None and body_id != client_id) or (
                body_secret is not None and body_secret != client_secret
            ):
                return "client credentials given twice, differently"
            return (client_id, client_secret)
    if body_id is None or body_secret is None:
        return None
    return (body_id, body_secret)


class _ProfileResource(_PlatformResource):
    methods = (b"GET", b"HEAD")
    counter = "profile_requests"
    fault_kind = "profile"

    def __init__(self, platform: Platform, external_id: Optional[str]) -> None:
        super().__init__(platform)
        self._external_id = external_id

    def _answer(self, request: Request) -> bytes:
        platform = self._platform
        status = platform._check_bearer(_bearer_of(request), ("profile:read",))
        if status == 401:
            request.setHeader(b"WWW-Authenticate", b'Bearer error="invalid_token"')
            return _api_error(request, 401, "missing, unknown or expired token")
        if status == 403:
            return _api_error(request, 403, "the token lacks the profile:read scope")
        external_id = self._external_id
        attributes = None if external_id is None else platform._profiles.get(external_id)
        if attributes is None:
            return _api_error(request, 404, "no profile with that external id")
        return _json(
            request,
            200,
            {
                "id": _profile_id(external_id),  # type: ignore[arg-type]
                "externalId": external_id,
                "attributes": attributes,
                "dateModified": platform._date_modified,
            },
        )


def _profile_id(external_id: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "urn:ivrproto-emulator:" + external_id))


def _contact_id(value: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "urn:ivrproto-emulator:contact:" + value))


class _ContactsResource(_PlatformResource):
    """
    ``POST /api/v2/externalcontacts/identifierlookup/contacts``: the
    External Contacts identifier lookup, answered from the profiles fixture
    (the looked-up value is the external id, the attributes are the
    contact's ``customFields``).  The real platform wants
    ``externalcontacts`` permissions; here the token needs ``profile:read``.
    """

    counter = "contact_requests"
    fault_kind = "contacts"

    def _answer(self, request: Request) -> bytes:
        platform = self._platform
        status = platform._check_bearer(_bearer_of(request), ("profile:read",))
        if status == 401:
            request.setHeader(b"WWW-Authenticate", b'Bearer error="invalid_token"')
            return _api_error(request, 401, "missing, unknown or expired token")
        if status == 403:
            return _api_error(request, 403, "the token lacks the profile:read scope")
        content_type = (request.getHeader(b"content-type") or b"").split(b";")[0]
        if content_type.strip().lower() != b"application/json":
            return _api_error(request, 400, "Content-Type must be application/json")
        assert request.content is not None
        request.content.seek(0)
        raw = request.content.read(MAX_FORM_BODY + 1)
        if len(raw) > MAX_FORM_BODY:
            return _api_error(request, 400, "body too large")
        try:
            query = json.loads(raw)
        except (ValueError, UnicodeDecodeError, RecursionError):
            return _api_error(request, 400, "the body is not JSON")
        if not isinstance(query, dict):
            return _api_error(request, 400, "the body is not a JSON object")
        if query.get("type") not in CONTACT_LOOKUP_TYPES:
            return _api_error(
                request, 400, "type must be one of " + ", ".join(CONTACT_LOOKUP_TYPES)
            )
        value = query.get("value")
        if not isinstance(value, str) or not value:
            return _api_error(request, 400, "value must be a non-empty string")
        attributes = platform._profiles.get(value)
        if attributes is None:
            return _api_error(request, 404, "no contact with that identifier")
        return _json(
            request,
            200,
            {
                "id": _contact_id(value),
                "customFields": attributes,
                "modifiedDate": platform._date_modified,
            },
        )


def _bearer_of(request: Request) -> Optional[str]:
    header = request.getHeader(b"authorization") or b""
    scheme, _, token = header.strip().partition(b" ")
    if scheme.lower() != b"bearer":
        return None
    return token.strip().decode("latin-1") or None


class _NotFound(Resource):
    isLeaf = True

    def render(self, request: Request) -> bytes:
        return _api_error(request, 404, "no such resource")


class _Root(Resource):
    """
    Routes on the raw request path, so that a percent-encoded ``/`` stays
    inside a profile's external id.
    """

    def __init__(self, platform: Platform, websocket: IResource) -> None:
        super().__init__()
        self._platform = platform
        self._token = _TokenResource(platform)
        self._contacts = _ContactsResource(platform)
        self._by_hand = HandCallsResource(platform)
        self._websocket = websocket
        self._not_found = _NotFound()

    def getChildWithDefault(self, name: bytes, request: Request) -> IResource:
        path = request.path
        if path == TOKEN_PATH:
            return self._token
        if path == WEBSOCKET_PATH:
            return self._websocket
        if path == CONTACTS_PATH:
            return self._contacts
        if path == CALLS_PATH or path.startswith(CALLS_PATH + b"/"):
            return self._by_hand
        if path.startswith(PROFILES_PREFIX):
            segment = path[len(PROFILES_PREFIX):]
            external_id: Optional[str] = None
            if segment and b"/" not in segment:
                try:
                    external_id = unquote_to_bytes(segment).decode("utf-8")
                except UnicodeDecodeError:
                    pass
            return _ProfileResource(self._platform, external_id)
        return self._not_found

    def render(self, request: Request) -> bytes:
        return self._not_found.render(request)


class _QuietSite(Site):
    """
    A site that writes no access log: the log would hold external ids, and
    under load it is pure cost.
    """

    noisy = False

    def log(self, request: Any) -> None:
        pass

    def startFactory(self) -> None:
        pass  # no log file, and no once-a-second log date timer


class _ConnectionTracker(WrappingFactory):
    """
    Keeps every connection (HTTP and WebSocket alike) so that
    :meth:`Platform.stop` can abort them and wait until they are gone.
    """

    noisy = False

    def __init__(self, wrapped: Site) -> None:
        super().__init__(wrapped)
        self._gone: dict[ProtocolWrapper, Deferred[None]] = {}

    def unregisterProtocol(self, p: ProtocolWrapper) -> None:
        super().unregisterProtocol(p)
        d = self._gone.pop(p, None)
        if d is not None:
            d.callback(None)

    def abort_all(self) -> Deferred[list[None]]:
        waiting = []
        for wrapper in list(self.protocols):
            d: Deferred[None] = Deferred()
            self._gone[wrapper] = d
            waiting.append(d)
            wrapper.transport.abortConnection()
        return gatherResults(waiting)


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
        self._profiles: Mapping[str, Mapping[str, Any]]
        if isinstance(profiles, dict):
            self._profiles = {}
            for external_id, attributes in profiles.items():
                if not isinstance(external_id, str) or not isinstance(attributes, Mapping):
                    raise TypeError("profiles maps external ids (str) to attribute objects")
                self._profiles[external_id] = dict(attributes)
        else:
            # Any other mapping is used as it is: a load generator can make
            # profiles on demand instead of holding millions of them.
            self._profiles = profiles
        self.token_ttl = int(token_ttl)
        self._client_scopes: dict[str, frozenset[str]] = {}
        for client_id, scopes in (client_scopes or {}).items():
            if isinstance(scopes, str):
                raise TypeError("client_scopes values are sequences of scopes")
            self._client_scopes[client_id] = frozenset(scopes)
        self.close_after_transfer = float(close_after_transfer)
        self.stats = PlatformStats()
        self.faults = Faults()
        self._tokens: dict[str, _Token] = {}
        self._prune_at = 1024  # forget expired tokens when there are this many
        self._calls: dict[str, CallRecord] = {}
        self._timers: set[IDelayedCall] = set()
        self._intake_url: Optional[str] = None
        self._announcer: Optional[Callable[[CallRecord], object]] = None
        self._on_call: Optional[Callable[[CallRecord], object]] = None
        self._placed_by_hand = 0
        self._port: Optional[IListeningPort] = None
        self._base_url: Optional[str] = None
        self._date_modified = (
            datetime.fromtimestamp(reactor.seconds(), tz=timezone.utc)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z")
        )
        self._ws_factory = CallControlServerFactory(self, reactor)
        self._root = _Root(self, WebSocketResource(self._ws_factory))
        self._site = _QuietSite(self._root, reactor=reactor)
        self._tracker = _ConnectionTracker(self._site)

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
    def calls(self) -> Mapping[str, CallRecord]:
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
    ) -> CallRecord:
        """
        Expect a Call Control connection for ``call_id``.

        :param call_id: the ``callControlId`` the client will present
        :param external_id: the caller's external id
        :param script: the caller script (see :class:`CallSession`)
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
        record = CallRecord(
            call_id, external_id, tuple(script), handshake, steps=steps  # type: ignore[arg-type]
        )
        self._calls[call_id] = record
        return record

    def announce_calls_to(
        self,
        intake_url: str,
        announcer: Callable[[CallRecord], object],
        on_call: Optional[Callable[[CallRecord], object]] = None,
    ) -> None:
        """
        Announce calls placed with :meth:`place_call` (and so ``POST
        /emulator/calls``) to a service's intake.  :func:`place_calls` sets
        this up when it is given an intake.

        :param intake_url: the intake's ``/v1/calls`` URL, for the answers
        :param announcer: tells the intake about a call (it never fails)
        :param on_call: called with each record as its call is placed
        """
        self._intake_url = intake_url
        self._announcer = announcer
        self._on_call = on_call

    @property
    def intake_url(self) -> Optional[str]:
        """
        Where :meth:`place_call` announces calls, if anywhere.
        """
        return self._intake_url

    def place_call(
        self,
        external_id: str,
        script: Sequence[str] = (),
        *,
        call_id: Optional[str] = None,
        announce: bool = True,
    ) -> tuple[CallRecord, Optional[str]]:
        """
        Place a call by hand: expect it and, when asked and an intake is
        known (:meth:`announce_calls_to`), announce it there.

        :param call_id: the call's id; by default the next free ``hand-<n>``
        :return: the record, and the intake URL it is announced to (``None``
            when it is only expected)
        :raises ValueError: as :meth:`expect_call`
        """
        if call_id is None:
            while True:
                self._placed_by_hand += 1
                call_id = f"hand-{self._placed_by_hand}"
                known = self._calls.get(call_id)
                if known is None or known.finished:
                    break
        record = self.expect_call(call_id, external_id, script)
        if self._on_call is not None:
            self._on_call(record)
        announced_to = None
        if announce and self._announcer is not None:
            announced_to = self._intake_url
            self._log.info(
                "call {call_id} placed by hand; announcing it to {intake}",
                call_id=call_id,
                intake=announced_to,
            )
            self._announcer(record)
        else:
            self._log.info("call {call_id} placed by hand; expecting it", call_id=call_id)
        return record, announced_to

    def issue_token(
        self,
        client_id: str = "ivrproto-local",
        scopes: Optional[Sequence[str]] = None,
        ttl: Optional[float] = None,
    ) -> str:
        """
        Issue a token without an HTTP request (for tests).

        :param scopes: the token's scopes; by default all of the client's
        :param ttl: its lifetime in seconds; by default ``token_ttl``
        """
        granted = self._scopes_of(client_id) if scopes is None else frozenset(scopes)
        return self._new_token(client_id, granted, ttl)

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

    # For the resources and the WebSocket protocol

    def _scopes_of(self, client_id: str) -> frozenset[str]:
        return self._client_scopes.get(client_id, frozenset(ALL_SCOPES))

    def _new_token(
        self, client_id: str, scopes: frozenset[str], ttl: Optional[float] = None
    ) -> str:
        now = self._reactor.seconds()
        if len(self._tokens) >= self._prune_at:
            self._tokens = {t: v for t, v in self._tokens.items() if v.expires_at > now}
            self._prune_at = max(1024, 2 * len(self._tokens))
        token = secrets.token_urlsafe(32)
        lifetime = self.token_ttl if ttl is None else ttl
        self._tokens[token] = _Token(client_id, scopes, now + lifetime)
        self.stats.tokens_issued += 1
        return token

    def _check_bearer(self, token: Optional[str], required: Sequence[str]) -> Optional[int]:
        """
        :return: ``None`` when ``token`` is valid and has every scope in
            ``required``, 401 when it is missing, unknown or expired, 403
            when it lacks a scope
        """
        if token is None:
            return 401
        known = self._tokens.get(token)
        if known is None:
            return 401
        if known.expires_at <= self._reactor.seconds():
            del self._tokens[token]
            return 401
        for scope in required:
            if scope not in known.scopes:
                return 403
        return None

    def _answer_fault(
        self,
        request: Request,
        fault: Fault,
        normal: Callable[[Request], bytes],
    ) -> Union[bytes, int]:
        if fault.delay <= 0:
            return self._fault_answer(request, fault, normal)
        gone: list[Any] = []

        def answer() -> None:
            self._timers.discard(timer)
            if gone:
                return
            body = self._fault_answer(request, fault, normal)
            if body is not NOT_DONE_YET:
                request.write(body)  # type: ignore[arg-type]
                request.finish()

        def finished(_: object) -> None:
            gone.append(True)
            if timer.active():
                timer.cancel()
            self._timers.discard(timer)

        timer = self._reactor.callLater(fault.delay, answer)
        self._timers.add(timer)
        request.notifyFinish().addBoth(finished)
        return NOT_DONE_YET

    def _fault_answer(
        self,
        request: Request,
        fault: Fault,
        normal: Callable[[Request], bytes],
    ) -> Union[bytes, int]:
        if fault.status is None:
            return normal(request)
        if fault.status == 0:
            request.channel.transport.abortConnection()  # type: ignore[union-attr]
            return NOT_DONE_YET
        request.setResponseCode(fault.status)
        body = fault.body
        if body is None:
            if fault.kind == "token":
                if fault.status == 400:
                    body = TOKEN_RATE_LIMITED
                elif fault.status == 401:
                    body = {"error": "invalid_client", "error_description": "injected fault"}
                else:
                    body = {"error": "rate_limited" if fault.status == 429 else "server_error"}
            else:
                body = {
                    "status": fault.status,
                    "code": _GENESYS_CODES.get(fault.status, "error"),
                    "message": "injected fault",
                }
        if isinstance(body, str):
            data = body.encode("utf-8")
        elif isinstance(body, bytes):
            data = body
        else:
            request.setHeader(b"Content-Type", b"application/json")
            data = json.dumps(body).encode("utf-8")
        retry_after = fault.retry_after_header(self._reactor.seconds())
        if retry_after is not None:
            request.setHeader(b"Retry-After", retry_after.encode("ascii"))
        for name, value in fault.headers.items():
            request.setHeader(name, value)
        return data
