"""
Tests for the ``ivr`` command (:mod:`ivrproto.cli`): ``ivr check`` in
process, the pieces of ``ivr simulate`` as functions, one simulation in
process on the global reactor, and the simulator's output for the examples
from ``python -m ivrproto simulate`` in a subprocess.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import attrs
from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import SynchronousTestCase, TestCase

from ivrproto.cli import simulate as cli_simulate
from ivrproto.cli.report import Caller, Simulation, simulation_report
from ivrproto.cli.simulate import (
    caller_script,
    choose_caller,
    load_for_simulate,
    parse_keys,
    scale_timing,
    simulate,
)
from ivrproto.cli.codes import CommandLineError
from ivrproto.cli.check import load_for_check
from ivrproto.cli.main import main
from ivrproto.emulator import CallRecord
from ivrproto.session.machine import Outcome

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
SEED = str(EXAMPLES / "seed.toml")
RICH = str(EXAMPLES / "rich.toml")
LOCAL = str(EXAMPLES / "local.toml")
AUDIO = "https://example.com/ivr/audio/"
CREDENTIALS = {"CLIENT_ID": "client", "CLIENT_SECRET": "s3cret"}


def run_main(
    argv: Sequence[str], environ: Optional[Mapping[str, str]] = None
) -> tuple[int, str, str]:
    """
    Run ``ivr`` in process: (exit code, stdout, stderr).
    """
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), stdout=out, stderr=err, environ={} if environ is None else environ)
    return code, out.getvalue(), err.getvalue()


def temporary_directory(test: SynchronousTestCase) -> Path:
    directory = Path(tempfile.mkdtemp(prefix="ivrproto-cli-"))
    test.addCleanup(shutil.rmtree, directory, True)
    return directory


def assert_in_order(test: SynchronousTestCase, text: str, parts: Sequence[str]) -> None:
    """
    Each of ``parts`` occurs in ``text``, each after the one before.
    """
    position = 0
    for part in parts:
        found = text.find(part, position)
        test.assertNotEqual(found, -1, f"{part!r} missing after position {position} in:\n{text}")
        position = found + len(part)


class CheckTests(SynchronousTestCase):
    """
    ``ivr check CONFIG`` on the examples.
    """

    def test_seed(self) -> None:
        """The seed's tree shows the three profile options, the default menu and the targets."""
        code, out, err = run_main(["check", SEED])
        self.assertEqual((code, err), (0, ""))
        self.assertTrue(out.startswith(f"{SEED}: OK\n"))
        assert_in_order(
            self,
            out,
            [
                "menu main (start)",
                "with a profile:",
                "1: premium_priority.mp3 -> transfer to ext:transfer_premium",
                "membership_level",
                "2: ticket_status.mp3 -> transfer to ext:play_ticket_info",
                "open_tickets",
                "0: general_operator.mp3 -> transfer to ext:transfer_operator",
                "without a profile:",
                "1: general_welcome.mp3 -> transfer to ext:transfer_sales",
                "2: general_support.mp3 -> transfer to ext:transfer_support",
                "0: general_operator.mp3 -> transfer to ext:transfer_operator",
                "transfer targets",
                "transfer_premium",
                "ext:transfer_premium",
                "languages: en",
            ],
        )
        # Nested lines are indented under their menu.
        self.assertRegex(out, r"\n {2}menu main \(start\)\n {4,}with a profile:\n {6,}1: ")

    def test_missing_credentials_are_placeholders(self) -> None:
        """Without CLIENT_ID and CLIENT_SECRET the menu is still checked, and the output says so."""
        code, out, err = run_main(["check", SEED])
        self.assertEqual(code, 0)
        self.assertIn("CLIENT_ID and CLIENT_SECRET not set; checked with placeholders", out)
        code, out, err = run_main(["check", SEED], {"CLIENT_ID": "client"})
        self.assertIn("credentials: CLIENT_SECRET not set", out)
        code, out, err = run_main(["check", SEED], CREDENTIALS)
        self.assertEqual(code, 0)
        self.assertNotIn("placeholder", out)
        self.assertNotIn("s3cret", out)

    def test_rich(self) -> None:
        """The rich example passes; its tree shows the sub-menu, the entry and both languages."""
        code, out, err = run_main(["check", RICH])
        self.assertEqual((code, err), (0, ""))
        assert_in_order(
            self,
            out,
            [
                "menu main (start)",
                "2: billing -> submenu billing",
                "menu billing",
                "collect account (6-10 digits, ends with #), then transfer to ext:transfer_billing",
                "play billing_hours_message",
                "9: back -> submenu main",
                "after the last try: transfer to ext:transfer_billing",
                "3: hours -> play hours_message",
                "*: repeat -> repeat",
                "without a profile:",
                "after the last try: transfer to ext:transfer_operator",
                "input settings",
                "main: intro welcome, no input after 10s",
                "billing: intro billing_intro, no input after 6s, 1 repeat, max invalid 2",
                "billing_agent = ext:transfer_billing",
            ],
        )
        self.assertIn("languages: en (default): ", out)
        self.assertIn("fr: ", out)
        self.assertIn("profile attribute 'language'", out)

    def test_local(self) -> None:
        """A config with an embedded platform passes and says so."""
        code, out, err = run_main(["check", LOCAL])
        self.assertEqual((code, err), (0, ""))
        self.assertIn("[emulator]", out)

    def test_environment_overrides(self) -> None:
        """The environment's overrides are checked too: a bad GENESYS_BASE_URL is refused."""
        code, out, err = run_main(
            ["check", SEED], {**CREDENTIALS, "GENESYS_BASE_URL": "http://api.example.com"}
        )
        self.assertEqual((code, out), (1, ""))
        self.assertTrue(err.startswith(f"error: {SEED}: platform.api_url: plain http"), err)


class BadConfigTests(SynchronousTestCase):
    """
    A bad configuration: one line on stderr naming the file and the key, exit 1.
    """

    def setUp(self) -> None:
        self.directory = temporary_directory(self)
        self.seed = Path(SEED).read_text(encoding="utf-8")

    def check(self, text: str, key: str, reason: str = "") -> str:
        path = self.directory / "bad.toml"
        path.write_text(text, encoding="utf-8")
        code, out, err = run_main(["check", str(path)], CREDENTIALS)
        self.assertEqual((code, out), (1, ""))
        self.assertEqual(err.count("\n"), 1, err)
        self.assertNotIn("Traceback", err)
        self.assertTrue(err.startswith(f"error: {path}: {key}: "), err)
        self.assertIn(reason, err)
        return err

    def test_bad_timing(self) -> None:
        """A wrongly typed timing names timing.confirm_delay."""
        self.check(
            self.seed.replace("confirm_delay = 1.5", 'confirm_delay = "soon"'),
            "timing.confirm_delay",
            "must be a number",
        )

    def test_unknown_target(self) -> None:
        """An option naming a target that is not in the allow-list names the option."""
        self.check(
            self.seed.replace('action = "transfer_sales"', 'action = "transfer_nowhere"'),
            "menu.default[0].action",
            "transfer_nowhere",
        )

    def test_unknown_submenu(self) -> None:
        """A sub-menu that does not exist is named."""
        rich = Path(RICH).read_text(encoding="utf-8")
        self.check(
            rich.replace('submenu = "main"', 'submenu = "mian"'),
            "menu.menus.billing.options[2].submenu",
            "mian",
        )

    def test_not_toml(self) -> None:
        """A file that is not TOML is one line too, without the parser's traceback."""
        self.check("[menu\nx = 1\n", "(file)", "not valid TOML")

    def test_missing_file(self) -> None:
        """A file that cannot be read."""
        path = self.directory / "nowhere.toml"
        code, out, err = run_main(["check", str(path)])
        self.assertEqual(code, 1)
        self.assertEqual(err, f"error: {path}: (file): cannot read {path}: No such file or directory\n")

    def test_no_menu(self) -> None:
        """A scenario file is not a service configuration."""
        code, out, err = run_main(["check", str(EXAMPLES / "emulator.toml")])
        self.assertEqual(code, 1)
        self.assertIn(": menu: ", err)

    def test_open_intake(self) -> None:
        """An intake beyond loopback without a shared secret is refused, as twistd ivr does."""
        self.check(
            self.seed.replace('listen = "tcp:8080:interface=127.0.0.1"', 'listen = "tcp:8080"'),
            "intake.listen",
        )

    def test_bad_scripted_call(self) -> None:
        """The [[calls]] of an embedded platform are checked too."""
        local = Path(LOCAL).read_text(encoding="utf-8")
        shutil.copy(EXAMPLES / "profiles.json", self.directory / "profiles.json")
        self.check(
            local.replace('script = ["menu", "press:1"]', 'script = ["menu", "fly"]', 1),
            "calls[0].script[1]",
        )

    def test_simulate_bad_config(self) -> None:
        """simulate reports a bad configuration the same way, before running anything."""
        path = self.directory / "bad.toml"
        path.write_text(self.seed.replace("max_invalid = 0", "max_invalid = -1"), encoding="utf-8")
        code, out, err = run_main(["simulate", str(path), "--keys", "1"])
        self.assertEqual((code, out), (1, ""))
        self.assertTrue(err.startswith(f"error: {path}: timing.max_invalid: "), err)


class UsageTests(SynchronousTestCase):
    """
    Wrong arguments: exit 2, a message on stderr.
    """

    def test_no_command(self) -> None:
        """ivr alone is a usage error."""
        code, out, err = run_main([])
        self.assertEqual(code, 2)
        self.assertIn("usage: ivr", err)

    def test_help(self) -> None:
        """--help prints the usage and exits 0."""
        code, out, err = run_main(["simulate", "--help"])
        self.assertEqual(code, 0)
        self.assertIn("--profile JSON", out)
        self.assertIn("timeout", out)

    def test_bad_arguments(self) -> None:
        """Bad --keys, --profile and --speed are named."""
        for argv, expected in [
            (["--keys", "1,x"], "--keys: 'x'"),
            (["--keys", "1,,2"], "--keys: ''"),
            (["--keys", "hangup,1"], "nothing can follow 'hangup'"),
            (["--profile", "[1]"], "--profile: must be a JSON object"),
            (["--profile", "{x"], "--profile: not valid JSON"),
            (["--speed", "0"], "--speed"),
            (["--speed", "fast"], "--speed"),
            (["--max-time", "0"], "--max-time"),
        ]:
            code, out, err = run_main(["simulate", SEED, *argv])
            self.assertEqual((code, out), (2, ""), argv)
            self.assertIn(expected, err)
            self.assertNotIn("Traceback", err)


class KeysTests(SynchronousTestCase):
    """
    --keys and the emulator script it becomes.
    """

    def test_parse(self) -> None:
        """Keys, runs of keys, timeout and hangup; spaces and case do not matter."""
        self.assertEqual(parse_keys(""), ())
        self.assertEqual(parse_keys(" 7, Timeout ,0"), ("7", "timeout", "0"))
        self.assertEqual(parse_keys("2,1,12345678#,*"), ("2", "1", "12345678#", "*"))
        self.assertEqual(parse_keys("1,hangup"), ("1", "hangup"))
        for bad in ("a", "1,", "12a", "wait"):
            self.assertRaises(CommandLineError, parse_keys, bad)

    def test_script(self) -> None:
        """Each item waits for the next prompts; a timeout only waits; runs press each key."""
        self.assertEqual(
            caller_script(("7", "timeout", "0"), 0.025),
            ["prompts:0.025", "press:7", "prompts:0.025", "prompts:0.025", "press:0"],
        )
        self.assertEqual(
            caller_script(("12#", "hangup"), 0.5),
            ["prompts:0.5", "press:1", "press:2", "press:#", "prompts:0.5", "hangup"],
        )
        self.assertEqual(caller_script((), 0.5), [])


class CallerTests(SynchronousTestCase):
    """
    Where the simulated caller's profile comes from.
    """

    def test_profile_given(self) -> None:
        """--profile is registered under --external-id, or a made-up id."""
        config = load_for_simulate(SEED, {})
        caller = choose_caller(config, '{"membership_level": "premium"}', None)
        self.assertEqual(caller.profile, {"membership_level": "premium"})
        self.assertEqual(caller.external_id, cli_simulate.SIMULATED_CALLER)
        self.assertEqual(choose_caller(config, "{}", "CRM-9").external_id, "CRM-9")

    def test_from_emulator_profiles(self) -> None:
        """--external-id finds a profile in the config's [emulator] profiles file."""
        config = load_for_simulate(LOCAL, {})
        caller = choose_caller(config, None, "CRM-PREMIUM-TICKETS")
        self.assertEqual(caller.profile["membership_level"], "premium")
        self.assertIsNone(choose_caller(config, None, "CRM-NOBODY").profile)

    def test_no_profile(self) -> None:
        """No --profile and no [emulator] profiles: no profile (a 404)."""
        config = load_for_simulate(SEED, {})
        self.assertIsNone(choose_caller(config, None, None).profile)
        self.assertIsNone(choose_caller(config, None, "CRM-PREMIUM").profile)

    def test_environment_cannot_redirect(self) -> None:
        """The platform URLs and credentials of the environment are not used."""
        config = load_for_simulate(
            SEED,
            {
                "GENESYS_BASE_URL": "https://api.mypurecloud.de",
                "CLIENT_ID": "real-client",
                "CLIENT_SECRET": "real-secret",
                "AUDIO_BASE_URL": "https://cdn.example.com/a/",
            },
        )
        self.assertEqual(config.platform.client_id, cli_simulate.SIMULATED_CLIENT_ID)
        self.assertNotEqual(config.platform.client_secret, "real-secret")
        self.assertNotIn("mypurecloud.de", config.platform.api_url)
        self.assertEqual(config.menu.audio_base_url, "https://cdn.example.com/a/")


class ScaleTests(SynchronousTestCase):
    """
    --speed divides the caller-facing delays, and nothing else.
    """

    def test_scaled(self) -> None:
        """No-input (global and per menu), confirmation and inter-digit timeouts; not the network."""
        config, _ = load_for_check(RICH, CREDENTIALS)
        fast = scale_timing(config, 10)
        self.assertEqual(fast.timing.no_input_timeout, config.timing.no_input_timeout / 10)
        self.assertEqual(fast.timing.confirm_delay, config.timing.confirm_delay / 10)
        self.assertEqual(fast.timing.profile_budget, config.timing.profile_budget)
        self.assertEqual(fast.timing.handshake_timeout, config.timing.handshake_timeout)
        self.assertEqual(fast.menu.menus["billing"].no_input_timeout, 0.6)
        self.assertEqual(fast.menu.menus["main"].no_input_timeout, 1.0)
        collect = fast.menu.menus["billing"].options[0].action.collect
        self.assertEqual(collect.inter_digit_timeout, 0.4)
        # The configuration itself is unchanged, and menus are built anew.
        self.assertEqual(config.menu.menus["billing"].no_input_timeout, 6.0)
        config.menu.menu_for(None, "billing")
        built = fast.menu.menu_for(None, "billing")
        self.assertEqual(built.spec.no_input_timeout, 0.6)
        self.assertEqual(built.actions["1"].collect.inter_digit_timeout, 0.4)

    def test_real_time(self) -> None:
        """--speed 1 leaves the configuration as it is."""
        config, _ = load_for_check(SEED, CREDENTIALS)
        self.assertIs(scale_timing(config, 1), config)


class ReportTests(SynchronousTestCase):
    """
    The printed timeline, from a made-up call.
    """

    def test_report(self) -> None:
        """Service steps and platform events merge in time order; only the scaled waits are multiplied back."""
        config, _ = load_for_check(SEED, CREDENTIALS)
        record = CallRecord("c", "e")
        record.commands = [
            {"action": "play", "audio": AUDIO + "general_welcome.mp3", "dtmf": {"enabled": True, "keys": ["1"]}},
            {"action": "play", "audio": AUDIO + "selection_confirmed.mp3", "dtmf": {"enabled": False}},
            {"action": "transfer", "target": "ext:transfer_sales", "type": "number"},
        ]
        record.command_times = [100.011, 100.1, 100.2]
        record.keys_pressed = ["1", "2", "3"]
        record.key_times = [100.05, 100.0500001, 100.0500002]
        simulation = Simulation(
            caller=Caller("SIM-CALLER", None, "none"),
            tokens=("123",),
            speed=10.0,
            started_at=100.0,
            timeline=(
                (0.0, "call accepted"),
                (0.01, "menu offered (1)"),
                (0.06, "key 1"),
                (0.06, "selection confirmed"),
                (0.2, "transfer to ext:transfer_sales"),
                (0.2, "ended: transferred (selected)"),
            ),
            outcome=Outcome("transferred", "selected", "ext:transfer_sales", "transfer_sales"),
            record=record,
        )
        lines, code = simulation_report(simulation, config, "seed.toml")
        self.assertEqual(code, 0)
        body = lines[lines.index("") + 1 :]
        self.assertEqual(
            body,
            [
                "    0.00s  call accepted",
                "    0.01s  menu offered (1)",
                "    0.01s    play general_welcome.mp3",
                "    0.40s  caller presses 1 2 3",
                "    0.41s  selection confirmed",
                "    0.45s    play selection_confirmed.mp3 (keys off)",
                "    1.45s  transfer to ext:transfer_sales",
                "    1.45s  ended: transferred (selected)",
                "",
                "result: transferred to ext:transfer_sales (selected) after 1.45s",
            ],
        )
        self.assertIn("configured seconds", lines[3])

    def test_unscaled_phases_at_real_duration(self) -> None:
        """At --speed 20 an 11 ms lookup shows as 0.01 s and a 10 s no-input wait as 10 s."""
        config, _ = load_for_check(SEED, CREDENTIALS)
        record = CallRecord("c", "e")
        record.commands = [
            {"action": "play", "audio": AUDIO + "general_welcome.mp3", "dtmf": {"enabled": True, "keys": ["1", "0"]}},
            {"action": "play", "audio": AUDIO + "general_operator.mp3", "dtmf": {"enabled": True, "keys": ["1", "0"]}},
        ]
        record.command_times = [100.0150, 100.0151]
        simulation = Simulation(
            caller=Caller("SIM-CALLER", None, "none"),
            tokens=("timeout",),
            speed=20.0,
            started_at=100.0,
            timeline=(
                (0.0, "call accepted"),
                (0.011, "profile not found; default menu"),
                (0.013, "connected"),
                (0.014, "menu offered (1 0)"),
                (0.0151 + 10.0 / 20, "no input"),
                (0.0151 + 10.0 / 20, "transfer to ext:transfer_operator"),
                (0.0151 + 10.0 / 20, "ended: transferred (no-input)"),
            ),
            outcome=Outcome("transferred", "no-input", "ext:transfer_operator", "transfer_operator"),
            record=record,
        )
        lines, _ = simulation_report(simulation, config, "seed.toml")
        body = lines[lines.index("") + 1 :]
        self.assertEqual(
            body[:6],
            [
                "    0.00s  call accepted",
                "    0.01s  profile not found; default menu",
                "    0.01s  connected",
                "    0.01s  menu offered (1 0)",
                "    0.02s    play general_welcome.mp3",
                "    0.02s    play general_operator.mp3",
            ],
        )
        self.assertEqual(body[6], "   10.02s  no input")
        self.assertEqual(lines[-1], "result: transferred to ext:transfer_operator (no-input) after 10.02s")

    def test_failed_and_unfinished(self) -> None:
        """A failed call, or one that did not end, exits 3."""
        config, _ = load_for_check(SEED, CREDENTIALS)
        simulation = Simulation(
            Caller("X", None, "none"), (), 20.0, 0.0, ((0.0, "call accepted"),),
            Outcome("failed", "handshake timed out"), CallRecord("c", "e"),
        )
        lines, code = simulation_report(simulation, config, "seed.toml")
        self.assertEqual((lines[-1], code), ("result: failed (handshake timed out) after 0.00s", 3))
        lines, code = simulation_report(attrs.evolve(simulation, outcome=None), config, "seed.toml")
        self.assertEqual((lines[-1], code), ("result: the call did not end in time", 3))


class SimulateInProcessTests(TestCase):
    """
    One simulation on the global reactor: the real service, the real emulator.
    """

    @inlineCallbacks
    def test_premium(self) -> Any:
        """A premium caller presses 1 and is transferred; nothing is left running."""
        config = load_for_simulate(SEED, {})
        caller = Caller("CRM-1", {"membership_level": "premium", "open_tickets": 1}, "test")
        simulation = yield simulate(reactor, config, caller, ("1",), speed=50)
        self.assertEqual(simulation.outcome.target, "ext:transfer_premium")
        record = simulation.record
        self.assertEqual(record.violations, [])
        self.assertEqual(
            [url[len(AUDIO):] for url in record.plays],
            ["premium_priority.mp3", "ticket_status.mp3", "general_operator.mp3",
             "selection_confirmed.mp3"],
        )
        self.assertEqual(record.keys_pressed, ["1"])
        self.assertEqual(len(record.command_times), len(record.commands))
        # The caller's secret never appears: the simulation has its own.
        self.assertEqual(record.handshake_frame["callControlId"], cli_simulate.SIMULATED_CALL_ID)


class SimulateOutputTests(SynchronousTestCase):
    """
    ``python -m ivrproto simulate`` on the examples: the printed timeline.
    """

    def simulate(self, *argv: str, expect: int = 0) -> str:
        env = dict(os.environ)
        env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
        done = subprocess.run(
            [sys.executable, "-m", "ivrproto", "simulate", *argv],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        self.assertEqual(done.returncode, expect, done.stdout + done.stderr)
        self.assertEqual(done.stderr, "")
        self.assertIn("times: in configured seconds; the call ran 20x faster (--speed 20)", done.stdout)
        return done.stdout

    def test_seed_premium(self) -> None:
        """seed.toml, premium profile, key 1: premium menu, confirmation, ext:transfer_premium."""
        out = self.simulate(
            "examples/seed.toml", "--profile", '{"membership_level": "premium"}', "--keys", "1"
        )
        assert_in_order(
            self,
            out,
            [
                'profile given by --profile {"membership_level": "premium"}',
                "profile found; profile menu",
                "menu offered (1 0)",
                "play premium_priority.mp3",
                "play general_operator.mp3",
                "caller presses 1",
                "selection confirmed",
                "play selection_confirmed.mp3 (keys off)",
                "transfer to ext:transfer_premium",
                "result: transferred to ext:transfer_premium (selected) after ",
            ],
        )
        self.assertNotIn("ticket_status.mp3", out)  # no open_tickets in this profile

    def test_local_external_id(self) -> None:
        """--external-id takes the profile from local.toml's profiles file: all three options."""
        out = self.simulate("examples/local.toml", "--external-id", "CRM-PREMIUM-TICKETS", "--keys", "2")
        assert_in_order(
            self,
            out,
            [
                "caller: CRM-PREMIUM-TICKETS; profile from the config's [emulator] profiles",
                "play premium_priority.mp3",
                "play ticket_status.mp3",
                "play general_operator.mp3",
                "caller presses 2",
                "transfer to ext:play_ticket_info",
                "result: transferred to ext:play_ticket_info (selected)",
            ],
        )

    def test_seed_invalid_timeout_operator(self) -> None:
        """No profile, keys 7, timeout, 0: invalid selection, the menu again, then the operator."""
        out = self.simulate("examples/seed.toml", "--keys", "7,timeout,0")
        default_menu = ["play general_welcome.mp3", "play general_support.mp3", "play general_operator.mp3"]
        assert_in_order(
            self,
            out,
            [
                "profile none (the lookup answers 404)",
                "default menu",
                "menu offered (1 2 0)",
                *default_menu,
                "caller presses 7",
                "invalid selection",
                "play invalid_selection.mp3",
                "no input",
                "menu offered (1 2 0)",
                *default_menu,
                "caller presses 0",
                "play selection_confirmed.mp3 (keys off)",
                "transfer to ext:transfer_operator",
                "result: transferred to ext:transfer_operator (selected)",
            ],
        )
        self.assertEqual(out.count("no input"), 1)
        # The repeat comes a no-input timeout (10 s configured) after the
        # menu was offered: the invalid key does not restart it (item 8).
        offered = float(re.search(r"([\d.]+)s {2}menu offered", out).group(1))
        repeat = float(re.search(r"([\d.]+)s {2}no input", out).group(1))
        self.assertGreaterEqual(repeat - offered, 9.5)

    def test_seed_caller_hangs_up(self) -> None:
        """A caller who hangs up during the menu: the call ends, hung up, exit 0."""
        out = self.simulate("examples/seed.toml", "--keys", "hangup")
        assert_in_order(self, out, ["menu offered", "caller hangs up", "result: hung up"])
        self.assertNotIn("transfer to", out)

    def test_rich_french_billing_account(self) -> None:
        """rich.toml, French profile: billing, account number, transfer to billing, all in French."""
        out = self.simulate(
            "examples/rich.toml", "--profile", '{"language": "fr"}', "--keys", "2,1,12345678#"
        )
        assert_in_order(
            self,
            out,
            [
                "menu offered (2 3 * 0)",
                "play fr/bienvenue.mp3",
                "play fr/facturation.mp3",
                "play fr/operateur.mp3",
                "caller presses 2",
                "menu billing",
                "play fr/facturation_intro.mp3",
                "play fr/payer_facture.mp3",
                "caller presses 1",
                "collecting account",
                "play fr/saisir_compte.mp3",
                "caller presses 1 2 3 4 5 6 7 8 #",
                "collected account (8 digits)",
                "play fr/confirmation.mp3 (keys off)",
                "transfer to ext:transfer_billing",
                "result: transferred to ext:transfer_billing (selected)",
            ],
        )
        self.assertNotIn("play en/", out)

    def test_rich_play_and_back(self) -> None:
        """rich.toml without a profile: hear the hours and come back, billing, back to main, operator."""
        out = self.simulate("examples/rich.toml", "--keys", "3,2,9,0")
        assert_in_order(
            self,
            out,
            [
                "default menu",
                "menu offered (1 2 3 0)",
                "play en/welcome.mp3",
                "caller presses 3",
                "menu offered (1 2 3 0)",  # noted when sent, before the platform has them
                "play en/hours_message.mp3",
                "play en/welcome.mp3",
                "caller presses 2",
                "menu billing",
                "caller presses 9",
                "menu main",
                "play en/welcome.mp3",
                "caller presses 0",
                "play en/confirm.mp3 (keys off)",
                "result: transferred to ext:transfer_operator (selected)",
            ],
        )

    def test_rich_silent_caller(self) -> None:
        """rich.toml, a silent caller: the menu twice more (after the no-input prompt), then the operator."""
        out = self.simulate("examples/rich.toml", "--keys", "timeout,timeout,timeout")
        self.assertEqual(out.count("menu offered (1 2 3 0)"), 3)
        self.assertEqual(out.count("play en/no_input.mp3"), 2)
        self.assertEqual(out.count("no input\n"), 3)
        self.assertNotIn("caller presses", out)
        self.assertIn("result: transferred to ext:transfer_operator (no-input)", out)


class SimulateAudioConnectorTests(SynchronousTestCase):
    """
    ``python -m ivrproto simulate --front audio-connector``: one Genesys-side
    call on a loopback Audio Connector listener, its timeline and outputs.
    """

    def simulate(self, *argv: str, expect: int = 0) -> str:
        env = {k: v for k, v in os.environ.items() if not k.startswith("IVR_AC_")}
        env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
        done = subprocess.run(
            [sys.executable, "-m", "ivrproto", "simulate", "--front", "audio-connector", *argv],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
        )
        self.assertEqual(done.returncode, expect, done.stdout + done.stderr)
        self.assertEqual(done.stderr, "")
        self.assertIn("one call through the Audio Connector", done.stdout)
        return done.stdout

    def test_premium_barge_in(self) -> None:
        """local.toml, premium with tickets, key 1 during the menu: streamed prompts, barge-in, outputs."""
        out = self.simulate(
            "examples/local.toml", "--external-id", "CRM-PREMIUM-TICKETS", "--keys", "1"
        )
        assert_in_order(self, out, [
            "menu offered (1 2 0)",
            "play premium_priority (1.59s)",
            "play ticket_status (1.79s)",
            "play general_operator (1.53s)",
            "caller presses 1 (barge-in)",
            "selection confirmed",
            "play selection_confirmed (1.46s)",
            "disconnect (completed)",
            "result: transferred to ext:transfer_premium (selected)",
            'outputVariables: {"ivr_digits": "", "ivr_option": "transfer_premium", '
            '"ivr_outcome": "selected", "ivr_reason": "selected", '
            '"ivr_target": "ext:transfer_premium"}',
        ])

    def test_hangup_without_section(self) -> None:
        """seed.toml (no [audio_connector]: the prompts beside it), a hang-up: rc 0, no outputs."""
        out = self.simulate(
            "examples/seed.toml", "--profile", '{"membership_level": "premium"}', "--keys", "hangup"
        )
        assert_in_order(self, out, [
            "menu offered (1 0)", "play premium_priority", "caller hangs up",
            "result: hung up (end)",
        ])
        self.assertNotIn("outputVariables", out)

    def test_front_choices(self) -> None:
        """--front takes call-control or audio-connector only."""
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        done = subprocess.run(
            [sys.executable, "-m", "ivrproto", "simulate", "--front", "sip", "examples/seed.toml"],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
        )
        self.assertEqual(done.returncode, 2)
        self.assertIn("--front", done.stderr)
