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
import hashlib
import hmac
import os
import re
from collections import OrderedDict
from typing import Callable, Dict, Mapping, Optional, Tuple

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater

#: The components a signature must cover, no more and no fewer.
COVERED_COMPONENTS = frozenset(
    {
        "@request-target",
        "@authority",
        "audiohook-organization-id",
        "audiohook-session-id",
        "audiohook-correlation-id",
        "x-api-key",
    }
)

#: The signature parameters understood; any other one refuses the request.
KNOWN_PARAMETERS = frozenset({"keyid", "nonce", "alg", "created", "expires"})

ALGORITHM = "hmac-sha256"

_KEY = r"[a-z*][a-z0-9_.*-]*"
_STRING = r'"(?:[^"\\\x00-\x1f\x7f]|\\["\\])*"'
_MEMBER = re.compile(
    rf"(?P<label>{_KEY})=(?P<value>\((?P<items>(?:{_STRING}(?: +{_STRING})*)?)\)"
    rf"(?P<params>(?:;{_KEY}(?:=(?:{_STRING}|-?[0-9]{{1,15}}|[A-Za-z*][A-Za-z0-9_.*:/%-]*))?)*))"
)
_PARAM = re.compile(rf";(?P<key>{_KEY})(?:=(?P<value>{_STRING}|-?[0-9]{{1,15}}|[A-Za-z*][A-Za-z0-9_.*:/%-]*))?")
_ITEM = re.compile(_STRING)
_SIGNATURE = re.compile(r"(?P<label>" + _KEY + r")=:(?P<mac>[A-Za-z0-9+/]*={0,2}):")


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


class AuthRefused(Exception):
    """
    An upgrade request that must be answered with 401.

    :ivar reason: what was wrong, for the log (never a key, secret or MAC)
    """

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


def parse_secret(secret: str) -> bytes:
    """
    The key bytes of a base64 client secret.

    :raises ValueError: when it is not base64 or decodes to nothing
    """
    try:
        key = base64.b64decode(secret.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("the Audio Connector client secret is not valid base64") from None
    if not key:
        raise ValueError("the Audio Connector client secret is empty")
    return key


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


@attrs.frozen
class SignatureInput:
    """
    One parsed ``Signature-Input`` member.
    """

    label: str
    components: Tuple[str, ...]
    params: Mapping[str, str]
    #: The member's value as sent: the ``@signature-params`` line.
    serialized: str


def _unquote(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text[1:-1])


def parse_signature_input(value: str) -> SignatureInput:
    """
    Parse a ``Signature-Input`` header holding exactly one signature.

    :raises AuthRefused: when it is not of that shape
    """
    match = _MEMBER.fullmatch(value.strip())
    if match is None:
        raise AuthRefused("Signature-Input is malformed or holds more than one signature")
    components = tuple(_unquote(item) for item in _ITEM.findall(match.group("items")))
    params: Dict[str, str] = {}
    for p in _PARAM.finditer(match.group("params")):
        key, raw = p.group("key"), p.group("value")
        if key in params:
            raise AuthRefused(f"signature parameter {key!r} given twice")
        if raw is None:
            params[key] = ""
        elif raw.startswith('"'):
            params[key] = _unquote(raw)
        else:
            params[key] = raw
    return SignatureInput(match.group("label"), components, params, match.group("value"))


def signature_base(
    sig: SignatureInput, target: str, authority: str, headers: Mapping[str, str]
) -> bytes:
    """
    The bytes the MAC covers.

    :param target: the request target as on the request line (path and query)
    :param authority: the ``Host`` header
    :param headers: header values by lower-case name
    :raises AuthRefused: when a covered header is missing
    """
    lines = []
    for name in sig.components:
        if name == "@request-target":
            value = target
        elif name == "@authority":
            value = authority.strip().lower()
        else:
            header = headers.get(name)
            if header is None:
                raise AuthRefused(f"covered header {name!r} is missing")
            value = header.strip()
        lines.append(f'"{name}": {value}')
    lines.append(f'"@signature-params": {sig.serialized}')
    return "\n".join(lines).encode("utf-8")


def compute_signature(key: bytes, base: bytes) -> bytes:
    "The HMAC-SHA256 of a signature base."
    return hmac.new(key, base, hashlib.sha256).digest()


def _integer(params: Mapping[str, str], name: str) -> Optional[int]:
    raw = params.get(name)
    if raw is None:
        return None
    if not re.fullmatch(r"-?[0-9]{1,15}", raw):
        raise AuthRefused(f"signature parameter {name!r} is not an integer")
    return int(raw)


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
    sig = parse_signature_input(raw_input)
    mac_match = _SIGNATURE.fullmatch(raw_signature.strip())
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
    created = _integer(sig.params, "created")
    if created is None:
        raise AuthRefused("signature has no created time")
    if created > now + settings.clock_skew:
        raise AuthRefused("signature created in the future")
    if created + settings.max_signature_age < now + settings.clock_skew:
        raise AuthRefused("signature too old")
    expires = _integer(sig.params, "expires")
    if expires is not None and expires < now + settings.clock_skew:
        raise AuthRefused("signature expired")
    authority = headers.get("host", "")
    expected = compute_signature(key, signature_base(sig, target, authority, headers))
    try:
        given = base64.b64decode(mac_match.group("mac"), validate=True)
    except (binascii.Error, ValueError):
        raise AuthRefused("Signature is not base64") from None
    if not hmac.compare_digest(expected, given):
        raise AuthRefused("bad signature")
    if nonce_seen(nonce):
        raise AuthRefused("nonce already used")
    return accepted


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


def sign_headers(
    api_key: str,
    secret: str,
    target: str,
    authority: str,
    organization_id: str,
    session_id: str,
    correlation_id: str,
    nonce: str,
    created: int,
    expires: Optional[int] = None,
    label: str = "sig1",
) -> Dict[str, str]:
    """
    The headers a client sends for a signed upgrade (what Genesys Cloud does;
    for the emulator and for tests).

    :param secret: the base64 client secret
    :param expires: defaults to ``created + 30``, as Genesys's client does
    :return: header name -> value, ``Host`` included
    """
    headers = {
        "host": authority,
        "audiohook-organization-id": organization_id,
        "audiohook-session-id": session_id,
        "audiohook-correlation-id": correlation_id,
        "x-api-key": api_key,
    }
    names = (
        "@request-target",
        "@authority",
        "audiohook-organization-id",
        "audiohook-session-id",
        "audiohook-correlation-id",
        "x-api-key",
    )
    inner = "(" + " ".join(f'"{n}"' for n in names) + ")"
    params = (
        f';keyid="{api_key}";nonce="{nonce}";alg="{ALGORITHM}";created={created}'
        f";expires={created + 30 if expires is None else expires}"
    )
    sig = SignatureInput(label, names, {}, inner + params)
    mac = compute_signature(parse_secret(secret), signature_base(sig, target, authority, headers))
    headers["signature-input"] = f"{label}={inner}{params}"
    headers["signature"] = f"{label}=:{base64.b64encode(mac).decode('ascii')}:"
    return headers
