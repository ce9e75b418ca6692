"""
The real service handling real calls from the emulator, over loopback:
every item of the contract's seed flow, end to end.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import attrs
import treq
from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase

from ivrproto.config import load_config
from ivrproto.emulator import Platform
from ivrproto.service import IVRService

ROOT = Path(__file__).resolve().parent.parent
SEED = str(ROOT / "examples" / "seed.toml")
AUDIO = "https://example.com/ivr/audio/"

PROFILES = {
    "CRM-PREMIUM-TICKETS": {"membership_level": "premium", "open_tickets": 2},
    "CRM-PREMIUM": {"membership_level": "premium", "open_tickets": 0},
    "CRM-TICKETS": {"membership_level": "standard", "open_tickets": 3},
    "CRM-PLAIN": {"membership_level": "standard", "open_tickets": 0},
    "CRM-ODD": {"membership_level": "Premium", "open_tickets": "3", "tags": [1, None]},
    "CRM/EU 42?#%é": {"membership_level": "premium", "open_tickets": 1},
}

DEFAULT_MENU = ["general_welcome.mp3", "general_support.mp3", "general_operator.mp3"]


class ServiceTestCase(TestCase):
    """
    Starts an emulator and the service pointed at it; stops both.
    """

    timing = {
        "handshake_timeout": 3.0,
        "profile_budget": 0.5,
        "no_input_timeout": 0.2,
        "confirm_delay": 0.05,
    }
    platform_options: dict[str, Any] = {}

    @inlineCallbacks
    def setUp(self) -> Any:
        self.platform = Platform(
            reactor,
            clients={"client": "s3cret"},
            profiles=PROFILES,
            **self.platform_options,
        )
        yield self.platform.listen("tcp:0:interface=127.0.0.1")
        self.addCleanup(self.platform.stop)
        self.service = yield self.start_service()

    @inlineCallbacks
    def start_service(
        self, secret: str = "s3cret", scope: Optional[str] = None, **profiles: Any
    ) -> Any:
        config = load_config(
            SEED,
            {
                "GENESYS_BASE_URL": self.platform.base_url,
                "CLIENT_ID": "client",
                "CLIENT_SECRET": secret,
            },
        )
        config = attrs.evolve(config, timing=attrs.evolve(config.timing, **self.timing))
        # A busy test machine can stall the reactor: never shed calls here
        # (tests/test_overload.py tests shedding).
        config = attrs.evolve(config, intake=attrs.evolve(config.intake, max_loop_lag=30.0))
        if scope is not None:
            config = attrs.evolve(config, platform=attrs.evolve(config.platform, scope=scope))
        if profiles:
            config = attrs.evolve(config, profiles=attrs.evolve(config.profiles, **profiles))
        service = IVRService(reactor, config, intake="tcp:0:interface=127.0.0.1", admin="tcp:0:interface=127.0.0.1")
        yield service.start()
        self.addCleanup(service.stop)
        return service

    def post(self, body: Any, service: Optional[IVRService] = None, raw: Optional[bytes] = None) -> Any:
        service = service or self.service
        data = raw if raw is not None else json.dumps(body).encode()
        return treq.post(
            service.intake_url + "/v1/calls",
            data=data,
            headers={"Content-Type": "application/json"},
            timeout=5,
            persistent=False,
        )

    @inlineCallbacks
    def call(
        self,
        external_id: str,
        script: list[str],
        handshake: str = "ok",
        call_id: str = "call-1",
    ) -> Any:
        """
        Place one call; return (platform record, service record).
        """
        record = self.platform.expect_call(call_id, external_id, script, handshake=handshake)
        response = yield self.post({"callControlId": call_id, "externalId": external_id})
        self.assertEqual(response.code, 202)
        yield response.content()
        ours = yield self.service.registry.when_ended(call_id)
        theirs = yield record.when_finished()
        self.assertEqual(theirs.violations, [])
        return theirs, ours

    def menu_plays(self, record: Any) -> list[dict[str, Any]]:
        return [c for c in record.commands if c.get("action") == "play"]

    def files(self, record: Any) -> list[str]:
        return [url[len(AUDIO):] for url in record.plays]


class SeedFlowTests(ServiceTestCase):
    @inlineCallbacks
    def test_premium_with_open_tickets(self) -> Any:
        """Premium with open tickets hears 1, 2, 0 and key 1 goes to transfer_premium."""
        theirs, ours = yield self.call("CRM-PREMIUM-TICKETS", ["menu", "press:1"])
        self.assertEqual(
            self.files(theirs),
            ["premium_priority.mp3", "ticket_status.mp3", "general_operator.mp3",
             "selection_confirmed.mp3"],
        )
        plays = self.menu_plays(theirs)
        self.assertEqual(
            plays[0],
            {
                "callControlId": "call-1",
                "action": "play",
                "audio": AUDIO + "premium_priority.mp3",
                "dtmf": {"enabled": True, "keys": ["1", "2", "0"]},
            },
        )
        self.assertEqual(plays[3]["dtmf"], {"enabled": False})
        self.assertEqual(
            theirs.commands[-1],
            {"callControlId": "call-1", "action": "transfer",
             "target": "ext:transfer_premium", "type": "number"},
        )
        self.assertEqual((theirs.outcome, theirs.transfer_target),
                         ("transferred", "ext:transfer_premium"))
        self.assertEqual(theirs.close_code, 1000)
        self.assertEqual(ours.outcome.target, "ext:transfer_premium")

    @inlineCallbacks
    def test_premium_only(self) -> Any:
        """Premium without tickets hears 1, 0."""
        theirs, ours = yield self.call("CRM-PREMIUM", ["menu", "press:1"])
        self.assertEqual(self.files(theirs)[:2], ["premium_priority.mp3", "general_operator.mp3"])
        self.assertEqual(self.menu_plays(theirs)[0]["dtmf"]["keys"], ["1", "0"])
        self.assertEqual(theirs.transfer_target, "ext:transfer_premium")

    @inlineCallbacks
    def test_tickets_only(self) -> Any:
        """Open tickets only: 2, 0; key 2 goes to play_ticket_info."""
        theirs, ours = yield self.call("CRM-TICKETS", ["menu", "press:2"])
        self.assertEqual(self.files(theirs)[:2], ["ticket_status.mp3", "general_operator.mp3"])
        self.assertEqual(theirs.transfer_target, "ext:play_ticket_info")

    @inlineCallbacks
    def test_profile_with_neither(self) -> Any:
        """A profile with neither attribute hears only 0."""
        theirs, ours = yield self.call("CRM-PLAIN", ["menu", "press:0"])
        self.assertEqual(self.files(theirs), ["general_operator.mp3", "selection_confirmed.mp3"])
        self.assertEqual(self.menu_plays(theirs)[0]["dtmf"]["keys"], ["0"])
        self.assertEqual(theirs.transfer_target, "ext:transfer_operator")

    @inlineCallbacks
    def test_wrongly_typed_attributes(self) -> Any:
        """Attributes of the wrong type fail their rules: only 0 is offered."""
        theirs, ours = yield self.call("CRM-ODD", ["menu", "press:2", "play", "press:0"])
        self.assertEqual(self.files(theirs)[0], "general_operator.mp3")
        self.assertIn("invalid_selection.mp3", self.files(theirs))
        self.assertEqual(theirs.transfer_target, "ext:transfer_operator")

    @inlineCallbacks
    def test_no_profile(self) -> Any:
        """No profile (404) gives the default menu; key 1 goes to transfer_sales."""
        theirs, ours = yield self.call("CRM-UNKNOWN", ["menu", "press:1"])
        self.assertEqual(self.files(theirs)[:3], DEFAULT_MENU)
        self.assertEqual(self.menu_plays(theirs)[0]["dtmf"]["keys"], ["1", "2", "0"])
        self.assertEqual(theirs.transfer_target, "ext:transfer_sales")
        self.assertEqual(ours.menu, "default")

    @inlineCallbacks
    def test_encoded_external_id(self) -> Any:
        """An external id with / ? # % space and non-ASCII is found as one path segment."""
        theirs, ours = yield self.call("CRM/EU 42?#%é", ["menu", "press:2"])
        self.assertEqual(self.files(theirs)[:3],
                         ["premium_priority.mp3", "ticket_status.mp3", "general_operator.mp3"])
        self.assertEqual(theirs.transfer_target, "ext:play_ticket_info")

    @inlineCallbacks
    def test_invalid_then_valid(self) -> Any:
        """An invalid key plays invalid_selection with DTMF on, then a valid key transfers."""
        theirs, ours = yield self.call("CRM-TICKETS", ["menu", "press:7", "play", "press:2"])
        invalid = [c for c in self.menu_plays(theirs) if c["audio"].endswith("invalid_selection.mp3")]
        self.assertEqual(len(invalid), 1)
        self.assertEqual(invalid[0]["dtmf"], {"enabled": True, "keys": ["2", "0"]})
        self.assertEqual(theirs.transfer_target, "ext:play_ticket_info")
        self.assertEqual(list(ours.keys), ["7", "2"])

    @inlineCallbacks
    def test_hangup_mid_menu(self) -> Any:
        """The caller hangs up while the menu plays: no transfer, the session ends."""
        theirs, ours = yield self.call("CRM-PREMIUM", ["menu", "hangup"])
        self.assertEqual(theirs.outcome, "hungup-by-caller")
        self.assertIsNone(theirs.transfer_target)
        self.assertEqual(ours.outcome.kind, "hungup")

    @inlineCallbacks
    def test_handshake_refused(self) -> Any:
        """The platform answers the connect frame with an error: the call fails cleanly."""
        theirs, ours = yield self.call("CRM-PLAIN", [], handshake="error")
        self.assertEqual(theirs.outcome, "refused")
        self.assertEqual(theirs.commands, [])
        self.assertEqual(ours.outcome.kind, "failed")
        self.assertIn("refused", ours.outcome.reason)

    @inlineCallbacks
    def test_unknown_call(self) -> Any:
        """A call the platform does not know is refused, and the service records why."""
        response = yield self.post({"callControlId": "call-nobody", "externalId": "CRM-PLAIN"})
        self.assertEqual(response.code, 202)
        ours = yield self.service.registry.when_ended("call-nobody")
        self.assertEqual(ours.outcome.kind, "failed")

    @inlineCallbacks
    def test_platform_error_1011(self) -> Any:
        """The platform closes with 1011 mid-call: the session ends as failed."""
        theirs, ours = yield self.call("CRM-PREMIUM", ["menu", "drop"])
        self.assertEqual(theirs.close_code, 1011)
        self.assertEqual((ours.outcome.kind, ours.outcome.reason),
                         ("failed", "platform internal error (1011)"))

    @inlineCallbacks
    def test_silent_caller(self) -> Any:
        """No key: the menu is sent three times in all, then the operator."""
        theirs, ours = yield self.call("CRM-UNKNOWN", [])
        self.assertEqual(self.files(theirs), DEFAULT_MENU * 3)
        self.assertEqual(theirs.transfer_target, "ext:transfer_operator")
        self.assertEqual(ours.outcome.reason, "no-input")

    @inlineCallbacks
    def test_noise_is_ignored(self) -> Any:
        """media, unknown events, non-JSON and binary frames never end the session."""
        theirs, ours = yield self.call(
            "CRM-PREMIUM", ["menu", "media", "unknown", "garbage", "binary", "press:1"]
        )
        self.assertEqual(theirs.transfer_target, "ext:transfer_premium")

    @inlineCallbacks
    def test_platform_error_event_goes_to_operator(self) -> Any:
        """An error event while in the menu hands the caller to the operator."""
        theirs, ours = yield self.call("CRM-PREMIUM", ["menu", "error:cannot play"])
        self.assertEqual(theirs.transfer_target, "ext:transfer_operator")
        self.assertEqual(ours.outcome.reason, "platform-error")

    @inlineCallbacks
    def test_one_token_for_many_calls(self) -> Any:
        """Several calls share one cached token."""
        for i in range(3):
            yield self.call("CRM-PLAIN", ["menu", "press:0"], call_id=f"call-{i}")
        self.assertEqual(self.platform.stats.tokens_issued, 1)


class DependencyFailureTests(ServiceTestCase):
    @inlineCallbacks
    def test_profile_api_down(self) -> Any:
        """A failing profile API gives the default menu; the caller is never silent."""
        self.platform.faults.add("profile", status=503, count=10)
        theirs, ours = yield self.call("CRM-PREMIUM", ["menu", "press:0"])
        self.assertEqual(self.files(theirs)[:3], DEFAULT_MENU)
        self.assertEqual(theirs.transfer_target, "ext:transfer_operator")

    @inlineCallbacks
    def test_profile_api_slow(self) -> Any:
        """A lookup slower than the budget gives the default menu."""
        self.platform.faults.add("profile", status=None, delay=1.0)
        theirs, ours = yield self.call("CRM-PREMIUM", ["menu", "press:1"])
        self.assertEqual(self.files(theirs)[:3], DEFAULT_MENU)
        self.assertEqual(theirs.transfer_target, "ext:transfer_sales")

    @inlineCallbacks
    def test_revoked_token_is_replaced(self) -> Any:
        """A 401 on the upgrade and on the profile gets a fresh token and goes on."""
        yield self.call("CRM-PLAIN", ["menu", "press:0"], call_id="call-a")
        self.platform.revoke_tokens()
        theirs, ours = yield self.call("CRM-PREMIUM", ["menu", "press:1"], call_id="call-b")
        self.assertEqual(theirs.transfer_target, "ext:transfer_premium")
        self.assertEqual(self.platform.stats.tokens_issued, 2)

    @inlineCallbacks
    def test_bad_credentials(self) -> Any:
        """Wrong client credentials: the call fails with a clear reason, no secret in it."""
        service = yield self.start_service(secret="wrong-secret")
        record = self.platform.expect_call("call-x", "CRM-PLAIN", [])
        response = yield self.post({"callControlId": "call-x", "externalId": "CRM-PLAIN"}, service)
        self.assertEqual(response.code, 202)
        ours = yield service.registry.when_ended("call-x")
        self.assertEqual(ours.outcome.kind, "failed")
        self.assertIn("invalid_client", ours.outcome.reason)
        self.assertNotIn("wrong-secret", ours.outcome.reason)
        self.assertFalse(record.connected)


class ScopeTests(ServiceTestCase):
    @inlineCallbacks
    def test_missing_call_control_scope(self) -> Any:
        """A token without callcontrol scopes is refused with 403 and not retried."""
        service = yield self.start_service(scope="profile:read")
        record = self.platform.expect_call("call-1", "CRM-PLAIN", [])
        yield self.post({"callControlId": "call-1", "externalId": "CRM-PLAIN"}, service)
        ours = yield service.registry.when_ended("call-1")
        self.assertEqual(ours.outcome.kind, "failed")
        self.assertIn("403", ours.outcome.reason)
        self.assertFalse(record.connected)
        self.assertEqual(self.platform.stats.ws_refused, 1)


class IntakeTests(ServiceTestCase):
    @inlineCallbacks
    def expect_status(self, code: int, body: Any = None, raw: Optional[bytes] = None) -> Any:
        response = yield self.post(body, raw=raw)
        content = yield response.json()
        self.assertEqual(response.code, code, content)
        return content

    @inlineCallbacks
    def test_malformed_bodies(self) -> Any:
        """Bad JSON, wrong shapes and wrong field types get 400 naming the field."""
        yield self.expect_status(400, raw=b"{not json")
        yield self.expect_status(400, raw=b"[1, 2]")
        content = yield self.expect_status(400, {"externalId": "x"})
        self.assertEqual(content["field"], "callControlId")
        content = yield self.expect_status(400, {"callControlId": 5, "externalId": "x"})
        self.assertEqual(content["field"], "callControlId")
        content = yield self.expect_status(400, {"callControlId": "c-1", "externalId": ["x"]})
        self.assertEqual(content["field"], "externalId")
        yield self.expect_status(400, {"callControlId": "", "externalId": "x"})
        yield self.expect_status(400, {"callControlId": "c\x00-1", "externalId": "x"})
        yield self.expect_status(400, {"callControlId": "c" * 257, "externalId": "x"})
        yield self.expect_status(400, {"callControlId": "c-1", "externalId": "a\nb"})
        self.assertEqual(self.service.registry.active, {})

    @inlineCallbacks
    def test_body_too_large(self) -> Any:
        """A body over the cap gets 413 and starts nothing."""
        big = json.dumps({"callControlId": "c-1", "externalId": "x" * 100_000}).encode()
        yield self.expect_status(413, raw=big)
        self.assertEqual(self.service.registry.active, {})

    @inlineCallbacks
    def test_duplicate_call(self) -> Any:
        """A second request for an active call gets 409."""
        record = self.platform.expect_call("call-dup", "CRM-PLAIN", [])
        yield self.expect_status(202, {"callControlId": "call-dup", "externalId": "CRM-PLAIN"})
        yield self.expect_status(409, {"callControlId": "call-dup", "externalId": "CRM-PLAIN"})
        yield self.service.registry.when_ended("call-dup")
        yield record.when_finished()

    @inlineCallbacks
    def test_call_state_and_outcome(self) -> Any:
        """GET /v1/calls/<id> shows an ended call's outcome; unknown ids get 404."""
        yield self.call("CRM-PREMIUM", ["menu", "press:1"], call_id="call-get")
        response = yield treq.get(self.service.admin_url + "/v1/calls/call-get", timeout=5, persistent=False)
        view = yield response.json()
        self.assertEqual(view["state"], "ended")
        self.assertEqual(view["outcome"]["kind"], "transferred")
        self.assertEqual(view["outcome"]["target"], "ext:transfer_premium")
        response = yield treq.get(self.service.admin_url + "/v1/calls/nope", timeout=5, persistent=False)
        self.assertEqual(response.code, 404)
        yield response.content()

    @inlineCallbacks
    def test_health_and_ready(self) -> Any:
        """/healthz answers; /readyz is ready once a token can be had."""
        response = yield treq.get(self.service.intake_url + "/healthz", timeout=5, persistent=False)
        self.assertEqual(response.code, 200)
        yield response.content()
        # /readyz answers from the last token fetch, without waiting for one.
        yield self.service.tokens.get_token()
        response = yield treq.get(self.service.intake_url + "/readyz", timeout=5, persistent=False)
        self.assertEqual(response.code, 200)
        yield response.content()

    @inlineCallbacks
    def test_not_ready_without_token(self) -> Any:
        """/readyz says not ready when no token can be had."""
        self.platform.faults.add("token", status=401, count=5, body={"error": "invalid_client"})
        response = yield treq.get(self.service.intake_url + "/readyz", timeout=5, persistent=False)
        self.assertEqual(response.code, 503)
        body = yield response.content()
        self.assertNotIn(b"s3cret", body)


class HostFromConfigTests(ServiceTestCase):
    @inlineCallbacks
    def test_intake_cannot_redirect_the_connection(self) -> Any:
        """Extra fields naming another host are ignored: the token goes only to the configured platform."""
        record = self.platform.expect_call("call-h", "CRM-PREMIUM", ["menu", "press:1"])
        response = yield self.post(
            {
                "callControlId": "call-h",
                "externalId": "CRM-PREMIUM",
                "websocketUrl": "ws://127.0.0.2:9/api/v2/callcontrol/websocket",
                "api_url": "http://127.0.0.2:9",
                "target": "ext:attacker",
            }
        )
        self.assertEqual(response.code, 202)
        yield response.content()
        yield record.when_finished()
        self.assertEqual(record.transfer_target, "ext:transfer_premium")
        self.assertEqual(self.platform.stats.ws_upgrades, 1)
