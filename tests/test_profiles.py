"""
Tests for :mod:`ivrproto.profiles`.
"""

from __future__ import annotations

import json
from email.utils import formatdate
from typing import Any, Callable, Optional, Union
from urllib.parse import unquote

import attrs
from hypothesis import given, settings, strategies as st
from treq.testing import StubTreq
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.task import Clock
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from ivrproto.errors import ProfileError
from ivrproto.oauth import TokenSource
from ivrproto.profiles import (
    Profile,
    ProfileClient,
    encode_uri_component,
    freeze_json,
    profile_endpoint,
    profile_url,
)

API_URL = "http://api.example.test"
ENDPOINT = API_URL + "/api/v2/profiles/external/{externalId}"
SECRET = "client-secret-xyz"
CALLER = "+1 555/0100?x#y%z é"
CALLER_PATH = b"/api/v2/profiles/external/%2B1%20555%2F0100%3Fx%23y%25z%20%C3%A9"
T0 = 1_700_000_000.0

#: Answer that never comes: the request hangs.
HANG = object()

Answer = Union[tuple[int, dict[bytes, bytes], bytes], object, Callable[[Request], Any]]


@attrs.frozen
class Seen:
    """
    One request as the fake server saw it.
    """

    method: bytes
    path: bytes
    headers: dict[bytes, list[bytes]]


class ScriptedResource(Resource):
    """
    Answers requests in order from a script; an exhausted script answers
    with ``default`` if given, else 599.
    """

    isLeaf = True

    def __init__(self, answers: list[Answer], default: Optional[Callable[[], Answer]] = None) -> None:
        super().__init__()
        self.answers = list(answers)
        self.default = default
        self.seen: list[Seen] = []
        self.hanging: list[Request] = []

    def render(self, request: Request) -> Any:
        self.seen.append(
            Seen(request.method, request.uri, dict(request.requestHeaders.getAllRawHeaders()))
        )
        if self.answers:
            answer = self.answers.pop(0)
        elif self.default is not None:
            answer = self.default()
        else:
            answer = (599, {}, b"script exhausted")
        if answer is HANG:
            self.hanging.append(request)
            return NOT_DONE_YET
        if callable(answer):
            return answer(request)
        code, headers, body = answer  # type: ignore[misc]
        request.setResponseCode(code)
        for name, value in headers.items():
            request.setHeader(name, value)
        return body


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


def json_answer(code: int, body: Any, headers: Optional[dict[bytes, bytes]] = None) -> Answer:
    """
    An answer with a JSON body.
    """
    all_headers = {b"content-type": b"application/json"}
    all_headers.update(headers or {})
    return (code, all_headers, json.dumps(body).encode())


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

    def make(
        self,
        profiles: list[Answer],
        tokens: Optional[list[Answer]] = None,
        **kwargs: Any,
    ) -> ProfileClient:
        self.clock = Clock()
        self.clock.advance(T0)
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
        self.client = ProfileClient(self.clock, self.stub, API_URL, self.tokens, **kwargs)
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
        """A second 401 is a ProfileError; no third request."""
        client = self.make([json_answer(401, {}), json_answer(401, {})])
        error = self.error_of(client.lookup(CALLER))
        self.assertEqual((error.status, error.url), (401, ENDPOINT))
        self.assertEqual(len(self.profile_resource.seen), 2)
        self.assertFalse(self.tokens.has_valid_token)

    def test_403_not_retried(self) -> None:
        """A 403 fails at once and says the token lacks profile:read."""
        client = self.make([json_answer(403, {})])
        error = self.error_of(client.lookup(CALLER))
        self.assertEqual(error.status, 403)
        self.assertIn("profile:read", error.reason)
        self.assertEqual(len(self.profile_resource.seen), 1)
        self.assertEqual(client.stats.errors, 1)

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
        """A 429 waits Retry-After seconds before the next request."""
        client = self.make([json_answer(429, {}, {b"retry-after": b"1"}), profile_answer()])
        d = client.lookup(CALLER)
        self.flush()
        self.clock.advance(0.99)
        self.flush()
        self.assertNoResult(d)
        self.clock.advance(0.01)
        self.assertIsNotNone(self.result_of(d))
        self.assertEqual(len(self.profile_resource.seen), 2)

    def test_429_retry_after_http_date_capped(self) -> None:
        """An HTTP-date Retry-After is honoured up to retry_after_cap."""
        date = formatdate(T0 + 60, usegmt=True).encode("ascii")
        client = self.make(
            [json_answer(429, {}, {b"retry-after": date}), profile_answer()],
            retry_after_cap=2.0,
        )
        d = client.lookup(CALLER)
        self.flush()
        self.clock.advance(1.9)
        self.flush()
        self.assertNoResult(d)
        self.clock.advance(0.1)
        self.assertIsNotNone(self.result_of(d))

    def test_429_bounded(self) -> None:
        """Endless 429s end after max_attempts requests."""
        client = self.make([json_answer(429, {}, {b"retry-after": b"1"})] * 10, max_attempts=3)
        d = client.lookup(CALLER)
        self.flush()
        for _ in range(2):
            self.clock.advance(1)
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
        self.clock.advance(1)
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
