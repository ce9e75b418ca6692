"""
Helpers shared by the HTTP clients of ivrproto (the token source and the
profile clients): ``Retry-After`` parsing, backoff with full jitter, a retry
budget, a cancellable sleep, and a response body read that is bounded in
time and in size.

Nothing here logs, and no exception raised here carries a URL, a header
value or any part of a body, so callers can turn them into their own errors
without leaking anything.
"""

from __future__ import annotations

import math
import re
from collections import deque
from functools import partial
from email.utils import parsedate_to_datetime
from datetime import timezone
from typing import Any, Callable, Coroutine, Generic, Optional, TypeVar, Union

import attrs
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
from twisted.internet.task import deferLater
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone
from twisted.web.http import PotentialDataLoss
from twisted.web.iweb import UNKNOWN_LENGTH, IResponse

__all__ = [
    "BodyError",
    "BodyTooLarge",
    "BodyTimedOut",
    "BodyIncomplete",
    "Cancelled",
    "RetryBudget",
    "RequestWindow",
    "Answer",
    "RetryLater",
    "RetryPolicy",
    "send",
    "parse_retry_after",
    "full_jitter",
    "retry_after_jitter",
    "sleep",
    "read_body",
    "describe_request_failure",
    "run_cancellable",
]

_T = TypeVar("_T")
E = TypeVar("E", bound=Exception)

# RFC 9110 section 10.2.3 allows only 1*DIGIT; a fractional number of
# seconds is accepted too, since reading it as a delay is harmless.
_DELAY_SECONDS = re.compile(r"\A[0-9]+(?:\.[0-9]+)?\Z")

# 2 ** 62 seconds is far beyond any cap; bounding the exponent keeps the
# float conversion from overflowing on absurd attempt numbers.
_MAX_EXPONENT = 62


class RetryLater(Exception, Generic[E]):
    """
    Internal to the clients: an attempt failed in a way worth retrying.

    :ivar error: the error to raise if no attempt is left
    :ivar delay: how long to wait before the next attempt
    """

    def __init__(self, error: E, delay: float) -> None:
        self.error = error
        self.delay = delay


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


def parse_retry_after(
    value: Optional[Union[bytes, str]], now: float, cap: float
) -> Optional[float]:
    """
    Parse a ``Retry-After`` header value (RFC 9110 section 10.2.3).

    :param value: the raw header value, or ``None`` when the header is absent
    :param now: the current time in seconds since the epoch, used to turn an
        HTTP-date into a delay
    :param cap: the longest delay to return; longer delays are cut to it

    :return: the delay in seconds, between 0 and ``cap``, or ``None`` when
        the value is absent, negative or not understood (the caller then
        falls back to its own backoff).  An HTTP-date in the past gives 0.
    """
    if value is None:
        return None
    if isinstance(value, bytes):
        try:
            text = value.decode("ascii")
        except UnicodeDecodeError:
            return None
    else:
        text = value
    text = text.strip()
    if not text:
        return None
    delay: float
    if _DELAY_SECONDS.match(text):
        delay = float(text)
    else:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
        if when is None:  # pragma: no cover - older Pythons returned None
            return None
        if when.tzinfo is None:
            # "-0000" means UTC with no claim about the local zone.
            when = when.replace(tzinfo=timezone.utc)
        try:
            delay = max(0.0, when.timestamp() - now)
        except (OverflowError, OSError, ValueError):
            return None
    if not math.isfinite(delay) or delay < 0:
        return None
    return max(0.0, min(delay, cap))


def full_jitter(
    attempt: int, base: float, cap: float, random: Callable[[], float]
) -> float:
    """
    The "full jitter" backoff delay after the failure of attempt number
    ``attempt`` (counted from 0): ``random() * min(cap, base * 2 ** attempt)``.

    :param attempt: how many attempts failed before this one (0 for the first)
    :param base: the delay bound after the first failure
    :param cap: the largest delay bound
    :param random: a function returning a float in [0, 1)
    """
    exponent = min(max(attempt, 0), _MAX_EXPONENT)
    bound = min(cap, base * float(2**exponent))
    return max(0.0, random() * bound)


def retry_after_jitter(delay: float, random: Callable[[], float]) -> float:
    """
    A ``Retry-After`` wait with a little jitter added, so that the many
    clients a server throttled at once do not all come back at the same
    instant: ``delay + random() * min(1, delay / 10)``.  The wait is never
    shorter than what the server asked for.

    :param delay: the server's delay in seconds (already capped)
    :param random: a function returning a float in [0, 1)
    """
    delay = max(0.0, delay)
    return delay + max(0.0, random()) * min(1.0, delay * 0.1)


def throttled_delay(
    response: Any,
    now: float,
    cap: float,
    random: Callable[[], float],
    backoff: Callable[[], float],
) -> float:
    """
    How long to wait before retrying a throttled request: the response's
    ``Retry-After`` (either form, capped, with :func:`retry_after_jitter`),
    or ``backoff()`` when it has none that can be read.

    :param now: the current time in seconds since the epoch
    """
    values = response.headers.getRawHeaders(b"Retry-After")
    delay = parse_retry_after(values[0] if values else None, now, cap)
    return backoff() if delay is None else retry_after_jitter(delay, random)


@attrs.frozen
class RetryPolicy:
    """
    How one client retries: at most ``max_attempts`` attempts, full-jitter
    exponential backoff between ``base`` and ``cap`` seconds, and a server's
    ``Retry-After`` honoured up to ``retry_after_cap`` seconds.
    """

    max_attempts: int
    base: float
    cap: float
    retry_after_cap: float
    random: Callable[[], float] = attrs.field(repr=False)

    def __attrs_post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")

    def backoff(self, attempt: int) -> float:
        """
        The wait after ``attempt`` failures (:func:`full_jitter`).
        """
        return full_jitter(attempt, self.base, self.cap, self.random)

    def throttled(self, response: Any, now: float, attempt: int) -> float:
        """
        The wait after a throttled answer (:func:`throttled_delay`).
        """
        return throttled_delay(
            response, now, self.retry_after_cap, self.random, partial(self.backoff, attempt)
        )


class RetryBudget:
    """
    How many retries a group of clients may make: at most ``ratio`` of the
    recent first attempts, plus ``min_per_second`` retries a second, so that
    a platform outage does not turn every call into several requests (a
    retry storm).  Share one budget between the clients that talk to the
    same platform.

    Both counts decay exponentially with the time constant ``window``, read
    from ``clock`` when they are used: no timer is ever scheduled.  A retry
    is allowed while ``retries + 1 <= ratio * attempts + min_per_second *
    window``; in a steady state that is a retry rate of at most ``ratio``
    times the attempt rate plus ``min_per_second``.

    :param clock: the clock the counts decay on
    :param ratio: the share of first attempts that may be retried
    :param min_per_second: retries a second allowed however few attempts
        there are
    :param window: the time constant of the decay in seconds ("recent")
    """

    def __init__(
        self,
        clock: IReactorTime,
        *,
        ratio: float = 0.2,
        min_per_second: float = 5.0,
        window: float = 10.0,
    ) -> None:
        if not (math.isfinite(ratio) and ratio >= 0):
            raise ValueError("ratio must be a finite number, 0 or more")
        if not (math.isfinite(min_per_second) and min_per_second >= 0):
            raise ValueError("min_per_second must be a finite number, 0 or more")
        if not (math.isfinite(window) and window > 0):
            raise ValueError("window must be a positive number")
        self._clock = clock
        self._ratio = ratio
        self._floor = min_per_second * window
        self._window = window
        self._attempts = 0.0
        self._retries = 0.0
        self._updated = clock.seconds()
        #: retries refused since this budget was made
        self.refused = 0

    def __repr__(self) -> str:
        return (
            f"<RetryBudget ratio={self._ratio:g} "
            f"min_per_second={self._floor / self._window:g}>"
        )

    def _decay(self) -> None:
        now = self._clock.seconds()
        elapsed = now - self._updated
        if elapsed > 0:
            factor = math.exp(-elapsed / self._window)
            self._attempts *= factor
            self._retries *= factor
            self._updated = now
        elif elapsed < 0:
            # The clock went back: keep the counts, restart from now.
            self._updated = now

    @property
    def available(self) -> float:
        """
        How many retries may be made right now (a float; a retry needs 1).
        """
        self._decay()
        return max(0.0, self._ratio * self._attempts + self._floor - self._retries)

    def record_attempt(self) -> None:
        """
        Count one first attempt (not a retry): it earns ``ratio`` of a retry.
        """
        self._decay()
        self._attempts += 1.0

    def try_spend(self) -> bool:
        """
        Ask for one retry.

        :return: ``True``, and the retry is counted, when the budget allows
            it; ``False`` otherwise (the caller gives up instead)
        """
        if self.available >= 1.0:
            self._retries += 1.0
            return True
        self.refused += 1
        return False


class RequestWindow:
    """
    A client-side rate limit that is the platform's own rule: at most
    ``limit`` requests in any ``window`` seconds, and none while the
    platform asked (``429`` with ``Retry-After``) to wait.

    It keeps the times of the requests of the last ``window`` seconds (at
    most ``limit`` of them) and lets a request through while fewer than
    ``limit`` of them are recent.  Unlike a token bucket it never lets
    through more than the platform accepts in a window (a full bucket of
    ``limit`` refilling ``limit / window`` a second allows about twice
    ``limit`` in one window), and never refuses what it would accept (a
    bucket holding less than ``limit`` refuses a burst after a quiet
    spell).  Computed from ``clock`` when used: no timer.

    :param clock: the clock it counts on
    :param limit: requests allowed in any ``window`` seconds; at least 1
    :param window: the window in seconds
    """

    def __init__(self, clock: IReactorTime, limit: int, window: float = 60.0) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        if not (0 < window < math.inf):
            raise ValueError("window must be a positive finite number")
        self._clock = clock
        self.limit = limit
        self.window = window
        self._times: deque[float] = deque()
        self._paused_until = -math.inf

    def __repr__(self) -> str:
        return f"<RequestWindow {self.limit} in {self.window:g}s>"

    @property
    def paused_until(self) -> float:
        """
        Until when, on the clock, every request is refused (``-inf`` when
        no pause was asked for).
        """
        return self._paused_until

    def paused(self) -> bool:
        """
        Whether a pause asked for by the platform is in force now.
        """
        return self._clock.seconds() < self._paused_until

    def pause_until(self, when: float) -> None:
        """
        Refuse every request until ``when`` (a longer pause in force is
        kept).
        """
        if when > self._paused_until:
            self._paused_until = when

    def recent(self) -> int:
        """
        Requests counted in the window ending now.
        """
        self._forget(self._clock.seconds())
        return len(self._times)

    def _forget(self, now: float) -> None:
        # A request at t still counts at t + window: the platform's window
        # may be closed at both ends.
        times = self._times
        horizon = now - self.window
        while times and times[0] < horizon:
            times.popleft()

    def try_take(self) -> bool:
        """
        Count one request now if the window and any pause allow it.

        :return: whether the request may be sent
        """
        now = self._clock.seconds()
        if now < self._paused_until:
            return False
        self._forget(now)
        if len(self._times) >= self.limit:
            return False
        self._times.append(now)
        return True


def sleep(reactor: IReactorTime, seconds: float) -> "Deferred[None]":
    """
    A Deferred that fires after ``seconds`` on ``reactor``.  Cancelling it
    cancels the timer.
    """
    return deferLater(reactor, max(0.0, seconds), lambda: None)


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


class Cancelled:
    """
    Whether the caller cancelled an operation run by :func:`run_cancellable`.

    A cancellation reaches the coroutine as a :class:`CancelledError` thrown
    where it awaits; a request timeout can raise the same exception, and this
    flag tells the two apart.
    """

    def __init__(self) -> None:
        self.cancelled = False

    def __bool__(self) -> bool:
        return self.cancelled


def run_cancellable(
    make: Callable[[Cancelled], Coroutine["Deferred[Any]", Any, _T]],
) -> "Deferred[_T]":
    """
    Run the coroutine ``make(flag)`` and return a Deferred for its result.

    Cancelling the Deferred sets ``flag``, then cancels whatever the coroutine
    awaits; the coroutine must re-raise the :class:`CancelledError` it then
    sees whenever ``flag`` is set.  However the coroutine ends after a
    cancellation, the returned Deferred fails with :class:`CancelledError`
    and nothing is left unhandled.
    """
    flag = Cancelled()
    outer: Deferred[_T]

    def cancel(d: "Deferred[_T]") -> None:
        flag.cancelled = True
        inner.cancel()

    outer = Deferred(cancel)
    inner = Deferred.fromCoroutine(make(flag))

    def done(result: Any) -> None:
        if outer.called:
            # Already failed with CancelledError; swallow what came after.
            return None
        if flag.cancelled and not (
            isinstance(result, Failure) and result.check(CancelledError)
        ):
            outer.errback(CancelledError())
            return None
        if isinstance(result, Failure):
            outer.errback(result)
        else:
            outer.callback(result)
        return None

    inner.addBoth(done)
    return outer


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


async def send(
    http: Any,
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
    One HTTP request through treq, with a timeout, no redirects, and the
    body read within ``timeout`` and ``max_body``.  A request that gets no
    answer raises :class:`RetryLater` with ``failed(reason)`` after
    ``backoff()`` seconds; a cancellation by the caller is re-raised.
    """
    try:
        response = await http.request(
            method,
            url,
            headers=headers,
            data=data,
            timeout=timeout,
            reactor=reactor,
            allow_redirects=False,
            unbuffered=True,
        )
    except CancelledError:
        if cancelled:
            raise
        raise RetryLater(failed(f"timed out after {timeout:g}s"), backoff())
    except Exception as e:
        raise RetryLater(failed(describe_request_failure(e, timeout)), backoff())
    try:
        body: Optional[bytes] = await read_body(reactor, response, timeout, max_body)
    except BodyError as e:
        return Answer(response, None, e)
    return Answer(response, body, None)
