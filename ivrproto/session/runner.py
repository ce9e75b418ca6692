"""
The I/O around one call's session: the :class:`CallRunner` does what the
session asks (profile lookup, connection, commands) with the token source,
the profile client and the Call Control protocol, and feeds the answers back
as session inputs.  :class:`CallRegistry` keeps the calls in progress and the
outcomes of recent ones.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import attrs
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from ivrproto._types import ProfileFinder, TokenProvider
from ivrproto.config import Timing
from ivrproto.errors import IVRError
from ivrproto.metrics import Metrics
from ivrproto.clients.outcomes import LookupResult
from ivrproto.menu.book import MenuBook
from ivrproto.messages import Command, Play
from ivrproto.callcontrol.connect import connect_call_control
from ivrproto.callcontrol.protocol import CallControlProtocol
from ivrproto.menu.schedules import Hours
from ivrproto.session.machine import new_session
from ivrproto.session.ports import Outcome, clip
from ivrproto.session.record import caller_ref


ConnectFunction = Callable[..., "Deferred[CallControlProtocol]"]




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














