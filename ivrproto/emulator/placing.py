"""
Placing calls: :func:`place_calls` expects each call of a scenario on the
platform and tells an intake about it (``POST /v1/calls``);
:func:`accept_calls_by_hand` does the same for calls placed by hand.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Optional, Union

import attrs
from treq.client import HTTPClient
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.error import ConnectError
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import Agent

from ivrproto.emulator.calllog import CallLog
from ivrproto.emulator.platform import Platform
from ivrproto.emulator.scenario import CallSpec

__all__ = ["accept_calls_by_hand", "place_calls", "reactor_http"]

_log = Logger()

#: Seconds an intake POST may take.
INTAKE_TIMEOUT = 5.0
#: Seconds between two tries of a POST the intake refused to connect.
INTAKE_RETRY = 0.5


def reactor_http(reactor: Any) -> Any:
    """
    :return: a treq client on ``reactor``'s own agent: treq's module-level
        functions would use the global reactor whatever ``reactor`` is
    """
    return HTTPClient(Agent(reactor))


def place_calls(
    reactor: Any,
    platform: Platform,
    calls: Iterable[CallSpec],
    intake_url: Optional[str] = None,
    http: Any = None,
    interval: float = 0.0,
    on_call: Optional[Callable[[CallLog], object]] = None,
    intake_wait: float = 0.0,
) -> Deferred[list[CallLog]]:
    """
    Place calls one after the other: expect each on the platform and, when
    ``intake_url`` is given, POST ``{"callControlId", "externalId"}`` to it.

    A failed POST (no answer within 5 s, or not a 2xx status) is logged and
    added to the record's violations; when the client has not connected by
    then, the call ends with the outcome ``"intake-failed"``.  Nothing is
    raised for it.

    :param reactor: spaces the calls (``IReactorTime``) and times the POSTs
    :param calls: the calls, placed in this order
    :param intake_url: where to announce each call, or ``None``
    :param http: a treq-like client (``post``); by default treq on
        ``reactor`` (:func:`reactor_http`)
    :param interval: seconds between two calls
    :param on_call: called with each record as its call is placed
    :param intake_wait: while the intake refuses connections, try each POST
        again every half second for up to this many seconds (so that the
        emulator may be started before the service)
    :return: fires with every call's record, in order, once every call has
        finished; cancelling it stops placing further calls
    """
    intake = None
    if intake_url is not None:
        http = reactor_http(reactor) if http is None else http
        intake = _Intake(reactor, http, intake_url, intake_wait)
        accept_calls_by_hand(reactor, platform, intake_url, http, intake_wait, on_call)
    return _Placer(reactor, platform, list(calls), interval, on_call, intake).start()


class _Placer:
    """
    Places the calls of one :func:`place_calls`, ``interval`` apart.
    """

    def __init__(
        self,
        reactor: Any,
        platform: Platform,
        specs: list[CallSpec],
        interval: float,
        on_call: Optional[Callable[[CallLog], object]],
        intake: Optional[_Intake],
    ) -> None:
        self._reactor = reactor
        self._platform = platform
        self._specs = specs
        self._interval = interval
        self._on_call = on_call
        self._intake = intake
        self._records: list[CallLog] = []
        self._finished: list[Deferred[CallLog]] = []
        self._pending: set[IDelayedCall] = set()
        self._result: Deferred[list[CallLog]] = Deferred(self._cancel)

    def start(self) -> Deferred[list[CallLog]]:
        """
        Place the first call (the others follow on the reactor).

        :return: as :func:`place_calls`
        """
        if self._specs:
            self._place(0)
        else:
            self._result.callback(self._records)
        return self._result

    def call_later(self, delay: float, f: Callable[[], object]) -> IDelayedCall:
        """
        Schedule ``f``; cancelling the result cancels it.
        """
        self._pending.difference_update([t for t in self._pending if not t.active()])
        timer: IDelayedCall = self._reactor.callLater(delay, f)
        self._pending.add(timer)
        return timer

    def _cancel(self, _: Deferred[list[CallLog]]) -> None:
        for timer in self._pending:
            if timer.active():
                timer.cancel()
        self._pending.clear()

    def _place(self, index: int) -> None:
        spec = self._specs[index]
        try:
            record = self._platform.expect_call(
                spec.call_id, spec.external_id, spec.script, spec.handshake
            )
        except Exception:
            self._result.errback(Failure())
            return
        self._records.append(record)
        if self._on_call is not None:
            self._on_call(record)
        self._finished.append(record.when_finished())
        if self._intake is not None:
            self._intake.announce(record, self.call_later)
        if index + 1 < len(self._specs):
            self.call_later(self._interval, lambda: self._place(index + 1))
        else:
            gatherResults(self._finished).addCallback(self._all_finished)

    def _all_finished(self, _: object) -> None:
        if not self._result.called:
            self._result.callback(self._records)


def accept_calls_by_hand(
    reactor: Any,
    platform: Platform,
    intake_url: str,
    http: Any = None,
    intake_wait: float = 0.0,
    on_call: Optional[Callable[[CallLog], object]] = None,
) -> None:
    """
    Announce the calls placed by hand on ``platform`` (``POST
    /emulator/calls``) to ``intake_url``, as :func:`place_calls` announces
    scripted ones.

    :param http: a treq-like client (``post``); by default treq on
        ``reactor`` (:func:`reactor_http`)
    :param intake_wait: as for :func:`place_calls`
    :param on_call: called with each record as its call is placed
    """
    http = reactor_http(reactor) if http is None else http
    intake = _Intake(reactor, http, intake_url, intake_wait)
    platform.announce_calls_to(
        intake_url, lambda record: intake.announce(record, platform.call_later), on_call
    )


@attrs.frozen
class _Intake:
    """
    Where calls are announced.

    :ivar reactor: times the POSTs
    :ivar http: a treq-like client (``post``)
    :ivar url: the intake's ``/v1/calls`` URL
    :ivar wait: while the intake refuses connections, how long each POST is
        tried again
    """

    reactor: Any
    http: Any
    url: str
    wait: float

    def announce(
        self,
        record: CallLog,
        call_later: Callable[[float, Callable[[], object]], IDelayedCall],
    ) -> None:
        """
        POST the call to the intake; never fails.  While the connection is
        refused, try again every half second (on ``call_later``) until
        :attr:`wait` seconds have passed.
        """
        _announce(self, record, call_later)


def _announce(
    intake: _Intake,
    record: CallLog,
    call_later: Callable[[float, Callable[[], object]], IDelayedCall],
) -> None:
    """
    :meth:`_Intake.announce`, as closures over one POST and its retries.
    """
    reactor, http, url = intake.reactor, intake.http, intake.url
    body = {"callControlId": record.call_id, "externalId": record.external_id}
    give_up_at = reactor.seconds() + intake.wait

    def answered(response: Any) -> Deferred[Any]:
        code = response.code
        reading = response.content()
        reading.addTimeout(INTAKE_TIMEOUT, reactor)
        return reading.addCallback(lambda _: code)

    def checked(code: int) -> None:
        if not 200 <= code < 300:
            failed(f"HTTP {code}")

    def failed(reason: Union[str, Failure]) -> None:
        if (
            isinstance(reason, Failure)
            and reason.check(ConnectError)
            and reactor.seconds() + INTAKE_RETRY <= give_up_at
        ):
            call_later(INTAKE_RETRY, post)
            return
        if isinstance(reason, Failure):
            reason = reason.getErrorMessage() or reason.type.__name__
        _log.warn(
            "intake POST for {call_id} failed: {reason}",
            call_id=record.call_id,
            reason=reason,
        )
        record.violations.append(f"intake POST failed: {reason}")
        if not record.connected:
            record.finish(reactor.seconds(), "intake-failed")

    def post() -> None:
        try:
            d = http.post(url, json=body, timeout=INTAKE_TIMEOUT, reactor=reactor)
        except Exception:
            failed(Failure())
            return
        d.addCallback(answered)
        d.addCallbacks(checked, failed)
        d.addErrback(lambda f: _log.failure("intake POST bookkeeping failed", f))

    post()
