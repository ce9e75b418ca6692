"""
The token endpoint's side of a token fetch (platform contract, section 1):
the :class:`AccessToken`, the Basic ``Authorization`` value
(:func:`basic_auth_header`), and :class:`TokenEndpoint`, which sends the
client-credentials request, retrying within its policy, and reads the
answers: the token and its lifetime in a 200, the OAuth ``error`` code, and
whether a 400 is Genesys's throttling answer.  Nothing of a body is ever repeated in an error but an ``error``
code that looks like one (a server may echo what it was sent).
"""

from __future__ import annotations

import base64
import json
from functools import partial
from typing import TYPE_CHECKING, Any, Callable, Optional
from urllib.parse import quote_plus

import attrs
from twisted.internet.defer import CancelledError
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from ivrproto._types import HTTPClient
from ivrproto.clients._cancel import Cancelled, sleep
from ivrproto.clients._http import send
from ivrproto.clients._retry import RetryLater, RetryPolicy, parse_retry_after
from ivrproto.clients._token_policy import TokenBackoff
from ivrproto.errors import TokenError

if TYPE_CHECKING:
    from ivrproto.clients.oauth import TokenStats

__all__ = [
    "AccessToken",
    "basic_auth_header",
    "TokenEndpoint",
    "read_token",
    "json_object",
    "error_code",
    "is_rate_limited",
]

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


def basic_auth_header(client_id: str, client_secret: str) -> bytes:
    """
    The ``Authorization`` header value for HTTP Basic client authentication
    as RFC 6749 section 2.3.1 wants it: the client id and the secret are each
    form-urlencoded (UTF-8) before being joined with ``:`` and base64-encoded.
    """
    pair = f"{quote_plus(client_id, safe='')}:{quote_plus(client_secret, safe='')}"
    return b"Basic " + base64.b64encode(pair.encode("ascii"))


def _malformed(url: str, what: str) -> TokenError:
    return TokenError(url, 200, f"malformed token response: {what}", retryable=False)


def json_object(body: Optional[bytes]) -> Optional[dict[str, Any]]:
    """
    ``body`` decoded, when it is a JSON object; else ``None``.
    """
    if not body:
        return None
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    return payload if isinstance(payload, dict) else None


def read_token(url: str, body: bytes) -> "tuple[str, int | float]":
    """
    The access token of a 200 body and its ``expires_in``, as given (a
    JSON number, 0 or more, not yet converted: JSON integers have no
    bound).

    :param url: the token endpoint, for the error
    :raise TokenError: the body is not a bearer token answer
    """
    payload = json_object(body)
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
    # Compared before any conversion to float: float() of a 400-digit
    # integer raises OverflowError.
    if (
        isinstance(expires_in, bool)
        or not isinstance(expires_in, (int, float))
        or expires_in != expires_in  # NaN
        or expires_in < 0
    ):
        # 0 is allowed: the token serves the calls waiting for it, and
        # the next call fetches another.
        raise _malformed(url, "expires_in missing or not a number of seconds")
    return value, expires_in


def error_code(payload: Optional[dict[str, Any]]) -> Optional[str]:
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


def is_rate_limited(payload: Optional[dict[str, Any]]) -> bool:
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


class TokenEndpoint:
    """
    Asks the token endpoint for a token, retrying what is worth retrying
    within ``retry``; tells ``backoff`` how long a throttled answer asked
    to wait.

    :param authorization: the ``Authorization`` header value
    :param body: the form-encoded request body
    :param parse: turns the URL and the body of a 200 into the token (the
        source's, which also keeps it), raising :class:`TokenError` when
        the body is malformed
    :param log: where to tell about retries (the token source's logger)
    """

    def __init__(
        self,
        reactor: IReactorTime,
        http: HTTPClient,
        url: str,
        *,
        authorization: bytes,
        body: bytes,
        timeout: float,
        max_body: int,
        retry: RetryPolicy,
        backoff: TokenBackoff,
        parse: Callable[[str, bytes], AccessToken],
        stats: "TokenStats",
        log: Logger,
    ) -> None:
        self._reactor = reactor
        self._http = http
        self._url = url
        self._headers = {
            b"Content-Type": [b"application/x-www-form-urlencoded"],
            b"Accept": [b"application/json"],
            b"Authorization": [authorization],
        }
        self._body = body
        self._timeout = timeout
        self._max_body = max_body
        self._retry = retry
        self._backoff = backoff
        self._parse = parse
        self._stats = stats
        self._log = log

    async def fetch(self, cancelled: Cancelled) -> AccessToken:
        """
        Ask the token endpoint, retrying within ``max_attempts``.

        :return: the token, as ``parse`` read it
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
                self._stats.retries += 1
                self._log.info(
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
        for a final failure or :class:`~ivrproto.clients._retry.RetryLater`
        for one worth retrying.

        :param attempt: how many attempts of this fetch failed before
        """
        url = self._url
        self._stats.requests += 1
        backoff = partial(self._retry.backoff, attempt)
        answer = await send(
            self._http,
            self._reactor,
            cancelled,
            "POST",
            url,
            headers=self._headers,
            data=self._body,
            timeout=self._timeout,
            max_body=self._max_body,
            failed=lambda reason: TokenError(url, None, reason, True),
            backoff=backoff,
        )
        response, status = answer.response, answer.status
        if status == 200:
            return self._parse(
                url,
                answer.body_or_retry(
                    lambda reason, retryable: TokenError(url, status, reason, retryable), backoff
                ),
            )
        payload = json_object(answer.body)
        code = error_code(payload)
        if status == 429 or (status == 400 and is_rate_limited(payload)):
            self._note_retry_after(response)
            delay = self._retry.throttled(response, self._reactor.seconds(), attempt)
            raise RetryLater(TokenError(url, status, "rate limited", True), delay)
        if status == 401:
            raise TokenError(
                url,
                status,
                f"{code or 'unauthorized'}: the client id or secret is "
                f"wrong, or the client belongs to another region",
                retryable=False,
            )
        if status == 400:
            raise TokenError(url, status, f"request refused: {code or 'bad request'}", False)
        if 500 <= status <= 599:
            raise RetryLater(TokenError(url, status, "server error", True), backoff())
        raise TokenError(url, status, "unexpected HTTP status", retryable=False)

    def _note_retry_after(self, response: Any) -> None:
        """
        Tell the backoff until when a throttled answer asked not to be asked
        again (its ``Retry-After``, up to ``failure_cooldown_cap``).
        """
        values = response.headers.getRawHeaders(b"Retry-After")
        now = self._reactor.seconds()
        delay = parse_retry_after(
            values[0] if values else None, now, self._backoff.failure_cooldown_cap
        )
        if delay is not None:
            self._backoff.throttled(now, delay)
