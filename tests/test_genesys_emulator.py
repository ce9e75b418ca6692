"""
The emulator's Genesys side (:mod:`ivrproto.emulator.genesys`): its caller
scripts, its checks of the server's protocol (driven by a Clock, with a
server played by hand), and every seed menu path through the real service's
Audio Connector listener on loopback.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

import attrs
import orjson
from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase

from ivrproto.config import load_config
from ivrproto.emulator import (
    GenesysCall,
    GenesysCallResult,
    GenesysCallSpec,
    GenesysSettings,
    Platform,
    genesys_headers,
    parse_caller_step,
    parse_genesys_scenario,
    place_genesys_calls,
)
from ivrproto.service import IVRService
from tests.test_ac_service import EXAMPLE, SECRET, environment
from tests.test_ac_service import PROFILES as SERVICE_PROFILES

PROFILES = {**SERVICE_PROFILES, "CRM-STANDARD": {"membership_level": "standard", "open_tickets": 0}}

SESSION = "f686b643-e229-407f-a2f0-b0d210ae02ef"
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
OFFER = {"type": "audio", "format": "PCMU", "channels": ["external"], "rate": 8000}


class StepTests(SynchronousTestCase):
    def test_steps(self) -> None:
        "The steps parse to (name, argument)."
        self.assertEqual(parse_caller_step("menu"), ("menu", None))
        self.assertEqual(parse_caller_step("prompts"), ("prompts", 0.05))
        self.assertEqual(parse_caller_step("prompts:0.3"), ("prompts", 0.3))
        self.assertEqual(parse_caller_step("press:12#"), ("press", "12#"))
        self.assertEqual(parse_caller_step("wait:1.5"), ("wait", 1.5))
        self.assertEqual(parse_caller_step("error:429"), ("error", 429))
        self.assertEqual(parse_caller_step("hangup"), ("hangup", None))

    def test_bad_steps(self) -> None:
        "A bad step says what is wrong; a spec with one is refused."
        for step, words in (("press:x", "press needs keys"), ("wait:-1", ">= 0"),
                            ("dance", "unknown step"), ("menu:1", "takes no argument"),
                            ("error:200", "from 400 to 599"), (3, "must be a string")):
            with self.assertRaises(ValueError) as caught:
                parse_caller_step(step)
            self.assertIn(words, str(caught.exception), step)
        with self.assertRaises(ValueError) as caught:
            GenesysCallSpec(script=("menu", "press:"))
        self.assertIn("step 1", str(caught.exception))

    def test_signed_headers(self) -> None:
        "With a client secret the upgrade carries a signature over host:port and the path."
        headers = genesys_headers("ws://127.0.0.1:8081/ivr", "key", SESSION, "org", "corr",
                                  SECRET, 1700000000.0, nonce="bm9uY2Utbm9uY2Utbm9uY2Ut")
        self.assertIn('"@authority"', headers["signature-input"])
        self.assertIn("created=1700000000", headers["signature-input"])
        self.assertNotIn("host", headers)
        from ivrproto.audioconnector.auth import Authenticator, AuthSettings

        auth = Authenticator(Clock(), {"key": SECRET}, AuthSettings())
        auth._clock.advance(1700000001)  # type: ignore[attr-defined]
        self.assertEqual(auth.check({**headers, "host": "127.0.0.1:8081"}, "/ivr").api_key, "key")
        unsigned = genesys_headers("ws://h/ivr", "key", SESSION, "org", "corr")
        self.assertEqual(unsigned["X-API-KEY"], "key")
        self.assertNotIn("signature", unsigned)


class ScenarioTests(SynchronousTestCase):
    def test_example(self) -> None:
        "examples/genesys-calls.toml: one call per menu path, externalId as an input."
        from pathlib import Path

        if sys.version_info >= (3, 11):
            import tomllib
        else:  # pragma: no cover
            import tomli as tomllib

        path = Path(EXAMPLE).parent / "genesys-calls.toml"
        scenario = parse_genesys_scenario(tomllib.loads(path.read_text()), str(path))
        self.assertEqual(scenario.url, "ws://127.0.0.1:8081/ivr")
        self.assertEqual(scenario.interval, 0.2)
        first = scenario.calls[0]
        self.assertEqual(first.input_variables, {"externalId": "CRM-PREMIUM-TICKETS"})
        self.assertEqual(first.script, ("menu", "press:1"))
        self.assertEqual(scenario.calls[-1].expect_end, "hangup")

    def test_settings_and_errors(self) -> None:
        "GenesysSettings by name; a bad key or step is named with its index."
        scenario = parse_genesys_scenario(
            {"genesys": {"report_playback": False, "ping_interval": 2}}, "s")
        self.assertEqual((scenario.settings.report_playback, scenario.settings.ping_interval),
                         (False, 2.0))
        from ivrproto.errors import ConfigError

        for table, key in (
            ({"genesys": {"url": "http://x/ivr"}}, "genesys.url"),
            ({"genesys": {"api_key": "k"}}, "genesys.api_key"),
            ({"genesys": {"max_call": -1}}, "genesys.max_call"),
            ({"genesys_calls": [{"script": ["menu", "dance"]}]}, "genesys_calls[0].script[1]"),
            ({"genesys_calls": [{}, {"expect_end": "maybe"}]}, "genesys_calls[1].expect_end"),
            ({"genesys_calls": [{"expect": {"a": 1}}]}, "genesys_calls[0].expect"),
        ):
            with self.assertRaises(ConfigError) as caught:
                parse_genesys_scenario(table, "s")
            self.assertEqual(caught.exception.key, key, table)


@attrs.define
class FakeWire:
    texts: List[Dict[str, Any]] = attrs.field(factory=list)
    audio: int = 0
    closed: bool = False
    dropped: bool = False

    def send_text(self, payload: bytes) -> None:
        self.texts.append(orjson.loads(payload))

    def send_audio(self, frame: bytes) -> None:
        self.audio += 1

    def close(self) -> None:
        self.closed = True

    def drop(self) -> None:
        self.dropped = True

    def types(self) -> List[str]:
        return [m["type"] for m in self.texts]


class HandServer:
    "A server played by hand: numbers its messages (or not) as a test says."

    def __init__(self, call: GenesysCall, wire: FakeWire) -> None:
        self.call, self.wire, self.seq = call, wire, 0

    def send(self, kind: str, seq: Optional[int] = None, clientseq: Optional[int] = None,
             **parameters: Any) -> None:
        self.seq = self.seq + 1 if seq is None else seq
        message = {"version": "2", "id": SESSION, "type": kind, "seq": self.seq,
                   "clientseq": self.wire.texts[-1]["seq"] if clientseq is None else clientseq,
                   "parameters": parameters}
        self.call.text_received(orjson.dumps(message))

    def opened(self) -> None:
        self.send("opened", media=[OFFER])

    def audio(self, frames: int = 1) -> None:
        for _ in range(frames):
            self.call.audio_received(b"\xff" * 1600)


class CheckTests(SynchronousTestCase):
    def make(self, script: tuple = (), **settings: Any) -> tuple:
        clock, wire = Clock(), FakeWire()
        spec = GenesysCallSpec(script=script, input_variables={"externalId": "X"})
        call = GenesysCall(clock, wire, GenesysCallResult(spec, SESSION),
                           GenesysSettings(**settings))
        call.upgraded()
        return clock, wire, call, HandServer(call, wire)

    def test_open_first(self) -> None:
        "open goes first, seq 1, serverseq 0, with the ani, offers and inputs."
        _, wire, _, _ = self.make()
        first = wire.texts[0]
        self.assertEqual((first["type"], first["seq"], first["serverseq"]), ("open", 1, 0))
        self.assertEqual(first["parameters"]["inputVariables"], {"externalId": "X"})
        self.assertEqual(first["parameters"]["media"][0], OFFER)

    def test_well_behaved_server(self) -> None:
        "A server that keeps the rules: no violation; disconnect gets close, closed ends it."
        clock, wire, call, server = self.make()
        server.opened()
        server.send("event", entities=[{"type": "bot_turn_response",
                                        "data": {"disposition": "match"}}])
        server.audio(3)
        clock.advance(1.0)
        self.assertIn("ping", wire.types())
        server.send("pong", clientseq=wire.texts[-1]["seq"])
        clock.advance(1.0)
        server.send("disconnect", reason="completed", outputVariables={"ivr_target": "t"})
        self.assertEqual(wire.texts[-1]["parameters"], {"reason": "disconnect"})
        server.send("closed")
        self.assertTrue(wire.closed)
        call.connection_lost(1000)
        r = call.result
        self.assertEqual(r.violations, [])
        self.assertEqual((r.end, r.output_variables), ("completed", {"ivr_target": "t"}))
        self.assertEqual(r.audio_bytes, 4800)
        self.assertEqual(r.first_audio, 0.0)
        self.assertEqual(wire.types().count("playback_started"), 1)
        self.assertEqual(wire.types().count("playback_completed"), 1)

    def test_skipped_seq_reported(self) -> None:
        "A server that skips a seq is reported."
        _, _, call, server = self.make()
        server.opened()
        server.send("event", seq=3, entities=[{"type": "barge_in", "data": {}}])
        self.assertEqual(call.result.violations, ["event seq 3 after 1"])

    def test_audio_before_opened_reported(self) -> None:
        "A server that sends audio before opened is reported."
        _, _, call, server = self.make()
        server.audio()
        server.opened()
        self.assertEqual(call.result.violations, ["audio before opened"])

    def test_other_breaches(self) -> None:
        "Missing parameters, wrong id, clientseq ahead, a bad pong, closed unasked."
        clock, wire, call, server = self.make()
        server.opened()
        call.text_received(orjson.dumps({"version": "2", "id": "other", "type": "event",
                                         "seq": 2, "clientseq": 1}))
        server.send("event", seq=3, clientseq=99, entities=[{"type": "barge_in", "data": {}}])
        clock.advance(1.0)
        server.send("pong", clientseq=1)
        server.send("closed")
        self.assertEqual(call.result.violations, [
            "event for another session id", "event without parameters",
            "event without entities",
            "event clientseq 99 ahead of our seq 1",
            "pong clientseq 1, not the ping's seq 2",
            "closed without close",
        ])

    def test_unanswered_ping_and_media(self) -> None:
        "A ping unanswered when the next is due, and a media that was not offered."
        clock, _, call, server = self.make()
        server.send("opened", media=[{"type": "audio", "format": "L16", "channels": ["external"],
                                      "rate": 8000}])
        clock.pump([1.0] * 6)
        self.assertEqual(call.result.violations, [
            "opened media that is not one of the offers", "no pong within 5 s for ping 2"])

    def test_barge_in_script(self) -> None:
        "prompts then press: the key goes while the audio plays, and barge_in flushes it."
        clock, wire, call, server = self.make(("prompts", "press:1"))
        server.opened()
        server.send("event", entities=[{"type": "bot_turn_response",
                                        "data": {"disposition": "match"}}])
        server.audio(3)
        clock.advance(0.05)
        self.assertEqual(wire.texts[-1]["parameters"], {"digit": "1"})
        self.assertEqual(call.result.keys, [(0.05, "1", True)])
        server.send("event", entities=[{"type": "barge_in", "data": {}}])
        clock.advance(1.0)
        # Flushed: no playback_completed for what was dropped (the default).
        self.assertNotIn("playback_completed", wire.types())
        self.assertEqual(call.result.barge_ins, [0.05])

    def test_menu_listens_to_the_end(self) -> None:
        "menu waits until the audio has played out, then the key is no barge-in."
        clock, wire, call, server = self.make(("menu", "press:2"))
        server.opened()
        server.audio(5)
        clock.advance(0.5)
        self.assertNotIn("dtmf", wire.types())
        clock.advance(0.5)
        self.assertEqual(wire.types()[-2:], ["playback_completed", "dtmf"])
        self.assertFalse(call.result.keys[0][2])

    def test_hangup_and_expectations(self) -> None:
        "hangup sends close{end}; unmet expectations are listed."
        clock, wire, call, server = self.make(("audio", "hangup"))
        call.result = attrs.evolve(call.result, spec=GenesysCallSpec(
            script=("audio", "hangup"), expect_end="completed"))
        server.opened()
        server.audio()
        self.assertEqual(wire.texts[-1]["parameters"], {"reason": "end"})
        server.send("closed")
        call.connection_lost(1000)
        self.assertEqual(call.result.end, "hangup")
        self.assertEqual(call.result.unmet, ["ended 'hangup', expected 'completed'"])

    def test_error_drop_and_pause(self) -> None:
        "error:429 carries retryAfter; pause is answered paused; drop drops the socket."
        _, wire, call, server = self.make(("error:429", "drop"))
        server.opened()
        error = [m for m in wire.texts if m["type"] == "error"][0]
        self.assertEqual(error["parameters"]["code"], 429)
        self.assertEqual(error["parameters"]["retryAfter"], "PT1S")
        self.assertTrue(wire.dropped)
        _, wire, _, server = self.make()
        server.opened()
        server.send("pause")
        self.assertEqual(wire.types()[-1], "paused")

    def test_completed_after_barge_in(self) -> None:
        "With completed_after_barge_in, a barge_in is answered playback_completed."
        _, wire, _, server = self.make(completed_after_barge_in=True)
        server.opened()
        server.audio(2)
        server.send("event", entities=[{"type": "barge_in", "data": {}}])
        self.assertEqual(wire.types()[-2:], ["playback_started", "playback_completed"])

    def test_probe_must_stay_quiet(self) -> None:
        "A probe's open is for nobody; an event or audio during it is reported."
        clock, wire = Clock(), FakeWire()
        call = GenesysCall(clock, wire, GenesysCallResult(GenesysCallSpec(probe=True), SESSION))
        call.upgraded()
        participant = wire.texts[0]["parameters"]["participant"]
        self.assertEqual((participant["id"], participant["ani"]),
                         ("00000000-0000-0000-0000-000000000000", ""))
        server = HandServer(call, wire)
        server.opened()
        self.assertEqual(wire.texts[-1]["parameters"], {"reason": "end"})
        server.send("event", entities=[{"type": "barge_in", "data": {}}])
        server.audio()
        self.assertEqual(call.result.violations, ["event during a connection probe",
                                                  "audio during a connection probe"])

    def test_no_opened_times_out(self) -> None:
        "No opened within the open timeout: a violation, and the socket is dropped."
        clock, wire, call, _ = self.make()
        clock.advance(5.0)
        self.assertTrue(wire.dropped)
        self.assertEqual((call.result.violations, call.result.end), (["no opened"], "timeout"))

    def test_caller_audio_streams(self) -> None:
        "Caller audio (silence) goes every 200 ms after opened, and position follows."
        clock, wire, call, server = self.make()
        self.assertEqual(wire.audio, 0)
        server.opened()
        clock.pump([0.2] * 5)
        self.assertEqual(wire.audio, 6)
        self.assertEqual(call.position, 1.2)


class ScenarioFileTests(SynchronousTestCase):
    "The Genesys side in scenario files and in a service configuration."

    def test_top_level(self) -> None:
        "A scenario file's [genesys] and [[genesys_calls]] are Scenario.genesys."
        from ivrproto.emulator import load_scenario

        scenario = load_scenario(EXAMPLES / "genesys-calls.toml")
        self.assertEqual(scenario.genesys.url, "ws://127.0.0.1:8081/ivr")
        self.assertEqual(scenario.genesys.calls[0].script, ("menu", "press:1"))
        self.assertEqual(scenario.calls, ())

    def test_nested_in_emulator(self) -> None:
        "In a service configuration they are [emulator.genesys] and [[emulator.genesys_calls]]."
        from ivrproto.emulator import parse_scenario
        from ivrproto.errors import ConfigError

        table = {"emulator": {"call_interval": 0.1, "genesys": {"interval": 0.5},
                              "genesys_calls": [{"name": "a", "script": ["menu"]}]}}
        scenario = parse_scenario(table, Path("."), "s")
        self.assertEqual((scenario.genesys.interval, scenario.genesys.calls[0].name),
                         (0.5, "a"))
        self.assertEqual(scenario.call_interval, 0.1)
        both = {**table, "genesys_calls": []}
        with self.assertRaises(ConfigError) as caught:
            parse_scenario(both, Path("."), "s")
        self.assertEqual(caught.exception.key, "emulator.genesys")

    def test_local_example(self) -> None:
        "examples/local.toml's embedded platform places Genesys-side calls; no key needed."
        from ivrproto.checks import check_scenario
        from ivrproto.config import check_audio_connector

        config = load_config(str(EXAMPLES / "local.toml"), {})
        scenario = check_scenario(config)
        self.assertGreaterEqual(len(scenario.genesys.calls), 3)
        self.assertTrue(config.audio_connector.enabled)
        self.assertIsNone(config.audio_connector.api_key)
        check_audio_connector(config)  # the demo makes the key in-process

    def test_documented(self) -> None:
        "docs/configuration.md's [genesys] and [[genesys_calls]] tables: every key, its default."
        from ivrproto.emulator import genesys_scenario
        from tests.test_docs import documented_settings, toml_default

        tables = documented_settings()
        self.assertEqual(set(tables["[genesys]"]), genesys_scenario._TABLE_KEYS | {"url"})
        self.assertEqual(set(tables["[[genesys_calls]]"]), genesys_scenario.CALL_KEYS)
        settings: Dict[str, Any] = {f.name: f.default for f in attrs.fields(GenesysSettings)}
        settings["interval"] = 0.0
        calls: Dict[str, Any] = {f.name: f.default for f in attrs.fields(GenesysCallSpec)}
        for table, defaults in (("[genesys]", settings), ("[[genesys_calls]]", calls)):
            for key, cell in tables[table].items():
                value = toml_default(cell)
                if value is None:
                    continue
                default = defaults[key]
                if isinstance(default, type(attrs.Factory(dict))):
                    default = default.factory()
                self.assertEqual(list(default) if key == "script" else default, value, key)


class ServiceCase(TestCase):
    "The service with the example's Audio Connector, against the emulator's platform."

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
            audio_connector=attrs.evolve(config.audio_connector,
                                         auth=(("min_failure_delay", 0.05),)),
        )
        self.service = IVRService(
            reactor, config, intake="tcp:0:interface=127.0.0.1",
            admin="tcp:0:interface=127.0.0.1", audio_connector="tcp:0:interface=127.0.0.1",
        )
        yield self.service.start()
        self.addCleanup(self.service.stop)

    def place(self, *specs: GenesysCallSpec, key: str = "ac-key",
              secret: Optional[str] = None) -> Any:
        return place_genesys_calls(reactor, self.service.audio_connector_url, key, specs,
                                   client_secret=secret)

    def assertOk(self, result: GenesysCallResult) -> None:
        self.assertEqual((result.violations, result.unmet), ([], []), result.types())


def premium(script: tuple, **expect: str) -> GenesysCallSpec:
    return GenesysCallSpec(input_variables={"externalId": "CRM-PREMIUM-TICKETS"},
                           script=script, expect=expect, expect_end="completed")


class MenuPathTests(ServiceCase):
    """
    Every seed menu path, the calls placed at once (each listens to its
    prompts at real time).  The no-input timeout runs from the end of a
    menu's audio.
    """

    timing = {**ServiceCase.timing, "no_input_timeout": 1.0}

    @inlineCallbacks
    def test_every_path(self) -> Any:
        "Premium, tickets, ani, standard, unknown, invalid key, operator, barge-in, hang-up."
        specs = {
            "premium": premium(("menu", "press:1"), ivr_target="ext:transfer_premium",
                               ivr_outcome="selected", ivr_option="transfer_premium"),
            "tickets": premium(("menu", "press:2"), ivr_target="ext:play_ticket_info"),
            "by ani": GenesysCallSpec(ani="tel:+1 415-555-0123", script=("menu", "press:1"),
                                      expect={"ivr_target": "ext:transfer_premium"}),
            # Standard, no tickets: 1 is not offered (invalid), 0 is.
            "standard": GenesysCallSpec(
                input_variables={"externalId": "CRM-STANDARD"},
                script=("menu", "press:1", "menu", "press:0"),
                expect={"ivr_target": "ext:transfer_operator", "ivr_outcome": "selected"}),
            "unknown": GenesysCallSpec(
                input_variables={"externalId": "CRM-NOBODY"}, script=("menu", "press:2"),
                expect={"ivr_target": "ext:transfer_support", "ivr_outcome": "selected"}),
            "invalid": premium(("menu", "press:7", "menu", "press:1"),
                               ivr_target="ext:transfer_premium"),
            "operator": premium(("menu", "press:0"), ivr_target="ext:transfer_operator",
                                ivr_outcome="selected"),
            "barge-in": premium(("prompts", "press:1"), ivr_target="ext:transfer_premium"),
            "hang-up": GenesysCallSpec(input_variables={"externalId": "CRM-PREMIUM-TICKETS"},
                                       script=("audio", "hangup"), expect_end="hangup"),
        }
        results = yield self.place(*specs.values())
        got = dict(zip(specs, results))
        for name, result in got.items():
            self.assertEqual((result.violations, result.unmet), ([], []), name)
            self.assertGreater(result.audio_bytes, 0, name)
            self.assertLess(result.first_audio, 1.0, name)
        for name in ("premium", "tickets", "by ani", "unknown", "operator"):
            self.assertEqual(got[name].types()[-2:], ["disconnect", "closed"], name)
            self.assertFalse(got[name].keys[0][2], name)  # pressed after the menu
        # The invalid key: the invalid prompt and the menu again.
        self.assertGreaterEqual(len(got["invalid"].turns), 5)
        # Barge-in: the key went while the audio played, and the server said so.
        self.assertTrue(got["barge-in"].keys[0][2])
        self.assertEqual(len(got["barge-in"].barge_ins), 1)
        self.assertEqual(len(got["premium"].barge_ins), 0)
        # Hang-up mid-prompt: closed, and no disconnect.
        self.assertNotIn("disconnect", got["hang-up"].types())
        self.assertEqual(got["hang-up"].types()[-1], "closed")
        outcomes = self.service.stats()["audio_connector"]["outcomes"]
        self.assertEqual(outcomes, {"selected": 8, "hangup": 1})


class QuickTests(ServiceCase):
    @inlineCallbacks
    def test_no_input_operator(self) -> Any:
        "A silent caller ends on the operator path."
        (result,) = yield self.place(premium(
            (), ivr_target="ext:transfer_operator", ivr_outcome="operator"))
        self.assertOk(result)

    @inlineCallbacks
    def test_wrong_key_refused(self) -> Any:
        "A wrong API key: refused with 401 at the upgrade."
        (result,) = yield self.place(GenesysCallSpec(expect_end="refused"), key="wrong")
        self.assertOk(result)
        self.assertIn("401", result.refusal or "")

    @inlineCallbacks
    def test_probe(self) -> Any:
        "A connection probe gets opened and closed, nothing else."
        (result,) = yield self.place(GenesysCallSpec(probe=True, expect_end="probe"))
        self.assertOk(result)
        self.assertEqual(result.types(), ["opened", "closed"])
        self.assertEqual(result.audio_bytes, 0)

    @inlineCallbacks
    def test_unreachable(self) -> Any:
        "Nothing listening: the result says unreachable, nothing is raised."
        port = self.service.audio_connector_address.port
        yield self.service.stop()
        results = yield place_genesys_calls(
            reactor, f"ws://127.0.0.1:{port}/ivr", "ac-key",
            [GenesysCallSpec(expect_end="unreachable")])
        self.assertOk(results[0])


class SignedTests(ServiceCase):
    client_secret = SECRET

    @inlineCallbacks
    def test_signed_and_unsigned(self) -> Any:
        "With a client secret: a signed call is served, an unsigned one refused."
        (signed,) = yield self.place(premium(("prompts", "press:1"),
                                             ivr_target="ext:transfer_premium"), secret=SECRET)
        self.assertOk(signed)
        (unsigned,) = yield self.place(GenesysCallSpec(expect_end="refused"))
        self.assertOk(unsigned)
        self.assertIn("401", unsigned.refusal or "")


class DrainTests(ServiceCase):
    """
    SIGTERM's drain through the real service: Audio Connector calls end as
    Call Control calls do.
    """

    timing = {**ServiceCase.timing, "no_input_timeout": 30.0}

    @inlineCallbacks
    def test_drain(self) -> Any:
        "A call that can finish does; a silent one goes to the operator at the deadline; new ones get 503."
        ac = self.service.audio_connector
        opened: List[Any] = []
        both: Any = Deferred()

        def on_call(bridge: Any, core: Any) -> None:
            opened.append(bridge)
            if len(opened) == 2:
                both.callback(None)

        ac.on_call = on_call
        chooser = premium(("prompts", "press:1"), ivr_target="ext:transfer_premium",
                          ivr_outcome="selected")
        silent = GenesysCallSpec(input_variables={"externalId": "CRM-PREMIUM-TICKETS"},
                                 expect_end="completed",
                                 expect={"ivr_target": "ext:transfer_operator",
                                         "ivr_outcome": "operator", "ivr_reason": "draining"})
        placed = self.place(chooser, silent)
        yield both
        drained = self.service.drain(deadline=3.0)
        late = yield self.place(GenesysCallSpec(name="late"))
        self.assertEqual((late[0].end, late[0].refusal is not None), ("refused", True))
        results = yield placed
        yield drained
        for result in results:
            self.assertOk(result)
        self.assertEqual(ac.outcomes, {"selected": 1, "operator": 1})
        self.assertEqual(ac.active, {})
        self.assertEqual(ac.factory.sessions, set())


class MetricsTests(ServiceCase):
    "The Audio Connector's Prometheus families, through the real service."

    def test_label_sets(self) -> None:
        "The metrics' label sets are the Audio Connector's own."
        from ivrproto import metrics
        from ivrproto.audioconnector import server, session

        self.assertEqual(metrics.AC_REFUSALS, server.REFUSALS)
        self.assertEqual(metrics.AC_PROTOCOL_ERRORS, session.PROTOCOL_ERRORS)

    @inlineCallbacks
    def test_counted(self) -> Any:
        "A call, a refused upgrade and a 429: each family counts it."
        from prometheus_client.parser import text_string_to_metric_families

        yield self.place(premium(("prompts", "error:429", "press:1")))
        yield self.place(GenesysCallSpec(expect_end="refused"), key="wrong")
        text = self.service.metrics.render().decode()
        samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
                   for family in text_string_to_metric_families(text) for s in family.samples}
        self.assertEqual(samples[("ivr_audio_connector_calls_total", (("outcome", "selected"),))], 1)
        self.assertEqual(samples[("ivr_audio_connector_calls_total", (("outcome", "failed"),))], 0)
        self.assertEqual(
            samples[("ivr_audio_connector_refused_total", (("reason", "unauthorized"),))], 1)
        self.assertGreater(samples[("ivr_audio_connector_frames_sent_total", ())], 3)
        self.assertEqual(samples[("ivr_audio_connector_rate_limit_pauses_total", ())], 1)
        self.assertEqual(
            samples[("ivr_audio_connector_protocol_errors_total", (("kind", "sequence"),))], 0)
        self.assertEqual(samples[("ivr_audio_connector_sessions_open", ())], 0)
        self.assertEqual(samples[("ivr_audio_connector_calls_active", ())], 0)
