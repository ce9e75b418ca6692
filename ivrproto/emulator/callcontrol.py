"""
The Call Control side of the emulator: scripted callers and the WebSocket
server that plays them (contract section 3).

The pieces, from the inside out:

- :func:`parse_step` checks one caller script step (``"press:1"``).
- :class:`CallRecord` is what a test reads afterwards: every command the
  client sent, the prompts it played, the keys the caller pressed, how the
  call ended, and each way the client broke the contract.
- :class:`CallSession` is the per-call logic once ``connected`` has been
  sent: it checks commands and runs the caller script.  It does no I/O of its
  own; it talks to the socket through the small :class:`Wire` interface and
  schedules through an ``IReactorTime``.
- :class:`CallControlServerProtocol` is the thin Autobahn shim: it checks the
  upgrade and the first frame, then forwards frames to the session.

This module does not import ivrproto's client modules: it is an independent
implementation of the server side of the contract.
"""

from __future__ import annotations

import json
import math
import uuid
from typing import TYPE_CHECKING, Any, Optional, Protocol, Sequence
from urllib.parse import urlsplit

import attrs
from autobahn.twisted.websocket import (
    WebSocketServerFactory,
    WebSocketServerProtocol,
)
from autobahn.websocket.protocol import WebSocketProtocol
from autobahn.websocket.types import ConnectionDeny, ConnectionRequest
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from ivrproto._autobahn import QuietAutobahnLog

if TYPE_CHECKING:
    from ivrproto.emulator.platform import Platform

__all__ = [
    "PROMPT_SETTLE",
    "STEP_NAMES",
    "CallRecord",
    "CallSession",
    "CallControlServerProtocol",
    "CallControlServerFactory",
    "parse_step",
]

CAPABILITIES = frozenset({"play", "record", "dtmf", "transfer", "hangup"})
DTMF_KEYS = frozenset("0123456789*#")

CLOSE_NORMAL = 1000
CLOSE_POLICY = 1008
CLOSE_INTERNAL = 1011

#: Script steps that take no argument.
_PLAIN_STEPS = frozenset(
    {"menu", "play", "hangup", "drop", "media", "unknown", "garbage", "binary"}
)
#: Script steps written ``name:argument``.
_ARG_STEPS = frozenset({"press", "wait", "error"})
#: Script steps written ``name`` or ``name:argument``.
_OPTIONAL_ARG_STEPS = frozenset({"prompts"})
STEP_NAMES = tuple(sorted(_PLAIN_STEPS | _ARG_STEPS | _OPTIONAL_ARG_STEPS))

#: Seconds without a new ``play`` after which the ``prompts`` step takes the
#: prompts received so far as one batch (a client sends a batch at once).
PROMPT_SETTLE = 0.05

NO_ACTIVE_CALL = "no active call with that id"

#: A client that opens the socket and never sends its first frame is closed
#: (1008) after this many seconds, so that it does not hold a slot for ever.
FIRST_FRAME_TIMEOUT = 30.0

Step = tuple[str, Any]


def parse_step(step: object) -> Step:
    """
    Check one caller script step and split it into its name and argument.

    :param step: a step such as ``"menu"``, ``"press:1"``, ``"wait:0.5"``
        or ``"prompts"``
    :return: ``(name, argument)``; the argument is ``None``, a ``str``
        (``press``, ``error``) or a ``float`` (``wait``, and ``prompts``,
        whose settle time defaults to :data:`PROMPT_SETTLE`)
    :raises ValueError: the step is not a string or not a known step
    """
    if not isinstance(step, str):
        raise ValueError(f"a script step must be a string, not {type(step).__name__}")
    name, colon, argument = step.partition(":")
    if name in _PLAIN_STEPS:
        if colon:
            raise ValueError(f"step {name!r} takes no argument")
        return (name, None)
    if name in _OPTIONAL_ARG_STEPS:
        if not colon:
            return (name, PROMPT_SETTLE)
        return (name, _seconds(name, argument))
    if name not in _ARG_STEPS:
        raise ValueError(
            f"unknown step {step!r} (known: {', '.join(STEP_NAMES)})"
        )
    if not colon:
        raise ValueError(f"step {name!r} needs an argument: {name}:...")
    if name == "press":
        if not argument:
            raise ValueError("press needs a digit: press:1")
        return (name, argument)
    if name == "wait":
        return (name, _seconds(name, argument))
    return (name, argument)  # error:MSG, any message


def _seconds(name: str, argument: str) -> float:
    try:
        seconds = float(argument)
    except ValueError:
        raise ValueError(f"{name} needs a number of seconds, not {argument!r}") from None
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"{name} needs a finite number of seconds >= 0, not {argument!r}")
    return seconds


def parse_script(script: Sequence[object]) -> tuple[Step, ...]:
    """
    Check a whole caller script.

    :raises ValueError: naming the index of the first bad step
    """
    if isinstance(script, (str, bytes)) or not isinstance(script, Sequence):
        raise ValueError("a script must be a list of steps")
    steps = []
    for index, step in enumerate(script):
        try:
            steps.append(parse_step(step))
        except ValueError as e:
            raise ValueError(f"step {index}: {e}") from None
    return tuple(steps)


@attrs.define(eq=False)
class CallRecord:
    """
    Everything the emulator saw of one expected call.

    :ivar call_id: the ``callControlId`` the client must present
    :ivar external_id: the caller's external id (what the intake is told)
    :ivar script: the caller script, as given
    :ivar handshake: ``"ok"``, or ``"error"`` to refuse the handshake
    :ivar commands: every decoded command object received after ``connected``
    :ivar command_times: when each of ``commands`` arrived (``reactor.seconds()``)
    :ivar plays: the ``audio`` URL of every valid ``play`` command, in order
    :ivar keys_pressed: every digit the scripted caller sent
    :ivar key_times: when each of ``keys_pressed`` was sent
    :ivar handshake_frame: the client's connect frame, decoded
    :ivar outcome: ``None`` while the call is live, then one of
        ``"transferred"``, ``"hungup-by-client"``, ``"hungup-by-caller"``,
        ``"dropped"``, ``"refused"``, ``"closed"``, ``"intake-failed"``
    :ivar transfer_target: the ``target`` of the (first) valid transfer
    :ivar close_code: the code of the close that ended the connection (ours
        when we closed first, else the client's; 1006 when the TCP
        connection went away without a close)
    :ivar violations: each way the client broke the contract, in order
    """

    call_id: str
    external_id: str
    script: tuple[str, ...] = attrs.field(default=(), converter=tuple)
    handshake: str = "ok"
    commands: list[dict[str, Any]] = attrs.field(factory=list)
    plays: list[str] = attrs.field(factory=list)
    keys_pressed: list[str] = attrs.field(factory=list)
    command_times: list[float] = attrs.field(factory=list)
    key_times: list[float] = attrs.field(factory=list)
    handshake_frame: Optional[dict[str, Any]] = None
    outcome: Optional[str] = None
    transfer_target: Optional[str] = None
    close_code: Optional[int] = None
    violations: list[str] = attrs.field(factory=list)
    connected: bool = False
    connected_at: Optional[float] = None
    first_play_at: Optional[float] = None
    transfer_at: Optional[float] = None
    ended_at: Optional[float] = None
    _steps: tuple[Step, ...] = attrs.field(default=(), repr=False, alias="steps")
    _waiters: list[Deferred[CallRecord]] = attrs.field(
        factory=list, init=False, repr=False
    )

    @property
    def finished(self) -> bool:
        """
        Whether the call is over (its connection closed, or it never got one).
        """
        return self.ended_at is not None

    def when_finished(self) -> Deferred[CallRecord]:
        """
        :return: a new Deferred that fires with this record once the call's
            WebSocket connection is closed (at once if that already happened)
        """
        if self.finished:
            return succeed(self)
        d: Deferred[CallRecord] = Deferred()
        self._waiters.append(d)
        return d

    def finish(self, when: float, outcome: Optional[str] = None) -> None:
        """
        Mark the call as over and fire every :meth:`when_finished` waiter.

        :param when: the time it ended (``reactor.seconds()``)
        :param outcome: the outcome, if none was recorded yet
        """
        if self.finished:
            return
        if self.outcome is None and outcome is not None:
            self.outcome = outcome
        self.ended_at = when
        waiters, self._waiters = self._waiters, []
        for d in waiters:
            d.callback(self)


class Wire(Protocol):
    """
    What a :class:`CallSession` needs from its connection.
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


class CallSession:
    """
    One live call, from ``connected`` until the connection closes.

    Commands are checked against the contract; each invalid one is recorded
    as a violation and answered with an ``error`` event whose ``code`` is
    ``invalid_command`` (the session goes on).

    The caller script runs step by step.  Two steps wait for the client:

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
        record: CallRecord,
        wire: Wire,
        clock: IReactorTime,
        close_after_transfer: float = 0.0,
    ) -> None:
        self._record = record
        self._wire = wire
        self._clock = clock
        self._close_after_transfer = close_after_transfer
        self._steps = record._steps
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


def _bearer(headers: dict[str, str]) -> Optional[str]:
    value = headers.get("authorization", "")
    scheme, _, token = value.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


class CallControlServerProtocol(WebSocketServerProtocol):
    """
    The server end of one Call Control WebSocket.

    It checks the upgrade's bearer token, then the client's first frame, and
    from ``connected`` on forwards every frame to a :class:`CallSession`.
    """

    log = QuietAutobahnLog(Logger(namespace="ivrproto.emulator.autobahn"))
    _log = Logger()

    factory: CallControlServerFactory
    _record: Optional[CallRecord] = None
    _session: Optional[CallSession] = None
    _first_frame_timer: Optional[IDelayedCall] = None
    _handshake_seen = False
    _closed = False

    def onConnect(self, request: ConnectionRequest) -> None:
        platform = self.factory.platform
        status = platform._check_bearer(_bearer(request.headers), WS_SCOPES)
        if status is None:
            status = platform.faults._take_refusal("websocket")
        if status is not None:
            platform.stats.ws_refused += 1
            raise ConnectionDeny(status, _REFUSALS.get(status, "Refused"))
        platform.stats.ws_upgrades += 1
        return None

    def onOpen(self) -> None:
        self._first_frame_timer = self.factory.platform._reactor.callLater(
            FIRST_FRAME_TIMEOUT, self._close, CLOSE_POLICY, "no handshake frame"
        )

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        if isBinary:
            return
        session = self._session
        try:
            if session is not None:
                try:
                    command = json.loads(payload)
                except ValueError:
                    session.undecodable_frame()
                else:
                    session.command_received(command)
            elif not self._handshake_seen and not self._closed:
                self._handshake_seen = True
                self._handshake(payload)
        except Exception:
            self._log.failure("emulator failed on a Call Control frame")
            self._close(CLOSE_INTERNAL, "emulator error")

    def _handshake(self, payload: bytes) -> None:
        if self._first_frame_timer is not None:
            if self._first_frame_timer.active():
                self._first_frame_timer.cancel()
            self._first_frame_timer = None
        platform = self.factory.platform
        try:
            frame = json.loads(payload)
        except ValueError:
            frame = None
        problem = _check_handshake(frame)
        if problem is not None:
            self._close(CLOSE_POLICY, problem)
            return
        call_id = frame["callControlId"]
        record = platform._calls.get(call_id)
        if record is None or record.connected or record.finished:
            self.send_event({"event": "error", "message": NO_ACTIVE_CALL})
            self._close(CLOSE_POLICY, NO_ACTIVE_CALL)
            return
        self._record = record
        record.handshake_frame = frame
        if record.handshake == "error":
            record.outcome = "refused"
            record.close_code = CLOSE_POLICY
            self.send_event({"event": "error", "message": NO_ACTIVE_CALL})
            self._close(CLOSE_POLICY, NO_ACTIVE_CALL)
            return
        platform.stats.calls_connected += 1
        self._session = CallSession(
            record, self, platform._reactor, platform.close_after_transfer
        )
        self.send_event(
            {
                "event": "connected",
                "callControlId": call_id,
                "session": {"id": str(uuid.uuid4()), "media": "audio"},
            }
        )
        self._session.started()

    def dropConnection(self, abort: bool = False) -> None:
        # After a clean closing handshake Autobahn aborts the TCP connection,
        # which throws away our own close frame when it is still in the write
        # buffer (both ends closed at once, as the seed's client does after
        # a transfer).  Flush it instead; stop() still aborts.
        if abort and self.wasClean:
            abort = False
        super().dropConnection(abort)

    def onClose(self, wasClean: bool, code: Optional[int], reason: Optional[str]) -> None:
        self._closed = True
        # Autobahn leaves its close handshake timer pending when the peer
        # goes away without answering our close frame.
        timer = self.closeHandshakeTimeoutCall
        if timer is not None:
            timer.cancel()
            self.closeHandshakeTimeoutCall = None
        if self._first_frame_timer is not None:
            if self._first_frame_timer.active():
                self._first_frame_timer.cancel()
            self._first_frame_timer = None
        if self._session is not None:
            self._session.connection_closed(code)
        elif self._record is not None:  # refused handshake
            if self._record.close_code is None:
                self._record.close_code = code
            self._record.finish(self.factory.platform._reactor.seconds(), "refused")

    # Wire

    def send_event(self, event: dict[str, Any]) -> None:
        if self.state == WebSocketProtocol.STATE_OPEN:
            self.sendMessage(json.dumps(event).encode("utf-8"), isBinary=False)

    def send_raw(self, payload: bytes, binary: bool) -> None:
        if self.state == WebSocketProtocol.STATE_OPEN:
            self.sendMessage(payload, isBinary=binary)

    def close(self, code: int, reason: str) -> None:
        self._close(code, reason)

    def _close(self, code: int, reason: str) -> None:
        # sendClose() refuses 1008 and 1011, which the contract uses.
        if self.state == WebSocketProtocol.STATE_OPEN:
            self.sendCloseFrame(code=code, reasonUtf8=reason.encode("utf-8")[:120])


WS_SCOPES = ("callcontrol:inbound", "callcontrol:media")

_REFUSALS = {401: "Unauthorized", 403: "Forbidden", 429: "Too Many Requests"}


def _check_handshake(frame: object) -> Optional[str]:
    """
    :return: ``None`` when the first frame is acceptable, else why not
    """
    if not isinstance(frame, dict):
        return "first frame must be a JSON object"
    if not isinstance(frame.get("callControlId"), str) or not frame["callControlId"]:
        return "callControlId missing"
    capabilities = frame.get("capabilities")
    if not isinstance(capabilities, list) or not capabilities:
        return "capabilities must be a non-empty list"
    for capability in capabilities:
        if not isinstance(capability, str) or capability not in CAPABILITIES:
            return "unsupported capability"
    if frame.get("media") != "audio":
        return 'media must be "audio"'
    return None


class CallControlServerFactory(WebSocketServerFactory):
    """
    Builds :class:`CallControlServerProtocol` for one :class:`Platform`.
    """

    protocol = CallControlServerProtocol  # type: ignore[assignment]
    log = QuietAutobahnLog(Logger(namespace="ivrproto.emulator.autobahn"))

    def __init__(self, platform: Platform, reactor: Any) -> None:
        super().__init__(server="ivrproto-emulator", reactor=reactor)
        self.platform = platform
        self.setProtocolOptions(
            maxFramePayloadSize=64 * 1024,
            maxMessagePayloadSize=64 * 1024,
            openHandshakeTimeout=10,
            closeHandshakeTimeout=5,
            autoPingInterval=30,
            autoPingTimeout=15,
        )

