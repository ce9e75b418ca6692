"""
One scripted caller on a live call: :class:`ScriptedCall` checks the
client's commands against the contract (:func:`check_command`) and runs the
caller script.  It does no I/O of its own: it talks to the socket through
the small :class:`Wire` interface and schedules through an ``IReactorTime``.
"""

from __future__ import annotations

from typing import Any, Optional, Protocol
from urllib.parse import urlsplit

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from ivrproto.emulator.calllog import CallLog
from ivrproto.emulator.script import DTMF_KEYS, PROMPT_SETTLE

__all__ = ["CLOSE_INTERNAL", "CLOSE_NORMAL", "ScriptedCall", "Wire", "check_command"]

CLOSE_NORMAL = 1000
CLOSE_INTERNAL = 1011


class Wire(Protocol):
    """
    What a :class:`ScriptedCall` needs from its connection.
    """

    def send_event(self, event: dict[str, Any]) -> None:
        """Send one JSON object as a text frame."""

    def send_raw(self, payload: bytes, binary: bool) -> None:
        """Send a frame as is."""

    def close(self, code: int, reason: str) -> None:
        """Start the closing handshake with this code."""


def _is_http_url(value: object) -> bool:
    if not isinstance(value, str):
        return False
    try:
        parts = urlsplit(value)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def check_command(command: dict[str, Any], call_id: str) -> Optional[str]:
    """
    Check one command against the contract's command table.

    :return: ``None`` when it is valid, else what is wrong with it
    """
    got_id = command.get("callControlId")
    if got_id is None:
        return "command without callControlId"
    if got_id != call_id:
        return "command with the wrong callControlId"
    action = command.get("action")
    if action == "play":
        if not _is_http_url(command.get("audio")):
            return "play: audio must be an absolute http(s) URL"
        dtmf = command.get("dtmf")
        if not isinstance(dtmf, dict):
            return "play: dtmf must be an object"
        enabled = dtmf.get("enabled")
        if not isinstance(enabled, bool):
            return "play: dtmf.enabled must be a boolean"
        keys = dtmf.get("keys")
        if keys is None:
            # The contract shows ``keys`` but never requires it; the seed's
            # own client enables DTMF without a key list (any key).
            return None
        if not isinstance(keys, list) or (enabled and not keys):
            return "play: dtmf.keys must be a non-empty list when dtmf is enabled"
        for key in keys:
            if not isinstance(key, str) or key not in DTMF_KEYS:
                return "play: dtmf.keys must hold single keys 0-9, * or #"
        return None
    if action == "transfer":
        if not isinstance(command.get("target"), str) or not command["target"]:
            return "transfer: target must be a non-empty string"
        if command.get("type") != "number":
            return 'transfer: type must be "number"'
        return None
    if action == "hangup":
        return None
    if action is None:
        return "command without action"
    return "unknown action"


class ScriptedCall:
    """
    One live call, from ``connected`` until the connection closes.

    Commands are checked against the contract; each invalid one is recorded
    as a violation and answered with an ``error`` event whose ``code`` is
    ``invalid_command`` (the session goes on).

    The caller script runs step by step.  Three steps wait for the client:

    - ``menu`` waits for a complete menu: counting the ``play`` commands with
      ``dtmf.enabled`` true that are not yet consumed, it proceeds once that
      count reaches the number of keys of the latest such play (the seed
      sends one prompt per menu key).
    - ``play`` waits for one ``play`` command that is not yet consumed.
    - ``prompts`` (or ``prompts:SECONDS``) waits for a batch of prompts,
      whatever the menu: for at least one unconsumed ``play``, and then
      until no new ``play`` has come for ``SECONDS`` (default
      :data:`PROMPT_SETTLE`).  It suits menus with an intro prompt,
      multi-digit entry prompts, and the prompts a client sends after a
      no-input timeout: ``["prompts", "prompts", "press:0"]`` stays silent
      through the first menu and presses 0 once the next prompts are in.

    Consumption: a play command is consumed by the step that it lets proceed
    (``menu`` and ``prompts`` consume every play received so far, ``play``
    consumes the oldest unconsumed one).  Plays received since ``connected`` that no
    earlier step consumed count for the step that starts next, so a client
    that sent its menu before the script got there is still seen.  Only
    valid play commands count.

    :param record: where to record what happens
    :param wire: the connection
    :param clock: schedules ``wait:`` steps and the close after a transfer
    :param close_after_transfer: seconds between a transfer and the server's
        close (1000); 0 closes right away
    """

    _log = Logger()

    def __init__(
        self,
        record: CallLog,
        wire: Wire,
        clock: IReactorTime,
        close_after_transfer: float = 0.0,
    ) -> None:
        self._record = record
        self._wire = wire
        self._clock = clock
        self._close_after_transfer = close_after_transfer
        self._steps = record.steps
        self._next_step = 0
        self._waiting_for: Optional[str] = None
        self._settle = PROMPT_SETTLE
        self._menu_plays: list[dict[str, Any]] = []  # unconsumed valid plays
        self._timer: Optional[IDelayedCall] = None
        self._close_timer: Optional[IDelayedCall] = None
        self._ended = False  # the call is over: transfer, hangup, drop

    # Inputs

    def started(self) -> None:
        """
        ``connected`` was sent: run the script.
        """
        self._record.connected = True
        self._record.connected_at = self._clock.seconds()
        self._run_script()

    def command_received(self, command: object) -> None:
        """
        The client sent a text frame that decoded to ``command``.
        """
        record = self._record
        if not isinstance(command, dict):
            self._violation("a command must be a JSON object")
            return
        record.commands.append(command)
        record.command_times.append(self._clock.seconds())
        problem = check_command(command, record.call_id)
        if problem is not None:
            self._violation(problem)
            return
        if self._ended:
            self._violation(f"{command['action']} command after the call ended")
            return
        action = command["action"]
        if action == "play":
            self._play_received(command)
        elif action == "transfer":
            self._transfer_received(command["target"])
        else:
            self._hangup_received()

    def undecodable_frame(self) -> None:
        """
        The client sent a text frame that is not JSON.
        """
        self._violation("a command must be a JSON object")

    def connection_closed(self, code: Optional[int]) -> None:
        """
        The connection is gone: stop every timer and finish the record.
        """
        self._ended = True
        self._cancel_timers()
        record = self._record
        if record.close_code is None:
            record.close_code = code
        record.finish(self._clock.seconds(), "closed")

    # What the client's commands do

    def _play_received(self, command: dict[str, Any]) -> None:
        record = self._record
        if record.first_play_at is None:
            record.first_play_at = self._clock.seconds()
        record.plays.append(command["audio"])
        self._menu_plays.append(command)
        if self._waiting_for == "prompts":
            self._settle_prompts()
        elif self._waiting_for is not None and self._wait_satisfied():
            self._waiting_for = None
            self._run_script()

    def _transfer_received(self, target: str) -> None:
        record = self._record
        record.outcome = "transferred"
        record.transfer_target = target
        record.transfer_at = self._clock.seconds()
        self._end_script()
        if self._close_after_transfer > 0:
            self._close_timer = self._clock.callLater(
                self._close_after_transfer, self._close_now, CLOSE_NORMAL, "transferred"
            )
        else:
            self._close_now(CLOSE_NORMAL, "transferred")

    def _hangup_received(self) -> None:
        self._record.outcome = "hungup-by-client"
        self._end_script()
        self._close_now(CLOSE_NORMAL, "hung up")

    def _violation(self, problem: str) -> None:
        self._record.violations.append(problem)
        self._wire.send_event(
            {"event": "error", "message": problem, "code": "invalid_command"}
        )

    def _close_now(self, code: int, reason: str) -> None:
        self._close_timer = None
        if self._record.close_code is None:
            self._record.close_code = code
        self._wire.close(code, reason)

    # The caller script

    def _wait_satisfied(self) -> bool:
        plays = self._menu_plays
        if self._waiting_for == "play":
            if plays:
                del plays[0]
                return True
            return False
        enabled = [p for p in plays if p["dtmf"]["enabled"]]
        if enabled and len(enabled) >= len(enabled[-1]["dtmf"].get("keys") or ()):
            plays.clear()
            return True
        return False

    def _run_script(self) -> None:
        while not self._ended and self._next_step < len(self._steps):
            name, argument = self._steps[self._next_step]
            self._next_step += 1
            if name in ("menu", "play"):
                self._waiting_for = name
                if not self._wait_satisfied():
                    return
                self._waiting_for = None
            elif name == "prompts":
                self._waiting_for = name
                self._settle = argument
                if self._menu_plays:
                    self._settle_prompts()
                return
            elif name == "wait":
                self._timer = self._clock.callLater(argument, self._wait_over)
                return
            else:
                self._caller_acts(name, argument)

    def _wait_over(self) -> None:
        self._timer = None
        self._run_script()

    def _settle_prompts(self) -> None:
        """
        A play came while a ``prompts`` step waits: (re)start its settle time.
        """
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = self._clock.callLater(self._settle, self._prompts_in)

    def _prompts_in(self) -> None:
        self._timer = None
        self._waiting_for = None
        self._menu_plays.clear()
        self._run_script()

    def _caller_acts(self, name: str, argument: Any) -> None:
        wire = self._wire
        if name == "press":
            self._record.keys_pressed.append(argument)
            self._record.key_times.append(self._clock.seconds())
            wire.send_event({"event": "dtmf", "digit": argument})
        elif name == "hangup":
            self._record.outcome = "hungup-by-caller"
            self._end_script()
            wire.send_event({"event": "hangup", "reason": "caller"})
            self._close_now(CLOSE_NORMAL, "caller hung up")
        elif name == "drop":
            self._record.outcome = "dropped"
            self._end_script()
            self._close_now(CLOSE_INTERNAL, "platform error")
        elif name == "error":
            wire.send_event({"event": "error", "message": argument})
        elif name == "media":
            wire.send_event({"event": "media", "payload": "AAAA"})
        elif name == "unknown":
            wire.send_event({"event": "surprise", "x": 1})
        elif name == "garbage":
            wire.send_raw(b"this is not json {", binary=False)
        elif name == "binary":
            wire.send_raw(b"\x00\x01\x02\xff", binary=True)

    def _end_script(self) -> None:
        self._ended = True
        self._waiting_for = None
        if self._timer is not None:
            if self._timer.active():
                self._timer.cancel()
            self._timer = None

    def _cancel_timers(self) -> None:
        self._end_script()
        if self._close_timer is not None:
            if self._close_timer.active():
                self._close_timer.cancel()
            self._close_timer = None
