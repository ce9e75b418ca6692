"""
Where the shared Redis is: a ``redis://`` or ``rediss://`` URL, read into
a frozen :class:`RedisAddress`.

``redis://[:password@]host:port/db`` is plain TCP and is accepted only for
a loopback host (the password and the tokens kept in Redis would cross the
network in clear); any other host needs ``rediss://`` (TLS, the server's
certificate checked against the host name).  A password absent from the
URL may come from the environment variable ``IVR_REDIS_PASSWORD``.  The
password is never part of a ``repr``, an error message or a log line.
"""

from __future__ import annotations

import ipaddress
from typing import Mapping, Optional
from urllib.parse import unquote, urlsplit

import attrs

__all__ = ["RedisAddress", "RedisAddressError", "parse_redis_url", "PASSWORD_VARIABLE"]

#: The environment variable a password may come from.
PASSWORD_VARIABLE = "IVR_REDIS_PASSWORD"

DEFAULT_PORT = 6379


class RedisAddressError(ValueError):
    """
    A Redis URL that cannot be used; the message never quotes the URL (it
    may hold a password).
    """


@attrs.frozen
class RedisAddress:
    """
    A Redis server and database.

    :ivar host: host name or address
    :ivar port: TCP port
    :ivar db: database number (``SELECT``)
    :ivar tls: whether to speak TLS (``rediss://``)
    :ivar username: the ACL user name, if any
    :ivar password: the password, if any (never shown)
    """

    host: str
    port: int = DEFAULT_PORT
    db: int = 0
    tls: bool = False
    username: Optional[str] = None
    password: Optional[str] = attrs.field(default=None, repr=False)

    @property
    def loopback(self) -> bool:
        "Whether the host is this machine."
        return is_loopback(self.host)

    def describe(self) -> str:
        "Where this is, safe to log (no password)."
        scheme = "rediss" if self.tls else "redis"
        return f"{scheme}://{self.host}:{self.port}/{self.db}"


def is_loopback(host: str) -> bool:
    """
    Whether ``host`` names this machine: ``localhost`` or a loopback
    address (IPv4 or IPv6).
    """
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_redis_url(url: str, environ: Mapping[str, str]) -> RedisAddress:
    """
    Read a Redis URL.

    :param url: ``redis://[[user]:password@]host[:port][/db]`` or the same
        with ``rediss://``
    :param environ: the environment, for :data:`PASSWORD_VARIABLE` (used
        when the URL carries no password)

    :raise RedisAddressError: for another scheme, a bad port or database
        number, a query or fragment, or plain ``redis://`` to a host that is
        not loopback
    """
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        raise RedisAddressError("the Redis URL cannot be read (bad port?)") from None
    if parts.scheme not in ("redis", "rediss"):
        raise RedisAddressError("the Redis URL must start with redis:// or rediss://")
    if not parts.hostname:
        raise RedisAddressError("the Redis URL has no host")
    if parts.query or parts.fragment:
        raise RedisAddressError("the Redis URL takes no query or fragment")
    tls = parts.scheme == "rediss"
    host = parts.hostname
    if not tls and not is_loopback(host):
        raise RedisAddressError(
            f"redis:// (no TLS) is accepted only for a loopback host, not {host}: "
            "use rediss://"
        )
    db = _database(parts.path)
    password = unquote(parts.password) if parts.password is not None else None
    if not password:
        password = environ.get(PASSWORD_VARIABLE) or None
    username = unquote(parts.username) if parts.username else None
    return RedisAddress(
        host=host,
        port=DEFAULT_PORT if port is None else port,
        db=db,
        tls=tls,
        username=username,
        password=password,
    )


def _database(path: str) -> int:
    text = path.lstrip("/")
    if not text:
        return 0
    if not text.isdigit() or len(text) > 5:
        raise RedisAddressError("the Redis URL's database must be a number, as in /0")
    return int(text)
