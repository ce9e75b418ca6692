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
answered deliberately, most by doing nothing (:mod:`ivrproto.session.ignored`
names each one).  A port that cannot send (the connection went) ends
the call at once, so that every call reaches exactly one outcome.

What a call keeps of its input is bounded by :class:`~ivrproto.config.Timing`:
``max_keys_kept`` keys, ``max_notes`` timeline notes and ``max_reason_length``
characters of a reason from the platform; the rest is counted.

This module holds the transitions and builds the machine; what a call knows
and the helpers the transitions share are :class:`SessionCore`
(:mod:`ivrproto.session.core`); its inputs, its port and its outcome are in
:mod:`ivrproto.session.ports`.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

from automat import TypeMachineBuilder
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from ivrproto.config import Timing
from ivrproto.menu.book import Collect, MenuBook
from ivrproto.menu.schedules import Hours
from ivrproto.messages import Hangup, Play
from ivrproto.session.core import SessionCore
from ivrproto.session.ignored import IGNORED

# Re-exported: callers import the machine's values from here
# (ivrproto.session, the runner, the Audio Connector adapter, tests).
from ivrproto.session.ports import CallPort, CallSession, Outcome, clip

__all__ = ["CallPort", "CallSession", "IGNORED", "Outcome", "SessionCore", "clip", "new_session"]

log = Logger()


builder = TypeMachineBuilder(CallSession, SessionCore)
idle = builder.state("idle")
awaiting_both = builder.state("awaiting_both")
awaiting_profile = builder.state("awaiting_profile")
awaiting_connection = builder.state("awaiting_connection")
in_menu = builder.state("in_menu")
collecting = builder.state("collecting")
confirming = builder.state("confirming")
ended = builder.state("ended")


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


@awaiting_both.upon(CallSession.connection_failed).to(ended)
@awaiting_connection.upon(CallSession.connection_failed).to(ended)
def _refused(session: CallSession, core: SessionCore, reason: str) -> None:
    reason = core.reason(reason)
    core.note(f"connection failed: {reason}")
    core.end(Outcome("failed", reason))


@awaiting_both.upon(CallSession.handshake_timed_out).to(ended)
@awaiting_connection.upon(CallSession.handshake_timed_out).to(ended)
def _handshake_timeout(session: CallSession, core: SessionCore) -> None:
    core.cancel("handshake_timer")
    core.abort()
    core.end(Outcome("failed", "handshake timed out"))


@awaiting_both.upon(CallSession.connection_lost).to(ended)
@awaiting_connection.upon(CallSession.connection_lost).to(ended)
def _lost_connecting(session: CallSession, core: SessionCore, reason: str) -> None:
    core.abort()
    core.end(Outcome("failed", core.reason(reason)))


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


@in_menu.upon(CallSession.transfer_chosen).to(confirming)
@collecting.upon(CallSession.transfer_chosen).to(confirming)
def _chosen(session: CallSession, core: SessionCore, action: str) -> None:
    core.cancel("input_timer")
    core.phase = "confirming"
    core.chosen = action
    language = core.menu.language if core.menu is not None else None
    core.send(Play(core.call_control_id, core.book.confirm_url(language), False))
    core.note("selection confirmed")
    core.confirm_timer = core.later(core.timing.confirm_delay, session.confirm_elapsed)


@in_menu.upon(CallSession.give_up).loop()
@collecting.upon(CallSession.give_up).loop()
def _give_up(session: CallSession, core: SessionCore, reason: str) -> None:
    core.perform(session, core.book.on_failure(core.menu), core.book.give_up_reason(core.menu, reason))


@in_menu.upon(CallSession.transfer_now).to(ended)
@collecting.upon(CallSession.transfer_now).to(ended)
def _transfer_now(session: CallSession, core: SessionCore, action: str, reason: str) -> None:
    core.transfer(action, reason)


@in_menu.upon(CallSession.hangup_chosen).to(ended)
@collecting.upon(CallSession.hangup_chosen).to(ended)
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


# A key pressed after connected but before the menu could be offered (the
# profile is still on its way) is kept, and handled once the menu is out:
# "a key pressed at any time" counts (contract section 3, item 8).
@awaiting_profile.upon(CallSession.digit_received).loop()
def _early_key(session: CallSession, core: SessionCore, digit: str) -> None:
    core.early_keys.append(digit)


# --- the end of a call -------------------------------------------------------


@awaiting_profile.upon(CallSession.hangup_received).to(ended)
@in_menu.upon(CallSession.hangup_received).to(ended)
@collecting.upon(CallSession.hangup_received).to(ended)
@confirming.upon(CallSession.hangup_received).to(ended)
def _hangup(session: CallSession, core: SessionCore, reason: Optional[str]) -> None:
    core.close()
    core.end(Outcome("hungup", core.reason(reason or "unspecified")))


# ``connection_failed`` after ``connected`` can only be a late report of
# the same loss: it ends the call the same way.
@awaiting_profile.upon(CallSession.connection_failed).to(ended)
@in_menu.upon(CallSession.connection_failed).to(ended)
@collecting.upon(CallSession.connection_failed).to(ended)
@confirming.upon(CallSession.connection_failed).to(ended)
@awaiting_profile.upon(CallSession.connection_lost).to(ended)
@in_menu.upon(CallSession.connection_lost).to(ended)
@collecting.upon(CallSession.connection_lost).to(ended)
@confirming.upon(CallSession.connection_lost).to(ended)
def _lost(session: CallSession, core: SessionCore, reason: str) -> None:
    core.end(Outcome("failed", core.reason(reason)))


# A platform error while the caller waits for the menu: the caller may hear
# nothing more, so hand them to the operator.  While confirming, the transfer
# is already on its way.
@awaiting_profile.upon(CallSession.platform_error).to(ended)
@in_menu.upon(CallSession.platform_error).to(ended)
@collecting.upon(CallSession.platform_error).to(ended)
def _platform_error(session: CallSession, core: SessionCore, message: str) -> None:
    core.note("platform error")
    core.transfer(core.book.operator, "platform-error")


# Draining (the service is shutting down, its deadline reached): a caller
# still in a menu goes to the operator rather than being cut off; one who has
# chosen goes where they chose, now; a call not yet connected is given up.
@awaiting_profile.upon(CallSession.drain).to(ended)
@in_menu.upon(CallSession.drain).to(ended)
@collecting.upon(CallSession.drain).to(ended)
def _drain_to_operator(session: CallSession, core: SessionCore) -> None:
    core.note("draining")
    core.transfer(core.book.operator, "draining")


@confirming.upon(CallSession.drain).to(ended)
def _drain_confirmed(session: CallSession, core: SessionCore) -> None:
    assert core.chosen is not None
    core.note("draining")
    core.transfer(core.chosen, "selected")


@awaiting_both.upon(CallSession.drain).to(ended)
@awaiting_connection.upon(CallSession.drain).to(ended)
def _drain_connecting(session: CallSession, core: SessionCore) -> None:
    core.abort()
    core.end(Outcome("failed", "service draining before the call connected"))


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

# What every state does with the inputs it does not expect: nothing (the
# table in ivrproto.session.ignored says why for each).
for _state in STATES:
    for _input in IGNORED[_state.name]:
        _state.upon(_input).loop().returns(None)

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
