"""
What the two profile clients share (:class:`RestProfileClient`): look a
caller's profile up by external id over REST, with the token, the request
and its bounds, the status handling, retries, deadlines, the retry budget
and the request window.  The two endpoints are in
:mod:`ivrproto.clients.sources`.

A 404 is an answer ("no profile"), not an error.  A refused token is replaced
and the request retried once; rate limiting and transient failures are
retried within a fixed number of attempts, never past the call's deadline,
and only while a :class:`~ivrproto.clients.limits.RetryBudget` shared by the
clients allows it.  The external id is a caller's identity: it is never
logged and never put in an error message.
"""

from __future__ import annotations

import random as _random
from functools import partial
from typing import Any, Callable, Optional

import attrs
from twisted.internet.defer import Deferred, fail
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from ivrproto._types import HTTPClient, TokenProvider
from ivrproto.clients._fetch import Fetch, Refused
from ivrproto.clients._http import Answer
from ivrproto.clients._retry import RetryLater, RetryPolicy, parse_retry_after, policy_with
from ivrproto.clients.limits import RequestWindow, RetryBudget
from ivrproto.clients.profiles import (
    BUDGET_SPENT,
    PAST_DEADLINE,
    WINDOW_FULL,
    Profile,
    ProfileStats,
    RateLimited,
    Shape,
    again,
)
from ivrproto.errors import ProfileError

__all__ = ["DEFAULT_RETRY", "Request", "RestProfileClient"]

#: How the profile clients retry unless told otherwise.
DEFAULT_RETRY = RetryPolicy(3, 0.1, 1.0, 2.0, _random.random)


@attrs.frozen
class Request:
    """
    One HTTP request of a lookup, as a subclass builds it.
    """

    method: str
    url: str
    headers: dict[bytes, list[bytes]]
    data: Optional[bytes] = None


class RestProfileClient:
    """
    A profile client: a subclass names its endpoint (:meth:`_endpoint_of`),
    says how to ask (:meth:`_request`) and where a 200 keeps the fields
    (:attr:`_shape`).

    :param reactor: the clock for timeouts, deadlines and backoff
    :param http: a treq-like HTTP client (``treq.client.HTTPClient`` or
        ``treq.testing.StubTreq``)
    :param api_url: the REST base URL (``https://api.<region domain>``)
    :param tokens: where access tokens come from (a
        :class:`ivrproto.clients.oauth.TokenSource`, or anything with its
        ``get_token`` and ``invalidate``)
    :param timeout: seconds allowed for the response headers, and again for
        the body, of each request
    :param retry: how 429s and transient failures are retried:
        ``max_attempts`` requests per lookup, the first included (the one
        retry after a 401 is extra), the backoff bounds, and the longest
        ``Retry-After`` waited for; :data:`DEFAULT_RETRY` when not given.
        The separate keywords ``max_attempts``, ``backoff_base``,
        ``backoff_cap``, ``retry_after_cap`` and ``random`` are still taken
        in its place (see :func:`~ivrproto.clients._retry.policy_with`).
    :param retry_budget: the budget retries are drawn from; share one
        between the clients of a process.  ``None`` makes a private one
        with the defaults of :class:`RetryBudget`.
    :param max_body: largest response body accepted, in bytes
    :param request_window: the platform's rate limit, shared with the
        :class:`~ivrproto.clients.lookup.ProfileLookup` in front (which
        counts the first request of each lookup): every retry is counted in
        it and not made when it is full, and a 429 pauses it until the
        ``Retry-After``
    :param max_pause: the longest ``Retry-After`` believed, in seconds; a
        ``Retry-After`` longer than the policy's ``retry_after_cap`` is not
        waited for: the lookup fails at once (retrying sooner would break it)
    """

    log = Logger()

    #: why a 403 happened, for the error
    _forbidden_reason = "forbidden"
    #: what a 200 holds, for the errors about it
    _what = "profile"
    #: where a 200 keeps the profile's fields
    _shape: Shape

    def __init__(
        self,
        reactor: IReactorTime,
        http: HTTPClient,
        api_url: str,
        tokens: TokenProvider,
        *,
        timeout: float = 2.0,
        retry: Optional[RetryPolicy] = None,
        retry_budget: Optional[RetryBudget] = None,
        max_body: int = 256 * 1024,
        request_window: Optional[RequestWindow] = None,
        max_pause: float = 60.0,
        max_attempts: Optional[int] = None,
        backoff_base: Optional[float] = None,
        backoff_cap: Optional[float] = None,
        retry_after_cap: Optional[float] = None,
        random: Optional[Callable[[], float]] = None,
    ) -> None:
        self._retry = policy_with(
            retry,
            DEFAULT_RETRY,
            max_attempts=max_attempts,
            backoff_base=backoff_base,
            backoff_cap=backoff_cap,
            retry_after_cap=retry_after_cap,
            random=random,
        )
        self._window = request_window
        self._max_pause = max_pause
        self._reactor = reactor
        self._http = http
        self._api_url = api_url
        self._tokens = tokens
        self._timeout = timeout
        self._budget = RetryBudget(reactor) if retry_budget is None else retry_budget
        self._max_body = max_body
        self._endpoint = self._endpoint_of(api_url)
        self._failed = partial(ProfileError, self._endpoint, None)
        self.stats = ProfileStats()
        self._in_flight: set[Deferred[Optional[Profile]]] = set()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._endpoint}>"

    @property
    def endpoint(self) -> str:
        """
        The endpoint, as shown in errors and logs (never with an external id).
        """
        return self._endpoint

    @property
    def retry_budget(self) -> RetryBudget:
        """
        The budget this client draws its retries from.
        """
        return self._budget

    def lookup(self, external_id: str) -> "Deferred[Optional[Profile]]":
        """
        ``fetch(external_id)``, without a deadline: the profile itself, or a
        :class:`ProfileError`, however long the retries take.  Not to be
        confused with :meth:`ProfileLookup.lookup
        <ivrproto.clients.lookup.ProfileLookup.lookup>`, which a call asks:
        that one answers within a budget and never fails.
        """
        return self.fetch(external_id, None)

    def fetch(
        self, external_id: str, deadline: Optional[float] = None
    ) -> "Deferred[Optional[Profile]]":
        """
        Look the profile of ``external_id`` up.

        :param external_id: the caller's external id
        :param deadline: when the caller stops waiting, in seconds on the
            client's reactor (``reactor.seconds()``), or ``None``.  A retry
            whose wait (``Retry-After`` or backoff) would end after it is not
            made: the lookup fails at once instead.  The deadline bounds
            retries only: the first request is made even when it has passed,
            with the usual timeout (a caching layer may still want the
            answer), and so is the one retry after a 401.

        :return: a Deferred firing with the :class:`Profile`, with ``None``
            when there is none (404), or failing with :class:`ProfileError`.
            Cancelling it stops the request or the retry wait in progress
            and leaves no timer behind.
        """
        self.stats.lookups += 1
        try:
            external_id.encode("utf-8")
            request: Optional[Callable[[str], Request]] = self._request(external_id)
        except UnicodeEncodeError:
            request = None

        if request is None:
            d: Deferred[Optional[Profile]] = fail(
                ProfileError(self.endpoint, None, "the external id is not valid Unicode text")
            )
        else:
            d = Fetch(self, request, external_id, deadline).start()
        self._in_flight.add(d)

        def count(result: Any) -> Any:
            self._in_flight.discard(d)
            if isinstance(result, Profile):
                self.stats.found += 1
            elif result is None:
                self.stats.not_found += 1
            elif result.check(ProfileError):
                self.stats.errors += 1
                self.log.warn(
                    "{what} lookup failed: {error}", what=self._what, error=str(result.value)
                )
            return result

        return d.addBoth(count)

    def stop(self) -> None:
        """
        Cancel every lookup in progress (at shutdown): nothing of them stays
        on the reactor.
        """
        for d in list(self._in_flight):
            d.cancel()

    # For subclasses

    @staticmethod
    def _endpoint_of(api_url: str) -> str:
        """
        :return: the endpoint as shown in errors and logs
        """
        raise NotImplementedError()

    def _request(self, external_id: str) -> Callable[[str], Request]:
        """
        :return: a function of the access token giving the request for
            ``external_id``
        :raise UnicodeEncodeError: the id cannot be sent
        """
        raise NotImplementedError()

    # The answer

    def _parse(self, body: bytes, external_id: str) -> Profile:
        """
        :return: the profile a 200 body holds, where :attr:`_shape` says
        :raise ProfileError: the body is not what the endpoint promises
        """
        return self._shape.read(body, external_id, self._malformed)

    def _malformed(self, what: str) -> ProfileError:
        return ProfileError(self.endpoint, 200, f"malformed {self._what}: {what}")

    # The lookup

    def _check_retry(
        self, retry: "RetryLater[ProfileError]", attempt: int, deadline: Optional[float]
    ) -> None:
        """
        Count the retry ``retry`` asks for, after ``attempt`` failed
        attempts, or raise why it is not made: no attempt left, past the
        deadline, or the budget spent.
        """
        error = retry.error
        if attempt >= self._retry.max_attempts:
            raise again(error, f"gave up after {attempt} attempts: {error.reason}")
        if deadline is not None and self._reactor.seconds() + retry.delay > deadline:
            self.stats.past_deadline += 1
            raise again(error, PAST_DEADLINE)
        if not self._budget.try_spend():
            self.stats.budget_spent += 1
            raise again(error, BUDGET_SPENT)
        self.stats.retries += 1
        self.log.info(
            "{what} request failed ({reason}); retrying in {delay:.3f}s "
            "(attempt {attempt} of {max_attempts})",
            what=self._what,
            reason=error.reason,
            delay=retry.delay,
            attempt=attempt,
            max_attempts=self._retry.max_attempts,
        )

    def _take_for_retry(self, error: ProfileError) -> None:
        """
        Count a retry in the request window, or raise :class:`RateLimited`
        when it is full or paused.
        """
        if self._window is not None and not self._window.try_take():
            retry_at = error.retry_at if isinstance(error, RateLimited) else None
            raise RateLimited(error.url, error.status, WINDOW_FULL, retry_at)

    def _judge(self, answer: Answer, external_id: str, attempt: int) -> Optional[Profile]:
        """
        What the answer to attempt ``attempt`` (0 for the first) means:
        returns the profile (``None`` for a 404), raises
        :class:`ProfileError` for a final failure,
        :class:`~ivrproto.clients._fetch.Refused` on a 401 or
        :class:`~ivrproto.clients._retry.RetryLater` for a failure worth
        retrying.
        """
        endpoint = self.endpoint
        status = answer.status
        if status == 200:
            backoff = partial(self._retry.backoff, attempt)
            return self._parse(
                answer.body_or_retry(lambda reason, _: ProfileError(endpoint, status, reason), backoff),
                external_id,
            )
        if status == 404:
            return None
        if status == 401:
            raise Refused()
        if status == 403:
            raise ProfileError(endpoint, status, self._forbidden_reason)
        if status == 429:
            raise self._throttled(answer.response, attempt)
        if 500 <= status <= 599:
            raise RetryLater(ProfileError(endpoint, status, "server error"), self._retry.backoff(attempt))
        raise ProfileError(endpoint, status, "unexpected HTTP status")

    def _throttled(self, response: Any, attempt: int) -> Exception:
        """
        What a 429 calls for: a retry after its ``Retry-After`` (or the
        backoff), or a :class:`RateLimited` failure at once when that is
        longer than ``retry_after_cap``.  The request window is paused
        until then either way.
        """
        now = self._reactor.seconds()
        values = response.headers.getRawHeaders(b"Retry-After")
        asked = parse_retry_after(values[0] if values else None, now, self._max_pause)
        delay = self._retry.throttled(response, now, attempt)
        retry_at = now + (delay if asked is None else asked)
        if self._window is not None:
            self._window.pause_until(retry_at)
        throttled = RateLimited(self.endpoint, 429, "rate limited", retry_at)
        if asked is not None and asked > self._retry.retry_after_cap:
            # Not worth waiting for, and asking sooner breaks the limit.
            return again(throttled, "rate limited for longer than retry_after_cap")
        return RetryLater(throttled, delay)


