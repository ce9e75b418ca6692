"""
One call's state machine.  It decides everything that happens on a call and
does no I/O of its own: it asks a :class:`CallPort` to look the profile up,
open the connection, send commands and close, and it owns the call's timers
(profile budget, handshake, no input, confirmation) on an injected clock.

States::

    idle -> awaiting_both -> awaiting_profile | awaiting_connection
         -> in_menu -> confirming -> ended

Every input is accepted in every state: those that a state does not expect
(a late profile, a key while confirming, a close after the transfer) are
answered deliberately, most by doing nothing.
"""

from __future__ import annotations

from typing import Any, Callable, List, Mapping, Optional, Protocol

import attrs
from automat import TypeMachineBuilder
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from .config import Timing
from .menu import Menu, MenuBook
from .messages import Command, Play, Transfer, play_menu

log = Logger()


@attrs.frozen
class Outcome:
    """
    How a call ended.

    :ivar kind: ``transferred``, ``hungup`` or ``failed``
    :ivar target: the transfer target, when transferred
    :ivar action: the configured action name of the target
    :ivar reason: why: ``selected``, ``no-input``, ``invalid-input``,
        ``platform-error``, ``caller``, or what failed
    """

    kind: str
    reason: str
    target: Optional[str] = None
    action: Optional[str] = None

    def to_json(self) -> dict[str, Any]:
        result: dict[str, Any] = {"kind": self.kind, "reason": self.reason}
        if self.target is not None:
            result["target"] = self.target
            result["action"] = self.action
        return result


class CallPort(Protocol):
    """
    What a session drives.  The service implements it with the token source,
    the profile client and the Call Control protocol; tests implement it with
    a recording fake.
    """

    def lookup_profile(self) -> None:
        """
        Start the profile lookup; answer with
        :meth:`CallSession.profile_resolved`.
        """

    def open_connection(self) -> None:
        """
        Open the Call Control connection; answer with
        :meth:`CallSession.connected` or :meth:`CallSession.connection_failed`.
        """

    def send(self, command: Command) -> None:
        """
        Send one command on the open connection.
        """

    def close(self) -> None:
        """
        Close the connection normally (code 1000).
        """

    def abort(self) -> None:
        """
        Give up on a connection that is still being opened.
        """

    def finished(self, outcome: Outcome) -> None:
        """
        The call has ended; nothing more will be asked of the port.
        """


class CallSession(Protocol):
    """
    The inputs of a call's state machine.
    """

    def start(self) -> None:
        "A call was accepted."

    def profile_resolved(self, attributes: Optional[Mapping[str, Any]], how: str) -> None:
        "The profile lookup ended: ``attributes`` is ``None`` with no profile."

    def profile_budget_spent(self) -> None:
        "The lookup took longer than its budget."

    def connected(self) -> None:
        "The platform answered ``connected``."

    def connection_failed(self, reason: str) -> None:
        "The connection could not be opened or was refused."

    def handshake_timed_out(self) -> None:
        "No ``connected`` within the handshake timeout."

    def digit_received(self, digit: str) -> None:
        "The caller pressed a key."

    def option_chosen(self, key: str) -> None:
        "A key that selects an option of the menu (internal)."

    def input_timed_out(self) -> None:
        "No key within the no-input timeout."

    def route_to_operator(self, reason: str) -> None:
        "Hand the caller to the operator (internal)."

    def confirm_elapsed(self) -> None:
        "The confirmation delay is over."

    def hangup_received(self, reason: Optional[str]) -> None:
        "The caller or the platform ended the call."

    def platform_error(self, message: str) -> None:
        "The platform reported a failure after ``connected``."

    def connection_lost(self, reason: str) -> None:
        "The connection closed (after ``connected``)."


@attrs.define(eq=False)
class SessionCore:
    """
    What a session knows and holds.

    :ivar timeline: ``(seconds since start, what happened)`` pairs, for the
        call's log line and for tests
    """

    call_control_id: str
    book: MenuBook
    timing: Timing
    clock: IReactorTime
    port: CallPort
    machine: Optional[CallSession] = None
    phase: str = "idle"
    menu: Optional[Menu] = None
    profile: str = "pending"
    repeats: int = 0
    invalid: int = 0
    keys: List[str] = attrs.Factory(list)
    chosen: Optional[str] = None
    outcome: Optional[Outcome] = None
    started_at: float = 0.0
    timeline: List[tuple[float, str]] = attrs.Factory(list)
    budget_timer: Optional[IDelayedCall] = None
    handshake_timer: Optional[IDelayedCall] = None
    input_timer: Optional[IDelayedCall] = None
    confirm_timer: Optional[IDelayedCall] = None

    def note(self, what: str) -> None:
        self.timeline.append((self.clock.seconds() - self.started_at, what))

    def later(self, delay: float, event: Callable[[], None]) -> IDelayedCall:
        return self.clock.callLater(delay, event)

    def cancel(self, name: str) -> None:
        timer: Optional[IDelayedCall] = getattr(self, name)
        if timer is not None:
            if timer.active():
                timer.cancel()
            setattr(self, name, None)

    def cancel_all(self) -> None:
        for name in ("budget_timer", "handshake_timer", "input_timer", "confirm_timer"):
            self.cancel(name)

    def choose_menu(self, attributes: Optional[Mapping[str, Any]], how: str) -> None:
        self.cancel("budget_timer")
        self.profile = how
        self.menu = self.book.menu_for(attributes)
        self.note(f"profile {how}; {'default' if self.menu.is_default else 'profile'} menu")

    def send_menu(self) -> None:
        assert self.menu is not None
        self.phase = "in_menu"
        for command in play_menu(self.call_control_id, self.menu.prompt_urls, self.menu.keys):
            self.port.send(command)
        self.note(f"menu offered ({' '.join(self.menu.keys)})")
        self.restart_input_timer()

    def restart_input_timer(self) -> None:
        assert self.machine is not None
        self.cancel("input_timer")
        self.input_timer = self.later(self.timing.no_input_timeout, self.machine.input_timed_out)

    def end(self, outcome: Outcome) -> None:
        self.cancel_all()
        self.phase = "ended"
        self.outcome = outcome
        self.note(f"ended: {outcome.kind} ({outcome.reason})")
        self.port.finished(outcome)

    def transfer(self, key_or_none: Optional[str], reason: str) -> None:
        """
        Send the one transfer of this call and close.
        """
        if key_or_none is None:
            action = self.book.operator
            target = self.book.operator_target
        else:
            assert self.menu is not None
            action = self.menu.actions[key_or_none]
            target = self.menu.targets[key_or_none]
        self.port.send(Transfer(self.call_control_id, target))
        self.note(f"transfer to {target}")
        self.port.close()
        self.end(Outcome("transferred", reason, target, action))


builder = TypeMachineBuilder(CallSession, SessionCore)
idle = builder.state("idle")
awaiting_both = builder.state("awaiting_both")
awaiting_profile = builder.state("awaiting_profile")
awaiting_connection = builder.state("awaiting_connection")
in_menu = builder.state("in_menu")
confirming = builder.state("confirming")
ended = builder.state("ended")

LIVE = (awaiting_profile, in_menu, confirming)
CONNECTING = (awaiting_both, awaiting_connection)


@idle.upon(CallSession.start).to(awaiting_both)
def _start(session: CallSession, core: SessionCore) -> None:
    core.started_at = core.clock.seconds()
    core.phase = "connecting"
    core.note("call accepted")
    core.budget_timer = core.later(core.timing.profile_budget, session.profile_budget_spent)
    core.handshake_timer = core.later(core.timing.handshake_timeout, session.handshake_timed_out)
    core.port.lookup_profile()
    core.port.open_connection()


# --- the profile and the connection, in either order -------------------------


@awaiting_both.upon(CallSession.profile_resolved).to(awaiting_connection)
def _profile_first(
    session: CallSession, core: SessionCore, attributes: Optional[Mapping[str, Any]], how: str
) -> None:
    core.choose_menu(attributes, how)


@awaiting_both.upon(CallSession.profile_budget_spent).to(awaiting_connection)
def _budget_first(session: CallSession, core: SessionCore) -> None:
    core.budget_timer = None
    core.choose_menu(None, "timed-out")


@awaiting_both.upon(CallSession.connected).to(awaiting_profile)
def _connected_first(session: CallSession, core: SessionCore) -> None:
    core.cancel("handshake_timer")
    core.note("connected")


@awaiting_profile.upon(CallSession.profile_resolved).to(in_menu)
def _profile_second(
    session: CallSession, core: SessionCore, attributes: Optional[Mapping[str, Any]], how: str
) -> None:
    core.choose_menu(attributes, how)
    core.send_menu()


@awaiting_profile.upon(CallSession.profile_budget_spent).to(in_menu)
def _budget_second(session: CallSession, core: SessionCore) -> None:
    core.budget_timer = None
    core.choose_menu(None, "timed-out")
    core.send_menu()


@awaiting_connection.upon(CallSession.connected).to(in_menu)
def _connected_second(session: CallSession, core: SessionCore) -> None:
    core.cancel("handshake_timer")
    core.note("connected")
    core.send_menu()


for _state in CONNECTING:

    @_state.upon(CallSession.connection_failed).to(ended)
    def _refused(session: CallSession, core: SessionCore, reason: str) -> None:
        core.note(f"connection failed: {reason}")
        core.end(Outcome("failed", reason))

    @_state.upon(CallSession.handshake_timed_out).to(ended)
    def _handshake_timeout(session: CallSession, core: SessionCore) -> None:
        core.handshake_timer = None
        core.port.abort()
        core.end(Outcome("failed", "handshake timed out"))


# A late profile (the budget already chose the default menu) changes nothing.
for _state in (awaiting_connection, in_menu, confirming, ended):
    _state.upon(CallSession.profile_resolved).loop().returns(None)


# --- the menu ----------------------------------------------------------------


@in_menu.upon(CallSession.digit_received).loop()
def _digit(session: CallSession, core: SessionCore, digit: str) -> None:
    assert core.menu is not None
    core.keys.append(digit)
    core.note(f"key {digit}")
    if digit in core.menu.targets:
        session.option_chosen(digit)
        return
    core.invalid += 1
    if 0 < core.timing.max_invalid <= core.invalid:
        session.route_to_operator("invalid-input")
        return
    core.port.send(Play(core.call_control_id, core.book.invalid_url, True, core.menu.keys))
    core.note("invalid selection")
    core.restart_input_timer()


@in_menu.upon(CallSession.option_chosen).to(confirming)
def _chosen(session: CallSession, core: SessionCore, key: str) -> None:
    core.cancel("input_timer")
    core.phase = "confirming"
    core.chosen = key
    core.port.send(Play(core.call_control_id, core.book.confirm_url, False))
    core.note("selection confirmed")
    core.confirm_timer = core.later(core.timing.confirm_delay, session.confirm_elapsed)


@in_menu.upon(CallSession.input_timed_out).loop()
def _no_input(session: CallSession, core: SessionCore) -> None:
    core.input_timer = None
    if core.repeats >= core.timing.menu_repeats:
        session.route_to_operator("no-input")
        return
    core.repeats += 1
    core.note("no input")
    core.send_menu()


@in_menu.upon(CallSession.route_to_operator).to(ended)
def _to_operator(session: CallSession, core: SessionCore, reason: str) -> None:
    core.transfer(None, reason)


@confirming.upon(CallSession.confirm_elapsed).to(ended)
def _confirmed(session: CallSession, core: SessionCore) -> None:
    core.confirm_timer = None
    core.transfer(core.chosen, "selected")


# Keys while confirming are not listened for (DTMF is disabled); keys before
# the menu exists have nothing to select.
for _state in (awaiting_profile, confirming, ended):
    _state.upon(CallSession.digit_received).loop().returns(None)


# --- the end of a call -------------------------------------------------------


for _state in LIVE:

    @_state.upon(CallSession.hangup_received).to(ended)
    def _hangup(session: CallSession, core: SessionCore, reason: Optional[str]) -> None:
        core.port.close()
        core.end(Outcome("hungup", reason or "caller"))

    @_state.upon(CallSession.connection_lost).to(ended)
    def _lost(session: CallSession, core: SessionCore, reason: str) -> None:
        core.end(Outcome("failed", reason))


# A platform error while the caller waits for the menu: the caller may hear
# nothing more, so hand them to the operator.  While confirming, the transfer
# is already on its way.
for _state in (awaiting_profile, in_menu):

    @_state.upon(CallSession.platform_error).to(ended)
    def _platform_error(session: CallSession, core: SessionCore, message: str) -> None:
        core.note("platform error")
        core.transfer(None, "platform-error")


confirming.upon(CallSession.platform_error).loop().returns(None)

# Everything after the end is an echo of it: the close that follows our own
# close, the platform's hangup after a transfer, a timer that lost a race.
for _input in (
    CallSession.start,
    CallSession.profile_budget_spent,
    CallSession.connected,
    CallSession.connection_failed,
    CallSession.handshake_timed_out,
    CallSession.option_chosen,
    CallSession.input_timed_out,
    CallSession.route_to_operator,
    CallSession.confirm_elapsed,
    CallSession.hangup_received,
    CallSession.platform_error,
    CallSession.connection_lost,
):
    ended.upon(_input).loop().returns(None)

SessionMachine = builder.build()


def new_session(
    call_control_id: str,
    book: MenuBook,
    timing: Timing,
    clock: IReactorTime,
    port: CallPort,
) -> tuple[CallSession, SessionCore]:
    """
    Make the state machine of one call, not yet started.

    :return: the machine (feed it inputs) and its core (read its state)
    """
    core = SessionCore(call_control_id, book, timing, clock, port)
    machine = SessionMachine(core)
    core.machine = machine
    return machine, core
