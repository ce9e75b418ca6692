"""
The emulated platform's REST resources, answered from the profiles
fixture: the profile API ``GET /api/v2/profiles/external/<id>`` (contract
section 2) and the External Contacts identifier lookup ``POST
/api/v2/externalcontacts/identifierlookup/contacts``.  Both want a bearer
token with ``profile:read`` (:func:`~ivrproto.emulator.auth.require_scope`).
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timezone
from typing import Any, Mapping, Optional, Protocol, Union

from twisted.web.server import Request

from ivrproto.emulator.auth import BearerChecker, require_scope
from ivrproto.emulator.endpoint import (
    PlatformResource,
    PlatformView,
    api_error,
    json_answer,
    read_body,
)

__all__ = ["CONTACT_LOOKUP_TYPES", "ContactsResource", "ProfileResource", "ProfileSource"]

#: What the External Contacts identifier lookup can look up by.
CONTACT_LOOKUP_TYPES = ("Phone", "ExternalId", "Email")

#: The scope both resources want.
READ_SCOPE = "profile:read"


class ProfileSource(PlatformView, BearerChecker, Protocol):
    """
    What the REST resources need of the platform.
    """

    @property
    def date_modified(self) -> str:
        """When the profiles last changed (ISO 8601, UTC)."""

    def profile(self, external_id: str) -> Optional[Mapping[str, Any]]:
        """The attributes of the profile with that external id, if any."""


def checked_profiles(profiles: Mapping[str, Mapping[str, Any]]) -> Mapping[str, Mapping[str, Any]]:
    """
    :return: the profiles fixture as the resources read it
    :raises TypeError: a ``dict`` that does not map strings to mappings
    """
    if not isinstance(profiles, dict):
        # Any other mapping is used as it is: a load generator can make
        # profiles on demand instead of holding millions of them.
        return profiles
    checked: dict[str, Mapping[str, Any]] = {}
    for external_id, attributes in profiles.items():
        if not isinstance(external_id, str) or not isinstance(attributes, Mapping):
            raise TypeError("profiles maps external ids (str) to attribute objects")
        checked[external_id] = dict(attributes)
    return checked


def iso_utc(seconds: float) -> str:
    """
    :return: the time as the platform writes ``dateModified``
    """
    return (
        datetime.fromtimestamp(seconds, tz=timezone.utc)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


def _profile_id(external_id: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "urn:ivrproto-emulator:" + external_id))


def _contact_id(value: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "urn:ivrproto-emulator:contact:" + value))


class ProfileResource(PlatformResource):
    """
    ``GET /api/v2/profiles/external/<id>``: one profile.

    :param external_id: the decoded external id, or ``None`` when the path
        holds none (404)
    """

    methods = (b"GET", b"HEAD")
    counter = "profile_requests"
    fault_kind = "profile"
    _platform: ProfileSource

    def __init__(self, platform: ProfileSource, external_id: Optional[str]) -> None:
        super().__init__(platform)
        self._external_id = external_id

    def _answer(self, request: Request) -> bytes:
        platform = self._platform
        refusal = require_scope(request, platform, READ_SCOPE)
        if refusal is not None:
            return refusal
        external_id = self._external_id
        attributes = None if external_id is None else platform.profile(external_id)
        if external_id is None or attributes is None:
            return api_error(request, 404, "no profile with that external id")
        return json_answer(
            request,
            200,
            {
                "id": _profile_id(external_id),
                "externalId": external_id,
                "attributes": attributes,
                "dateModified": platform.date_modified,
            },
        )


class ContactsResource(PlatformResource):
    """
    ``POST /api/v2/externalcontacts/identifierlookup/contacts``: the
    External Contacts identifier lookup, answered from the profiles fixture
    (the looked-up value is the external id, the attributes are the
    contact's ``customFields``).  The real platform wants
    ``externalcontacts`` permissions; here the token needs ``profile:read``.
    """

    counter = "contact_requests"
    fault_kind = "contacts"
    _platform: ProfileSource

    def __init__(self, platform: ProfileSource) -> None:
        super().__init__(platform)

    def _answer(self, request: Request) -> bytes:
        platform = self._platform
        refusal = require_scope(request, platform, READ_SCOPE)
        if refusal is not None:
            return refusal
        value = _lookup_value(request)
        if not isinstance(value, tuple):
            return api_error(request, 400, value)
        attributes = platform.profile(value[0])
        if attributes is None:
            return api_error(request, 404, "no contact with that identifier")
        return json_answer(
            request,
            200,
            {
                "id": _contact_id(value[0]),
                "customFields": attributes,
                "modifiedDate": platform.date_modified,
            },
        )


def _lookup_value(request: Request) -> Union[tuple[str], str]:
    """
    :return: ``(value,)``, the identifier a lookup asks for, or (a ``str``)
        why its body is refused
    """
    raw = read_body(request, b"application/json")
    if isinstance(raw, str):
        return raw
    try:
        query = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return "the body is not JSON"
    if not isinstance(query, dict):
        return "the body is not a JSON object"
    if query.get("type") not in CONTACT_LOOKUP_TYPES:
        return "type must be one of " + ", ".join(CONTACT_LOOKUP_TYPES)
    value = query.get("value")
    if not isinstance(value, str) or not value:
        return "value must be a non-empty string"
    return (value,)
