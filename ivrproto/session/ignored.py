"""
The inputs each state of a call's machine ignores: the state stays and
nothing happens.  :mod:`ivrproto.session.machine` registers every pair here
as a transition that returns ``None``, so that every state answers every
input (``tests/test_session_stateful.py`` walks them all).

Each is an echo or a race: a timer that fired as its state was left, a second
``connected``, an internal input queued behind one that already moved the
call on, a key or an event before the connection is up (the handshake timer
still bounds those states), or anything after the end.
"""

from __future__ import annotations

from typing import Any, Callable

from ivrproto.session.ports import CallSession

__all__ = ["IGNORED"]

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

#: A state's name, and the inputs it ignores.
IGNORED: dict[str, tuple[Callable[..., Any], ...]] = {
    "idle": (
        CallSession.profile_resolved,
        CallSession.connected,
        CallSession.connection_failed,
        CallSession.digit_received,
        CallSession.hangup_received,
        CallSession.platform_error,
        CallSession.connection_lost,
        # Nothing to drain before the call starts.
        CallSession.drain,
        *_TIMERS,
        *_INTERNAL,
    ),
    "awaiting_both": (
        CallSession.start,
        CallSession.digit_received,
        CallSession.hangup_received,
        CallSession.platform_error,
        CallSession.input_timed_out,
        CallSession.confirm_elapsed,
        *_INTERNAL,
    ),
    "awaiting_connection": (
        CallSession.start,
        # A late profile (the budget already chose the default menu) changes
        # nothing, here and in every later state.
        CallSession.profile_resolved,
        CallSession.profile_budget_spent,
        CallSession.digit_received,
        CallSession.hangup_received,
        CallSession.platform_error,
        CallSession.input_timed_out,
        CallSession.confirm_elapsed,
        *_INTERNAL,
    ),
    "awaiting_profile": (
        CallSession.start,
        CallSession.connected,
        CallSession.handshake_timed_out,
        CallSession.input_timed_out,
        CallSession.confirm_elapsed,
        *_INTERNAL,
    ),
    "in_menu": (
        CallSession.start,
        CallSession.profile_resolved,
        CallSession.connected,
        CallSession.profile_budget_spent,
        CallSession.handshake_timed_out,
        CallSession.confirm_elapsed,
    ),
    "collecting": (
        CallSession.start,
        CallSession.profile_resolved,
        CallSession.connected,
        CallSession.profile_budget_spent,
        CallSession.handshake_timed_out,
        CallSession.confirm_elapsed,
    ),
    "confirming": (
        CallSession.start,
        CallSession.profile_resolved,
        CallSession.connected,
        # Keys while confirming are not listened for (DTMF is disabled).
        CallSession.digit_received,
        # The transfer is already on its way.
        CallSession.platform_error,
        CallSession.profile_budget_spent,
        CallSession.handshake_timed_out,
        CallSession.input_timed_out,
        *_INTERNAL,
    ),
    # Everything after the end is an echo of it: the close that follows our
    # own close, the platform's hangup after a transfer, a timer that lost a
    # race, a key with nothing left to select.
    "ended": (
        CallSession.start,
        CallSession.profile_resolved,
        CallSession.profile_budget_spent,
        CallSession.connected,
        CallSession.connection_failed,
        CallSession.handshake_timed_out,
        CallSession.digit_received,
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
    ),
}
