"""
The I/O around one call's session: the :class:`CallRunner` does what the
session asks (profile lookup, connection, commands) with the token source,
the profile client and the Call Control protocol, and feeds the answers back
as session inputs.  :class:`CallRegistry` keeps the calls in progress and the
outcomes of recent ones.
"""

from __future__ import annotations

import hashlib
import hmac
from collections import deque
from typing import Any, Callable, Deque, Dict, Mapping, Optional, Protocol

import attrs
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTCP, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from .closure import ClosureSwitch
from .config import Timing
from .errors import IVRError
from .metrics import Metrics
from .lookup import LookupResult
from .menu import MenuBook
from .messages import Command, Play
from .protocol import CallControlProtocol, connect_call_control
from .schedules import Hours
from .session import CallSession, Outcome, SessionCore, clip, new_session


class TokenProvider(Protocol):
    def get_token(self) -> "Deferred[str]": ...

    def invalidate(self, token: str) -> None: ...


class ProfileFinder(Protocol):
    def lookup(self, external_id: str, budget: float) -> "Deferred[LookupResult]": ...


ConnectFunction = Callable[..., "Deferred[CallControlProtocol]"]


def caller_ref(external_id: str, key: bytes) -> str:
    """
    A stable, keyed stand-in for a caller id, safe to log: the raw id never
    appears in logs, errors or metrics.
    """
    digest = hmac.new(key, external_id.encode("utf-8"), hashlib.sha256).hexdigest()
    return "caller-" + digest[:12]


@attrs.frozen
class CallContext:
    """
    What every call shares.

    :ivar connect: opens a Call Control connection; defaults to
        :func:`~ivrproto.protocol.connect_call_control`, replaced in tests
    :ivar schedule_time: the time (seconds after the epoch) the opening
        hours are read at when a call arrives; ``None``: the reactor's time
        (``ivr simulate --at`` gives another)
    """

    reactor: Any  # IReactorTCP and IReactorTime
    tokens: TokenProvider
    profiles: ProfileFinder
    book: MenuBook
    timing: Timing
    websocket_url: str
    log_key: bytes = attrs.field(repr=False)
    connect: ConnectFunction = connect_call_control
    metrics: Optional[Metrics] = None
    schedule_time: Optional[Callable[[], float]] = None

    def arrival_time(self) -> float:
        return self.reactor.seconds() if self.schedule_time is None else self.schedule_time()


class CallRunner:
    """
    Runs one call: implements the session's
    :class:`~ivrproto.session.CallPort` and the protocol's
    :class:`~ivrproto.protocol.CallControlListener`.
    """

    log = Logger()

    def __init__(
        self,
        context: CallContext,
        call_control_id: str,
        external_id: str,
        on_finished: Callable[["CallRunner", Outcome], None],
        on_closed: Optional[Callable[[Optional[int]], None]] = None,
        on_attached: Optional[Callable[[CallControlProtocol], None]] = None,
        hours: Optional[Hours] = None,
    ) -> None:
        self.context = context
        self.call_control_id = call_control_id
        self._external_id = external_id
        self.caller = caller_ref(external_id, context.log_key)
        self._on_finished = on_finished
        self._on_closed = on_closed
        self._on_attached = on_attached
        self._protocol: Optional[CallControlProtocol] = None
        self._connecting: Optional[Deferred[Any]] = None
        self._token: Optional[str] = None
        self._upgrade_retried = False
        self._abandoned = False
        self.accepted_at = context.reactor.seconds()
        self._lookup_started = 0.0
        self._first_play_sent = False
        self._digit_at: Optional[float] = None
        if hours is None:
            hours = context.book.hours_at(context.arrival_time())
        self.session, self.core = new_session(
            call_control_id, context.book, context.timing, context.reactor, self, hours
        )

    def start(self) -> None:
        self._guard(self.session.start)

    def _guard(self, event: Callable[..., None], *args: Any) -> None:
        """
        Feed one input to the session.  The session answers every input; if
        it breaks anyway (a bug), the call still ends, once, and the error
        reaches no other call.
        """
        try:
            event(*args)
        except Exception:
            self.log.failure(
                "{call_control_id}: the session broke on {event}",
                call_control_id=self.call_control_id,
                event=getattr(event, "__name__", "an input"),
            )
            self.end_broken("internal error")

    def end_broken(self, reason: str) -> None:
        """
        End a call whose session could not: drop its connection and record
        a failed outcome, unless it has one.
        """
        if self.core.outcome is not None:
            return
        self.core.cancel_all()
        self.abort()
        self.core.end(Outcome("failed", reason))

    @property
    def state(self) -> str:
        return self.core.phase

    # -- CallPort --------------------------------------------------------------

    def lookup_profile(self) -> None:
        self._lookup_started = self.context.reactor.seconds()
        d = self.context.profiles.lookup(self._external_id, self.context.timing.profile_budget)
        d.addCallbacks(self._profile_known, self._profile_failed)

    def _profile_known(self, result: LookupResult) -> None:
        metrics = self.context.metrics
        if metrics is not None:
            metrics.profile_latency.observe(self.context.reactor.seconds() - self._lookup_started)
        self._guard(self.session.profile_resolved, result.attributes, result.outcome)

    def _profile_failed(self, failure: Failure) -> None:
        # The lookup layer answers every lookup; this is a bug, not an outage.
        self.log.failure(
            "{call_control_id}: profile lookup broke; default menu",
            failure,
            call_control_id=self.call_control_id,
        )
        self._guard(self.session.profile_resolved, None, "failed")

    def open_connection(self) -> None:
        d = self.context.tokens.get_token()
        d.addCallback(self._connect_with)
        d.addErrback(self._connect_failed)
        self._connecting = d

    def _connect_with(self, token: str) -> Deferred[None]:
        self._token = token
        d: Deferred[CallControlProtocol] = self.context.connect(
            self.context.reactor,
            self.context.websocket_url,
            token,
            self.call_control_id,
            self,
            connect_timeout=self.context.timing.handshake_timeout,
            open_handshake_timeout=self.context.timing.handshake_timeout,
            max_frame_size=self.context.timing.max_frame_size,
            max_write_buffer=self.context.timing.max_write_buffer,
            close_timeout=self.context.timing.close_timeout,
        )
        return d.addCallback(self._attached)

    def _attached(self, protocol: CallControlProtocol) -> None:
        self._connecting = None
        self._protocol = protocol
        if self._on_attached is not None:
            self._on_attached(protocol)

    def _connect_failed(self, failure: Failure) -> None:
        self._connecting = None
        if self._abandoned:
            return
        reason = str(failure.value) if isinstance(failure.value, IVRError) else (
            f"cannot connect: {failure.type.__name__}"
        )
        self._guard(self.session.connection_failed, reason)

    def send(self, command: Command) -> bool:
        """
        Send one command; never raises.  ``False`` when there is no open
        connection to take it (closing, closed, or a transport error): the
        session then ends the call.
        """
        protocol = self._protocol
        if protocol is None:
            return False
        try:
            if protocol.send_command(command) is False:
                return False
        except Exception as e:
            # autobahn's Disconnected, or a transport that broke.
            self.log.info(
                "{call_control_id}: could not send {command}: {error}",
                call_control_id=self.call_control_id,
                command=type(command).__name__,
                error=type(e).__name__,
            )
            return False
        metrics = self.context.metrics
        if metrics is not None:
            now = self.context.reactor.seconds()
            if not self._first_play_sent and isinstance(command, Play):
                self._first_play_sent = True
                metrics.first_prompt.observe(now - self.accepted_at)
            if self._digit_at is not None:
                metrics.key_to_command.observe(now - self._digit_at)
                self._digit_at = None
        return True

    def close(self) -> None:
        if self._protocol is not None:
            self._protocol.close()

    def abort(self) -> None:
        self._abandoned = True
        connecting, self._connecting = self._connecting, None
        if connecting is not None:
            connecting.cancel()
        if self._protocol is not None:
            self._protocol.abort()

    def finished(self, outcome: Outcome) -> None:
        self._on_finished(self, outcome)

    # -- CallControlListener ---------------------------------------------------

    def connected(self, protocol: CallControlProtocol) -> None:
        self._protocol = protocol
        self._guard(self.session.connected)

    def handshake_failed(self, reason: str, status: Optional[int]) -> None:
        self._protocol = None
        if self._abandoned:
            return
        if status == 401 and not self._upgrade_retried and self._token is not None:
            # The token was revoked or expired under us: one fresh try.
            self._upgrade_retried = True
            self.context.tokens.invalidate(self._token)
            self.open_connection()
            return
        self._guard(self.session.connection_failed, reason)

    def digit_received(self, digit: str) -> None:
        self._digit_at = self.context.reactor.seconds()
        self._guard(self.session.digit_received, digit)

    def hangup_received(self, reason: Optional[str]) -> None:
        self._guard(self.session.hangup_received, reason)

    def platform_error(self, message: str, code: Optional[str]) -> None:
        limit = self.context.timing.max_reason_length
        message = clip(message, limit)
        if self.core.outcome is None:
            self.log.warn(
                "{call_control_id}: platform error {code}: {message}",
                call_control_id=self.call_control_id,
                code=clip(code or "-", limit),
                message=message,
            )
        self._guard(self.session.platform_error, message)

    def connection_closed(self, code: Optional[int], reason: str) -> None:
        if self._on_closed is not None:
            self._on_closed(code)
        self._guard(self.session.connection_lost, reason)


@attrs.frozen
class CallRecord:
    """
    What ``GET /v1/calls/<id>`` shows of an ended call.

    :ivar menu_version: :attr:`~ivrproto.menu.MenuBook.version` of the menu
        configuration that served the call
    :ivar option: the last option the caller chose (see
        :func:`describe_option`), or ``None``
    :ivar fallback: why the caller got no personal menu (the profile
        lookup's outcome: ``not-found``, ``timed-out``, ``rate-limited``,
        ``failed``...), or ``none``
    :ivar hours: the opening hours that served the call
        (:meth:`~ivrproto.schedules.Hours.to_json`)
    """

    call_control_id: str
    outcome: Outcome
    duration: float
    menu: str
    keys: tuple[str, ...]
    profile: str = "pending"
    menu_version: str = ""
    option: Optional[Mapping[str, Optional[str]]] = None
    fallback: str = "none"
    hours: Optional[Mapping[str, Any]] = None

    def to_json(self) -> dict[str, Any]:
        return {
            "callControlId": self.call_control_id,
            "state": "ended",
            "outcome": self.outcome.to_json(),
            "profile": self.profile,
            "fallback": self.fallback,
            "menu": self.menu,
            "menuVersion": self.menu_version,
            "option": None if self.option is None else dict(self.option),
            "keys": list(self.keys),
            "duration": round(self.duration, 3),
            "hours": None if self.hours is None else dict(self.hours),
        }


#: The profile lookup outcomes that give the caller their own menu.
PERSONAL = frozenset({"found", "hit"})


def describe_option(core: SessionCore) -> Optional[dict[str, Optional[str]]]:
    """
    The last option the caller chose, as the call's record shows it: the
    menu, the key, what the option does and what it names (the target's
    action name and the target for a transfer, the sub-menu, the prompt, or
    the name of the digits a ``collect`` asks for: never the digits).
    """
    if core.selected is None:
        return None
    menu, key, action = core.selected
    name = action.name
    if action.kind == "collect" and action.collect is not None:
        name = action.collect.name
    target = core.book.targets.get(name) if action.kind == "transfer" and name else None
    return {"menu": menu, "key": key, "action": action.kind, "name": name, "target": target}


def _option_text(option: Optional[Mapping[str, Optional[str]]]) -> str:
    if option is None:
        return "none"
    what = " ".join(str(option[k]) for k in ("action", "name") if option.get(k))
    return f"{option['key']} in {option['menu']} ({what})"


def describe_timeline(core: SessionCore) -> str:
    """
    One line with a call's timeline: ``+0.012s connected; +0.020s menu...``,
    with the count of notes left out before the last one.
    """
    parts = [f"+{t:.3f}s {what}" for t, what in core.timeline]
    if core.notes_dropped:
        parts.insert(len(parts) - 1, f"({core.notes_dropped} more notes)")
    return "; ".join(parts)


def describe_keys(core: SessionCore) -> str:
    """
    The keys a call kept, with the count of those it did not.
    """
    text = " ".join(core.keys)
    more = core.keys_total - len(core.keys)
    return f"{text} (+{more} more)" if more > 0 else text


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
        self._closure = None if config is None else ClosureSwitch(self.context.reactor, config)
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
        self.log.info(
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
        self.log.info(
            "{call_control_id}: {kind}{target} ({reason}) after {duration:.3f}s, "
            "caller {caller}, menu {menu_version} ({menu}, {menu_name}), option {option}, "
            "profile {profile}, fallback {fallback}, hours {hours}, keys [{keys}]: {timeline}",
            # ``keys`` and ``timeline`` are bounded by the session
            # (max_keys_kept, max_notes), with a count of what was left out.
            call_control_id=record.call_control_id,
            caller=runner.caller,
            kind=outcome.kind,
            target=f" to {outcome.target}" if outcome.target else "",
            reason=outcome.reason,
            duration=record.duration,
            menu_version=record.menu_version,
            menu=record.menu,
            menu_name=fields["menu_name"] or "none",
            option=_option_text(record.option),
            profile=record.profile,
            fallback=record.fallback,
            hours="always" if core.hours is None else core.hours.label,
            keys=describe_keys(core),
            timeline=describe_timeline(core),
            call_record=fields,
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
