"""
State shared by several ivrproto instances, on Redis: the profile rate
limit and pause (:mod:`~ivrproto.cluster.ratelimit`), the profile cache
(:mod:`~ivrproto.cluster.cache`), the OAuth token
(:mod:`~ivrproto.cluster.tokens`), and the intake's claims and call
outcomes (:mod:`~ivrproto.cluster.claims`).

Each shared operation is bounded in time and never raises: when Redis is
down, slow or unreachable it returns
:class:`~ivrproto.cluster.health.Unavailable` and the caller uses its local
state (:mod:`~ivrproto.cluster.health`, :mod:`~ivrproto.cluster.redis`).
docs/shared-state.md describes the keys, the scripts and the fallbacks.
"""

from ivrproto.cluster.address import RedisAddress, RedisAddressError, parse_redis_url
from ivrproto.cluster.health import SharedHealth, Unavailable
from ivrproto.cluster.redis import KeyScheme, RedisConnection, SharedRedis, connect

__all__ = [
    "KeyScheme",
    "RedisAddress",
    "RedisAddressError",
    "RedisConnection",
    "SharedHealth",
    "SharedRedis",
    "Unavailable",
    "connect",
    "parse_redis_url",
]
