"""
The intake's request bodies and answers, below the resources: a
:class:`Request` class that caps the body it buffers (twisted.web has no limit
of its own) and answers early what it will refuse, the JSON body reader, the
JSON answer, and the JSON 405 for a method a resource does not take.
The request class also takes ``POST /v1/calls`` (the one request of every
call) straight to its resource, without the site's traversal.
"""

from __future__ import annotations

import json
from typing import Any, Callable, Optional, Type

import attrs
import orjson
from twisted.internet.interfaces import IReactorTime, ITCPTransport
from twisted.python.failure import Failure
from twisted.web.http import datetimeToString
from twisted.web.resource import EncodingResourceWrapper, IResource
from twisted.web.server import NOT_DONE_YET, Request, UnsupportedMethod, version

from ivrproto.intake.guard import GuardedConnection, raw_answer
from ivrproto.metrics import REFUSAL_REASONS

__all__ = [
    "CappedRequest",
    "IntakeRefusals",
    "TooDeep",
    "capped_request",
    "json_answer",
    "loads_body",
]


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


def loads_body(data: bytes) -> Any:
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


def json_answer(request: Request, status: int, body: dict[str, Any]) -> bytes:
    """
    Answer ``status`` with ``body`` as JSON, never cached.
    """
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
            return json_answer(request, 405, {"error": "method not allowed"})


class _HTTPDate:
    """
    The ``Date`` header's value, made once per second of the clock.
    """

    def __init__(self) -> None:
        self._second = -1
        self._value = b""

    def at(self, clock: IReactorTime) -> bytes:
        """
        :return: the date of ``clock.seconds()``, in the HTTP format
        """
        now = clock.seconds()
        second = int(now)
        if second != self._second:
            self._value = datetimeToString(second)
            self._second = second
        return self._value


def _calls_resource(site: Any) -> Optional[IResource]:
    """
    What the site's traversal gives for the path ``/v1/calls``, when it is
    a plain resource with ``render_POST`` (else ``None``): the child
    ``calls`` of the child ``v1`` of the root, neither of them a leaf.
    """
    root = getattr(site, "resource", None)
    if root is None or root.isLeaf:
        return None
    v1 = root.children.get(b"v1")
    if v1 is None or v1.isLeaf:
        return None
    calls = v1.children.get(b"calls")
    if calls is None or isinstance(calls, EncodingResourceWrapper):
        return None
    return calls if hasattr(calls, "render_POST") else None


class CappedRequest(Request):
    """
    A :class:`Request` that buffers at most ``_max_body`` bytes of body;
    :func:`capped_request` makes the subclass of one site.

    :ivar too_large: whether more body than that was sent
    :ivar refused: the problem ``_early_problem`` found with its headers
    """

    too_large = False
    refused: Optional[str] = None
    _date = _HTTPDate()
    _max_body = 0
    _early_problem: Optional[Callable[[Request], Optional[str]]] = None
    _refusals: Optional[IntakeRefusals] = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # The intake reads JSON itself: skip twisted.web's form parsing,
        # whose Content-Type parsing (through the email package) costs
        # about 0.1 ms a request.
        kwargs["parsePOSTFormSubmission"] = False
        super().__init__(*args, **kwargs)

    def gotLength(self, length: Optional[int]) -> None:
        if length is not None and length > self._max_body:
            self._too_large()
            length = 0
            self._answer_at_once(b"413 Payload Too Large", "request body too large")
        elif length != 0 and self._early_problem is not None:
            self.refused = self._early_problem(self)
            if self.refused is not None:
                length = 0
                self._answer_at_once(b"401 Unauthorized", self.refused)
        super().gotLength(length)

    def handleContentChunk(self, data: bytes) -> None:
        if self.too_large or self.refused is not None:
            return
        assert self.content is not None
        if self.content.tell() + len(data) > self._max_body:
            self._too_large()
            self._answer_at_once(b"413 Payload Too Large", "request body too large")
            return
        super().handleContentChunk(data)

    def _too_large(self) -> None:
        self.too_large = True
        if self._refusals is not None:
            self._refusals.count("too_large")

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

    def process(self) -> None:
        """
        ``POST /v1/calls`` goes straight to the calls resource's
        ``render_POST``, as the site's traversal and :meth:`render` would
        take it (same headers, same answer, the same 500 if it breaks), at
        a fraction of the cost; any other request goes the usual way.
        """
        site: Any = getattr(self.channel, "site", None)
        calls = None
        if self.method == b"POST" and self.path == b"/v1/calls":
            calls = _calls_resource(site)
        if calls is None:
            super().process()
            return
        self.site = site
        self.setHeader(b"Server", version)
        self.setHeader(b"Date", self._date.at(site.reactor))
        self.prepath = [b"v1", b"calls"]
        self.postpath = []
        self.sitepath: list[bytes] = []
        try:
            body = calls.render_POST(self)  # type: ignore[attr-defined]
            if body is NOT_DONE_YET:
                return
            if not isinstance(body, bytes):
                raise TypeError("the calls resource answered no bytes")
            self.setHeader(b"Content-Length", b"%d" % (len(body),))
            self.write(body)
            self.finish()
        except BaseException:
            self.processingFailed(Failure())

    def render(self, resrc: IResource) -> None:
        super().render(_JSONMethodErrors(resrc))  # type: ignore[arg-type]


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
    fields: dict[str, Any] = {"_max_body": max_body, "_refusals": refusals}
    if early_problem is not None:
        # A plain function as a class attribute would be bound as a method.
        fields["_early_problem"] = staticmethod(early_problem)
    return type("CappedRequest", (CappedRequest,), fields)
