"""
Three service instances sharing one Redis, against one emulated platform:
the profile rate limit, the token, the intake's claims and the call
outcomes hold across them, and calls still get menus while Redis is down.

The three instances are three :class:`~ivrproto.service.IVRService`
objects in this test process, on the real reactor, each with its own
listeners, clients and Redis pool (``tests/test_shared_processes.py`` runs
three ``twistd ivr`` processes).  The Redis is a real ``redis-server``.
"""

from __future__ import annotations

import json
import time
from typing import Any, List, Optional

import attrs
import treq
from twisted.internet import reactor
from twisted.internet.defer import gatherResults, inlineCallbacks
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from ivrproto.config import load_config
from ivrproto.emulator import Platform
from ivrproto.intake.signing import sign
from ivrproto.service import IVRService

from .redis_server import SKIP_REASON, RedisServer
from .test_integration import DEFAULT_MENU, PROFILES, SEED

SECRET = "intake-s3cret"


class ClusterTestCase(TestCase):
    """
    A redis-server, an emulator, and :meth:`instance` to start a service on
    both.
    """

    if SKIP_REASON:
        skip = SKIP_REASON
    timeout = 120
    rate_per_minute = 200.0
    signed = False

    @inlineCallbacks
    def setUp(self) -> Any:
        self.redis = RedisServer()
        self.redis.start()
        self.addCleanup(self.redis.cleanup)
        self.platform = Platform(reactor, clients={"client": "s3cret"}, profiles=PROFILES)
        yield self.platform.listen("tcp:0:interface=127.0.0.1")
        self.addCleanup(self.platform.stop)

    @inlineCallbacks
    def instance(self, **shared: Any) -> Any:
        environ = {
            "GENESYS_BASE_URL": self.platform.base_url,
            "CLIENT_ID": "client",
            "CLIENT_SECRET": "s3cret",
            "IVR_REDIS_URL": self.redis.url,
            "IVR_REDIS_KEY_SALT": "test-salt",
        }
        if self.signed:
            environ["IVR_INTAKE_SECRET"] = SECRET
        config = load_config(SEED, environ)
        config = attrs.evolve(
            config,
            timing=attrs.evolve(
                config.timing, handshake_timeout=3.0, profile_budget=1.5,
                no_input_timeout=0.2, confirm_delay=0.05,
            ),
            intake=attrs.evolve(config.intake, max_loop_lag=30.0),
            profiles=attrs.evolve(config.profiles, rate_per_minute=self.rate_per_minute),
            # Generous: a busy test machine must not turn a round trip into
            # a fallback (the outage tests stop Redis for real), nor a slow
            # token fetch outlast the others' wait for it.
            shared=attrs.evolve(
                config.shared, timeout=0.9, probe_interval=0.2, token_wait=20.0, **shared
            ),
        )
        service = IVRService(
            reactor, config, intake="tcp:0:interface=127.0.0.1", admin="tcp:0:interface=127.0.0.1"
        )
        yield service.start()
        self.addCleanup(service.stop)
        return service

    def three(self) -> Any:
        return self.three_of(3)

    def three_of(self, n: int) -> Any:
        "``n`` instances, started together (cold: no token, nothing cached)."
        return gatherResults([self.instance() for _ in range(n)])

    def post(self, service: IVRService, call_id: str, external_id: str,
             headers: Optional[dict[bytes, bytes]] = None) -> Any:
        body = json.dumps({"callControlId": call_id, "externalId": external_id}).encode()
        sent = {b"Content-Type": b"application/json"}
        if self.signed:
            now = int(time.time())
            sent[b"X-IVR-Timestamp"] = str(now).encode()
            sent[b"X-IVR-Signature"] = sign(SECRET.encode(), now, body).encode()
        sent.update(headers or {})
        return treq.post(
            service.intake_url + "/v1/calls", data=body, headers=sent, timeout=10,
            persistent=False,
        )

    @inlineCallbacks
    def call(self, service: IVRService, call_id: str, external_id: str,
             script: List[str] = ["menu", "press:0"]) -> Any:
        "One call through ``service``: (platform record, service record)."
        record = self.platform.expect_call(call_id, external_id, script)
        response = yield self.post(service, call_id, external_id)
        self.assertEqual(response.code, 202, (yield response.text()))
        ours = yield service.registry.when_ended(call_id)
        theirs = yield record.when_finished()
        return theirs, ours

    def files(self, record: Any) -> list[str]:
        return [url.rsplit("/", 1)[-1] for url in record.plays]


class TokenTests(ClusterTestCase):
    @inlineCallbacks
    def test_three_cold_instances_and_300_calls_make_one_token_request(self) -> Any:
        """Three instances started together, 300 calls among them: one token request."""
        services = yield self.three()
        for batch in range(10):
            calls = [
                self.call(services[i % 3], f"call-{batch}-{i}", "CRM-PREMIUM", ["menu", "press:1"])
                for i in range(30)
            ]
            results = yield gatherResults(calls, consumeErrors=True)
            for theirs, ours in results:
                self.assertEqual(theirs.transfer_target, "ext:transfer_premium")
        self.assertEqual(self.platform.stats.token_requests, 1)
        self.assertEqual(sum(s.tokens.stats.requests for s in services), 1)
        self.assertEqual(sum(len(s.registry.ended) for s in services), 300)

    @inlineCallbacks
    def test_refused_token_invalidated_everywhere(self) -> Any:
        """A 401 on one instance deletes the shared token: the next fetch, anywhere, gets a new one once."""
        a = yield self.instance()
        b = yield self.instance()
        yield self.call(a, "warm-a", "CRM-PLAIN")
        yield self.call(b, "warm-b", "CRM-TICKETS")
        self.assertEqual(self.platform.stats.token_requests, 1)
        token = a.tokens._token.value
        a.tokens.invalidate(token)
        b.tokens.invalidate(token)
        yield a.tokens._invalidating
        yield self.call(a, "after-a", "CRM-PREMIUM")
        yield self.call(b, "after-b", "CRM-PREMIUM-TICKETS")
        self.assertEqual(self.platform.stats.token_requests, 2)
        self.assertEqual(a.tokens._token.value, b.tokens._token.value)


class RateLimitTests(ClusterTestCase):
    rate_per_minute = 20.0

    @inlineCallbacks
    def test_three_instances_share_one_window(self) -> Any:
        """90 lookups of new callers over three instances: at most 20 upstream requests."""
        services = yield self.three()
        results = yield gatherResults(
            [services[i % 3].lookup.lookup(f"NEW-{i}", 5.0) for i in range(90)]
        )
        outcomes = [r.outcome for r in results]
        self.assertLessEqual(self.platform.stats.profile_requests, 20)
        self.assertEqual(outcomes.count("not-found"), self.platform.stats.profile_requests)
        self.assertEqual(outcomes.count("rate-limited"), 90 - outcomes.count("not-found"))
        self.assertGreaterEqual(outcomes.count("not-found"), 15)
        for service in services:
            self.assertEqual(service.shared.health.fallbacks.get("ratelimit", 0), 0)

    @inlineCallbacks
    def test_a_429_pauses_every_instance(self) -> Any:
        """One instance meets a 429 with Retry-After: the others answer rate-limited at once, sending nothing."""
        a, b, c = yield self.three()
        self.platform.faults.add("profile", 429, retry_after=30)
        first = yield a.lookup.lookup("CRM-PLAIN", 5.0)
        self.assertEqual(first.outcome, "failed")
        yield a.lookup._shared.pausing  # the pause is on Redis
        sent = self.platform.stats.profile_requests
        for service in (b, c, a):
            result = yield service.lookup.lookup("CRM-PREMIUM", 5.0)
            self.assertEqual(result.outcome, "rate-limited")
        self.assertEqual(self.platform.stats.profile_requests, sent)
        # The caller gets the default menu at once.
        theirs, ours = yield self.call(b, "paused-call", "CRM-PREMIUM-TICKETS")
        self.assertEqual(self.files(theirs)[:3], DEFAULT_MENU)
        self.assertEqual(self.platform.stats.profile_requests, sent)


class CacheTests(ClusterTestCase):
    @inlineCallbacks
    def test_profile_fetched_once_for_all_instances(self) -> Any:
        """A profile one instance fetched is served to the others from the shared cache."""
        a, b, c = yield self.three()
        yield self.call(a, "first", "CRM-PREMIUM-TICKETS", ["menu", "press:1"])
        self.assertEqual(self.platform.stats.profile_requests, 1)
        for n, service in enumerate((b, c)):
            theirs, ours = yield self.call(service, f"then-{n}", "CRM-PREMIUM-TICKETS",
                                           ["menu", "press:1"])
            self.assertEqual(theirs.transfer_target, "ext:transfer_premium")
            self.assertEqual(self.files(theirs)[0], "premium_priority.mp3")
        self.assertEqual(self.platform.stats.profile_requests, 1)
        self.assertEqual(b.lookup._shared.hits + c.lookup._shared.hits, 2)

    @inlineCallbacks
    def test_negative_entries_shared(self) -> Any:
        """A caller without a profile is looked up once for every instance."""
        a = yield self.instance()
        b = yield self.instance()
        self.assertEqual((yield a.lookup.lookup("NOBODY", 5.0)).outcome, "not-found")
        self.assertEqual((yield b.lookup.lookup("NOBODY", 5.0)).outcome, "negative-hit")
        self.assertEqual(self.platform.stats.profile_requests, 1)


class IntakeTests(ClusterTestCase):
    signed = True

    @inlineCallbacks
    def test_replay_to_a_second_instance_starts_nothing(self) -> Any:
        """A signed request replayed to another instance is refused (409) and starts nothing."""
        a, b, c = yield self.three()
        body = json.dumps({"callControlId": "replayed", "externalId": "CRM-PLAIN"}).encode()
        now = int(time.time())
        headers = {
            b"Content-Type": [b"application/json"],
            b"X-IVR-Timestamp": [str(now).encode()],
            b"X-IVR-Signature": [sign(SECRET.encode(), now, body).encode()],
        }
        record = self.platform.expect_call("replayed", "CRM-PLAIN", ["menu", "press:0"])
        first = yield treq.post(a.intake_url + "/v1/calls", data=body, headers=headers,
                                persistent=False)
        self.assertEqual(first.code, 202)
        yield first.content()
        yield a.registry.when_ended("replayed")
        yield record.when_finished()
        for other in (b, c, a):
            again = yield treq.post(other.intake_url + "/v1/calls", data=body, headers=headers,
                                    persistent=False)
            self.assertEqual(again.code, 409)
            yield again.content()
        self.assertEqual(self.platform.stats.calls_connected, 1)
        self.assertEqual(b.registry.ended, {})
        self.assertEqual(c.registry.ended, {})

    @inlineCallbacks
    def test_any_instance_reports_any_call(self) -> Any:
        """A call that ended on one instance is shown by the admin listener of every one."""
        services = yield self.three()
        for n, service in enumerate(services):
            yield self.call(service, f"call-{n}", "CRM-PREMIUM", ["menu", "press:1"])
        for n in range(3):
            for service in services:
                response = yield treq.get(f"{service.admin_url}/v1/calls/call-{n}",
                                          persistent=False)
                self.assertEqual(response.code, 200)
                view = yield response.json()
                self.assertEqual(view["state"], "ended")
                self.assertEqual(view["outcome"]["target"], "ext:transfer_premium")
        missing = yield treq.get(f"{services[0].admin_url}/v1/calls/nope", persistent=False)
        self.assertEqual(missing.code, 404)
        yield missing.content()


class UnsignedIntakeTests(ClusterTestCase):
    @inlineCallbacks
    def test_active_elsewhere_is_refused_then_released(self) -> Any:
        """A call id active on one instance is refused by another; once it ended it may start again."""
        a = yield self.instance()
        b = yield self.instance()
        record = self.platform.expect_call("dup", "CRM-PLAIN", ["wait:0.3", "menu", "press:0"])
        first = yield self.post(a, "dup", "CRM-PLAIN")
        self.assertEqual(first.code, 202)
        yield first.content()
        second = yield self.post(b, "dup", "CRM-PLAIN")
        self.assertEqual(second.code, 409)
        yield second.content()
        yield a.registry.when_ended("dup")
        yield record.when_finished()
        # The claim is released with the call's end (after a round trip).
        yield deferLater(reactor, 0.2, lambda: None)
        yield self.call(b, "dup", "CRM-PLAIN")


class OutageTests(ClusterTestCase):
    @inlineCallbacks
    def test_redis_stopped_mid_run_then_back(self) -> Any:
        """Redis stopped: calls still get menus; Redis back: shared again."""
        a, b, c = yield self.three()
        yield self.call(a, "before", "CRM-PREMIUM", ["menu", "press:1"])
        self.redis.stop()
        results = yield gatherResults([
            self.call(service, f"down-{n}-{i}", external, ["menu", "press:0"])
            for n, service in enumerate((a, b, c))
            for i, external in enumerate(("CRM-PREMIUM", "CRM-TICKETS"))
        ])
        for theirs, ours in results:
            self.assertTrue(theirs.plays, "a caller got no menu")
            self.assertEqual(theirs.transfer_target, "ext:transfer_operator")
        # The personalized menu from a's local cache, no Redis needed.
        theirs, ours = yield self.call(a, "down-cached", "CRM-PREMIUM", ["menu", "press:1"])
        self.assertEqual(self.files(theirs)[0], "premium_priority.mp3")
        for service in (a, b, c):
            self.assertFalse(service.shared.health.up)
            body = service.metrics.render().decode()
            self.assertIn("ivr_shared_up 0.0", body)
            self.assertIn("ivr_shared_outages_total 1.0", body)
        self.redis.restart()
        for service in (a, b, c):
            yield service.shared.health.when_up()
        # Shared again: a profile fetched by b is a shared hit on c.
        yield b.lookup.lookup("CRM-PLAIN", 5.0)
        sent = self.platform.stats.profile_requests
        self.assertEqual((yield c.lookup.lookup("CRM-PLAIN", 5.0)).outcome, "hit")
        self.assertEqual(self.platform.stats.profile_requests, sent)
        self.assertIn("ivr_shared_up 1.0", c.metrics.render().decode())

    @inlineCallbacks
    def test_redis_paused_mid_run_then_resumed(self) -> Any:
        """Redis paused (SIGSTOP): calls still get menus within their budget; resumed: shared again."""
        a, b = yield self.three_of(2)
        self.redis.pause()
        try:
            results = yield gatherResults([
                self.call(service, f"paused-{n}", "CRM-TICKETS", ["menu", "press:2"])
                for n, service in enumerate((a, b, a, b))
            ])
        finally:
            self.redis.resume()
        for theirs, ours in results:
            self.assertTrue(theirs.plays, "a caller got no menu")
        for service in (a, b):
            yield service.shared.health.when_up()
        self.assertTrue(a.shared.health.fallbacks)
