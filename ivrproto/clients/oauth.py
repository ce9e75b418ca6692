"""
The OAuth 2.0 client-credentials token source (platform contract, section 1).

One :class:`TokenSource` per client: it caches the access token and refreshes
it in the background a little before it expires, so that no call waits for a
token while the cached one is still good.  It sends at most one token request
at a time however many callers want a token (the request and its answers:
``_token_endpoint``), and after a failed fetch backs off and fails at once
for a while (the policy: ``_token_policy``), so that an endpoint that is
down, throttling or refusing the secret does not get several requests per
call.  It tells whether it is ready without waiting
(:meth:`TokenSource.ready`), and drops a token refused elsewhere at most
once per ``invalidate_interval``.  Neither the client secret nor any token
ever appears in a log line, an error message or a ``repr``.
"""

from __future__ import annotations

import math
import random as _random
from typing import TYPE_CHECKING, Any, Callable, Optional
from urllib.parse import urlencode

import attrs
from twisted.internet.defer import CancelledError, Deferred, fail, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from ivrproto._types import HTTPClient
from ivrproto.clients._cancel import run_cancellable
from ivrproto.clients._retry import RetryPolicy, policy_with
from ivrproto.clients._token_endpoint import (
    AccessToken,
    TokenEndpoint,
    basic_auth_header,
    read_token,
)
from ivrproto.clients._token_policy import TokenBackoff
from ivrproto.errors import TokenError

if TYPE_CHECKING:
    from ivrproto.cluster.tokens import SharedToken

__all__ = ["DEFAULT_RETRY", "DEFAULT_SCOPE", "TokenStats", "TokenSource"]

DEFAULT_SCOPE = "profile:read callcontrol:inbound callcontrol:media"

#: How a token fetch retries unless told otherwise.
DEFAULT_RETRY = RetryPolicy(4, 0.25, 5.0, 10.0, _random.random)


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
    :param retry: ``max_attempts`` requests per fetch, retries included;
        the backoff bounds after a transient failure, and after a failed
        background refresh; the longest ``Retry-After`` wait honoured (a
        little jitter, at most a second, is added to it).
        :data:`DEFAULT_RETRY` when not given.  The separate keywords
        ``max_attempts``, ``backoff_base``, ``backoff_cap``,
        ``retry_after_cap`` and ``random`` are still taken in its place
        (see :func:`~ivrproto.clients._retry.policy_with`).
    :param refused_cooldown: how long after a 401 ``invalid_client`` further
        token requests fail at once, without a request; ``None`` means the
        retry policy's backoff cap
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
    """

    log = Logger()

    def __init__(
        self,
        reactor: IReactorTime,
        http: HTTPClient,
        token_url: str,
        client_id: str,
        client_secret: str,
        *,
        scope: str = DEFAULT_SCOPE,
        timeout: float = 5.0,
        refresh_margin: float = 60.0,
        retry: Optional[RetryPolicy] = None,
        refused_cooldown: Optional[float] = None,
        failure_cooldown: float = 1.0,
        failure_cooldown_cap: float = 10.0,
        invalidate_interval: float = 5.0,
        max_lifetime: float = 86400.0,
        max_body: int = 64 * 1024,
        max_attempts: Optional[int] = None,
        backoff_base: Optional[float] = None,
        backoff_cap: Optional[float] = None,
        retry_after_cap: Optional[float] = None,
        random: Optional[Callable[[], float]] = None,
    ) -> None:
        # Over 60 lines only for its keyword list: the five separate retry
        # keywords stay for callers written before retry=.
        self._retry = policy_with(
            retry,
            DEFAULT_RETRY,
            max_attempts=max_attempts,
            backoff_base=backoff_base,
            backoff_cap=backoff_cap,
            retry_after_cap=retry_after_cap,
            random=random,
        )
        self._backoff = TokenBackoff(
            self._retry,
            self._retry.cap if refused_cooldown is None else refused_cooldown,
            failure_cooldown,
            failure_cooldown_cap,
        )
        if not (0 <= invalidate_interval < math.inf):
            raise ValueError("invalidate_interval must be a finite number, 0 or more")
        if not (0 < max_lifetime < math.inf):
            raise ValueError("max_lifetime must be a positive finite number")
        self._reactor = reactor
        self._token_url = token_url
        self.stats = TokenStats()
        self._endpoint = TokenEndpoint(
            reactor,
            http,
            token_url,
            authorization=basic_auth_header(client_id, client_secret),
            body=urlencode({"grant_type": "client_credentials", "scope": scope}).encode("ascii"),
            timeout=timeout,
            max_body=max_body,
            retry=self._retry,
            backoff=self._backoff,
            # Looked up on each answer, so that a replaced one is used.
            parse=lambda url, body: self._parse_token(url, body),
            stats=self.stats,
            log=self.log,
        )
        self._refresh_margin = refresh_margin
        self._invalidate_interval = invalidate_interval
        self._max_lifetime = max_lifetime

        self._token: Optional[AccessToken] = None
        self._refresh_at = 0.0
        # The one fetch in flight, and the callers waiting for it (callers
        # are never made to wait while the cached token is unexpired).
        self._fetch: Optional[Deferred[AccessToken]] = None
        self._waiters: list[Deferred[str]] = []
        self._background = False  # whether that fetch is a background refresh
        # The outcome of the last fetch: None before the first one ends.
        self._last_ok: Optional[bool] = None
        self._invalidated_at = -math.inf
        # With shared state: the token shared by every instance, the
        # longest lifetime seen (the margin is at most half of it), and the
        # refused token's deletion on Redis, which a fetch waits for.
        self._shared: Optional[SharedToken] = None
        self._lifetime = math.inf
        self._invalidating: Optional[Deferred[Any]] = None

    def use_shared(self, shared: SharedToken) -> None:
        """
        Obtain tokens through ``shared`` (:mod:`ivrproto.cluster.tokens`):
        one refresh across every instance with the same client id, the
        others taking the token it stores; a refused token is deleted there
        too.  Everything else (the background refresh, the cool-downs, the
        waiters) stays as it is.
        """
        self._shared = shared

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

        cooling = self._backoff.blocking(now)
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
        if self._fetch is None and self._backoff.blocking(now) is None:
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
        if self._shared is not None:
            # Never fails; the next fetch waits for it (see _obtain).
            pending = self._invalidating = self._shared.invalidate(token)

            def done(result: Any) -> Any:
                if self._invalidating is pending:
                    self._invalidating = None
                return result

            pending.addBoth(done)

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

    def _refresh_in_background(self, now: float) -> None:
        """
        Start a refresh nobody waits for, unless one is in flight, the last
        one failed too recently, or the credentials were just refused.
        """
        if self._fetch is not None:
            return
        if not self._backoff.may_refresh(now):
            return
        self.stats.background_refreshes += 1
        self._start_fetch(background=True)

    def _start_fetch(self, background: bool) -> None:
        fetch = run_cancellable(self._endpoint.fetch if self._shared is None else self._obtain)
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
        self._backoff.succeeded()
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
        backoff = self._backoff
        backoff.failed(error, now)
        if error.status == 401 and backoff.refused_cooldown > 0:
            self.log.warn(
                "the token endpoint refused the client credentials; token "
                "requests fail at once for the next {cooldown:g}s",
                cooldown=backoff.refused_cooldown,
            )
        cached = self._token
        if cached is not None and now < cached.expires_at:
            delay = backoff.refresh_failed(now)
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
            cooldown=backoff.cooldown_left(now),
        )
        for waiter in waiters:
            waiter.errback(failure)

    async def _obtain(self, cancelled: Any) -> AccessToken:
        """
        A fetch through the shared token: the one another instance stored,
        or one this instance fetches (and stores) while it holds the lock.
        """
        from ivrproto.cluster.tokens import TokenGrant

        shared = self._shared
        assert shared is not None
        if self._invalidating is not None:
            await self._invalidating
        margin = min(self._refresh_margin, self._lifetime / 2)

        async def fetch() -> TokenGrant:
            token = await self._endpoint.fetch(cancelled)
            return TokenGrant(token.value, token.expires_at - self._reactor.seconds())

        grant = await shared.obtain(fetch, margin)
        now = self._reactor.seconds()
        token = self._token
        if token is None or token.value != grant.token:
            token = self._token = AccessToken(grant.token, now + grant.expires_in)
            # Its lifetime is at least what it has left.
            self._lifetime = (
                grant.expires_in if self._lifetime == math.inf
                else max(self._lifetime, grant.expires_in)
            )
            self.log.info(
                "access token taken from the shared state, valid for {left:.0f}s",
                left=grant.expires_in,
            )
        # An old token another instance is replacing: asked again in a
        # second at the earliest, not on every call.
        self._refresh_at = max(now + grant.expires_in - margin, now + min(1.0, grant.expires_in / 2))
        return token

    def _parse_token(self, url: str, body: bytes) -> AccessToken:
        """
        Read a 200 body of the token endpoint and keep its token.
        """
        value, expires_in = read_token(url, body)
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
        self._lifetime = lifetime if self._lifetime == math.inf else max(self._lifetime, lifetime)
        self._refresh_at = now + lifetime - min(self._refresh_margin, lifetime / 2)
        self.log.info("access token obtained, valid for {lifetime:g}s", lifetime=lifetime)
        return token


def _reason_of(failure: Failure) -> str:
    error = failure.value
    if isinstance(error, TokenError):
        return str(error)
    return type(error).__name__
