"""
What every HTTP endpoint of the emulated platform shares: the JSON and
error answers, the 405 for other methods, a request counter, and answering
with an injected :class:`~ivrproto.emulator.faults.Fault` (at once, after a
delay, or by dropping the connection).

:class:`PlatformResource` is the base of the token endpoint
(:mod:`ivrproto.emulator.auth`) and of the profile and contacts endpoints
(:mod:`ivrproto.emulator.rest`); :class:`PlatformView` is what it needs of
the platform.
"""

from __future__ import annotations

import json
from typing import Any, Callable, Optional, Protocol, Union

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from ivrproto.emulator.faults import TOKEN_RATE_LIMITED, Fault, Faults

__all__ = [
    "GENESYS_CODES",
    "MAX_FORM_BODY",
    "PlatformResource",
    "PlatformView",
    "api_error",
    "bearer_of",
    "json_answer",
    "read_body",
]

#: Largest token request body, or contact lookup body, accepted.
MAX_FORM_BODY = 16 * 1024

#: The ``code`` of the platform's JSON error bodies, by status.
GENESYS_CODES = {
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


class PlatformView(Protocol):
    """
    What an endpoint needs of the platform it belongs to.
    """

    #: the faults to answer with
    faults: Faults

    @property
    def clock(self) -> IReactorTime:
        """The platform's time."""

    def count(self, counter: str) -> None:
        """Add one to the :class:`~ivrproto.emulator.platform.PlatformStats` field ``counter``."""

    def call_later(self, delay: float, f: Callable[[], object]) -> IDelayedCall:
        """Schedule ``f``; the platform cancels it when it stops."""

    def cancel_timer(self, timer: IDelayedCall) -> None:
        """Cancel a timer from :meth:`call_later` (if still pending)."""


def json_answer(request: Request, status: int, body: Any) -> bytes:
    """
    :return: ``body`` as the JSON answer, with ``status``
    """
    request.setResponseCode(status)
    request.setHeader(b"Content-Type", b"application/json")
    return json.dumps(body).encode("utf-8")


def _error_body(status: int, message: str) -> dict[str, Any]:
    return {"status": status, "code": GENESYS_CODES.get(status, "error"), "message": message}


def api_error(request: Request, status: int, message: str) -> bytes:
    """
    :return: the platform's JSON error answer (``status``, ``code``,
        ``message``)
    """
    return json_answer(request, status, _error_body(status, message))


def bearer_of(request: Request) -> Optional[str]:
    """
    :return: the request's bearer token, if it has one
    """
    header = request.getHeader(b"authorization") or b""
    scheme, _, token = header.strip().partition(b" ")
    if scheme.lower() != b"bearer":
        return None
    return token.strip().decode("latin-1") or None


def read_body(request: Request, content_type: bytes) -> Union[bytes, str]:
    """
    :return: the request body, or (a ``str``) why it is refused: not of
        ``content_type``, or larger than :data:`MAX_FORM_BODY`
    """
    given = (request.getHeader(b"content-type") or b"").split(b";")[0]
    if given.strip().lower() != content_type:
        return "Content-Type must be " + content_type.decode("ascii")
    assert request.content is not None
    request.content.seek(0)
    raw = request.content.read(MAX_FORM_BODY + 1)
    if len(raw) > MAX_FORM_BODY:
        return "body too large"
    return raw


def _only(request: Request, methods: tuple[bytes, ...]) -> Optional[bytes]:
    """
    :return: a JSON 405 answer when the method is not one of ``methods``
    """
    if request.method in methods:
        return None
    request.setHeader(b"Allow", b", ".join(methods))
    return api_error(request, 405, "method not allowed")


class PlatformResource(Resource):
    """
    One endpoint of the emulated platform: its methods (others get 405),
    a request counter in :class:`~ivrproto.emulator.platform.PlatformStats`,
    and the faults set for it (see :class:`~ivrproto.emulator.faults.Faults`);
    :meth:`_answer` answers a request that passed.
    """

    isLeaf = True
    #: the methods served (HEAD is answered as GET, without the body)
    methods: tuple[bytes, ...] = (b"POST",)
    #: the ``PlatformStats`` field that counts the requests
    counter: str
    #: the ``Faults`` kind that applies
    fault_kind: str

    def __init__(self, platform: PlatformView) -> None:
        super().__init__()
        self._platform = platform

    def render(self, request: Request) -> Union[bytes, int]:
        refusal = _only(request, self.methods)
        if refusal is not None:
            return refusal
        self._platform.count(self.counter)
        fault = self._platform.faults.take(self.fault_kind)
        if fault is not None:
            return self._answer_fault(request, fault)
        return self._answer(request)

    def _answer(self, request: Request) -> bytes:
        raise NotImplementedError

    # Injected faults

    def _answer_fault(self, request: Request, fault: Fault) -> Union[bytes, int]:
        if fault.delay <= 0:
            return self._fault_answer(request, fault)
        platform = self._platform
        gone: list[Any] = []

        def answer() -> None:
            if gone:
                return
            body = self._fault_answer(request, fault)
            if body is not NOT_DONE_YET:
                request.write(body)  # type: ignore[arg-type]
                request.finish()

        def finished(_: object) -> None:
            gone.append(True)
            platform.cancel_timer(timer)

        timer = platform.call_later(fault.delay, answer)
        request.notifyFinish().addBoth(finished)
        return NOT_DONE_YET

    def _fault_answer(self, request: Request, fault: Fault) -> Union[bytes, int]:
        if fault.status is None:
            return self._answer(request)
        if fault.status == 0:
            request.channel.transport.abortConnection()  # type: ignore[union-attr]
            return NOT_DONE_YET
        request.setResponseCode(fault.status)
        body = _fault_body(fault) if fault.body is None else fault.body
        if isinstance(body, str):
            data = body.encode("utf-8")
        elif isinstance(body, bytes):
            data = body
        else:
            request.setHeader(b"Content-Type", b"application/json")
            data = json.dumps(body).encode("utf-8")
        retry_after = fault.retry_after_header(self._platform.clock.seconds())
        if retry_after is not None:
            request.setHeader(b"Retry-After", retry_after.encode("ascii"))
        for name, value in fault.headers.items():
            request.setHeader(name, value)
        return data


def _fault_body(fault: Fault) -> Any:
    """
    :return: the JSON error body that suits the fault's kind and status
    """
    assert fault.status is not None
    if fault.kind != "token":
        return _error_body(fault.status, "injected fault")
    if fault.status == 400:
        return TOKEN_RATE_LIMITED
    if fault.status == 401:
        return {"error": "invalid_client", "error_description": "injected fault"}
    return {"error": "rate_limited" if fault.status == 429 else "server_error"}
