"""
The token source and both profile clients against the project's emulator,
in memory (``StubTreq`` on the emulator's resource, one ``Clock`` for both
sides): External Contacts lookups, and the emulator's fault forms as the
clients see them.
"""

from __future__ import annotations

from typing import Any

from treq.testing import StubTreq
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from ivrproto.clients.limits import RetryBudget
from ivrproto.emulator import Platform
from ivrproto.errors import ProfileError, TokenError
from ivrproto.clients.oauth import TokenSource
from ivrproto.clients.profiles import BUDGET_SPENT, PAST_DEADLINE, Profile
from ivrproto.clients.sources import ExternalContactsClient, ProfileClient

BASE = "http://emulator.test"
CLIENT = ("ivrproto-local", "local-secret")
PROFILES = {
    "+15550100": {"membership_level": "premium", "open_tickets": 2},
    "CRM/EU 42": {"membership_level": "standard", "open_tickets": 0},
}
T0 = 1_700_000_000.0


class EmulatorClientsTests(SynchronousTestCase):
    """
    The clients and the emulator agree on the External Contacts lookup.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(T0)
        self.platform = Platform(self.clock, profiles=PROFILES)
        self.stub = StubTreq(self.platform.resource())
        self.addCleanup(self.assert_no_timers)

    def assert_no_timers(self) -> None:
        self.stub.flush()
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def tokens(self, secret: str = CLIENT[1], **kwargs: Any) -> TokenSource:
        kwargs.setdefault("random", lambda: 0.5)
        return TokenSource(self.clock, self.stub, BASE + "/oauth/token", CLIENT[0], secret, **kwargs)

    def contacts(self, **kwargs: Any) -> ExternalContactsClient:
        kwargs.setdefault("random", lambda: 0.5)
        tokens = kwargs.pop("tokens", None) or self.tokens()
        return ExternalContactsClient(self.clock, self.stub, BASE, tokens, **kwargs)

    def settle(self, seconds: float = 0.0, steps: int = 1) -> None:
        for _ in range(steps):
            self.stub.flush()
            self.clock.advance(seconds)
        self.stub.flush()

    def test_found_and_not_found(self) -> None:
        """A known value gives its customFields as attributes; an unknown one None."""
        client = self.contacts(lookup_type="Phone")
        d = client.fetch("+15550100", T0 + 2)
        self.settle()
        profile = self.successResultOf(d)
        assert profile is not None
        self.assertIsInstance(profile, Profile)
        self.assertEqual(dict(profile.attributes), PROFILES["+15550100"])
        self.assertEqual(profile.external_id, "+15550100")
        self.assertIsNotNone(profile.date_modified)
        d = client.fetch("+15559999")
        self.settle()
        self.assertIsNone(self.successResultOf(d))
        self.assertEqual(self.platform.stats.contact_requests, 2)

    def test_same_attributes_both_ways(self) -> None:
        """Profile API and External Contacts give the same attributes for the same id."""
        tokens = self.tokens()
        profiles = ProfileClient(self.clock, self.stub, BASE, tokens)
        contacts = self.contacts(tokens=tokens, lookup_type="ExternalId")
        a, b = profiles.fetch("CRM/EU 42"), contacts.fetch("CRM/EU 42")
        self.settle()
        first, second = self.successResultOf(a), self.successResultOf(b)
        assert first is not None and second is not None
        self.assertEqual(first.attributes, second.attributes)
        self.assertEqual(self.platform.stats.tokens_issued, 1)

    def test_revoked_token_replaced(self) -> None:
        """A revoked token is a 401; the client gets a new one and retries once."""
        client = self.contacts()
        d = client.fetch("+15550100")
        self.settle()
        self.successResultOf(d)
        self.platform.revoke_tokens()
        d = client.fetch("+15550100")
        self.settle()
        self.assertIsNotNone(self.successResultOf(d))
        self.assertEqual(self.platform.stats.tokens_issued, 2)

    def test_missing_scope(self) -> None:
        """A token without profile:read is a 403, not retried."""
        self.platform = Platform(
            self.clock, profiles=PROFILES, client_scopes={CLIENT[0]: ["callcontrol:inbound"]}
        )
        self.stub = StubTreq(self.platform.resource())
        client = self.contacts(tokens=self.tokens(scope="callcontrol:inbound"))
        d = client.fetch("+15550100")
        self.settle()
        self.assertEqual(self.failureResultOf(d, ProfileError).value.status, 403)
        self.assertEqual(self.platform.stats.contact_requests, 1)

    def test_retry_after_http_date(self) -> None:
        """An HTTP-date Retry-After from the emulator is waited for."""
        self.platform.faults.add("contacts", 429, retry_after=1, retry_after_date=True)
        client = self.contacts()
        d = client.fetch("+15550100")
        self.settle()
        self.assertNoResult(d)
        self.settle(1.05)
        self.assertIsNotNone(self.successResultOf(d))
        self.assertEqual(self.platform.stats.contact_requests, 2)

    def test_slow_answer_past_deadline(self) -> None:
        """A slow answer times out; no retry is made past the deadline."""
        self.platform.faults.add("contacts", delay=5.0)
        client = self.contacts(timeout=2.0)
        d = client.fetch("+15550100", T0 + 1.0)
        self.settle(1.0)
        self.assertNoResult(d)
        self.settle(1.0)
        error = self.failureResultOf(d, ProfileError).value
        self.assertEqual(error.reason, PAST_DEADLINE)
        self.settle(5.0)

    def test_late_answer_after_deadline(self) -> None:
        """A slow answer that comes after the deadline, within the timeout, is given."""
        self.platform.faults.add("contacts", delay=1.5)
        client = self.contacts(timeout=2.0)
        d = client.fetch("+15550100", T0 + 1.0)
        self.settle(1.5)
        self.assertIsNotNone(self.successResultOf(d))

    def test_outage_within_budget(self) -> None:
        """With every lookup failing, the shared budget caps the retries."""
        self.platform.faults.set_failure_rate("contacts", 1.0, 503, seed=7)
        budget = RetryBudget(self.clock, ratio=0.2, min_per_second=0.0)
        client = self.contacts(retry_budget=budget, max_attempts=3)
        lookups = [client.fetch(f"+1555{i:04d}") for i in range(50)]
        self.settle(0.1, steps=5)
        reasons = {self.failureResultOf(d, ProfileError).value.reason for d in lookups}
        self.assertIn(BUDGET_SPENT, reasons)
        self.assertEqual(self.platform.stats.contact_requests, 50 + 10)

    def test_failure_rate(self) -> None:
        """A 10 % failure rate with retries leaves nearly every lookup answered."""
        self.platform.faults.set_failure_rate("contacts", 0.1, 503, seed=3)
        client = self.contacts(max_attempts=3)
        lookups = [client.fetch("+15550100") for _ in range(100)]
        self.settle(0.1, steps=4)
        found = [d for d in lookups if isinstance(self.successResultOf(d), Profile)]
        self.assertEqual(len(found), 100)
        self.assertGreater(self.platform.faults.injected["contacts"], 0)

    def test_token_rate_limit_then_token(self) -> None:
        """The emulator's 400 rate-limit answer is retried by the token source."""
        self.platform.faults.add("token", 400, retry_after=1)
        tokens = self.tokens()
        d = tokens.get_token()
        self.settle()
        self.assertNoResult(d)
        self.settle(1.05)
        self.assertIsInstance(self.successResultOf(d), str)
        self.assertEqual(self.platform.stats.token_requests, 2)

    def test_wrong_secret_not_hammered(self) -> None:
        """With a wrong secret, many lookups make one token request within the cool-down."""
        client = self.contacts(tokens=self.tokens(secret="wrong"))
        lookups = [client.fetch("+15550100") for _ in range(5)]
        self.settle()
        lookups += [client.fetch("+15550100") for _ in range(5)]
        self.settle()
        for d in lookups:
            self.assertIn("invalid_client", self.failureResultOf(d, ProfileError).value.reason)
        self.assertEqual(self.platform.stats.token_requests, 1)
        self.clock.advance(5)
        tokens = client._tokens
        d = tokens.get_token()
        self.settle()
        self.failureResultOf(d, TokenError)
        self.assertEqual(self.platform.stats.token_requests, 2)
