"""
Tests for :mod:`ivrproto.clients.oauth`.
"""

from __future__ import annotations

import base64
import json
from email.utils import formatdate
from typing import Any
from urllib.parse import parse_qs, unquote_plus

from treq.testing import StubTreq
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.server import NOT_DONE_YET, Request

from ivrproto.errors import TokenError
from ivrproto.clients._token_endpoint import AccessToken, basic_auth_header
from ivrproto.clients._retry import RetryPolicy
from ivrproto.clients.oauth import DEFAULT_SCOPE, TokenSource

from .scripted import HANG, Answer, ScriptedResource, capture_logs, event_text, json_answer

TOKEN_URL = "http://login.example.test/oauth/token"
CLIENT_ID = "ivr-client"
SECRET = "s3cr3t:with:colons-é"
T0 = 1_700_000_000.0


def token_answer(value: str = "tok-1", expires_in: Any = 3600) -> Answer:
    """
    A 200 answer with a token.
    """
    body = {"access_token": value, "token_type": "bearer", "expires_in": expires_in}
    return (200, {b"content-type": b"application/json"}, json.dumps(body).encode())


class TokenSourceTestsMixin:
    """
    Builds a token source on a scripted token endpoint.
    """

    def make(self, answers: list[Answer], **kwargs: Any) -> TokenSource:
        self.clock = Clock()
        self.clock.advance(T0)
        self.resource = ScriptedResource(answers)
        self.stub = StubTreq(self.resource)
        kwargs.setdefault("random", lambda: 0.5)
        self.source = TokenSource(
            self.clock, self.stub, TOKEN_URL, CLIENT_ID, SECRET, **kwargs
        )
        self.addCleanup(self.assert_no_timers)  # type: ignore[attr-defined]
        return self.source

    def assert_no_timers(self) -> None:
        self.stub.flush()
        assert self.clock.getDelayedCalls() == [], self.clock.getDelayedCalls()

    def flush(self) -> None:
        self.stub.flush()

    def token_of(self, d: "Deferred[str]") -> str:
        self.flush()
        return self.successResultOf(d)  # type: ignore[attr-defined,no-any-return]

    def error_of(self, d: "Deferred[str]") -> TokenError:
        self.flush()
        failure = self.failureResultOf(d, TokenError)  # type: ignore[attr-defined]
        return failure.value  # type: ignore[no-any-return]


class RequestFormatTests(TokenSourceTestsMixin, SynchronousTestCase):
    """
    The token request is what section 1 of the contract asks for.
    """

    def test_basic_auth_form_urlencodes_before_base64(self) -> None:
        """A secret with ':' and non-ASCII is form-urlencoded, then base64-encoded."""
        header = basic_auth_header("my id", "a:b é+&")
        self.assertTrue(header.startswith(b"Basic "))
        decoded = base64.b64decode(header[len(b"Basic "):]).decode("ascii")
        self.assertEqual(decoded, "my+id:a%3Ab+%C3%A9%2B%26")
        user, _, password = decoded.partition(":")
        self.assertEqual((unquote_plus(user), unquote_plus(password)), ("my id", "a:b é+&"))

    def test_request_method_headers_and_body(self) -> None:
        """POST to the token URL with Basic auth and the form body, nothing else."""
        source = self.make([token_answer()])
        self.assertEqual(self.token_of(source.get_token()), "tok-1")
        [seen] = self.resource.seen
        self.assertEqual(seen.method, b"POST")
        self.assertEqual(seen.path, b"/oauth/token")
        self.assertEqual(
            seen.headers[b"Content-Type"], [b"application/x-www-form-urlencoded"]
        )
        self.assertEqual(seen.headers[b"Authorization"], [basic_auth_header(CLIENT_ID, SECRET)])
        user, _, password = (
            base64.b64decode(seen.headers[b"Authorization"][0][6:]).decode().partition(":")
        )
        self.assertEqual((unquote_plus(user), unquote_plus(password)), (CLIENT_ID, SECRET))
        form = parse_qs(seen.body.decode("ascii"), strict_parsing=True)
        self.assertEqual(
            form, {"grant_type": ["client_credentials"], "scope": [DEFAULT_SCOPE]}
        )
        self.assertTrue(seen.body.startswith(b"grant_type=client_credentials&scope="))

    def test_secret_not_in_repr(self) -> None:
        """Neither the source nor a token shows the secret or the token in repr."""
        source = self.make([token_answer("tok-repr")])
        self.token_of(source.get_token())
        self.assertNotIn(SECRET, repr(source))
        self.assertNotIn("tok-repr", repr(AccessToken("tok-repr", 1.0)))
        self.assertNotIn("tok-repr", repr(source._token))


class CacheTests(TokenSourceTestsMixin, SynchronousTestCase):
    """
    Tokens are cached until the refresh margin, and can be invalidated.
    """

    def test_cache_reused(self) -> None:
        """A second call within the token's life sends no request."""
        source = self.make([token_answer("tok-1")])
        self.assertEqual(self.token_of(source.get_token()), "tok-1")
        self.clock.advance(1000)
        self.assertEqual(self.successResultOf(source.get_token()), "tok-1")
        self.assertEqual(len(self.resource.seen), 1)
        self.assertEqual(source.stats.requests, 1)
        self.assertEqual(source.stats.refreshes, 1)

    def test_refresh_margin(self) -> None:
        """Within refresh_margin of expiry a new token is fetched in the background."""
        source = self.make([token_answer("tok-1", 3600), token_answer("tok-2", 3600)])
        self.assertEqual(self.token_of(source.get_token()), "tok-1")
        self.clock.advance(3600 - 61)
        self.assertEqual(self.successResultOf(source.get_token()), "tok-1")
        self.flush()
        self.assertEqual(len(self.resource.seen), 1)
        self.clock.advance(2)
        # Past the refresh point: the cached token at once, and a refresh.
        self.assertEqual(self.successResultOf(source.get_token()), "tok-1")
        self.flush()
        self.assertEqual(self.successResultOf(source.get_token()), "tok-2")
        self.assertEqual(len(self.resource.seen), 2)
        self.assertEqual(source.stats.background_refreshes, 1)

    def test_short_lived_token_margin_is_bounded(self) -> None:
        """A token shorter-lived than the margin is still reused for half its life."""
        source = self.make([token_answer("tok-1", 30)])
        self.token_of(source.get_token())
        self.clock.advance(10)
        self.assertEqual(self.successResultOf(source.get_token()), "tok-1")
        self.assertEqual(len(self.resource.seen), 1)

    def test_has_valid_token(self) -> None:
        """has_valid_token follows the token's expiry."""
        source = self.make([token_answer("tok-1", 100)])
        self.assertFalse(source.has_valid_token)
        self.token_of(source.get_token())
        self.assertTrue(source.has_valid_token)
        self.clock.advance(100)
        self.assertFalse(source.has_valid_token)

    def test_invalidate(self) -> None:
        """Invalidating the cached token makes the next call fetch a new one."""
        source = self.make([token_answer("tok-1"), token_answer("tok-2")])
        self.token_of(source.get_token())
        source.invalidate("tok-1")
        self.assertFalse(source.has_valid_token)
        self.assertEqual(self.token_of(source.get_token()), "tok-2")

    def test_invalidate_other_token(self) -> None:
        """Invalidating a token that is not the cached one changes nothing."""
        source = self.make([token_answer("tok-1")])
        self.token_of(source.get_token())
        source.invalidate("tok-0")
        self.assertEqual(self.successResultOf(source.get_token()), "tok-1")
        self.assertEqual(len(self.resource.seen), 1)

    def test_refresh_failure_keeps_unexpired_token(self) -> None:
        """A failed refresh gives the still-valid cached token."""
        source = self.make(
            [token_answer("tok-1", 3600), json_answer(401, {"error": "invalid_client"})]
        )
        self.token_of(source.get_token())
        self.clock.advance(3600 - 30)
        self.assertEqual(self.token_of(source.get_token()), "tok-1")
        self.assertEqual(source.stats.failures, 1)


class SingleFlightTests(TokenSourceTestsMixin, SynchronousTestCase):
    """
    Concurrent callers share one request.
    """

    def test_many_callers_one_request(self) -> None:
        """Many concurrent get_token calls send one request; all get the token."""
        release: list[Request] = []

        def later(request: Request) -> Any:
            release.append(request)
            return NOT_DONE_YET

        source = self.make([later])
        waiters = [source.get_token() for _ in range(10)]
        self.flush()
        self.assertEqual(len(self.resource.seen), 1)
        self.assertEqual(len({id(d) for d in waiters}), 10)
        for d in waiters:
            self.assertNoResult(d)
        [request] = release
        request.setHeader(b"content-type", b"application/json")
        request.write(json.dumps({"access_token": "tok-s", "expires_in": 600}).encode())
        request.finish()
        self.flush()
        self.assertEqual([self.successResultOf(d) for d in waiters], ["tok-s"] * 10)
        self.assertEqual(source.stats.requests, 1)

    def test_failure_reaches_every_caller(self) -> None:
        """A failed fetch fails every waiting caller."""
        source = self.make([HANG])
        waiters = [source.get_token() for _ in range(5)]
        self.flush()
        [request] = self.resource.hanging
        request.setResponseCode(401)
        request.write(b'{"error": "invalid_client"}')
        request.finish()
        self.flush()
        self.assertEqual(len(self.resource.seen), 1)
        for d in waiters:
            self.assertEqual(self.error_of(d).status, 401)
        self.assertEqual(source.stats.failures, 1)

    def test_cancel_one_caller(self) -> None:
        """Cancelling one caller leaves the others waiting for the token."""
        source = self.make([HANG])
        first, second = source.get_token(), source.get_token()
        self.flush()
        first.cancel()
        self.failureResultOf(first, CancelledError)
        self.assertNoResult(second)
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        second.cancel()
        self.failureResultOf(second, CancelledError)

    def test_cancel_all_callers_abandons_request(self) -> None:
        """When every caller cancels, the request and its timers go away."""
        source = self.make([json_answer(503, {})])
        d = source.get_token()
        self.flush()
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.assertEqual(self.clock.getDelayedCalls(), [])


class FailureTests(TokenSourceTestsMixin, SynchronousTestCase):
    """
    Errors and retries of the token endpoint.
    """

    def test_401_not_retried(self) -> None:
        """401 invalid_client fails at once, not retryable."""
        source = self.make([json_answer(401, {"error": "invalid_client"})])
        error = self.error_of(source.get_token())
        self.assertEqual((error.status, error.retryable, error.url), (401, False, TOKEN_URL))
        self.assertIn("invalid_client", error.reason)
        self.assertEqual(len(self.resource.seen), 1)

    def test_400_not_retried(self) -> None:
        """An ordinary 400 fails at once with the OAuth error code."""
        source = self.make([json_answer(400, {"error": "invalid_scope"})])
        error = self.error_of(source.get_token())
        self.assertEqual((error.status, error.retryable), (400, False))
        self.assertIn("invalid_scope", error.reason)
        self.assertEqual(len(self.resource.seen), 1)

    def test_400_rate_limit_retried(self) -> None:
        """Genesys's 400 "rate limit exceeded" is retried like a 429."""
        source = self.make(
            [
                json_answer(
                    400,
                    {"error": "invalid_request", "description": "Rate limit exceeded"},
                    {b"retry-after": b"3"},
                ),
                json_answer(
                    400,
                    {"error": "invalid_request", "error_description": "rate limit exceeded"},
                ),
                token_answer("tok-ok"),
            ]
        )
        d = source.get_token()
        self.flush()
        self.assertNoResult(d)
        # Retry-After plus jitter: 3 + 0.5 * min(1, 0.3).
        self.clock.advance(3.1)
        self.flush()
        self.assertEqual(len(self.resource.seen), 1)
        self.clock.advance(0.06)
        self.flush()
        self.assertEqual(len(self.resource.seen), 2)
        # No Retry-After: full jitter, 0.5 * min(5, 0.25 * 2**1).
        self.clock.advance(0.25)
        self.assertEqual(self.token_of(d), "tok-ok")
        self.assertEqual(len(self.resource.seen), 3)

    def test_429_retry_after_seconds(self) -> None:
        """429 waits Retry-After seconds plus a little jitter, then retries."""
        source = self.make(
            [json_answer(429, {}, {b"retry-after": b"4"}), token_answer("tok-ok")]
        )
        d = source.get_token()
        self.flush()
        # 4 + 0.5 * min(1, 0.4)
        self.clock.advance(4.19)
        self.flush()
        self.assertNoResult(d)
        self.clock.advance(0.01)
        self.assertEqual(self.token_of(d), "tok-ok")

    def test_429_retry_after_http_date(self) -> None:
        """429 with an HTTP-date waits until that date."""
        date = formatdate(T0 + 7, usegmt=True).encode("ascii")
        source = self.make(
            [json_answer(429, {}, {b"retry-after": date}), token_answer("tok-ok")]
        )
        d = source.get_token()
        self.flush()
        # 7 + 0.5 * min(1, 0.7)
        self.clock.advance(7.3)
        self.flush()
        self.assertNoResult(d)
        self.assertEqual(len(self.resource.seen), 1)
        self.clock.advance(0.06)
        self.assertEqual(self.token_of(d), "tok-ok")

    def test_429_retry_after_capped(self) -> None:
        """A long Retry-After is cut to retry_after_cap (plus at most 1 s of jitter)."""
        source = self.make(
            [json_answer(429, {}, {b"retry-after": b"3600"}), token_answer("tok-ok")],
            retry_after_cap=10.0,
        )
        d = source.get_token()
        self.flush()
        self.clock.advance(10.49)
        self.flush()
        self.assertNoResult(d)
        self.clock.advance(0.01)
        self.assertEqual(self.token_of(d), "tok-ok")

    def test_5xx_backoff_bounded(self) -> None:
        """5xx is retried with full jitter, max_attempts requests in all."""
        source = self.make([json_answer(503, {})] * 10, max_attempts=4, backoff_cap=5.0)
        d = source.get_token()
        self.flush()
        # Delays: 0.5 * min(5, 0.25 * 2**n) for n = 0, 1, 2.
        for delay in (0.125, 0.25, 0.5):
            self.assertNoResult(d)
            self.clock.advance(delay)
            self.flush()
        error = self.error_of(d)
        self.assertEqual((error.status, error.retryable), (503, True))
        self.assertIn("4 attempts", error.reason)
        self.assertEqual(len(self.resource.seen), 4)
        self.assertEqual(source.stats.requests, 4)
        self.assertEqual(source.stats.failures, 1)

    def test_backoff_uses_random(self) -> None:
        """The backoff delay is random() times the exponential bound."""
        source = self.make(
            [json_answer(500, {}), token_answer()], random=lambda: 0.0
        )
        d = source.get_token()
        self.flush()
        self.clock.advance(0)
        self.assertEqual(self.token_of(d), "tok-1")

    def test_timeout(self) -> None:
        """A request with no answer times out and is retried, then fails."""
        source = self.make([HANG, HANG], max_attempts=2, timeout=5.0)
        d = source.get_token()
        self.flush()
        self.clock.advance(5.0)
        self.flush()
        self.assertEqual(len(self.resource.seen), 1)
        self.clock.advance(0.125)
        self.flush()
        self.assertEqual(len(self.resource.seen), 2)
        self.clock.advance(5.0)
        error = self.error_of(d)
        self.assertIsNone(error.status)
        self.assertTrue(error.retryable)
        self.assertIn("timed out", error.reason)

    def test_body_timeout(self) -> None:
        """A body that stops arriving is bounded in time too."""

        def trickle(request: Request) -> Any:
            request.setHeader(b"content-length", b"100")
            request.write(b'{"access_token": ')
            return NOT_DONE_YET

        source = self.make([trickle, token_answer("tok-ok")], timeout=2.0)
        d = source.get_token()
        self.flush()
        self.assertNoResult(d)
        self.clock.advance(2.0)
        self.flush()
        self.clock.advance(0.125)
        self.assertEqual(self.token_of(d), "tok-ok")

    def test_malformed_200(self) -> None:
        """A 200 without a usable token is an error, not a token."""
        bodies: list[Any] = [
            b"not json",
            b"[]",
            json.dumps({"expires_in": 3600}).encode(),
            json.dumps({"access_token": 5, "expires_in": 3600}).encode(),
            json.dumps({"access_token": "", "expires_in": 3600}).encode(),
            json.dumps({"access_token": "t", "expires_in": "3600"}).encode(),
            json.dumps({"access_token": "t", "expires_in": True}).encode(),
            json.dumps({"access_token": "t", "expires_in": -1}).encode(),
            json.dumps({"access_token": "t", "expires_in": 60, "token_type": "mac"}).encode(),
        ]
        for body in bodies:
            source = self.make([(200, {}, body)])
            error = self.error_of(source.get_token())
            self.assertEqual((error.status, error.retryable), (200, False), body)
            self.assertIn("malformed", error.reason)
            self.assertFalse(source.has_valid_token)

    def test_oversize_body_content_length(self) -> None:
        """A body whose Content-Length exceeds max_body is refused."""
        big = json.dumps({"access_token": "t" * 2000, "expires_in": 60}).encode()
        source = self.make([(200, {}, big)], max_body=1024)
        error = self.error_of(source.get_token())
        self.assertEqual(error.status, 200)
        self.assertIn("larger", error.reason)
        self.assertFalse(error.retryable)

    def test_oversize_body_chunked(self) -> None:
        """A chunked body that grows past max_body is cut off."""

        def chunks(request: Request) -> Any:
            for _ in range(10):
                request.write(b"x" * 200)
            request.finish()
            return NOT_DONE_YET

        source = self.make([chunks], max_body=1024)
        error = self.error_of(source.get_token())
        self.assertIn("larger than the 1024 bytes", error.reason)

    def test_connection_refused_is_transient(self) -> None:
        """A request that fails outright is retried, then reported without detail."""

        class Failing:
            def __init__(self) -> None:
                self.calls = 0

            def request(self, *args: Any, **kwargs: Any) -> "Deferred[Any]":
                from twisted.internet.defer import fail
                from twisted.internet.error import ConnectionRefusedError

                self.calls += 1
                return fail(ConnectionRefusedError("login.example.test"))

        clock = Clock()
        http = Failing()
        source = TokenSource(
            clock, http, TOKEN_URL, CLIENT_ID, SECRET, max_attempts=2, random=lambda: 0.5
        )
        d = source.get_token()
        clock.advance(0.125)
        error = self.failureResultOf(d, TokenError).value
        self.assertEqual(http.calls, 2)
        self.assertIsNone(error.status)
        self.assertIn("connection failed", error.reason)
        self.assertEqual(clock.getDelayedCalls(), [])


class SecrecyTests(TokenSourceTestsMixin, SynchronousTestCase):
    """
    The secret and tokens never reach logs or error messages.
    """

    def test_no_secret_or_token_in_logs_or_errors(self) -> None:
        """Across success, retries and failures, nothing secret is shown."""
        events = capture_logs(self)
        token = "tok-very-secret-value"
        source = self.make(
            [
                json_answer(503, {"echo": SECRET}),
                json_answer(429, {}, {b"retry-after": b"1"}),
                token_answer(token, 100),
                json_answer(
                    400, {"error": "invalid_request", "error_description": SECRET}
                ),
            ]
        )
        d = source.get_token()
        self.flush()
        self.clock.advance(0.125)
        self.flush()
        self.clock.advance(1.05)
        self.assertEqual(self.token_of(d), token)
        self.clock.advance(100)
        error = self.error_of(source.get_token())
        shown = event_text(events) + str(error) + repr(error) + repr(source)
        self.assertTrue(events)
        for secret in (SECRET, token, base64.b64encode(SECRET.encode()).decode()):
            self.assertNotIn(secret, shown)


class BackgroundRefreshTests(TokenSourceTestsMixin, SynchronousTestCase):
    """
    No caller waits while the cached token is unexpired; the refresh runs
    behind them.
    """

    def answer(self, request: Request, value: str, expires_in: int = 3600) -> None:
        request.setHeader(b"content-type", b"application/json")
        request.write(json.dumps({"access_token": value, "expires_in": expires_in}).encode())
        request.finish()
        self.flush()

    def test_500_callers_at_refresh_time(self) -> None:
        """500 concurrent calls past the refresh point get the cached token at once; one request."""
        source = self.make([token_answer("tok-1", 3600), HANG])
        self.token_of(source.get_token())
        self.clock.advance(3600 - 30)
        waiters = [source.get_token() for _ in range(500)]
        self.flush()
        self.assertEqual([self.successResultOf(d) for d in waiters], ["tok-1"] * 500)
        self.assertEqual(len(self.resource.seen), 2)
        self.assertEqual(source.stats.background_refreshes, 1)
        [request] = self.resource.hanging
        self.answer(request, "tok-2")
        self.assertEqual(self.successResultOf(source.get_token()), "tok-2")
        self.assertEqual(source.stats.requests, 2)

    def test_expired_token_waits_for_running_refresh(self) -> None:
        """Once the token expires, callers wait for the refresh already in flight."""
        source = self.make([token_answer("tok-1", 100), HANG], timeout=60.0)
        self.token_of(source.get_token())
        self.clock.advance(60)
        self.assertEqual(self.successResultOf(source.get_token()), "tok-1")
        self.flush()
        self.clock.advance(40)
        waiting = [source.get_token() for _ in range(3)]
        for d in waiting:
            self.assertNoResult(d)
        [request] = self.resource.hanging
        self.answer(request, "tok-2")
        self.assertEqual([self.successResultOf(d) for d in waiting], ["tok-2"] * 3)
        self.assertEqual(len(self.resource.seen), 2)

    def test_cancelled_waiter_keeps_background_refresh(self) -> None:
        """A caller that cancels does not abandon a refresh others may need."""
        source = self.make([token_answer("tok-1", 100), HANG], timeout=60.0)
        self.token_of(source.get_token())
        self.clock.advance(60)
        source.get_token()
        self.flush()
        self.clock.advance(40)
        d = source.get_token()
        d.cancel()
        self.failureResultOf(d, CancelledError)
        [request] = self.resource.hanging
        self.answer(request, "tok-2")
        self.assertEqual(self.successResultOf(source.get_token()), "tok-2")

    def test_failed_refresh_backs_off(self) -> None:
        """After a failed refresh the next one waits a growing, jittered backoff; success resets it."""
        source = self.make(
            [token_answer("tok-1", 3600)] + [json_answer(503, {})] * 3 + [token_answer("tok-2", 3600)],
            max_attempts=1,
            backoff_base=1.0,
            backoff_cap=8.0,
        )
        self.token_of(source.get_token())
        self.clock.advance(3600 - 60)
        for _ in range(10):
            self.assertEqual(self.token_of(source.get_token()), "tok-1")
        self.assertEqual(len(self.resource.seen), 2)
        # Backoffs 0.5 * min(8, 1 * 2**n): 0.5, then 1.0, then 2.0.
        for wait, requests in ((0.5, 3), (1.0, 4)):
            self.clock.advance(wait - 0.01)
            self.token_of(source.get_token())
            self.assertEqual(len(self.resource.seen), requests - 1)
            self.clock.advance(0.01)
            self.token_of(source.get_token())
            self.assertEqual(len(self.resource.seen), requests)
        self.clock.advance(2.0)
        self.assertEqual(self.token_of(source.get_token()), "tok-1")
        self.assertEqual(self.successResultOf(source.get_token()), "tok-2")
        self.assertEqual(source.stats.failures, 3)
        self.assertEqual(source._backoff.refresh_failures, 0)
        self.assertEqual(source.stats.background_refreshes, 4)

    def test_expiry_during_backoff_waits_for_fetch(self) -> None:
        """When the token expires, a caller waits for a fetch even within the refresh backoff."""
        source = self.make(
            [token_answer("tok-1", 10), json_answer(503, {}), token_answer("tok-2", 10)],
            max_attempts=1,
            backoff_base=100.0,
            backoff_cap=100.0,
        )
        self.token_of(source.get_token())
        self.clock.advance(6)
        self.assertEqual(self.token_of(source.get_token()), "tok-1")
        self.assertEqual(source.stats.failures, 1)
        self.clock.advance(4)
        self.assertFalse(source.has_valid_token)
        self.assertEqual(self.token_of(source.get_token()), "tok-2")

    def test_stop(self) -> None:
        """stop() abandons the fetch in flight; its waiters are cancelled, no timer is left."""
        source = self.make([HANG])
        d = source.get_token()
        self.flush()
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        source.stop()
        self.failureResultOf(d, CancelledError)
        self.assertEqual(self.clock.getDelayedCalls(), [])


class RefusedCredentialsTests(TokenSourceTestsMixin, SynchronousTestCase):
    """
    A 401 invalid_client is not retried in a loop, by anyone.
    """

    def test_fast_failure_within_cooldown(self) -> None:
        """After a 401, calls within the cool-down fail at once with the same error, no request."""
        source = self.make(
            [json_answer(401, {"error": "invalid_client"}), token_answer("tok-ok")],
            backoff_cap=5.0,
        )
        first = self.error_of(source.get_token())
        errors = [self.error_of(source.get_token()) for _ in range(100)]
        self.assertEqual(len(self.resource.seen), 1)
        self.assertTrue(all(e is first for e in errors))
        self.assertEqual(source.stats.fast_failures, 100)
        self.assertEqual(source.stats.failures, 1)
        self.clock.advance(4.99)
        self.error_of(source.get_token())
        self.assertEqual(len(self.resource.seen), 1)
        self.clock.advance(0.01)
        self.assertEqual(self.token_of(source.get_token()), "tok-ok")
        self.assertEqual(len(self.resource.seen), 2)

    def test_cooldown_setting(self) -> None:
        """refused_cooldown overrides the default; 0 asks again on every call."""
        source = self.make(
            [json_answer(401, {"error": "invalid_client"})] * 2, refused_cooldown=0
        )
        self.error_of(source.get_token())
        self.error_of(source.get_token())
        self.assertEqual((len(self.resource.seen), source.stats.fast_failures), (2, 0))

    def test_refused_refresh_uses_cached_token(self) -> None:
        """A background refresh refused with 401 keeps the cached token; no refresh within the cool-down."""
        source = self.make(
            [token_answer("tok-1", 100), json_answer(401, {"error": "invalid_client"})],
            backoff_base=0.0,
            refused_cooldown=50.0,
        )
        self.token_of(source.get_token())
        self.clock.advance(60)
        for _ in range(5):
            self.assertEqual(self.token_of(source.get_token()), "tok-1")
            self.clock.advance(1)
        self.assertEqual(len(self.resource.seen), 2)
        self.assertEqual(source.stats.failures, 1)
        self.clock.advance(35)
        error = self.error_of(source.get_token())
        self.assertEqual(error.status, 401)
        self.assertEqual(source.stats.fast_failures, 1)

    def test_other_errors_cool_down_briefly(self) -> None:
        """After a 400 the error is repeated for failure_cooldown only, then the next call asks again."""
        source = self.make([json_answer(400, {"error": "invalid_scope"}), token_answer("tok-ok")])
        first = self.error_of(source.get_token())
        self.assertIs(self.error_of(source.get_token()), first)
        self.clock.advance(1.0)
        self.assertEqual(self.token_of(source.get_token()), "tok-ok")
        self.assertEqual(len(self.resource.seen), 2)


class FailureCooldownTests(TokenSourceTestsMixin, SynchronousTestCase):
    """
    Any failed fetch, not only a 401, stops the requests for a while:
    an endpoint that throttles or fails gets one fetch per cool-down, not
    one per call.
    """

    def test_5xx_fetch_then_fast_failures(self) -> None:
        """After a fetch that gave up on 500s, 100 calls fail at once: no request until the cool-down ends."""
        source = self.make([json_answer(500, {})] * 4 + [token_answer("tok-ok")], random=lambda: 0.0)
        d = source.get_token()
        for _ in range(4):
            self.flush()
            self.clock.advance(0)
        first = self.error_of(d)
        self.assertEqual(len(self.resource.seen), 4)
        errors = [self.error_of(source.get_token()) for _ in range(100)]
        self.assertTrue(all(e is first for e in errors))
        self.assertEqual(len(self.resource.seen), 4)
        self.assertEqual(source.stats.fast_failures, 100)
        self.clock.advance(1.0)
        self.assertEqual(self.token_of(source.get_token()), "tok-ok")
        self.assertEqual(len(self.resource.seen), 5)

    def test_cooldown_doubles_up_to_cap(self) -> None:
        """Failed fetches in a row cool down 1, 2, 4, then the cap; a token resets it."""
        source = self.make(
            [json_answer(503, {})] * 4 + [token_answer("tok-ok", 1), json_answer(503, {})],
            max_attempts=1,
            failure_cooldown=1.0,
            failure_cooldown_cap=3.0,
        )
        for cooldown in (1.0, 2.0, 3.0, 3.0):
            self.error_of(source.get_token())
            self.clock.advance(cooldown - 0.01)
            self.error_of(source.get_token())
            self.clock.advance(0.01)
        self.assertEqual(len(self.resource.seen), 4)
        self.assertEqual(self.token_of(source.get_token()), "tok-ok")
        self.clock.advance(1)
        self.error_of(source.get_token())
        self.clock.advance(1.0)
        self.flush()
        self.assertEqual(len(self.resource.seen), 6)

    def test_429_retry_after_sets_cooldown(self) -> None:
        """A fetch that gave up on 429s cools down for the Retry-After asked for, not just failure_cooldown."""
        throttled = json_answer(429, {}, {b"retry-after": b"7"})
        source = self.make([throttled, token_answer("tok-ok")], max_attempts=1)
        self.error_of(source.get_token())
        self.clock.advance(6.99)
        self.error_of(source.get_token())
        self.assertEqual(len(self.resource.seen), 1)
        self.clock.advance(0.01)
        self.assertEqual(self.token_of(source.get_token()), "tok-ok")

    def test_zero_cooldown_asks_every_time(self) -> None:
        """failure_cooldown=0 turns the cool-down off."""
        source = self.make([json_answer(503, {})] * 2, max_attempts=1, failure_cooldown=0.0)
        self.error_of(source.get_token())
        self.error_of(source.get_token())
        self.assertEqual((len(self.resource.seen), source.stats.fast_failures), (2, 0))

    def test_unexpected_exception_becomes_token_error(self) -> None:
        """A fetch that breaks with something other than TokenError still fails its callers with TokenError."""
        source = self.make([token_answer("tok-1")])
        source._parse_token = lambda url, body: 1 / 0  # type: ignore[assignment,method-assign,return-value]
        error = self.error_of(source.get_token())
        self.assertIn("ZeroDivisionError", str(error))


class ReadinessTests(TokenSourceTestsMixin, SynchronousTestCase):
    """
    ready() answers at once from the last outcome, never waiting for a fetch.
    """

    def test_not_ready_before_first_token_starts_fetch(self) -> None:
        """Before any token, ready() is False at once and starts one fetch nobody waits for."""
        source = self.make([HANG, token_answer("tok-1")], timeout=60.0)
        self.assertIsNone(source.last_outcome)
        self.assertFalse(source.ready())
        self.flush()
        self.assertFalse(source.ready())
        self.assertEqual(len(self.resource.seen), 1)
        source.stop()

    def test_ready_after_token(self) -> None:
        """A fetch that ended with a token makes ready() True, even after the token expired."""
        source = self.make([token_answer("tok-1", 10), HANG], timeout=60.0)
        # The stub answers at once: the fetch ready() starts has ended.
        self.assertTrue(source.ready())
        self.assertTrue(source.last_outcome)
        self.clock.advance(11)
        self.assertTrue(source.ready())
        self.flush()
        self.assertEqual(len(self.resource.seen), 2)
        source.stop()

    def test_not_ready_after_failure_without_waiting(self) -> None:
        """A failed fetch makes ready() False at once; within the cool-down no request is made."""
        source = self.make([json_answer(503, {})] * 2 + [token_answer("tok-ok")], max_attempts=1)
        self.error_of(source.get_token())
        self.assertFalse(source.ready())
        self.assertIs(source.last_outcome, False)
        self.assertEqual(len(self.resource.seen), 1)
        self.clock.advance(1.0)
        # The cool-down is over: ready() asks again (the stub answers 503 at once).
        self.assertFalse(source.ready())
        self.assertEqual(len(self.resource.seen), 2)
        self.clock.advance(1.99)
        self.assertFalse(source.ready())
        self.assertEqual(len(self.resource.seen), 2)
        self.clock.advance(0.01)
        self.assertTrue(source.ready())
        self.assertEqual(len(self.resource.seen), 3)

    def test_ready_never_waits_on_hanging_fetch(self) -> None:
        """With a fetch hanging for 32 s, ready() answers at once every time."""
        source = self.make([token_answer("tok-1", 10), HANG], timeout=32.0)
        self.token_of(source.get_token())
        self.clock.advance(11)
        waiting = source.get_token()
        self.flush()
        for _ in range(10):
            self.assertTrue(source.ready())
            self.clock.advance(1)
        self.assertNoResult(waiting)
        source.stop()
        self.failureResultOf(waiting, CancelledError)


class InvalidateTests(TokenSourceTestsMixin, SynchronousTestCase):
    """
    A token refused elsewhere is dropped once, and not again and again.
    """

    def test_many_reports_of_one_token_drop_it_once(self) -> None:
        """50 calls reporting the same refused token cost one new token request."""
        source = self.make([token_answer("tok-1"), token_answer("tok-2")])
        self.token_of(source.get_token())
        for _ in range(50):
            source.invalidate("tok-1")
        self.assertEqual(self.token_of(source.get_token()), "tok-2")
        self.assertEqual(source.stats.invalidations, 1)
        self.assertEqual(len(self.resource.seen), 2)

    def test_drops_rate_limited(self) -> None:
        """A second drop within invalidate_interval keeps the token; after it, the token is dropped."""
        source = self.make(
            [token_answer("tok-1"), token_answer("tok-2"), token_answer("tok-3")],
            invalidate_interval=5.0,
        )
        self.token_of(source.get_token())
        source.invalidate("tok-1")
        self.assertEqual(self.token_of(source.get_token()), "tok-2")
        self.clock.advance(4.9)
        source.invalidate("tok-2")
        self.assertEqual(self.token_of(source.get_token()), "tok-2")
        self.assertEqual(source.stats.invalidations_ignored, 1)
        self.clock.advance(0.1)
        source.invalidate("tok-2")
        self.assertEqual(self.token_of(source.get_token()), "tok-3")
        self.assertEqual(len(self.resource.seen), 3)


class LifetimeBoundTests(TokenSourceTestsMixin, SynchronousTestCase):
    """
    An absurd expires_in is cut to max_lifetime, never an OverflowError.
    """

    def test_401_digit_expires_in(self) -> None:
        """A 401-digit expires_in gives a token valid for max_lifetime."""
        body = b'{"access_token": "tok-1", "token_type": "bearer", "expires_in": 1' + b"0" * 400 + b"}"
        source = self.make(
            [(200, {b"content-type": b"application/json"}, body), token_answer("tok-2")],
            max_lifetime=1000.0,
        )
        self.assertEqual(self.token_of(source.get_token()), "tok-1")
        self.clock.advance(999)
        self.assertTrue(source.has_valid_token)
        self.clock.advance(1)
        self.assertFalse(source.has_valid_token)
        self.assertEqual(self.token_of(source.get_token()), "tok-2")

    def test_infinite_float_expires_in(self) -> None:
        """expires_in Infinity or 1e308 is cut to max_lifetime too."""
        for raw in (b"Infinity", b"1e308"):
            body = b'{"access_token": "tok-1", "expires_in": ' + raw + b"}"
            source = self.make([(200, {}, body)], max_lifetime=60.0)
            self.token_of(source.get_token())
            self.clock.advance(60)
            self.assertFalse(source.has_valid_token)


class RetryAfterJitterTests(TokenSourceTestsMixin, SynchronousTestCase):
    """
    Retry-After waits get a little jitter, never less than asked.
    """

    def test_jitter_bounds(self) -> None:
        """The wait is Retry-After plus at most min(1, 10%)."""
        source = self.make(
            [json_answer(429, {}, {b"retry-after": b"30"}), token_answer("tok-ok")],
            retry_after_cap=20.0,
            random=lambda: 0.999,
        )
        d = source.get_token()
        self.flush()
        self.clock.advance(20.99)
        self.flush()
        self.assertNoResult(d)
        self.clock.advance(0.01)
        self.assertEqual(self.token_of(d), "tok-ok")

    def test_zero_retry_after(self) -> None:
        """Retry-After: 0 retries at once."""
        source = self.make([json_answer(429, {}, {b"retry-after": b"0"}), token_answer("tok-ok")])
        d = source.get_token()
        self.flush()
        self.clock.advance(0)
        self.assertEqual(self.token_of(d), "tok-ok")


class RetryPolicyArgumentTests(SynchronousTestCase):
    """
    retry= takes a RetryPolicy in place of the separate retry keywords.
    """

    def test_policy_bounds_attempts(self) -> None:
        """The policy's max_attempts bounds the requests of a fetch."""
        clock = Clock()
        clock.advance(T0)
        resource = ScriptedResource([json_answer(503, {}), token_answer("tok-1")])
        stub = StubTreq(resource)
        source = TokenSource(
            clock, stub, TOKEN_URL, CLIENT_ID, SECRET,
            retry=RetryPolicy(1, 0.1, 1.0, 1.0, lambda: 0.5),
        )
        d = source.get_token()
        stub.flush()
        error = self.failureResultOf(d, TokenError).value
        self.assertIn("gave up after 1 attempts", error.reason)
        self.assertEqual(len(resource.seen), 1)

    def test_policy_and_keyword_refused(self) -> None:
        """retry= and a separate retry keyword together are refused."""
        with self.assertRaises(TypeError):
            TokenSource(
                Clock(), StubTreq(ScriptedResource([])), TOKEN_URL, CLIENT_ID, SECRET,
                retry=RetryPolicy(1, 0.1, 1.0, 1.0, lambda: 0.5),
                max_attempts=2,
            )
