"""
The metrics ``/metrics`` serves tell the truth: each counter moves when the
thing it counts happens (an intake refusal of each reason, a retry, a retry
refused, a lookup past its deadline, a token dropped...), read from the
counters the parts keep anyway; the process, garbage collector and build
families are there; and the format is the one the scraper asks for.
(That every metric the README names is served is in tests/test_deploy.py.)
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Optional

import attrs
import treq
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.protocol import ClientFactory, Protocol, connectionDone
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.test.requesthelper import DummyRequest

import ivrproto
from ivrproto.clients.limits import RetryBudget
from ivrproto.session.runner import CallContext
from ivrproto.session.registry import CallRegistry
from ivrproto.config import load_config
from ivrproto.intake.guard import IntakeGuard
from ivrproto.intake.resources import make_site
from ivrproto.clients.lookup import ProfileLookup
from ivrproto.metrics import REFUSAL_REASONS, Metrics, MetricsResource
from ivrproto.clients.oauth import TokenSource
from ivrproto.clients.sources import ProfileClient
from ivrproto.intake.signing import SignatureCheck, sign

from .scripted import json_answer
from .test_integration import SEED, ServiceTestCase
from .test_intake import _never, _NoProfiles, _NoTokens, answers, connect, request
from .test_lookup import CALLER, LookupTestsMixin
from .test_oauth import TokenSourceTestsMixin, token_answer
from .test_profiles import ProfileTestsMixin, profile_answer

SECRET = b"intake-shared-secret"

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def samples_of(text: str) -> Samples:
    """
    Every sample of a Prometheus text, by name and labels.
    """
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(found: Samples, name: str, **labels: str) -> float:
    return found[(name, frozenset(labels.items()))]


def refusals(found: Samples) -> dict[str, float]:
    return {reason: value(found, "ivr_intake_refused_total", reason=reason) for reason in REFUSAL_REASONS}


def only(reason: str, count: int = 1) -> dict[str, int]:
    "The refusal counts when only ``reason`` happened, ``count`` times."
    return {r: count if r == reason else 0 for r in REFUSAL_REASONS}


def unit_stats(
    tokens: Optional[TokenSource] = None,
    client: Optional[ProfileClient] = None,
    lookup: Optional[ProfileLookup] = None,
) -> Callable[[], Mapping[str, Any]]:
    """
    A stats function shaped as the service's, over the parts a unit test has.
    """

    def stats() -> Mapping[str, Any]:
        return {
            "calls": {"active": 0},
            "tokens": attrs.asdict(tokens.stats) if tokens is not None else {},
            "profiles": {
                "requests": attrs.asdict(client.stats) if client is not None else {},
                "lookups": attrs.asdict(lookup.stats) if lookup is not None else {},
                "cache_entries": lookup.cache_size if lookup is not None else 0,
                "cache_bytes": lookup.cache_bytes if lookup is not None else 0,
            },
        }

    return stats


def scrape(stats: Callable[[], Mapping[str, Any]]) -> Samples:
    return samples_of(Metrics(stats).render().decode())


# --- the intake, driven through its real channel ---------------------------------


class IntakeRefusalTests(SynchronousTestCase):
    """
    The intake counts each request it refuses under one reason, once, where
    it answers it.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1_700_000_000)
        self.draining = False
        self.overloaded = False

    def make(self, signed: bool = False, max_active: int = 50, **guard: Any) -> IntakeGuard:
        config = load_config(SEED, {"CLIENT_ID": "a", "CLIENT_SECRET": "b"})
        context = CallContext(
            reactor=self.clock,
            tokens=_NoTokens(),
            profiles=_NoProfiles(),
            book=config.menu,
            timing=config.timing,
            websocket_url="ws://127.0.0.1:1/x",
            log_key=b"k",
            connect=_never,
        )
        self.registry = CallRegistry(context, max_active=max_active, retention=0)
        self.signatures = SignatureCheck(SECRET, 300) if signed else None
        self.site = make_site(
            self.registry,
            lambda: False,
            lambda: self.draining,
            1024,
            signatures=self.signatures,
            is_overloaded=lambda: self.overloaded,
        )
        options = {"max_connections": 100, "request_deadline": 10.0, "fd_reserve": 0}
        options.update(guard)
        self.guard = IntakeGuard(
            self.site, self.clock, open_descriptors=lambda: 10, descriptor_limit=lambda: None, **options
        )
        return self.guard

    def send(self, raw: bytes) -> list[int]:
        protocol, transport = connect(self.guard)
        protocol.dataReceived(raw)
        return [status for status, _ in answers(transport.value())]

    def post(self, body: bytes, headers: Optional[dict[bytes, bytes]] = None) -> list[int]:
        return self.send(request(b"POST", b"/v1/calls", body, headers))

    def call(self, call_id: str = "c-1") -> bytes:
        return b'{"callControlId": "%s", "externalId": "CRM-1"}' % call_id.encode()

    def signed(self, body: bytes) -> dict[bytes, bytes]:
        timestamp = str(int(self.clock.seconds()))
        return {
            b"X-IVR-Timestamp": timestamp.encode(),
            b"X-IVR-Signature": sign(SECRET, timestamp, body).encode(),
        }

    def test_no_refusal_for_an_accepted_call(self) -> None:
        """An accepted call counts no refusal: every reason starts and stays at 0."""
        self.make()
        self.assertEqual(self.post(self.call()), [202])
        self.assertEqual(self.site.refusals.counts, dict.fromkeys(REFUSAL_REASONS, 0))

    def test_draining(self) -> None:
        """A call posted while draining counts under draining."""
        self.make()
        self.draining = True
        self.assertEqual(self.post(self.call()), [503])
        self.assertEqual(self.site.refusals.counts, only("draining"))

    def test_overloaded(self) -> None:
        """A call shed because the reactor runs late counts under overloaded."""
        self.make()
        self.overloaded = True
        self.assertEqual(self.post(self.call()), [503])
        self.assertEqual(self.site.refusals.counts, only("overloaded"))

    def test_max_active_calls(self) -> None:
        """A call beyond max_active_calls counts under capacity."""
        self.make(max_active=1)
        self.assertEqual(self.post(self.call("c-1")), [202])
        self.assertEqual(self.post(self.call("c-2")), [503])
        self.assertEqual(self.site.refusals.counts, only("capacity"))

    def test_bad_requests(self) -> None:
        """Not JSON, not an object, a bad field: each counts under bad_request."""
        self.make()
        for body in (b"{nope", b"[1]", b'{"callControlId": "", "externalId": "x"}', b'{"callControlId": "c"}'):
            self.assertEqual(self.post(body), [400])
        self.assertEqual(self.site.refusals.counts, only("bad_request", 4))

    def test_already_active(self) -> None:
        """The same call posted twice counts the second under duplicate."""
        self.make()
        self.assertEqual(self.post(self.call()), [202])
        self.assertEqual(self.post(self.call()), [409])
        self.assertEqual(self.site.refusals.counts, only("duplicate"))

    def test_replayed(self) -> None:
        """A signed call already started once (a replay) counts under duplicate."""
        self.make(signed=True)
        assert self.signatures is not None
        self.assertTrue(self.signatures.first_time("c-1", self.clock.seconds()))
        body = self.call("c-1")
        self.assertEqual(self.post(body, self.signed(body)), [409])
        self.assertEqual(self.site.refusals.counts, only("duplicate"))

    def test_unsigned_on_headers(self) -> None:
        """A request without a signature, refused on its headers, counts once under unsigned."""
        self.make(signed=True)
        self.assertEqual(self.post(self.call())[:1], [401])
        self.assertEqual(self.site.refusals.counts, only("unsigned"))

    def test_bad_signature(self) -> None:
        """A request whose signature does not match its body counts under unsigned."""
        self.make(signed=True)
        headers = self.signed(b"something else")
        self.assertEqual(self.post(self.call(), headers)[:1], [401])
        self.assertEqual(self.site.refusals.counts, only("unsigned"))

    def test_too_large_by_length(self) -> None:
        """A Content-Length past max_body counts once under too_large."""
        self.make()
        self.assertEqual(self.post(b"x" * 2000)[:1], [413])
        self.assertEqual(self.site.refusals.counts, only("too_large"))

    def test_too_large_chunked(self) -> None:
        """A chunked body that grows past max_body counts once under too_large."""
        self.make()
        head = b"POST /v1/calls HTTP/1.1\r\nHost: intake\r\nTransfer-Encoding: chunked\r\n\r\n"
        # The body is never ended: a StringTransport takes no more once closed.
        chunks = b"".join(b"200\r\n" + b"x" * 0x200 + b"\r\n" for _ in range(4))
        self.assertEqual(self.send(head + chunks)[:1], [413])
        self.assertEqual(self.site.refusals.counts, only("too_large"))


# --- what each new counter reads, moving in the part that keeps it -------------


class TokenCounterTests(TokenSourceTestsMixin, SynchronousTestCase):
    """
    The token source's counters, as /metrics shows them.
    """

    def test_retries(self) -> None:
        """A token request answered 503 and sent again moves ivr_token_retries_total."""
        tokens = self.make([json_answer(503, {}), token_answer()])
        self.assertEqual(value(scrape(unit_stats(tokens)), "ivr_token_retries_total"), 0)
        d = tokens.get_token()
        self.flush()
        self.clock.advance(60)
        self.assertEqual(self.token_of(d), "tok-1")
        found = scrape(unit_stats(tokens))
        self.assertEqual(value(found, "ivr_token_retries_total"), 1)
        self.assertEqual(value(found, "ivr_token_requests_total"), 2)

    def test_fast_failures(self) -> None:
        """A token asked for within the cool-down after a failure fails at once, and is counted."""
        tokens = self.make([json_answer(401, {})])
        self.error_of(tokens.get_token())
        self.assertEqual(value(scrape(unit_stats(tokens)), "ivr_token_fast_failures_total"), 0)
        self.error_of(tokens.get_token())
        found = scrape(unit_stats(tokens))
        self.assertEqual(value(found, "ivr_token_fast_failures_total"), 1)
        self.assertEqual(value(found, "ivr_token_failures_total"), 1)

    def test_invalidations(self) -> None:
        """A refused token dropped moves ivr_token_invalidations_total; one reported again too soon, _ignored."""
        tokens = self.make([token_answer("tok-1"), token_answer("tok-2")])
        token = self.token_of(tokens.get_token())
        tokens.invalidate(token)
        found = scrape(unit_stats(tokens))
        self.assertEqual(
            (value(found, "ivr_token_invalidations_total"), value(found, "ivr_token_invalidations_ignored_total")),
            (1, 0),
        )
        second = self.token_of(tokens.get_token())
        tokens.invalidate(second)
        found = scrape(unit_stats(tokens))
        self.assertEqual(value(found, "ivr_token_invalidations_ignored_total"), 1)
        tokens.stop()


class ProfileCounterTests(ProfileTestsMixin, SynchronousTestCase):
    """
    The profile client's counters, as /metrics shows them.
    """

    def test_requests_and_retries(self) -> None:
        """A lookup retried after a 503 is two requests and one retry."""
        client = self.make([json_answer(503, {}), profile_answer()])
        d = client.fetch(CALLER)
        self.flush()
        self.clock.advance(10)
        self.assertIsNotNone(self.result_of(d))
        found = scrape(unit_stats(client=client))
        self.assertEqual(value(found, "ivr_profile_requests_total"), len(self.profile_resource.seen))
        self.assertEqual(value(found, "ivr_profile_requests_total"), 2)
        self.assertEqual(value(found, "ivr_profile_retries_total"), 1)
        self.tokens.stop()

    def test_retry_budget_spent(self) -> None:
        """A failure not retried because the retry budget is spent counts reason="retry-budget"."""
        budget = RetryBudget(Clock(), ratio=0.0, min_per_second=0.0)
        client = self.make([json_answer(503, {})], retry_budget=budget)
        self.error_of(client.fetch(CALLER))
        found = scrape(unit_stats(client=client))
        self.assertEqual(value(found, "ivr_profile_retries_refused_total", reason="retry-budget"), 1)
        self.assertEqual(value(found, "ivr_profile_retries_refused_total", reason="past-deadline"), 0)
        self.tokens.stop()

    def test_past_deadline(self) -> None:
        """A retry that would end after the caller's deadline counts reason="past-deadline"."""
        client = self.make([json_answer(503, {})])
        self.error_of(client.fetch(CALLER, deadline=self.clock.seconds() + 0.001))
        found = scrape(unit_stats(client=client))
        self.assertEqual(value(found, "ivr_profile_retries_refused_total", reason="past-deadline"), 1)
        self.assertEqual(value(found, "ivr_profile_retries_refused_total", reason="retry-budget"), 0)
        self.tokens.stop()


class LookupCounterTests(LookupTestsMixin, SynchronousTestCase):
    """
    The lookup layer's counters, as /metrics shows them.
    """

    def test_past_the_budget(self) -> None:
        """A lookup past the caller's budget is outcome="timed-out"; its fetch filling the cache later, a late fill."""
        lookup = self.make()
        d = lookup.lookup(CALLER, 0.5)
        self.clock.advance(0.5)
        self.assertEqual(self.result_of(d).outcome, "timed-out")
        found = scrape(unit_stats(lookup=lookup))
        self.assertEqual(value(found, "ivr_profile_lookups_total", outcome="timed-out"), 1)
        self.assertEqual(value(found, "ivr_profile_late_fills_total"), 0)
        self.source.last().found()
        found = scrape(unit_stats(lookup=lookup))
        self.assertEqual(value(found, "ivr_profile_late_fills_total"), 1)
        self.assertGreater(value(found, "ivr_profile_cache_bytes"), 0)

    def test_evictions_and_too_large(self) -> None:
        """A profile pushed out of a full cache is an eviction; one over max_entry_bytes, too_large."""
        lookup = self.make(max_entries=1, max_entry_bytes=10**6)
        for n in range(2):
            d = lookup.lookup(f"caller-{n}", 1.0)
            self.source.last().found()
            self.result_of(d)
        found = scrape(unit_stats(lookup=lookup))
        self.assertEqual(value(found, "ivr_profile_cache_evictions_total"), 1)
        self.assertEqual(value(found, "ivr_profile_cache_too_large_total"), 0)
        small = self.make(max_entry_bytes=1)
        d = small.lookup("caller-x", 1.0)
        self.source.last().found()
        self.result_of(d)
        self.assertEqual(value(scrape(unit_stats(lookup=small)), "ivr_profile_cache_too_large_total"), 1)

    def test_pauses(self) -> None:
        """A 429 that pauses every lookup moves ivr_profile_rate_limit_pauses_total."""
        from ivrproto.clients.profiles import RateLimited

        lookup = self.make()
        d = lookup.lookup(CALLER, 1.0)
        self.source.last().fail(RateLimited("x", 429, "rate limited", self.clock.seconds() + 2))
        self.result_of(d)
        self.assertEqual(value(scrape(unit_stats(lookup=lookup)), "ivr_profile_rate_limit_pauses_total"), 1)
        self.clock.advance(2)


# --- the families prometheus_client adds, and the format ---------------------------


class RegistryTests(SynchronousTestCase):
    """
    The registry carries the process, GC, platform and build families, and
    /metrics answers in the format asked for.
    """

    def test_process_gc_platform_and_build(self) -> None:
        """process_*, python_gc_*, python_info and ivr_build_info{version} are served."""
        found = scrape(unit_stats())
        names = {name for name, _ in found}
        for name in (
            "process_resident_memory_bytes",
            "process_open_fds",
            "process_cpu_seconds_total",
            "python_gc_collections_total",
            "python_info",
        ):
            self.assertIn(name, names)
        self.assertEqual(value(found, "ivr_build_info", version=ivrproto.__version__), 1)

    def _get(self, accept: Optional[bytes]) -> tuple[str, str]:
        resource = MetricsResource(Metrics(unit_stats()))
        request = DummyRequest([b""])
        if accept is not None:
            request.requestHeaders.setRawHeaders(b"accept", [accept])
        body = resource.render_GET(request)
        [content_type] = request.responseHeaders.getRawHeaders(b"content-type")
        return content_type.decode(), body.decode()

    def test_prometheus_text_by_default(self) -> None:
        """Without an Accept header, the Prometheus text format 0.0.4."""
        content_type, body = self._get(None)
        self.assertEqual(content_type, "text/plain; version=0.0.4; charset=utf-8")
        self.assertNotIn("# EOF", body)

    def test_openmetrics_when_asked(self) -> None:
        """Prometheus's Accept header for OpenMetrics gets OpenMetrics, which its parser reads."""
        content_type, body = self._get(
            b"application/openmetrics-text;version=1.0.0,application/openmetrics-text;"
            b"version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
        )
        self.assertTrue(content_type.startswith("application/openmetrics-text; version=1.0.0"), content_type)
        families = {family.name: family for family in openmetrics_families(body)}
        self.assertEqual(families["ivr_build"].type, "info")
        self.assertEqual(families["ivr_intake_refused"].type, "counter")


# --- a real service, scraped ------------------------------------------------------


class _Held(Protocol):
    "A raw connection that sends what it is given and tells when it is closed."

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.received = b""
        self.closed: Deferred[bytes] = Deferred()

    def connectionMade(self) -> None:
        assert self.transport is not None
        if self.data:
            self.transport.write(self.data)

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.closed.callback(self.received)


class ScrapedServiceTests(ServiceTestCase):
    """
    A service against the emulator, scraped over HTTP.
    """

    @inlineCallbacks
    def scraped(self, service: Any = None) -> Any:
        service = service or self.service
        response = yield treq.get(service.admin_url + "/metrics", timeout=5, persistent=False)
        self.assertEqual(response.code, 200)
        return (yield response.content()).decode()

    def raw(self, data: bytes) -> "Deferred[bytes]":
        held = _Held(data)
        factory = ClientFactory.forProtocol(lambda: held)
        address = self.service.intake_address
        reactor.connectTCP(address.host, address.port, factory)  # type: ignore[attr-defined]
        return held.closed

    @inlineCallbacks
    def test_profile_requests_counted(self) -> Any:
        """ivr_profile_requests_total counts the requests the profile API got (it read 0 before)."""
        self.platform.faults.add("profile", 503)
        yield self.call("CRM-PREMIUM", ["menu", "press:1"])
        found = samples_of((yield self.scraped()))
        self.assertEqual(value(found, "ivr_profile_requests_total"), 2)
        self.assertEqual(value(found, "ivr_profile_retries_total"), 1)
        self.assertGreater(value(found, "ivr_profile_cache_bytes"), 0)

    @inlineCallbacks
    def test_calls_by_hours_served(self) -> Any:
        """Each ended call counts under the opening hours that served it (always, without schedules)."""
        yield self.call("CRM-PREMIUM", ["menu", "press:1"])
        found = samples_of((yield self.scraped()))
        self.assertEqual(value(found, "ivr_calls_by_schedule_state_total", hours="always"), 1)

    @inlineCallbacks
    def test_refusals_served(self) -> Any:
        """A 413, a 400 and a call posted while draining move their reasons in the scrape."""
        before = refusals(samples_of((yield self.scraped())))
        self.assertEqual(set(before.values()), {0})
        response = yield self.post(None, raw=b"x" * (self.service.config.intake.max_body + 1))
        self.assertEqual(response.code, 413)
        response = yield self.post(None, raw=b"{not json")
        self.assertEqual(response.code, 400)
        self.service.draining = True
        response = yield self.post({"callControlId": "c", "externalId": "x"})
        self.assertEqual(response.code, 503)
        self.service.draining = False
        after = refusals(samples_of((yield self.scraped())))
        self.assertEqual(after, {**dict.fromkeys(REFUSAL_REASONS, 0), "too_large": 1, "bad_request": 1, "draining": 1})

    @inlineCallbacks
    def test_connection_cap_and_deadline_served(self) -> Any:
        """A connection beyond the cap counts under capacity, one past the request deadline under timeout."""
        guard = self.service.intake_guard
        cap = guard.max_connections
        guard.max_connections = 0
        answer = yield self.raw(b"")
        guard.max_connections = cap
        self.assertIn(b" 503 ", answer)
        guard.request_deadline = 0.2
        answer = yield self.raw(b"POST /v1/calls HTTP/1.1\r\nHost: x\r\n")
        self.assertIn(b" 408 ", answer)
        found = refusals(samples_of((yield self.scraped())))
        self.assertEqual(found, {**dict.fromkeys(REFUSAL_REASONS, 0), "capacity": 1, "timeout": 1})
