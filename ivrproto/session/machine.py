"""
One call's state machine.  It decides everything that happens on a call and
does no I/O of its own: it asks a :class:`CallPort` to look the profile up,
open the connection, send commands and close, and it owns the call's timers
(profile budget, handshake, no input, confirmation) on an injected clock.

States::

    idle -> awaiting_both -> awaiting_profile | awaiting_connection
         -> in_menu <-> collecting -> confirming -> ended

``in_menu`` covers the start menu and every sub-menu; ``collecting`` is
multi-digit entry (an account number).

Every input is accepted in every state: those that a state does not expect
(a late profile, a key while confirming, a close after the transfer) are
answered deliberately, most by doing nothing (the table at the end of this
module names each one).  A port that cannot send (the connection went) ends
the call at once, so that every call reaches exactly one outcome.

What a call keeps of its input is bounded by :class:`~ivrproto.config.Timing`:
``max_keys_kept`` keys, ``max_notes`` timeline notes and ``max_reason_length``
characters of a reason from the platform; the rest is counted.
"""

from __future__ import annotations

from typing import Any, Callable, List, Mapping, Optional, Protocol

import attrs
from automat import TypeMachineBuilder
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from ivrproto.config import Timing
from ivrproto.menu.book import Action, Collect, Menu, MenuBook
from ivrproto.menu.schedules import Hours
from ivrproto.messages import Command, Hangup, Play, Transfer, play_menu

log = Logger()


def clip(text: str, limit: int) -> str:
    """
    ``text``, cut to ``limit`` characters with a note of how many were left out.
    """
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... (+{len(text) - limit} chars)"


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

    def send(self, command: Command) -> Optional[bool]:
        """
        Send one command on the open connection.  Never raises: answers
        ``False`` when the connection can no longer carry it.
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

    def transfer_chosen(self, action: str) -> None:
        "The caller chose a transfer: confirm it, then transfer (internal)."

    def collect_started(self, collect: Collect) -> None:
        "The caller chose an option that collects digits (internal)."

    def menu_entered(self, name: str) -> None:
        "Go to a menu (internal)."

    def hangup_chosen(self, reason: str) -> None:
        "End the call from our side (internal)."

    def transfer_now(self, action: str, reason: str) -> None:
        "Transfer at once, without confirmation (internal)."

    def give_up(self, reason: str) -> None:
        "The last try is spent: do the menu's on-failure action (internal)."

    def input_timed_out(self) -> None:
        "No key (or no next digit) within the timeout."

    def confirm_elapsed(self) -> None:
        "The confirmation delay is over."

    def hangup_received(self, reason: Optional[str]) -> None:
        "The caller or the platform ended the call."

    def platform_error(self, message: str) -> None:
        "The platform reported a failure after ``connected``."

    def connection_lost(self, reason: str) -> None:
        "The connection closed (after ``connected``)."

    def drain(self) -> None:
        "The service is shutting down: end the call without cutting the caller off."


@attrs.define(eq=False)
class SessionCore:
    """
    What a session knows and holds.

    :ivar timeline: ``(seconds since start, what happened)`` pairs, for the
        call's log line and for tests
    :ivar selected: the last option the caller chose: ``(menu name, key,
        action)``, for the call's record
    """

    call_control_id: str
    book: MenuBook
    timing: Timing
    clock: IReactorTime
    port: CallPort
    machine: Optional[CallSession] = None
    phase: str = "idle"
    menu: Optional[Menu] = None
    attributes: Optional[Mapping[str, Any]] = None
    profile: str = "pending"
    repeats: int = 0
    invalid: int = 0
    keys: List[str] = attrs.Factory(list)
    keys_total: int = 0
    notes_dropped: int = 0
    chosen: Optional[str] = None
    selected: Optional[tuple[str, str, Action]] = None
    collect: Optional[Collect] = None
    digits: str = ""
    collected: dict[str, str] = attrs.Factory(dict)
    early_keys: List[str] = attrs.Factory(list)
    outcome: Optional[Outcome] = None
    started_at: float = 0.0
    timeline: List[tuple[float, str]] = attrs.Factory(list)
    budget_timer: Optional[IDelayedCall] = None
    handshake_timer: Optional[IDelayedCall] = None
    input_timer: Optional[IDelayedCall] = None
    confirm_timer: Optional[IDelayedCall] = None
    #: the opening hours when the call arrived: the call keeps them
    hours: Optional[Hours] = None

    def note(self, what: str) -> None:
        # The first notes and the last one are kept: the end of a call is
        # always in its timeline however long the call ran.
        if len(self.timeline) >= self.timing.max_notes:
            self.notes_dropped += 1
            self.timeline.pop()
        self.timeline.append((self.clock.seconds() - self.started_at, what))

    def keep_key(self, digit: str) -> None:
        self.keys_total += 1
        if len(self.keys) < self.timing.max_keys_kept:
            self.keys.append(digit)

    def reason(self, text: str) -> str:
        """
        A reason or message from the platform, cut to ``max_reason_length``.
        """
        return clip(text, self.timing.max_reason_length)

    # -- the port, which may fail ------------------------------------------

    def send(self, command: Command) -> bool:
        """
        Send one command; ``False`` (and the call ends) when the connection
        could not take it.
        """
        try:
            sent = self.port.send(command) is not False
        except Exception:
            log.failure("{call_control_id}: sending broke", call_control_id=self.call_control_id)
            sent = False
        if not sent:
            self.note(f"could not send {type(command).__name__.lower()}")
            assert self.machine is not None
            # Runs once the current transition is over.
            self.machine.connection_lost("connection went while sending")
        return sent

    def close(self) -> None:
        try:
            self.port.close()
        except Exception:
            log.failure("{call_control_id}: closing broke", call_control_id=self.call_control_id)

    def abort(self) -> None:
        try:
            self.port.abort()
        except Exception:
            log.failure("{call_control_id}: aborting broke", call_control_id=self.call_control_id)

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
        self.attributes = attributes
        self.menu = self.book.menu_for(attributes, hours=self.hours)
        self.note(f"profile {how}; {'default' if self.menu.is_default else 'profile'} menu")

    def replay_early_keys(self, session: "CallSession") -> None:
        """
        Hand the keys pressed before the menu was offered to the menu (they
        run once this transition is over).
        """
        keys, self.early_keys = self.early_keys, []
        for digit in keys:
            session.digit_received(digit)

    # -- the menu ----------------------------------------------------------

    @property
    def max_no_input(self) -> int:
        assert self.menu is not None
        spec = self.menu.spec.max_no_input
        return self.timing.menu_repeats if spec is None else spec

    @property
    def max_invalid(self) -> int:
        assert self.menu is not None
        spec = self.menu.spec.max_invalid
        return self.timing.max_invalid if spec is None else spec

    @property
    def no_input_timeout(self) -> float:
        assert self.menu is not None
        return self.menu.spec.no_input_timeout or self.timing.no_input_timeout

    def enter_menu(self, name: str) -> None:
        assert self.menu is not None
        self.menu = self.book.menu_for(self.attributes, name, self.menu.language, self.hours)
        self.repeats = self.invalid = 0
        self.note(f"menu {name}")
        self.send_menu()

    def send_menu(self) -> None:
        assert self.menu is not None
        self.phase = "in_menu"
        for command in play_menu(self.call_control_id, self.menu.prompt_urls, self.menu.keys):
            if not self.send(command):
                break
        self.note(f"menu offered ({' '.join(self.menu.keys)})")
        self.restart_input_timer()

    def play(self, url: str, keys: tuple[str, ...]) -> None:
        self.send(Play(self.call_control_id, url, True, keys))

    def restart_input_timer(self, delay: Optional[float] = None) -> None:
        assert self.machine is not None
        self.cancel("input_timer")
        self.input_timer = self.later(
            self.no_input_timeout if delay is None else delay, self.machine.input_timed_out
        )

    def no_input(self) -> bool:
        """
        Count a no-input try; ``False`` when it was the last.
        """
        self.cancel("input_timer")
        self.note("no input")
        if self.repeats >= self.max_no_input:
            return False
        self.repeats += 1
        assert self.menu is not None
        url = self.book.no_input_url(self.menu)
        if url is not None:
            self.play(url, self.collect_keys() if self.phase == "collecting" else self.menu.keys)
        return True

    def invalid_input(self) -> bool:
        """
        Count an invalid try; ``False`` when it was the last.
        """
        self.invalid += 1
        self.note("invalid selection")
        return not 0 < self.max_invalid <= self.invalid

    def perform(self, session: "CallSession", action: Action, reason: str) -> None:
        """
        Start what an action does, through the machine's internal inputs.
        """
        if action.kind == "transfer":
            assert action.name is not None
            if reason == "selected":
                session.transfer_chosen(action.name)
            else:
                session.transfer_now(action.name, reason)
        elif action.kind == "submenu":
            assert action.name is not None
            session.menu_entered(action.name)
        elif action.kind == "hangup":
            session.hangup_chosen(reason)
        elif action.kind == "collect":
            assert action.collect is not None
            session.collect_started(action.collect)
        elif action.kind == "play":
            assert action.name is not None and self.menu is not None
            self.play(self.book.url(action.name, self.menu.language), self.menu.keys)
            self.send_menu()
        else:  # repeat
            self.send_menu()

    # -- collecting digits -------------------------------------------------

    def collect_keys(self) -> tuple[str, ...]:
        """
        The keys listened for while collecting: the digits and the terminator.
        """
        assert self.collect is not None
        terminator = self.collect.terminator
        return tuple(self.collect.valid_keys) + ((terminator,) if terminator else ())

    def offer_collect(self) -> None:
        assert self.collect is not None and self.menu is not None
        self.phase = "collecting"
        self.digits = ""
        self.play(self.book.url(self.collect.prompt, self.menu.language), self.collect_keys())
        self.note(f"collecting {self.collect.name}")
        self.restart_input_timer()

    def collect_done(self, session: "CallSession") -> None:
        """
        The entry ended (terminator, enough digits, or a pause): keep it, or
        count an invalid try.
        """
        collect = self.collect
        assert collect is not None and self.menu is not None
        self.cancel("input_timer")
        if len(self.digits) >= collect.min_digits:
            self.collected[collect.name] = self.digits
            self.note(f"collected {collect.name} ({len(self.digits)} digits)")
            self.perform(session, collect.then, "selected")
        elif self.invalid_input():
            self.play(self.book.invalid_url(self.menu), self.collect_keys())
            self.offer_collect()
        else:
            session.give_up("invalid-input")

    # -- the end -----------------------------------------------------------

    def end(self, outcome: Outcome) -> None:
        self.cancel_all()
        if self.outcome is not None:
            return
        self.phase = "ended"
        self.outcome = outcome
        self.note(f"ended: {outcome.kind} ({outcome.reason})")
        try:
            self.port.finished(outcome)
        except Exception:
            log.failure(
                "{call_control_id}: recording the outcome broke",
                call_control_id=self.call_control_id,
            )

    def transfer(self, action: str, reason: str) -> None:
        """
        Send the one transfer of this call and close.  A transfer that could
        not be sent is not one: the call failed.
        """
        target = self.book.targets[action]
        sent = self.send(Transfer(self.call_control_id, target))
        self.close()
        if sent:
            self.note(f"transfer to {target}")
            self.end(Outcome("transferred", reason, target, action))
        else:
            self.end(Outcome("failed", f"connection went before the transfer to {target}"))


builder = TypeMachineBuilder(CallSession, SessionCore)
idle = builder.state("idle")
awaiting_both = builder.state("awaiting_both")
awaiting_profile = builder.state("awaiting_profile")
awaiting_connection = builder.state("awaiting_connection")
in_menu = builder.state("in_menu")
collecting = builder.state("collecting")
confirming = builder.state("confirming")
ended = builder.state("ended")

LIVE = (awaiting_profile, in_menu, collecting, confirming)
WAITING = (in_menu, collecting)
CONNECTING = (awaiting_both, awaiting_connection)


@idle.upon(CallSession.start).to(awaiting_both)
def _start(session: CallSession, core: SessionCore) -> None:
    core.started_at = core.clock.seconds()
    core.phase = "connecting"
    core.note("call accepted")
    core.budget_timer = core.later(core.timing.profile_budget, session.profile_budget_spent)
    core.handshake_timer = core.later(core.timing.handshake_timeout, session.handshake_timed_out)
    try:
        core.port.lookup_profile()
        core.port.open_connection()
    except Exception:
        log.failure("{call_control_id}: could not start", call_control_id=core.call_control_id)
        core.abort()
        core.end(Outcome("failed", "could not start the call"))


# --- the profile and the connection, in either order -------------------------


@awaiting_both.upon(CallSession.profile_resolved).to(awaiting_connection)
def _profile_first(
    session: CallSession, core: SessionCore, attributes: Optional[Mapping[str, Any]], how: str
) -> None:
    core.choose_menu(attributes, how)


@awaiting_both.upon(CallSession.profile_budget_spent).to(awaiting_connection)
def _budget_first(session: CallSession, core: SessionCore) -> None:
    core.cancel("budget_timer")
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
    core.replay_early_keys(session)


@awaiting_profile.upon(CallSession.profile_budget_spent).to(in_menu)
def _budget_second(session: CallSession, core: SessionCore) -> None:
    core.cancel("budget_timer")
    core.choose_menu(None, "timed-out")
    core.send_menu()
    core.replay_early_keys(session)


@awaiting_connection.upon(CallSession.connected).to(in_menu)
def _connected_second(session: CallSession, core: SessionCore) -> None:
    core.cancel("handshake_timer")
    core.note("connected")
    core.send_menu()


for _state in CONNECTING:

    @_state.upon(CallSession.connection_failed).to(ended)
    def _refused(session: CallSession, core: SessionCore, reason: str) -> None:
        reason = core.reason(reason)
        core.note(f"connection failed: {reason}")
        core.end(Outcome("failed", reason))

    @_state.upon(CallSession.handshake_timed_out).to(ended)
    def _handshake_timeout(session: CallSession, core: SessionCore) -> None:
        core.cancel("handshake_timer")
        core.abort()
        core.end(Outcome("failed", "handshake timed out"))

    @_state.upon(CallSession.connection_lost).to(ended)
    def _lost_connecting(session: CallSession, core: SessionCore, reason: str) -> None:
        core.abort()
        core.end(Outcome("failed", core.reason(reason)))


# A late profile (the budget already chose the default menu) changes nothing.
for _state in (awaiting_connection, in_menu, collecting, confirming, ended):
    _state.upon(CallSession.profile_resolved).loop().returns(None)


# --- the menu ----------------------------------------------------------------


@in_menu.upon(CallSession.digit_received).loop()
def _digit(session: CallSession, core: SessionCore, digit: str) -> None:
    assert core.menu is not None
    core.keep_key(digit)
    core.note(f"key {digit}")
    action = core.menu.actions.get(digit)
    if action is not None:
        core.chosen = digit
        core.selected = (core.menu.name, digit, action)
        core.perform(session, action, "selected")
    elif core.invalid_input():
        # The no-input timer keeps running from the last menu prompt
        # (contract section 3, item 8): an invalid key does not restart it.
        core.play(core.book.invalid_url(core.menu), core.menu.keys)
    else:
        session.give_up("invalid-input")


@in_menu.upon(CallSession.input_timed_out).loop()
def _no_input(session: CallSession, core: SessionCore) -> None:
    if core.no_input():
        core.send_menu()
    else:
        session.give_up("no-input")


@in_menu.upon(CallSession.menu_entered).loop()
def _submenu(session: CallSession, core: SessionCore, name: str) -> None:
    core.enter_menu(name)


@collecting.upon(CallSession.menu_entered).to(in_menu)
def _submenu_after_collect(session: CallSession, core: SessionCore, name: str) -> None:
    core.collect = None
    core.enter_menu(name)


@collecting.upon(CallSession.collect_started).loop()
@in_menu.upon(CallSession.collect_started).to(collecting)
def _collect(session: CallSession, core: SessionCore, collect: Collect) -> None:
    core.cancel("input_timer")
    core.collect = collect
    core.repeats = core.invalid = 0
    core.offer_collect()


@collecting.upon(CallSession.digit_received).loop()
def _collect_digit(session: CallSession, core: SessionCore, digit: str) -> None:
    collect = core.collect
    assert collect is not None
    if digit == collect.terminator:
        core.collect_done(session)
    elif digit in collect.valid_keys:
        core.digits += digit
        if len(core.digits) >= collect.max_digits:
            core.collect_done(session)
        else:
            core.restart_input_timer(collect.inter_digit_timeout)
    else:
        core.digits = ""
        if core.invalid_input():
            assert core.menu is not None
            core.play(core.book.invalid_url(core.menu), core.collect_keys())
            core.offer_collect()
        else:
            session.give_up("invalid-input")


@collecting.upon(CallSession.input_timed_out).loop()
def _collect_pause(session: CallSession, core: SessionCore) -> None:
    core.cancel("input_timer")
    if core.digits:
        core.collect_done(session)
    elif core.no_input():
        core.offer_collect()
    else:
        session.give_up("no-input")


for _state in WAITING:

    @_state.upon(CallSession.transfer_chosen).to(confirming)
    def _chosen(session: CallSession, core: SessionCore, action: str) -> None:
        core.cancel("input_timer")
        core.phase = "confirming"
        core.chosen = action
        language = core.menu.language if core.menu is not None else None
        core.send(Play(core.call_control_id, core.book.confirm_url(language), False))
        core.note("selection confirmed")
        core.confirm_timer = core.later(core.timing.confirm_delay, session.confirm_elapsed)

    @_state.upon(CallSession.give_up).loop()
    def _give_up(session: CallSession, core: SessionCore, reason: str) -> None:
        core.perform(session, core.book.on_failure(core.menu), reason)

    @_state.upon(CallSession.transfer_now).to(ended)
    def _transfer_now(session: CallSession, core: SessionCore, action: str, reason: str) -> None:
        core.transfer(action, reason)

    @_state.upon(CallSession.hangup_chosen).to(ended)
    def _hang_up(session: CallSession, core: SessionCore, reason: str) -> None:
        sent = core.send(Hangup(core.call_control_id))
        core.note("hang up")
        core.close()
        if sent:
            core.end(Outcome("hungup", f"by the menu ({reason})"))
        else:
            core.end(Outcome("failed", "connection went before the hangup"))


@confirming.upon(CallSession.confirm_elapsed).to(ended)
def _confirmed(session: CallSession, core: SessionCore) -> None:
    core.cancel("confirm_timer")
    assert core.chosen is not None
    core.transfer(core.chosen, "selected")


# Keys while confirming are not listened for (DTMF is disabled); keys before
# the menu exists have nothing to select.
for _state in (confirming, ended):
    _state.upon(CallSession.digit_received).loop().returns(None)


# A key pressed after connected but before the menu could be offered (the
# profile is still on its way) is kept, and handled once the menu is out:
# "a key pressed at any time" counts (contract section 3, item 8).
@awaiting_profile.upon(CallSession.digit_received).loop()
def _early_key(session: CallSession, core: SessionCore, digit: str) -> None:
    core.early_keys.append(digit)


# --- the end of a call -------------------------------------------------------


for _state in LIVE:

    @_state.upon(CallSession.hangup_received).to(ended)
    def _hangup(session: CallSession, core: SessionCore, reason: Optional[str]) -> None:
        core.close()
        core.end(Outcome("hungup", core.reason(reason or "unspecified")))

    # ``connection_failed`` after ``connected`` can only be a late report of
    # the same loss: it ends the call the same way.
    @_state.upon(CallSession.connection_failed).to(ended)
    @_state.upon(CallSession.connection_lost).to(ended)
    def _lost(session: CallSession, core: SessionCore, reason: str) -> None:
        core.end(Outcome("failed", core.reason(reason)))


# A platform error while the caller waits for the menu: the caller may hear
# nothing more, so hand them to the operator.  While confirming, the transfer
# is already on its way.
for _state in (awaiting_profile, in_menu, collecting):

    @_state.upon(CallSession.platform_error).to(ended)
    def _platform_error(session: CallSession, core: SessionCore, message: str) -> None:
        core.note("platform error")
        core.transfer(core.book.operator, "platform-error")


confirming.upon(CallSession.platform_error).loop().returns(None)

# Draining (the service is shutting down, its deadline reached): a caller
# still in a menu goes to the operator rather than being cut off; one who has
# chosen goes where they chose, now; a call not yet connected is given up.
for _state in (awaiting_profile, in_menu, collecting):

    @_state.upon(CallSession.drain).to(ended)
    def _drain_to_operator(session: CallSession, core: SessionCore) -> None:
        core.note("draining")
        core.transfer(core.book.operator, "draining")


@confirming.upon(CallSession.drain).to(ended)
def _drain_confirmed(session: CallSession, core: SessionCore) -> None:
    assert core.chosen is not None
    core.note("draining")
    core.transfer(core.chosen, "selected")


for _state in CONNECTING:

    @_state.upon(CallSession.drain).to(ended)
    def _drain_connecting(session: CallSession, core: SessionCore) -> None:
        core.abort()
        core.end(Outcome("failed", "service draining before the call connected"))


idle.upon(CallSession.drain).loop().returns(None)

# Everything after the end is an echo of it: the close that follows our own
# close, the platform's hangup after a transfer, a timer that lost a race.
for _input in (
    CallSession.start,
    CallSession.profile_budget_spent,
    CallSession.connected,
    CallSession.connection_failed,
    CallSession.handshake_timed_out,
    CallSession.transfer_chosen,
    CallSession.collect_started,
    CallSession.menu_entered,
    CallSession.hangup_chosen,
    CallSession.transfer_now,
    CallSession.give_up,
    CallSession.input_timed_out,
    CallSession.confirm_elapsed,
    CallSession.hangup_received,
    CallSession.platform_error,
    CallSession.connection_lost,
    CallSession.drain,
):
    ended.upon(_input).loop().returns(None)

# What every other state does with the inputs it does not expect: nothing.
# Each is an echo or a race: a timer that fired as its state was left, a
# second ``connected``, an internal input queued behind one that already
# moved the call on, a key or an event before the connection is up (the
# handshake timer still bounds those states).
_TIMERS = (
    CallSession.profile_budget_spent,
    CallSession.handshake_timed_out,
    CallSession.input_timed_out,
    CallSession.confirm_elapsed,
)
_INTERNAL = (
    CallSession.transfer_chosen,
    CallSession.collect_started,
    CallSession.menu_entered,
    CallSession.hangup_chosen,
    CallSession.transfer_now,
    CallSession.give_up,
)
IGNORED: dict[Any, tuple[Any, ...]] = {
    idle: (
        CallSession.profile_resolved,
        CallSession.connected,
        CallSession.connection_failed,
        CallSession.digit_received,
        CallSession.hangup_received,
        CallSession.platform_error,
        CallSession.connection_lost,
        *_TIMERS,
        *_INTERNAL,
    ),
    awaiting_both: (
        CallSession.start,
        CallSession.digit_received,
        CallSession.hangup_received,
        CallSession.platform_error,
        CallSession.input_timed_out,
        CallSession.confirm_elapsed,
        *_INTERNAL,
    ),
    awaiting_connection: (
        CallSession.start,
        CallSession.profile_budget_spent,
        CallSession.digit_received,
        CallSession.hangup_received,
        CallSession.platform_error,
        CallSession.input_timed_out,
        CallSession.confirm_elapsed,
        *_INTERNAL,
    ),
    awaiting_profile: (
        CallSession.start,
        CallSession.connected,
        CallSession.handshake_timed_out,
        CallSession.input_timed_out,
        CallSession.confirm_elapsed,
        *_INTERNAL,
    ),
    in_menu: (
        CallSession.start,
        CallSession.connected,
        CallSession.profile_budget_spent,
        CallSession.handshake_timed_out,
        CallSession.confirm_elapsed,
    ),
    collecting: (
        CallSession.start,
        CallSession.connected,
        CallSession.profile_budget_spent,
        CallSession.handshake_timed_out,
        CallSession.confirm_elapsed,
    ),
    confirming: (
        CallSession.start,
        CallSession.connected,
        CallSession.profile_budget_spent,
        CallSession.handshake_timed_out,
        CallSession.input_timed_out,
        *_INTERNAL,
    ),
}
for _state, _inputs in IGNORED.items():
    for _input in _inputs:
        _state.upon(_input).loop().returns(None)

#: Every state, for tests that check each answers every input.
STATES = (
    idle,
    awaiting_both,
    awaiting_profile,
    awaiting_connection,
    in_menu,
    collecting,
    confirming,
    ended,
)

SessionMachine = builder.build()


def new_session(
    call_control_id: str,
    book: MenuBook,
    timing: Timing,
    clock: IReactorTime,
    port: CallPort,
    hours: Optional[Hours] = None,
) -> tuple[CallSession, SessionCore]:
    """
    Make the state machine of one call, not yet started.

    :param hours: the opening hours when the call arrived (default: every
        schedule open, no closure)
    :return: the machine (feed it inputs) and its core (read its state)
    """
    core = SessionCore(call_control_id, book, timing, clock, port, hours=hours)
    machine = SessionMachine(core)
    core.machine = machine
    return machine, core
