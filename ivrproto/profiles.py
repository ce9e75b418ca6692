"""
The profile client (platform contract, section 2): look a caller's profile up
by external id over REST.

A 404 is an answer ("no profile"), not an error.  A refused token is replaced
and the request retried once; rate limiting and transient failures are
retried within a fixed number of attempts.  The external id is a caller's
identity: it is never logged and never put in an error message.
"""

from __future__ import annotations

import json
import random as _random
from types import MappingProxyType
from typing import Any, Callable, Mapping, Optional
from urllib.parse import quote

import attrs
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from ivrproto._retry import (
    BodyError,
    BodyTooLarge,
    Cancelled,
    describe_request_failure,
    full_jitter,
    parse_retry_after,
    read_body,
    run_cancellable,
    sleep,
)
from ivrproto.errors import ProfileError, TokenError

__all__ = [
    "Profile",
    "ProfileStats",
    "ProfileClient",
    "profile_url",
    "profile_endpoint",
    "encode_uri_component",
    "freeze_json",
]

_PROFILES_PATH = "/api/v2/profiles/external/"

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


@attrs.frozen
class Profile:
    """
    A caller's profile.

    :ivar id: the profile id
    :ivar external_id: the external id it was found by (a caller's identity,
        so not shown in ``repr``)
    :ivar attributes: the profile attributes, read-only, of any JSON type
    :ivar date_modified: when it last changed (ISO-8601), if given
    """

    id: str
    external_id: str = attrs.field(repr=False)
    attributes: Mapping[str, Any] = attrs.field(
        converter=freeze_json, hash=False, factory=dict
    )
    date_modified: Optional[str] = None


@attrs.define
class ProfileStats:
    """
    Counters of a :class:`ProfileClient`.

    :ivar lookups: lookups started
    :ivar found: lookups that found a profile
    :ivar not_found: lookups answered with 404
    :ivar errors: lookups that failed with :class:`ProfileError`
    :ivar retries: requests sent again (after a 401, a 429 or a transient
        failure)
    """

    lookups: int = 0
    found: int = 0
    not_found: int = 0
    errors: int = 0
    retries: int = 0


class _Retry(Exception):
    """
    Internal: this attempt failed in a way worth retrying.
    """

    def __init__(self, error: ProfileError, delay: float) -> None:
        self.error = error
        self.delay = delay


class _Refused(Exception):
    """
    Internal: the token was refused (401).
    """


class ProfileClient:
    """
    Looks profiles up by external id.

    :param reactor: the clock for timeouts and backoff
    :param http: a treq-like HTTP client (``treq.client.HTTPClient`` or
        ``treq.testing.StubTreq``)
    :param api_url: the REST base URL (``https://api.<region domain>``)
    :param tokens: where access tokens come from (a
        :class:`ivrproto.oauth.TokenSource`, or anything with its
        ``get_token`` and ``invalidate``)
    :param timeout: seconds allowed for the response headers, and again for
        the body, of each request
    :param max_attempts: requests per lookup for 429s and transient
        failures, the first included (the one retry after a 401 is extra)
    :param backoff_base: backoff bound after the first transient failure
    :param backoff_cap: largest backoff bound
    :param retry_after_cap: longest ``Retry-After`` wait honoured
    :param max_body: largest response body accepted, in bytes
    :param random: returns a float in [0, 1), for jitter
    """

    log = Logger()

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
        max_body: int = 256 * 1024,
        random: Callable[[], float] = _random.random,
    ) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self._reactor = reactor
        self._http = http
        self._api_url = api_url
        self._endpoint = profile_endpoint(api_url)
        self._tokens = tokens
        self._timeout = timeout
        self._max_attempts = max_attempts
        self._backoff_base = backoff_base
        self._backoff_cap = backoff_cap
        self._retry_after_cap = retry_after_cap
        self._max_body = max_body
        self._random = random
        self.stats = ProfileStats()
        self._in_flight: set[Deferred[Optional[Profile]]] = set()

    def __repr__(self) -> str:
        return f"<ProfileClient {self._endpoint}>"

    @property
    def endpoint(self) -> str:
        """
        The profile endpoint, with a placeholder for the external id.
        """
        return self._endpoint

    def lookup(self, external_id: str) -> "Deferred[Optional[Profile]]":
        """
        Look the profile of ``external_id`` up.

        :return: a Deferred firing with the :class:`Profile`, with ``None``
            when there is none (404), or failing with :class:`ProfileError`.
            Cancelling it stops the request or the retry wait in progress
            and leaves no timer behind.
        """
        self.stats.lookups += 1
        try:
            url = profile_url(self._api_url, external_id)
        except UnicodeEncodeError:
            url = None

        async def run(cancelled: Cancelled) -> Optional[Profile]:
            if url is None:
                raise ProfileError(
                    self._endpoint, None, "the external id is not valid Unicode text"
                )
            return await self._lookup(cancelled, url, external_id)

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
                self.log.warn("profile lookup failed: {error}", error=str(result.value))
            return result

        return d.addBoth(count)

    def stop(self) -> None:
        """
        Cancel every lookup in progress (at shutdown): nothing of them stays
        on the reactor.
        """
        for d in list(self._in_flight):
            d.cancel()

    async def _lookup(
        self, cancelled: Cancelled, url: str, external_id: str
    ) -> Optional[Profile]:
        attempt = 0
        refused_once = False
        while True:
            try:
                token = await self._tokens.get_token()
            except TokenError as e:
                raise ProfileError(self._endpoint, None, f"no access token: {e.reason}")
            try:
                return await self._attempt(cancelled, url, external_id, token, attempt)
            except _Refused:
                self._tokens.invalidate(token)
                if refused_once:
                    raise ProfileError(
                        self._endpoint,
                        401,
                        "access token refused again after getting a new one",
                    )
                refused_once = True
                self.stats.retries += 1
                self.log.info("access token refused; retrying once with a new one")
            except _Retry as retry:
                if cancelled:
                    # The cancellation surfaced as a request failure.
                    raise CancelledError()
                attempt += 1
                if attempt >= self._max_attempts:
                    error = retry.error
                    raise ProfileError(
                        error.url,
                        error.status,
                        f"gave up after {attempt} attempts: {error.reason}",
                    )
                self.stats.retries += 1
                self.log.info(
                    "profile request failed ({reason}); retrying in {delay:.3f}s "
                    "(attempt {attempt} of {max_attempts})",
                    reason=retry.error.reason,
                    delay=retry.delay,
                    attempt=attempt,
                    max_attempts=self._max_attempts,
                )
                await sleep(self._reactor, retry.delay)

    def _backoff(self, attempt: int) -> float:
        return full_jitter(attempt, self._backoff_base, self._backoff_cap, self._random)

    async def _attempt(
        self,
        cancelled: Cancelled,
        url: str,
        external_id: str,
        token: str,
        attempt: int,
    ) -> Optional[Profile]:
        """
        One profile request.  Returns the answer, raises
        :class:`ProfileError` for a final failure, :class:`_Refused` on a 401
        or :class:`_Retry` for a failure worth retrying.
        """
        endpoint = self._endpoint
        try:
            response = await self._http.request(
                "GET",
                url,
                headers={
                    b"Authorization": [b"Bearer " + token.encode("ascii", "replace")],
                    b"Accept": [b"application/json"],
                },
                timeout=self._timeout,
                reactor=self._reactor,
                allow_redirects=False,
                unbuffered=True,
            )
        except CancelledError:
            if cancelled:
                raise
            raise _Retry(
                ProfileError(endpoint, None, f"timed out after {self._timeout:g}s"),
                self._backoff(attempt),
            )
        except Exception as e:
            raise _Retry(
                ProfileError(endpoint, None, describe_request_failure(e, self._timeout)),
                self._backoff(attempt),
            )

        status: int = response.code
        try:
            body: Optional[bytes] = await read_body(
                self._reactor, response, self._timeout, self._max_body
            )
            body_error: Optional[BodyError] = None
        except BodyError as e:
            body, body_error = None, e

        if status == 200:
            if body is None:
                assert body_error is not None
                error = ProfileError(endpoint, status, body_error.reason)
                if isinstance(body_error, BodyTooLarge):
                    raise error
                raise _Retry(error, self._backoff(attempt))
            return self._parse_profile(body, external_id)
        if status == 404:
            return None
        if status == 401:
            raise _Refused()
        if status == 403:
            raise ProfileError(
                endpoint,
                status,
                "forbidden: the access token lacks the profile:read scope",
            )
        if status == 429:
            values = response.headers.getRawHeaders(b"Retry-After")
            delay = parse_retry_after(
                values[0] if values else None,
                self._reactor.seconds(),
                self._retry_after_cap,
            )
            if delay is None:
                delay = self._backoff(attempt)
            raise _Retry(ProfileError(endpoint, status, "rate limited"), delay)
        if 500 <= status <= 599:
            raise _Retry(
                ProfileError(endpoint, status, "server error"), self._backoff(attempt)
            )
        raise ProfileError(endpoint, status, "unexpected HTTP status")

    def _parse_profile(self, body: bytes, external_id: str) -> Profile:
        try:
            payload = json.loads(body)
        except (ValueError, UnicodeDecodeError, RecursionError):
            raise self._malformed("not JSON")
        if not isinstance(payload, dict):
            raise self._malformed("not a JSON object")
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
        return Profile(
            id=profile_id,
            external_id=answered_id,
            attributes=attributes,
            date_modified=date_modified,
        )

    def _malformed(self, what: str) -> ProfileError:
        return ProfileError(self._endpoint, 200, f"malformed profile: {what}")
