"""
Tokens and profiles under throttling and outages: every caller still hears a
menu within the budget, and the service recovers when the platform does.

``BudgetTests`` runs many calls through the real call path (runner, session,
lookup layer, profile client) on a ``Clock``; the other classes run the real
service against the emulator over loopback.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import attrs
import treq
from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks, succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from ivrproto.session.runner import CallContext
from ivrproto.session.registry import CallRegistry
from ivrproto.config import load_config
from ivrproto.errors import ProfileError
from ivrproto.clients.lookup import ProfileLookup
from ivrproto.messages import Play
from ivrproto.clients.profiles import Profile

from .test_integration import ServiceTestCase
from tests.fakes import RecordingConnection

SEED = str(Path(__file__).resolve().parent.parent / "examples" / "seed.toml")
DEFAULT_MENU = ["general_welcome.mp3", "general_support.mp3", "general_operator.mp3"]


class _Tokens:
    def get_token(self) -> "Deferred[str]":
        return succeed("token")

    def invalidate(self, token: str) -> None:
        pass


@attrs.define
class _FlakySource:
    """
    A profile source on a Clock: ids ending in 0-2 fail (30%), ids ending
    in 3 answer after 5 s (far past the budget), the rest answer in 50 ms.
    """

    clock: Clock
    fetches: int = 0

    def fetch(self, external_id: str, deadline: Optional[float] = None) -> "Deferred[Optional[Profile]]":
        self.fetches += 1
        last = int(external_id[-1])
        d: Deferred[Optional[Profile]] = Deferred()
        if last <= 2:
            self.clock.callLater(0.05, d.errback, ProfileError("u", 503, "unavailable"))
        else:
            delay = 5.0 if last == 3 else 0.05
            profile = Profile("p", external_id, {"membership_level": "premium"}, None)
            self.clock.callLater(delay, d.callback, profile)
        return d

    def stop(self) -> None:
        pass


# A connection that connects at once and records commands.
_Connection = RecordingConnection


class BudgetTests(SynchronousTestCase):
    def test_flaky_profiles_every_call_gets_a_menu_within_budget(self) -> None:
        """With 30% of lookups failing and 10% far too slow, all calls hear a menu by the budget."""
        clock = Clock()
        config = load_config(SEED, {"CLIENT_ID": "a", "CLIENT_SECRET": "b"})
        timing = attrs.evolve(config.timing, profile_budget=0.5)
        source = _FlakySource(clock)
        lookup = ProfileLookup(clock, source, rate_per_minute=60_000, breaker_failures=1000)
        connections: dict[str, _Connection] = {}

        def connect(reactor: Any, url: str, token: str, call_id: str, listener: Any, **kw: Any) -> Any:
            connection = connections[call_id] = _Connection()
            clock.callLater(0.01, listener.connected, connection)
            return succeed(connection)

        context = CallContext(
            reactor=clock, tokens=_Tokens(), profiles=lookup, book=config.menu,
            timing=timing, websocket_url="ws://127.0.0.1:1/x", log_key=b"k", connect=connect,
        )
        registry = CallRegistry(context, max_active=10_000, retention=0)
        runners = [registry.start_call(f"call-{i}", f"CRM-{i}") for i in range(500)]
        clock.advance(0.5)
        for runner in runners:
            plays = [c for c in connections[runner.call_control_id].sent if isinstance(c, Play)]
            self.assertTrue(plays, runner.call_control_id)
            self.assertEqual(runner.state, "in_menu")
        profile_menus = sum(1 for r in runners if not r.core.menu.is_default)
        self.assertEqual(profile_menus, 300)
        self.assertEqual(
            sorted({r.core.profile for r in runners}), ["failed", "found", "timed-out"]
        )
        # The late answers still fill the cache: the slow callers call again.
        clock.advance(5)
        again = registry.start_call("call-again", "CRM-3")
        clock.advance(0.01)
        self.assertEqual(again.core.profile, "hit")
        self.assertFalse(again.core.menu.is_default)
        for runner in runners + [again]:
            runner.session.hangup_received(None)
        self.assertEqual(clock.getDelayedCalls(), [])


class FaultyPlatformTests(ServiceTestCase):
    @inlineCallbacks
    def test_thirty_percent_failures(self) -> Any:
        """A profile API failing 30% of requests: every call still gets a menu and a transfer."""
        self.platform.faults.set_failure_rate("profile", 0.3, status=503, seed=7)
        ids = ["CRM-PREMIUM", "CRM-TICKETS", "CRM-PLAIN", "CRM-UNKNOWN"]
        records = []
        for i in range(40):
            record = self.platform.expect_call(f"call-{i}", f"{ids[i % 4]}", ["menu", "press:0"])
            records.append(record)
            response = yield self.post({"callControlId": f"call-{i}", "externalId": ids[i % 4]})
            self.assertEqual(response.code, 202)
            yield response.content()
            # Distinct callers each time: drop the cache between calls.
            self.service.lookup._cache.clear()
        for record in records:
            yield record.when_finished()
            self.assertEqual(record.transfer_target, "ext:transfer_operator")
            self.assertTrue(record.plays)
            self.assertEqual(record.violations, [])
        self.assertGreater(self.platform.faults.injected["profile"], 0)

    @inlineCallbacks
    def test_dead_profile_api_then_recovery(self) -> Any:
        """A dead profile API gives the default menu, opens the breaker, and recovers."""
        service = yield self.start_service(breaker_failures=5, breaker_reset=0.2)
        self.platform.faults.set_failure_rate("profile", 1.0, status=503)
        for i in range(6):
            theirs, ours = yield self.call_on(service, f"call-dead-{i}", "CRM-PREMIUM")
            self.assertEqual(ours.menu, "default")
        self.assertEqual(service.lookup.breaker_state, "open")
        requests = self.platform.stats.profile_requests
        theirs, ours = yield self.call_on(service, "call-open", "CRM-PREMIUM")
        self.assertEqual(ours.profile, "circuit-open")
        self.assertEqual(self.platform.stats.profile_requests, requests)
        # The API comes back; calls keep flowing until the breaker's probe
        # gets through and the caller hears the profile menu again.
        self.platform.faults.set_failure_rate("profile", 0.0)
        for i in range(200):
            theirs, ours = yield self.call_on(service, f"call-back-{i}", "CRM-PREMIUM")
            if ours.menu == "profile":
                break
        self.assertEqual(ours.menu, "profile")
        self.assertEqual(service.lookup.breaker_state, "closed")

    @inlineCallbacks
    def call_on(self, service: Any, call_id: str, external_id: str) -> Any:
        record = self.platform.expect_call(call_id, external_id, ["menu", "press:0"])
        response = yield self.post({"callControlId": call_id, "externalId": external_id}, service)
        yield response.content()
        ours = yield service.registry.when_ended(call_id)
        theirs = yield record.when_finished()
        return theirs, ours


class CacheAndLimitTests(ServiceTestCase):
    @inlineCallbacks
    def test_repeat_caller_served_from_cache(self) -> Any:
        """A repeat caller's profile comes from the cache: one request for two calls."""
        yield self.call("CRM-PREMIUM", ["menu", "press:1"], call_id="call-a")
        theirs, ours = yield self.call("CRM-PREMIUM", ["menu", "press:1"], call_id="call-b")
        self.assertEqual(self.platform.stats.profile_requests, 1)
        self.assertEqual(ours.profile, "hit")
        self.assertEqual(theirs.transfer_target, "ext:transfer_premium")

    @inlineCallbacks
    def test_stats_move(self) -> Any:
        """GET /v1/stats shows token, lookup and call counters moving."""
        yield self.call("CRM-PREMIUM", ["menu", "press:1"], call_id="call-a")
        yield self.call("CRM-UNKNOWN", ["menu", "press:1"], call_id="call-b")
        response = yield treq.get(self.service.admin_url + "/v1/stats", timeout=5, persistent=False)
        stats = yield response.json()
        self.assertEqual(stats["calls"]["transferred"], 2)
        self.assertEqual(stats["profiles"]["lookups"]["found"], 1)
        self.assertEqual(stats["profiles"]["lookups"]["not_found"], 1)
        self.assertEqual(stats["profiles"]["breaker"], "closed")
        self.assertGreaterEqual(stats["tokens"]["requests"], 1)
        self.assertNotIn("CRM-", repr(stats))


class RateLimitTests(ServiceTestCase):
    @inlineCallbacks
    def setUp(self) -> Any:
        yield super().setUp()
        self.service = yield self.start_service(rate_per_minute=1.0)  # one in any minute

    @inlineCallbacks
    def test_over_budget_gets_default_menu_at_once(self) -> Any:
        """Past the client-side rate limit, callers get the default menu instead of queueing."""
        theirs, ours = yield self.call("CRM-PREMIUM", ["menu", "press:1"], call_id="call-a")
        self.assertEqual(ours.menu, "profile")
        theirs, ours = yield self.call("CRM-TICKETS", ["menu", "press:1"], call_id="call-b")
        self.assertEqual((ours.menu, ours.profile), ("default", "rate-limited"))
        self.assertEqual(self.platform.stats.profile_requests, 1)


class ExternalContactsTests(ServiceTestCase):
    @inlineCallbacks
    def test_external_contacts_source(self) -> Any:
        """With External Contacts as the source, customFields drive the menu."""
        self.service = yield self.start_service(
            source="external-contacts", lookup_type="ExternalId"
        )
        theirs, ours = yield self.call("CRM-PREMIUM-TICKETS", ["menu", "press:2"])
        self.assertEqual(theirs.plays[0].rsplit("/", 1)[1], "premium_priority.mp3")
        self.assertEqual(theirs.transfer_target, "ext:play_ticket_info")
        self.assertEqual(self.platform.stats.contact_requests, 1)
        self.assertEqual(self.platform.stats.profile_requests, 0)


class MetricsTests(ServiceTestCase):
    @inlineCallbacks
    def test_metrics_present_and_moving(self) -> Any:
        """/metrics serves the Prometheus text format, and the figures move with calls."""
        yield self.call("CRM-PREMIUM", ["menu", "press:1"], call_id="call-a")
        yield self.call("CRM-UNKNOWN", ["menu", "press:2"], call_id="call-b")
        yield self.call("CRM-PREMIUM", ["menu", "drop"], call_id="call-c")
        response = yield treq.get(self.service.admin_url + "/metrics", timeout=5, persistent=False)
        self.assertEqual(response.code, 200)
        self.assertIn(b"text/plain", response.headers.getRawHeaders(b"content-type")[0])
        text = (yield response.content()).decode()
        for line in (
            'ivr_calls_total{outcome="transferred"} 2.0',
            'ivr_calls_total{outcome="failed"} 1.0',
            "ivr_calls_active 0.0",
            'ivr_profile_lookups_total{outcome="found"} 1.0',
            'ivr_profile_lookups_total{outcome="not-found"} 1.0',
            'ivr_profile_lookups_total{outcome="hit"} 1.0',
            "ivr_profile_cache_hits_total 1.0",
            'ivr_default_menu_fallbacks_total{reason="not-found"} 1.0',
            'ivr_websocket_closes_total{code="1011"} 1.0',
            'ivr_profile_breaker_state{state="closed"} 1.0',
            "ivr_intake_to_first_prompt_seconds_count 3.0",
            "ivr_key_to_command_seconds_count 2.0",
            "ivr_profile_lookup_seconds_count 3.0",
        ):
            self.assertIn(line, text)
        self.assertRegex(text, r"ivr_token_requests_total [1-9]")
        self.assertNotIn("CRM-", text)
        self.assertNotIn("call-a", text)


class RetentionTests(SynchronousTestCase):
    def _registry(self, clock: Clock, retention: float) -> CallRegistry:
        config = load_config(SEED, {"CLIENT_ID": "a", "CLIENT_SECRET": "b"})
        source = _FlakySource(clock)
        lookup = ProfileLookup(clock, source, rate_per_minute=60_000, breaker_failures=1000)

        def connect(reactor: Any, url: str, token: str, call_id: str, listener: Any, **kw: Any) -> Any:
            connection = _Connection()
            listener.connected(connection)
            return succeed(connection)

        context = CallContext(
            reactor=clock, tokens=_Tokens(), profiles=lookup, book=config.menu,
            timing=config.timing, websocket_url="ws://127.0.0.1:1/x", log_key=b"k", connect=connect,
        )
        return CallRegistry(context, max_active=100, retention=retention)

    def test_ended_calls_visible_for_the_retention_without_timers(self) -> None:
        """An ended call is described for `retention` seconds, then forgotten; no reactor timer per call."""
        clock = Clock()
        registry = self._registry(clock, retention=30.0)
        first = registry.start_call("call-1", "CRM-4")
        clock.advance(0.1)
        first.session.hangup_received("caller")
        self.assertEqual(clock.getDelayedCalls(), [])
        clock.advance(10)
        second = registry.start_call("call-2", "CRM-5")
        clock.advance(0.1)
        second.session.hangup_received("caller")
        self.assertEqual(registry.describe("call-1")["state"], "ended")
        ended = []
        registry.when_ended("call-1").addCallback(ended.append)
        self.assertEqual(ended[0].outcome.kind, "hungup")
        clock.advance(20)
        self.assertIsNone(registry.describe("call-1"))
        self.assertEqual(registry.describe("call-2")["state"], "ended")
        clock.advance(10)
        self.assertIsNone(registry.describe("call-2"))
        self.assertEqual(registry.ended, {})

    def test_a_reused_id_keeps_its_newest_record(self) -> None:
        """A call id that ends twice: the first record's expiry does not drop the second."""
        clock = Clock()
        registry = self._registry(clock, retention=30.0)
        registry.start_call("call-1", "CRM-4").session.hangup_received(None)
        clock.advance(20)
        registry.start_call("call-1", "CRM-5").session.hangup_received("again")
        clock.advance(15)  # past the first record's expiry, not the second's
        described = registry.describe("call-1")
        self.assertIsNotNone(described)
        self.assertEqual(described["outcome"]["reason"], "again")


class TokenOutageTests(ServiceTestCase):
    @inlineCallbacks
    def setUp(self) -> Any:
        yield super().setUp()
        self.service = yield self.start_service()

    @inlineCallbacks
    def test_failing_token_endpoint_gets_one_fetch_not_four_per_call(self) -> Any:
        """With the token endpoint answering 500, ten calls one after the other cost a fetch or two (4 requests each), not 4 requests per call; /readyz says 503 at once."""
        self.platform.faults.set_failure_rate("token", 1.0, status=500)
        for i in range(10):
            response = yield self.post({"callControlId": f"call-{i}", "externalId": "CRM-PREMIUM"})
            yield response.content()
            ours = yield self.service.registry.when_ended(f"call-{i}")
            self.assertEqual(ours.outcome.kind, "failed")
        # One fetch, and a second one should the cool-down end between calls
        # on a slow machine: far from the 40 requests of 4 per call.
        self.assertLessEqual(self.platform.stats.token_requests, 8)
        response = yield treq.get(self.service.intake_url + "/readyz", timeout=1, persistent=False)
        self.assertEqual(response.code, 503)
        yield response.content()
        self.assertLessEqual(self.platform.stats.token_requests, 8)
