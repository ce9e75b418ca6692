"""
What ivrproto gives Autobahn's factories and protocols in place of their own
logger and timers, and the one cleanup every protocol does on close.

- :class:`QuietAutobahnLog`, the logger.
- :class:`ReactorTimer`, Autobahn's timers on the injected reactor.
- :func:`cancel_close_handshake_timer`, for ``onClose``.

Autobahn logs the raw upgrade request at debug level, ``Authorization``
header (the bearer token) included, and builds many debug messages per frame
even when nobody reads them.  :class:`QuietAutobahnLog` drops debug, trace
and info before any formatting happens, and passes warnings and errors on to
a Twisted :class:`~twisted.logger.Logger`.
"""

from __future__ import annotations

from typing import Any, Callable

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger


class QuietAutobahnLog:
    """
    A txaio-shaped logger that keeps only warnings, errors and failures.
    """

    def __init__(self, log: Logger) -> None:
        self._log = log

    def debug(self, *args: Any, **kwargs: Any) -> None:
        pass

    trace = debug
    info = debug

    def warn(self, format: str = "", **kwargs: Any) -> None:
        self._log.warn(format, **kwargs)

    def error(self, format: str = "", **kwargs: Any) -> None:
        self._log.error(format, **kwargs)

    critical = error

    def failure(self, format: str = "", failure: Any = None, **kwargs: Any) -> None:
        self._log.failure(format, failure, **kwargs)


class _Cancellable:
    """
    A timer whose ``cancel`` may be called after it fired.
    """

    __slots__ = ("_call",)

    def __init__(self, call: IDelayedCall) -> None:
        self._call = call

    def cancel(self) -> None:
        if self._call.active():
            self._call.cancel()


class ReactorTimer:
    """
    Autobahn's protocol timers (opening and closing handshake, auto-ping) on
    the injected reactor, one ``callLater`` each.

    Autobahn's default batches timers on the global reactor, and a cancelled
    timer's bucket stays scheduled until it fires: unusable with a ``Clock``,
    and it leaves the reactor dirty after a call.  A factory sets this as its
    ``_batched_timer`` (the attribute Autobahn reads).
    """

    def __init__(self, reactor: IReactorTime) -> None:
        self._reactor = reactor

    def call_later(
        self, delay: float, func: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> _Cancellable:
        return _Cancellable(self._reactor.callLater(delay, func, *args, **kwargs))


def cancel_close_handshake_timer(protocol: Any) -> None:
    """
    Cancel a WebSocket protocol's closing-handshake timer, if it has one.

    Autobahn leaves that timer scheduled after the connection is gone (when
    the peer went away without answering our close frame it fires as a
    no-op); a protocol calls this from ``onClose`` so that nothing of an
    ended connection stays on the reactor.
    """
    timer = protocol.closeHandshakeTimeoutCall
    if timer is not None:
        timer.cancel()
        protocol.closeHandshakeTimeoutCall = None
