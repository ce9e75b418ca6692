"""
What ``ivr simulate`` prints: the caller, the call's timeline in configured
seconds (the waits that ``--speed`` shortened counted at their configured
length) and the result line with its exit code.  Pure: it reads a
:class:`Simulation`, which :func:`ivrproto.cli.simulate.simulate` makes.
"""

from __future__ import annotations

import json
from typing import Any, Iterator, List, Mapping, Optional, Sequence, Tuple

import attrs

from ivrproto.cli.codes import EXIT_CALL_FAILED, EXIT_OK
from ivrproto.config import Config

__all__ = [
    "REACTION",
    "MIN_SETTLE",
    "Caller",
    "Simulation",
    "scaled_waits",
    "configured_seconds",
    "timeline_lines",
    "describe_outcome",
    "simulation_report",
]


#: Seconds (configured time) between the last prompt of a batch arriving and
#: the simulated caller's key.
REACTION = 0.5


#: The shortest real wait for a batch of prompts to be complete.
MIN_SETTLE = 0.005


@attrs.frozen
class Caller:
    """
    The simulated caller.

    :ivar profile: the attributes the platform's profile API answers, or
        ``None`` for a 404
    :ivar origin: where the profile came from, for the output
    """

    external_id: str
    profile: Optional[Mapping[str, Any]]
    origin: str


@attrs.frozen
class Simulation:
    """
    What happened on a simulated call.

    :ivar started_at: when the service accepted the call (``reactor.seconds()``)
    :ivar timeline: the service's own timeline: ``(seconds since
        started_at, what)``
    :ivar outcome: the service's outcome, ``None`` if the call did not end
    :ivar record: what the platform emulator saw
    """

    caller: Caller
    tokens: Tuple[str, ...]
    speed: float
    started_at: float
    timeline: Tuple[Tuple[float, str], ...]
    outcome: Any
    record: Any


#: The service's timeline notes that end a wait on a scaled timer (their
#: text starts so): the no-input timeout.
_SCALED_NOTES = ("no input",)


def _timeline_entries(simulation: Simulation, audio_base_url: str) -> List[Tuple[float, int, str]]:
    """
    The service's steps and what the platform saw, in real time order:
    ``(reactor.seconds(), order, what)``.
    """
    entries: List[Tuple[float, int, str]] = []
    for seconds, what in simulation.timeline:
        if what.startswith("key "):
            continue  # the caller's own line says it
        entries.append((simulation.started_at + seconds, 0, what))
    record = simulation.record
    for command, when in zip(record.commands, record.command_times):
        if command.get("action") != "play":
            continue  # the service's own line says it
        audio = str(command.get("audio"))
        name = audio[len(audio_base_url):] if audio.startswith(audio_base_url) else audio
        dtmf = command.get("dtmf")
        off = isinstance(dtmf, dict) and dtmf.get("enabled") is False
        entries.append((when, 1, f"  play {name}" + (" (keys off)" if off else "")))
    # Keys pressed one after the other by one item of --keys make one line.
    presses: List[Tuple[float, List[str]]] = []
    last = None
    for key, when in zip(record.keys_pressed, record.key_times):
        if presses and last is not None and when - last < MIN_SETTLE / 2:
            presses[-1][1].append(key)
        else:
            presses.append((when, [key]))
        last = when
    for when, keys in presses:
        entries.append((when, 2, "caller presses " + " ".join(keys)))
    if record.outcome == "hungup-by-caller" and record.ended_at is not None:
        entries.append((record.ended_at, 2, "caller hangs up"))
    entries.sort(key=lambda e: (e[0], e[1]))
    return entries


def scaled_waits(entries: Sequence[Tuple[float, int, str]]) -> List[Tuple[float, float]]:
    """
    The real-time intervals that ``--speed`` shortened, from a call's
    entries (as :func:`_timeline_entries` makes them).

    A scaled wait is one in which nothing happens until it ends: it starts
    at the entry before the one that ends it.  The waits that ``--speed``
    divides end with:

    - the service's ``no input`` (its no-input timeout);
    - a ``transfer`` right after ``selection confirmed`` (the confirmation
      delay);
    - ``collected`` not right after a key (the inter-digit timeout);
    - the caller's keys and hang-up (the caller's reaction time).

    Everything else (the token, the profile lookup, the connection, the
    service's answers) ran at its real speed.
    """
    waits: List[Tuple[float, float]] = []
    last_note: Optional[str] = None
    for index, (when, order, what) in enumerate(entries):
        if index == 0:
            if order == 0:
                last_note = what
            continue
        before = entries[index - 1]
        if order == 0:
            scaled = (
                what.startswith(_SCALED_NOTES)
                or (what.startswith("transfer to ") and last_note == "selection confirmed")
                or (what.startswith("collected ") and not before[2].startswith("caller presses"))
            )
            last_note = what
        else:
            scaled = order == 2
        if scaled and when > before[0]:
            waits.append((before[0], when))
    return waits


def configured_seconds(
    when: float, started_at: float, speed: float, waits: Sequence[Tuple[float, float]]
) -> float:
    """
    The configured time of the real moment ``when``: real time since
    ``started_at``, with the part spent in scaled ``waits`` multiplied back
    by ``speed``.
    """
    elapsed = max(0.0, when - started_at)
    for start, end in waits:
        overlap = min(end, when) - max(start, started_at)
        if overlap > 0:
            elapsed += overlap * (speed - 1)
    return elapsed


def timeline_lines(simulation: Simulation, audio_base_url: str) -> Iterator[str]:
    """
    The call's timeline: the service's steps and what the platform saw
    (prompts, the caller's keys), in order, in configured seconds (the
    waits that ``--speed`` shortened count at their configured length,
    everything else at its real one).
    """
    entries = _timeline_entries(simulation, audio_base_url)
    waits = scaled_waits(entries)
    for when, _, what in entries:
        shown = configured_seconds(when, simulation.started_at, simulation.speed, waits)
        yield f"{shown:8.2f}s  {what}"


def describe_outcome(simulation: Simulation) -> Tuple[str, int]:
    """
    :return: the result line and the exit code
    """
    outcome = simulation.outcome
    if outcome is None:
        return "result: the call did not end in time", EXIT_CALL_FAILED
    if simulation.timeline:
        entries = _timeline_entries(simulation, "")
        end = simulation.started_at + simulation.timeline[-1][0]
        duration = configured_seconds(
            end, simulation.started_at, simulation.speed, scaled_waits(entries)
        )
    else:
        duration = 0.0
    after = f" after {duration:.2f}s"
    if outcome.kind == "transferred":
        return (
            f"result: transferred to {outcome.target} ({outcome.reason}){after}",
            EXIT_OK,
        )
    if outcome.kind == "hungup":
        return f"result: hung up ({outcome.reason}){after}", EXIT_OK
    return f"result: failed ({outcome.reason}){after}", EXIT_CALL_FAILED


def simulation_report(simulation: Simulation, config: Config, path: str) -> Tuple[List[str], int]:
    """
    Everything ``ivr simulate`` prints, and its exit code.
    """
    caller = simulation.caller
    speed = simulation.speed
    timing = config.timing
    lines = [f"ivr simulate {path}: one call against the local platform emulator"]
    profile = "" if caller.profile is None else " " + json.dumps(dict(caller.profile))
    lines.append(f"caller: {caller.external_id}; profile {caller.origin}{profile}")
    lines.append("keys: " + (", ".join(simulation.tokens) or "(none: a silent caller)"))
    if speed == 1:
        lines.append("times: in seconds, real time (--speed 1)")
    else:
        lines.append(
            f"times: in configured seconds; the call ran {speed:g}x faster (--speed {speed:g}):"
        )
        lines.append(
            f"  no-input, confirmation and inter-digit timeouts were divided by {speed:g} "
            "and are shown at their configured length; the token, profile lookup and "
            "connection were not divided and are shown as they took"
        )
    lines.append(
        f"the caller acts {min(REACTION, timing.no_input_timeout / 4):g}s after the last prompt "
        f"arrives; prompts are relative to {config.menu.audio_base_url}"
    )
    lines.append("")
    lines.extend(timeline_lines(simulation, config.menu.audio_base_url))
    lines.append("")
    result, code = describe_outcome(simulation)
    lines.append(result)
    violations = simulation.record.violations
    if violations:
        lines.append("the platform saw contract violations: " + "; ".join(violations))
        code = EXIT_CALL_FAILED
    return lines, code
