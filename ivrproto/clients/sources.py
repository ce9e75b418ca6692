"""
The two profile clients, the sources a :class:`~ivrproto.clients.lookup.ProfileLookup`
asks: the profile API (platform contract, section 2, :class:`ProfileClient`)
and Genesys External Contacts (:class:`ExternalContactsClient`).  Both have
the same shape, that of :class:`~ivrproto.clients.rest.RestProfileClient`:
``fetch(external_id, deadline)``, ``stats`` and ``stop()``; each says only
where it asks and where its answer keeps the profile's fields.
"""

from __future__ import annotations

import json
from typing import Any, Callable

from twisted.internet.interfaces import IReactorTime

from ivrproto._types import HTTPClient, TokenProvider
from ivrproto.clients.profiles import (
    CONTACT_LOOKUP_TYPES,
    Shape,
    contacts_endpoint,
    profile_endpoint,
    profile_url,
)
from ivrproto.clients.rest import Request, RestProfileClient

__all__ = ["ProfileClient", "ExternalContactsClient"]


def _bearer(token: str) -> list[bytes]:
    return [b"Bearer " + token.encode("ascii", "replace")]


class ProfileClient(RestProfileClient):
    """
    Looks profiles up by external id with the profile API:
    ``GET {api_url}/api/v2/profiles/external/{externalId}``.  Its
    :attr:`endpoint` has a placeholder in place of the external id.

    Its parameters are those of :class:`~ivrproto.clients.rest.RestProfileClient`.
    """

    _forbidden_reason = "forbidden: the access token lacks the profile:read scope"
    _what = "profile"
    _shape = Shape(
        attributes="attributes",
        attributes_required=True,
        date_modified="dateModified",
        external_id="externalId",
    )

    _endpoint_of = staticmethod(profile_endpoint)

    def _request(self, external_id: str) -> Callable[[str], Request]:
        url = profile_url(self._api_url, external_id)
        return lambda token: Request(
            "GET",
            url,
            {b"Authorization": _bearer(token), b"Accept": [b"application/json"]},
        )


class ExternalContactsClient(RestProfileClient):
    """
    Looks callers up in Genesys External Contacts:
    ``POST {api_url}/api/v2/externalcontacts/identifierlookup/contacts``
    with ``{"type": lookup_type, "value": external_id}``.  The contact's
    ``customFields`` become the profile's attributes, its ``modifiedDate``
    the profile's ``date_modified``.

    A 404 means no contact; 401, 403, 429 and 5xx are handled as by
    :class:`ProfileClient`.

    :param lookup_type: what the external id is: ``"Phone"``,
        ``"ExternalId"`` or ``"Email"``
    :param options: the keyword parameters of :class:`ProfileClient`
        (``timeout``, ``retry``, ``retry_budget``...)
    """

    _forbidden_reason = (
        "forbidden: the access token lacks the permission to view external contacts"
    )
    _what = "external contact"
    _shape = Shape(
        attributes="customFields", attributes_required=False, date_modified="modifiedDate"
    )

    def __init__(
        self,
        reactor: IReactorTime,
        http: HTTPClient,
        api_url: str,
        tokens: TokenProvider,
        *,
        lookup_type: str = "Phone",
        **options: Any,
    ) -> None:
        if lookup_type not in CONTACT_LOOKUP_TYPES:
            raise ValueError(
                f"lookup_type must be one of {', '.join(CONTACT_LOOKUP_TYPES)}, "
                f"not {lookup_type!r}"
            )
        super().__init__(reactor, http, api_url, tokens, **options)
        self._lookup_type = lookup_type

    _endpoint_of = staticmethod(contacts_endpoint)

    @property
    def lookup_type(self) -> str:
        """
        What the external id is looked up as.
        """
        return self._lookup_type

    def _request(self, external_id: str) -> Callable[[str], Request]:
        data = json.dumps(
            {"type": self._lookup_type, "value": external_id}, ensure_ascii=False
        ).encode("utf-8")
        url = self._endpoint
        return lambda token: Request(
            "POST",
            url,
            {
                b"Authorization": _bearer(token),
                b"Content-Type": [b"application/json"],
                b"Accept": [b"application/json"],
            },
            data,
        )
