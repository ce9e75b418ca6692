"""
The Audio Connector as ``twistd ivr`` serves it: the ``[audio_connector]``
section and its environment keys, ``ivr check``, ``--audio-connector``, and
the seed's menus end to end (a real IVRService against the embedded
emulator, driven by the scripted Genesys client over loopback).
"""

from __future__ import annotations

import io
import os
import shutil
import socket
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional

import attrs
from autobahn.twisted.websocket import connectWS
from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.protocol import ProcessProtocol
from twisted.trial.unittest import SynchronousTestCase, TestCase

from ivrproto.audioconnector.adapter import ani_to_e164
from ivrproto.audioconnector.auth import sign_headers
from ivrproto.audioconnector.testing import (
    ORGANIZATION_ID,
    SESSION_ID,
    GenesysClientFactory,
    GenesysClientProtocol,
    upgrade_headers,
)
from ivrproto.cli.codes import EXIT_CONFIG
from ivrproto.cli.main import main
from ivrproto.config import load_config
from ivrproto.emulator import Platform
from ivrproto.errors import ConfigError
from ivrproto.service import IVRService
from ivrproto.tap import Options

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = str(ROOT / "examples" / "audio-connector.toml")
SEED = str(ROOT / "examples" / "seed.toml")
SECRET = "c2VjcmV0LWJ5dGVzLWZvci10aGUtdGVzdHM="
PROFILES = {
    "CRM-PREMIUM-TICKETS": {"membership_level": "premium", "open_tickets": 2},
    "+14155550123": {"membership_level": "premium", "open_tickets": 0},
}
SEED_PROMPTS = (
    "general_operator", "general_support", "general_welcome", "invalid_selection",
    "premium_priority", "selection_confirmed", "ticket_status",
)


def environment(**extra: str) -> Dict[str, str]:
    env = {"CLIENT_ID": "client", "CLIENT_SECRET": "s3cret", "IVR_AC_API_KEY": "ac-key"}
    env.update(extra)
    return env


def write_config(test: Any, body: str) -> str:
    "A config file: the seed's, plus ``body``, in a temporary directory."
    directory = tempfile.mkdtemp()
    test.addCleanup(shutil.rmtree, directory)
    path = os.path.join(directory, "ivr.toml")
    with open(path, "w") as f:
        f.write(Path(SEED).read_text() + "\n" + body)
    return path


def copy_prompts(test: Any, path: str) -> None:
    "The example prompts, next to the config file ``path``."
    shutil.copytree(ROOT / "examples" / "prompts", Path(path).parent / "prompts")


class AniTests(SynchronousTestCase):
    def test_lenient_forms(self) -> None:
        "tel: prefixes, spaces, dashes, brackets and 00 are read as E.164."
        for ani in ("tel:+14155550123", "+1 415-555-0123", "TEL:+1 (415) 555.0123;ext=9",
                    "0014155550123"):
            self.assertEqual(ani_to_e164(ani), "+14155550123", ani)

    def test_not_e164(self) -> None:
        "A national number, a name, a short or long number is no key."
        for ani in ("", "4155550123", "tel:anonymous", "+123", "+1234567890123456", "+0123456789"):
            self.assertIsNone(ani_to_e164(ani), ani)


class ConfigTests(SynchronousTestCase):
    def test_example(self) -> None:
        "The example's section: on, /ivr, its prompts, externalId, the output names."
        ac = load_config(EXAMPLE, environment()).audio_connector
        self.assertTrue(ac.enabled)
        self.assertEqual(ac.path, "/ivr")
        self.assertEqual(ac.prompts, ROOT / "examples" / "prompts")
        self.assertEqual(ac.profile_key, "externalId")
        self.assertEqual(dict(ac.outputs)["target"], "ivr_target")
        self.assertEqual(dict(ac.outputs)["outcome"], "ivr_outcome")
        self.assertEqual(ac.api_key, "ac-key")

    def test_off_without_section(self) -> None:
        "Without the section the Audio Connector is off, and needs no key."
        config = load_config(SEED, {"CLIENT_ID": "c", "CLIENT_SECRET": "s"})
        self.assertFalse(config.audio_connector.enabled)

    def test_unconfirmed_settings(self) -> None:
        "The protocol's settings reach AuthSettings and SessionSettings by name."
        path = write_config(self, '[audio_connector]\naudio_lead = 0.6\nclock_skew = 5\n'
                                  'digits = "0123456789*#ABCD"\norganizations = ["org-1"]\n')
        ac = load_config(path, environment()).audio_connector
        self.assertEqual(dict(ac.auth), {"clock_skew": 5.0})
        session = dict(ac.session)
        self.assertEqual(session["audio_lead"], 0.6)
        self.assertEqual(session["digits"], frozenset("0123456789*#ABCD"))
        self.assertEqual(session["organizations"], frozenset({"org-1"}))

    def test_bad_settings(self) -> None:
        "An unknown key, a bad path, a bad digit or a negative lead names its key."
        for body, key in (
            ("audio_lead = -1", "audio_connector.audio_lead"),
            ('path = "ivr"', "audio_connector.path"),
            ('digits = "1x"', "audio_connector.digits"),
            ("api_key = 'k'", "audio_connector.api_key"),
            ("[audio_connector.outputs]\ntarget = 'x'\noutcome = 'x'", "audio_connector.outputs"),
        ):
            path = write_config(self, "[audio_connector]\n" + body + "\n")
            with self.assertRaises(ConfigError) as caught:
                load_config(path, environment())
            self.assertEqual(caught.exception.key, key, body)


class CheckTests(SynchronousTestCase):
    """
    ``ivr check`` on the section: one clear line for each problem.
    """

    def check(self, path: str, env: Mapping[str, str]) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        code = main(["check", path], out, err, env)
        return code, out.getvalue(), err.getvalue()

    def test_example_passes(self) -> None:
        "The example checks, and says what the Audio Connector serves."
        code, out, err = self.check(EXAMPLE, environment())
        self.assertEqual((code, err), (0, ""))
        self.assertIn("audio connector: /ivr on tcp:8081:interface=127.0.0.1", out)
        self.assertIn(f"{len(SEED_PROMPTS)} prompts", out)

    def test_missing_key(self) -> None:
        "The section on without IVR_AC_API_KEY: one line naming the variable."
        env = environment()
        del env["IVR_AC_API_KEY"]
        code, out, err = self.check(EXAMPLE, env)
        self.assertEqual(code, EXIT_CONFIG)
        self.assertEqual(err.count("\n"), 1)
        self.assertIn("audio_connector: needs the API key in the environment variable "
                      "IVR_AC_API_KEY", err)

    def test_secret_not_base64(self) -> None:
        "A client secret that is not base64: one line, without the secret."
        code, _, err = self.check(EXAMPLE, environment(IVR_AC_CLIENT_SECRET="not base64!*"))
        self.assertEqual(code, EXIT_CONFIG)
        self.assertEqual(err.count("\n"), 1)
        self.assertIn("not valid base64 (set by the environment variable IVR_AC_CLIENT_SECRET)",
                      err)
        self.assertNotIn("not base64!*", err)

    def test_bad_prompts_named(self) -> None:
        "A prompt that is not 8 kHz mono WAV is named by ivr check."
        path = write_config(self, '[audio_connector]\nprompts = "prompts"\n')
        copy_prompts(self, path)
        bad = Path(path).parent / "prompts" / "en-US" / "loud.wav"
        bad.write_bytes(b"RIFF not really a wav file")
        code, _, err = self.check(path, environment())
        self.assertEqual(code, EXIT_CONFIG)
        self.assertEqual(err.count("\n"), 1)
        self.assertIn("audio_connector.prompts: prompt ", err)
        self.assertIn("loud.wav: is not a WAV file", err)

    def test_no_prompts_directory(self) -> None:
        "A prompts directory that does not exist is one line."
        path = write_config(self, '[audio_connector]\nprompts = "nowhere"\n')
        code, _, err = self.check(path, environment())
        self.assertEqual(code, EXIT_CONFIG)
        self.assertIn("nowhere: is not a directory", err)


class OptionTests(SynchronousTestCase):
    def test_option_overrides_listen(self) -> None:
        "--audio-connector overrides [audio_connector] listen."
        options = Options()
        old = dict(os.environ)
        self.addCleanup(lambda: (os.environ.clear(), os.environ.update(old)))
        os.environ.update(environment())
        options.parseOptions(["--config", EXAMPLE, "--audio-connector", "tcp:0:interface=127.0.0.1"])
        assert options.config is not None
        self.assertEqual(options.config.audio_connector.listen, "tcp:0:interface=127.0.0.1")
        self.assertTrue(options.config.audio_connector.enabled)

    def test_option_turns_it_on(self) -> None:
        "--audio-connector serves it without the section, and then needs the key."
        old = dict(os.environ)
        self.addCleanup(lambda: (os.environ.clear(), os.environ.update(old)))
        os.environ.update(environment())
        del os.environ["IVR_AC_API_KEY"]
        with self.assertRaises(SystemExit) as caught:
            Options().parseOptions(["--config", SEED, "--audio-connector", "tcp:0"])
        self.assertIn("IVR_AC_API_KEY", str(caught.exception.code))

    def test_bad_endpoint(self) -> None:
        "A malformed --audio-connector endpoint is one line naming the option."
        old = dict(os.environ)
        self.addCleanup(lambda: (os.environ.clear(), os.environ.update(old)))
        os.environ.update(environment())
        with self.assertRaises(SystemExit) as caught:
            Options().parseOptions(["--config", EXAMPLE, "--audio-connector", "nonsense:1"])
        self.assertIn("bad --audio-connector", str(caught.exception.code))


class Caller(GenesysClientProtocol):
    "Sends ``open`` with the factory's parameters once upgraded."

    factory: "CallerFactory"

    def onOpen(self) -> None:
        self.upgraded = True
        self.send_open(**self.factory.open_kwargs)


class CallerFactory(GenesysClientFactory):
    protocol = Caller  # type: ignore[assignment]
    open_kwargs: Dict[str, Any] = {}


class ServiceCase(TestCase):
    """
    The emulator, and the service with the example's Audio Connector on an
    ephemeral loopback port.
    """

    timing = {"profile_budget": 0.5, "no_input_timeout": 0.2, "confirm_delay": 0.05,
              "menu_repeats": 0}
    client_secret: Optional[str] = None

    @inlineCallbacks
    def setUp(self) -> Any:
        self.platform = Platform(reactor, clients={"client": "s3cret"}, profiles=PROFILES)
        yield self.platform.listen("tcp:0:interface=127.0.0.1")
        self.addCleanup(self.platform.stop)
        env = environment(GENESYS_BASE_URL=self.platform.base_url)
        if self.client_secret:
            env["IVR_AC_CLIENT_SECRET"] = self.client_secret
        config = load_config(EXAMPLE, env)
        config = attrs.evolve(
            config,
            timing=attrs.evolve(config.timing, **self.timing),
            intake=attrs.evolve(config.intake, max_loop_lag=30.0),
            audio_connector=attrs.evolve(
                config.audio_connector, auth=(("min_failure_delay", 0.05),)
            ),
        )
        self.service = IVRService(
            reactor, config, intake="tcp:0:interface=127.0.0.1",
            admin="tcp:0:interface=127.0.0.1", audio_connector="tcp:0:interface=127.0.0.1",
        )
        yield self.service.start()
        self.addCleanup(self.service.stop)

    def call(
        self,
        script: List[Any],
        headers: Optional[Mapping[str, str]] = None,
        **open_kwargs: Any,
    ) -> "Deferred[GenesysClientProtocol]":
        """
        One call; ``script`` is what the caller does as the first prompt's
        audio arrives: a key (``"1"``), ``"hangup"``, or nothing.
        """
        factory = CallerFactory(
            reactor, self.service.audio_connector_url,
            headers if headers is not None else upgrade_headers("ac-key"),
        )
        factory.open_kwargs = open_kwargs

        def on_message(client: GenesysClientProtocol, kind: str, message: Any) -> None:
            if kind == "audio" and len(client.audio) == 1:
                for step in script:
                    if step == "hangup":
                        client.send("close", reason="end")
                    else:
                        client.send("dtmf", digit=step)

        factory.on_message = on_message
        connectWS(factory)
        return factory.done

    def outputs(self, client: GenesysClientProtocol) -> Dict[str, str]:
        self.assertEqual(client.violations, [])
        found = [m for m in client.received if m["type"] == "disconnect"]
        self.assertEqual(len(found), 1, client.types())
        self.assertEqual(client.types()[-1], "closed")
        self.assertGreater(len(client.audio), 0)
        self.assertTrue(all(len(frame) == 1600 for _, frame in client.audio))
        variables: Dict[str, str] = found[0]["parameters"]["outputVariables"]
        return variables


class EndToEndTests(ServiceCase):
    @inlineCallbacks
    def test_premium_presses_1(self) -> Any:
        "A premium caller (externalId) pressing 1 goes to transfer_premium."
        client = yield self.call(["1"], input_variables={"externalId": "CRM-PREMIUM-TICKETS"})
        out = self.outputs(client)
        self.assertEqual((out["ivr_target"], out["ivr_outcome"], out["ivr_option"]),
                         ("ext:transfer_premium", "selected", "transfer_premium"))
        self.assertEqual(self.service.stats()["audio_connector"]["outcomes"], {"selected": 1})

    @inlineCallbacks
    def test_log_line_without_caller_id(self) -> Any:
        "Each call logs one end line with its outcome; no log line holds the ani or the key."
        from twisted.logger import formatEvent, globalLogPublisher

        events: List[Dict[str, Any]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        client = yield self.call(["1"], ani="tel:+1 415-555-0123")
        self.outputs(client)
        yield self._settle()
        lines = [formatEvent(e) for e in events]
        ended = [line for line in lines if "Audio Connector call ended" in line]
        self.assertEqual(len(ended), 1, lines)
        self.assertIn("selected (selected); target ext:transfer_premium", ended[0])
        for line in lines:
            for secret in ("555-0123", "5550123", "ac-key"):
                self.assertNotIn(secret, line)

    @inlineCallbacks
    def test_reload_keeps_override(self) -> Any:
        "A reload under --audio-connector takes the menus and asks for no restart."
        from twisted.logger import formatEvent, globalLogPublisher

        events: List[Dict[str, Any]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        env = environment(GENESYS_BASE_URL=self.platform.base_url)
        self.service.config = attrs.evolve(
            self.service.config, audio_connector=attrs.evolve(
                self.service.config.audio_connector, auth=()))
        self.assertTrue(self.service.reload(env))
        self.assertEqual([formatEvent(e) for e in events if "restart" in formatEvent(e)
                          and "audio_connector" in formatEvent(e)], [])
        yield None

    @inlineCallbacks
    def test_tickets_press_2(self) -> Any:
        "A caller with tickets pressing 2 goes to play_ticket_info."
        client = yield self.call(["2"], input_variables={"externalId": "CRM-PREMIUM-TICKETS"})
        out = self.outputs(client)
        self.assertEqual((out["ivr_target"], out["ivr_outcome"]),
                         ("ext:play_ticket_info", "selected"))

    @inlineCallbacks
    def test_ani_is_the_key(self) -> Any:
        "Without externalId, the ani (as E.164) finds the premium profile."
        client = yield self.call(["1"], ani="tel:+1 415-555-0123")
        out = self.outputs(client)
        self.assertEqual(out["ivr_target"], "ext:transfer_premium")

    @inlineCallbacks
    def test_no_profile_default_menu_operator(self) -> Any:
        "No profile: the default menu, where 0 is the operator."
        client = yield self.call(["0"], input_variables={"externalId": "CRM-NOBODY"})
        out = self.outputs(client)
        self.assertEqual((out["ivr_target"], out["ivr_outcome"]),
                         ("ext:transfer_operator", "selected"))
        # 1 on the default menu is sales, not premium: the default menu played.
        client = yield self.call(["1"], input_variables={"externalId": "CRM-NOBODY"})
        self.assertEqual(self.outputs(client)["ivr_target"], "ext:transfer_sales")

    @inlineCallbacks
    def test_silent_caller_operator(self) -> Any:
        "A caller who presses nothing ends on the operator path."
        client = yield self.call([], input_variables={"externalId": "CRM-PREMIUM-TICKETS"})
        out = self.outputs(client)
        self.assertEqual((out["ivr_target"], out["ivr_outcome"]),
                         ("ext:transfer_operator", "operator"))

    @inlineCallbacks
    def test_hangup_mid_prompt(self) -> Any:
        "close{end} mid-prompt is a hang-up: closed, no disconnect, counted."
        client = yield self.call(["hangup"], input_variables={"externalId": "CRM-PREMIUM-TICKETS"})
        types = client.types()
        self.assertEqual((types[0], types[-1]), ("opened", "closed"))
        self.assertNotIn("disconnect", types)
        self.assertEqual(client.violations, [])
        self.assertGreater(len(client.audio), 0)
        yield self._settle()
        self.assertEqual(self.service.stats()["audio_connector"]["outcomes"], {"hangup": 1})

    def _settle(self) -> "Deferred[None]":
        # One reactor turn: the server's side of the close.
        d: Deferred[None] = Deferred()
        reactor.callLater(0.05, d.callback, None)
        return d

    @inlineCallbacks
    def test_wrong_key_refused(self) -> Any:
        "A wrong API key gets 401 at the upgrade, counted in the stats."
        client = yield self.call([], headers=upgrade_headers("wrong-key"))
        self.assertFalse(client.upgraded)
        self.assertIn("401", client.upgrade_failure or "")
        self.assertEqual(self.service.stats()["audio_connector"]["refused"], 1)


class SignedTests(ServiceCase):
    client_secret = SECRET

    @inlineCallbacks
    def test_signed_call(self) -> Any:
        "With IVR_AC_CLIENT_SECRET set, a signed upgrade is served and an unsigned one refused."
        port = self.service.audio_connector_address.port
        headers = sign_headers(
            "ac-key", SECRET, "/ivr", f"127.0.0.1:{port}", ORGANIZATION_ID, SESSION_ID,
            "corr", "c2VydmljZS10ZXN0LW5vbmNlLTAx", int(reactor.seconds()),
        )
        del headers["host"]
        client = yield self.call(["1"], headers=headers,
                                 input_variables={"externalId": "CRM-PREMIUM-TICKETS"})
        self.assertEqual(self.outputs(client)["ivr_target"], "ext:transfer_premium")
        client = yield self.call([], headers=upgrade_headers("ac-key"))
        self.assertIn("401", client.upgrade_failure or "")


class BindTests(TestCase):
    @inlineCallbacks
    def test_port_in_use(self) -> Any:
        "An Audio Connector port in use stops the start with the one-line error."
        from twisted.internet.endpoints import serverFromString
        from twisted.internet.protocol import Factory

        from ivrproto.listeners import CannotListen

        taken = yield serverFromString(reactor, "tcp:0:interface=127.0.0.1").listen(Factory())
        self.addCleanup(taken.stopListening)
        listen = f"tcp:{taken.getHost().port}:interface=127.0.0.1"
        config = load_config(EXAMPLE, environment(GENESYS_BASE_URL="http://127.0.0.1:9"))
        service = IVRService(reactor, config, audio_connector=listen)
        failure = yield self.assertFailure(service.start(), CannotListen)
        self.assertEqual(
            str(failure).split(": ")[:2],
            ["ivrproto", f"cannot listen for the Audio Connector on {listen}"],
        )


class _Twistd(ProcessProtocol):
    "Collects a twistd's output; ``listening`` fires with the Audio Connector's line."

    def __init__(self) -> None:
        self.output = b""
        self.listening: Deferred[None] = Deferred()
        self.ended: Deferred[None] = Deferred()

    def outReceived(self, data: bytes) -> None:
        self.output += data
        if b"Audio Connector listening on" in self.output and not self.listening.called:
            self.listening.callback(None)

    errReceived = outReceived

    def processEnded(self, reason: Any) -> None:
        if not self.listening.called:
            self.listening.errback(AssertionError(self.output.decode(errors="replace")))
        self.ended.callback(None)


class TwistdTests(TestCase):
    timeout = 60

    @inlineCallbacks
    def test_the_documented_command(self) -> Any:
        "twistd -n ivr --config examples/audio-connector.toml --audio-connector tcp:PORT serves a call."
        platform = Platform(reactor, clients={"client": "s3cret"}, profiles=PROFILES)
        yield platform.listen("tcp:0:interface=127.0.0.1")
        self.addCleanup(platform.stop)
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
        probe.close()
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("IVR_", "GENESYS_", "CLIENT_"))}
        env.update(environment(GENESYS_BASE_URL=platform.base_url))
        env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
        twistd = _Twistd()
        process = reactor.spawnProcess(  # type: ignore[attr-defined]
            twistd, sys.executable,
            [sys.executable, "-c", "from twisted.scripts.twistd import run; run()",
             "-n", "--pidfile=", "ivr", "--config", "examples/audio-connector.toml",
             "--audio-connector", f"tcp:{port}:interface=127.0.0.1"],
            env=env, path=str(ROOT),
        )

        def stop() -> Deferred[None]:
            if twistd.ended.called:
                return twistd.ended
            process.signalProcess("TERM")
            return twistd.ended

        self.addCleanup(stop)
        yield twistd.listening
        factory = CallerFactory(reactor, f"ws://127.0.0.1:{port}/ivr", upgrade_headers("ac-key"))
        factory.open_kwargs = {"input_variables": {"externalId": "CRM-PREMIUM-TICKETS"}}

        def press(client: GenesysClientProtocol, kind: str, message: Any) -> None:
            if kind == "audio" and len(client.audio) == 1:
                client.send("dtmf", digit="1")

        factory.on_message = press
        connectWS(factory)
        client = yield factory.done
        self.assertEqual(client.violations, [])
        disconnect = [m for m in client.received if m["type"] == "disconnect"]
        self.assertEqual(disconnect[0]["parameters"]["outputVariables"]["ivr_target"],
                         "ext:transfer_premium")
        self.assertEqual(disconnect[0]["parameters"]["outputVariables"]["ivr_outcome"], "selected")
        self.assertGreater(len(client.audio), 0)
        yield stop()
        # Nothing secret reaches the log.
        for secret in (b"ac-key", b"s3cret"):
            self.assertNotIn(secret, twistd.output)
