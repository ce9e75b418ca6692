"""
The calls in progress and the outcomes of recent ones: :class:`CallRegistry`
starts a :class:`~ivrproto.session.runner.CallRunner` per accepted call,
answers status queries, and drains the calls on shutdown.
"""


from __future__ import annotations

from collections import deque
from typing import Any, Callable, Deque, Dict, Optional

from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger

from ivrproto.menu.closure import ClosureSwitch
from ivrproto.callcontrol.protocol import CallControlProtocol
from ivrproto.menu.schedules import Hours
from ivrproto.session.ports import Outcome
from ivrproto.session.runner import CallContext, CallRunner
from ivrproto.session.record import PERSONAL, CallRecord, _option_text, describe_keys, describe_option, describe_timeline


__all__ = [
    "CallRegistry",
]


class CallRegistry:
    """
    The calls in progress, and what became of recent ones.

    :param retention: seconds an ended call stays visible
    """

    log = Logger()

    def __init__(
        self,
        context: CallContext,
        max_active: int,
        retention: float,
        on_call_ended: Optional[Callable[[CallRecord], None]] = None,
    ) -> None:
        self._closure: Optional[ClosureSwitch] = None
        self._watching = False
        self.context = context
        self.max_active = max_active
        self.retention = retention
        self.active: Dict[str, CallRunner] = {}
        self.ended: Dict[str, CallRecord] = {}
        # (expiry time, id, record) in the order the calls ended: expired
        # records are dropped as calls end and when one is looked up, so an
        # ended call costs no reactor timer
        self._expiry: Deque[tuple[float, str, CallRecord]] = deque()
        self._on_call_ended = on_call_ended
        #: where ended calls' records are also written for the other
        #: instances, and read back by ``GET /v1/calls/<id>`` (``None``:
        #: this instance's own only; see :mod:`ivrproto.cluster.calls`)
        self.outcome_store: Optional[Any] = None
        self._waiters: Dict[str, list[Deferred[CallRecord]]] = {}
        self.totals: Dict[str, int] = {}
        self.fallbacks: Dict[str, int] = {}
        self.closes: Dict[int, int] = {}
        #: calls ended, by the opening hours that served them (Hours.label)
        self.hours_served: Dict[str, int] = {}
        self.connections: set[CallControlProtocol] = set()
        self._idle_waiters: list[Deferred[None]] = []

    @property
    def full(self) -> bool:
        return len(self.active) >= self.max_active

    @property
    def context(self) -> CallContext:
        return self._context

    @context.setter
    def context(self, context: CallContext) -> None:
        # A reload's new [closure] takes over the watching at once.
        self._context = context
        if self._watching:
            self.closure

    @property
    def closure(self) -> Optional[ClosureSwitch]:
        """
        The emergency closure switch of the current menu book's
        ``[closure]``, made when first needed and again when a reload
        changes the settings.
        """
        config = self.context.book.closure
        old = self._closure
        if old is not None and old.config == config:
            return old
        if old is not None:
            old.stop()
        self._closure = None if config is None else ClosureSwitch(self.context.reactor, config, None if old is None else old.admin)
        if self._closure is not None and self._watching:
            self._closure.start()
        return self._closure

    def watch_closure(self) -> None:
        """
        Look at the closure's flag file every ``check_interval`` from now
        on (and not only when calls arrive), so that a change is logged
        when it is made.
        """
        self._watching = True
        switch = self.closure
        if switch is not None:
            switch.start()

    def stop_watching_closure(self) -> None:
        self._watching = False
        if self._closure is not None:
            self._closure.stop()

    def hours_now(self) -> Hours:
        """
        The opening hours a call arriving now gets, with the emergency
        closure if it is on.
        """
        switch = self.closure
        notice = None if switch is None else switch.current()
        return self.context.book.hours_at(self.context.arrival_time(), notice)

    def start_call(self, call_control_id: str, external_id: str) -> CallRunner:
        """
        Start a session for a new call.  The caller checks for duplicates
        and capacity first.
        """
        runner = CallRunner(
            self.context,
            call_control_id,
            external_id,
            self._finished,
            self._closed,
            self._attached,
            self.hours_now(),
        )
        self.active[call_control_id] = runner
        self._forget(call_control_id)
        # At debug: the call's end-of-call line carries the caller and the
        # timeline, and one line per call is cheaper than two.
        self.log.debug(
            "{call_control_id}: call arrived from {caller}",
            call_control_id=call_control_id,
            caller=runner.caller,
        )
        runner.start()
        return runner

    def _finished(self, runner: CallRunner, outcome: Outcome) -> None:
        core = runner.core
        self.active.pop(runner.call_control_id, None)
        duration = self.context.reactor.seconds() - core.started_at
        try:
            record = CallRecord(
                runner.call_control_id,
                outcome,
                duration,
                "none" if core.menu is None else ("default" if core.menu.is_default else "profile"),
                tuple(core.keys),
                core.profile,
                core.book.version,
                describe_option(core),
                "none" if core.profile in PERSONAL else core.profile,
                None if core.hours is None else core.hours.to_json(),
            )
            self.log_call_record(runner, record)
        except Exception:
            # The record is the audit trail: a call that cannot be described
            # in full is still recorded, with what is certain.
            self.log.failure(
                "{call_control_id}: describing the call broke",
                call_control_id=runner.call_control_id,
            )
            record = CallRecord(runner.call_control_id, outcome, duration, "none", ())
            self.log.info(
                "{call_control_id}: {kind} ({reason}), caller {caller}, menu {menu_version}",
                call_control_id=runner.call_control_id,
                caller=runner.caller,
                kind=outcome.kind,
                reason=outcome.reason,
                menu_version=core.book.version,
                call_record={
                    "call_control_id": runner.call_control_id,
                    "caller": runner.caller,
                    "menu_version": core.book.version,
                    "outcome": outcome.kind,
                    "reason": outcome.reason,
                    "target": outcome.target,
                },
            )
        self.totals[outcome.kind] = self.totals.get(outcome.kind, 0) + 1
        label = "always" if core.hours is None else core.hours.label
        self.hours_served[label] = self.hours_served.get(label, 0) + 1
        if core.menu is not None and core.menu.is_default:
            self.fallbacks[core.profile] = self.fallbacks.get(core.profile, 0) + 1
        if self.retention > 0:
            now = self.context.reactor.seconds()
            self._expire(now)
            self.ended[runner.call_control_id] = record
            self._expiry.append((now + self.retention, runner.call_control_id, record))
        if self._on_call_ended is not None:
            self._on_call_ended(record)
        if self.outcome_store is not None:
            self.outcome_store.call_ended(runner.call_control_id, record.to_json())
        for waiter in self._waiters.pop(runner.call_control_id, []):
            waiter.callback(record)
        self._check_idle()

    def log_call_record(self, runner: CallRunner, record: CallRecord) -> None:
        """
        Write the call's end-of-call line, its audit trail: once per call,
        however it ended.  Every field is in the text and, for log formats
        that keep fields (JSON), in the one field ``call_record``.  The
        digits a ``collect`` step took are never in it.
        """
        core = runner.core
        outcome = record.outcome
        fields = {
            "call_control_id": record.call_control_id,
            "caller": runner.caller,
            "menu_version": record.menu_version,
            "menu": record.menu,
            "menu_name": None if core.menu is None else core.menu.name,
            "profile": record.profile,
            "fallback": record.fallback,
            "option": record.option,
            "outcome": outcome.kind,
            "reason": outcome.reason,
            "target": outcome.target,
            "action": outcome.action,
            "duration": round(record.duration, 3),
            "keys": list(record.keys),
            "keys_total": core.keys_total,
            "hours": record.hours,
        }
        target = f" to {outcome.target}" if outcome.target else ""
        hours = "always" if core.hours is None else core.hours.label
        # Formatted here, once: twisted.logger would parse this 14-field
        # format again for every observer.  ``keys`` and ``timeline`` are
        # bounded by the session (max_keys_kept, max_notes), with a count of
        # what was left out.
        line = (
            f"{record.call_control_id}: {outcome.kind}{target} ({outcome.reason}) after "
            f"{record.duration:.3f}s, caller {runner.caller}, menu {record.menu_version} "
            f"({record.menu}, {fields['menu_name'] or 'none'}), "
            f"option {_option_text(record.option)}, profile {record.profile}, "
            f"fallback {record.fallback}, hours {hours}, keys [{describe_keys(core)}]: "
            f"{describe_timeline(core)}"
        )
        self.log.info(
            "{line}", line=line, call_control_id=record.call_control_id, call_record=fields
        )

    def _attached(self, protocol: CallControlProtocol) -> None:
        self.connections.add(protocol)

        def gone(result: Any) -> None:
            self.connections.discard(protocol)
            self._check_idle()

        protocol.is_closed.addBoth(gone)

    def _check_idle(self) -> None:
        if not self.active and not self.connections:
            waiters, self._idle_waiters = self._idle_waiters, []
            for waiter in waiters:
                waiter.callback(None)

    def when_idle(self) -> Deferred[None]:
        """
        Fires once no call is in progress and every Call Control connection
        has closed.
        """
        d: Deferred[None] = Deferred()
        self._idle_waiters.append(d)
        self._check_idle()
        return d

    def drain(self) -> None:
        """
        End every call in progress without cutting a caller off (see
        :meth:`~ivrproto.session.CallSession.drain`).
        """
        for runner in list(self.active.values()):
            # One call that breaks must not keep the others from their
            # transfer: it is logged and ended on its own.
            runner._guard(runner.session.drain)
            if self.active.get(runner.call_control_id) is runner:
                # Every call ends, and is recorded, before the service stops.
                runner.end_broken("still in progress when the service stopped")

    def abort_connections(self) -> None:
        """
        Drop every Call Control connection still open.
        """
        for protocol in list(self.connections):
            try:
                protocol.dropConnection(abort=True)
            except Exception:
                self.log.failure("could not drop a Call Control connection")

    def _closed(self, code: Optional[int]) -> None:
        key = 1006 if code is None else code
        self.closes[key] = self.closes.get(key, 0) + 1

    def when_ended(self, call_control_id: str) -> Deferred[CallRecord]:
        """
        A Deferred that fires with the call's record when it ends (at once
        if it has ended and is still retained).
        """
        self._expire(self.context.reactor.seconds())
        record = self.ended.get(call_control_id)
        if record is not None and call_control_id not in self.active:
            return succeed(record)
        d: Deferred[CallRecord] = Deferred()
        self._waiters.setdefault(call_control_id, []).append(d)
        return d

    def _expire(self, now: float) -> None:
        expiry = self._expiry
        while expiry and expiry[0][0] <= now:
            _, call_control_id, record = expiry.popleft()
            if self.ended.get(call_control_id) is record:
                del self.ended[call_control_id]

    def _forget(self, call_control_id: str) -> None:
        self.ended.pop(call_control_id, None)

    def describe(self, call_control_id: str) -> Optional[dict[str, Any]]:
        """
        The JSON view of a call, or ``None`` if unknown.
        """
        runner = self.active.get(call_control_id)
        if runner is not None:
            return {
                "callControlId": call_control_id,
                "state": runner.state,
                "profile": runner.core.profile,
                "keys": list(runner.core.keys),
            }
        self._expire(self.context.reactor.seconds())
        record = self.ended.get(call_control_id)
        return None if record is None else record.to_json()
