"""
The seam between the call's state machine (:mod:`ivrproto.session`, written
for Call Control) and an Audio Connector session.

:class:`SessionBridge` is both halves of the join:

- the session's :class:`~ivrproto.session.CallPort`, for ``send``,
  ``close`` and ``finished``: ``Play`` queues the prompt of the same name
  (the file name of its URL without the extension: ``.../en-US/welcome.mp3``
  plays ``welcome``), ``Transfer`` and ``Hangup`` are remembered, and the
  outcome ends the session with ``disconnect`` and the output variables;
- the Audio Connector session's
  :class:`~ivrproto.audioconnector.session.ConnectorListener`: keys, the
  caller's hang-up and the end of the socket go to the state machine.

The profile lookup is not the bridge's: it is given ``lookup_profile``,
which the wiring code makes from :attr:`CallInfo.ani` or an input variable.

The state machine starts its no-input timer as it queues a menu; over Call
Control the platform plays and the timer runs alongside, but here the
server streams the prompts at real time, so the bridge holds that timer
while they play and restarts it, at its full length, when the session
reports them played (``playback_completed``): the caller gets the whole
no-input timeout after the end of the menu.
"""

from __future__ import annotations

import posixpath
import re
from typing import Any, Callable, Dict, List, Mapping, Optional
from urllib.parse import urlsplit

import attrs
from twisted.logger import Logger

from ivrproto.messages import Command, Play
from ivrproto.session.ports import CallSession, Outcome
from ivrproto.audioconnector.prompts import PromptError
from ivrproto.audioconnector.session import CallInfo, ConnectorCall


@attrs.frozen
class OutputNames:
    """
    The names of the output variables returned on ``disconnect``: they must
    match the Outputs defined on the flow's Call Audio Connector action.
    ``None`` leaves a variable out.
    """

    target: Optional[str] = "ivr_target"
    outcome: Optional[str] = "ivr_outcome"
    option: Optional[str] = "ivr_option"
    digits: Optional[str] = "ivr_digits"
    reason: Optional[str] = "ivr_reason"


_SEPARATORS = re.compile(r"[\s\-().]")


def ani_to_e164(ani: str) -> Optional[str]:
    """
    A caller's ani (``participant.ani``) as an E.164 number, parsed
    leniently: a ``tel:`` prefix, URI parameters (``;ext=...``), spaces,
    dashes, dots and brackets are dropped, and an international ``00``
    prefix becomes ``+``.  ``None`` when what is left is not ``+`` and 8 to
    15 digits (a national number cannot be placed in a country here).
    """
    text = ani.strip()
    if text[:4].lower() == "tel:":
        text = text[4:]
    text = _SEPARATORS.sub("", text.split(";", 1)[0])
    if text.startswith("00"):
        text = "+" + text[2:]
    if not text.startswith("+"):
        return None
    digits = text[1:]
    if not (digits.isascii() and digits.isdigit() and 8 <= len(digits) <= 15) or digits[0] == "0":
        return None
    return text


def prompt_name(url: str) -> str:
    "The prompt a ``Play`` URL names: its file name without the extension."
    path = urlsplit(url).path
    return posixpath.splitext(posixpath.basename(path))[0]


def outcome_value(outcome: Outcome) -> str:
    """
    ``selected``, ``operator``, ``hangup`` or ``failed``: what the flow is
    told happened.  A transfer for any reason but a selection (no input,
    invalid input, a failed lookup's fallback) is the operator path.
    """
    if outcome.kind == "transferred":
        return "selected" if outcome.reason == "selected" else "operator"
    if outcome.kind == "hungup":
        return "hangup"
    return "failed"


class SessionBridge:
    """
    Joins one call's state machine to one Audio Connector session.

    :param call: the Audio Connector session's commands
    :param lookup_profile: starts the profile lookup (the port's
        ``lookup_profile``)
    :param names: the output variables' names
    :param finished: told the outcome once the call ended (metrics, logs)
    """

    _log = Logger()

    def __init__(
        self,
        call: ConnectorCall,
        lookup_profile: Callable[[], None],
        names: OutputNames = OutputNames(),
        finished: Optional[Callable[[Outcome], None]] = None,
        to_prompt: Callable[[str], str] = prompt_name,
    ) -> None:
        self._call = call
        self._lookup = lookup_profile
        self._names = names
        self._finished = finished
        self._to_prompt = to_prompt
        self.session: Optional[CallSession] = None
        self._collected: Callable[[], Mapping[str, str]] = dict
        #: Every key the caller pressed (not returned: the flow gets the
        #: digits of ``collect`` steps).
        self.digits: List[str] = []
        self.outcome: Optional[Outcome] = None
        #: The prompts played, by name, in order (one ``play`` each).
        self.prompts: List[str] = []
        self._open = False
        self._gone = False
        # The machine's timers (its SessionCore), and the no-input timer
        # held while prompts play: (the timer, its full delay).
        self._core: Any = None
        self._held: Optional[tuple[Any, float]] = None
        self._hold_call: Any = None

    def attach(
        self,
        session: CallSession,
        collected: Optional[Callable[[], Mapping[str, str]]] = None,
        core: Any = None,
    ) -> None:
        """
        The state machine this bridge drives (set before ``opened``).

        :param collected: the digits of the call's ``collect`` steps, by name
            (``lambda: core.collected``)
        :param core: the machine's ``SessionCore``, whose no-input timer
            (``input_timer``) is held while prompts play; without it the
            timer runs from when the prompts are queued
        """
        self.session = session
        if collected is not None:
            self._collected = collected
        self._core = core

    # -- CallPort ----------------------------------------------------------------

    def lookup_profile(self) -> None:
        self._lookup()

    def open_connection(self) -> None:
        # The connection is the one Genesys opened: already there (or gone).
        assert self.session is not None
        if self._gone:
            self.session.connection_failed("the caller left before the menu")
        else:
            self.session.connected()

    def send(self, command: Command) -> bool:
        if self._gone:
            return False
        if isinstance(command, Play):
            try:
                # A prompt that does not listen for keys (the confirmation)
                # is not cut short by one.
                name = self._to_prompt(command.audio)
                self._call.play([name], barge_in=command.dtmf_enabled)
                self.prompts.append(name)
                self._hold_after_transition()
            except PromptError as e:
                # A prompt without audio is skipped: the menu's keys still
                # work, and the caller is not left waiting on nothing.
                self._log.error("prompt not playable: {reason}", reason=str(e))
        # Transfer and Hangup end the call: ``finished`` sends the disconnect.
        return True

    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass

    def finished(self, outcome: Outcome) -> None:
        self.outcome = outcome
        if not self._gone:
            variables = self.output_variables(outcome)
            reason = "error" if outcome.kind == "failed" else "completed"
            self._call.disconnect(reason, variables, outcome.reason[:200])
        if self._finished is not None:
            self._finished(outcome)

    def output_variables(self, outcome: Outcome) -> Dict[str, str]:
        "The ``outputVariables`` for an outcome (string values only)."
        n = self._names
        values = {
            n.target: outcome.target or "",
            n.outcome: outcome_value(outcome),
            n.option: outcome.action or "",
            # One collect step is the usual case; several are joined.
            n.digits: ",".join(self._collected().values()),
            n.reason: outcome.reason,
        }
        return {k: v for k, v in values.items() if k is not None}

    def drain(self) -> None:
        """
        The service is stopping and the drain deadline has passed: stop the
        prompts and let the state machine end the call as it does over Call
        Control (the operator, or the caller's choice if one was made); the
        ``disconnect`` follows at once.
        """
        if self.session is None or self.outcome is not None or self._gone:
            return
        self._call.stop_audio()
        self.session.drain()

    # -- ConnectorListener -------------------------------------------------------

    def opened(self, info: CallInfo) -> None:
        assert self.session is not None
        self._open = True
        self.session.start()

    def digit_received(self, digit: str) -> None:
        assert self.session is not None
        self.digits.append(digit)
        self.session.digit_received(digit)

    def playback_completed(self) -> None:
        "The prompts have played: the held no-input timer restarts at its full length."
        held, self._held = self._held, None
        if held is not None and self._core is not None:
            timer, delay = held
            if timer is self._core.input_timer and timer.active():
                timer.reset(delay)

    # -- the no-input timer ------------------------------------------------------

    def _hold_after_transition(self) -> None:
        "The machine sets its timer after queuing the prompts: hold it once it has."
        if self._core is None:
            return
        if self._hold_call is None or not self._hold_call.active():
            self._hold_call = self._core.clock.callLater(0, self._hold_input_timer)

    def _hold_input_timer(self) -> None:
        """
        Push the no-input timer past the end of the queued prompts (and the
        session's allowance for ``playback_completed``); it restarts at its
        full delay when they are reported played.
        """
        self._hold_call = None
        timer = self._core.input_timer
        if timer is None or not timer.active() or not self._call.is_playing:
            return
        if self._held is None or self._held[0] is not timer:
            # Prompts are queued with the menu's no-input timeout (the
            # inter-digit one plays none).
            self._held = (timer, self._core.no_input_timeout)
        timer.reset(self._call.played_within + self._held[1])

    def hangup_received(self, reason: str) -> None:
        assert self.session is not None
        self._gone = True
        self.session.hangup_received(reason or None)

    def connection_lost(self, reason: str) -> None:
        assert self.session is not None
        self._gone = True
        self.session.connection_lost(reason)
