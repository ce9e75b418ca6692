"""
Authentication of the Audio Connector upgrade request.

Genesys Cloud sends the integration's API key in ``X-API-KEY``.  When the
integration also has a client secret, the request carries an HTTP Message
Signature (the IETF httpbis draft format) in ``Signature-Input`` and
``Signature``:

- the covered components are exactly ``@request-target``, ``@authority``,
  ``audiohook-organization-id``, ``audiohook-session-id``,
  ``audiohook-correlation-id`` and ``x-api-key``, in any order;
- the parameters are ``keyid`` (equal to the API key), ``nonce`` (at least
  :attr:`AuthSettings.min_nonce_length` characters), ``alg`` (absent or
  ``hmac-sha256``), ``created`` and ``expires`` (whole seconds);
- the MAC is HMAC-SHA256, keyed with the base64-decoded client secret, of the
  signature base: one line ``"<name>": <value>`` per component in the order
  of ``Signature-Input``, then ``"@signature-params": <the inner list and its
  parameters>``, joined with ``\\n``.

:func:`verify_request` does the checks of one request as a pure function;
:class:`Authenticator` adds the clock, the nonce memory and the minimum delay
before a refusal.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import os
from collections import OrderedDict
from typing import Callable, Dict, Mapping, Optional, Tuple

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater

from ivrproto.audioconnector.signature import (
    ALGORITHM,
    COVERED_COMPONENTS,
    KNOWN_PARAMETERS,
    SIGNATURE_HEADER,
    AuthRefused,
    SignatureInput,
    compute_signature,
    parse_secret,
    parse_signature_input,
    sign_headers,
    signature_base,
    signature_integer,
)

__all__ = [
    "Accepted",
    "AuthRefused",
    "AuthSettings",
    "Authenticator",
    "NonceMemory",
    "credentials",
    "parse_secret",
    "parse_signature_input",
    "sign_headers",
    "verify_request",
]

@attrs.frozen
class AuthSettings:
    """
    The bounds of signature checking.  The defaults are those of Genesys's
    reference server; none is confirmed for a real org.

    :ivar clock_skew: seconds the client's clock may be ahead of ours
    :ivar max_signature_age: seconds a signature stays valid after ``created``
        (the check is ``created + max_age >= now + skew``, so with the
        defaults a signature must be at most 7 s old)
    :ivar min_nonce_length: the shortest nonce accepted
    :ivar min_failure_delay: seconds from the start of a check before any
        refusal is answered
    """

    clock_skew: float = 3.0
    max_signature_age: float = 10.0
    min_nonce_length: int = 22
    min_failure_delay: float = 0.5


@attrs.frozen
class Accepted:
    """
    An upgrade request that passed authentication.

    :ivar api_key: the key it carried (not for logs)
    :ivar signed: whether it carried a verified signature
    :ivar organization_id: ``Audiohook-Organization-Id``, if sent
    :ivar session_id: ``Audiohook-Session-Id``, if sent
    :ivar correlation_id: ``Audiohook-Correlation-Id``, if sent
    """

    api_key: str = attrs.field(repr=False)
    signed: bool
    organization_id: Optional[str]
    session_id: Optional[str]
    correlation_id: Optional[str]


def credentials(keys: Mapping[str, Optional[str]]) -> Dict[str, Optional[bytes]]:
    """
    API keys mapped to the decoded client secret, or ``None`` for a key
    without one (unsigned requests with that key are accepted).

    :param keys: API key -> base64 client secret, empty or ``None`` for none
    :raises ValueError: for an empty key or a secret that is not base64
    """
    out: Dict[str, Optional[bytes]] = {}
    for key, secret in keys.items():
        if not key:
            raise ValueError("an Audio Connector API key is empty")
        out[key] = parse_secret(secret) if secret else None
    return out


def verify_request(
    keys: Mapping[str, Optional[bytes]],
    headers: Mapping[str, str],
    target: str,
    now: float,
    settings: AuthSettings = AuthSettings(),
    nonce_seen: Callable[[str], bool] = lambda nonce: False,
) -> Accepted:
    """
    Check one upgrade request.

    :param keys: API key -> decoded client secret (``None``: unsigned allowed)
    :param headers: the request's headers by lower-case name
    :param target: the request target as on the request line
    :param now: the current time, in seconds since the epoch
    :param nonce_seen: whether a nonce was already accepted (asked only for a
        request whose signature is otherwise valid)
    :raises AuthRefused: with the reason for the log
    :return: what the request carried
    """
    api_key = headers.get("x-api-key", "").strip()
    if not api_key:
        raise AuthRefused("no X-API-KEY header")
    known = api_key in keys
    key = keys.get(api_key)
    accepted = Accepted(
        api_key,
        key is not None,
        _header(headers, "audiohook-organization-id"),
        _header(headers, "audiohook-session-id"),
        _header(headers, "audiohook-correlation-id"),
    )
    if known and key is None:
        return accepted
    raw_input = headers.get("signature-input")
    raw_signature = headers.get("signature")
    if not known:
        # Do the work of a signed request anyway, with a throwaway key, so
        # that the time taken does not tell a guessed key from a known one.
        _ = compute_signature(os.urandom(32), (raw_input or "").encode("utf-8"))
        raise AuthRefused("unknown API key")
    assert key is not None
    if raw_input is None or raw_signature is None:
        raise AuthRefused("the API key needs a signature and the request has none")
    sig, given = _signature(raw_input, raw_signature)
    nonce = _check_parameters(sig, api_key, now, settings)
    authority = headers.get("host", "")
    expected = compute_signature(key, signature_base(sig, target, authority, headers))
    if not hmac.compare_digest(expected, given):
        raise AuthRefused("bad signature")
    if nonce_seen(nonce):
        raise AuthRefused("nonce already used")
    return accepted


def _signature(raw_input: str, raw_signature: str) -> Tuple[SignatureInput, bytes]:
    """
    The one signature of ``Signature-Input`` and its MAC from ``Signature``,
    covering exactly :data:`COVERED_COMPONENTS`.

    :raises AuthRefused: for any other shape
    """
    sig = parse_signature_input(raw_input)
    mac_match = SIGNATURE_HEADER.fullmatch(raw_signature.strip())
    if mac_match is None:
        raise AuthRefused("Signature is malformed or holds more than one signature")
    if mac_match.group("label") != sig.label:
        raise AuthRefused("Signature and Signature-Input name different signatures")
    if len(set(sig.components)) != len(sig.components):
        raise AuthRefused("a covered component is listed twice")
    if frozenset(sig.components) != COVERED_COMPONENTS:
        missing = sorted(COVERED_COMPONENTS - set(sig.components))
        extra = sorted(set(sig.components) - COVERED_COMPONENTS)
        raise AuthRefused(f"wrong covered components (missing {missing}, extra {extra})")
    try:
        given = base64.b64decode(mac_match.group("mac"), validate=True)
    except (binascii.Error, ValueError):
        raise AuthRefused("Signature is not base64") from None
    return sig, given


def _check_parameters(sig: SignatureInput, api_key: str, now: float, settings: AuthSettings) -> str:
    """
    The signature's parameters: known ones only, ``keyid`` the API key,
    the algorithm, the nonce's length, ``created`` and ``expires`` within
    the clock skew and the maximum age.

    :return: the nonce
    :raises AuthRefused: naming the first that fails
    """
    unknown = sorted(set(sig.params) - KNOWN_PARAMETERS)
    if unknown:
        raise AuthRefused(f"unknown signature parameters {unknown}")
    if sig.params.get("keyid") != api_key:
        raise AuthRefused("keyid does not match X-API-KEY")
    alg = sig.params.get("alg", ALGORITHM)
    if alg != ALGORITHM:
        raise AuthRefused(f"unsupported signature algorithm {alg!r}")
    nonce = sig.params.get("nonce", "")
    if len(nonce) < settings.min_nonce_length:
        raise AuthRefused("nonce missing or too short")
    created = signature_integer(sig.params, "created")
    if created is None:
        raise AuthRefused("signature has no created time")
    if created > now + settings.clock_skew:
        raise AuthRefused("signature created in the future")
    if created + settings.max_signature_age < now + settings.clock_skew:
        raise AuthRefused("signature too old")
    expires = signature_integer(sig.params, "expires")
    if expires is not None and expires < now + settings.clock_skew:
        raise AuthRefused("signature expired")
    return nonce


def _header(headers: Mapping[str, str], name: str) -> Optional[str]:
    value = headers.get(name)
    return value.strip() if value is not None else None


class NonceMemory:
    """
    Nonces of accepted signatures, each forgotten ``lifetime`` seconds after
    it was seen: a signature is too old to pass long before that, so memory
    stays bounded by the rate of valid upgrades.
    """

    def __init__(self, lifetime: float) -> None:
        self._lifetime = lifetime
        self._seen: "OrderedDict[str, float]" = OrderedDict()

    def seen_before(self, nonce: str, now: float) -> bool:
        "Whether ``nonce`` was seen within the lifetime; remembers it if not."
        self._expire(now)
        if nonce in self._seen:
            return True
        self._seen[nonce] = now + self._lifetime
        return False

    def _expire(self, now: float) -> None:
        seen = self._seen
        while seen:
            nonce, until = next(iter(seen.items()))
            if until > now:
                break
            del seen[nonce]

    def __len__(self) -> int:
        return len(self._seen)


class Authenticator:
    """
    Checks upgrade requests against a set of API keys, on a clock.

    :param clock: the time source; also times the delay before a refusal
    :param keys: API key -> base64 client secret (empty or ``None``: the key
        may be used unsigned)
    :param settings: the bounds of the checks
    """

    def __init__(
        self,
        clock: IReactorTime,
        keys: Mapping[str, Optional[str]],
        settings: AuthSettings = AuthSettings(),
    ) -> None:
        self._clock = clock
        self._keys = credentials(keys)
        self.settings = settings
        # A nonce must outlive any signature that could carry it.
        self._nonces = NonceMemory(settings.max_signature_age + 2 * settings.clock_skew)

    @property
    def remembered_nonces(self) -> int:
        "How many nonces are held (for tests and metrics)."
        return len(self._nonces)

    def check(self, headers: Mapping[str, str], target: str) -> Accepted:
        """
        Check a request at once (no delay).

        :raises AuthRefused: when it must be refused
        """
        now = self._clock.seconds()
        return verify_request(
            self._keys,
            headers,
            target,
            now,
            self.settings,
            lambda nonce: self._nonces.seen_before(nonce, now),
        )

    def authenticate(self, headers: Mapping[str, str], target: str) -> "Deferred[Accepted]":
        """
        Check a request.

        :return: fires with :class:`Accepted` at once, or fails with
            :class:`AuthRefused` no sooner than ``min_failure_delay`` seconds
            after the call
        """
        try:
            accepted = self.check(headers, target)
        except AuthRefused as refused:
            error = refused

            def refuse() -> Accepted:
                raise error

            return deferLater(self._clock, self.settings.min_failure_delay, refuse)
        d: Deferred[Accepted] = Deferred()
        d.callback(accepted)
        return d
