"""
Signed intake requests: accepted, expired, tampered, replayed, missing; and a
service that refuses to listen beyond loopback without a secret.
"""

from __future__ import annotations

import json
from typing import Any, Optional

import attrs
import treq
from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import SynchronousTestCase

from ivrproto._net import endpoint_is_loopback
from ivrproto.config import load_config
from ivrproto.errors import ConfigError
from ivrproto.service import IVRService
from ivrproto.intake.signing import SignatureCheck, sign

from .test_integration import SEED, ServiceTestCase

SECRET = b"intake-shared-secret"


class SignatureCheckTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.check = SignatureCheck(SECRET, tolerance=300)
        self.body = b'{"callControlId": "c-1", "externalId": "x"}'

    def problem(self, timestamp: Any, signature: Any, body: Optional[bytes] = None, now: float = 1000) -> Any:
        return self.check.problem(timestamp, signature, self.body if body is None else body, now)

    def test_accepted(self) -> None:
        """A fresh, correct signature passes."""
        signature = sign(SECRET, 1000, self.body).encode()
        self.assertIsNone(self.problem(b"1000", signature))

    def test_known_vector(self) -> None:
        """The scheme is HMAC-SHA256 over timestamp, '.', body, as documented."""
        self.assertEqual(
            sign(b"k", 1, b"{}"),
            "v1=" + __import__("hmac").new(b"k", b"1.{}", "sha256").hexdigest(),
        )

    def test_expired(self) -> None:
        """A timestamp outside the window is refused, either way."""
        signature = sign(SECRET, 600, self.body).encode()
        self.assertIn("tolerance", self.problem(b"600", signature, now=1000))
        signature = sign(SECRET, 1400, self.body).encode()
        self.assertIn("tolerance", self.problem(b"1400", signature, now=1000))

    def test_tampered(self) -> None:
        """A changed body, timestamp or signature is refused."""
        signature = sign(SECRET, 1000, self.body).encode()
        self.assertEqual(self.problem(b"1000", signature, body=self.body + b" "), "signature does not match")
        self.assertEqual(self.problem(b"999", signature), "signature does not match")
        self.assertEqual(self.problem(b"1000", signature[:-1] + b"0"), "signature does not match")
        other = sign(b"another secret", 1000, self.body).encode()
        self.assertEqual(self.problem(b"1000", other), "signature does not match")

    def test_missing(self) -> None:
        """Missing headers or a malformed timestamp are refused."""
        self.assertIn("missing", self.problem(None, b"v1=00"))
        self.assertIn("missing", self.problem(b"1000", None))
        self.assertIn("whole seconds", self.problem(b"soon", b"v1=00"))

    def test_hostile_timestamps(self) -> None:
        """Huge, signed, spaced, underscored, non-ASCII or non-digit timestamps are refused, never raised."""
        good = sign(SECRET, 1000, self.body).encode()
        for timestamp in (
            b"9" * 4000,
            b"1" * 13,
            b"-1000",
            b"+1000",
            b" 1000",
            b"1_000",
            b"1000.0",
            b"1e3",
            "\u0661\u0660\u0660\u0660".encode("utf-8"),
            b"\xff\xfe",
            b"",
        ):
            self.assertEqual(self.problem(timestamp, good), "X-IVR-Timestamp is not whole seconds")

    def test_timestamp_alone(self) -> None:
        """The timestamp can be judged before the body arrives."""
        self.assertIsNone(self.check.timestamp_problem(b"1000", 1000))
        self.assertIn("tolerance", self.check.timestamp_problem(b"1", 1000))
        self.assertIn("missing", self.check.timestamp_problem(None, 1000))
        self.assertIn("whole seconds", self.check.timestamp_problem(b"9" * 4000, 1000))

    def test_replay_window(self) -> None:
        """A call id is new once within the window, and again after it."""
        self.assertTrue(self.check.first_time("c-1", 1000))
        self.assertFalse(self.check.first_time("c-1", 1001))
        self.assertTrue(self.check.first_time("c-2", 1001))
        self.assertTrue(self.check.first_time("c-1", 1000 + 601))

    def test_no_secret_in_repr(self) -> None:
        """The secret is not in the check's repr."""
        self.assertNotIn("intake-shared-secret", repr(self.check))


class LoopbackTests(SynchronousTestCase):
    def test_endpoint_is_loopback(self) -> None:
        """Only loopback interfaces and UNIX sockets count as loopback."""
        self.assertTrue(endpoint_is_loopback("tcp:8080:interface=127.0.0.1"))
        self.assertTrue(endpoint_is_loopback("tcp6:8080:interface=\\:\\:1"))
        self.assertTrue(endpoint_is_loopback("unix:/run/ivr.sock"))
        self.assertFalse(endpoint_is_loopback("tcp:8080"))
        self.assertFalse(endpoint_is_loopback("tcp:8080:interface=0.0.0.0"))
        self.assertFalse(endpoint_is_loopback("tcp:8080:interface=10.1.2.3"))

    def test_refuses_public_intake_without_secret(self) -> None:
        """The service will not listen beyond loopback with no secret."""
        config = load_config(SEED, {"CLIENT_ID": "a", "CLIENT_SECRET": "b"})
        e = self.assertRaises(ConfigError, IVRService, reactor, config, "tcp:8080")
        self.assertEqual(e.key, "intake.listen")
        self.assertIn("IVR_INTAKE_SECRET", str(e))

    def test_public_intake_with_secret(self) -> None:
        """With a secret, listening beyond loopback is allowed."""
        config = load_config(
            SEED, {"CLIENT_ID": "a", "CLIENT_SECRET": "b", "IVR_INTAKE_SECRET": "s"}
        )
        service = IVRService(reactor, config, "tcp:8080")
        self.assertEqual(service.intake_description, "tcp:8080")


class SignedIntakeTests(ServiceTestCase):
    @inlineCallbacks
    def setUp(self) -> Any:
        yield super().setUp()
        config = attrs.evolve(
            self.service.config,
            intake=attrs.evolve(self.service.config.intake, secret=SECRET.decode()),
        )
        service = IVRService(reactor, config, intake="tcp:0:interface=127.0.0.1", admin="tcp:0:interface=127.0.0.1")
        yield service.start()
        self.addCleanup(service.stop)
        self.service = service

    def signed(self, body: dict[str, Any], timestamp: Optional[int] = None, secret: bytes = SECRET) -> Any:
        raw = json.dumps(body).encode()
        when = int(reactor.seconds()) if timestamp is None else timestamp
        return treq.post(
            self.service.intake_url + "/v1/calls",
            data=raw,
            headers={
                "Content-Type": "application/json",
                "X-IVR-Timestamp": str(when),
                "X-IVR-Signature": sign(secret, when, raw),
            },
            timeout=5,
            persistent=False,
        )

    @inlineCallbacks
    def test_signed_call_flows(self) -> Any:
        """A signed request starts a call, which is handled end to end."""
        record = self.platform.expect_call("call-s", "CRM-PREMIUM", ["menu", "press:1"])
        response = yield self.signed({"callControlId": "call-s", "externalId": "CRM-PREMIUM"})
        self.assertEqual(response.code, 202)
        yield response.content()
        yield record.when_finished()
        self.assertEqual(record.transfer_target, "ext:transfer_premium")

    @inlineCallbacks
    def test_refusals(self) -> Any:
        """Unsigned, wrongly signed and expired requests get 401 and start nothing."""
        response = yield self.post({"callControlId": "c-1", "externalId": "x"})
        self.assertEqual(response.code, 401)
        yield response.content()
        response = yield self.signed({"callControlId": "c-1", "externalId": "x"}, secret=b"nope")
        self.assertEqual(response.code, 401)
        yield response.content()
        old = int(reactor.seconds()) - 3600
        response = yield self.signed({"callControlId": "c-1", "externalId": "x"}, timestamp=old)
        self.assertEqual(response.code, 401)
        body = yield response.json()
        self.assertIn("tolerance", body["error"])
        self.assertEqual(self.service.registry.active, {})
        self.assertEqual(self.service.registry.ended, {})

    @inlineCallbacks
    def test_replay_starts_nothing(self) -> Any:
        """The same signed request sent again after the call ended starts nothing."""
        record = self.platform.expect_call("call-r", "CRM-PLAIN", ["menu", "press:0"])
        body = {"callControlId": "call-r", "externalId": "CRM-PLAIN"}
        when = int(reactor.seconds())
        response = yield self.signed(body, timestamp=when)
        yield response.content()
        yield record.when_finished()
        yield self.service.registry.when_ended("call-r")
        response = yield self.signed(body, timestamp=when)
        self.assertEqual(response.code, 409)
        yield response.content()
        self.assertEqual(self.service.registry.active, {})
