"""
The intake listener (contract section 4): ``POST /v1/calls`` starts a
session, ``GET /v1/calls/<id>`` shows it, ``/healthz`` and ``/readyz`` tell
whether the process is alive and able to take calls.

twisted.web has no request body limit of its own: :func:`make_site` builds
a site whose requests stop buffering past ``max_body`` and answer 413 (the
capped request and the JSON helpers are :mod:`ivrproto.intake._body`'s).

Every answer the site gives is JSON, errors included: an unknown path is a
404, a method a resource does not take a 405 with ``Allow``, a body nested
too deeply for the JSON parsers a 400.  (A request line or header block
twisted.web cannot parse gets twisted.web's own bare 400 and the
connection is closed.)  How long a connection may take to send its request,
and how many may be open, is :mod:`ivrproto.intake.guard`'s.
"""

from __future__ import annotations

from typing import Any, Callable, Optional
from urllib.parse import quote

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.web.resource import Resource, UnsupportedMethod
from twisted.web.server import NOT_DONE_YET, Request, Site

from ivrproto.intake._body import IntakeRefusals, TooDeep, capped_request, json_answer, loads_body
from ivrproto.intake.call_view import CallResource, finish_later
from ivrproto.intake.signing import SIGNATURE_HEADER, TIMESTAMP_HEADER, SignatureCheck
from ivrproto.logthrottle import LogThrottle
from ivrproto.session.registry import CallRegistry

__all__ = [
    "CallResource",
    "CallsResource",
    "HealthResource",
    "IntakeRefusals",
    "JSONResource",
    "NotFoundResource",
    "ReadyResource",
    "StatsResource",
    "make_site",
]

#: The platform issues call ids, and the contract only says "str": any
#: printable text up to this length (no control characters: ids are logged).
MAX_CALL_ID = 256
MAX_EXTERNAL_ID = 256


def _printable(value: object, limit: int) -> bool:
    return isinstance(value, str) and 0 < len(value) <= limit and value.isprintable()


class JSONResource(Resource):
    """
    A :class:`Resource` whose unknown children are a JSON 404.
    """

    def getChild(self, path: bytes, request: Request) -> Resource:
        return NotFoundResource()

    def render(self, request: Request) -> bytes:
        # Resource itself has render_HEAD (it renders GET): not a method of ours.
        methods = [n[len("render_"):] for n in dir(self) if n.startswith("render_") and n != "render_HEAD"]
        if not methods:
            # A node of the tree (``/v1``) is no resource of its own.
            return json_answer(request, 404, {"error": "no such resource"})
        if request.method == b"HEAD" and "GET" not in methods:
            # twisted.web's own render answers HEAD with render_GET without
            # checking that it exists: a 500.  Refuse it as any other method.
            raise UnsupportedMethod([m.encode("ascii") for m in methods])
        return super().render(request)


class NotFoundResource(Resource):
    """
    Any path the site does not have: a JSON 404.
    """

    isLeaf = True

    def render(self, request: Request) -> bytes:
        return json_answer(request, 404, {"error": "no such resource"})


class _Refused(Exception):
    """
    A call request the intake will not take: its answer, and the reason it
    is counted under.
    """

    def __init__(
        self, status: int, reason: str, body: dict[str, Any], retry_after: Optional[bytes] = None
    ) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.body = body
        self.retry_after = retry_after


def _bad_request(error: str, field: Optional[str] = None) -> _Refused:
    body = {"error": error} if field is None else {"error": error, "field": field}
    return _Refused(400, "bad_request", body)


def _parse_call_request(raw: bytes) -> tuple[str, str]:
    """
    The call a ``POST /v1/calls`` body asks for.

    :return: its ``callControlId`` and ``externalId``
    :raises _Refused: a 400 for a body that is not a JSON object with both,
        as printable strings of bounded length
    """
    try:
        body = loads_body(raw)
    except TooDeep:
        raise _bad_request("body is not valid JSON: arrays and objects nested too deeply") from None
    except ValueError:  # UnicodeDecodeError is one
        raise _bad_request("body is not valid JSON") from None
    if not isinstance(body, dict):
        raise _bad_request("body must be a JSON object")
    call_control_id = body.get("callControlId")
    external_id = body.get("externalId")
    if not _printable(call_control_id, MAX_CALL_ID):
        raise _bad_request(
            f"callControlId must be a printable string of 1-{MAX_CALL_ID} characters",
            "callControlId",
        )
    if not _printable(external_id, MAX_EXTERNAL_ID):
        raise _bad_request(
            f"externalId must be a printable string of 1-{MAX_EXTERNAL_ID} characters",
            "externalId",
        )
    assert isinstance(call_control_id, str) and isinstance(external_id, str)  # _printable
    return call_control_id, external_id


class CallsResource(Resource):
    """
    ``/v1/calls`` and ``/v1/calls/<callControlId>``.

    :param clock: the time the signatures and the refusal log's throttle read
    :param shared: the claims shared by every instance
        (:class:`~ivrproto.cluster.calls.SharedCalls`), so that a call id
        one instance took is refused by the others; ``None``: this
        instance's checks alone
    """

    log = Logger()

    def __init__(
        self,
        registry: CallRegistry,
        clock: IReactorTime,
        is_draining: Callable[[], bool],
        signatures: Optional[SignatureCheck] = None,
        is_overloaded: Callable[[], bool] = lambda: False,
        refusals: Optional[IntakeRefusals] = None,
        shared: Optional[Any] = None,
    ) -> None:
        super().__init__()
        self.shared = shared
        # Call ids between their local checks and their shared claim.
        self._claiming: set[str] = set()
        self.registry = registry
        self.clock = clock
        self.is_draining = is_draining
        self.signatures = signatures
        self.is_overloaded = is_overloaded
        self.refusals = IntakeRefusals() if refusals is None else refusals
        self.throttle = LogThrottle(clock, self.log)

    def getChild(self, path: bytes, request: Request) -> Resource:
        if path == b"":
            return self
        return CallResource(self.registry, path.decode("utf-8", "replace"))

    def render_GET(self, request: Request) -> bytes:
        return json_answer(request, 200, {"active": len(self.registry.active)})

    def _refuse(self, request: Request, status: int, reason: str, body: dict[str, Any]) -> bytes:
        self.refusals.count(reason)
        return json_answer(request, status, body)

    def render_POST(self, request: Request) -> bytes:
        # A request refused on its headers (too large, unsigned) was counted then.
        if getattr(request, "too_large", False):
            return json_answer(request, 413, {"error": "request body too large"})
        try:
            self._admit_load()
            assert request.content is not None
            raw = request.content.read()
            now = self.clock.seconds()
            refused = getattr(request, "refused", None)
            if refused is not None:  # refused on its headers, and logged then
                return json_answer(request, 401, {"error": refused})
            self._check_signature(request, raw, now)
            call_control_id, external_id = _parse_call_request(raw)
            self._admit_call(call_control_id, now)
        except _Refused as refusal:
            return self._refused(request, refusal)
        if self.shared is not None:
            self._claim(request, call_control_id, external_id)
            return NOT_DONE_YET
        return self._start(request, call_control_id, external_id)

    def _refused(self, request: Request, refusal: "_Refused") -> bytes:
        if refusal.retry_after is not None:
            request.setHeader(b"retry-after", refusal.retry_after)
        return self._refuse(request, refusal.status, refusal.reason, refusal.body)

    def _claim(self, request: Request, call_control_id: str, external_id: str) -> None:
        """
        Claim the call id on the shared state, then start the call (or
        refuse a call id another instance took).  The call starts even if
        the request went away meanwhile: its claim is taken.
        """
        shared = self.shared
        assert shared is not None
        self._claiming.add(call_control_id)
        replay_window = None if self.signatures is None else 2 * self.signatures.tolerance

        def claimed(result: Any) -> None:
            self._claiming.discard(call_control_id)
            if result is False:
                body = self._refused(request, _Refused(
                    409, "duplicate", {"error": "this call was already started (on another instance)"}
                ))
            elif self.registry.full or call_control_id in self.registry.active:
                if result is True:
                    shared.release(call_control_id)
                body = self._refused(request, _Refused(503, "capacity", {"error": "over capacity"}, b"1"))
            else:
                body = self._start(request, call_control_id, external_id)
            finish_later(request, body)

        shared.claim(call_control_id, replay_window).addCallback(claimed)

    def _start(self, request: Request, call_control_id: str, external_id: str) -> bytes:
        self.registry.start_call(call_control_id, external_id)
        request.setHeader(
            b"location", b"/v1/calls/" + quote(call_control_id, safe="").encode("ascii")
        )
        view = self.registry.describe(call_control_id)
        assert view is not None
        return json_answer(request, 202, {"callControlId": call_control_id, "state": view["state"]})

    def header_problem(self, request: Request) -> Optional[str]:
        """
        What is wrong with a signed intake request's headers, judged before
        its body is read (counted and logged here), or ``None``.
        """
        assert self.signatures is not None
        if request.getHeader(SIGNATURE_HEADER) is None:
            problem: Optional[str] = "missing X-IVR-Timestamp or X-IVR-Signature"
        else:
            problem = self.signatures.timestamp_problem(
                request.getHeader(TIMESTAMP_HEADER), self.clock.seconds()
            )
        if problem is not None:
            self.refusals.count("unsigned")
            self.throttle.warn(
                "intake-unsigned", "intake request refused: {problem}", problem=problem
            )
        return problem

    def _admit_load(self) -> None:
        """
        Whether the service takes calls at all now, before the body is read.

        :raises _Refused: a 503 while draining or overloaded
        """
        if self.is_draining():
            raise _Refused(503, "draining", {"error": "draining: not taking new calls"}, b"5")
        if self.is_overloaded():
            raise _Refused(503, "overloaded", {"error": "overloaded: try another instance"}, b"1")

    def _check_signature(self, request: Request, raw: bytes, now: float) -> None:
        """
        :raises _Refused: a 401 for a body not signed with the intake secret
            (when the intake has one), logged at a throttled rate
        """
        if self.signatures is None:
            return
        problem = self.signatures.problem(
            request.getHeader(TIMESTAMP_HEADER), request.getHeader(SIGNATURE_HEADER), raw, now
        )
        if problem is not None:
            self.throttle.warn(
                "intake-unsigned", "intake request refused: {problem}", problem=problem
            )
            raise _Refused(401, "unsigned", {"error": problem})

    def _admit_call(self, call_control_id: str, now: float) -> None:
        """
        Whether this call may start.

        :raises _Refused: a 409 for a call already active, a 503 over
            capacity, a 409 for a signed request seen before (a replay)
        """
        if call_control_id in self.registry.active or call_control_id in self._claiming:
            raise _Refused(409, "duplicate", {"error": "a session for this call is already active"})
        if self.registry.full:
            raise _Refused(503, "capacity", {"error": "over capacity"}, b"1")
        if self.signatures is not None and not self.signatures.first_time(call_control_id, now):
            raise _Refused(
                409, "duplicate", {"error": "this call was already started (replayed request?)"}
            )


class HealthResource(Resource):
    isLeaf = True

    def render_GET(self, request: Request) -> bytes:
        return json_answer(request, 200, {"status": "ok"})


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
        return json_answer(request, 200, self.stats())


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
            return json_answer(request, 503, {"status": "draining"})
        if self.token_ready():
            return json_answer(request, 200, {"status": "ready"})
        return json_answer(request, 503, {"status": "not ready", "reason": "no access token"})


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
    clock: Optional[IReactorTime] = None,
    shared: Optional[Any] = None,
) -> Site:
    """
    The intake's web site.  Its ``refusals`` count the requests it refused,
    by reason.

    :param show_calls: whether ``GET /v1/calls/<id>`` shows a call (else a
        404, as for any unknown path: the admin site shows calls, see
        :func:`ivrproto.intake.admin.make_admin_site`)
    :param clock: the time the site, its signatures and its refusal log
        read (default: the registry's reactor, for callers that do not pass
        it yet)
    :param shared: the claims shared by every instance (see
        :class:`CallsResource`)
    """
    if clock is None:
        clock = registry.context.reactor
    root = JSONResource()
    v1 = JSONResource()
    root.putChild(b"v1", v1)
    refusals = IntakeRefusals()
    calls_class = CallsResource if show_calls else _PublicCallsResource
    calls = calls_class(registry, clock, is_draining, signatures, is_overloaded, refusals, shared)
    v1.putChild(b"calls", calls)
    if stats is not None:
        v1.putChild(b"stats", StatsResource(stats))
    root.putChild(b"healthz", HealthResource())
    root.putChild(b"readyz", ReadyResource(token_ready, is_draining))
    for name, resource in (extra or {}).items():
        root.putChild(name, resource)
    early_problem = None if signatures is None else calls.header_problem
    site = _QuietSite(
        root,
        requestFactory=capped_request(max_body, early_problem, refusals),
        reactor=clock,
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
