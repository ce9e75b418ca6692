"""
The runner and the registry around each session, on a Clock with fake
connections that can break the way Autobahn's do: a send on a connection
that is closing raises ``Disconnected``.  Every call still ends once, and a
call that breaks keeps no other call from its drain.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import attrs
from autobahn.exception import Disconnected
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from ivrproto.session.runner import CallContext, CallRunner
from ivrproto.session.registry import CallRegistry
from ivrproto.config import load_config
from ivrproto.clients.outcomes import LookupResult
from ivrproto.messages import Transfer
from tests.fakes import RecordingConnection

SEED = str(Path(__file__).resolve().parent.parent / "examples" / "seed.toml")


class _Tokens:
    def get_token(self) -> "Deferred[str]":
        return succeed("token")

    def invalidate(self, token: str) -> None:
        pass


class _Profiles:
    def lookup(self, external_id: str, budget: float) -> "Deferred[LookupResult]":
        return succeed(LookupResult(None, "not-found"))


# A connection that connects at once and records commands.
_Connection = RecordingConnection


class RunnerTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        config = load_config(SEED, {"CLIENT_ID": "a", "CLIENT_SECRET": "b"})
        self.timing = attrs.evolve(config.timing, no_input_timeout=30.0)
        self.connections: dict[str, _Connection] = {}
        self.listeners: dict[str, CallRunner] = {}

        def connect(reactor: Any, url: str, token: str, call_id: str, listener: Any, **kw: Any) -> Any:
            connection = self.connections[call_id] = _Connection()
            self.listeners[call_id] = listener
            self.clock.callLater(0.01, listener.connected, connection)
            return succeed(connection)

        self.context = CallContext(
            reactor=self.clock, tokens=_Tokens(), profiles=_Profiles(), book=config.menu,
            timing=self.timing, websocket_url="ws://127.0.0.1:1/x", log_key=b"k", connect=connect,
        )
        self.registry = CallRegistry(self.context, max_active=1000, retention=300)

    def start(self, n: int) -> list[CallRunner]:
        runners = [self.registry.start_call(f"call-{i}", f"CRM-{i}") for i in range(n)]
        self.clock.advance(0.01)
        for runner in runners:
            self.assertEqual(runner.state, "in_menu")
        return runners

    def transfers(self, call_id: str) -> list[str]:
        return [c.target for c in self.connections[call_id].sent if isinstance(c, Transfer)]


class ConfirmRaceTests(RunnerTestCase):
    def test_close_frame_before_the_confirmed_transfer(self) -> None:
        """The caller chose; the connection closes before the transfer: the call still ends, failed."""
        (runner,) = self.start(1)
        self.listeners["call-0"].digit_received("0")
        self.assertEqual(runner.state, "confirming")
        self.connections["call-0"].closing = True
        self.clock.advance(self.timing.confirm_delay)
        self.assertEqual(self.registry.active, {})
        record = self.registry.ended["call-0"]
        self.assertEqual(record.outcome.kind, "failed")
        self.assertIn("before the transfer", record.outcome.reason)
        self.assertEqual(self.registry.describe("call-0")["state"], "ended")
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_keepalive_drop_and_give_up_in_one_pass(self) -> None:
        """The connection goes as the no-input give-up fires: the call ends once, as failed."""
        (runner,) = self.start(1)
        self.connections["call-0"].closing = True
        for _ in range(self.timing.menu_repeats + 1):
            self.clock.advance(self.timing.no_input_timeout)
        self.listeners["call-0"].connection_closed(None, "connection lost")
        self.assertEqual(self.registry.active, {})
        self.assertEqual(self.registry.totals, {"failed": 1})
        self.assertEqual(self.clock.getDelayedCalls(), [])


class DrainIsolationTests(RunnerTestCase):
    def test_drain_past_a_closing_call(self) -> None:
        """A drain with one call whose connection is closing still transfers every other caller."""
        self.start(31)
        self.connections["call-0"].closing = True
        self.registry.drain()
        self.assertEqual(self.registry.active, {})
        for i in range(1, 31):
            self.assertEqual(self.transfers(f"call-{i}"), ["ext:transfer_operator"], i)
            self.assertEqual(self.registry.ended[f"call-{i}"].outcome.reason, "draining")
        self.assertEqual(self.registry.ended["call-0"].outcome.kind, "failed")

    def test_drain_past_a_call_that_breaks(self) -> None:
        """A call whose connection raises something unexpected is logged and ended; the rest drain."""
        self.start(5)
        self.connections["call-2"].explode = True
        self.registry.drain()
        self.assertEqual(self.registry.active, {})
        self.assertEqual(self.registry.ended["call-2"].outcome.kind, "failed")
        for i in (0, 1, 3, 4):
            self.assertEqual(self.transfers(f"call-{i}"), ["ext:transfer_operator"], i)

    def test_drain_past_a_session_that_breaks(self) -> None:
        """A session that raises on drain is logged and ended as failed; the others still drain."""
        runners = self.start(5)

        class _Broken:
            def drain(self) -> None:
                raise ZeroDivisionError()

        runners[2].session = _Broken()  # type: ignore[assignment]
        self.registry.drain()
        self.assertEqual(self.registry.active, {})
        self.assertEqual(self.registry.ended["call-2"].outcome.reason, "internal error")
        for i in (0, 1, 3, 4):
            self.assertEqual(self.transfers(f"call-{i}"), ["ext:transfer_operator"], i)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)


class BoundsTests(RunnerTestCase):
    def test_invalid_keys_are_bounded_in_record_and_log(self) -> None:
        """20,000 keys: the record keeps max_keys_kept, the log line says how many more."""
        self.context = attrs.evolve(
            self.context, timing=attrs.evolve(self.timing, max_invalid=0, max_keys_kept=10)
        )
        self.registry.context = self.context
        lines: list[str] = []
        from twisted.logger import formatEvent

        observer = lambda event: lines.append(formatEvent(event))
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)
        (runner,) = self.start(1)
        for _ in range(20_000):
            self.listeners["call-0"].digit_received("7")
        self.listeners["call-0"].hangup_received("x" * 100_000)
        record = self.registry.ended["call-0"]
        self.assertEqual(len(record.keys), 10)
        self.assertLess(len(record.outcome.reason), 300)
        (line,) = [l for l in lines if "hungup" in l]
        self.assertIn("(+19990 more)", line)
        self.assertIn("more notes", line)
        self.assertLess(len(line), 10_000)

    def test_platform_error_message_is_cut(self) -> None:
        """A 100 kB error message is logged cut to max_reason_length."""
        lines: list[str] = []
        from twisted.logger import formatEvent

        observer = lambda event: lines.append(formatEvent(event))
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)
        self.start(1)
        self.listeners["call-0"].platform_error("y" * 100_000, "z" * 100_000)
        self.assertTrue(lines)
        self.assertLess(max(len(l) for l in lines), 5_000)
