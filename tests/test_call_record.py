"""
The record of each call: one end-of-call line, however the call ended, that
names the menu configuration that served it (its version), the option the
caller chose, the outcome and the fallback, in its text and in one
``call_record`` field; and never the digits a ``collect`` step took.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any, Optional

import attrs
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from ivrproto.session.runner import CallContext, CallRunner
from ivrproto.session.registry import CallRegistry
from ivrproto.cli.check import describe_config
from ivrproto.config import load_config
from ivrproto.errors import IVRError
from ivrproto.logs import event_as_json
from ivrproto.clients.outcomes import LookupResult
from ivrproto.menu.book import MenuBook
from ivrproto.menu.load import parse_menu
from ivrproto.metrics import Metrics
from ivrproto.clients.profiles import Profile
from tests.fakes import RecordingConnection

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
RICH = str(EXAMPLES / "rich.toml")
SEED = str(EXAMPLES / "seed.toml")
ENV = {"CLIENT_ID": "a", "CLIENT_SECRET": "b"}
ACCOUNT = "4815162342"
AUDIT_FIELDS = {
    "call_control_id", "caller", "menu_version", "menu", "menu_name", "profile", "fallback",
    "option", "outcome", "reason", "target", "action", "duration", "keys", "keys_total",
    "hours",
}


class _Tokens:
    def get_token(self) -> "Deferred[str]":
        return succeed("token")

    def invalidate(self, token: str) -> None:
        pass


@attrs.define
class _Profiles:
    """Answers every lookup with ``result``, or never when ``None``."""

    result: Optional[LookupResult] = LookupResult(None, "not-found")

    def lookup(self, external_id: str, budget: float) -> "Deferred[LookupResult]":
        return Deferred() if self.result is None else succeed(self.result)


# A connection that connects at once and records commands.
_Connection = RecordingConnection


class RecordTestCase(SynchronousTestCase):
    """
    A registry on a Clock whose connections answer as ``self.answers``
    says for each call: ``connected`` (the default), ``refused`` (a 403 on
    the upgrade), ``unreachable`` (the connect fails) or ``silent``.
    """

    config_path = RICH

    def setUp(self) -> None:
        self.clock = Clock()
        self.config = load_config(self.config_path, ENV)
        self.timing = attrs.evolve(self.config.timing, no_input_timeout=30.0)
        self.connections: dict[str, _Connection] = {}
        self.listeners: dict[str, CallRunner] = {}
        self.answers: dict[str, str] = {}
        self.profiles = _Profiles()
        self.events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

        def connect(reactor: Any, url: str, token: str, call_id: str, listener: Any, **kw: Any) -> Any:
            self.listeners[call_id] = listener
            answer = self.answers.get(call_id, "connected")
            if answer == "unreachable":
                return fail(IVRError("cannot reach the platform"))
            connection = self.connections[call_id] = _Connection()
            if answer == "connected":
                self.clock.callLater(0.01, listener.connected, connection)
            elif answer == "refused":
                self.clock.callLater(0.01, listener.handshake_failed, "upgrade refused: 403", 403)
            return succeed(connection)

        self.context = CallContext(
            reactor=self.clock, tokens=_Tokens(), profiles=self.profiles, book=self.config.menu,
            timing=self.timing, websocket_url="ws://127.0.0.1:1/x", log_key=b"k", connect=connect,
        )
        self.registry = CallRegistry(self.context, max_active=100, retention=300)

    def start(self, call_id: str = "call-0", external_id: str = "CRM-0") -> CallRunner:
        runner = self.registry.start_call(call_id, external_id)
        self.clock.advance(0.01)
        return runner

    def press(self, call_id: str, keys: str) -> None:
        for key in keys:
            self.listeners[call_id].digit_received(key)

    def records(self, call_id: str) -> list[dict[str, Any]]:
        return [
            e for e in self.events
            if "call_record" in e and e.get("call_control_id") == call_id
        ]

    def record_of(self, call_id: str = "call-0") -> dict[str, Any]:
        """
        The one end-of-call line of ``call_id``: checks it is the only one,
        that it has every audit field and that its text says them.
        """
        (event,) = self.records(call_id)
        fields = event["call_record"]
        self.assertEqual(set(fields), AUDIT_FIELDS)
        text = formatEvent(event)
        for name in ("call_control_id", "caller", "menu_version", "outcome", "reason", "fallback"):
            self.assertIn(str(fields[name]), text, name)
        self.assertIn(f"option {'none' if fields['option'] is None else fields['option']['key']}", text)
        self.assertTrue(fields["caller"].startswith("caller-"))
        self.assertNotIn("CRM-", text)
        self.assertNotIn("CRM-", json.dumps(fields))
        self.assertEqual(fields["menu_version"], self.config.menu.version)
        # The JSON log line keeps the text, and the record is JSON as it is.
        line = json.loads(event_as_json(event) or "")
        self.assertEqual(line["message"], text)
        self.assertEqual(line["call_record"], json.loads(json.dumps(fields)))
        self.assertEqual(json.loads(json.dumps(fields)), fields)
        self.assertEqual(self.registry.active, {})
        return fields


class EndingTests(RecordTestCase):
    def test_selected_transfer(self) -> None:
        """A caller who chooses is recorded with the option, the target and why there was no profile."""
        self.start()
        self.press("call-0", "1")
        self.clock.advance(self.timing.confirm_delay)
        record = self.record_of()
        self.assertEqual(record["outcome"], "transferred")
        self.assertEqual(record["reason"], "selected")
        self.assertEqual(record["target"], "ext:transfer_sales")
        self.assertEqual(record["option"], {
            "menu": "main", "key": "1", "action": "transfer", "name": "sales",
            "target": "ext:transfer_sales",
        })
        self.assertEqual((record["menu"], record["menu_name"]), ("default", "main"))
        self.assertEqual((record["profile"], record["fallback"]), ("not-found", "not-found"))
        self.assertEqual(record["keys"], ["1"])
        self.assertEqual(record["duration"], round(0.01 + self.timing.confirm_delay, 3))
        # The close that follows the transfer writes nothing more.
        self.listeners["call-0"].connection_closed(1000, "")
        self.record_of()

    def test_profile_menu_has_no_fallback(self) -> None:
        """A caller with a profile got their own menu: the fallback is none."""
        self.profiles.result = LookupResult(Profile("p", "CRM-0", {"tier": "gold"}), "found")
        self.start()
        self.press("call-0", "0")
        self.clock.advance(self.timing.confirm_delay)
        record = self.record_of()
        self.assertEqual((record["menu"], record["fallback"]), ("profile", "none"))
        self.assertEqual(record["option"]["name"], "operator")

    def test_profile_budget_spent(self) -> None:
        """A lookup past its budget is the fallback reason."""
        self.profiles.result = None
        self.start()
        self.clock.advance(self.timing.profile_budget)
        self.listeners["call-0"].hangup_received("caller")
        record = self.record_of()
        self.assertEqual((record["menu"], record["fallback"]), ("default", "timed-out"))
        self.assertEqual(record["option"], None)

    def test_hangup(self) -> None:
        """The caller hangs up in the menu: one line, hungup, no option."""
        self.start()
        self.listeners["call-0"].hangup_received("caller hung up")
        self.listeners["call-0"].connection_closed(1000, "")
        record = self.record_of()
        self.assertEqual((record["outcome"], record["reason"]), ("hungup", "caller hung up"))
        self.assertEqual((record["option"], record["target"]), (None, None))

    def test_close_1011(self) -> None:
        """The platform closes with 1011 mid-menu: one line, failed."""
        self.start()
        self.press("call-0", "2")
        self.listeners["call-0"].connection_closed(1011, "internal error")
        record = self.record_of()
        self.assertEqual((record["outcome"], record["reason"]), ("failed", "internal error"))
        self.assertEqual(record["option"]["name"], "billing")
        self.assertEqual(record["menu_name"], "billing")

    def test_connection_lost(self) -> None:
        """The connection goes without a close: one line, failed."""
        self.start()
        self.listeners["call-0"].connection_closed(None, "connection lost")
        self.assertEqual(self.record_of()["reason"], "connection lost")

    def test_error_event(self) -> None:
        """An error event sends the caller to the operator, recorded as such."""
        self.start()
        self.listeners["call-0"].platform_error("media failed", "500")
        self.listeners["call-0"].connection_closed(1011, "")
        record = self.record_of()
        self.assertEqual((record["outcome"], record["reason"]), ("transferred", "platform-error"))
        self.assertEqual(record["target"], "ext:transfer_operator")

    def test_handshake_refused(self) -> None:
        """The upgrade is refused: one line, failed, before any menu."""
        self.answers["call-0"] = "refused"
        self.start()
        record = self.record_of()
        self.assertEqual(record["outcome"], "failed")
        self.assertIn("403", record["reason"])

    def test_platform_unreachable(self) -> None:
        """The connection cannot be opened: one line, failed."""
        self.answers["call-0"] = "unreachable"
        self.start()
        self.assertEqual(self.record_of()["reason"], "cannot reach the platform")

    def test_handshake_timeout(self) -> None:
        """No connected in time: one line, failed."""
        self.answers["call-0"] = "silent"
        self.start()
        self.clock.advance(self.timing.handshake_timeout)
        self.assertEqual(self.record_of()["reason"], "handshake timed out")
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_internal_error(self) -> None:
        """A session that breaks is ended by the registry's guard, and recorded once."""
        runner = self.start()

        class _Broken:
            def digit_received(self, digit: str) -> None:
                raise ZeroDivisionError()

        runner.session = _Broken()  # type: ignore[assignment]
        self.press("call-0", "11")
        self.assertEqual(self.record_of()["reason"], "internal error")
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 2)

    def test_describing_the_call_breaks(self) -> None:
        """A call that cannot be described in full still has its one line, with what is certain."""
        runner = self.start()
        runner.core.selected = ("main", "1", None)  # type: ignore[assignment]
        self.listeners["call-0"].hangup_received("caller")
        (event,) = self.records("call-0")
        self.assertEqual(event["call_record"]["outcome"], "hungup")
        self.assertEqual(event["call_record"]["menu_version"], self.config.menu.version)
        self.assertIn(self.config.menu.version, formatEvent(event))
        self.assertEqual(self.registry.ended["call-0"].outcome.kind, "hungup")
        self.assertEqual(len(self.flushLoggedErrors(AttributeError)), 1)


class DrainTests(RecordTestCase):
    def test_drain_deadline(self) -> None:
        """At the drain deadline every call is recorded once: in a menu, confirming, connecting."""
        self.start("call-menu")
        self.start("call-confirming")
        self.press("call-confirming", "1")
        self.answers["call-connecting"] = "silent"
        self.start("call-connecting")
        self.registry.drain()
        menu = self.record_of("call-menu")
        self.assertEqual((menu["reason"], menu["target"]), ("draining", "ext:transfer_operator"))
        confirming = self.record_of("call-confirming")
        self.assertEqual((confirming["reason"], confirming["target"]), ("selected", "ext:transfer_sales"))
        self.assertEqual(confirming["option"]["key"], "1")
        connecting = self.record_of("call-connecting")
        self.assertEqual(connecting["outcome"], "failed")
        self.assertIn("draining", connecting["reason"])
        self.registry.abort_connections()
        for call_id in ("call-menu", "call-confirming", "call-connecting"):
            self.listeners[call_id].connection_closed(None, "connection lost")
            self.record_of(call_id)

    def test_shutdown_records_a_call_that_does_not_drain(self) -> None:
        """A call whose session ignores the drain is ended and recorded before the service stops."""
        runner = self.start()

        class _Deaf:
            def drain(self) -> None:
                pass

        runner.session = _Deaf()  # type: ignore[assignment]
        self.registry.drain()
        record = self.record_of()
        self.assertEqual(record["outcome"], "failed")
        self.assertEqual(record["reason"], "still in progress when the service stopped")
        self.assertEqual(self.clock.getDelayedCalls(), [])


class MenuVersionTests(RecordTestCase):
    def menu_data(self) -> dict[str, Any]:
        return tomllib.loads(Path(RICH).read_text())["menu"]

    def book(self, data: dict[str, Any]) -> MenuBook:
        return parse_menu(data, self.config.platform.audio_base_url)

    def test_stable(self) -> None:
        """The same configuration, loaded twice, has the same short version."""
        again = load_config(RICH, ENV)
        self.assertEqual(again.menu.version, self.config.menu.version)
        self.assertRegex(self.config.menu.version, "^[0-9a-f]{12}$")
        self.assertNotEqual(load_config(SEED, ENV).menu.version, self.config.menu.version)

    def test_order_of_a_table_does_not_count(self) -> None:
        """Targets written in another order are the same configuration."""
        data = self.menu_data()
        data["targets"] = dict(reversed(list(data["targets"].items())))
        self.assertEqual(self.book(data).version, self.config.menu.version)

    def test_each_part_counts(self) -> None:
        """A changed target, option, rule, prompt or input setting is a new version."""
        changes = []
        data = self.menu_data()
        data["targets"]["sales"] = "ext:elsewhere"
        changes.append(data)
        data = self.menu_data()
        data["options"][0]["prompt"] = "sales"
        changes.append(data)
        data = self.menu_data()
        data["options"].reverse()
        changes.append(data)
        data = self.menu_data()
        data["prompts"]["en"]["repeat"] = "en/other.mp3"
        changes.append(data)
        data = self.menu_data()
        data["menus"]["billing"]["max_invalid"] = 5
        changes.append(data)
        rules = [o for o in self.menu_data()["options"] if "when" in o]
        self.assertTrue(rules)
        versions = {self.book(d).version for d in changes}
        self.assertEqual(len(versions), len(changes))
        self.assertNotIn(self.config.menu.version, versions)
        other = parse_menu(self.menu_data(), "http://elsewhere.example/audio/")
        self.assertNotEqual(other.version, self.config.menu.version)

    def test_rule_counts(self) -> None:
        """A changed rule value is a new version."""
        data = self.menu_data()
        (option,) = [o for o in data["options"] if "when" in o][:1]
        option["when"] = {"attribute": "nobody", "equals": "x"}
        self.assertNotEqual(self.book(data).version, self.config.menu.version)

    def test_ivr_check_shows_it(self) -> None:
        """ivr check prints the version that the calls' records will name."""
        lines = list(describe_config(self.config))
        self.assertIn(f"menu version: {self.config.menu.version}", "\n".join(lines))

    def test_a_reload_gives_new_calls_the_new_version(self) -> None:
        """After a reload with another menu, a call in progress keeps its version; a new one has the new."""
        self.start("call-old")
        data = self.menu_data()
        data["targets"]["sales"] = "ext:elsewhere"
        new = self.book(data)
        self.registry.context = attrs.evolve(self.registry.context, book=new)
        self.start("call-new")
        for call_id in ("call-old", "call-new"):
            self.press(call_id, "1")
        self.clock.advance(self.timing.confirm_delay)
        (old,) = self.records("call-old")
        (fresh,) = self.records("call-new")
        self.assertEqual(old["call_record"]["menu_version"], self.config.menu.version)
        self.assertEqual(old["call_record"]["target"], "ext:transfer_sales")
        self.assertEqual(fresh["call_record"]["menu_version"], new.version)
        self.assertEqual(fresh["call_record"]["target"], "ext:elsewhere")


class CollectedDigitsTests(RecordTestCase):
    def test_digits_are_in_no_log_record_or_metric(self) -> None:
        """An account number entered in a collect step is nowhere: log lines, JSON, call record, metrics."""
        metrics = Metrics(self.stats)
        self.context = attrs.evolve(self.context, metrics=metrics)
        self.registry.context = self.context
        self.start()
        self.press("call-0", "21")
        self.press("call-0", ACCOUNT[:4])
        during = json.dumps(self.registry.describe("call-0"))
        self.press("call-0", ACCOUNT[4:])
        self.clock.advance(self.timing.confirm_delay)
        record = self.record_of()
        self.assertEqual(record["target"], "ext:transfer_billing")
        self.assertEqual((record["option"]["action"], record["option"]["name"]), ("collect", "account"))
        self.assertEqual(record["action"], "billing_agent")
        self.assertEqual(record["keys"], ["2", "1"])
        self.assertEqual(self.registry.ended["call-0"].option["menu"], "billing")
        seen = [during, json.dumps(self.registry.describe("call-0"))]
        seen += [formatEvent(e) for e in self.events]
        seen += [event_as_json(e) or "" for e in self.events]
        seen += [json.dumps(e.get("call_record")) for e in self.events]
        seen.append(metrics.render().decode())
        self.assertTrue(any("collected account (10 digits)" in s for s in seen))
        for text in seen:
            self.assertNotIn(ACCOUNT, text)
            self.assertNotIn(ACCOUNT[:6], text)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_collect_option_names_the_digits_not_their_value(self) -> None:
        """A call that ends while collecting records the collect option by the digits' name."""
        self.start()
        self.press("call-0", "21" + ACCOUNT[:7])
        self.listeners["call-0"].hangup_received("caller")
        record = self.record_of()
        self.assertEqual(record["option"], {
            "menu": "billing", "key": "1", "action": "collect", "name": "account", "target": None,
        })
        self.assertNotIn(ACCOUNT[:6], json.dumps(record))
        self.assertNotIn(ACCOUNT[:6], json.dumps(self.registry.describe("call-0")))

    def stats(self) -> dict[str, Any]:
        return {
            "calls": {"active": len(self.registry.active), **self.registry.totals},
            "fallbacks": dict(self.registry.fallbacks),
            "closes": dict(self.registry.closes),
            "tokens": {},
            "profiles": {"requests": {}, "lookups": {}},
        }
