"""
When and whether the HTTP clients of ivrproto (the token source and the
profile clients) try again: ``Retry-After`` parsing, backoff with full
jitter, and the :class:`RetryPolicy` that holds the numbers.

Nothing here logs, and no exception raised here carries a URL, a header
value or any part of a body, so callers can turn them into their own errors
without leaking anything.
"""

from __future__ import annotations

import math
import re
from functools import partial
from email.utils import parsedate_to_datetime
from datetime import timezone
from typing import Any, Callable, Generic, Optional, TypeVar, Union

import attrs

__all__ = [
    "RetryLater",
    "RetryPolicy",
    "parse_retry_after",
    "full_jitter",
    "retry_after_jitter",
    "throttled_delay",
    "policy_with",
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


def policy_with(
    retry: Optional[RetryPolicy],
    default: RetryPolicy,
    *,
    max_attempts: Optional[int] = None,
    backoff_base: Optional[float] = None,
    backoff_cap: Optional[float] = None,
    retry_after_cap: Optional[float] = None,
    random: Optional[Callable[[], float]] = None,
) -> RetryPolicy:
    """
    The retry policy a client was given: ``retry``, or else ``default`` with
    the loose keyword arguments the clients took before :class:`RetryPolicy`
    (still accepted) in place of its numbers.

    :raise TypeError: both ``retry`` and a loose keyword were given
    """
    loose: dict[str, Any] = {
        "max_attempts": max_attempts,
        "base": backoff_base,
        "cap": backoff_cap,
        "retry_after_cap": retry_after_cap,
        "random": random,
    }
    given = {name: value for name, value in loose.items() if value is not None}
    if retry is None:
        return attrs.evolve(default, **given) if given else default
    if given:
        raise TypeError("give retry= or the separate retry keywords, not both")
    return retry
