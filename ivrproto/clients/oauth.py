"""
The OAuth 2.0 client-credentials token source (platform contract, section 1).

One :class:`TokenSource` per client: it caches the access token and refreshes
it in the background a little before it expires, so that no call waits for a
token while the cached one is still good.  It sends at most one token request
at a time however many callers want a token, retries what is worth retrying
within a fixed number of attempts, backs off after failed background
refreshes, and fails at once for a while after any failed fetch (a cool-down
that grows with each failed fetch in a row, honours the endpoint's
``Retry-After``, and after a refusal of the client credentials lasts
``refused_cooldown``), so that an endpoint that is down, throttling or
refusing the secret does not get several requests per call.  It tells
whether it is ready from its last outcome, without waiting
(:meth:`TokenSource.ready`), and drops a token refused elsewhere at most
once per ``invalidate_interval``.  Neither the client secret nor any token ever appears in a
log line, an error message or a ``repr``.
"""

from __future__ import annotations

import base64
import json
import math
import random as _random
from functools import partial
from typing import Any, Callable, Optional
from urllib.parse import quote_plus, urlencode

import attrs
from twisted.internet.defer import CancelledError, Deferred, fail, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from ivrproto.clients._cancel import Cancelled, run_cancellable, sleep
from ivrproto.clients._retry import RetryLater, RetryPolicy, parse_retry_after
from ivrproto.clients._http import send
from ivrproto.errors import TokenError

__all__ = ["DEFAULT_SCOPE", "AccessToken", "TokenStats", "TokenSource", "basic_auth_header"]

DEFAULT_SCOPE = "profile:read callcontrol:inbound callcontrol:media"

_ERROR_CODE_CHARS = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-"
)


@attrs.frozen
class AccessToken:
    """
    An access token and when it expires.

    :ivar value: the bearer token; never shown in ``repr``
    :ivar expires_at: when it expires, in seconds on the token source's reactor
    """

    value: str = attrs.field(repr=False)
    expires_at: float


@attrs.define
class TokenStats:
    """
    Counters of a :class:`TokenSource`.

    :ivar requests: HTTP requests sent to the token endpoint
    :ivar refreshes: tokens obtained
    :ivar failures: token fetches that ended in a :class:`TokenError`
    :ivar background_refreshes: fetches started while the cached token was
        still valid (nobody waited for them)
    :ivar fast_failures: :meth:`TokenSource.get_token` calls failed at once,
        without a request, within the cool-down after a failed fetch
    :ivar invalidations: cached tokens dropped because they were refused
        elsewhere
    :ivar invalidations_ignored: refusals reported within
        ``invalidate_interval`` of the last drop, which kept the token
    :ivar retries: token requests sent again after one that failed
    """

    requests: int = 0
    refreshes: int = 0
    failures: int = 0
    background_refreshes: int = 0
    fast_failures: int = 0
    invalidations: int = 0
    invalidations_ignored: int = 0
    retries: int = 0


def basic_auth_header(client_id: str, client_secret: str) -> bytes:
    """
    The ``Authorization`` header value for HTTP Basic client authentication
    as RFC 6749 section 2.3.1 wants it: the client id and the secret are each
    form-urlencoded (UTF-8) before being joined with ``:`` and base64-encoded.
    """
    pair = f"{quote_plus(client_id, safe='')}:{quote_plus(client_secret, safe='')}"
    return b"Basic " + base64.b64encode(pair.encode("ascii"))


class TokenSource:
    """
    Gets access tokens with the OAuth 2.0 client-credentials grant and caches
    them.

    :param reactor: the clock for timeouts, backoff and expiry
    :param http: a treq-like HTTP client (``treq.client.HTTPClient`` or
        ``treq.testing.StubTreq``)
    :param token_url: the full token endpoint, ``{login_url}/oauth/token``
    :param client_id: the OAuth client id
    :param client_secret: the OAuth client secret
    :param scope: the scopes asked for, separated by spaces
    :param timeout: seconds allowed for the response headers, and again for
        the body, of each request
    :param refresh_margin: how long before expiry a new token is fetched in
        the background; at most half the token's lifetime is used as the
        margin
    :param max_attempts: requests per fetch, retries included
    :param backoff_base: backoff bound after the first transient failure,
        and after the first failed background refresh
    :param backoff_cap: largest backoff bound
    :param retry_after_cap: longest ``Retry-After`` wait honoured (a little
        jitter, at most a second, is added to it)
    :param refused_cooldown: how long after a 401 ``invalid_client`` further
        token requests fail at once, without a request; ``None`` means
        ``backoff_cap``
    :param failure_cooldown: how long after any other failed fetch callers
        without a valid token fail at once, without a request; it doubles
        with each failed fetch in a row, up to ``failure_cooldown_cap``, and
        lasts at least as long as the ``Retry-After`` of a 429 (up to that
        cap too); 0 turns it off
    :param failure_cooldown_cap: the longest such cool-down
    :param invalidate_interval: after :meth:`invalidate` dropped a token,
        refusals of the next token reported within this many seconds keep
        it (so that an API refusing every token does not turn every call
        into a token request)
    :param max_lifetime: the longest token lifetime believed; a larger
        ``expires_in`` is cut to it
    :param max_body: largest response body accepted, in bytes
    :param random: returns a float in [0, 1), for jitter
    """

    log = Logger()

    def __init__(
        self,
        reactor: IReactorTime,
        http: Any,
        token_url: str,
        client_id: str,
        client_secret: str,
        *,
        scope: str = DEFAULT_SCOPE,
        timeout: float = 5.0,
        refresh_margin: float = 60.0,
        max_attempts: int = 4,
        backoff_base: float = 0.25,
        backoff_cap: float = 5.0,
        retry_after_cap: float = 10.0,
        refused_cooldown: Optional[float] = None,
        failure_cooldown: float = 1.0,
        failure_cooldown_cap: float = 10.0,
        invalidate_interval: float = 5.0,
        max_lifetime: float = 86400.0,
        max_body: int = 64 * 1024,
        random: Callable[[], float] = _random.random,
    ) -> None:
        self._retry = RetryPolicy(max_attempts, backoff_base, backoff_cap, retry_after_cap, random)
        if refused_cooldown is None:
            refused_cooldown = backoff_cap
        if not refused_cooldown >= 0:
            raise ValueError("refused_cooldown must not be negative")
        if not (0 <= failure_cooldown <= failure_cooldown_cap < math.inf):
            raise ValueError("failure_cooldown must be between 0 and a finite failure_cooldown_cap")
        if not (0 <= invalidate_interval < math.inf):
            raise ValueError("invalidate_interval must be a finite number, 0 or more")
        if not (0 < max_lifetime < math.inf):
            raise ValueError("max_lifetime must be a positive finite number")
        self._reactor = reactor
        self._http = http
        self._token_url = token_url
        self._authorization = basic_auth_header(client_id, client_secret)
        self._body = urlencode(
            {"grant_type": "client_credentials", "scope": scope}
        ).encode("ascii")
        self._timeout = timeout
        self._refresh_margin = refresh_margin
        self._refused_cooldown = refused_cooldown
        self._failure_cooldown = failure_cooldown
        self._failure_cooldown_cap = failure_cooldown_cap
        self._invalidate_interval = invalidate_interval
        self._max_lifetime = max_lifetime
        self._max_body = max_body

        self._token: Optional[AccessToken] = None
        self._refresh_at = 0.0
        # The one fetch in flight, and the callers waiting for it (callers
        # are never made to wait while the cached token is unexpired).
        self._fetch: Optional[Deferred[AccessToken]] = None
        self._waiters: list[Deferred[str]] = []
        self._background = False  # whether that fetch is a background refresh
        # Failed fetches since the last token, while a token was still
        # cached, and when the next background refresh may start.
        self._refresh_failures = 0
        self._next_refresh_at = 0.0
        # The invalid_client error, and until when it is repeated at once.
        self._refusal: Optional[TokenError] = None
        self._refused_until = 0.0
        # The error of the last failed fetch, and until when callers without
        # a valid token get it at once; failed fetches in a row; until when
        # the endpoint asked (429 Retry-After) not to be asked again.
        self._last_error: Optional[TokenError] = None
        self._cooldown_until = 0.0
        self._fetch_failures = 0
        self._throttled_until = 0.0
        # The outcome of the last fetch: None before the first one ends.
        self._last_ok: Optional[bool] = None
        self._invalidated_at = -math.inf
        self.stats = TokenStats()

    def __repr__(self) -> str:
        return f"<TokenSource {self._token_url}>"

    @property
    def token_url(self) -> str:
        """
        The token endpoint (safe to show: it holds no secret).
        """
        return self._token_url

    @property
    def has_valid_token(self) -> bool:
        """
        Whether a cached token exists that has not expired.
        """
        return self._token is not None and self._reactor.seconds() < self._token.expires_at

    def get_token(self) -> "Deferred[str]":
        """
        Get an access token.

        While the cached token is unexpired it is given at once, always.
        Once it is within the refresh margin of its expiry, the call also
        starts a background refresh (one at a time; after a failed one, the
        next waits a backoff that grows with each failure), and callers keep
        getting the cached token until a new one arrives.

        Only without a token, or once it has expired, do callers wait: one
        request goes out however many callers ask meanwhile, and each caller
        gets its own Deferred.  Within the cool-down after a failed fetch
        (``refused_cooldown`` after a 401 ``invalid_client``, else
        ``failure_cooldown``, growing), such a call fails at once with that
        same error, without a request.

        :return: a Deferred firing with the token, or failing with
            :class:`TokenError`.  Cancelling it affects only this caller;
            when every caller has cancelled, a request nobody else waits for
            is abandoned.
        """
        now = self._reactor.seconds()
        token = self._token
        if token is not None and now < token.expires_at:
            if now >= self._refresh_at:
                self._refresh_in_background(now)
            return succeed(token.value)

        cooling = self._cooldown_in_force(now)
        if cooling is not None and self._fetch is None:
            self.stats.fast_failures += 1
            return fail(cooling)

        def cancel(waiter: "Deferred[str]") -> None:
            if waiter in self._waiters:
                self._waiters.remove(waiter)
            if not self._waiters and self._fetch is not None and not self._background:
                fetch, self._fetch = self._fetch, None
                fetch.cancel()

        waiter: Deferred[str] = Deferred(cancel)
        self._waiters.append(waiter)
        if self._fetch is None:
            self._start_fetch(background=False)
        return waiter

    @property
    def last_outcome(self) -> Optional[bool]:
        """
        Whether the last token fetch succeeded; ``None`` before the first
        one has ended.
        """
        return self._last_ok

    def ready(self) -> bool:
        """
        Whether calls can get a token, answered at once, never waiting for a
        fetch: ``True`` while a token is cached and unexpired, else the
        outcome of the last fetch (``False`` before the first one ends).

        Without a valid token, and when no fetch is in flight and no
        cool-down holds, it also starts a fetch nobody waits for: a process
        that is not ready gets no calls, so its readiness checks are what
        brings it back.
        """
        now = self._reactor.seconds()
        if self.has_valid_token:
            return True
        if self._fetch is None and self._cooldown_in_force(now) is None:
            self._start_fetch(background=True)
            # A fetch that ended at once has set the outcome.
            if self.has_valid_token:
                return True
        return self._last_ok is True

    def invalidate(self, token: str) -> None:
        """
        Drop the cached token if it is ``token`` (which was just refused with
        a 401 elsewhere), so that the next :meth:`get_token` fetches a new one.

        A token is dropped once however many calls report it (later reports
        name a token that is no longer cached), and a drop within
        ``invalidate_interval`` of the last one is not made: the token is
        kept, so that an API that refuses every token costs one token
        request per interval, not one per call.
        """
        if self._token is None or self._token.value != token:
            return
        now = self._reactor.seconds()
        if now - self._invalidated_at < self._invalidate_interval:
            self.stats.invalidations_ignored += 1
            return
        self._invalidated_at = now
        self._token = None
        self._refresh_at = 0.0
        self.stats.invalidations += 1
        self.log.info("access token dropped after it was refused")

    def stop(self) -> None:
        """
        Abandon the fetch in progress, if any (at shutdown): its waiters fail
        with :class:`CancelledError` and nothing of it stays on the reactor.
        """
        waiters, self._waiters = self._waiters, []
        fetch, self._fetch = self._fetch, None
        if fetch is not None:
            fetch.cancel()
        for waiter in waiters:
            waiter.cancel()

    def _refusal_in_force(self, now: float) -> Optional[TokenError]:
        if self._refusal is not None and now < self._refused_until:
            return self._refusal
        return None

    def _cooldown_in_force(self, now: float) -> Optional[TokenError]:
        if self._last_error is not None and now < self._cooldown_until:
            return self._last_error
        return None

    def _refresh_in_background(self, now: float) -> None:
        """
        Start a refresh nobody waits for, unless one is in flight, the last
        one failed too recently, or the credentials were just refused.
        """
        if self._fetch is not None:
            return
        if now < self._next_refresh_at or self._refusal_in_force(now) is not None:
            return
        self.stats.background_refreshes += 1
        self._start_fetch(background=True)

    def _start_fetch(self, background: bool) -> None:
        fetch = run_cancellable(self._fetch_token)
        self._background = background
        if not fetch.called:
            self._fetch = fetch
        fetch.addBoth(self._fetched, fetch)

    def _fetched(self, result: "AccessToken | Failure", fetch: "Deferred[AccessToken]") -> None:
        if self._fetch is fetch:
            self._fetch = None
        if isinstance(result, Failure) and result.check(CancelledError):
            # Every waiter cancelled, or stop(): nobody is left to tell.
            return None
        waiters, self._waiters = self._waiters, []
        if isinstance(result, Failure):
            if not result.check(TokenError):
                # A bug, or an answer nothing above foresaw: callers still
                # get a TokenError, never something else.  Only the kind of
                # error is told: its text could hold anything.
                result = Failure(
                    TokenError(
                        self._token_url,
                        None,
                        f"token fetch failed unexpectedly ({result.type.__name__})",
                        retryable=True,
                    )
                )
            self._failed(result, waiters)
            return None
        self.stats.refreshes += 1
        self._refresh_failures = 0
        self._next_refresh_at = 0.0
        self._refusal = None
        self._last_error = None
        self._fetch_failures = 0
        self._last_ok = True
        for waiter in waiters:
            waiter.callback(result.value)
        return None

    def _failed(self, failure: Failure, waiters: "list[Deferred[str]]") -> None:
        self.stats.failures += 1
        self._last_ok = False
        now = self._reactor.seconds()
        error = failure.value
        assert isinstance(error, TokenError)
        self._fetch_failures += 1
        if error.status == 401:
            self._refusal = error
            self._refused_until = now + self._refused_cooldown
            cooldown = self._refused_cooldown
            if self._refused_cooldown > 0:
                self.log.warn(
                    "the token endpoint refused the client credentials; token "
                    "requests fail at once for the next {cooldown:g}s",
                    cooldown=self._refused_cooldown,
                )
        else:
            exponent = min(self._fetch_failures - 1, 62)
            cooldown = min(self._failure_cooldown_cap, self._failure_cooldown * float(2**exponent))
            if self._failure_cooldown > 0:
                cooldown = max(cooldown, min(self._throttled_until - now, self._failure_cooldown_cap))
        self._last_error = error
        self._cooldown_until = now + cooldown
        cached = self._token
        if cached is not None and now < cached.expires_at:
            delay = self._retry.backoff(self._refresh_failures)
            self._refresh_failures += 1
            self._next_refresh_at = now + delay
            self.log.warn(
                "token refresh failed ({reason}); using the cached token until "
                "it expires, next refresh in {delay:.3f}s at the earliest",
                reason=_reason_of(failure),
                delay=delay,
            )
            for waiter in waiters:
                waiter.callback(cached.value)
            return
        self.log.warn(
            "no access token: {reason}; calls without one fail at once for {cooldown:g}s",
            reason=_reason_of(failure),
            cooldown=max(0.0, self._cooldown_until - now),
        )
        for waiter in waiters:
            waiter.errback(failure)

    async def _fetch_token(self, cancelled: Cancelled) -> AccessToken:
        """
        Ask the token endpoint, retrying within ``max_attempts``.
        """
        attempt = 0
        while True:
            try:
                return await self._attempt(cancelled, attempt)
            except RetryLater as retry:
                if cancelled:
                    # The cancellation surfaced as a request failure.
                    raise CancelledError()
                attempt += 1
                if attempt >= self._retry.max_attempts:
                    error = retry.error
                    raise TokenError(
                        error.url,
                        error.status,
                        f"gave up after {attempt} attempts: {error.reason}",
                        retryable=True,
                    )
                self.stats.retries += 1
                self.log.info(
                    "token request failed ({reason}); retrying in {delay:.3f}s "
                    "(attempt {attempt} of {max_attempts})",
                    reason=retry.error.reason,
                    delay=retry.delay,
                    attempt=attempt,
                    max_attempts=self._retry.max_attempts,
                )
                await sleep(self._reactor, retry.delay)

    async def _attempt(self, cancelled: Cancelled, attempt: int) -> AccessToken:
        """
        One token request.  Returns the token, raises :class:`TokenError`
        for a final failure or :class:`~ivrproto.clients._retry.RetryLater` for one worth
        retrying.

        :param attempt: how many attempts of this fetch failed before
        """
        url = self._token_url
        self.stats.requests += 1
        backoff = partial(self._retry.backoff, attempt)
        answer = await send(
            self._http,
            self._reactor,
            cancelled,
            "POST",
            url,
            headers={
                b"Content-Type": [b"application/x-www-form-urlencoded"],
                b"Accept": [b"application/json"],
                b"Authorization": [self._authorization],
            },
            data=self._body,
            timeout=self._timeout,
            max_body=self._max_body,
            failed=lambda reason: TokenError(url, None, reason, True),
            backoff=backoff,
        )
        response, status, body = answer.response, answer.status, answer.body
        if status == 200:
            return self._parse_token(
                url,
                answer.body_or_retry(
                    lambda reason, retryable: TokenError(url, status, reason, retryable), backoff
                ),
            )

        payload = _json_object(body) if body is not None else None
        error_code = _error_code(payload)

        if status == 429 or (status == 400 and _is_rate_limited(payload)):
            self._note_retry_after(response)
            delay = self._retry.throttled(response, self._reactor.seconds(), attempt)
            raise RetryLater(TokenError(url, status, "rate limited", True), delay)
        if status == 401:
            raise TokenError(
                url,
                status,
                f"{error_code or 'unauthorized'}: the client id or secret is "
                f"wrong, or the client belongs to another region",
                retryable=False,
            )
        if status == 400:
            raise TokenError(
                url, status, f"request refused: {error_code or 'bad request'}", False
            )
        if 500 <= status <= 599:
            raise RetryLater(TokenError(url, status, "server error", True), backoff())
        raise TokenError(url, status, "unexpected HTTP status", retryable=False)

    def _note_retry_after(self, response: Any) -> None:
        """
        Remember until when a throttled answer asked not to be asked again
        (its ``Retry-After``, up to ``failure_cooldown_cap``): the cool-down
        after the fetch lasts at least that long.
        """
        values = response.headers.getRawHeaders(b"Retry-After")
        now = self._reactor.seconds()
        delay = parse_retry_after(values[0] if values else None, now, self._failure_cooldown_cap)
        if delay is not None:
            self._throttled_until = max(self._throttled_until, now + delay)

    def _parse_token(self, url: str, body: bytes) -> AccessToken:
        payload = _json_object(body)
        if payload is None:
            raise _malformed(url, "not a JSON object")
        value = payload.get("access_token")
        if not isinstance(value, str) or not value:
            raise _malformed(url, "access_token missing or not a string")
        if any(c.isspace() or not c.isprintable() for c in value):
            raise _malformed(url, "access_token holds unusable characters")
        token_type = payload.get("token_type", "bearer")
        if not isinstance(token_type, str) or token_type.lower() != "bearer":
            raise _malformed(url, "token_type is not bearer")
        expires_in = payload.get("expires_in")
        # Compared before any conversion to float: JSON integers have no
        # bound, and float() of a 400-digit one raises OverflowError.
        if (
            isinstance(expires_in, bool)
            or not isinstance(expires_in, (int, float))
            or expires_in != expires_in  # NaN
            or expires_in < 0
        ):
            # 0 is allowed: the token serves the calls waiting for it, and
            # the next call fetches another.
            raise _malformed(url, "expires_in missing or not a number of seconds")
        now = self._reactor.seconds()
        if expires_in > self._max_lifetime:
            self.log.info(
                "token lifetime cut to {max_lifetime:g}s: the endpoint claimed more",
                max_lifetime=self._max_lifetime,
            )
            lifetime = self._max_lifetime
        else:
            lifetime = float(expires_in)
        token = AccessToken(value=value, expires_at=now + lifetime)
        self._token = token
        self._refresh_at = now + lifetime - min(self._refresh_margin, lifetime / 2)
        self.log.info("access token obtained, valid for {lifetime:g}s", lifetime=lifetime)
        return token


def _malformed(url: str, what: str) -> TokenError:
    return TokenError(url, 200, f"malformed token response: {what}", retryable=False)


def _json_object(body: Optional[bytes]) -> Optional[dict[str, Any]]:
    if not body:
        return None
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    return payload if isinstance(payload, dict) else None


def _error_code(payload: Optional[dict[str, Any]]) -> Optional[str]:
    """
    The OAuth ``error`` code, if it looks like one (nothing else of the body
    is ever repeated, since a server may echo what it was sent).
    """
    if payload is None:
        return None
    code = payload.get("error")
    if isinstance(code, str) and 0 < len(code) <= 64 and set(code) <= _ERROR_CODE_CHARS:
        return code
    return None


def _is_rate_limited(payload: Optional[dict[str, Any]]) -> bool:
    """
    Whether a 400 is Genesys's throttling answer: ``invalid_request`` with a
    description that mentions the rate limit.
    """
    if payload is None or payload.get("error") != "invalid_request":
        return False
    for key in ("description", "error_description", "message"):
        text = payload.get(key)
        if isinstance(text, str) and "rate limit" in text.lower():
            return True
    return False


def _reason_of(failure: Failure) -> str:
    error = failure.value
    if isinstance(error, TokenError):
        return str(error)
    return type(error).__name__
