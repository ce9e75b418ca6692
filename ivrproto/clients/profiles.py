"""
What the profile clients answer, and where they ask: the :class:`Profile`
value with its read-only attributes (:func:`freeze_json`) and its memory
bound (:func:`estimate_footprint`), the :class:`ProfileStats` counters, the
:class:`RateLimited` error and the reasons of a retry not made, where an
answer keeps the fields (:class:`Shape`), and the endpoints' URLs.  The clients
themselves are in :mod:`ivrproto.clients.sources`, the machinery they share
in :mod:`ivrproto.clients.rest`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Callable, Optional
from urllib.parse import quote

import attrs

from ivrproto.errors import ProfileError

__all__ = [
    "CONTACT_LOOKUP_TYPES",
    "PAST_DEADLINE",
    "BUDGET_SPENT",
    "WINDOW_FULL",
    "TOKEN_REFUSED",
    "Shape",
    "again",
    "Profile",
    "ProfileStats",
    "RateLimited",
    "contacts_endpoint",
    "profile_url",
    "profile_endpoint",
    "encode_uri_component",
    "estimate_footprint",
    "freeze_json",
]

_PROFILES_PATH = "/api/v2/profiles/external/"
_CONTACTS_PATH = "/api/v2/externalcontacts/identifierlookup/contacts"

#: The identifier types the External Contacts client can look contacts up by.
CONTACT_LOOKUP_TYPES = ("Phone", "ExternalId", "Email")


#: ProfileError reasons of a retry not made.
PAST_DEADLINE = "retry would pass the call's time budget"
BUDGET_SPENT = "retry budget spent"
WINDOW_FULL = "retry not made: the rate limit's window is full"
TOKEN_REFUSED = "access token refused, and no other one to try yet"


class RateLimited(ProfileError):
    """
    The platform answered 429 (or a retry would break its rate limit): not
    a failure of the profile API, a request to slow down.

    :ivar retry_at: when, on the client's reactor, the platform accepts
        requests again (its ``Retry-After``, else the backoff), or ``None``
        when it did not say
    """

    def __init__(
        self, url: str, status: Optional[int], reason: str, retry_at: Optional[float]
    ) -> None:
        super().__init__(url, status, reason)
        self.retry_at = retry_at


def again(error: ProfileError, reason: str) -> ProfileError:
    """
    ``error`` with another reason, of the same kind.
    """
    if isinstance(error, RateLimited):
        return RateLimited(error.url, error.status, reason, error.retry_at)
    return ProfileError(error.url, error.status, reason)


# What JavaScript's encodeURIComponent leaves alone besides ASCII letters and
# digits (which urllib.parse.quote never encodes).
_URI_COMPONENT_SAFE = "-_.!~*'()"


def encode_uri_component(s: str) -> str:
    """
    Percent-encode ``s`` exactly as JavaScript's ``encodeURIComponent`` does:
    UTF-8, with only ASCII letters, digits and ``-_.!~*'()`` left as they are.

    A lone surrogate, which ``encodeURIComponent`` refuses with a
    ``URIError``, raises :class:`UnicodeEncodeError` here.
    """
    return quote(s.encode("utf-8"), safe=_URI_COMPONENT_SAFE)


def profile_url(api_url: str, external_id: str) -> str:
    """
    The profile endpoint for one external id: ``api_url`` without trailing
    slashes, ``/api/v2/profiles/external/``, and the id as one encoded path
    segment.
    """
    return api_url.rstrip("/") + _PROFILES_PATH + encode_uri_component(external_id)


def profile_endpoint(api_url: str) -> str:
    """
    The profile endpoint as shown in errors and logs: with a placeholder in
    place of the external id.
    """
    return api_url.rstrip("/") + _PROFILES_PATH + "{externalId}"


def contacts_endpoint(api_url: str) -> str:
    """
    The External Contacts identifier lookup endpoint: ``api_url`` without
    trailing slashes and ``/api/v2/externalcontacts/identifierlookup/contacts``.
    """
    return api_url.rstrip("/") + _CONTACTS_PATH


def freeze_json(value: Any) -> Any:
    """
    A read-only copy of a decoded JSON value: objects become
    :class:`types.MappingProxyType` views of fresh dicts and arrays become
    tuples, recursively; strings, numbers, booleans and ``None`` are kept.
    """
    if isinstance(value, Mapping):
        return MappingProxyType({k: freeze_json(v) for k, v in value.items()})
    if isinstance(value, (list, tuple)):
        return tuple(freeze_json(v) for v in value)
    return value


# What one decoded JSON element can cost in memory at most, besides its text:
# the object (a str header is 49 to 80 bytes, a float 24, an int 28 or more),
# its slot in the tuple or dict holding it (a dict entry with its share of
# the table is up to about 90 bytes), and for an object the dict and the
# read-only view of it (about 280 bytes for a one-key object, measured,
# shared between its ``{`` and its ``:``).
_PER_ELEMENT = 160
# The Profile, its strings and the cache's own bookkeeping for one entry.
_ENTRY_OVERHEAD = 1024


def estimate_footprint(body: bytes) -> int:
    """
    An upper bound of the memory a profile decoded from the JSON ``body``
    takes, in bytes, computed from the body alone in a few C-speed scans
    (no walk of the decoded value).

    Every element of a JSON text is announced by at most one of ``,``
    ``:`` ``{`` ``[`` (or is the first one), so their count bounds the
    number of Python objects; each costs at most ``_PER_ELEMENT`` besides
    its characters, and characters take at most 4 bytes each once decoded
    (1 when the body is ASCII).  For a profile of 15,000 short attributes
    the bound is about 2.3 times the real footprint.
    """
    text = len(body) if body.isascii() else 4 * len(body)
    elements = (
        body.count(b",") + body.count(b":") + body.count(b"{") + body.count(b"[") + 1
    )
    return _ENTRY_OVERHEAD + text + _PER_ELEMENT * elements


@attrs.frozen
class Profile:
    """
    A caller's profile.

    :ivar id: the profile id
    :ivar external_id: the external id it was found by (a caller's identity,
        so not shown in ``repr``)
    :ivar attributes: the profile attributes, read-only, of any JSON type
    :ivar date_modified: when it last changed (ISO-8601), if given
    :ivar footprint: an upper bound of its size in memory, in bytes, when
        the client that made it knows one (:func:`estimate_footprint` of
        the body it came in); not part of equality
    """

    id: str
    external_id: str = attrs.field(repr=False)
    attributes: Mapping[str, Any] = attrs.field(
        converter=freeze_json, hash=False, factory=dict
    )
    date_modified: Optional[str] = None
    footprint: Optional[int] = attrs.field(default=None, eq=False, repr=False)


@attrs.frozen
class Shape:
    """
    Where a profile endpoint's 200 body keeps the fields of a
    :class:`Profile` (its ``id`` is always ``"id"``, a string).

    :ivar attributes: the key of the attributes object
    :ivar attributes_required: whether a body without it is malformed (else
        it means no attributes)
    :ivar date_modified: the key of the optional modification date
    :ivar external_id: the key of the optional external id the answer
        gives, or ``None``: the one asked for is kept
    """

    attributes: str
    attributes_required: bool
    date_modified: str
    external_id: Optional[str] = None

    def read(
        self, body: bytes, external_id: str, malformed: Callable[[str], ProfileError]
    ) -> Profile:
        """
        The profile ``body`` holds, its footprint estimated from it.

        :param malformed: makes the error for what is wrong with the body
        :raise ProfileError: the body is not of this shape, or nested too
            deeply to copy (the JSON decoder may accept more depth than
            freezing allows)
        """
        try:
            payload = json.loads(body)
        except (ValueError, UnicodeDecodeError, RecursionError):
            raise malformed("not JSON")
        if not isinstance(payload, dict):
            raise malformed("not a JSON object")
        profile_id = payload.get("id")
        if not isinstance(profile_id, str):
            raise malformed("id missing or not a string")
        attributes = payload.get(self.attributes)
        if attributes is None and not self.attributes_required:
            attributes = {}
        elif not isinstance(attributes, dict):
            missing = "missing or not" if self.attributes_required else "is not"
            raise malformed(f"{self.attributes} {missing} an object")
        if self.external_id is not None:
            external_id = payload.get(self.external_id, external_id)
            if not isinstance(external_id, str):
                raise malformed(f"{self.external_id} is not a string")
        date_modified = payload.get(self.date_modified)
        if date_modified is not None and not isinstance(date_modified, str):
            raise malformed(f"{self.date_modified} is not a string")
        try:
            return Profile(
                id=profile_id,
                external_id=external_id,
                attributes=attributes,
                date_modified=date_modified,
                footprint=estimate_footprint(body),
            )
        except RecursionError:
            raise malformed("nested too deeply")


@attrs.define
class ProfileStats:
    """
    Counters of a profile client.

    :ivar lookups: lookups started
    :ivar requests: HTTP requests sent (retries included)
    :ivar found: lookups that found a profile
    :ivar not_found: lookups answered with 404
    :ivar errors: lookups that failed with :class:`ProfileError`
    :ivar retries: requests sent again (after a 401, a 429 or a transient
        failure)
    :ivar past_deadline: retries not made because they would end after the
        lookup's deadline
    :ivar budget_spent: retries not made because the retry budget said no
    """

    lookups: int = 0
    requests: int = 0
    found: int = 0
    not_found: int = 0
    errors: int = 0
    retries: int = 0
    past_deadline: int = 0
    budget_spent: int = 0
