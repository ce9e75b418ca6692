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
from typing import IO, Any, List, Mapping, Optional, Sequence, Tuple

import attrs
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.defer import TimeoutError as TimedOut

from ivrproto.cli.codes import EXIT_CALL_FAILED, PLATFORM_VARIABLES, CommandLineError
from ivrproto.cli.report import (
    MIN_SETTLE,
    REACTION,
    Caller,
    Simulation,
    simulation_report,
)
from ivrproto.config import (
    Config,
    load_config,
)
from ivrproto.menu.book import MenuBook

__all__ = [
    "DEFAULT_SPEED",
    "DEFAULT_MAX_TIME",
    "SIMULATED_CLIENT_ID",
    "SIMULATED_CALL_ID",
    "SIMULATED_CALLER",
    "parse_at",
    "parse_keys",
    "caller_script",
    "choose_caller",
    "scale_timing",
    "simulate",
    "load_for_simulate",
    "run_simulate",
]


#: Simulated calls run this many times faster than configured, by default.
DEFAULT_SPEED = 20.0


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

    :raises CommandLineError: it is not a time, or the zone is ambiguous
    """
    try:
        at = datetime.datetime.fromisoformat(text.strip())
    except ValueError:
        raise CommandLineError(f'--at: {text!r} is not a date and time such as "2026-12-25T10:00"') from None
    if at.tzinfo is None:
        zones = {s.time_zone: s.zone for s in book.schedules.values()}
        if len(zones) > 1:
            raise CommandLineError(
                "--at: the schedules are in several time zones ("
                + ", ".join(sorted(zones))
                + "); give an offset, such as 2026-12-25T10:00+01:00"
            )
        zone = next(iter(zones.values())) if zones else datetime.timezone.utc
        at = at.replace(tzinfo=zone)
    return at.timestamp()


def parse_keys(text: str) -> Tuple[str, ...]:
    """
    Check ``--keys``: comma-separated keys, runs of keys, ``timeout`` and
    ``hangup``.

    :raises CommandLineError: naming the bad item
    """
    if not text.strip():
        return ()
    tokens: list[Any] = []
    for raw in text.split(","):
        token = raw.strip()
        if token.lower() in ("timeout", "hangup"):
            token = token.lower()
        elif not token or any(k not in _KEYS for k in token):
            raise CommandLineError(
                f"--keys: {raw.strip()!r} is neither keys (0-9, * and #), 'timeout' nor 'hangup'"
            )
        if tokens and tokens[-1] == "hangup":
            raise CommandLineError("--keys: nothing can follow 'hangup'")
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

    :raises CommandLineError: ``--profile`` is not a JSON object
    :raises ConfigError: the config's ``[emulator]`` profiles are bad
    """
    if profile_json is not None:
        try:
            profile = json.loads(profile_json)
        except ValueError as e:
            raise CommandLineError(f"--profile: not valid JSON: {e}") from None
        if not isinstance(profile, dict):
            raise CommandLineError("--profile: must be a JSON object of attributes")
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
    return attrs.evolve(config, timing=timing, menu=config.menu.scaled(speed))


def _with_emulator(config: Config, base_url: str, secret: str) -> Config:
    """
    The configuration pointed at the simulation's own emulator, with its
    own credentials, no scripted calls of its own and no Audio Connector
    listener (the Call Control front end).
    """
    platform = attrs.evolve(
        config.platform,
        api_url=base_url,
        login_url=base_url,
        client_id=SIMULATED_CLIENT_ID,
        client_secret=secret,
    )
    ac = attrs.evolve(config.audio_connector, enabled=False)
    return attrs.evolve(config, emulator=None, platform=platform, audio_connector=ac)


@inlineCallbacks
def _one_call(
    reactor: Any, service: Any, platform: Any, caller: Caller, script: List[str],
    max_time: float, at: Optional[float],
) -> Any:
    """
    Place the call, wait for it to end (at most ``max_time``) and for the
    emulator's side to close.

    :return: a Deferred firing with ``(runner, record)``
    """
    registry = service.registry
    if at is not None:
        registry.context = attrs.evolve(registry.context, schedule_time=lambda: at)
    record = platform.expect_call(SIMULATED_CALL_ID, caller.external_id, script)
    runner = registry.start_call(SIMULATED_CALL_ID, caller.external_id)
    ended: Deferred[Any] = registry.when_ended(SIMULATED_CALL_ID)
    try:
        yield ended.addTimeout(max_time, reactor)
    except TimedOut:
        pass
    if record.connected and not record.finished:
        try:
            yield record.when_finished().addTimeout(5.0, reactor)
        except TimedOut:
            pass
    return runner, record


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
    front: str = "call-control",
) -> Any:
    """
    Run one call through :class:`~ivrproto.service.IVRService` against a
    :class:`~ivrproto.emulator.Platform` listening on ``127.0.0.1``.

    :param front: ``call-control`` (the platform's call), or
        ``audio-connector`` (a Genesys-side call on the service's listener:
        see :mod:`ivrproto.cli.simulate_ac`)
    :param config: the configuration as loaded (not yet scaled); its
        platform URLs and credentials are replaced by the emulator's
    :param tokens: the caller's actions, from :func:`parse_keys`
    :param at: the call's arrival time for the opening hours (seconds
        after the epoch; default: now)
    :return: a Deferred firing with a :class:`Simulation` (an
        ``AudioConnectorSimulation`` for the Audio Connector)
    """
    from ivrproto.emulator import Platform
    from ivrproto.service import IVRService

    secret = secrets.token_urlsafe(16)
    reaction = min(REACTION, config.timing.no_input_timeout / 4)
    script = caller_script(tokens, max(MIN_SETTLE, reaction / speed))
    profiles = {} if caller.profile is None else {caller.external_id: dict(caller.profile)}
    platform = Platform(reactor, clients={SIMULATED_CLIENT_ID: secret}, profiles=profiles)
    yield platform.listen("tcp:0:interface=127.0.0.1")
    service: Optional[IVRService] = None
    try:
        scaled = _with_emulator(scale_timing(config, speed), platform.base_url, secret)
        if front == "audio-connector":
            from ivrproto.cli.simulate_ac import simulate_audio_connector

            simulation = yield simulate_audio_connector(
                reactor, scaled, caller, tokens, script, max_time, at, speed
            )
            return simulation
        service = IVRService(reactor, scaled, intake="tcp:0:interface=127.0.0.1", admin="intake")
        yield service.start()
        runner, record = yield _one_call(
            reactor, service, platform, caller, script, max_time, at
        )
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

    :raises CommandLineError: a bad argument
    :raises ConfigError: the configuration is bad
    """
    tokens = parse_keys(args.keys)
    if not (args.speed >= 1 and args.speed <= 1000):
        raise CommandLineError("--speed: must be a number from 1 to 1000")
    if not args.max_time > 0:
        raise CommandLineError("--max-time: must be a number of seconds greater than zero")
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
    results: List[Any] = []  # a Simulation, or an AudioConnectorSimulation

    def run(reactor: Any) -> Deferred[None]:
        d = simulate(
            reactor, config, caller, tokens, speed=args.speed, max_time=args.max_time, at=at,
            front=args.front,
        )
        return d.addCallback(results.append)

    try:
        react(run)
    except SystemExit as e:
        if e.code not in (0, None) or not results:
            print("ivr simulate: the simulation broke (see the log above)", file=err)
            return EXIT_CALL_FAILED
    if args.front == "audio-connector":
        from ivrproto.cli.simulate_ac import ac_simulation_report

        lines, code = ac_simulation_report(results[0], args.config)
    else:
        lines, code = simulation_report(results[0], config, args.config)
    if at is not None:
        hours = config.menu.hours_at(at)
        when = datetime.datetime.fromtimestamp(at, datetime.timezone.utc).isoformat()
        lines.insert(1, f"as if the call arrived at {when} (opening hours: {hours.label})")
    for line in lines:
        print(line, file=out)
    return code
