"""
Draining on SIGTERM: the intake stops taking calls, calls in progress finish,
and at the deadline callers still in a menu go to the operator: none is lost.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path
from typing import Any

import attrs
import treq
from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.protocol import ProcessProtocol
from twisted.trial.unittest import SynchronousTestCase, TestCase

from ivrproto.tap import StopOnce, install_stop_signals

from .test_integration import ROOT, ServiceTestCase


class DrainTests(ServiceTestCase):
    timing = {**ServiceTestCase.timing, "no_input_timeout": 30.0}

    @inlineCallbacks
    def test_drain_loses_no_call(self) -> Any:
        """Calls in progress finish or go to the operator at the deadline; new ones get 503."""
        config = self.service.config
        self.service.config = attrs.evolve(
            config, intake=attrs.evolve(config.intake, drain_deadline=0.3)
        )
        silent = self.platform.expect_call("call-silent", "CRM-PREMIUM", [])
        chooser = self.platform.expect_call("call-chooser", "CRM-TICKETS", ["menu", "wait:0.05", "press:2"])
        collecting = self.platform.expect_call("call-late", "CRM-PLAIN", ["menu"])
        for call_id, external_id in (
            ("call-silent", "CRM-PREMIUM"),
            ("call-chooser", "CRM-TICKETS"),
            ("call-late", "CRM-PLAIN"),
        ):
            response = yield self.post({"callControlId": call_id, "externalId": external_id})
            self.assertEqual(response.code, 202)
            yield response.content()
        drained = self.service.drain()
        response = yield self.post({"callControlId": "call-new", "externalId": "CRM-PLAIN"})
        self.assertEqual(response.code, 503)
        self.assertTrue(response.headers.hasHeader(b"retry-after"))
        yield response.content()
        response = yield treq.get(self.service.intake_url + "/readyz", timeout=5, persistent=False)
        self.assertEqual(response.code, 503)
        yield response.content()
        yield drained
        for record in (silent, chooser, collecting):
            yield record.when_finished()
            self.assertEqual(record.outcome, "transferred", record.call_id)
            self.assertEqual(record.violations, [])
        self.assertEqual(chooser.transfer_target, "ext:play_ticket_info")
        self.assertEqual(silent.transfer_target, "ext:transfer_operator")
        ours = yield self.service.registry.when_ended("call-silent")
        self.assertEqual(ours.outcome.reason, "draining")
        self.assertEqual(self.service.registry.active, {})
        self.assertEqual(self.service.registry.connections, set())


class _Watch(ProcessProtocol):
    def __init__(self, needle: bytes, count: int) -> None:
        self.output = b""
        self.needle = needle
        self.count = count
        self.seen: Deferred[None] = Deferred()
        self.ended: Deferred[Any] = Deferred()

        self.waits: list[tuple[bytes, Deferred[None]]] = []

    def wait_for(self, needle: bytes) -> Deferred[None]:
        """
        Fires once ``needle`` has been printed.
        """
        d: Deferred[None] = Deferred()
        self.waits.append((needle, d))
        self._check()
        return d

    def _check(self) -> None:
        for needle, d in list(self.waits):
            if needle in self.output:
                self.waits.remove((needle, d))
                d.callback(None)

    def outReceived(self, data: bytes) -> None:
        self.output += data
        if not self.seen.called and self.output.count(self.needle) >= self.count:
            self.seen.callback(None)
        self._check()

    errReceived = outReceived

    def processEnded(self, reason: Any) -> None:
        if not self.seen.called:
            self.seen.errback(Exception("twistd ended early:\n" + self.output.decode()))
        self.ended.callback(reason.value)


class SigtermTests(TestCase):
    timeout = 60

    def spawn(self, drain_deadline: float = 0.5) -> tuple[_Watch, Any]:
        """
        ``twistd ivr`` with three silent scripted callers.
        """
        directory = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, directory)
        text = (ROOT / "examples" / "local.toml").read_text()
        text = text.replace("exit_when_done = true", "exit_when_done = false")
        text = text.replace('profiles = "profiles.json"', f'profiles = {str(ROOT / "examples" / "profiles.json")!r}')
        text = text.replace("no_input_timeout = 1.0", "no_input_timeout = 30.0")
        text = text.replace('listen = "tcp:0:interface=127.0.0.1"   # any', f'drain_deadline = {drain_deadline}\nlisten = "tcp:0:interface=127.0.0.1"   # any')
        calls = text.index("[[calls]]")
        menu = text.index("# The seed's menu")
        silent = "".join(
            f'[[calls]]\ncall_id = "call-{i}"\nexternal_id = "CRM-PLAIN"\nscript = []\n\n' for i in range(3)
        )
        path = Path(directory) / "drain.toml"
        # The per-call "call arrived" line is at debug.
        path.write_text(text[:calls] + silent + text[menu:] + '\n[logging]\nlevel = "debug"\n')
        env = {k: v for k, v in os.environ.items() if k not in ("CLIENT_ID", "CLIENT_SECRET")}
        env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
        watch = _Watch(b"call arrived", 3)
        process = reactor.spawnProcess(
            watch,
            sys.executable,
            [sys.executable, "-c", "from twisted.scripts.twistd import run; run()",
             "-n", "--pidfile=", "ivr", "--config", str(path)],
            env=env,
            path=str(ROOT),
        )
        return watch, process

    @inlineCallbacks
    def test_second_sigterm_while_draining(self) -> Any:
        """A second SIGTERM during the drain is noted, not a ReactorNotRunning traceback."""
        watch, process = self.spawn(drain_deadline=2.0)
        yield watch.seen
        process.signalProcess("TERM")
        yield watch.wait_for(b"draining:")
        process.signalProcess("TERM")
        ended = yield watch.ended
        log = watch.output.decode()
        self.assertIn("already shutting down", log)
        self.assertIn(ended.exitCode or ended.signal, (0, signal.SIGTERM), log)
        for i in range(3):
            self.assertIn(f"call-{i}: transferred to ext:transfer_operator (draining)", log)
        self.assertNotIn("ReactorNotRunning", log)
        self.assertNotIn("Traceback", log)

    @inlineCallbacks
    def test_sigterm_with_calls_in_progress(self) -> Any:
        """twistd ivr gets SIGTERM with three callers in the menu; all three are transferred."""
        watch, process = self.spawn()
        yield watch.seen
        process.signalProcess("TERM")
        ended = yield watch.ended
        log = watch.output.decode()
        # twistd shuts down cleanly, then exits by the signal it got, as
        # Unix programs do, so that a supervisor sees why it stopped.
        self.assertIn(ended.exitCode or ended.signal, (0, signal.SIGTERM), log)
        self.assertIn("Server Shut Down", log)
        for i in range(3):
            self.assertIn(f"call-{i}: transferred to ext:transfer_operator (draining)", log)
        self.assertIn("drained", log)
        self.assertNotIn("Traceback", log)


class _FakeSignals:
    SIGTERM = 15
    SIGINT = 2

    def __init__(self) -> None:
        self.calls: list[tuple[int, Any]] = []
        self.handlers: dict[int, Any] = {
            15: lambda n, f: self.calls.append((n, f)),
            2: lambda n, f: self.calls.append((n, f)),
        }

    def getsignal(self, number: int) -> Any:
        return self.handlers[number]

    def signal(self, number: int, handler: Any) -> None:
        self.handlers[number] = handler


class StopSignalTests(SynchronousTestCase):
    def test_second_signal_is_not_passed_on(self) -> None:
        """The reactor's handler runs for the first stop signal only."""
        signals = _FakeSignals()
        install_stop_signals(signals)
        self.assertIsInstance(signals.handlers[15], StopOnce)
        signals.handlers[15](15, None)
        signals.handlers[15](15, None)
        self.assertEqual(signals.calls, [(15, None)])

    def test_installed_once(self) -> None:
        """Installing twice does not wrap a wrapper."""
        signals = _FakeSignals()
        install_stop_signals(signals)
        install_stop_signals(signals)
        self.assertIsInstance(signals.handlers[2].previous, type(lambda: None))
