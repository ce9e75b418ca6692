"""
The ``[shared]`` section: state shared by several instances on one Redis
(:class:`SharedConfig`, read by :func:`parse_shared`).  Off unless a Redis
URL is given, in the file (``redis``) or in :data:`REDIS_URL_ENV`; the
password comes from the environment only (``IVR_REDIS_PASSWORD``, or in
the URL of :data:`REDIS_URL_ENV`), and so does the key salt.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Optional

import attrs

from ivrproto.cluster.address import RedisAddress, RedisAddressError, parse_redis_url
from ivrproto.config.table import Table, set_by_environment, with_origin
from ivrproto.errors import ConfigError

__all__ = ["REDIS_URL_ENV", "KEY_SALT_ENV", "SharedConfig", "parse_shared"]

#: The environment variable that overrides ``[shared] redis``.
REDIS_URL_ENV = "IVR_REDIS_URL"
#: The environment variable holding the key salt (by default).
KEY_SALT_ENV = "IVR_REDIS_KEY_SALT"


@attrs.frozen
class SharedConfig:
    """
    ``[shared]``: where the shared Redis is, and how it is used.

    :ivar address: the Redis server, or ``None``: shared state is off and
        every instance keeps its own
    :ivar key_prefix: put before every key
    :ivar key_salt: the key of the digests in keys (from the environment
        variable ``key_salt_env``; never shown)
    :ivar timeout: seconds allowed for one Redis round trip
    :ivar poolsize: connections to Redis
    :ivar token_wait: the longest wait for another instance's token refresh
    :ivar probe_interval: seconds between probes while Redis is down
    :ivar claim_window: seconds an unsigned intake request's call id stays
        claimed (a call still going on; released when it ends)
    """

    address: Optional[RedisAddress] = None
    key_prefix: str = "ivr:"
    key_salt: bytes = attrs.field(default=b"", repr=False)
    timeout: float = 0.05
    poolsize: int = 2
    token_wait: float = 2.0
    probe_interval: float = 0.5
    claim_window: float = 3600.0

    @property
    def enabled(self) -> bool:
        "Whether instances share state on Redis."
        return self.address is not None

    def describe(self) -> str:
        "A line for ``ivr check`` (no password, no salt)."
        if self.address is None:
            return "off (each instance keeps its own state)"
        return f"on, {self.address.describe()} (keys {self.key_prefix}*)"


def parse_shared(data: Any, source: str, environ: Mapping[str, str]) -> SharedConfig:
    """
    ``[shared]``, with the URL from :data:`REDIS_URL_ENV` when set.

    :raises ConfigError: naming the bad key
    """
    t = Table(data, "shared", source)
    d = SharedConfig()
    url = t.get("redis", str, None)
    origin = None
    if environ.get(REDIS_URL_ENV):
        url = environ[REDIS_URL_ENV]
        origin = set_by_environment(REDIS_URL_ENV)
    prefix = t.get("key_prefix", str, d.key_prefix)
    salt_env = t.get("key_salt_env", str, KEY_SALT_ENV)
    config = SharedConfig(
        address=None if not url else _address(url, source, environ, origin),
        key_prefix=prefix,
        key_salt=(environ.get(salt_env) or "").encode("utf-8"),
        timeout=t.positive("timeout", d.timeout),
        poolsize=t.count("poolsize", d.poolsize, minimum=1),
        token_wait=t.positive("token_wait", d.token_wait, allow_zero=True),
        probe_interval=t.positive("probe_interval", d.probe_interval),
        claim_window=t.positive("claim_window", d.claim_window),
    )
    t.finish()
    if len(prefix) > 64 or not all(" " < c <= "~" for c in prefix):
        raise ConfigError(
            "shared.key_prefix", "must be at most 64 printable ASCII characters, no space", source
        )
    if len(config.key_salt) > 64:
        raise ConfigError("shared.key_salt_env", f"{salt_env} must be at most 64 bytes", source)
    if config.timeout >= 1.0 or not math.isfinite(config.timeout):
        raise ConfigError(
            "shared.timeout", "must be well under a second (a caller is waiting)", source
        )
    return config


def _address(
    url: str, source: str, environ: Mapping[str, str], origin: Optional[str]
) -> RedisAddress:
    try:
        return parse_redis_url(url, environ)
    except RedisAddressError as e:
        # The message never quotes the URL: it may hold a password.
        raise with_origin(origin, ConfigError("shared.redis", str(e), source)) from None
