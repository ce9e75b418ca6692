"""
The roles ivrproto injects, named once: the reactor it needs, the HTTP
client the REST clients send through, where access tokens come from, where
profiles come from, and the per-call profile lookup.

These are types only (a zope interface and typing Protocols): nothing here
runs, and any object with the right methods plays the role (a
:class:`~twisted.internet.task.Clock`, treq's ``StubTreq`` or a test fake).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional, Protocol

from twisted.internet.interfaces import (
    IReactorPluggableNameResolver,
    IReactorTCP,
    IReactorTime,
)

if TYPE_CHECKING:
    from twisted.internet.defer import Deferred

    from ivrproto.clients.outcomes import LookupResult
    from ivrproto.clients.profiles import Profile

__all__ = ["IVRReactor", "HTTPClient", "TokenProvider", "ProfileSource", "ProfileFinder"]


class IVRReactor(IReactorTCP, IReactorTime, IReactorPluggableNameResolver):
    """
    The reactor the service runs on: TCP connections and listeners, the
    clock, and name resolution (what ``HostnameEndpoint``, and so treq's
    ``Agent`` and the Call Control connection, need), as treq's own
    ``_ITreqReactor`` names it.  Parts that only keep time take an
    :class:`~twisted.internet.interfaces.IReactorTime`.
    """


class HTTPClient(Protocol):
    """
    What the REST clients call on treq's ``HTTPClient`` (or
    ``treq.testing.StubTreq``): one request, with the keywords they use.
    """

    def request(
        self,
        method: str,
        url: str,
        *,
        headers: Any = None,
        data: Optional[bytes] = None,
        timeout: Optional[float] = None,
        # treq types it as its own reactor interface, but only reads its
        # clock (for ``timeout``): the clients pass their IReactorTime.
        reactor: Any = None,
        allow_redirects: bool = True,
        unbuffered: bool = False,
    ) -> "Deferred[Any]":
        """
        Send a request.

        :return: a Deferred firing with the response (an
            :class:`~twisted.web.iweb.IResponse`)
        """


class TokenProvider(Protocol):
    """
    Where access tokens come from (:class:`~ivrproto.clients.oauth.TokenSource`,
    or a fake).
    """

    def get_token(self) -> "Deferred[str]":
        """
        :return: a Deferred firing with an access token, or failing with
            :class:`~ivrproto.errors.TokenError`
        """

    def invalidate(self, token: str) -> None:
        """
        ``token`` was refused with a 401: drop it if it is the cached one.
        """


class ProfileSource(Protocol):
    """
    Where profiles come from, as :class:`~ivrproto.clients.lookup.ProfileLookup`
    asks them (the REST profile clients of :mod:`ivrproto.clients.rest`, or
    a fake).
    """

    def fetch(
        self, external_id: str, deadline: Optional[float]
    ) -> "Deferred[Optional[Profile]]":
        """
        Fetch the profile of ``external_id``.

        :param deadline: an absolute reactor time after which no retry wait
            may start, or ``None`` for no deadline
        :return: a Deferred firing with the :class:`Profile`, with ``None``
            when there is none (404), or failing (usually with
            :class:`~ivrproto.errors.ProfileError`).  Cancelling it stops
            the fetch.
        """


class ProfileFinder(Protocol):
    """
    The per-call profile lookup a call asks
    (:class:`~ivrproto.clients.lookup.ProfileLookup`, or a fake): it answers
    within the call's budget and never fails.
    """

    def lookup(self, external_id: str, budget: float) -> "Deferred[LookupResult]":
        """
        :return: a Deferred firing within ``budget`` seconds with a
            :class:`~ivrproto.clients.lookup.LookupResult`
        """
