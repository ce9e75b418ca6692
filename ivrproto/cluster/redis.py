"""
The connection to the shared Redis, and the one way every shared operation
reaches it: :meth:`SharedRedis.run`, which bounds each round trip in time
and turns any failure into an :class:`~ivrproto.cluster.health.Unavailable`
result, so that a caller falls back to its local state and nothing raises.

The client is txredisapi's lazy connection pool, built here from its
:class:`txredisapi.RedisFactory` so that the endpoint (with TLS checked
against the host name) and the reconnect backoff are ours.  How that pool
behaves decides the rest of this module:

- while the pool has no live connection, a command neither fails nor is
  sent: it waits for a connection, however long that takes (with
  ``reconnect``, ``ConnectionError`` is raised only for commands in flight
  when a connection is lost).  A paused server (``SIGSTOP``) keeps its
  connections open and never answers.  Hence a timeout on every round trip,
  here, with the injected reactor; txredisapi's own ``replyTimeout`` is not
  used, since it also applies to the ``AUTH`` and ``SELECT`` sent on each
  new connection, and their failure makes the pool stop reconnecting for
  good.
- a cancelled command leaves the pool consistent (its reply, when it
  comes, is dropped), so timing out is safe.
- when the pool did stop reconnecting (a failed ``AUTH`` or ``SELECT``:
  a wrong password, or a server lost in the middle of a handshake), the
  probe builds a new pool.
- replies are bytes (no charset, no number conversion), so a profile is
  stored and read back exactly as the platform sent it.

While :class:`~ivrproto.cluster.health.SharedHealth` says Redis is down,
operations do not wait on it at all; a ``PING`` every ``probe_interval``
finds when it is back.
"""

from __future__ import annotations

import hashlib
from typing import Any, Callable, Optional, TypeVar, Union

import attrs
import txredisapi
from twisted.internet.defer import (
    CancelledError,
    Deferred,
    TimeoutError,
    maybeDeferred,
    succeed,
)
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.error import ConnectError, ConnectionClosed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.ssl import optionsForClientTLS
from twisted.python.failure import Failure

from ivrproto.cluster.address import RedisAddress
from ivrproto.cluster.health import SharedHealth, Unavailable

__all__ = ["KeyScheme", "RedisConnection", "SharedRedis", "connect", "DEFAULT_TIMEOUT"]

_T = TypeVar("_T")

#: The default bound on one round trip, in seconds: well inside a profile
#: budget of a few hundred milliseconds.
DEFAULT_TIMEOUT = 0.05


@attrs.frozen
class KeyScheme:
    """
    How shared keys are named: ``<prefix><kind>:<digest>``.

    Whatever identifies a caller or a client (a phone number, an external
    id, a client id) is only ever in a key as a keyed BLAKE2b digest, never
    as itself.  With an empty ``salt`` the digest is a plain hash, which a
    reader of the Redis keys could reverse by trying every phone number;
    give every instance of a deployment the same secret salt to prevent
    that.

    :ivar prefix: put before every key, so that several deployments can
        share one Redis (``ivr:`` by default)
    :ivar salt: the digest's key (at most 64 bytes; never shown)
    """

    prefix: str = "ivr:"
    salt: bytes = attrs.field(default=b"", repr=False)

    def __attrs_post_init__(self) -> None:
        if len(self.prefix) > 64 or not all(" " < c <= "~" for c in self.prefix):
            raise ValueError("a key prefix is at most 64 printable ASCII characters")
        if len(self.salt) > 64:
            raise ValueError("a key salt is at most 64 bytes")

    def digest(self, value: Union[str, bytes]) -> str:
        "The hex digest that stands for ``value`` in a key."
        data = value.encode("utf-8") if isinstance(value, str) else value
        return hashlib.blake2b(
            data, digest_size=16, key=self.salt, person=b"ivrproto-shared"
        ).hexdigest()

    def key(self, kind: str, value: Union[str, bytes], suffix: str = "") -> str:
        "The key of ``kind`` for ``value``, with an optional ``suffix``."
        return f"{self.prefix}{kind}:{self.digest(value)}{suffix}"


class RedisConnection:
    """
    A txredisapi lazy connection pool that is rebuilt when it has stopped
    reconnecting.

    :param make: builds and starts a new :class:`txredisapi.RedisFactory`
    """

    def __init__(self, make: Callable[[], Any]) -> None:
        self._make = make
        self._factory = make()
        self._closed = False

    @property
    def handler(self) -> Any:
        "The pool's command handler (``txredisapi.ConnectionHandler``)."
        return self._factory.handler

    @property
    def stuck(self) -> bool:
        "Whether the pool has stopped reconnecting without being closed."
        return not self._closed and self._factory.stopped and not self._factory.size

    def rebuild(self) -> None:
        "Replace a stuck pool with a new one."
        if self.stuck:
            old, self._factory = self._factory, self._make()
            old.disconnect()

    def close(self) -> "Deferred[Any]":
        "Close every connection; the Deferred fires once they are closed."
        self._closed = True
        return self._factory.disconnect()


def connect(
    reactor: Any,
    address: RedisAddress,
    *,
    poolsize: int = 2,
    connect_timeout: float = 1.0,
    max_reconnect_delay: float = 2.0,
    trust_root: Any = None,
) -> RedisConnection:
    """
    Start a lazy pool of ``poolsize`` connections to ``address``.  Nothing
    waits for them: commands sent before they are up wait (bounded by
    :meth:`SharedRedis.run`).

    :param reactor: for the connections (``IReactorTCP`` and time)
    :param connect_timeout: seconds allowed for one TCP connection
    :param max_reconnect_delay: the longest wait between reconnect attempts
    :param trust_root: the CAs for ``rediss://`` (``None``: the platform's)
    """
    endpoint: Any = HostnameEndpoint(reactor, address.host, address.port, timeout=connect_timeout)
    if address.tls:
        endpoint = wrapClientTLS(optionsForClientTLS(address.host, trustRoot=trust_root), endpoint)

    def make() -> Any:
        factory = txredisapi.RedisFactory(
            address.describe(),
            # No SELECT for database 0: one handshake step fewer that can
            # stop the pool (see the module's docstring).
            address.db or None,
            poolsize,
            isLazy=True,
            charset=None,
            password=address.password,
            convertNumbers=False,
            username=address.username,
        )
        factory.initialDelay = 0.1
        factory.maxDelay = max_reconnect_delay
        # A lazy pool reports a failed handshake on this Deferred, which
        # nobody else reads.
        factory.deferred.addErrback(lambda _: None)
        factory.startConnecting(endpoint)
        return factory

    return RedisConnection(make)


def _reason(failure: Failure) -> str:
    if failure.check(TimeoutError, CancelledError):
        return "timeout"
    if failure.check(txredisapi.ConnectionError, ConnectError, ConnectionClosed):
        return "connection"
    return "error"


class SharedRedis:
    """
    Shared operations' access to Redis: a key scheme, a time bound on every
    round trip, and health.

    :param reactor: the clock for the timeouts and probes
    :param connection: the pool (:func:`connect`)
    :param health: where outcomes are recorded
    :param keys: how keys are named
    :param timeout: seconds allowed for one round trip
    :param probe_timeout: seconds allowed for a probe while down
    """

    def __init__(
        self,
        reactor: IReactorTime,
        connection: RedisConnection,
        health: SharedHealth,
        keys: KeyScheme = KeyScheme(),
        *,
        timeout: float = DEFAULT_TIMEOUT,
        probe_timeout: float = 0.5,
    ) -> None:
        if not timeout > 0:
            raise ValueError("timeout must be positive")
        self.reactor = reactor
        self.connection = connection
        self.health = health
        self.keys = keys
        self.timeout = timeout
        self.probe_timeout = probe_timeout
        self._probe: Optional[IDelayedCall] = None
        self._closed = False

    def run(
        self, operation: str, command: Callable[[Any], "Deferred[_T]"]
    ) -> "Deferred[Union[_T, Unavailable]]":
        """
        Run ``command(handler)`` within the timeout.

        :param operation: the operation's name, for the health counters
        :param command: sends one round trip on the txredisapi handler

        :return: a Deferred that never fails: it fires with the command's
            result, or with :class:`Unavailable` when Redis is down, did not
            answer in time, or failed
        """
        if not self.health.up:
            return succeed(self.health.fell_back(Unavailable(operation, "down")))
        return self._send(operation, command, self.timeout)

    def _send(
        self, operation: str, command: Callable[[Any], "Deferred[_T]"], timeout: float
    ) -> "Deferred[Union[_T, Unavailable]]":
        d: Deferred[Any] = maybeDeferred(command, self.connection.handler)
        d.addTimeout(timeout, self.reactor)

        def answered(result: _T) -> _T:
            self.health.succeeded()
            return result

        def failed(failure: Failure) -> Unavailable:
            result = Unavailable(operation, _reason(failure))
            if operation != "probe":
                # A failed probe is not a fallback: Redis is down already.
                self.health.failed(result)
            self._schedule_probe()
            return result

        d.addCallbacks(answered, failed)
        return d

    def _schedule_probe(self) -> None:
        if self._closed or self.health.up or self._probe is not None:
            return
        self._probe = self.reactor.callLater(self.health.probe_interval, self._run_probe)

    def _run_probe(self) -> None:
        self._probe = None
        self.connection.rebuild()
        self._send("probe", lambda r: r.ping(), self.probe_timeout)

    def close(self) -> "Deferred[Any]":
        "Stop probing and close the pool."
        self._closed = True
        if self._probe is not None and self._probe.active():
            self._probe.cancel()
        self._probe = None
        return self.connection.close()
