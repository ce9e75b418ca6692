"""
The intake listener (contract section 4): ``POST /v1/calls`` starts a
session, ``GET /v1/calls/<id>`` shows it, ``/healthz`` and ``/readyz`` tell
whether the process is alive and able to take calls.

twisted.web has no request body limit of its own: :func:`make_site` builds
a site whose requests stop buffering past ``max_body`` and answer 413.

Every answer the site gives is JSON, errors included: an unknown path is a
404, a method a resource does not take a 405 with ``Allow``, a body nested
too deeply for the JSON parsers a 400.  (A request line or header block
twisted.web cannot parse gets twisted.web's own bare 400 and the
connection is closed.)  How long a connection may take to send its request,
and how many may be open, is :mod:`ivrproto.intake.guard`'s.
"""

from __future__ import annotations

import json
from typing import Any, Callable, Mapping, Optional, Type
from urllib.parse import quote

import attrs
import orjson
from twisted.internet.interfaces import ITCPTransport
from twisted.logger import Logger
from twisted.web.resource import IResource, Resource
from twisted.web.server import Request, Site, UnsupportedMethod

from ivrproto.session.registry import CallRegistry
from ivrproto.intake.guard import GuardedConnection, raw_answer
from ivrproto.logthrottle import LogThrottle
from ivrproto.metrics import REFUSAL_REASONS
from ivrproto.intake.signing import SIGNATURE_HEADER, TIMESTAMP_HEADER, SignatureCheck

#: The platform issues call ids, and the contract only says "str": any
#: printable text up to this length (no control characters: ids are logged).
MAX_CALL_ID = 256
MAX_EXTERNAL_ID = 256


def _printable(value: object, limit: int) -> bool:
    return isinstance(value, str) and 0 < len(value) <= limit and value.isprintable()


@attrs.define
class IntakeRefusals:
    """
    Intake requests refused, by reason (one of :data:`REFUSAL_REASONS`),
    counted where the intake answers them.
    """

    counts: dict[str, int] = attrs.Factory(lambda: dict.fromkeys(REFUSAL_REASONS, 0))

    def count(self, reason: str) -> None:
        self.counts[reason] += 1


class TooDeep(ValueError):
    """
    A JSON body nested more deeply than the parsers go.
    """


def _loads_body(data: bytes) -> Any:
    """
    An intake body as JSON: through orjson first (about 8x faster on small
    bodies), and whatever orjson refuses (NaN, nesting deeper than 1024...)
    through :func:`json.loads`, so that what is accepted, and the errors,
    stay the standard library's.  (orjson reads integers beyond 64 bits as
    floats: the intake's fields are strings.)

    :raises TooDeep: for nesting deeper than the standard library's
        recursion limit (about 1,000 levels), which it reports as
        :class:`RecursionError`
    :raises ValueError: for anything else that is not JSON (including
        bytes that are not text, and integers of more than 4,300 digits)
    """
    try:
        return orjson.loads(data)
    except ValueError:
        try:
            return json.loads(data)
        except RecursionError:
            raise TooDeep("nested too deeply") from None


def _json(request: Request, status: int, body: dict[str, Any]) -> bytes:
    request.setResponseCode(status)
    request.setHeader(b"content-type", b"application/json")
    request.setHeader(b"cache-control", b"no-store")
    try:
        return orjson.dumps(body, option=orjson.OPT_NON_STR_KEYS)
    except TypeError:  # a type orjson does not know: the standard library's answer
        return json.dumps(body).encode("utf-8")


class _JSONMethodErrors:
    """
    A resource as it renders, except that a method it does not take is
    answered 405 in JSON with ``Allow`` (twisted.web answers an HTML page,
    and 501 for a method it does not know).  A ``HEAD`` on a resource that
    has ``GET`` is left to twisted.web, which renders the ``GET``.
    """

    def __init__(self, resource: IResource) -> None:
        self.resource = resource

    def render(self, request: Request) -> Any:
        try:
            return self.resource.render(request)
        except UnsupportedMethod as e:
            allowed: list[bytes] = list(e.allowedMethods)
            if request.method == b"HEAD" and b"GET" in allowed:
                raise
            request.setHeader(b"allow", b", ".join(allowed))
            return _json(request, 405, {"error": "method not allowed"})


def capped_request(
    max_body: int,
    early_problem: Optional[Callable[[Request], Optional[str]]] = None,
    refusals: Optional[IntakeRefusals] = None,
) -> Type[Request]:
    """
    A :class:`Request` class that buffers at most ``max_body`` bytes of body
    and remembers whether more was sent.

    :param early_problem: judges a request on its headers alone, before its
        body is read; a request it finds a problem with keeps none of its
        body and remembers the problem as ``refused`` (counting it is
        ``early_problem``'s)
    :param refusals: where a body found too large is counted

    A request whose body is too large, or that ``early_problem`` refuses,
    is answered (413, 401) as soon as that is known, and its connection
    half-closed, rather than after the whole body has been sent; unless an
    earlier request on the connection is still being answered, in which
    case the answer waits for the end of the body as usual.
    """

    class CappedRequest(Request):
        too_large = False
        refused: Optional[str] = None

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            # The intake reads JSON itself: skip twisted.web's form parsing,
            # whose Content-Type parsing (through the email package) costs
            # about 0.1 ms a request.
            kwargs["parsePOSTFormSubmission"] = False
            super().__init__(*args, **kwargs)

        def gotLength(self, length: Optional[int]) -> None:
            if length is not None and length > max_body:
                self._too_large()
                length = 0
                self._answer_at_once(b"413 Payload Too Large", "request body too large")
            elif length != 0 and early_problem is not None:
                self.refused = early_problem(self)
                if self.refused is not None:
                    length = 0
                    self._answer_at_once(b"401 Unauthorized", self.refused)
            super().gotLength(length)

        def handleContentChunk(self, data: bytes) -> None:
            if self.too_large or self.refused is not None:
                return
            assert self.content is not None
            if self.content.tell() + len(data) > max_body:
                self._too_large()
                self._answer_at_once(b"413 Payload Too Large", "request body too large")
                return
            super().handleContentChunk(data)

        def _too_large(self) -> None:
            self.too_large = True
            if refusals is not None:
                refusals.count("too_large")

        def _answer_at_once(self, status: bytes, error: str) -> None:
            channel = self.channel
            if channel is None or channel.transport is None:
                return
            if not channel.requests or channel.requests[0] is not self:
                return  # an earlier answer is still due on this connection
            # No "100 Continue" for a body that will not be kept.
            self.requestHeaders.removeHeader(b"expect")
            transport = channel.transport
            transport.write(raw_answer(status, error))
            if ITCPTransport.providedBy(transport):
                # Close our side only, and go on reading (and dropping) what
                # the client still sends: closing with its bytes unread would
                # reset the connection, and the client might never see the
                # answer.  The connection's request deadline still bounds it.
                transport.loseWriteConnection()
            else:
                transport.loseConnection()

        def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
            # The request's headers and body are all in: its connection's
            # deadline stops until the answer has gone.
            connection = self.channel.transport if self.channel is not None else None
            if isinstance(connection, GuardedConnection):
                connection.request_received()
                self.notifyFinish().addBoth(lambda _: connection.request_done())
            super().requestReceived(command, path, version)

        def render(self, resrc: IResource) -> None:
            super().render(_JSONMethodErrors(resrc))  # type: ignore[arg-type]

    return CappedRequest


class JSONResource(Resource):
    """
    A :class:`Resource` whose unknown children are a JSON 404.
    """

    def getChild(self, path: bytes, request: Request) -> Resource:
        return NotFoundResource()


class NotFoundResource(Resource):
    isLeaf = True

    def render(self, request: Request) -> bytes:
        return _json(request, 404, {"error": "no such resource"})


class CallsResource(Resource):
    """
    ``/v1/calls`` and ``/v1/calls/<callControlId>``.
    """

    log = Logger()

    def __init__(
        self,
        registry: CallRegistry,
        is_draining: Callable[[], bool],
        signatures: Optional[SignatureCheck] = None,
        is_overloaded: Callable[[], bool] = lambda: False,
        refusals: Optional[IntakeRefusals] = None,
    ) -> None:
        super().__init__()
        self.registry = registry
        self.is_draining = is_draining
        self.signatures = signatures
        self.is_overloaded = is_overloaded
        self.refusals = IntakeRefusals() if refusals is None else refusals
        self.throttle = LogThrottle(registry.context.reactor, self.log)

    def getChild(self, path: bytes, request: Request) -> Resource:
        if path == b"":
            return self
        return CallResource(self.registry, path.decode("utf-8", "replace"))

    def render_GET(self, request: Request) -> bytes:
        return _json(request, 200, {"active": len(self.registry.active)})

    def _refuse(self, request: Request, status: int, reason: str, body: dict[str, Any]) -> bytes:
        self.refusals.count(reason)
        return _json(request, status, body)

    def render_POST(self, request: Request) -> bytes:
        # A request refused on its headers (too large, unsigned) was counted then.
        if getattr(request, "too_large", False):
            return _json(request, 413, {"error": "request body too large"})
        if self.is_draining():
            request.setHeader(b"retry-after", b"5")
            return self._refuse(request, 503, "draining", {"error": "draining: not taking new calls"})
        if self.is_overloaded():
            request.setHeader(b"retry-after", b"1")
            return self._refuse(
                request, 503, "overloaded", {"error": "overloaded: try another instance"}
            )
        assert request.content is not None
        raw = request.content.read()
        now = self.registry.context.reactor.seconds()
        refused = getattr(request, "refused", None)
        if refused is not None:  # refused on its headers, and logged then
            return _json(request, 401, {"error": refused})
        if self.signatures is not None:
            problem = self.signatures.problem(
                request.getHeader(TIMESTAMP_HEADER), request.getHeader(SIGNATURE_HEADER), raw, now
            )
            if problem is not None:
                self.throttle.warn(
                    "intake-unsigned", "intake request refused: {problem}", problem=problem
                )
                return self._refuse(request, 401, "unsigned", {"error": problem})
        try:
            body = _loads_body(raw)
        except TooDeep:
            return self._refuse(
                request,
                400,
                "bad_request",
                {"error": "body is not valid JSON: arrays and objects nested too deeply"},
            )
        except ValueError:  # UnicodeDecodeError is one
            return self._refuse(request, 400, "bad_request", {"error": "body is not valid JSON"})
        if not isinstance(body, dict):
            return self._refuse(
                request, 400, "bad_request", {"error": "body must be a JSON object"}
            )
        call_control_id = body.get("callControlId")
        external_id = body.get("externalId")
        if not _printable(call_control_id, MAX_CALL_ID):
            return self._refuse(
                request,
                400,
                "bad_request",
                {
                    "error": f"callControlId must be a printable string of 1-{MAX_CALL_ID} "
                    "characters",
                    "field": "callControlId",
                },
            )
        if not _printable(external_id, MAX_EXTERNAL_ID):
            return self._refuse(
                request,
                400,
                "bad_request",
                {
                    "error": f"externalId must be a printable string of 1-{MAX_EXTERNAL_ID} characters",
                    "field": "externalId",
                },
            )
        if call_control_id in self.registry.active:
            return self._refuse(
                request, 409, "duplicate", {"error": "a session for this call is already active"}
            )
        if self.registry.full:
            request.setHeader(b"retry-after", b"1")
            return self._refuse(request, 503, "capacity", {"error": "over capacity"})
        if self.signatures is not None and not self.signatures.first_time(call_control_id, now):
            return self._refuse(
                request,
                409,
                "duplicate",
                {"error": "this call was already started (replayed request?)"},
            )
        self.registry.start_call(call_control_id, external_id)
        request.setHeader(
            b"location", b"/v1/calls/" + quote(call_control_id, safe="").encode("ascii")
        )
        return _json(
            request,
            202,
            {"callControlId": call_control_id, "state": self.registry.describe(call_control_id)["state"]},  # type: ignore[index]
        )


class CallResource(Resource):
    """
    ``/v1/calls/<callControlId>``: one call's state, or its outcome.
    """

    isLeaf = True

    def __init__(self, registry: CallRegistry, call_control_id: str) -> None:
        super().__init__()
        self.registry = registry
        self.call_control_id = call_control_id

    def render_GET(self, request: Request) -> bytes:
        view = self.registry.describe(self.call_control_id)
        if view is None:
            return _json(request, 404, {"error": "no such call"})
        return _json(request, 200, view)


class HealthResource(Resource):
    isLeaf = True

    def render_GET(self, request: Request) -> bytes:
        return _json(request, 200, {"status": "ok"})


class StatsResource(Resource):
    """
    ``/v1/stats``: the service's counters as JSON (token refreshes, profile
    lookups by outcome, cache hits, breaker state, calls by outcome).  Holds
    no caller id, token or secret.
    """

    isLeaf = True

    def __init__(self, stats: Callable[[], dict[str, Any]]) -> None:
        super().__init__()
        self.stats = stats

    def render_GET(self, request: Request) -> bytes:
        return _json(request, 200, self.stats())


class ReadyResource(Resource):
    """
    Ready when not draining and the token source can give tokens.

    It answers at once, never waiting for a token fetch (a readiness probe
    gives up after a second): ``token_ready`` tells from the token source's
    last outcome (:meth:`ivrproto.clients.oauth.TokenSource.ready`).
    """

    isLeaf = True

    def __init__(self, token_ready: Callable[[], bool], is_draining: Callable[[], bool]) -> None:
        super().__init__()
        self.token_ready = token_ready
        self.is_draining = is_draining

    def render_GET(self, request: Request) -> bytes:
        if self.is_draining():
            return _json(request, 503, {"status": "draining"})
        if self.token_ready():
            return _json(request, 200, {"status": "ready"})
        return _json(request, 503, {"status": "not ready", "reason": "no access token"})


class _QuietSite(Site):
    """
    A site without the access log: one line per request is one line per
    call, which the call's own log line already covers (and at hundreds of
    calls a second, formatting it costs more than handling the request).

    :ivar refusals: the requests it refused, by reason
    """

    refusals: IntakeRefusals

    def log(self, request: Any) -> None:
        pass


def make_site(
    registry: CallRegistry,
    token_ready: Callable[[], bool],
    is_draining: Callable[[], bool],
    max_body: int,
    stats: Optional[Callable[[], dict[str, Any]]] = None,
    extra: Optional[dict[bytes, Resource]] = None,
    signatures: Optional[SignatureCheck] = None,
    is_overloaded: Callable[[], bool] = lambda: False,
    show_calls: bool = True,
) -> Site:
    """
    The intake's web site.  Its ``refusals`` count the requests it refused,
    by reason.

    :param show_calls: whether ``GET /v1/calls/<id>`` shows a call (else a
        404, as for any unknown path: the admin site shows calls, see
        :func:`make_admin_site`)
    """
    root = JSONResource()
    v1 = JSONResource()
    root.putChild(b"v1", v1)
    refusals = IntakeRefusals()
    calls_class = CallsResource if show_calls else _PublicCallsResource
    calls = calls_class(registry, is_draining, signatures, is_overloaded, refusals)
    v1.putChild(b"calls", calls)
    if stats is not None:
        v1.putChild(b"stats", StatsResource(stats))
    root.putChild(b"healthz", HealthResource())
    root.putChild(b"readyz", ReadyResource(token_ready, is_draining))
    for name, resource in (extra or {}).items():
        root.putChild(name, resource)
    early_problem: Optional[Callable[[Request], Optional[str]]] = None
    if signatures is not None:
        check = signatures
        clock = registry.context.reactor

        def early_problem(request: Request) -> Optional[str]:
            if request.getHeader(SIGNATURE_HEADER) is None:
                problem: Optional[str] = "missing X-IVR-Timestamp or X-IVR-Signature"
            else:
                problem = check.timestamp_problem(
                    request.getHeader(TIMESTAMP_HEADER), clock.seconds()
                )
            if problem is not None:
                refusals.count("unsigned")
                calls.throttle.warn(
                    "intake-unsigned", "intake request refused: {problem}", problem=problem
                )
            return problem

    site = _QuietSite(
        root,
        requestFactory=capped_request(max_body, early_problem, refusals),
        reactor=registry.context.reactor,
    )
    site.refusals = refusals
    site.displayTracebacks = False
    site.noisy = False
    return site


class _PublicCallsResource(CallsResource):
    """
    ``/v1/calls`` on an intake that does not show calls: ``/v1/calls/<id>``
    is a 404, as for any path the site does not have.
    """

    def getChild(self, path: bytes, request: Request) -> Resource:
        if path == b"":
            return self
        return NotFoundResource()


class _AdminCallsResource(JSONResource):
    """
    ``GET /v1/calls`` (how many are active) and ``GET /v1/calls/<id>`` on
    the admin site, which takes no calls.
    """

    def __init__(self, registry: CallRegistry) -> None:
        super().__init__()
        self.registry = registry

    def getChild(self, path: bytes, request: Request) -> Resource:
        if path == b"":
            return self
        return CallResource(self.registry, path.decode("utf-8", "replace"))

    def render_GET(self, request: Request) -> bytes:
        return _json(request, 200, {"active": len(self.registry.active)})


def make_admin_site(
    registry: CallRegistry,
    token_ready: Callable[[], bool],
    is_draining: Callable[[], bool],
    stats: Callable[[], dict[str, Any]],
    extra: Optional[Mapping[bytes, Resource]] = None,
) -> Site:
    """
    The admin listener's web site: what only operators should read, which
    a public intake does not serve: ``/v1/stats``, ``GET /v1/calls`` and
    ``GET /v1/calls/<id>``, and ``extra`` (``/metrics``); with
    ``/healthz`` and ``/readyz`` as on the intake.  It takes no requests
    with a body (``POST /v1/calls`` is a 405).
    """
    root = JSONResource()
    v1 = JSONResource()
    root.putChild(b"v1", v1)
    v1.putChild(b"calls", _AdminCallsResource(registry))
    v1.putChild(b"stats", StatsResource(stats))
    root.putChild(b"healthz", HealthResource())
    root.putChild(b"readyz", ReadyResource(token_ready, is_draining))
    for name, resource in (extra or {}).items():
        root.putChild(name, resource)
    site = _QuietSite(
        root, requestFactory=capped_request(4096), reactor=registry.context.reactor
    )
    site.displayTracebacks = False
    site.noisy = False
    return site
