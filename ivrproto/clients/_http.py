"""
One HTTP request as the clients send it: :func:`send` with its
:class:`Answer`, a response body read bounded in time and size, and the
wording of request failures (never a URL, header or body).
"""


from __future__ import annotations

from typing import Any, Callable, Optional, Union

from OpenSSL.SSL import Error as TLSError
from service_identity import VerificationError

from twisted.internet.defer import CancelledError, Deferred, fail
from twisted.internet.error import (
    ConnectError,
    ConnectionClosed,
    DNSLookupError,
    TimeoutError as ConnectTimeoutError,
)
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone
from twisted.web.http import PotentialDataLoss
from twisted.web.iweb import UNKNOWN_LENGTH, IResponse
from ivrproto._types import HTTPClient
from ivrproto.clients._cancel import Cancelled
from ivrproto.clients._retry import E, RetryLater


__all__ = [
    "BodyError",
    "BodyTooLarge",
    "BodyTimedOut",
    "BodyIncomplete",
    "describe_request_failure",
    "read_body",
    "Answer",
    "ask",
    "read_answer",
    "send",
]


class BodyError(Exception):
    """
    A response body could not be read within its bounds.

    :ivar reason: a short description, safe to put in an error message
    """

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class BodyTooLarge(BodyError):
    """
    The body is larger than the caller allows.
    """


class BodyTimedOut(BodyError):
    """
    The body did not arrive in full before the deadline.
    """


class BodyIncomplete(BodyError):
    """
    The connection was lost before the whole body arrived.
    """


def _describe_tls_error(error: TLSError) -> str:
    """
    A TLS failure in a few words, from OpenSSL's reason codes only.
    """
    reasons = error.args[0] if error.args and isinstance(error.args[0], list) else []
    if any(
        isinstance(r, tuple) and r[-1:] == ("certificate verify failed",) for r in reasons
    ):
        return "TLS refused: the server's certificate is not trusted (unknown CA, or expired)"
    return "TLS handshake failed"


def describe_request_failure(failure: Union[Failure, BaseException], timeout: float) -> str:
    """
    Describe why an HTTP request got no answer, in a few words that carry no
    URL, host name or other detail from the exception's text.

    :param failure: what the request failed with
    :param timeout: the request timeout in seconds, to mention when it fired
    """
    exc = failure.value if isinstance(failure, Failure) else failure
    inner = getattr(exc, "reasons", None)
    if isinstance(inner, list) and inner:
        # ResponseNeverReceived / ResponseFailed wrap the real reasons.
        first = inner[0]
        first_exc = first.value if isinstance(first, Failure) else first
        if isinstance(first_exc, CancelledError):
            return f"timed out after {timeout:g}s"
        if isinstance(first_exc, VerificationError):
            return "TLS refused: the server's certificate is not for this host name"
        if isinstance(first_exc, TLSError):
            return _describe_tls_error(first_exc)
        return "connection lost before a complete response"
    if isinstance(exc, (CancelledError, ConnectTimeoutError)):
        return f"timed out after {timeout:g}s"
    if isinstance(exc, DNSLookupError):
        return "host name lookup failed"
    if isinstance(exc, ConnectError):
        return "connection failed"
    if isinstance(exc, ConnectionClosed):
        return "connection lost before a response"
    return f"request failed ({type(exc).__name__})"


class _BoundedBody(Protocol):
    """
    Collect a response body, giving up when it grows past ``max_bytes``.
    """

    def __init__(self, finished: "Deferred[bytes]", max_bytes: int) -> None:
        self._finished: Optional[Deferred[bytes]] = finished
        self._max_bytes = max_bytes
        self._chunks: list[bytes] = []
        self._size = 0

    def dataReceived(self, data: bytes) -> None:
        if self._finished is None:
            return
        self._size += len(data)
        if self._size > self._max_bytes:
            self.give_up(
                BodyTooLarge(
                    f"response body larger than the {self._max_bytes} bytes allowed"
                )
            )
            return
        self._chunks.append(data)

    def connectionLost(self, reason: Failure = Failure(ResponseDone())) -> None:
        finished, self._finished = self._finished, None
        if finished is None:
            return
        if reason.check(ResponseDone, PotentialDataLoss):
            finished.callback(b"".join(self._chunks))
        else:
            finished.errback(BodyIncomplete("connection lost while reading the body"))

    def give_up(self, error: Optional[BodyError]) -> None:
        """
        Stop reading: drop the connection and, when ``error`` is given, fail
        the read with it.
        """
        finished, self._finished = self._finished, None
        self._chunks = []
        self.abort()
        if finished is not None and error is not None:
            finished.errback(error)

    def abort(self) -> None:
        """
        Close the connection the body arrives on, if it is still open.
        """
        _abort(self.transport)


class _Discard(Protocol):
    """
    Drop a response body unread: close its connection at once.
    """

    def connectionMade(self) -> None:
        _abort(self.transport)


def _abort(transport: Any) -> None:
    """
    Close the connection a response body arrives on, if it is still open.
    """
    if transport is None:
        return
    abort = getattr(transport, "abortConnection", None)
    if abort is None:
        abort = transport.stopProducing
    try:
        abort()
    except Exception:
        # The connection is already gone; nothing more to stop.
        pass


def read_body(
    reactor: IReactorTime, response: IResponse, timeout: float, max_bytes: int
) -> "Deferred[bytes]":
    """
    Read a response body, bounded in time and in size.

    treq's ``timeout=`` stops at the response headers; this bounds the rest.
    A ``Content-Length`` over ``max_bytes`` fails at once, and a body without
    one fails as soon as it grows past ``max_bytes``.  In both cases, and on
    a timeout or a cancellation, the connection is dropped.

    :param reactor: the clock for the deadline
    :param response: the response, as given by a treq-like client (use
        ``unbuffered=True`` so that the body is not buffered twice)
    :param timeout: seconds allowed for the whole body
    :param max_bytes: the largest body accepted

    :return: a Deferred firing with the body, or failing with
        :class:`BodyTooLarge`, :class:`BodyTimedOut` or
        :class:`BodyIncomplete`.
    """
    length = response.length
    if length is not UNKNOWN_LENGTH and isinstance(length, int) and length > max_bytes:
        response.deliverBody(_Discard())
        return fail(
            BodyTooLarge(
                f"response body of {length} bytes is larger than the "
                f"{max_bytes} bytes allowed"
            )
        )

    timer: Optional[IDelayedCall] = None

    def cancel(d: "Deferred[bytes]") -> None:
        collector.give_up(None)

    finished: Deferred[bytes] = Deferred(cancel)
    collector = _BoundedBody(finished, max_bytes)

    def timed_out() -> None:
        collector.give_up(BodyTimedOut(f"response body not received within {timeout:g}s"))

    def stop_timer(result: Any) -> Any:
        if timer is not None and timer.active():
            timer.cancel()
        return result

    finished.addBoth(stop_timer)
    if not finished.called:
        timer = reactor.callLater(timeout, timed_out)
    response.deliverBody(collector)
    if finished.called and timer is not None and timer.active():
        timer.cancel()
    return finished


class Answer:
    """
    What :func:`send` got: the response, and its body or why the body could
    not be read within its bounds.
    """

    __slots__ = ("response", "status", "body", "body_error")

    def __init__(self, response: Any, body: Optional[bytes], body_error: Optional[BodyError]) -> None:
        self.response = response
        self.status: int = response.code
        self.body = body
        self.body_error = body_error

    def body_or_retry(self, error: Callable[[str, bool], E], backoff: Callable[[], float]) -> bytes:
        """
        The body of an answer that must have one: raises ``error(reason,
        False)`` for a body over its size bound (asking again gets the same
        body) and :class:`RetryLater` with ``error(reason, True)`` for one
        that timed out or broke off.
        """
        if self.body is not None:
            return self.body
        assert self.body_error is not None
        if isinstance(self.body_error, BodyTooLarge):
            raise error(self.body_error.reason, False)
        raise RetryLater(error(self.body_error.reason, True), backoff())


def ask(
    http: HTTPClient,
    reactor: IReactorTime,
    cancelled: Cancelled,
    method: str,
    url: str,
    *,
    headers: Any,
    data: Optional[bytes],
    timeout: float,
    failed: Callable[[str], E],
    backoff: Callable[[], float],
) -> "Deferred[Any]":
    """
    Send one HTTP request through a treq-like client, with a timeout and no
    redirects.  A request that gets no answer fails with
    :class:`RetryLater` with ``failed(reason)`` after ``backoff()``
    seconds; a cancellation by the caller fails with
    :class:`CancelledError`.

    :return: a Deferred firing with the response, its body unread
    """
    try:
        requested: Deferred[Any] = http.request(
            method,
            url,
            headers=headers,
            data=data,
            timeout=timeout,
            reactor=reactor,
            allow_redirects=False,
            unbuffered=True,
        )
    except Exception as e:
        return fail(RetryLater(failed(describe_request_failure(e, timeout)), backoff()))

    def no_answer(failure: Failure) -> Any:
        if failure.check(CancelledError):
            if cancelled:
                return failure
            raise RetryLater(failed(f"timed out after {timeout:g}s"), backoff())
        if not failure.check(Exception):
            return failure
        raise RetryLater(failed(describe_request_failure(failure, timeout)), backoff())

    return requested.addErrback(no_answer)


def read_answer(
    reactor: IReactorTime, response: Any, timeout: float, max_body: int
) -> "Deferred[Answer]":
    """
    The :class:`Answer` of ``response``: its body read within ``timeout``
    and ``max_body`` (:func:`read_body`), or why it could not be.
    """

    def no_body(failure: Failure) -> Any:
        if failure.check(BodyError):
            return Answer(response, None, failure.value)
        return failure

    return read_body(reactor, response, timeout, max_body).addCallbacks(
        lambda body: Answer(response, body, None), no_body
    )


async def send(
    http: HTTPClient,
    reactor: IReactorTime,
    cancelled: Cancelled,
    method: str,
    url: str,
    *,
    headers: Any,
    data: Optional[bytes],
    timeout: float,
    max_body: int,
    failed: Callable[[str], E],
    backoff: Callable[[], float],
) -> Answer:
    """
    One HTTP request (:func:`ask`) and its answer (:func:`read_answer`):
    raises :class:`RetryLater` for a request that got no answer, and
    re-raises a cancellation by the caller.
    """
    response = await ask(
        http, reactor, cancelled, method, url, headers=headers, data=data,
        timeout=timeout, failed=failed, backoff=backoff,
    )
    return await read_answer(reactor, response, timeout, max_body)
