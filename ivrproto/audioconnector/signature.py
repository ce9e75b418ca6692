"""
The HTTP Message Signature of an Audio Connector upgrade, as pure
functions: the ``Signature-Input`` header parsed (:func:`parse_signature_input`),
the signature base (:func:`signature_base`), its MAC
(:func:`compute_signature`), and the headers a signing client sends
(:func:`sign_headers`, for the emulator and tests).
:mod:`ivrproto.audioconnector.auth` checks a request with them.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from typing import Dict, Mapping, Optional, Tuple

import attrs

__all__ = [
    "ALGORITHM",
    "COVERED_COMPONENTS",
    "KNOWN_PARAMETERS",
    "SIGNATURE_HEADER",
    "AuthRefused",
    "SignatureInput",
    "compute_signature",
    "parse_secret",
    "parse_signature_input",
    "sign_headers",
    "signature_base",
    "signature_integer",
]

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
#: A ``Signature`` header holding one MAC.
SIGNATURE_HEADER = re.compile(r"(?P<label>" + _KEY + r")=:(?P<mac>[A-Za-z0-9+/]*={0,2}):")



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


def signature_integer(params: Mapping[str, str], name: str) -> Optional[int]:
    "A signature parameter that must be an integer, or ``None`` when absent."
    raw = params.get(name)
    if raw is None:
        return None
    if not re.fullmatch(r"-?[0-9]{1,15}", raw):
        raise AuthRefused(f"signature parameter {name!r} is not an integer")
    return int(raw)



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
