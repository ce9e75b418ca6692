"""
``ivr simulate --front audio-connector``: one call through the service's
Audio Connector listener (``tcp:0`` on loopback, an API key made for the
run), placed by the emulator's Genesys side with the ``--keys`` script, and
its report: the prompts streamed with their lengths, the keys (and
barge-ins), the outcome and the ``outputVariables`` the flow would get.

The Audio Connector streams its prompts at real time, so the report's times
are real seconds; ``--speed`` still divides the no-input, confirmation and
inter-digit timeouts.
"""

from __future__ import annotations

import json
import secrets
from typing import Any, List, Optional, Sequence, Tuple

import attrs
from twisted.internet.defer import inlineCallbacks
from twisted.internet.defer import TimeoutError as TimedOut

from ivrproto.cli.codes import EXIT_CALL_FAILED, EXIT_OK
from ivrproto.cli.report import Caller
from ivrproto.config import Config

__all__ = ["AudioConnectorSimulation", "ac_simulation_report", "simulate_audio_connector"]

#: The listener the simulation serves the Audio Connector on.
LOOPBACK = "tcp:0:interface=127.0.0.1"


@attrs.frozen
class AudioConnectorSimulation:
    """
    What happened on a simulated Audio Connector call.

    :ivar started_at: when the service's session started (``reactor.seconds()``)
    :ivar timeline: the service's own timeline (seconds since ``started_at``)
    :ivar outcome: the service's outcome, ``None`` if the call did not end
    :ivar result: what the Genesys side saw
        (:class:`~ivrproto.emulator.genesys.GenesysCallResult`)
    :ivar prompts: ``(name, seconds)`` of each prompt streamed, in order
    """

    caller: Caller
    tokens: Tuple[str, ...]
    speed: float
    started_at: float
    timeline: Tuple[Tuple[float, str], ...]
    outcome: Any
    result: Any
    prompts: Tuple[Tuple[str, float], ...]


def _with_listener(config: Config) -> Config:
    """
    The configuration with the Audio Connector on loopback and a key for
    this run.  Without an ``[audio_connector]`` section, the prompts are the
    ``prompts`` directory beside the configuration file.
    """
    ac = config.audio_connector
    prompts = ac.prompts if ac.enabled else config.base_dir / ac.prompts
    ac = attrs.evolve(
        ac, enabled=True, listen=LOOPBACK, prompts=prompts,
        api_key=secrets.token_urlsafe(24), client_secret=None,
    )
    return attrs.evolve(config, audio_connector=ac)


@inlineCallbacks
def simulate_audio_connector(
    reactor: Any, config: Config, caller: Caller, tokens: Sequence[str], script: List[str],
    max_time: float, at: Optional[float], speed: float,
) -> Any:
    """
    Run one Genesys-side call through :class:`~ivrproto.service.IVRService`'s
    Audio Connector (its profile lookups against a
    :class:`~ivrproto.emulator.Platform` on loopback).

    :param config: scaled, and pointed at the platform already
    :param script: the Genesys-side steps
    :return: a Deferred firing with an :class:`AudioConnectorSimulation`
    """
    from ivrproto.emulator import GenesysCallSpec, connect_genesys_call
    from ivrproto.service import IVRService

    config = _with_listener(config)
    service = IVRService(reactor, config, intake=LOOPBACK, admin="intake")
    yield service.start()
    try:
        ac = service.audio_connector
        assert ac is not None  # _with_listener turned it on
        calls: List[Tuple[Any, Any]] = []
        ac.on_call = lambda bridge, core: calls.append((bridge, core))
        if at is not None:  # the registry's hours are the Audio Connector's too
            registry = service.registry
            registry.context = attrs.evolve(registry.context, schedule_time=lambda: at)
        spec = GenesysCallSpec(input_variables={"externalId": caller.external_id},
                               script=tuple(script), name="simulated")
        assert config.audio_connector.api_key is not None
        result = connect_genesys_call(
            reactor, service.audio_connector_url, config.audio_connector.api_key, spec
        )
        try:
            yield result.when_finished().addTimeout(max_time, reactor)
        except TimedOut:
            pass
        if not calls:
            return AudioConnectorSimulation(caller, tuple(tokens), speed, reactor.seconds(),
                                            (), None, result, ())
        bridge, core = calls[0]
        library = ac.factory.prompts
        language = result.spec.language
        prompts = tuple((name, library.get(language, name).duration) for name in bridge.prompts)
        return AudioConnectorSimulation(
            caller, tuple(tokens), speed, core.started_at, tuple(core.timeline), core.outcome,
            result, prompts,
        )
    finally:
        yield service.stop()


def _entries(sim: AudioConnectorSimulation) -> List[Tuple[float, int, str]]:
    "The service's steps and what the Genesys side saw, in time order."
    entries = [(sim.started_at + s, 0, what) for s, what in sim.timeline
               if not what.startswith("key ")]
    result = sim.result
    for when, (name, seconds) in zip(result.turns, sim.prompts):
        entries.append((when, 1, f"  play {name} ({seconds:.2f}s)"))
    for when, key, during_audio in result.keys:
        entries.append((when, 2, f"caller presses {key}" + (" (barge-in)" if during_audio else "")))
    if result.end == "hangup" and result.ended_at is not None:
        entries.append((result.ended_at, 2, "caller hangs up"))
    for when, message in result.messages:
        if message.get("type") == "disconnect":
            reason = message.get("parameters", {}).get("reason")
            entries.append((when, 3, f"disconnect ({reason})"))
    entries.sort(key=lambda e: (e[0], e[1]))
    return entries


def _outcome_line(sim: AudioConnectorSimulation) -> Tuple[str, int]:
    outcome = sim.outcome
    if outcome is None:
        return "result: the call did not end in time", EXIT_CALL_FAILED
    after = f" after {sim.timeline[-1][0]:.2f}s" if sim.timeline else ""
    if outcome.kind == "transferred":
        return f"result: transferred to {outcome.target} ({outcome.reason}){after}", EXIT_OK
    if outcome.kind == "hungup":
        return f"result: hung up ({outcome.reason}){after}", EXIT_OK
    return f"result: failed ({outcome.reason}){after}", EXIT_CALL_FAILED


def ac_simulation_report(
    sim: AudioConnectorSimulation, path: str
) -> Tuple[List[str], int]:
    """
    Everything ``ivr simulate --front audio-connector`` prints, and its exit
    code (as for Call Control: 0 for a transfer or a hang-up, 3 otherwise or
    when the Genesys side saw the protocol broken).
    """
    caller = sim.caller
    profile = "" if caller.profile is None else " " + json.dumps(dict(caller.profile))
    lines = [
        f"ivr simulate {path}: one call through the Audio Connector "
        "(the emulator's Genesys side, loopback)",
        f"caller: {caller.external_id} (input variable externalId); profile "
        f"{caller.origin}{profile}",
        "keys: " + (", ".join(sim.tokens) or "(none: a silent caller)"),
        "times: in real seconds (prompts stream at real time); no-input, confirmation "
        f"and inter-digit timeouts divided by {sim.speed:g} (--speed)",
        "",
    ]
    start = sim.started_at
    lines.extend(f"{max(0.0, when - start):8.2f}s  {what}" for when, _, what in _entries(sim))
    lines.append("")
    result, code = _outcome_line(sim)
    lines.append(result)
    outputs = sim.result.output_variables
    if outputs is not None:
        lines.append("outputVariables: " + json.dumps(outputs, sort_keys=True))
    problems = list(sim.result.violations) + list(sim.result.unmet)
    if problems:
        lines.append("the Genesys side saw protocol violations: " + "; ".join(problems))
        code = EXIT_CALL_FAILED
    return lines, code
