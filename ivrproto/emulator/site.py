"""
The emulated platform's HTTP site: one that writes no access log
(:class:`QuietSite`), wrapped so that every connection it has can be
aborted and waited for when the platform stops (:class:`ConnectionTracker`).
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, gatherResults
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.web.server import Site

__all__ = ["ConnectionTracker", "QuietSite"]


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


class ConnectionTracker(WrappingFactory):
    """
    Keeps every connection (HTTP and WebSocket alike) so that
    :meth:`~ivrproto.emulator.platform.Platform.stop` can abort them and wait
    until they are gone.
    """

    noisy = False

    def __init__(self, wrapped: Site) -> None:
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
