"""
The profile clients: look a caller's profile up by external id over REST,
either with the profile API (platform contract, section 2,
:class:`ProfileClient`) or with Genesys External Contacts
(:class:`ExternalContactsClient`).  Both have the same shape:
``fetch(external_id, deadline)``, ``stats`` and ``stop()``.

A 404 is an answer ("no profile"), not an error.  A refused token is replaced
and the request retried once; rate limiting and transient failures are
retried within a fixed number of attempts, never past the call's deadline,
and only while a :class:`~ivrproto.clients.limits.RetryBudget` shared by the clients
allows it.  The external id is a caller's identity: it is never logged and
never put in an error message.
"""

from __future__ import annotations

import json
import random as _random
from functools import partial
from types import MappingProxyType
from typing import Any, Callable, Mapping, Optional
from urllib.parse import quote

import attrs
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from ivrproto.clients._cancel import Cancelled, run_cancellable, sleep
from ivrproto.clients._retry import RetryLater, RetryPolicy, parse_retry_after
from ivrproto.clients.limits import RequestWindow, RetryBudget
from ivrproto.clients._http import send
from ivrproto.errors import ProfileError, TokenError

__all__ = [
    "CONTACT_LOOKUP_TYPES",
    "ExternalContactsClient",
    "Profile",
    "ProfileStats",
    "ProfileClient",
    "RateLimited",
    "RequestWindow",
    "RetryBudget",
    "contacts_endpoint",
    "profile_url",
    "profile_endpoint",
    "encode_uri_component",
    "estimate_footprint",
    "freeze_json",
]

_PROFILES_PATH = "/api/v2/profiles/external/"
_CONTACTS_PATH = "/api/v2/externalcontacts/identifierlookup/contacts"

#: The identifier types :class:`ExternalContactsClient` can look contacts up by.
CONTACT_LOOKUP_TYPES = ("Phone", "ExternalId", "Email")

#: ProfileError reasons of a retry not made.
PAST_DEADLINE = "retry would pass the call's time budget"
BUDGET_SPENT = "retry budget spent"
WINDOW_FULL = "retry not made: the rate limit's window is full"
TOKEN_REFUSED = "access token refused, and no other one to try yet"


class RateLimited(ProfileError):
    """
    The platform answered 429 (or a retry would break its rate limit): not
    a failure of the profile API, a request to slow down.

    :ivar retry_at: when, on the client's reactor, the platform accepts
        requests again (its ``Retry-After``, else the backoff), or ``None``
        when it did not say
    """

    def __init__(
        self, url: str, status: Optional[int], reason: str, retry_at: Optional[float]
    ) -> None:
        super().__init__(url, status, reason)
        self.retry_at = retry_at


def _again(error: ProfileError, reason: str) -> ProfileError:
    """
    ``error`` with another reason, of the same kind.
    """
    if isinstance(error, RateLimited):
        return RateLimited(error.url, error.status, reason, error.retry_at)
    return ProfileError(error.url, error.status, reason)

# What JavaScript's encodeURIComponent leaves alone besides ASCII letters and
# digits (which urllib.parse.quote never encodes).
_URI_COMPONENT_SAFE = "-_.!~*'()"


def encode_uri_component(s: str) -> str:
    """
    Percent-encode ``s`` exactly as JavaScript's ``encodeURIComponent`` does:
    UTF-8, with only ASCII letters, digits and ``-_.!~*'()`` left as they are.

    A lone surrogate, which ``encodeURIComponent`` refuses with a
    ``URIError``, raises :class:`UnicodeEncodeError` here.
    """
    return quote(s.encode("utf-8"), safe=_URI_COMPONENT_SAFE)


def profile_url(api_url: str, external_id: str) -> str:
    """
    The profile endpoint for one external id: ``api_url`` without trailing
    slashes, ``/api/v2/profiles/external/``, and the id as one encoded path
    segment.
    """
    return api_url.rstrip("/") + _PROFILES_PATH + encode_uri_component(external_id)


def profile_endpoint(api_url: str) -> str:
    """
    The profile endpoint as shown in errors and logs: with a placeholder in
    place of the external id.
    """
    return api_url.rstrip("/") + _PROFILES_PATH + "{externalId}"


def contacts_endpoint(api_url: str) -> str:
    """
    The External Contacts identifier lookup endpoint: ``api_url`` without
    trailing slashes and ``/api/v2/externalcontacts/identifierlookup/contacts``.
    """
    return api_url.rstrip("/") + _CONTACTS_PATH


def freeze_json(value: Any) -> Any:
    """
    A read-only copy of a decoded JSON value: objects become
    :class:`types.MappingProxyType` views of fresh dicts and arrays become
    tuples, recursively; strings, numbers, booleans and ``None`` are kept.
    """
    if isinstance(value, Mapping):
        return MappingProxyType({k: freeze_json(v) for k, v in value.items()})
    if isinstance(value, (list, tuple)):
        return tuple(freeze_json(v) for v in value)
    return value


# What one decoded JSON element can cost in memory at most, besides its text:
# the object (a str header is 49 to 80 bytes, a float 24, an int 28 or more),
# its slot in the tuple or dict holding it (a dict entry with its share of
# the table is up to about 90 bytes), and for an object the dict and the
# read-only view of it (about 280 bytes for a one-key object, measured,
# shared between its ``{`` and its ``:``).
_PER_ELEMENT = 160
# The Profile, its strings and the cache's own bookkeeping for one entry.
_ENTRY_OVERHEAD = 1024


def estimate_footprint(body: bytes) -> int:
    """
    An upper bound of the memory a profile decoded from the JSON ``body``
    takes, in bytes, computed from the body alone in a few C-speed scans
    (no walk of the decoded value).

    Every element of a JSON text is announced by at most one of ``,``
    ``:`` ``{`` ``[`` (or is the first one), so their count bounds the
    number of Python objects; each costs at most ``_PER_ELEMENT`` besides
    its characters, and characters take at most 4 bytes each once decoded
    (1 when the body is ASCII).  For a profile of 15,000 short attributes
    the bound is about 2.3 times the real footprint.
    """
    text = len(body) if body.isascii() else 4 * len(body)
    elements = (
        body.count(b",") + body.count(b":") + body.count(b"{") + body.count(b"[") + 1
    )
    return _ENTRY_OVERHEAD + text + _PER_ELEMENT * elements


@attrs.frozen
class Profile:
    """
    A caller's profile.

    :ivar id: the profile id
    :ivar external_id: the external id it was found by (a caller's identity,
        so not shown in ``repr``)
    :ivar attributes: the profile attributes, read-only, of any JSON type
    :ivar date_modified: when it last changed (ISO-8601), if given
    :ivar footprint: an upper bound of its size in memory, in bytes, when
        the client that made it knows one (:func:`estimate_footprint` of
        the body it came in); not part of equality
    """

    id: str
    external_id: str = attrs.field(repr=False)
    attributes: Mapping[str, Any] = attrs.field(
        converter=freeze_json, hash=False, factory=dict
    )
    date_modified: Optional[str] = None
    footprint: Optional[int] = attrs.field(default=None, eq=False, repr=False)


@attrs.define
class ProfileStats:
    """
    Counters of a profile client.

    :ivar lookups: lookups started
    :ivar requests: HTTP requests sent (retries included)
    :ivar found: lookups that found a profile
    :ivar not_found: lookups answered with 404
    :ivar errors: lookups that failed with :class:`ProfileError`
    :ivar retries: requests sent again (after a 401, a 429 or a transient
        failure)
    :ivar past_deadline: retries not made because they would end after the
        lookup's deadline
    :ivar budget_spent: retries not made because the retry budget said no
    """

    lookups: int = 0
    requests: int = 0
    found: int = 0
    not_found: int = 0
    errors: int = 0
    retries: int = 0
    past_deadline: int = 0
    budget_spent: int = 0


class _Refused(Exception):
    """
    Internal: the token was refused (401).
    """


@attrs.frozen
class _Request:
    """
    Internal: one HTTP request of a lookup, as a subclass builds it.
    """

    method: str
    url: str
    headers: dict[bytes, list[bytes]]
    data: Optional[bytes] = None


class _ProfileSource:
    """
    What the profile clients share: tokens, the request with its bounds,
    the status handling, retries, deadlines, the retry budget and stats.
    A subclass names its endpoint (:meth:`_endpoint_of`), says how to ask
    (:meth:`_request`) and how to read a 200 (:meth:`_parse`).

    :param reactor: the clock for timeouts, deadlines and backoff
    :param http: a treq-like HTTP client (``treq.client.HTTPClient`` or
        ``treq.testing.StubTreq``)
    :param api_url: the REST base URL (``https://api.<region domain>``)
    :param tokens: where access tokens come from (a
        :class:`ivrproto.clients.oauth.TokenSource`, or anything with its
        ``get_token`` and ``invalidate``)
    :param timeout: seconds allowed for the response headers, and again for
        the body, of each request
    :param max_attempts: requests per lookup for 429s and transient
        failures, the first included (the one retry after a 401 is extra)
    :param backoff_base: backoff bound after the first transient failure
    :param backoff_cap: largest backoff bound
    :param retry_after_cap: longest ``Retry-After`` wait honoured (a little
        jitter, at most a second, is added to it)
    :param retry_budget: the budget retries are drawn from; share one
        between the clients of a process.  ``None`` makes a private one
        with the defaults of :class:`RetryBudget`.
    :param max_body: largest response body accepted, in bytes
    :param request_window: the platform's rate limit, shared with the
        :class:`~ivrproto.clients.lookup.ProfileLookup` in front (which counts the
        first request of each lookup): every retry is counted in it and not
        made when it is full, and a 429 pauses it until the ``Retry-After``
    :param max_pause: the longest ``Retry-After`` believed, in seconds; a
        ``Retry-After`` longer than ``retry_after_cap`` is not waited for:
        the lookup fails at once (retrying sooner would break it)
    :param random: returns a float in [0, 1), for jitter
    """

    log = Logger()

    #: why a 403 happened, for the error
    _forbidden_reason = "forbidden"
    #: what a 200 holds, for the errors about it
    _what = "profile"

    def __init__(
        self,
        reactor: IReactorTime,
        http: Any,
        api_url: str,
        tokens: Any,
        *,
        timeout: float = 2.0,
        max_attempts: int = 3,
        backoff_base: float = 0.1,
        backoff_cap: float = 1.0,
        retry_after_cap: float = 2.0,
        retry_budget: Optional[RetryBudget] = None,
        max_body: int = 256 * 1024,
        request_window: Optional[RequestWindow] = None,
        max_pause: float = 60.0,
        random: Callable[[], float] = _random.random,
    ) -> None:
        self._retry = RetryPolicy(max_attempts, backoff_base, backoff_cap, retry_after_cap, random)
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
        :meth:`fetch` without a deadline.
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
            request: Optional[Callable[[str], _Request]] = self._request(external_id)
        except UnicodeEncodeError:
            request = None

        async def run(cancelled: Cancelled) -> Optional[Profile]:
            if request is None:
                raise ProfileError(
                    self.endpoint, None, "the external id is not valid Unicode text"
                )
            return await self._lookup(cancelled, request, external_id, deadline)

        d = run_cancellable(run)
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

    def _request(self, external_id: str) -> Callable[[str], _Request]:
        """
        :return: a function of the access token giving the request for
            ``external_id``
        :raise UnicodeEncodeError: the id cannot be sent
        """
        raise NotImplementedError()

    def _parse(self, body: bytes, external_id: str) -> Profile:
        """
        :return: the profile a 200 body holds
        :raise ProfileError: the body is not what the endpoint promises
        """
        raise NotImplementedError()

    def _profile(self, body: bytes, **fields: Any) -> Profile:
        """
        The profile of ``fields``, its footprint estimated from ``body``.

        :raise ProfileError: the attributes are nested too deeply to copy
            (the JSON decoder may accept more depth than freezing allows)
        """
        try:
            return Profile(footprint=estimate_footprint(body), **fields)
        except RecursionError:
            raise self._malformed("nested too deeply")

    def _malformed(self, what: str) -> ProfileError:
        return ProfileError(self.endpoint, 200, f"malformed {self._what}: {what}")

    # The lookup

    async def _lookup(
        self,
        cancelled: Cancelled,
        request: Callable[[str], _Request],
        external_id: str,
        deadline: Optional[float],
    ) -> Optional[Profile]:
        attempt = 0
        # The token refused with a 401, once one was; and whether the retry
        # it calls for is still to be sent.
        refused: Optional[str] = None
        retry_refused = False
        self._budget.record_attempt()
        while True:
            try:
                token = await self._tokens.get_token()
            except TokenError as e:
                raise ProfileError(self.endpoint, None, f"no access token: {e.reason}")
            if retry_refused:
                retry_refused = False
                if token == refused:
                    # The token source kept it (it drops a refused token
                    # at most once per interval): asking again with it
                    # would be refused again.
                    raise ProfileError(self.endpoint, 401, TOKEN_REFUSED)
                self._take_for_retry(ProfileError(self.endpoint, 401, WINDOW_FULL))
            try:
                return await self._attempt(cancelled, request(token), external_id, attempt)
            except _Refused:
                self._tokens.invalidate(token)
                if refused is not None:
                    raise ProfileError(
                        self.endpoint,
                        401,
                        "access token refused again after getting a new one",
                    )
                refused = token
                retry_refused = True
                self.stats.retries += 1
                self.log.info("access token refused; retrying once with a new one")
            except RetryLater as retry:
                if cancelled:
                    # The cancellation surfaced as a request failure.
                    raise CancelledError()
                attempt += 1
                error = retry.error
                if attempt >= self._retry.max_attempts:
                    raise _again(error, f"gave up after {attempt} attempts: {error.reason}")
                if deadline is not None and self._reactor.seconds() + retry.delay > deadline:
                    self.stats.past_deadline += 1
                    raise _again(error, PAST_DEADLINE)
                if not self._budget.try_spend():
                    self.stats.budget_spent += 1
                    raise _again(error, BUDGET_SPENT)
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
                await sleep(self._reactor, retry.delay)
                self._take_for_retry(error)

    def _take_for_retry(self, error: ProfileError) -> None:
        """
        Count a retry in the request window, or raise :class:`RateLimited`
        when it is full or paused.
        """
        if self._window is not None and not self._window.try_take():
            retry_at = error.retry_at if isinstance(error, RateLimited) else None
            raise RateLimited(error.url, error.status, WINDOW_FULL, retry_at)

    async def _attempt(
        self,
        cancelled: Cancelled,
        request: _Request,
        external_id: str,
        attempt: int,
    ) -> Optional[Profile]:
        """
        One request.  Returns the answer, raises :class:`ProfileError` for
        a final failure, :class:`_Refused` on a 401 or
        :class:`~ivrproto.clients._retry.RetryLater` for a failure worth retrying.
        """
        endpoint = self.endpoint
        backoff = partial(self._retry.backoff, attempt)
        self.stats.requests += 1
        answer = await send(
            self._http,
            self._reactor,
            cancelled,
            request.method,
            request.url,
            headers=request.headers,
            data=request.data,
            timeout=self._timeout,
            max_body=self._max_body,
            failed=lambda reason: ProfileError(endpoint, None, reason),
            backoff=backoff,
        )
        status = answer.status
        if status == 200:
            return self._parse(
                answer.body_or_retry(lambda reason, _: ProfileError(endpoint, status, reason), backoff),
                external_id,
            )
        if status == 404:
            return None
        if status == 401:
            raise _Refused()
        if status == 403:
            raise ProfileError(endpoint, status, self._forbidden_reason)
        if status == 429:
            now = self._reactor.seconds()
            values = answer.response.headers.getRawHeaders(b"Retry-After")
            asked = parse_retry_after(values[0] if values else None, now, self._max_pause)
            delay = self._retry.throttled(answer.response, now, attempt)
            retry_at = now + (delay if asked is None else asked)
            if self._window is not None:
                self._window.pause_until(retry_at)
            throttled = RateLimited(endpoint, status, "rate limited", retry_at)
            if asked is not None and asked > self._retry.retry_after_cap:
                # Not worth waiting for, and asking sooner breaks the limit.
                raise _again(throttled, "rate limited for longer than retry_after_cap")
            raise RetryLater(throttled, delay)
        if 500 <= status <= 599:
            raise RetryLater(ProfileError(endpoint, status, "server error"), backoff())
        raise ProfileError(endpoint, status, "unexpected HTTP status")


def _bearer(token: str) -> list[bytes]:
    return [b"Bearer " + token.encode("ascii", "replace")]


class ProfileClient(_ProfileSource):
    """
    Looks profiles up by external id with the profile API:
    ``GET {api_url}/api/v2/profiles/external/{externalId}``.  Its
    :attr:`endpoint` has a placeholder in place of the external id.

    Its parameters are those of :class:`_ProfileSource`.
    """

    _forbidden_reason = "forbidden: the access token lacks the profile:read scope"
    _what = "profile"

    _endpoint_of = staticmethod(profile_endpoint)

    def _request(self, external_id: str) -> Callable[[str], _Request]:
        url = profile_url(self._api_url, external_id)
        return lambda token: _Request(
            "GET",
            url,
            {b"Authorization": _bearer(token), b"Accept": [b"application/json"]},
        )

    def _parse(self, body: bytes, external_id: str) -> Profile:
        payload = _json_object(body, self._malformed)
        profile_id = payload.get("id")
        if not isinstance(profile_id, str):
            raise self._malformed("id missing or not a string")
        attributes = payload.get("attributes")
        if not isinstance(attributes, dict):
            raise self._malformed("attributes missing or not an object")
        answered_id = payload.get("externalId", external_id)
        if not isinstance(answered_id, str):
            raise self._malformed("externalId is not a string")
        date_modified = payload.get("dateModified")
        if date_modified is not None and not isinstance(date_modified, str):
            raise self._malformed("dateModified is not a string")
        return self._profile(
            body,
            id=profile_id,
            external_id=answered_id,
            attributes=attributes,
            date_modified=date_modified,
        )


class ExternalContactsClient(_ProfileSource):
    """
    Looks callers up in Genesys External Contacts:
    ``POST {api_url}/api/v2/externalcontacts/identifierlookup/contacts``
    with ``{"type": lookup_type, "value": external_id}``.  The contact's
    ``customFields`` become the profile's attributes, its ``modifiedDate``
    the profile's ``date_modified``.

    A 404 means no contact; 401, 403, 429 and 5xx are handled as by
    :class:`ProfileClient`.

    :param lookup_type: what the external id is: ``"Phone"``,
        ``"ExternalId"`` or ``"Email"``
    :param options: the keyword parameters of :class:`ProfileClient`
        (``timeout``, ``max_attempts``, ``retry_budget``...)
    """

    _forbidden_reason = (
        "forbidden: the access token lacks the permission to view external contacts"
    )
    _what = "external contact"

    def __init__(
        self,
        reactor: IReactorTime,
        http: Any,
        api_url: str,
        tokens: Any,
        *,
        lookup_type: str = "Phone",
        **options: Any,
    ) -> None:
        if lookup_type not in CONTACT_LOOKUP_TYPES:
            raise ValueError(
                f"lookup_type must be one of {', '.join(CONTACT_LOOKUP_TYPES)}, "
                f"not {lookup_type!r}"
            )
        super().__init__(reactor, http, api_url, tokens, **options)
        self._lookup_type = lookup_type

    _endpoint_of = staticmethod(contacts_endpoint)

    @property
    def lookup_type(self) -> str:
        """
        What the external id is looked up as.
        """
        return self._lookup_type

    def _request(self, external_id: str) -> Callable[[str], _Request]:
        data = json.dumps(
            {"type": self._lookup_type, "value": external_id}, ensure_ascii=False
        ).encode("utf-8")
        url = self._endpoint
        return lambda token: _Request(
            "POST",
            url,
            {
                b"Authorization": _bearer(token),
                b"Content-Type": [b"application/json"],
                b"Accept": [b"application/json"],
            },
            data,
        )

    def _parse(self, body: bytes, external_id: str) -> Profile:
        contact = _json_object(body, self._malformed)
        contact_id = contact.get("id")
        if not isinstance(contact_id, str):
            raise self._malformed("id missing or not a string")
        custom_fields = contact.get("customFields")
        if custom_fields is None:
            custom_fields = {}
        elif not isinstance(custom_fields, dict):
            raise self._malformed("customFields is not an object")
        modified = contact.get("modifiedDate")
        if modified is not None and not isinstance(modified, str):
            raise self._malformed("modifiedDate is not a string")
        return self._profile(
            body,
            id=contact_id,
            external_id=external_id,
            attributes=custom_fields,
            date_modified=modified,
        )


def _json_object(
    body: bytes, malformed: Callable[[str], ProfileError]
) -> dict[str, Any]:
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise malformed("not JSON")
    if not isinstance(payload, dict):
        raise malformed("not a JSON object")
    return payload
