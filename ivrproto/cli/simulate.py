"""
``ivr simulate``: one scripted call through the real service against the
embedded platform, with the timing scaled down and a report of what the
caller heard.
"""


from __future__ import annotations

import argparse
import datetime
import json
import secrets
from typing import IO, Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import attrs
from twisted.internet.defer import Deferred, TimeoutError as TimedOut, inlineCallbacks

from ivrproto.config import (
    Config,
    load_config,
)
from ivrproto.menu.book import MenuBook, MenuSpec, Option
from ivrproto.cli.codes import PLATFORM_VARIABLES, EXIT_CALL_FAILED, EXIT_OK, UsageError


__all__ = [
    "DEFAULT_SPEED",
    "REACTION",
    "MIN_SETTLE",
    "DEFAULT_MAX_TIME",
    "SIMULATED_CLIENT_ID",
    "SIMULATED_CALL_ID",
    "SIMULATED_CALLER",
    "parse_at",
    "Caller",
    "parse_keys",
    "caller_script",
    "choose_caller",
    "scale_timing",
    "Simulation",
    "simulate",
    "scaled_waits",
    "configured_seconds",
    "timeline_lines",
    "describe_outcome",
    "simulation_report",
    "load_for_simulate",
    "run_simulate",
]


#: Simulated calls run this many times faster than configured, by default.
DEFAULT_SPEED = 20.0


#: Seconds (configured time) between the last prompt of a batch arriving and
#: the simulated caller's key.
REACTION = 0.5


#: The shortest real wait for a batch of prompts to be complete.
MIN_SETTLE = 0.005


#: Real seconds the whole simulated call may take, by default.
DEFAULT_MAX_TIME = 300.0


_KEYS = frozenset("0123456789*#")


SIMULATED_CLIENT_ID = "ivr-simulate"


SIMULATED_CALL_ID = "sim-call-1"


SIMULATED_CALLER = "SIM-CALLER"


def parse_at(text: str, book: MenuBook) -> float:
    """
    ``--at``: an ISO date and time, in the schedules' time zone unless it
    has an offset, as seconds after the epoch.

    :raises UsageError: it is not a time, or the zone is ambiguous
    """
    try:
        at = datetime.datetime.fromisoformat(text.strip())
    except ValueError:
        raise UsageError(f'--at: {text!r} is not a date and time such as "2026-12-25T10:00"') from None
    if at.tzinfo is None:
        zones = {s.time_zone: s.zone for s in book.schedules.values()}
        if len(zones) > 1:
            raise UsageError(
                "--at: the schedules are in several time zones ("
                + ", ".join(sorted(zones))
                + "); give an offset, such as 2026-12-25T10:00+01:00"
            )
        zone = next(iter(zones.values())) if zones else datetime.timezone.utc
        at = at.replace(tzinfo=zone)
    return at.timestamp()


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


def parse_keys(text: str) -> Tuple[str, ...]:
    """
    Check ``--keys``: comma-separated keys, runs of keys, ``timeout`` and
    ``hangup``.

    :raises UsageError: naming the bad item
    """
    if not text.strip():
        return ()
    tokens: list[Any] = []
    for raw in text.split(","):
        token = raw.strip()
        if token.lower() in ("timeout", "hangup"):
            token = token.lower()
        elif not token or any(k not in _KEYS for k in token):
            raise UsageError(
                f"--keys: {raw.strip()!r} is neither keys (0-9, * and #), 'timeout' nor 'hangup'"
            )
        if tokens and tokens[-1] == "hangup":
            raise UsageError("--keys: nothing can follow 'hangup'")
        tokens.append(token)
    return tuple(tokens)


def caller_script(tokens: Sequence[str], settle: float) -> List[str]:
    """
    The emulator script for ``--keys`` tokens.

    Before each item the caller waits for the service's next batch of
    prompts (``prompts``): the menu, the answer to the last key, or what the
    service plays when its no-input timeout passes.  So ``timeout`` is
    just a wait for the next batch.

    :param settle: real seconds without a new prompt after which a batch
        counts as complete
    """
    steps = []
    for token in tokens:
        steps.append(f"prompts:{settle!r}")
        if token == "hangup":
            steps.append("hangup")
        elif token != "timeout":
            steps.extend(f"press:{key}" for key in token)
    return steps


def choose_caller(
    config: Config, profile_json: Optional[str], external_id: Optional[str]
) -> Caller:
    """
    The caller from ``--profile`` and ``--external-id``.

    :raises UsageError: ``--profile`` is not a JSON object
    :raises ConfigError: the config's ``[emulator]`` profiles are bad
    """
    if profile_json is not None:
        try:
            profile = json.loads(profile_json)
        except ValueError as e:
            raise UsageError(f"--profile: not valid JSON: {e}") from None
        if not isinstance(profile, dict):
            raise UsageError("--profile: must be a JSON object of attributes")
        return Caller(external_id or SIMULATED_CALLER, profile, "given by --profile")
    if external_id is None:
        return Caller(SIMULATED_CALLER, None, "none (the lookup answers 404)")
    from ivrproto.checks import check_scenario

    scenario = check_scenario(config)
    if scenario is None:
        return Caller(
            external_id, None, "none (the config has no [emulator] profiles; the lookup answers 404)"
        )
    found = scenario.profiles.get(external_id)
    if found is None:
        return Caller(
            external_id, None, "none (not in the config's [emulator] profiles; the lookup answers 404)"
        )
    return Caller(external_id, found, "from the config's [emulator] profiles")


def scale_timing(config: Config, speed: float) -> Config:
    """
    The configuration with the caller-facing delays divided by ``speed``:
    no-input timeouts (``[timing]`` and per menu), the confirmation delay
    and the inter-digit timeouts of digit entry.  Network timeouts (token,
    profile budget, handshake) are left alone.
    """
    if speed == 1:
        return config
    timing = attrs.evolve(
        config.timing,
        no_input_timeout=config.timing.no_input_timeout / speed,
        confirm_delay=config.timing.confirm_delay / speed,
    )
    book = config.menu
    closure = book.closure
    if closure is not None:
        closure = attrs.evolve(closure, wait=closure.wait / speed)

    def option(o: Option) -> Option:
        collect = o.action.collect
        if collect is None:
            return o
        faster = attrs.evolve(collect, inter_digit_timeout=collect.inter_digit_timeout / speed)
        return attrs.evolve(o, action=attrs.evolve(o.action, collect=faster))

    def menu(spec: MenuSpec) -> MenuSpec:
        return attrs.evolve(
            spec,
            options=tuple(option(o) for o in spec.options),
            default=None if spec.default is None else tuple(option(o) for o in spec.default),
            no_input_timeout=(
                None if spec.no_input_timeout is None else spec.no_input_timeout / speed
            ),
        )

    # A new book with its own (empty) cache of built menus.
    fresh: Dict[str, Any] = {
        f.alias: {} for f in attrs.fields(MenuBook) if f.name == "_cache" and f.alias
    }
    faster_book = attrs.evolve(
        book, menus={name: menu(spec) for name, spec in book.menus.items()}, closure=closure, **fresh
    )
    return attrs.evolve(config, timing=timing, menu=faster_book)


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


@inlineCallbacks
def simulate(
    reactor: Any,
    config: Config,
    caller: Caller,
    tokens: Sequence[str],
    *,
    speed: float = DEFAULT_SPEED,
    max_time: float = DEFAULT_MAX_TIME,
    at: Optional[float] = None,
) -> Any:
    """
    Run one call through :class:`~ivrproto.service.IVRService` against a
    :class:`~ivrproto.emulator.Platform` listening on ``127.0.0.1``.

    :param config: the configuration as loaded (not yet scaled); its
        platform URLs and credentials are replaced by the emulator's
    :param tokens: the caller's actions, from :func:`parse_keys`
    :param at: the call's arrival time for the opening hours (seconds
        after the epoch; default: now)
    :return: a Deferred firing with a :class:`Simulation`
    """
    from ivrproto.emulator import Platform
    from ivrproto.service import IVRService

    secret = secrets.token_urlsafe(16)
    scaled = scale_timing(config, speed)
    reaction = min(REACTION, config.timing.no_input_timeout / 4)
    script = caller_script(tokens, max(MIN_SETTLE, reaction / speed))
    profiles = {} if caller.profile is None else {caller.external_id: dict(caller.profile)}
    platform = Platform(reactor, clients={SIMULATED_CLIENT_ID: secret}, profiles=profiles)
    yield platform.listen("tcp:0:interface=127.0.0.1")
    service: Optional[IVRService] = None
    try:
        scaled = attrs.evolve(
            scaled,
            emulator=None,  # no scripted calls of its own: only ours
            platform=attrs.evolve(
                scaled.platform,
                api_url=platform.base_url,
                login_url=platform.base_url,
                client_id=SIMULATED_CLIENT_ID,
                client_secret=secret,
            ),
        )
        service = IVRService(reactor, scaled, intake="tcp:0:interface=127.0.0.1", admin="intake")
        yield service.start()
        assert service.registry is not None
        if at is not None:
            service.registry.context = attrs.evolve(
                service.registry.context, schedule_time=lambda: at
            )
        record = platform.expect_call(SIMULATED_CALL_ID, caller.external_id, script)
        runner = service.registry.start_call(SIMULATED_CALL_ID, caller.external_id)
        ended: Deferred[Any] = service.registry.when_ended(SIMULATED_CALL_ID)
        try:
            yield ended.addTimeout(max_time, reactor)
        except TimedOut:
            pass
        if record.connected and not record.finished:
            try:
                yield record.when_finished().addTimeout(5.0, reactor)
            except TimedOut:
                pass
        core = runner.core
        return Simulation(
            caller=caller,
            tokens=tuple(tokens),
            speed=speed,
            started_at=core.started_at,
            timeline=tuple(core.timeline),
            outcome=core.outcome,
            record=record,
        )
    finally:
        if service is not None:
            yield service.stop()
        yield platform.stop()


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


def load_for_simulate(path: str, environ: Mapping[str, str]) -> Config:
    """
    Load a configuration for a simulation: the environment may change the
    audio URL and the rest, but not where the platform is nor the
    credentials (the simulation has its own).

    :raises ConfigError: the configuration is bad
    """
    env = {k: v for k, v in environ.items() if k not in PLATFORM_VARIABLES}
    env["CLIENT_ID"] = SIMULATED_CLIENT_ID
    env["CLIENT_SECRET"] = "placeholder"
    config = load_config(path, env)
    from ivrproto.checks import check_scenario

    check_scenario(config)
    return config


def run_simulate(
    args: argparse.Namespace, environ: Mapping[str, str], out: IO[str], err: IO[str]
) -> int:
    """
    ``ivr simulate``: runs the global reactor.

    :raises UsageError: a bad argument
    :raises ConfigError: the configuration is bad
    """
    tokens = parse_keys(args.keys)
    if not (args.speed >= 1 and args.speed <= 1000):
        raise UsageError("--speed: must be a number from 1 to 1000")
    if not args.max_time > 0:
        raise UsageError("--max-time: must be a number of seconds greater than zero")
    config = load_for_simulate(args.config, environ)
    caller = choose_caller(config, args.profile, args.external_id)
    at = None if args.at is None else parse_at(args.at, config.menu)

    from twisted.internet.task import react
    from twisted.logger import (
        FilteringLogObserver,
        LogLevel,
        LogLevelFilterPredicate,
        globalLogBeginner,
        textFileLogObserver,
    )

    level = LogLevel.info if args.verbose else LogLevel.error
    globalLogBeginner.beginLoggingTo(
        [
            FilteringLogObserver(
                textFileLogObserver(err), [LogLevelFilterPredicate(defaultLogLevel=level)]
            )
        ],
        redirectStandardIO=False,
    )
    results: List[Simulation] = []

    def run(reactor: Any) -> Deferred[None]:
        d = simulate(
            reactor, config, caller, tokens, speed=args.speed, max_time=args.max_time, at=at
        )
        return d.addCallback(results.append)

    try:
        react(run)
    except SystemExit as e:
        if e.code not in (0, None) or not results:
            print("ivr simulate: the simulation broke (see the log above)", file=err)
            return EXIT_CALL_FAILED
    lines, code = simulation_report(results[0], config, args.config)
    if at is not None:
        hours = config.menu.hours_at(at)
        when = datetime.datetime.fromtimestamp(at, datetime.timezone.utc).isoformat()
        lines.insert(1, f"as if the call arrived at {when} (opening hours: {hours.label})")
    for line in lines:
        print(line, file=out)
    return code
