"""
The errors ivrproto raises.  Each carries what a person needs to act on it,
and none carries a secret, a token or a raw caller id.
"""

from __future__ import annotations

from typing import Optional


class IVRError(Exception):
    """
    Base class of every error raised by ivrproto.
    """


class ConfigError(IVRError):
    """
    The configuration is invalid.

    :ivar key: the dotted name of the offending setting (``timing.confirm_delay``)
    :ivar reason: what is wrong with it
    """

    def __init__(self, key: str, reason: str, source: Optional[str] = None) -> None:
        self.key = key
        self.reason = reason
        self.source = source
        where = f"{source}: " if source else ""
        super().__init__(f"{where}{key}: {reason}")


class _RequestError(IVRError):
    """
    A request to the platform's REST side failed: what the token and the
    profile errors share.

    :ivar url: the endpoint (never with a caller's id in it)
    :ivar status: the HTTP status, or ``None`` when there was no answer
    :ivar reason: a short description
    """

    #: what failed, to begin the message with
    _what = "request"

    def __init__(self, url: str, status: Optional[int], reason: str) -> None:
        self.url = url
        self.status = status
        self.reason = reason
        shown = "no answer" if status is None else f"HTTP {status}"
        super().__init__(f"{self._what} {url} failed ({shown}): {reason}")


class TokenError(_RequestError):
    """
    No access token could be obtained.

    :ivar url: the token endpoint
    :ivar status: the HTTP status, or ``None`` when there was no answer
    :ivar reason: a short description (the OAuth ``error`` code, a timeout...)
    :ivar retryable: whether asking again later may succeed
    """

    _what = "token request to"

    def __init__(
        self, url: str, status: Optional[int], reason: str, retryable: bool
    ) -> None:
        self.retryable = retryable
        super().__init__(url, status, reason)


class ProfileError(_RequestError):
    """
    A profile lookup failed (not a 404: a missing profile is not an error).

    :ivar url: the profile endpoint, without the external id
    :ivar status: the HTTP status, or ``None`` when there was no answer
    :ivar reason: a short description
    """

    _what = "profile lookup at"


class MalformedFrame(IVRError):
    """
    A Call Control frame could not be understood.

    :ivar reason: what is wrong with it (never the frame's raw content)
    """

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"malformed Call Control frame: {reason}")

