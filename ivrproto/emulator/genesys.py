"""
The Genesys Cloud side of the Audio Connector: the emulator as the client
that an Architect flow's "Call Audio Connector" action is, for one call at a
time (the socket and the placing of calls are in
:mod:`ivrproto.emulator.genesys_client`).

- :func:`parse_caller_step` checks one step of a caller script.  The
  vocabulary is the Call Control callers' where it fits (``prompts``,
  ``menu``, ``press:1``, ``wait:0.5``, ``hangup``, ``drop``, ``error:...``)
  plus ``audio``.
- :class:`GenesysCallSpec` is one call to place; :class:`GenesysCallResult`
  is what a test reads afterwards.
- :class:`~ivrproto.emulator.genesys_call.GenesysCall` is one session's
  logic: ``open``, caller audio, pings,
  the playout of the bot's audio (``playback_started`` and
  ``playback_completed``), the script, ``disconnect`` answered with
  ``close``, and the server's breaches of the protocol
  (:class:`~ivrproto.emulator.genesys_checks.ServerChecks`).  It does no I/O
  of its own: it talks through the small :class:`CallerWire` interface and
  schedules on an ``IReactorTime``.
"""

from __future__ import annotations

from typing import (
    Any,
    Dict,
    Iterable,
    List,
    Mapping,
    Optional,
    Protocol,
    Sequence,
    Tuple,
)

import attrs
from twisted.internet.defer import Deferred, succeed
from ivrproto.emulator.script import parse_steps, step_seconds

__all__ = [
    "CALLER_STEPS",
    "DEFAULT_OFFERS",
    "CallerWire",
    "GenesysCallResult",
    "GenesysCallSpec",
    "GenesysSettings",
    "parse_caller_script",
    "parse_caller_step",
]

DEFAULT_ORGANIZATION = "0ce25900-7fae-49e4-92e1-50518906b27c"
NULL_UUID = "00000000-0000-0000-0000-000000000000"
#: The media offers of an ``open``: the caller's channel first.
DEFAULT_OFFERS: Tuple[Mapping[str, Any], ...] = (
    {"type": "audio", "format": "PCMU", "channels": ["external"], "rate": 8000},
    {"type": "audio", "format": "PCMU", "channels": ["internal"], "rate": 8000},
)
#: Seconds without a new bot turn after which ``prompts`` takes what came.
PROMPT_SETTLE = 0.05
DTMF_KEYS = frozenset("0123456789*#ABCD")
ULAW_SILENCE = b"\xff"

_PLAIN = frozenset({"menu", "audio", "hangup", "drop"})
_ARG = frozenset({"press", "wait", "error"})
_OPTIONAL_ARG = frozenset({"prompts"})
CALLER_STEPS = tuple(sorted(_PLAIN | _ARG | _OPTIONAL_ARG))

Step = Tuple[str, Any]


def parse_caller_step(step: object) -> Step:
    """
    Check one step of a Genesys-side caller script.

    - ``prompts`` (or ``prompts:SECONDS``): wait for the bot's next turn (a
      ``bot_turn_response`` event, or audio starting) and for no new turn
      within the settle time; the audio is usually still playing then, so a
      key pressed next is a barge-in.
    - ``menu``: as ``prompts``, then listen until the audio has played out.
    - ``audio``: wait until the bot's audio is playing.
    - ``press:DIGITS``: one ``dtmf`` per key (``0-9 * # A-D``).
    - ``wait:SECONDS``; ``hangup`` (``close{reason: "end"}``); ``drop`` (the
      TCP connection, without a close); ``error:CODE`` (a client ``error``;
      429 carries ``retryAfter`` of 1 s).

    :return: ``(name, argument)``
    :raises ValueError: not a string, or not a known step
    """
    if not isinstance(step, str):
        raise ValueError(f"a script step must be a string, not {type(step).__name__}")
    name, colon, argument = step.partition(":")
    if name in _PLAIN:
        if colon:
            raise ValueError(f"step {name!r} takes no argument")
        return (name, None)
    if name in _OPTIONAL_ARG:
        return (name, step_seconds(name, argument) if colon else PROMPT_SETTLE)
    if name not in _ARG:
        raise ValueError(f"unknown step {step!r} (known: {', '.join(CALLER_STEPS)})")
    if not colon:
        raise ValueError(f"step {name!r} needs an argument: {name}:...")
    if name == "press":
        if not argument or not set(argument) <= DTMF_KEYS:
            raise ValueError(f"press needs keys among 0-9 * # A-D, not {argument!r}")
        return (name, argument)
    if name == "wait":
        return (name, step_seconds(name, argument))
    if not argument.isdigit() or not 400 <= int(argument) <= 599:
        raise ValueError(f"error needs a code from 400 to 599, not {argument!r}")
    return (name, int(argument))



def parse_caller_script(script: Sequence[object]) -> Tuple[Step, ...]:
    """
    Check a whole script.

    :raises ValueError: naming the index of the first bad step
    """
    return parse_steps(script, parse_caller_step)


def _steps(steps: Iterable[str]) -> Tuple[str, ...]:
    return tuple(steps)


@attrs.frozen
class GenesysSettings:
    """
    How the emulated Genesys side behaves; the defaults are Genesys's
    reference client's.

    :ivar frame_bytes: the caller's audio frames (200 ms of PCMU)
    :ivar stream_audio: send the caller's audio (silence) at all
    :ivar ping_delay: seconds from ``opened`` to the first ``ping``
    :ivar ping_interval: seconds between pings; a ping still unanswered when
        the next is due is a violation
    :ivar report_playback: send ``playback_started`` and
        ``playback_completed`` as the bot's audio plays out (at real time)
    :ivar completed_after_barge_in: send ``playback_completed`` when a
        ``barge_in`` flushes the audio (unconfirmed on a real org)
    :ivar open_timeout: seconds ``opened`` may take
    :ivar close_timeout: seconds ``closed`` may take after our ``close``
    :ivar max_call: seconds after which the caller hangs up regardless
    :ivar keep_audio: keep the bot's frames (else only their times and sizes)
    """

    frame_bytes: int = 1600
    stream_audio: bool = True
    ping_delay: float = 1.0
    ping_interval: float = 5.0
    report_playback: bool = True
    completed_after_barge_in: bool = False
    open_timeout: float = 5.0
    close_timeout: float = 10.0
    max_call: float = 300.0
    keep_audio: bool = True
    organization_id: str = DEFAULT_ORGANIZATION
    offers: Tuple[Mapping[str, Any], ...] = DEFAULT_OFFERS


@attrs.frozen
class GenesysCallSpec:
    """
    One call to place through the Audio Connector.

    :ivar ani: ``participant.ani`` (a raw caller id: never logged)
    :ivar input_variables: the action's Inputs (``{"externalId": ...}``)
    :ivar script: the caller's steps (:func:`parse_caller_step`)
    :ivar name: a label for reports
    :ivar expect_end: how the session must end (see
        :attr:`GenesysCallResult.end`), or ``None``
    :ivar expect: output variables that must have these values
    :ivar probe: send a connection probe instead of a call
    """

    ani: str = "tel:+14155550100"
    input_variables: Mapping[str, str] = attrs.field(factory=dict)
    script: Tuple[str, ...] = attrs.field(default=(), converter=_steps)
    name: str = ""
    language: Optional[str] = "en-US"
    expect_end: Optional[str] = None
    expect: Mapping[str, str] = attrs.field(factory=dict)
    probe: bool = False

    def __attrs_post_init__(self) -> None:
        parse_caller_script(self.script)


@attrs.define(eq=False)
class GenesysCallResult:
    """
    Everything the Genesys side saw of one session.  Times are the clock's.

    :ivar end: ``None`` while live, then ``"completed"``, ``"error"`` or
        ``"unauthorized"`` (the server's ``disconnect`` reason),
        ``"hangup"`` (our ``close{end}``), ``"probe"``, ``"refused"`` (no
        upgrade: :attr:`refusal` says why), ``"unreachable"``, ``"dropped"``
        (the socket went before ``closed``) or ``"timeout"``
    :ivar messages: ``(time, message)`` of each server JSON message
    :ivar sent: each JSON message we sent
    :ivar audio_times: arrival time of each bot audio frame
    :ivar audio_sizes: its size in bytes
    :ivar frames: the frames themselves (when ``keep_audio``)
    :ivar violations: the server's breaches, in order
    :ivar unmet: the spec's expectations that did not hold
    """

    spec: GenesysCallSpec
    session_id: str
    end: Optional[str] = None
    refusal: Optional[str] = None
    output_variables: Optional[Dict[str, str]] = None
    disconnect_info: Optional[str] = None
    messages: List[Tuple[float, Dict[str, Any]]] = attrs.field(factory=list)
    sent: List[Dict[str, Any]] = attrs.field(factory=list)
    audio_times: List[float] = attrs.field(factory=list)
    audio_sizes: List[int] = attrs.field(factory=list)
    frames: List[bytes] = attrs.field(factory=list)
    keys: List[Tuple[float, str, bool]] = attrs.field(factory=list)
    barge_ins: List[float] = attrs.field(factory=list)
    turns: List[float] = attrs.field(factory=list)
    violations: List[str] = attrs.field(factory=list)
    unmet: List[str] = attrs.field(factory=list)
    upgraded_at: Optional[float] = None
    opened_at: Optional[float] = None
    ended_at: Optional[float] = None
    close_code: Optional[int] = None
    _waiters: List["Deferred[GenesysCallResult]"] = attrs.field(factory=list, repr=False)

    @property
    def audio_bytes(self) -> int:
        "Bytes of bot audio received."
        return sum(self.audio_sizes)

    @property
    def first_audio(self) -> Optional[float]:
        "Seconds from ``opened`` to the bot's first audio frame."
        if self.opened_at is None or not self.audio_times:
            return None
        return self.audio_times[0] - self.opened_at

    def types(self) -> List[str]:
        "The server's message types, in order."
        return [m.get("type", "?") for _, m in self.messages]

    @property
    def ok(self) -> bool:
        "Ended, with no violation and every expectation met."
        return self.end is not None and not self.violations and not self.unmet

    def when_finished(self) -> "Deferred[GenesysCallResult]":
        "Fires with this result once the session is over."
        if self.end is not None and self.ended_at is not None:
            return succeed(self)
        d: Deferred[GenesysCallResult] = Deferred()
        self._waiters.append(d)
        return d

    def finish(self, now: float, end: str) -> None:
        "Record the end (once), check the expectations, tell the waiters."
        if self.ended_at is not None:
            return
        self.end = self.end or end
        self.ended_at = now
        spec = self.spec
        if spec.expect_end is not None and self.end != spec.expect_end:
            self.unmet.append(f"ended {self.end!r}, expected {spec.expect_end!r}")
        outputs = self.output_variables or {}
        for key, value in spec.expect.items():
            if outputs.get(key) != value:
                self.unmet.append(f"{key} is {outputs.get(key)!r}, expected {value!r}")
        waiters, self._waiters = self._waiters, []
        for d in waiters:
            d.callback(self)


class CallerWire(Protocol):
    "What :class:`GenesysCall` needs of its socket."

    def send_text(self, payload: bytes) -> None: ...

    def send_audio(self, frame: bytes) -> None: ...

    def close(self) -> None: ...

    def drop(self) -> None: ...

