"""
The ``ivr`` command (also ``python -m ivrproto``):

- ``ivr check CONFIG`` loads and checks a configuration and prints its menu
  tree, transfer targets and languages;
- ``ivr simulate CONFIG`` runs one call through the real service (session,
  Call Control protocol, token source and profile lookup) against the
  embedded platform emulator on loopback, with a scripted caller, and prints
  what happened, when.

The simulation only ever talks to ``127.0.0.1``: the platform URLs and
credentials of the configuration and of the environment are replaced by the
local emulator's.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import IO, Any, Mapping, Optional, Sequence

from ivrproto import __version__
from ivrproto.cli.check import run_check
from ivrproto.cli.codes import (
    EXIT_CONFIG,
    EXIT_OK,
    EXIT_USAGE,
    CommandLineError,
    config_error_line,
)
from ivrproto.cli.simulate import DEFAULT_MAX_TIME, DEFAULT_SPEED, run_simulate
from ivrproto.config import (
    CONFIG_ENV,
)
from ivrproto.errors import ConfigError

# --- the command line --------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """
    The ``ivr`` argument parser.
    """
    parser = argparse.ArgumentParser(
        prog="ivr",
        description="Check an ivrproto configuration, or simulate a call through it.",
        epilog="Exit codes: 0 ok; 1 bad configuration; 2 bad arguments; "
        "3 the simulated call failed or did not end.",
    )
    parser.add_argument("--version", action="version", version=f"ivr (ivrproto) {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_check(commands)
    _add_simulate(commands)
    return parser


def _add_check(commands: Any) -> None:
    "``ivr check``'s arguments."
    check = commands.add_parser(
        "check",
        help="load and check a configuration; print its menu tree",
        description="Load and check CONFIG (with the environment's overrides) and print "
        "its menu tree, transfer targets and languages.  Missing CLIENT_ID and "
        "CLIENT_SECRET are replaced by placeholders, so that a menu can be checked "
        "without credentials.",
    )
    check.add_argument(
        "config",
        metavar="CONFIG",
        nargs="?",
        help=f"the configuration file (TOML; default: ${CONFIG_ENV})",
    )


def _add_simulate(commands: Any) -> None:
    "``ivr simulate``'s arguments."
    simulate = commands.add_parser(
        "simulate",
        help="run one call through the service against the local emulator",
        description="Run one call through the real service code against the embedded "
        "platform emulator (loopback only) and print its timeline: prompts played, "
        "keys pressed, timeouts, and where the call ended.",
        epilog="KEYS is a comma-separated list: a key (0-9, * or #) presses it once the "
        "prompts are in; several keys (12345678#) are pressed one after the other, for "
        "entering a number; 'timeout' stays silent until the service acts on its "
        "no-input timeout; 'hangup' hangs up.  After the last item the caller stays "
        "silent.  Example: --keys '7,timeout,0'.",
    )
    simulate.add_argument("config", metavar="CONFIG", help="the configuration file (TOML)")
    simulate.add_argument(
        "--profile",
        metavar="JSON",
        help='the caller\'s profile attributes, a JSON object such as \'{"membership_level": '
        '"premium"}\' (default: no profile, unless --external-id finds one)',
    )
    simulate.add_argument(
        "--external-id",
        metavar="ID",
        help="the caller's external id; without --profile, its profile comes from the "
        "config's [emulator] profiles, if it has them",
    )
    simulate.add_argument(
        "--keys", metavar="KEYS", default="", help="what the caller does (default: nothing)"
    )
    simulate.add_argument(
        "--speed",
        metavar="N",
        type=float,
        default=DEFAULT_SPEED,
        help="run the call N times faster than configured (no-input, confirmation and "
        "inter-digit timeouts, and the caller's reaction, divided by N); those waits are "
        "printed at their configured length, everything else at its real one "
        f"(default {DEFAULT_SPEED:g}; 1 is real time)",
    )
    simulate.add_argument(
        "--max-time",
        metavar="SECONDS",
        type=float,
        default=DEFAULT_MAX_TIME,
        help=f"give up on a call that has not ended after SECONDS (real time; default "
        f"{DEFAULT_MAX_TIME:g})",
    )
    simulate.add_argument(
        "--at",
        metavar="TIME",
        help='run the call as if it arrived at TIME, such as "2026-12-25T10:00": in the '
        "schedules' time zone unless TIME has an offset (+01:00, Z); the opening hours "
        "and rules are read then (default: now)",
    )
    simulate.add_argument(
        "--front",
        choices=("call-control", "audio-connector"),
        default="call-control",
        help="the front end the call comes through: the platform's Call Control "
        "WebSocket (default), or the Audio Connector, as a Genesys Cloud call placed "
        "by the emulator's Genesys side on a loopback listener with a key made for the run",
    )
    simulate.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="also print the service's log (to stderr)",
    )


def main(
    argv: Optional[Sequence[str]] = None,
    stdout: Optional[IO[str]] = None,
    stderr: Optional[IO[str]] = None,
    environ: Optional[Mapping[str, str]] = None,
) -> int:
    """
    Run the ``ivr`` command.

    :param argv: the arguments (default: ``sys.argv[1:]``)
    :param stdout: where results go (default: ``sys.stdout``)
    :param stderr: where errors go (default: ``sys.stderr``)
    :param environ: the environment (default: ``os.environ``)
    :return: the exit code
    """
    out = stdout or sys.stdout
    err = stderr or sys.stderr
    env = os.environ if environ is None else environ
    parser = build_parser()
    try:
        args = _parse(parser, argv, out, err)
    except SystemExit as e:  # --help, or argparse's own usage errors
        return e.code if isinstance(e.code, int) else EXIT_USAGE
    try:
        if args.command == "check":
            args.config = args.config or env.get(CONFIG_ENV)
            if not args.config:
                raise CommandLineError(f"CONFIG (or {CONFIG_ENV}) is required")
            return run_check(args.config, env, out)
        return run_simulate(args, env, out, err)
    except BrokenPipeError:
        # The reader went away (| head): not worth a traceback.
        if out is sys.stdout:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK
    except CommandLineError as e:
        print(f"ivr {args.command}: error: {e}", file=err)
        return EXIT_USAGE
    except ConfigError as e:
        print(config_error_line(e, args.config), file=err)
        return EXIT_CONFIG


def _parse(
    parser: argparse.ArgumentParser, argv: Optional[Sequence[str]], out: IO[str], err: IO[str]
) -> argparse.Namespace:
    # argparse writes to sys.stdout and sys.stderr: point them at ours.
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = out, err
    try:
        return parser.parse_args(argv)
    finally:
        sys.stdout, sys.stderr = saved




# --- ivr check ---------------------------------------------------------------




















# --- ivr simulate: the caller ------------------------------------------------










# --- ivr simulate: time ------------------------------------------------------




# --- ivr simulate: the call --------------------------------------------------






















