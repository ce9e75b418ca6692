"""
The shared state of one instance, as a child service
(:class:`SharedState`): the Redis pool and its health, and the shared
operations made for the clients, the intake and the call registry.  Made
from ``[shared]`` (:class:`~ivrproto.config.shared.SharedConfig`) by
:mod:`ivrproto.wiring`; it connects when started and closes the pool when
stopped.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import txredisapi
from twisted.application.service import Service
from twisted.internet.defer import Deferred, fail, succeed
from twisted.logger import Logger

from ivrproto.clients.limits import RequestWindow
from ivrproto.clients.profiles import Shape
from ivrproto.cluster.cache import SharedProfileCache
from ivrproto.cluster.calls import SharedCalls
from ivrproto.cluster.claims import SharedClaims
from ivrproto.cluster.health import SharedHealth
from ivrproto.cluster.lookup import SharedProfiles
from ivrproto.cluster.ratelimit import SharedRequestWindow
from ivrproto.cluster.redis import KeyScheme, RedisConnection, SharedRedis, connect
from ivrproto.cluster.tokens import SharedToken
from ivrproto.config.shared import SharedConfig

__all__ = ["SharedState", "OFF_STATS"]

#: The stats of an instance without shared state.
OFF_STATS: dict[str, Any] = {"enabled": False, "up": False, "outages": 0, "fallbacks": {}}


class _Refusing:
    "A command handler whose every command fails at once."

    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kwargs: fail(txredisapi.ConnectionError("not connected yet"))


class _NotStarted:
    "The pool before the service starts: every command fails at once."

    stuck = False
    handler = _Refusing()

    def rebuild(self) -> None:
        pass

    def close(self) -> "Deferred[Any]":
        return succeed(None)


class SharedState(Service):
    """
    One instance's access to the shared state (the child service
    ``shared state``).

    :param reactor: for the connections, the timeouts and the probes
    :param config: ``[shared]``, with an address
    :param connect_pool: makes the pool (:func:`~ivrproto.cluster.redis.connect`
        unless given)
    """

    log = Logger(namespace="ivrproto.cluster")

    def __init__(
        self,
        reactor: Any,
        config: SharedConfig,
        connect_pool: Optional[Callable[[], RedisConnection]] = None,
    ) -> None:
        assert config.address is not None
        address = config.address
        self.setName("shared state")
        self.config = config
        self._connect = connect_pool or (
            lambda: connect(reactor, address, poolsize=config.poolsize)
        )
        self.health = SharedHealth(reactor, self.log, probe_interval=config.probe_interval)
        self.redis = SharedRedis(
            reactor,
            _NotStarted(),  # type: ignore[arg-type]
            self.health,
            KeyScheme(prefix=config.key_prefix, salt=config.key_salt),
            timeout=config.timeout,
        )
        self.claims = SharedClaims(self.redis)

    def startService(self) -> None:
        super().startService()
        self.redis.connection = self._connect()
        self.log.info(
            "shared state on {where}, keys {prefix}*",
            where=self.config.address.describe() if self.config.address else "?",
            prefix=self.config.key_prefix,
        )

    def stopService(self) -> "Deferred[Any]":
        super().stopService()
        return self.redis.close()

    def profiles(self, client_id: str, local: RequestWindow, shape: Shape, kind: str) -> SharedProfiles:
        """
        The shared cache and rate limit for one profile source.

        :param local: the lookup's own window (the fallback)
        :param kind: the cache's key kind (one per source and lookup type)
        """
        window = SharedRequestWindow(self.redis, client_id, local)
        return SharedProfiles(window, SharedProfileCache(self.redis, kind), shape)

    def token(self, client_id: str) -> SharedToken:
        "The token shared by the instances of ``client_id``."
        return SharedToken(self.redis, client_id, wait_bound=self.config.token_wait)

    def calls(self, retention: float) -> SharedCalls:
        "Claims and outcomes for the intake and the registry."
        return SharedCalls(self.claims, retention, self.config.claim_window)

    def stats(self) -> dict[str, Any]:
        "For ``GET /v1/stats`` and ``/metrics``."
        return {
            "enabled": True,
            "up": self.health.up,
            "outages": self.health.outages,
            "fallbacks": dict(self.health.fallbacks),
        }
