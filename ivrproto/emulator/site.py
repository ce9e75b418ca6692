"""
The emulated platform's HTTP site: one that writes no access log
(:class:`QuietSite`), behind a router that hands a connection opened for
the Call Control WebSocket straight to the WebSocket server
(:class:`FirstRequestRouter`), wrapped so that every connection can be
aborted and waited for when the platform stops (:class:`ConnectionTracker`).
"""

from __future__ import annotations

from typing import Any, Optional

from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.interfaces import IAddress, IDelayedCall, IReactorTime
from twisted.internet.protocol import Factory, Protocol
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.web.server import Site

__all__ = ["ConnectionTracker", "FirstRequestRouter", "QuietSite"]


class QuietSite(Site):
    """
    A site that writes no access log: the log would hold external ids, and
    under load it is pure cost.
    """

    noisy = False

    def log(self, request: Any) -> None:
        pass

    def startFactory(self) -> None:
        pass  # no log file, and no once-a-second log date timer


class _FirstRequest(Protocol):
    """
    Reads the start of a connection's first request line, then hands the
    connection over (as Autobahn's ``WebSocketResource`` does) and replays
    what it read.
    """

    _buffer = b""
    _timer: Optional[IDelayedCall] = None

    def __init__(self, router: FirstRequestRouter, addr: Optional[IAddress]) -> None:
        self._router = router
        self._addr = addr

    def connectionMade(self) -> None:
        # Idle before the first byte: closed as the HTTP channel would be.
        timeout = self._router.site.timeOut
        if timeout is not None:
            self._timer = self._router.clock.callLater(timeout, self._idle)

    def _idle(self) -> None:
        self._timer = None
        self.transport.loseConnection()  # type: ignore[union-attr]

    def dataReceived(self, data: bytes) -> None:
        self._buffer += data
        upgrade = self._router.upgrade_line
        head = self._buffer[: len(upgrade) + 1]
        if upgrade.startswith(head):
            return  # too little read to tell yet
        ws = head[: len(upgrade)] == upgrade and head[-1:] in (b" ", b"?")
        self._hand_over(self._router.ws.buildProtocol(self._addr) if ws else None)

    def _hand_over(self, protocol: Any) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if protocol is None:
            protocol = self._router.site.buildProtocol(self._addr)
        wrapper = self.transport
        assert isinstance(wrapper, ProtocolWrapper)
        wrapper.wrappedProtocol = protocol
        protocol.makeConnection(wrapper)
        protocol.dataReceived(self._buffer)

    def connectionLost(self, reason: Any = None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


class FirstRequestRouter(Factory):
    """
    Sends a connection whose first request is ``GET <ws_path>`` straight to
    the WebSocket server factory, and every other one to the HTTP site.

    Autobahn's server protocol reads the upgrade request itself, so the
    site's request parsing, routing and ``WebSocketResource`` take-over are
    saved on every Call Control connection; what the client sees is the
    same (the site still routes a later request on a kept-alive connection
    to the WebSocket path through ``WebSocketResource``).  Only works
    wrapped by :class:`ConnectionTracker` (the hand-over swaps the
    wrapper's protocol).

    :param site: the HTTP site
    :param ws: the WebSocket server factory
    :param ws_path: the WebSocket's path
    :param clock: times out a connection that sends nothing
    """

    noisy = False

    def __init__(self, site: Site, ws: Factory, ws_path: bytes, clock: IReactorTime) -> None:
        self.site = site
        self.ws = ws
        self.upgrade_line = b"GET " + ws_path
        self.clock = clock

    def buildProtocol(self, addr: Optional[IAddress]) -> _FirstRequest:
        return _FirstRequest(self, addr)


class ConnectionTracker(WrappingFactory):
    """
    Keeps every connection (HTTP and WebSocket alike) so that
    :meth:`~ivrproto.emulator.platform.Platform.stop` can abort them and wait
    until they are gone.
    """

    noisy = False

    def __init__(self, wrapped: Factory) -> None:
        super().__init__(wrapped)
        self._gone: dict[ProtocolWrapper, Deferred[None]] = {}

    def unregisterProtocol(self, p: ProtocolWrapper) -> None:
        super().unregisterProtocol(p)
        d = self._gone.pop(p, None)
        if d is not None:
            d.callback(None)

    def abort_all(self) -> Deferred[list[None]]:
        """
        Abort every connection.

        :return: fires once all of them are gone
        """
        waiting = []
        for wrapper in list(self.protocols):
            d: Deferred[None] = Deferred()
            self._gone[wrapper] = d
            waiting.append(d)
            wrapper.transport.abortConnection()
        return gatherResults(waiting)
