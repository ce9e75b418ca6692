"""
The profile clients' HTTP client on :class:`twisted.web.client.Agent`
directly: :class:`AgentHTTP`, which takes treq's ``request`` keywords (the
:class:`~ivrproto._types.HTTPClient` role), and :class:`CachedEndpoints`,
which makes one endpoint per (scheme, host, port) and keeps it.

treq parses every URL with hyperlink (and its host name with idna), then
wraps the agent in a cookie jar, a redirect agent and a content decoder on
each request; the profile clients need none of that, and it costs about as
much CPU as the rest of the request.  The token request stays on treq.
"""

from __future__ import annotations

from io import BytesIO
from typing import Any, Optional

from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import (
    HostnameEndpoint,
    TCP4ClientEndpoint,
    TCP6ClientEndpoint,
    wrapClientTLS,
)
from twisted.internet.interfaces import IReactorTime, IStreamClientEndpoint
from twisted.web.client import BrowserLikePolicyForHTTPS, FileBodyProducer, URI
from twisted.web.error import SchemeNotSupported
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgent, IAgentEndpointFactory, IPolicyForHTTPS
from zope.interface import implementer

__all__ = ["AgentHTTP", "CachedEndpoints"]


@implementer(IAgentEndpointFactory)
class CachedEndpoints:
    """
    The endpoints an :class:`~twisted.web.client.Agent` connects with, one
    per (scheme, host, port), made once and kept: a
    :class:`~twisted.internet.endpoints.TCP4ClientEndpoint` (or ``TCP6``)
    for an IP literal, so that a new pool connection does not resolve it
    again, and a :class:`~twisted.internet.endpoints.HostnameEndpoint`
    otherwise.  ``https`` goes through ``policy.creatorForNetloc`` (by
    default :class:`~twisted.web.client.BrowserLikePolicyForHTTPS`: the
    platform's trust store and the host name checked), exactly as the
    Agent's own endpoints do.

    :param reactor: what the endpoints connect with
    :param policy: the TLS policy for ``https``
    :param connect_timeout: seconds allowed for a TCP connection
    """

    def __init__(
        self,
        reactor: Any,
        policy: Optional[IPolicyForHTTPS] = None,
        connect_timeout: float = 30.0,
    ) -> None:
        self._reactor = reactor
        self._policy = BrowserLikePolicyForHTTPS() if policy is None else policy
        self._timeout = connect_timeout
        self._endpoints: dict[tuple[bytes, bytes, int], IStreamClientEndpoint] = {}

    def endpointForURI(self, uri: URI) -> IStreamClientEndpoint:
        """
        The endpoint for ``uri``'s scheme, host and port.

        :raise SchemeNotSupported: neither ``http`` nor ``https``
        """
        key = (uri.scheme, uri.host, uri.port)
        endpoint = self._endpoints.get(key)
        if endpoint is None:
            endpoint = self._endpoints[key] = self._make(uri)
        return endpoint

    def _make(self, uri: URI) -> IStreamClientEndpoint:
        if uri.scheme not in (b"http", b"https"):
            raise SchemeNotSupported(f"unsupported scheme: {uri.scheme!r}")
        try:
            host = uri.host.decode("ascii")
        except UnicodeDecodeError:
            raise ValueError("the host of the URI is not ASCII")
        endpoint: IStreamClientEndpoint
        if isIPAddress(host):
            endpoint = TCP4ClientEndpoint(self._reactor, host, uri.port, timeout=self._timeout)
        elif isIPv6Address(host):
            endpoint = TCP6ClientEndpoint(self._reactor, host, uri.port, timeout=self._timeout)
        else:
            endpoint = HostnameEndpoint(self._reactor, host, uri.port, timeout=self._timeout)
        if uri.scheme == b"https":
            creator = self._policy.creatorForNetloc(uri.host, uri.port)
            endpoint = wrapClientTLS(creator, endpoint)
        return endpoint


class AgentHTTP:
    """
    treq's ``request`` on an :class:`~twisted.web.iweb.IAgent`, for the
    keywords the REST clients use: the URL is sent as given (it must be
    ASCII, as the clients' percent-encoded URLs are), redirects are never
    followed, the body is never buffered, no cookie is kept and no
    compression is asked for.  ``timeout`` bounds the wait for the response
    headers, as treq's does: the request is cancelled when it passes.
    """

    def __init__(self, agent: IAgent) -> None:
        self._agent = agent

    def request(
        self,
        method: str,
        url: str,
        *,
        headers: Any = None,
        data: Optional[bytes] = None,
        timeout: Optional[float] = None,
        reactor: Optional[IReactorTime] = None,
        allow_redirects: bool = False,
        unbuffered: bool = True,
    ) -> "Deferred[Any]":
        """
        Send a request.

        :param headers: a ``{bytes: [bytes]}`` dict, a
            :class:`~twisted.web.http_headers.Headers` or ``None``
        :param reactor: the clock for ``timeout``
        :param allow_redirects: must be false
        :param unbuffered: must be true

        :return: a Deferred firing with the
            :class:`~twisted.web.iweb.IResponse`
        """
        if allow_redirects or not unbuffered:
            raise ValueError("AgentHTTP neither follows redirects nor buffers bodies")
        if not isinstance(headers, Headers):
            headers = Headers(headers)
        body = None if data is None else FileBodyProducer(BytesIO(data))
        d = self._agent.request(
            method.encode("ascii"), url.encode("ascii"), headers, body
        )
        if timeout:
            if reactor is None:
                from twisted.internet import reactor as default_reactor

                reactor = default_reactor  # type: ignore[assignment]
            assert reactor is not None
            timer = reactor.callLater(timeout, d.cancel)

            def stop_timer(result: Any) -> Any:
                if timer.active():
                    timer.cancel()
                return result

            d.addBoth(stop_timer)
        return d
