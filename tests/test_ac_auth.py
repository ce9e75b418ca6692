"""
Tests for ivrproto.audioconnector.auth: the upgrade's API key and signature.
"""

from __future__ import annotations

from typing import Dict, List

from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from ivrproto.audioconnector.auth import (
    Accepted,
    AuthRefused,
    AuthSettings,
    Authenticator,
    NonceMemory,
    credentials,
    parse_signature_input,
    sign_headers,
    verify_request,
)

# The example request of the protocol's documentation.
EXAMPLE_KEY = "SGVsbG8sIEkgYW0gdGhlIEFQSSBrZXkh"
EXAMPLE_SECRET = "TXlTdXBlclNlY3JldEtleVRlbGxOby0xITJAMyM0JDU="
EXAMPLE_TARGET = "/api/v1/voicebiometrics/ws"
EXAMPLE_INPUT = (
    'sig1=("@request-target" "@authority" "audiohook-organization-id" '
    '"audiohook-session-id" "audiohook-correlation-id" "x-api-key");'
    'keyid="SGVsbG8sIEkgYW0gdGhlIEFQSSBrZXkh";nonce="VGhpc0lzQVVuaXF1ZU5vbmNl";'
    'alg="hmac-sha256";created=1641013200;expires=3282026430'
)
EXAMPLE_HEADERS = {
    "host": "audiohook.example.com",
    "audiohook-organization-id": "d7934305-0972-4844-938e-9060eef73d05",
    "audiohook-correlation-id": "e160e428-53e2-487c-977d-96989bf5c99d",
    "audiohook-session-id": "30b0e395-84d3-4570-ac13-9a62d8f514c0",
    "x-api-key": EXAMPLE_KEY,
    "signature": "sig1=:NZBwyBHRRyRoeLqy1IzOa9VYBuI8TgMFt2GRDkDuJh4=:",
    "signature-input": EXAMPLE_INPUT,
}
EXAMPLE_CREATED = 1641013200

NOW = 1_800_000_000
KEY = "test-api-key"
SECRET = "c2VjcmV0LWJ5dGVzLWZvci10aGUtdGVzdHM="
NONCE = "bm9uY2Utb2YtdHdlbnR5LWZvdXI="


def signed(**overrides: object) -> Dict[str, str]:
    "A validly signed request at NOW, with some arguments changed."
    args: Dict[str, object] = dict(
        api_key=KEY,
        secret=SECRET,
        target="/ivr",
        authority="bot.example.com",
        organization_id="org-1",
        session_id="sess-1",
        correlation_id="corr-1",
        nonce=NONCE,
        created=NOW,
    )
    args.update(overrides)
    return sign_headers(**args)  # type: ignore[arg-type]


KEYS = credentials({KEY: SECRET, "unsigned-key": None})


class SignatureVectorTests(SynchronousTestCase):
    def test_documented_example_verifies(self) -> None:
        "The documented example request verifies with the documented secret."
        keys = credentials({EXAMPLE_KEY: EXAMPLE_SECRET})
        accepted = verify_request(keys, EXAMPLE_HEADERS, EXAMPLE_TARGET, EXAMPLE_CREATED + 2)
        self.assertEqual(
            accepted,
            Accepted(
                EXAMPLE_KEY,
                True,
                "d7934305-0972-4844-938e-9060eef73d05",
                "30b0e395-84d3-4570-ac13-9a62d8f514c0",
                "e160e428-53e2-487c-977d-96989bf5c99d",
            ),
        )

    def test_example_signed_by_us_matches(self) -> None:
        "sign_headers reproduces the documented example's MAC."
        headers = sign_headers(
            EXAMPLE_KEY,
            EXAMPLE_SECRET,
            EXAMPLE_TARGET,
            "audiohook.example.com",
            EXAMPLE_HEADERS["audiohook-organization-id"],
            EXAMPLE_HEADERS["audiohook-session-id"],
            EXAMPLE_HEADERS["audiohook-correlation-id"],
            "VGhpc0lzQVVuaXF1ZU5vbmNl",
            EXAMPLE_CREATED,
            3282026430,
        )
        self.assertEqual(headers["signature"], EXAMPLE_HEADERS["signature"])
        self.assertEqual(headers["signature-input"], EXAMPLE_INPUT)

    def test_example_with_other_target_fails(self) -> None:
        "The example's MAC does not cover another request target."
        keys = credentials({EXAMPLE_KEY: EXAMPLE_SECRET})
        with self.assertRaises(AuthRefused) as e:
            verify_request(keys, EXAMPLE_HEADERS, "/other", EXAMPLE_CREATED + 2)
        self.assertEqual(e.exception.reason, "bad signature")

    def test_parse_keeps_order_and_params(self) -> None:
        "Signature-Input is parsed into its components, in order, and parameters."
        sig = parse_signature_input(EXAMPLE_INPUT)
        self.assertEqual(sig.label, "sig1")
        self.assertEqual(sig.components[0], "@request-target")
        self.assertEqual(sig.params["created"], "1641013200")
        self.assertEqual(sig.params["alg"], "hmac-sha256")


class VerifyTests(SynchronousTestCase):
    def refused(self, headers: Dict[str, str], target: str = "/ivr", now: float = NOW) -> str:
        with self.assertRaises(AuthRefused) as e:
            verify_request(KEYS, headers, target, now)
        return e.exception.reason

    def test_signed_request_accepted(self) -> None:
        "A correctly signed request with a known key is accepted."
        accepted = verify_request(KEYS, signed(), "/ivr", NOW)
        self.assertTrue(accepted.signed)
        self.assertEqual(accepted.session_id, "sess-1")

    def test_unsigned_with_unsigned_key_accepted(self) -> None:
        "A key without a secret is accepted without a signature."
        accepted = verify_request(KEYS, {"x-api-key": "unsigned-key"}, "/ivr", NOW)
        self.assertFalse(accepted.signed)

    def test_missing_key(self) -> None:
        "A request without X-API-KEY is refused."
        headers = signed()
        del headers["x-api-key"]
        self.assertEqual(self.refused(headers), "no X-API-KEY header")

    def test_unknown_key(self) -> None:
        "A key that is not configured is refused, signed or not."
        self.assertEqual(self.refused(signed(api_key="other")), "unknown API key")
        self.assertEqual(self.refused({"x-api-key": "other"}), "unknown API key")

    def test_unsigned_when_secret_configured(self) -> None:
        "A key with a secret refuses an unsigned request."
        self.assertIn("has none", self.refused({"x-api-key": KEY}))

    def test_bad_signature(self) -> None:
        "A signature made with another secret is refused."
        headers = signed(secret="b3RoZXItc2VjcmV0LWJ5dGVz")
        self.assertEqual(self.refused(headers), "bad signature")

    def test_tampered_header(self) -> None:
        "Changing a covered header after signing breaks the signature."
        headers = signed()
        headers["audiohook-session-id"] = "sess-2"
        self.assertEqual(self.refused(headers), "bad signature")

    def test_future_created(self) -> None:
        "A created time more than the clock skew ahead is refused."
        self.assertEqual(self.refused(signed(created=NOW + 4)), "signature created in the future")
        verify_request(KEYS, signed(created=NOW + 3), "/ivr", NOW)

    def test_stale_created(self) -> None:
        "A signature older than max age minus skew is refused."
        self.assertEqual(self.refused(signed(created=NOW - 8)), "signature too old")
        verify_request(KEYS, signed(created=NOW - 7), "/ivr", NOW)

    def test_expired(self) -> None:
        "An expires time within the skew of now is refused."
        self.assertEqual(self.refused(signed(expires=NOW + 2)), "signature expired")

    def test_short_nonce(self) -> None:
        "A nonce under 22 characters is refused."
        self.assertEqual(self.refused(signed(nonce="x" * 21)), "nonce missing or too short")
        verify_request(KEYS, signed(nonce="x" * 22), "/ivr", NOW)

    def test_missing_component(self) -> None:
        "A signature that leaves out one of the six components is refused."
        headers = signed()
        headers["signature-input"] = headers["signature-input"].replace(' "x-api-key"', "")
        self.assertIn("missing ['x-api-key']", self.refused(headers))

    def test_extra_component(self) -> None:
        "A signature covering a seventh component is refused."
        headers = signed()
        headers["signature-input"] = headers["signature-input"].replace(
            '"x-api-key")', '"x-api-key" "user-agent")'
        )
        self.assertIn("extra ['user-agent']", self.refused(headers))

    def test_duplicate_component(self) -> None:
        "A component listed twice is refused."
        headers = signed()
        headers["signature-input"] = headers["signature-input"].replace(
            '"x-api-key")', '"x-api-key" "x-api-key")'
        )
        self.assertEqual(self.refused(headers), "a covered component is listed twice")

    def test_keyid_mismatch(self) -> None:
        "A keyid other than the X-API-KEY is refused."
        headers = signed()
        headers["signature-input"] = headers["signature-input"].replace(
            f'keyid="{KEY}"', 'keyid="someone-else"'
        )
        self.assertEqual(self.refused(headers), "keyid does not match X-API-KEY")

    def test_other_algorithm(self) -> None:
        "An algorithm other than hmac-sha256 is refused."
        headers = signed()
        headers["signature-input"] = headers["signature-input"].replace(
            "hmac-sha256", "rsa-pss-sha512"
        )
        self.assertIn("unsupported signature algorithm", self.refused(headers))

    def test_unknown_parameter(self) -> None:
        "A signature parameter outside the five known ones is refused."
        headers = signed()
        headers["signature-input"] += ';tag="x"'
        self.assertIn("unknown signature parameters", self.refused(headers))

    def test_malformed_headers(self) -> None:
        "Garbled Signature-Input or Signature headers are refused."
        headers = signed()
        headers["signature-input"] = "sig1=nonsense"
        self.assertIn("Signature-Input is malformed", self.refused(headers))
        headers = signed()
        headers["signature"] = "sig1=abc"
        self.assertIn("Signature is malformed", self.refused(headers))
        headers = signed()
        headers["signature"] = headers["signature"].replace("sig1", "sig2")
        self.assertIn("different signatures", self.refused(headers))

    def test_two_signatures(self) -> None:
        "A Signature-Input with two members is refused."
        headers = signed()
        headers["signature-input"] += ", " + headers["signature-input"].replace("sig1", "sig2")
        self.assertIn("more than one", self.refused(headers))

    def test_reason_never_quotes_secrets(self) -> None:
        "No refusal reason contains the key, the secret or the MAC."
        headers = signed(secret="b3RoZXItc2VjcmV0LWJ5dGVz")
        reason = self.refused(headers)
        for secret in (KEY, SECRET, headers["signature"]):
            self.assertNotIn(secret, reason)

    def test_bad_secret_config(self) -> None:
        "A client secret that is not base64 is refused at configuration."
        self.assertRaises(ValueError, credentials, {KEY: "not base64!"})
        self.assertRaises(ValueError, credentials, {"": SECRET})


class NonceMemoryTests(SynchronousTestCase):
    def test_forgets_after_lifetime(self) -> None:
        "A nonce is remembered for its lifetime, then forgotten."
        memory = NonceMemory(10)
        self.assertFalse(memory.seen_before("a", 0))
        self.assertTrue(memory.seen_before("a", 9))
        self.assertFalse(memory.seen_before("b", 10))
        self.assertEqual(len(memory), 1)


class AuthenticatorTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(NOW)
        self.auth = Authenticator(self.clock, {KEY: SECRET, "unsigned-key": ""})

    def results(self, headers: Dict[str, str]) -> List[object]:
        out: List[object] = []
        self.auth.authenticate(headers, "/ivr").addBoth(out.append)
        return out

    def test_accept_is_immediate(self) -> None:
        "A valid request is accepted without delay."
        out = self.results(signed())
        self.assertIsInstance(out[0], Accepted)

    def test_refusal_waits_minimum_delay(self) -> None:
        "A refusal is answered only after the minimum delay."
        out = self.results({"x-api-key": "wrong"})
        self.assertEqual(out, [])
        self.clock.advance(0.49)
        self.assertEqual(out, [])
        self.clock.advance(0.01)
        self.assertIsInstance(out[0], Failure)
        failure = out[0]
        assert isinstance(failure, Failure)
        self.assertEqual(failure.value.reason, "unknown API key")  # type: ignore[union-attr]
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_repeated_nonce(self) -> None:
        "The same nonce is refused the second time, and accepted again once forgotten."
        self.assertIsInstance(self.results(signed())[0], Accepted)
        out = self.results(signed())
        self.clock.advance(0.5)
        self.assertEqual(out[0].value.reason, "nonce already used")  # type: ignore[attr-defined]
        self.clock.advance(100)
        self.assertIsInstance(self.results(signed(created=NOW + 100))[0], Accepted)
        self.assertEqual(self.auth.remembered_nonces, 1)

    def test_refused_nonce_not_remembered(self) -> None:
        "A request refused for its signature does not use up its nonce."
        out = self.results(signed(secret="b3RoZXItc2VjcmV0LWJ5dGVz"))
        self.clock.advance(0.5)
        self.assertIsInstance(out[0], Failure)
        self.assertIsInstance(self.results(signed())[0], Accepted)

    def test_settings_adjust_bounds(self) -> None:
        "Clock skew, maximum age and nonce length are settings."
        auth = Authenticator(
            self.clock,
            {KEY: SECRET},
            AuthSettings(clock_skew=0, max_signature_age=60, min_nonce_length=4),
        )
        self.assertTrue(auth.check(signed(created=NOW - 50, expires=NOW + 10, nonce="abcd"), "/ivr").signed)
        self.assertRaises(AuthRefused, auth.check, signed(created=NOW + 1, nonce="abce"), "/ivr")
