"""
What one call knows and holds, and the helpers its transitions share:
:class:`SessionCore`.  The transitions themselves, and the automat machine
that runs them, are in :mod:`ivrproto.session.machine`; the core does no I/O
of its own (it asks its :class:`~ivrproto.session.ports.CallPort`) and reads
time only from its injected clock.
"""

from __future__ import annotations

from typing import Any, Callable, List, Mapping, Optional

import attrs
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from ivrproto.config import Timing
from ivrproto.menu.book import Action, Collect, Menu, MenuBook
from ivrproto.menu.schedules import Hours
from ivrproto.messages import Command, Play, Transfer, play_menu
from ivrproto.session.ports import CallPort, CallSession, Outcome, clip

log = Logger()


@attrs.define(eq=False)
class SessionCore:
    """
    What a session knows and holds.

    :ivar timeline: ``(seconds since start, what happened)`` pairs, for the
        call's log line and for tests
    :ivar selected: the last option the caller chose: ``(menu name, key,
        action)``, for the call's record
    :ivar phase: where the call is, coarser than the machine's state (the
        three ``awaiting_*`` states are all ``connecting``): kept by hand
        because automat does not expose a machine's current state, and read
        by :attr:`CallRunner.state <ivrproto.session.runner.CallRunner.state>`
        (the calls in progress), by :meth:`no_input` (which keys to listen
        for) and by tests
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
        """
        Add ``what`` to the timeline, at the time since the call started.
        """
        # The first notes and the last one are kept: the end of a call is
        # always in its timeline however long the call ran.
        if len(self.timeline) >= self.timing.max_notes:
            self.notes_dropped += 1
            self.timeline.pop()
        self.timeline.append((self.clock.seconds() - self.started_at, what))

    def keep_key(self, digit: str) -> None:
        """
        Count a key the caller pressed, and keep it while fewer than
        ``max_keys_kept`` are kept.
        """
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
        """
        Close the connection; a port that breaks doing so is logged, not raised.
        """
        try:
            self.port.close()
        except Exception:
            log.failure("{call_control_id}: closing broke", call_control_id=self.call_control_id)

    def abort(self) -> None:
        """
        Give up on a connection still being opened; a port that breaks doing
        so is logged, not raised.
        """
        try:
            self.port.abort()
        except Exception:
            log.failure("{call_control_id}: aborting broke", call_control_id=self.call_control_id)

    def later(self, delay: float, event: Callable[[], None]) -> IDelayedCall:
        """
        Call ``event`` (a machine input) after ``delay`` seconds on the clock.
        """
        return self.clock.callLater(delay, event)

    def cancel(self, name: str) -> None:
        """
        Cancel the timer in the field ``name`` (``input_timer`` and the like),
        if it is set and pending, and clear the field.
        """
        timer: Optional[IDelayedCall] = getattr(self, name)
        if timer is not None:
            if timer.active():
                timer.cancel()
            setattr(self, name, None)

    def cancel_all(self) -> None:
        """
        Cancel every timer of the call.
        """
        for name in ("budget_timer", "handshake_timer", "input_timer", "confirm_timer"):
            self.cancel(name)

    def choose_menu(self, attributes: Optional[Mapping[str, Any]], how: str) -> None:
        """
        The profile lookup ended (``how``): build the caller's start menu from
        ``attributes`` (``None``: the default menu).
        """
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
        "How many no-input tries the current menu allows."
        assert self.menu is not None
        spec = self.menu.spec.max_no_input
        return self.timing.menu_repeats if spec is None else spec

    @property
    def max_invalid(self) -> int:
        "How many invalid tries the current menu allows (``0``: no limit)."
        assert self.menu is not None
        spec = self.menu.spec.max_invalid
        return self.timing.max_invalid if spec is None else spec

    @property
    def no_input_timeout(self) -> float:
        "Seconds the current menu waits for a key."
        assert self.menu is not None
        return self.menu.spec.no_input_timeout or self.timing.no_input_timeout

    def enter_menu(self, name: str) -> None:
        """
        Go to the menu ``name`` (in the caller's language), with fresh tries,
        and offer it.
        """
        assert self.menu is not None
        self.menu = self.book.menu_for(self.attributes, name, self.menu.language, self.hours)
        self.repeats = self.invalid = 0
        self.note(f"menu {name}")
        self.send_menu()

    def send_menu(self) -> None:
        """
        Play the current menu's prompts and listen for its keys; start the
        no-input timer.
        """
        assert self.menu is not None
        self.phase = "in_menu"
        for command in play_menu(self.call_control_id, self.menu.prompt_urls, self.menu.keys):
            if not self.send(command):
                break
        self.note(f"menu offered ({' '.join(self.menu.keys)})")
        self.restart_input_timer()

    def play(self, url: str, keys: tuple[str, ...]) -> None:
        """
        Play one prompt that ``keys`` can interrupt.
        """
        self.send(Play(self.call_control_id, url, True, keys))

    def restart_input_timer(self, delay: Optional[float] = None) -> None:
        """
        Start the no-input timer again, for ``delay`` seconds (default: the
        menu's no-input timeout).
        """
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
        """
        Start (or restart) a digit entry: play its prompt, listen for its keys.
        """
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
        """
        End the call with ``outcome``, once: cancel its timers and tell the
        port.  A second end keeps the first outcome.
        """
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
