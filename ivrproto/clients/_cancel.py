"""
Cancellation for the clients' coroutines: a sleep on the injected clock and
:func:`run_cancellable`, which runs a coroutine as a Deferred that a
deadline can cancel.
"""


from __future__ import annotations

from typing import Any, Callable, Coroutine, TypeVar


from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater
from twisted.python.failure import Failure


__all__ = [
    "sleep",
    "Cancelled",
    "run_cancellable",
]
_T = TypeVar("_T")


def sleep(reactor: IReactorTime, seconds: float) -> "Deferred[None]":
    """
    A Deferred that fires after ``seconds`` on ``reactor``.  Cancelling it
    cancels the timer.
    """
    return deferLater(reactor, max(0.0, seconds), lambda: None)


class Cancelled:
    """
    Whether the caller cancelled an operation run by :func:`run_cancellable`.

    A cancellation reaches the coroutine as a :class:`CancelledError` thrown
    where it awaits; a request timeout can raise the same exception, and this
    flag tells the two apart.
    """

    def __init__(self) -> None:
        self.cancelled = False

    def __bool__(self) -> bool:
        return self.cancelled


def run_cancellable(
    make: Callable[[Cancelled], Coroutine["Deferred[Any]", Any, _T]],
) -> "Deferred[_T]":
    """
    Run the coroutine ``make(flag)`` and return a Deferred for its result.

    Cancelling the Deferred sets ``flag``, then cancels whatever the coroutine
    awaits; the coroutine must re-raise the :class:`CancelledError` it then
    sees whenever ``flag`` is set.  However the coroutine ends after a
    cancellation, the returned Deferred fails with :class:`CancelledError`
    and nothing is left unhandled.
    """
    flag = Cancelled()
    outer: Deferred[_T]

    def cancel(d: "Deferred[_T]") -> None:
        flag.cancelled = True
        inner.cancel()

    outer = Deferred(cancel)
    inner = Deferred.fromCoroutine(make(flag))

    def done(result: Any) -> None:
        if outer.called:
            # Already failed with CancelledError; swallow what came after.
            return None
        if flag.cancelled and not (
            isinstance(result, Failure) and result.check(CancelledError)
        ):
            outer.errback(CancelledError())
            return None
        if isinstance(result, Failure):
            outer.errback(result)
        else:
            outer.callback(result)
        return None

    inner.addBoth(done)
    return outer
