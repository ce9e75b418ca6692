"""
Bounds on the intake's connections, which an outsider opens at will.

twisted.web's only bound is an idle timeout that restarts on every byte: a
client sending one byte every 30 s holds its connection, and its file
descriptor, for ever, and enough of them leave none for the calls' own
WebSocket and HTTP connections.  :class:`IntakeGuard` wraps the site's
factory and adds three bounds:

- a **deadline** for each request: from the moment a connection opens (or,
  on a kept-alive connection, from the first byte of its next request) the
  client has ``request_deadline`` seconds to send the request line, the
  headers and the body.  Bytes arriving do not move the deadline.  A
  connection past it is answered 408 and closed;
- a **cap** of ``max_connections`` intake connections open at once;
- a **descriptor reserve**: no intake connection is kept while the process
  has fewer than ``fd_reserve`` descriptors left below its open-file limit
  (``RLIMIT_NOFILE``), so that the outgoing connections always have room.

A connection beyond the cap or the reserve is answered 503 with
``Retry-After`` at once and closed, without reading its request (a client
whose request bytes had already arrived may see the connection reset
instead of the 503); it holds its descriptor for no longer than that.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Optional

import orjson
from twisted.internet.interfaces import IAddress, IDelayedCall, IReactorTime
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory

from ivrproto.logthrottle import LogThrottle

#: Seconds a connection being closed at its deadline may take to take its
#: 408 before it is cut off (a client that does not read holds no descriptor).
ABORT_GRACE = 2.0


def raw_answer(status: bytes, error: str, extra: bytes = b"") -> bytes:
    """
    A whole HTTP answer with a JSON ``error``, for a connection about to close.
    """
    body = orjson.dumps({"error": error})
    return (
        b"HTTP/1.1 " + status + b"\r\n"
        b"Content-Type: application/json\r\n"
        b"Cache-Control: no-store\r\n"
        b"Connection: close\r\n" + extra + b"Content-Length: %d\r\n\r\n" % len(body) + body
    )


REQUEST_TIMEOUT = raw_answer(b"408 Request Timeout", "request not received in time")
OVER_CAPACITY = raw_answer(
    b"503 Service Unavailable", "too many connections", b"Retry-After: 1\r\n"
)


def open_descriptors() -> Optional[int]:
    """
    How many file descriptors the process has open, or ``None`` where that
    cannot be had cheaply (no ``/proc/self/fd`` or ``/dev/fd``).
    """
    for where in ("/proc/self/fd", "/dev/fd"):
        try:
            # The listing itself holds one descriptor while it runs.
            return len(os.listdir(where)) - 1
        except OSError:
            continue
    return None


def descriptor_limit() -> Optional[int]:
    """
    The process's soft open-file limit, or ``None`` if it has none.
    """
    try:
        import resource
    except ImportError:  # pragma: no cover (not POSIX)
        return None
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return None if soft == resource.RLIM_INFINITY else soft


class GuardedConnection(ProtocolWrapper):
    """
    One intake connection, with its request deadline.  The intake's request
    class tells it when a request is all in (:meth:`request_received`) and
    when its answer has gone (:meth:`request_done`).
    """

    factory: "IntakeGuard"

    _deadline: Optional[IDelayedCall] = None
    _abort: Optional[IDelayedCall] = None
    _in_progress = 0
    _bytes_while_busy = False

    def makeConnection(self, transport: Any) -> None:
        self._arm()
        super().makeConnection(transport)

    def dataReceived(self, data: bytes) -> None:
        if self._in_progress:
            self._bytes_while_busy = True
        elif self._deadline is None:
            self._arm()  # the first byte of the next request
        super().dataReceived(data)

    def request_received(self) -> None:
        "The request's headers and body are all in."
        self._in_progress += 1
        self._bytes_while_busy = False
        self._disarm()

    def request_done(self) -> None:
        "The request's answer has gone (or the connection went)."
        self._in_progress = max(0, self._in_progress - 1)
        if not self._in_progress and self._bytes_while_busy:
            self._arm()  # the next request had begun while this one was answered

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._disarm()
        if self._abort is not None and self._abort.active():
            self._abort.cancel()
        self._abort = None
        super().connectionLost(reason)

    def _arm(self) -> None:
        self._deadline = self.factory.clock.callLater(
            self.factory.request_deadline, self._expired
        )

    def _disarm(self) -> None:
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
        self._deadline = None

    def _expired(self) -> None:
        self._deadline = None
        self.factory.throttle.warn(
            "intake-deadline",
            "intake connection closed: no complete request within {deadline:g}s",
            deadline=self.factory.request_deadline,
        )
        self.factory.timed_out += 1
        assert self.transport is not None
        self.transport.write(REQUEST_TIMEOUT)
        self.transport.loseConnection()
        self._abort = self.factory.clock.callLater(ABORT_GRACE, self._cut_off)

    def _cut_off(self) -> None:
        self._abort = None
        assert self.transport is not None
        self.transport.abortConnection()  # type: ignore[attr-defined]


class _Refused(Protocol):
    """
    A connection beyond the cap: 503 and close, reading nothing.
    """

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.write(OVER_CAPACITY)
        self.transport.loseConnection()


class IntakeGuard(WrappingFactory):
    """
    The intake site's factory, with a request deadline, a connection cap and
    a descriptor reserve (see the module's docstring).

    :param site: the factory wrapped (a :class:`twisted.web.server.Site`)
    :param clock: the time source of the deadlines
    :param max_connections: intake connections open at once, at most
    :param request_deadline: seconds a client has to send a whole request
    :param fd_reserve: descriptors always left free for outgoing connections
    :param open_descriptors: counts the process's open descriptors
    :param descriptor_limit: gives the process's open-file limit (``None``:
        none), read once
    """

    protocol = GuardedConnection
    log = Logger()
    noisy = False

    #: Seconds a count of the open descriptors is trusted, at most.
    RECOUNT_INTERVAL = 0.25
    #: Descriptors a call may open, counted for each connection accepted
    #: since the last count.
    DESCRIPTORS_PER_CALL = 3

    def __init__(
        self,
        site: Factory[Any],
        clock: IReactorTime,
        max_connections: int,
        request_deadline: float,
        fd_reserve: int,
        open_descriptors: Callable[[], Optional[int]] = open_descriptors,
        descriptor_limit: Callable[[], Optional[int]] = descriptor_limit,
    ) -> None:
        super().__init__(site)
        self.clock = clock
        self.max_connections = max_connections
        self.request_deadline = request_deadline
        self.fd_reserve = fd_reserve
        self._open_descriptors = open_descriptors
        self.descriptor_limit = descriptor_limit()
        self.throttle = LogThrottle(clock, self.log)
        self._counted = 0
        self._counted_at: Optional[float] = None
        self._accepted_since = 0
        #: connections answered 503 (cap or reserve) and closed at their deadline
        self.refused = 0
        self.timed_out = 0

    def doStart(self) -> None:
        super().doStart()
        if self.descriptor_limit is None:
            return
        count = self._open_descriptors()
        room = None if count is None else self.descriptor_limit - self.fd_reserve - count
        if room is not None and room <= 0:
            self.log.warn(
                "the intake will refuse every connection: {open} of {limit} descriptors "
                "are open and {reserve} are kept in reserve (raise the open-file limit, "
                "or lower [intake] fd_reserve)",
                open=count,
                limit=self.descriptor_limit,
                reserve=self.fd_reserve,
            )
        else:
            self.log.info(
                "intake: at most {cap} connections; {reserve} of {limit} descriptors kept "
                "for outgoing connections",
                cap=self.max_connections if room is None else min(room, self.max_connections),
                reserve=self.fd_reserve,
                limit=self.descriptor_limit,
            )

    @property
    def connections(self) -> int:
        "Intake connections open now."
        return len(self.protocols)

    def descriptors_low(self) -> bool:
        """
        Whether the process is within ``fd_reserve`` descriptors of its limit.
        """
        if self.descriptor_limit is None:
            return False
        floor = self.descriptor_limit - self.fd_reserve
        now = self.clock.seconds()
        # Listing the descriptors costs about 1 us each (3 ms with 3,000
        # open), too much for every connection of a busy process: between
        # listings, each connection accepted counts for the descriptors its
        # call may open (the intake's, the WebSocket's, an HTTP request's),
        # and the listing is done again when that estimate nears the floor
        # or the last one is old.
        estimate = self._counted + self.DESCRIPTORS_PER_CALL * self._accepted_since
        if (
            self._counted_at is None
            or now - self._counted_at >= self.RECOUNT_INTERVAL
            or estimate >= floor
        ):
            count = self._open_descriptors()
            if count is None:
                return False
            self._counted, self._counted_at, self._accepted_since = count, now, 0
            estimate = count
        if estimate >= floor:
            return True
        self._accepted_since += 1
        return False

    def buildProtocol(self, addr: Optional[IAddress]) -> Any:
        if self.connections >= self.max_connections:
            why = "intake-cap"
        elif self.descriptors_low():
            why = "intake-descriptors"
        else:
            return super().buildProtocol(addr)
        self.refused += 1
        self.throttle.warn(
            why,
            "intake connection refused (503): {open} open, cap {cap}, "
            "descriptor limit {limit}, reserve {reserve}",
            open=self.connections,
            cap=self.max_connections,
            limit=self.descriptor_limit,
            reserve=self.fd_reserve,
        )
        refused = _Refused()
        refused.factory = self
        return refused
