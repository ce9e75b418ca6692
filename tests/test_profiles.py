"""
Tests for :mod:`ivrproto.clients.profiles`.
"""

from __future__ import annotations

import json
from email.utils import formatdate
from typing import Any, Optional
from urllib.parse import unquote

from hypothesis import given, settings, strategies as st
from treq.testing import StubTreq
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.task import Clock
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource
from twisted.web.server import Request

from ivrproto.clients.limits import RequestWindow, RetryBudget
from ivrproto.errors import ProfileError
from ivrproto.clients._retry import RetryPolicy
from ivrproto.clients.oauth import TokenSource
from ivrproto.clients.profiles import (
    BUDGET_SPENT,
    PAST_DEADLINE,
    Profile,
    RateLimited,
    contacts_endpoint,
    encode_uri_component,
    freeze_json,
    profile_endpoint,
    profile_url,
)
from ivrproto.clients.sources import ExternalContactsClient, ProfileClient

from .scripted import HANG, Answer, ScriptedResource, json_answer

API_URL = "http://api.example.test"
ENDPOINT = API_URL + "/api/v2/profiles/external/{externalId}"
SECRET = "client-secret-xyz"
CALLER = "+1 555/0100?x#y%z é"
CALLER_PATH = b"/api/v2/profiles/external/%2B1%20555%2F0100%3Fx%23y%25z%20%C3%A9"
T0 = 1_700_000_000.0


class Platform(Resource):
    """
    The token endpoint and the profile endpoint on one fake server.
    """

    isLeaf = True

    def __init__(self, tokens: ScriptedResource, profiles: ScriptedResource) -> None:
        super().__init__()
        self.tokens = tokens
        self.profiles = profiles

    def render(self, request: Request) -> Any:
        if request.path == b"/oauth/token":
            return self.tokens.render(request)
        return self.profiles.render(request)


def profile_answer(attributes: Any = None, **extra: Any) -> Answer:
    """
    A 200 answer with a profile.
    """
    body = {
        "id": "p-1",
        "externalId": CALLER,
        "attributes": {"membership_level": "premium", "open_tickets": 2}
        if attributes is None
        else attributes,
        "dateModified": "2024-05-01T12:00:00Z",
    }
    body.update(extra)
    return json_answer(200, body)


class ProfileTestsMixin:
    """
    Builds a profile client and a token source on one scripted server.
    """

    client_type: Any = ProfileClient

    def make(
        self,
        profiles: list[Answer],
        tokens: Optional[list[Answer]] = None,
        window: Optional[int] = None,
        **kwargs: Any,
    ) -> Any:
        self.clock = Clock()
        self.clock.advance(T0)
        if window is not None:
            self.window = RequestWindow(self.clock, window)
            kwargs["request_window"] = self.window
        issued = iter(range(1, 1000))

        def next_token() -> Answer:
            return json_answer(200, {"access_token": f"tok-{next(issued)}", "expires_in": 3600})

        self.token_resource = ScriptedResource(tokens or [], default=next_token)
        self.profile_resource = ScriptedResource(profiles)
        self.stub = StubTreq(Platform(self.token_resource, self.profile_resource))
        self.tokens = TokenSource(
            self.clock,
            self.stub,
            API_URL + "/oauth/token",
            "client-id",
            SECRET,
            max_attempts=2,
            random=lambda: 0.5,
        )
        kwargs.setdefault("random", lambda: 0.5)
        self.client = self.client_type(self.clock, self.stub, API_URL, self.tokens, **kwargs)
        self.addCleanup(self.assert_no_timers)  # type: ignore[attr-defined]
        return self.client

    def assert_no_timers(self) -> None:
        self.stub.flush()
        assert self.clock.getDelayedCalls() == [], self.clock.getDelayedCalls()

    def flush(self) -> None:
        self.stub.flush()

    def result_of(self, d: "Deferred[Optional[Profile]]") -> Optional[Profile]:
        self.flush()
        return self.successResultOf(d)  # type: ignore[attr-defined,no-any-return]

    def error_of(self, d: "Deferred[Optional[Profile]]") -> ProfileError:
        self.flush()
        return self.failureResultOf(d, ProfileError).value  # type: ignore[attr-defined,no-any-return]

    def bearer(self, index: int) -> list[bytes]:
        return self.profile_resource.seen[index].headers[b"Authorization"]


class EncodingTests(SynchronousTestCase):
    """
    External ids are encoded like JavaScript's encodeURIComponent.
    """

    def test_known_outputs(self) -> None:
        """Outputs match encodeURIComponent for reserved, space and non-ASCII."""
        cases = {
            "/": "%2F",
            "?": "%3F",
            "#": "%23",
            "%": "%25",
            " ": "%20",
            "é": "%C3%A9",
            "+": "%2B",
            "&=:@,;$": "%26%3D%3A%40%2C%3B%24",
            "-_.!~*'()": "-_.!~*'()",
            "AZaz09": "AZaz09",
            "😀": "%F0%9F%98%80",
            "\x00\n": "%00%0A",
            "a/b?c#d%e f é": "a%2Fb%3Fc%23d%25e%20f%20%C3%A9",
        }
        for raw, encoded in cases.items():
            self.assertEqual(encode_uri_component(raw), encoded, raw)

    @settings(max_examples=300, deadline=None)
    @given(st.text(st.characters(exclude_categories=("Cs",))))
    def test_round_trip(self, s: str) -> None:
        """Decoding gives the id back, and no reserved character is left."""
        encoded = encode_uri_component(s)
        self.assertEqual(unquote(encoded, errors="strict"), s)
        self.assertRegex(encoded, r"\A(?:[A-Za-z0-9\-_.!~*'()]|%[0-9A-F]{2})*\Z")
        self.assertFalse(set(encoded) & set("/?#[]@:$&+,;= \"<>\\^`{|}"))

    def test_profile_url(self) -> None:
        """The id is one path segment after the API URL, trailing slashes dropped."""
        self.assertEqual(
            profile_url("https://api.example.test//", "a/b"),
            "https://api.example.test/api/v2/profiles/external/a%2Fb",
        )
        self.assertEqual(profile_endpoint("https://api.example.test/"), "https://api.example.test/api/v2/profiles/external/{externalId}")


class LookupTests(ProfileTestsMixin, SynchronousTestCase):
    """
    Answers of the profile endpoint.
    """

    def test_found(self) -> None:
        """A 200 gives a Profile; the request is a GET with bearer and Accept."""
        client = self.make([profile_answer()])
        profile = self.result_of(client.lookup(CALLER))
        self.assertEqual(
            profile,
            Profile(
                id="p-1",
                external_id=CALLER,
                attributes={"membership_level": "premium", "open_tickets": 2},
                date_modified="2024-05-01T12:00:00Z",
            ),
        )
        [seen] = self.profile_resource.seen
        self.assertEqual(seen.method, b"GET")
        self.assertEqual(seen.path, CALLER_PATH)
        self.assertEqual(seen.headers[b"Authorization"], [b"Bearer tok-1"])
        self.assertEqual(seen.headers[b"Accept"], [b"application/json"])
        self.assertEqual((client.stats.lookups, client.stats.found), (1, 1))

    def test_not_found(self) -> None:
        """A 404 gives None, not an error."""
        client = self.make([json_answer(404, {"message": "not found"})])
        self.assertIsNone(self.result_of(client.lookup(CALLER)))
        self.assertEqual((client.stats.not_found, client.stats.errors), (1, 0))

    def test_odd_attributes_kept_read_only(self) -> None:
        """Attributes of any JSON type are kept, and cannot be changed."""
        attributes = {
            "membership_level": None,
            "open_tickets": "3",
            "score": 1.5,
            "vip": True,
            "tags": ["a", {"b": [1, 2]}],
            "nested": {"x": {"y": None}},
            "big": 10**30,
            "": "empty key",
        }
        client = self.make([profile_answer(attributes)])
        profile = self.result_of(client.lookup(CALLER))
        assert profile is not None
        self.assertEqual(profile.attributes, freeze_json(attributes))
        self.assertEqual(profile.attributes["tags"], ("a", {"b": (1, 2)}))
        self.assertEqual(profile.attributes["big"], 10**30)
        with self.assertRaises(TypeError):
            profile.attributes["vip"] = False  # type: ignore[index]
        with self.assertRaises(TypeError):
            profile.attributes["nested"]["x"] = 1  # type: ignore[index]

    def test_optional_fields(self) -> None:
        """A profile without externalId or dateModified is accepted."""
        body = {"id": "p-2", "attributes": {}}
        client = self.make([json_answer(200, body)])
        profile = self.result_of(client.lookup(CALLER))
        assert profile is not None
        self.assertEqual((profile.external_id, profile.date_modified), (CALLER, None))

    def test_malformed_200(self) -> None:
        """A 200 that is not a profile object is a ProfileError."""
        bodies = [
            b"not json",
            b"[1, 2]",
            b'"a string"',
            json.dumps({"id": "p", "attributes": []}).encode(),
            json.dumps({"id": "p", "attributes": "premium"}).encode(),
            json.dumps({"id": "p"}).encode(),
            json.dumps({"attributes": {}}).encode(),
            json.dumps({"id": "p", "attributes": {}, "dateModified": 5}).encode(),
        ]
        for body in bodies:
            client = self.make([(200, {}, body)])
            error = self.error_of(client.lookup(CALLER))
            self.assertEqual((error.status, error.url), (200, ENDPOINT), body)
            self.assertIn("malformed", error.reason)
            self.assertEqual(len(self.profile_resource.seen), 1)

    def test_oversize_body(self) -> None:
        """A body over max_body is refused."""
        client = self.make([profile_answer({"blob": "x" * 5000})], max_body=1024)
        error = self.error_of(client.lookup(CALLER))
        self.assertEqual(error.status, 200)
        self.assertIn("larger", error.reason)

    def test_unexpected_status(self) -> None:
        """A status the contract does not name is an error, not retried."""
        client = self.make([json_answer(418, {})])
        error = self.error_of(client.lookup(CALLER))
        self.assertEqual(error.status, 418)
        self.assertEqual(len(self.profile_resource.seen), 1)


class AuthorizationTests(ProfileTestsMixin, SynchronousTestCase):
    """
    401 and 403 from the profile endpoint, and token failures.
    """

    def test_401_retried_once_with_fresh_token(self) -> None:
        """After a 401 the token is dropped and the request sent again with a new one."""
        client = self.make([json_answer(401, {}), profile_answer()])
        profile = self.result_of(client.lookup(CALLER))
        self.assertIsNotNone(profile)
        self.assertEqual(self.bearer(0), [b"Bearer tok-1"])
        self.assertEqual(self.bearer(1), [b"Bearer tok-2"])
        self.assertEqual(len(self.token_resource.seen), 2)
        self.assertEqual(client.stats.retries, 1)

    def test_401_twice(self) -> None:
        """A second 401 is a ProfileError; no third request; the new token is kept (one drop per interval)."""
        client = self.make([json_answer(401, {}), json_answer(401, {})])
        error = self.error_of(client.lookup(CALLER))
        self.assertEqual((error.status, error.url), (401, ENDPOINT))
        self.assertEqual(len(self.profile_resource.seen), 2)
        self.assertTrue(self.tokens.has_valid_token)
        self.assertEqual(self.tokens.stats.invalidations, 1)

    def test_api_refusing_every_token(self) -> None:
        """An API answering 401 to everything costs one token request per invalidate_interval, not one per call."""
        client = self.make([json_answer(401, {})] * 30)
        for _ in range(10):
            error = self.error_of(client.lookup(CALLER))
            self.assertEqual(error.status, 401)
        # tok-1 refused and dropped, tok-2 refused and kept: the other
        # lookups do not even ask with a token known to be refused.
        self.assertEqual(len(self.token_resource.seen), 2)
        self.assertEqual(len(self.profile_resource.seen), 11)
        self.clock.advance(5.0)
        self.error_of(client.lookup(CALLER))
        self.assertEqual(len(self.token_resource.seen), 3)

    def test_403_not_retried(self) -> None:
        """A 403 fails at once and says the token lacks profile:read."""
        client = self.make([json_answer(403, {})])
        error = self.error_of(client.lookup(CALLER))
        self.assertEqual(error.status, 403)
        self.assertIn("profile:read", error.reason)
        self.assertEqual(len(self.profile_resource.seen), 1)
        self.assertEqual(client.stats.errors, 1)

    def test_huge_expires_in_does_not_fail_lookup(self) -> None:
        """A token with a 401-digit expires_in serves the lookup: no OverflowError reaches the lookup layer."""
        body = b'{"access_token": "tok-big", "token_type": "bearer", "expires_in": 9' + b"9" * 400 + b"}"
        client = self.make([profile_answer()], tokens=[(200, {}, body)])
        self.assertIsNotNone(self.result_of(client.lookup(CALLER)))
        self.assertEqual(self.bearer(0), [b"Bearer tok-big"])

    def test_token_error(self) -> None:
        """A token failure is a ProfileError with no status."""
        client = self.make([], tokens=[json_answer(401, {"error": "invalid_client"})])
        error = self.error_of(client.lookup(CALLER))
        self.assertIsNone(error.status)
        self.assertTrue(error.reason.startswith("no access token: "), error.reason)
        self.assertEqual(self.profile_resource.seen, [])


class RetryTests(ProfileTestsMixin, SynchronousTestCase):
    """
    429 and transient failures are retried within max_attempts.
    """

    def test_429_retry_after_seconds(self) -> None:
        """A 429 waits Retry-After seconds (plus jitter) before the next request."""
        client = self.make([json_answer(429, {}, {b"retry-after": b"1"}), profile_answer()])
        d = client.lookup(CALLER)
        self.flush()
        # 1 + 0.5 * min(1, 0.1)
        self.clock.advance(1.04)
        self.flush()
        self.assertNoResult(d)
        self.clock.advance(0.01)
        self.assertIsNotNone(self.result_of(d))
        self.assertEqual(len(self.profile_resource.seen), 2)

    def test_429_retry_after_http_date(self) -> None:
        """An HTTP-date Retry-After within retry_after_cap is waited for."""
        date = formatdate(T0 + 2, usegmt=True).encode("ascii")
        client = self.make(
            [json_answer(429, {}, {b"retry-after": date}), profile_answer()],
            retry_after_cap=2.0,
        )
        d = client.lookup(CALLER)
        self.flush()
        # 2 + 0.5 * min(1, 0.2)
        self.clock.advance(2.09)
        self.flush()
        self.assertNoResult(d)
        self.clock.advance(0.01)
        self.assertIsNotNone(self.result_of(d))

    def test_429_retry_after_beyond_cap_not_waited(self) -> None:
        """A Retry-After past retry_after_cap fails at once with RateLimited (no early retry), naming when."""
        date = formatdate(T0 + 60, usegmt=True).encode("ascii")
        client = self.make(
            [json_answer(429, {}, {b"retry-after": date}), profile_answer()],
            retry_after_cap=2.0,
        )
        error = self.error_of(client.lookup(CALLER))
        self.assertIsInstance(error, RateLimited)
        assert isinstance(error, RateLimited)
        self.assertEqual(error.retry_at, T0 + 60)
        self.assertEqual(len(self.profile_resource.seen), 1)

    def test_429_pauses_shared_window(self) -> None:
        """A 429 pauses the shared request window until Retry-After; retries are counted in it."""
        client = self.make(
            [json_answer(429, {}, {b"retry-after": b"1"}), json_answer(503, {}), profile_answer()],
            window=3,
            max_attempts=3,
        )
        window = self.window
        self.assertTrue(window.try_take())  # the lookup's first request
        d = client.lookup(CALLER)
        self.flush()
        self.assertTrue(window.paused())
        self.clock.advance(1.05)
        self.flush()
        self.assertFalse(window.paused())
        self.clock.advance(0.1)
        self.flush()
        # The window held 3: the first request and two retries.
        self.assertEqual(window.recent(), 3)
        self.assertIsNotNone(self.result_of(d))

    def test_each_request_counted_once(self) -> None:
        """A 401 retry and a 503 retry are each counted once in the window."""
        client = self.make(
            [json_answer(401, {}), json_answer(503, {}), profile_answer()], window=10, max_attempts=3
        )
        window = self.window
        self.assertTrue(window.try_take())
        d = client.lookup(CALLER)
        self.flush()
        self.clock.advance(1.0)
        self.assertIsNotNone(self.result_of(d))
        self.assertEqual(len(self.profile_resource.seen), 3)
        self.assertEqual(window.recent(), 3)

    def test_full_window_stops_retries(self) -> None:
        """A retry the window has no room for is not made: RateLimited, no request."""
        client = self.make([json_answer(503, {}), profile_answer()], window=1)
        window = self.window
        self.assertTrue(window.try_take())
        d = client.lookup(CALLER)
        self.flush()
        self.clock.advance(1.0)
        error = self.error_of(d)
        self.assertIsInstance(error, RateLimited)
        self.assertEqual(len(self.profile_resource.seen), 1)

    def test_429_bounded(self) -> None:
        """Endless 429s end after max_attempts requests."""
        client = self.make([json_answer(429, {}, {b"retry-after": b"1"})] * 10, max_attempts=3)
        d = client.lookup(CALLER)
        self.flush()
        for _ in range(2):
            self.clock.advance(1.05)
            self.flush()
        error = self.error_of(d)
        self.assertEqual(error.status, 429)
        self.assertIn("3 attempts", error.reason)
        self.assertEqual(len(self.profile_resource.seen), 3)
        self.assertEqual(client.stats.retries, 2)

    def test_5xx_backoff_bounded(self) -> None:
        """5xx is retried with full jitter, max_attempts requests in all."""
        client = self.make([json_answer(502, {})] * 10, max_attempts=3)
        d = client.lookup(CALLER)
        self.flush()
        # Delays: 0.5 * min(1.0, 0.1 * 2**n) for n = 0, 1.
        self.clock.advance(0.05)
        self.flush()
        self.assertEqual(len(self.profile_resource.seen), 2)
        self.clock.advance(0.1)
        error = self.error_of(d)
        self.assertEqual(error.status, 502)
        self.assertEqual(len(self.profile_resource.seen), 3)

    def test_5xx_then_success(self) -> None:
        """A transient failure followed by a profile gives the profile."""
        client = self.make([json_answer(500, {}), profile_answer()])
        d = client.lookup(CALLER)
        self.flush()
        self.clock.advance(0.05)
        self.assertIsNotNone(self.result_of(d))

    def test_timeout(self) -> None:
        """No answer within the timeout is retried, then a ProfileError."""
        client = self.make([HANG, HANG], max_attempts=2, timeout=2.0)
        d = client.lookup(CALLER)
        self.flush()
        self.clock.advance(2.0)
        self.flush()
        self.clock.advance(0.05)
        self.flush()
        self.assertEqual(len(self.profile_resource.seen), 2)
        self.clock.advance(2.0)
        error = self.error_of(d)
        self.assertIsNone(error.status)
        self.assertIn("timed out", error.reason)


class CancelTests(ProfileTestsMixin, SynchronousTestCase):
    """
    Cancelling a lookup stops it cleanly.
    """

    def test_cancel_during_retry_wait(self) -> None:
        """Cancelling during the backoff wait leaves no timer and no request."""
        client = self.make([json_answer(503, {}), profile_answer()])
        d = client.lookup(CALLER)
        self.flush()
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.clock.advance(10)
        self.flush()
        self.assertEqual(len(self.profile_resource.seen), 1)

    def test_cancel_during_request(self) -> None:
        """Cancelling while the request is in flight stops it and its timeout."""
        client = self.make([HANG])
        d = client.lookup(CALLER)
        self.flush()
        self.assertEqual(len(self.profile_resource.hanging), 1)
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.flush()
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(client.stats.errors, 0)

    def test_stop_cancels_every_lookup(self) -> None:
        """stop() cancels the lookups in progress, in request and in backoff."""
        client = self.make([json_answer(503, {}), HANG])
        first = client.lookup(CALLER)
        self.flush()
        second = client.lookup("another caller")
        self.flush()
        client.stop()
        self.failureResultOf(first, CancelledError)
        self.failureResultOf(second, CancelledError)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_cancel_while_getting_token(self) -> None:
        """Cancelling while the token is being fetched abandons the fetch."""
        client = self.make([], tokens=[HANG])
        d = client.lookup(CALLER)
        self.flush()
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(self.profile_resource.seen, [])


class SecrecyTests(ProfileTestsMixin, SynchronousTestCase):
    """
    No external id, token or secret in logs or errors.
    """

    def test_nothing_secret_shown(self) -> None:
        """Across retries, refusals and failures, nothing secret is logged or raised."""
        events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        client = self.make(
            [
                json_answer(401, {}),
                json_answer(503, {"echo": CALLER}),
                json_answer(429, {"echo": CALLER}, {b"retry-after": b"1"}),
                profile_answer(),
                json_answer(403, {"externalId": CALLER}),
                (200, {}, b"[" + CALLER.encode() + b"]"),
            ]
        )
        first = client.lookup(CALLER)
        self.flush()
        self.clock.advance(0.05)
        self.flush()
        self.clock.advance(1.05)
        profile = self.result_of(first)
        assert profile is not None
        errors = [self.error_of(client.lookup(CALLER)) for _ in range(2)]
        self.assertEqual([e.status for e in errors], [403, 200])
        shown = "\n".join(f"{formatEvent(e)} {e!r}" for e in events)
        shown += "".join(str(e) + repr(e) + e.url + e.reason for e in errors)
        shown += repr(profile) + repr(client)
        self.assertTrue(events)
        for secret in (CALLER, encode_uri_component(CALLER), "tok-1", "tok-2", SECRET):
            self.assertNotIn(secret, shown)
        for error in errors:
            self.assertEqual(error.url, ENDPOINT)


class DeadlineTests(ProfileTestsMixin, SynchronousTestCase):
    """
    fetch(external_id, deadline) never retries past the deadline.
    """

    def test_lookup_is_fetch_without_deadline(self) -> None:
        """lookup() is fetch() with no deadline."""
        client = self.make([profile_answer(), profile_answer()])
        self.assertEqual(self.result_of(client.lookup(CALLER)), self.result_of(client.fetch(CALLER)))

    def test_backoff_past_deadline_not_made(self) -> None:
        """A 5xx whose backoff would end after the deadline fails at once."""
        client = self.make([json_answer(503, {}), profile_answer()])
        d = client.fetch(CALLER, T0 + 0.04)
        error = self.error_of(d)
        self.assertEqual((error.status, error.reason, error.url), (503, PAST_DEADLINE, ENDPOINT))
        self.assertEqual(len(self.profile_resource.seen), 1)
        self.assertEqual((client.stats.past_deadline, client.stats.retries), (1, 0))

    def test_backoff_within_deadline_made(self) -> None:
        """A retry that ends before the deadline is made."""
        client = self.make([json_answer(503, {}), profile_answer()])
        d = client.fetch(CALLER, T0 + 0.06)
        self.flush()
        self.clock.advance(0.05)
        self.assertIsNotNone(self.result_of(d))

    def test_retry_after_past_deadline(self) -> None:
        """A 429 whose Retry-After would end after the deadline fails at once."""
        client = self.make([json_answer(429, {}, {b"retry-after": b"1"}), profile_answer()])
        error = self.error_of(client.fetch(CALLER, T0 + 1.0))
        self.assertEqual((error.status, error.reason), (429, PAST_DEADLINE))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_timeout_then_past_deadline(self) -> None:
        """The first request keeps its full timeout; the retry after it would pass the deadline."""
        client = self.make([HANG, profile_answer()], timeout=2.0)
        d = client.fetch(CALLER, T0 + 0.5)
        self.flush()
        self.clock.advance(0.5)
        self.flush()
        self.assertNoResult(d)
        self.clock.advance(1.5)
        error = self.error_of(d)
        self.assertEqual((error.status, error.reason), (None, PAST_DEADLINE))
        self.assertEqual(len(self.profile_resource.seen), 1)

    def test_first_request_made_after_deadline(self) -> None:
        """A deadline already past still gets the first request (to fill a cache)."""
        client = self.make([profile_answer()])
        self.assertIsNotNone(self.result_of(client.fetch(CALLER, T0 - 1)))

    def test_401_retry_made_after_deadline(self) -> None:
        """The immediate retry after a 401 is not bound by the deadline."""
        client = self.make([json_answer(401, {}), profile_answer()])
        self.assertIsNotNone(self.result_of(client.fetch(CALLER, T0)))


class RetryBudgetUseTests(ProfileTestsMixin, SynchronousTestCase):
    """
    Retries are drawn from a RetryBudget, shared between clients.
    """

    def test_budget_spent(self) -> None:
        """Once the shared budget is spent, a failure is not retried, in any client."""
        self.make([json_answer(503, {})] * 2 + [profile_answer()] + [json_answer(503, {})])
        budget = RetryBudget(self.clock, ratio=0.0, min_per_second=0.1, window=10.0)
        first = ProfileClient(self.clock, self.stub, API_URL, self.tokens, retry_budget=budget, random=lambda: 0.5)
        second = ExternalContactsClient(self.clock, self.stub, API_URL, self.tokens, retry_budget=budget, random=lambda: 0.5)
        self.assertIs(second.retry_budget, budget)
        d = first.fetch(CALLER)
        self.flush()
        self.clock.advance(0.05)
        error = self.error_of(d)
        self.assertEqual((error.status, error.reason), (503, BUDGET_SPENT))
        self.assertEqual(len(self.profile_resource.seen), 2)
        self.assertIsNotNone(self.result_of(first.fetch(CALLER)))
        error = self.error_of(second.fetch(CALLER))
        self.assertEqual((error.reason, error.url), (BUDGET_SPENT, contacts_endpoint(API_URL)))
        self.assertEqual(len(self.profile_resource.seen), 4)
        self.assertEqual((first.stats.budget_spent, second.stats.budget_spent), (1, 1))
        self.assertEqual(budget.refused, 2)

    def test_401_retry_not_drawn_from_budget(self) -> None:
        """The one retry after a 401 does not need the budget."""
        budget = RetryBudget(Clock(), ratio=0.0, min_per_second=0.0)
        client = self.make([json_answer(401, {}), profile_answer()], retry_budget=budget)
        self.assertIsNotNone(self.result_of(client.fetch(CALLER)))
        self.assertEqual(budget.refused, 0)

    def test_default_budget_is_private(self) -> None:
        """Without a budget, each client has its own."""
        client = self.make([])
        other = ProfileClient(self.clock, self.stub, API_URL, self.tokens)
        self.assertIsInstance(client.retry_budget, RetryBudget)
        self.assertIsNot(client.retry_budget, other.retry_budget)

    def test_outage_is_not_a_retry_storm(self) -> None:
        """Under a full outage, retries stay near ratio * lookups + the floor."""
        budget = RetryBudget(Clock(), ratio=0.2, min_per_second=0.0)
        client = self.make([], max_attempts=5, retry_budget=budget, random=lambda: 0.0)
        self.profile_resource.default = lambda: json_answer(503, {})
        lookups = [client.fetch(CALLER) for _ in range(200)]
        for _ in range(5):
            self.flush()
            self.clock.advance(0)
        for d in lookups:
            self.error_of(d)
        # Without a budget: 200 * 5 requests.
        self.assertLessEqual(len(self.profile_resource.seen), 200 + 40)
        self.assertGreaterEqual(len(self.profile_resource.seen), 200 + 39)


class ContactsTestsMixin(ProfileTestsMixin):
    client_type = ExternalContactsClient


CONTACTS_PATH = b"/api/v2/externalcontacts/identifierlookup/contacts"
CONTACTS_ENDPOINT = API_URL + CONTACTS_PATH.decode()


def contact_answer(custom_fields: Any = "default", **extra: Any) -> Answer:
    """
    A 200 answer with an external contact.
    """
    body: dict[str, Any] = {
        "id": "c-1",
        "firstName": "Ada",
        "lastName": "Lovelace",
        "modifiedDate": "2024-05-01T12:00:00.000Z",
    }
    if custom_fields != "default":
        body["customFields"] = custom_fields
    else:
        body["customFields"] = {"membership_level": "premium", "open_tickets": 2}
    body.update(extra)
    return json_answer(200, body)


class ExternalContactsTests(ContactsTestsMixin, SynchronousTestCase):
    """
    The External Contacts identifier lookup.
    """

    def test_request(self) -> None:
        """A POST with bearer, JSON content type, Accept and {type, value}."""
        client = self.make([contact_answer()], lookup_type="ExternalId")
        self.result_of(client.fetch(CALLER, T0 + 5))
        [seen] = self.profile_resource.seen
        self.assertEqual((seen.method, seen.path), (b"POST", CONTACTS_PATH))
        self.assertEqual(seen.headers[b"Authorization"], [b"Bearer tok-1"])
        self.assertEqual(seen.headers[b"Content-Type"], [b"application/json"])
        self.assertEqual(seen.headers[b"Accept"], [b"application/json"])
        self.assertEqual(json.loads(seen.body), {"type": "ExternalId", "value": CALLER})
        self.assertEqual(client.endpoint, CONTACTS_ENDPOINT)
        self.assertEqual(client.lookup_type, "ExternalId")

    def test_default_type_is_phone(self) -> None:
        """Without lookup_type the id is looked up as a phone number."""
        client = self.make([contact_answer()])
        self.result_of(client.lookup("+15550100"))
        self.assertEqual(json.loads(self.profile_resource.seen[0].body), {"type": "Phone", "value": "+15550100"})

    def test_bad_lookup_type(self) -> None:
        """A lookup type Genesys does not know is refused when the client is made."""
        self.assertRaises(ValueError, ExternalContactsClient, Clock(), None, API_URL, None, lookup_type="Fax")

    def test_found(self) -> None:
        """customFields become the attributes, modifiedDate the date."""
        client = self.make([contact_answer()], lookup_type="Email")
        profile = self.result_of(client.fetch("ada@example.test"))
        self.assertEqual(
            profile,
            Profile(
                id="c-1",
                external_id="ada@example.test",
                attributes={"membership_level": "premium", "open_tickets": 2},
                date_modified="2024-05-01T12:00:00.000Z",
            ),
        )
        assert profile is not None
        with self.assertRaises(TypeError):
            profile.attributes["open_tickets"] = 0  # type: ignore[index]
        self.assertEqual((client.stats.lookups, client.stats.found), (1, 1))

    def test_no_custom_fields(self) -> None:
        """A contact without customFields, or with null, has no attributes."""
        client = self.make([contact_answer(None), json_answer(200, {"id": "c-2"})])
        for _ in range(2):
            profile = self.result_of(client.fetch(CALLER))
            assert profile is not None
            self.assertEqual(dict(profile.attributes), {})
        self.assertEqual(profile.date_modified, None)

    def test_not_found(self) -> None:
        """A 404 is no contact, not an error."""
        client = self.make([json_answer(404, {"status": 404})])
        self.assertIsNone(self.result_of(client.fetch(CALLER)))
        self.assertEqual(client.stats.not_found, 1)

    def test_malformed(self) -> None:
        """A body that is not a contact object is a ProfileError naming the endpoint."""
        bodies = [
            b"not json",
            b"[]",
            b"null",
            json.dumps({"customFields": {}}).encode(),
            json.dumps({"id": 5}).encode(),
            json.dumps({"id": "c", "customFields": []}).encode(),
            json.dumps({"id": "c", "customFields": "premium"}).encode(),
            json.dumps({"id": "c", "modifiedDate": 17}).encode(),
        ]
        for body in bodies:
            client = self.make([(200, {}, body)])
            error = self.error_of(client.fetch(CALLER))
            self.assertEqual((error.status, error.url), (200, CONTACTS_ENDPOINT), body)
            self.assertIn("malformed external contact", error.reason)

    def test_401_retried_once(self) -> None:
        """A 401 gets a new token and one more request; a second 401 is an error."""
        client = self.make([json_answer(401, {}), contact_answer(), json_answer(401, {}), json_answer(401, {})])
        self.assertIsNotNone(self.result_of(client.fetch(CALLER)))
        self.assertEqual(self.bearer(1), [b"Bearer tok-2"])
        self.clock.advance(5.0)  # past the token source's invalidate_interval
        error = self.error_of(client.fetch(CALLER))
        self.assertEqual(error.status, 401)
        self.assertEqual(len(self.profile_resource.seen), 4)

    def test_403_not_retried(self) -> None:
        """A 403 fails at once."""
        client = self.make([json_answer(403, {})])
        error = self.error_of(client.fetch(CALLER))
        self.assertEqual(error.status, 403)
        self.assertIn("external contacts", error.reason)
        self.assertEqual(len(self.profile_resource.seen), 1)

    def test_429_and_5xx_retried(self) -> None:
        """429 waits Retry-After, 5xx backs off, within max_attempts."""
        client = self.make(
            [json_answer(429, {}, {b"retry-after": b"1"}), json_answer(502, {}), contact_answer()],
            max_attempts=3,
        )
        d = client.fetch(CALLER)
        self.flush()
        self.clock.advance(1.05)
        self.flush()
        self.clock.advance(0.1)
        self.assertIsNotNone(self.result_of(d))
        self.assertEqual((len(self.profile_resource.seen), client.stats.retries), (3, 2))

    def test_5xx_past_deadline(self) -> None:
        """The deadline applies to contacts too."""
        client = self.make([json_answer(500, {})])
        error = self.error_of(client.fetch(CALLER, T0 + 0.01))
        self.assertEqual(error.reason, PAST_DEADLINE)

    def test_cancel_and_stop(self) -> None:
        """stop() cancels lookups in flight and in backoff, leaving no timer."""
        client = self.make([json_answer(503, {}), HANG])
        first = client.fetch(CALLER)
        self.flush()
        second = client.fetch("other")
        self.flush()
        client.stop()
        self.failureResultOf(first, CancelledError)
        self.failureResultOf(second, CancelledError)

    def test_nothing_secret_shown(self) -> None:
        """No external id or token in logs, errors or repr."""
        events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        client = self.make(
            [
                json_answer(401, {}),
                json_answer(503, {"echo": CALLER}),
                contact_answer(),
                json_answer(403, {"value": CALLER}),
                (200, {}, json.dumps({"id": "c", "customFields": [CALLER]}).encode()),
            ]
        )
        first = client.fetch(CALLER)
        self.flush()
        self.clock.advance(0.05)
        profile = self.result_of(first)
        errors = [self.error_of(client.fetch(CALLER)) for _ in range(2)]
        shown = "\n".join(f"{formatEvent(e)} {e!r}" for e in events)
        shown += "".join(str(e) + repr(e) + e.url + e.reason for e in errors)
        shown += repr(profile) + repr(client)
        self.assertTrue(events)
        for secret in (CALLER, json.dumps(CALLER), "tok-1", "tok-2", SECRET):
            self.assertNotIn(secret, shown)


class RetryPolicyArgumentTests(ProfileTestsMixin, SynchronousTestCase):
    """
    retry= takes a RetryPolicy in place of the separate retry keywords.
    """

    def test_policy_bounds_attempts(self) -> None:
        """The policy's max_attempts bounds the requests of a lookup."""
        # random=None: the mixin's default jitter is not given beside retry=.
        client = self.make(
            [json_answer(503, {}), profile_answer()],
            retry=RetryPolicy(1, 0.1, 1.0, 1.0, lambda: 0.5),
            random=None,
        )
        error = self.error_of(client.fetch(CALLER))
        self.assertEqual((error.status, error.reason), (503, "gave up after 1 attempts: server error"))
        self.assertEqual(len(self.profile_resource.seen), 1)

    def test_policy_and_keyword_refused(self) -> None:
        """retry= and a separate retry keyword together are refused."""
        with self.assertRaises(TypeError):
            self.make([], retry=RetryPolicy(1, 0.1, 1.0, 1.0, lambda: 0.5), max_attempts=2)
