"""
The emulated platform's URL paths, and the root resource that routes a
request to its endpoint.
"""

from __future__ import annotations

from typing import Callable, Optional
from urllib.parse import unquote_to_bytes

from twisted.web.resource import IResource, Resource
from twisted.web.server import Request

from ivrproto.emulator.byhand import CALLS_PATH
from ivrproto.emulator.endpoint import api_error

__all__ = ["CONTACTS_PATH", "PROFILES_PREFIX", "TOKEN_PATH", "WEBSOCKET_PATH", "Root"]

TOKEN_PATH = b"/oauth/token"
PROFILES_PREFIX = b"/api/v2/profiles/external/"
WEBSOCKET_PATH = b"/api/v2/callcontrol/websocket"
CONTACTS_PATH = b"/api/v2/externalcontacts/identifierlookup/contacts"


class _NotFound(Resource):
    isLeaf = True

    def render(self, request: Request) -> bytes:
        return api_error(request, 404, "no such resource")


class Root(Resource):
    """
    Routes on the raw request path, so that a percent-encoded ``/`` stays
    inside a profile's external id.

    :param token: ``/oauth/token``
    :param contacts: the External Contacts identifier lookup
    :param by_hand: ``/emulator/calls`` and what is under it
    :param websocket: the Call Control WebSocket
    :param profile: makes the resource of ``/api/v2/profiles/external/<id>``
        for the decoded id (``None`` when the path holds none)
    """

    def __init__(
        self,
        token: IResource,
        contacts: IResource,
        by_hand: IResource,
        websocket: IResource,
        profile: Callable[[Optional[str]], IResource],
    ) -> None:
        super().__init__()
        self._token = token
        self._contacts = contacts
        self._by_hand = by_hand
        self._websocket = websocket
        self._profile = profile
        self._not_found = _NotFound()

    def getChildWithDefault(self, name: bytes, request: Request) -> IResource:
        path = request.path
        if path == TOKEN_PATH:
            return self._token
        if path == WEBSOCKET_PATH:
            return self._websocket
        if path == CONTACTS_PATH:
            return self._contacts
        if path == CALLS_PATH or path.startswith(CALLS_PATH + b"/"):
            return self._by_hand
        if path.startswith(PROFILES_PREFIX):
            return self._profile(_external_id(path[len(PROFILES_PREFIX):]))
        return self._not_found

    def render(self, request: Request) -> bytes:
        return self._not_found.render(request)


def _external_id(segment: bytes) -> Optional[str]:
    """
    :return: the external id a profile path's last segment names, if any
    """
    if not segment or b"/" in segment:
        return None
    try:
        return unquote_to_bytes(segment).decode("utf-8")
    except UnicodeDecodeError:
        return None
