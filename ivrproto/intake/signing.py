"""
Signed intake requests.

A caller of ``POST /v1/calls`` (a Genesys data action, a gateway) signs each
request with a secret it shares with the service:

- ``X-IVR-Timestamp``: the time of signing, in whole seconds since the epoch;
- ``X-IVR-Signature``: ``v1=`` followed by the lowercase hex HMAC-SHA256,
  keyed with the shared secret, of the timestamp, a ``.``, and the raw
  request body, byte for byte::

      v1=hex(HMAC_SHA256(secret, timestamp + "." + body))

The service accepts a request whose timestamp is within the tolerance window
(default 300 s either way) and whose signature matches (compared in constant
time), and starts nothing for a ``callControlId`` it has already seen within
the window, so that a captured request cannot be replayed.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections import OrderedDict
from typing import Optional

TIMESTAMP_HEADER = b"x-ivr-timestamp"
SIGNATURE_HEADER = b"x-ivr-signature"
SCHEME = "v1="

#: A timestamp is ASCII digits only, and few enough of them to be a time
#: (twelve digits reach the year 33658): no sign, space, underscore or
#: other digits ``int()`` would take, and nothing too large for a float.
_TIMESTAMP = re.compile(rb"[0-9]{1,12}")


def sign(secret: bytes, timestamp: int, body: bytes) -> str:
    """
    The ``X-IVR-Signature`` value for a request.
    """
    mac = hmac.new(secret, str(timestamp).encode("ascii") + b"." + body, hashlib.sha256)
    return SCHEME + mac.hexdigest()


class SignatureCheck:
    """
    Checks signed requests and remembers the call ids seen, so that none
    starts twice within the tolerance window.

    :param secret: the shared secret
    :param tolerance: seconds a timestamp may be off, either way
    """

    def __init__(self, secret: bytes, tolerance: float = 300.0) -> None:
        if not secret:
            raise ValueError("the intake secret must not be empty")
        self._secret = secret
        self.tolerance = tolerance
        self._seen: OrderedDict[str, float] = OrderedDict()

    def __repr__(self) -> str:
        return f"<SignatureCheck tolerance={self.tolerance}>"

    def problem(
        self, timestamp: Optional[bytes], signature: Optional[bytes], body: bytes, now: float
    ) -> Optional[str]:
        """
        What is wrong with a request's signature, or ``None`` if nothing.
        """
        if timestamp is None or signature is None:
            return "missing X-IVR-Timestamp or X-IVR-Signature"
        problem = self.timestamp_problem(timestamp, now)
        if problem is not None:
            return problem
        when = int(timestamp)
        expected = sign(self._secret, when, body).encode("ascii")
        if not hmac.compare_digest(expected, signature.strip()):
            return "signature does not match"
        return None

    def timestamp_problem(self, timestamp: Optional[bytes], now: float) -> Optional[str]:
        """
        What is wrong with a request's ``X-IVR-Timestamp`` alone, or ``None``:
        this needs no body, so it can be checked as soon as the headers are in.
        """
        if timestamp is None:
            return "missing X-IVR-Timestamp or X-IVR-Signature"
        if _TIMESTAMP.fullmatch(timestamp) is None:
            return "X-IVR-Timestamp is not whole seconds"
        if abs(now - int(timestamp)) > self.tolerance:
            return "X-IVR-Timestamp is outside the tolerance window"
        return None

    def first_time(self, call_control_id: str, now: float) -> bool:
        """
        Whether this call id is new within the window (and remember it).
        """
        seen = self._seen
        # Entries are in the order they expire: drop the expired ones.
        while seen:
            oldest = next(iter(seen))
            if seen[oldest] > now:
                break
            del seen[oldest]
        if call_control_id in seen:
            return False
        seen[call_control_id] = now + 2 * self.tolerance
        return True
