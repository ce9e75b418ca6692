"""
Listeners that fail loudly: a port that cannot be bound (in use, no
permission, an interface this machine does not have) stops the process at
startup with one line naming the listener and the reason, rather than a
traceback in the log and a process that listens on nothing.

Each listener is a service under the application's ``MultiService`` that
binds in ``privilegedStartService`` and raises :class:`CannotListen` there;
``twistd ivr`` and ``twistd ivr-emulator`` bind before twistd daemonizes
(see :func:`ivrproto.tap.makeService`), so that the one line reaches the
terminal and the exit status is 1 in daemon mode as in the foreground.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

from twisted.application.internet import StreamServerEndpointService
from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IListeningPort, IStreamServerEndpoint
from twisted.python.failure import Failure

__all__ = ["CannotListen", "ListenerService", "listen_now", "reason_of"]


class CannotListen(Exception):
    """
    A listener could not be bound.

    :ivar listener: which one (``intake``, ``admin listener``, ``emulator``)
    :ivar description: its endpoint description
    :ivar reason: why, as the system said it (``Address already in use``)
    """

    def __init__(self, listener: str, description: str, reason: str, program: str = "ivrproto") -> None:
        super().__init__(listener, description, reason)
        self.listener = listener
        self.description = description
        self.reason = reason
        self.program = program

    def __str__(self) -> str:
        return (
            f"{self.program}: cannot listen for the {self.listener} on "
            f"{self.description}: {self.reason}"
        )


def reason_of(error: BaseException) -> str:
    """
    The system's words for why ``error`` kept a port from listening.
    """
    if isinstance(error, CannotListenError) and error.socketError is not None:
        socket_error = error.socketError
        strerror = getattr(socket_error, "strerror", None)
        return strerror or str(socket_error)
    return str(error) or type(error).__name__


def listen_now(
    listener: str, description: str, listening: Deferred[Any], program: str = "ivrproto"
) -> Deferred[Any]:
    """
    ``listening`` (an endpoint's ``listen``), raising at once if it has
    already failed, as a TCP or UNIX endpoint's does.

    :raises CannotListen: naming ``listener`` and the reason
    """
    outcome: list[Any] = []

    def note(result: Any) -> Any:
        outcome.append(result)
        return result

    listening.addBoth(note)
    if outcome and isinstance(outcome[0], Failure):
        failure = outcome[0]
        listening.addErrback(lambda _: None)
        raise CannotListen(listener, description, reason_of(failure.value), program)
    return listening


class ListenerService(StreamServerEndpointService):
    """
    A :class:`StreamServerEndpointService` that binds once, in
    ``privilegedStartService``, and raises :class:`CannotListen` there when
    it cannot.

    :param listener: the name the error line gives it
    :param description: the endpoint description the error line gives
    :ivar port: the listening port, once listening
    """

    _raiseSynchronously = True

    def __init__(
        self,
        listener: str,
        description: str,
        endpoint: IStreamServerEndpoint,
        factory: Any,
        on_listening: Optional[Callable[[IListeningPort], Any]] = None,
    ) -> None:
        super().__init__(endpoint, factory)
        self.setName(listener)
        self.listener = listener
        self.description = description
        self.port: Optional[IListeningPort] = None
        self._on_listening = on_listening

    def privilegedStartService(self) -> None:
        if self._waitingForPort is not None:
            return  # bound already (twistd calls this again after the plugin did)
        try:
            super().privilegedStartService()
        except Exception as e:
            raise CannotListen(self.listener, self.description, reason_of(e)) from None
        waiting: Deferred[Any] = self._waitingForPort  # type: ignore[assignment]
        waiting.addCallback(self._listening)

    def _listening(self, port: IListeningPort) -> IListeningPort:
        self.port = port
        if self._on_listening is not None:
            self._on_listening(port)
        return port

    def stopService(self) -> Deferred[None]:
        if self._waitingForPort is None:  # never started
            self.running = False
            return succeed(None)
        self.port = None
        return super().stopService()  # type: ignore[no-any-return]
