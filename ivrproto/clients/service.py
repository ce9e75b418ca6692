"""
The service's HTTP clients as one child service: one persistent connection
pool, the token source, the profile source (``[profiles] source``) and the
profile lookup in front of it, made from the configuration by
:func:`make_clients` and stopped together.
"""

from __future__ import annotations

from typing import Any

from treq.client import HTTPClient
from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.web.client import Agent, HTTPConnectionPool

from ivrproto._types import IVRReactor
from ivrproto.clients._agent import AgentHTTP, CachedEndpoints
from ivrproto.clients.limits import RequestWindow, RetryBudget
from ivrproto.clients.lookup import ProfileLookup
from ivrproto.clients.oauth import TokenSource
from ivrproto.clients.rest import RestProfileClient
from ivrproto.clients.sources import ExternalContactsClient, ProfileClient
from ivrproto.config import Config, PlatformConfig

__all__ = ["Clients", "make_clients"]


class Clients(Service):
    """
    The service's HTTP clients, as one child service (``clients``) whose
    ``stopService`` stops them all: the profile lookup, the profile
    source, the token source, then the connection pool's cached
    connections.  Each stops on its own: one that breaks is logged and
    keeps no other from stopping.
    """

    log = Logger()

    def __init__(
        self, pool: HTTPConnectionPool, tokens: TokenSource, source: RestProfileClient,
        lookup: ProfileLookup,
    ) -> None:
        self.setName("clients")
        self.pool = pool
        self.tokens = tokens
        self.source = source
        self.lookup = lookup

    def stopService(self) -> Deferred[None]:
        super().stopService()
        waits: list[Deferred[Any]] = []
        for what, stop in (
            ("the profile lookup", self.lookup.stop),
            ("the profile source", self.source.stop),
            ("the token source", self.tokens.stop),
            ("the HTTP connection pool", self.pool.closeCachedConnections),
        ):
            try:
                result = stop()
            except Exception:
                self.log.failure("stopping {what} broke", what=what)
                continue
            if isinstance(result, Deferred):
                waits.append(result)
        return DeferredList(waits, consumeErrors=True).addCallback(lambda _: None)


def _profile_source(
    reactor: IReactorTime, config: Config, http: AgentHTTP, api_url: str, tokens: TokenSource,
    window: RequestWindow,
) -> RestProfileClient:
    profiles = config.profiles
    common: dict[str, Any] = dict(
        timeout=config.timing.request_timeout,
        retry_budget=RetryBudget(reactor),
        request_window=window,
        max_pause=profiles.max_pause,
    )
    if profiles.source == "external-contacts":
        return ExternalContactsClient(
            reactor, http, api_url, tokens, lookup_type=profiles.lookup_type, **common
        )
    return ProfileClient(reactor, http, api_url, tokens, **common)


def make_clients(reactor: IVRReactor, config: Config, platform: PlatformConfig) -> Clients:
    """
    The clients, on one persistent connection pool: the token request
    through treq, the profile requests through an
    :class:`~twisted.web.client.Agent` with cached endpoints
    (:class:`~ivrproto.clients._agent.AgentHTTP`), which skips treq's URL
    parsing and wrappers on the hot path.

    :param platform: where the platform is (the configuration's, or the
        embedded emulator's)
    """
    timing = config.timing
    pool = HTTPConnectionPool(reactor, persistent=True)
    pool.maxPersistentPerHost = 32
    pool.cachedConnectionTimeout = 30
    pool.retryAutomatically = False
    http = HTTPClient(Agent(reactor, pool=pool))
    tokens = TokenSource(
        reactor,
        http,
        platform.token_url,
        platform.client_id,
        platform.client_secret,
        scope=platform.scope,
        timeout=timing.request_timeout,
        refresh_margin=timing.token_refresh_margin,
        failure_cooldown=timing.token_cooldown,
        failure_cooldown_cap=timing.token_cooldown_cap,
        invalidate_interval=timing.token_invalidate_interval,
        max_lifetime=timing.token_max_lifetime,
    )
    profiles = config.profiles
    # One count of profile requests, first attempts and retries alike.
    window = RequestWindow(reactor, int(profiles.rate_per_minute))
    profile_http = AgentHTTP(
        Agent.usingEndpointFactory(reactor, CachedEndpoints(reactor), pool=pool)
    )
    source = _profile_source(reactor, config, profile_http, platform.api_url, tokens, window)
    lookup = ProfileLookup(
        reactor,
        source,
        ttl=profiles.cache_ttl,
        negative_ttl=profiles.negative_ttl,
        max_entries=profiles.cache_size,
        max_bytes=profiles.cache_max_bytes,
        max_entry_bytes=profiles.cache_max_entry_bytes,
        request_window=window,
        breaker_failures=profiles.breaker_failures,
        breaker_reset=profiles.breaker_reset,
    )
    return Clients(pool, tokens, source, lookup)


