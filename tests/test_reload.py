"""
Reloading the configuration (SIGHUP) without dropping calls.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
from pathlib import Path
from typing import Any

import attrs
from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from ivrproto.config import load_config
from ivrproto.service import IVRService
from ivrproto.tap import install_reload_signal

from .test_integration import SEED, ServiceTestCase


class ReloadTests(ServiceTestCase):
    @inlineCallbacks
    def setUp(self) -> Any:
        yield super().setUp()
        directory = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, directory)
        self.path = Path(directory) / "ivr.toml"
        self.path.write_text(Path(SEED).read_text())
        self.env = {
            "GENESYS_BASE_URL": self.platform.base_url,
            "CLIENT_ID": "client",
            "CLIENT_SECRET": "s3cret",
        }
        config = load_config(str(self.path), self.env)
        config = attrs.evolve(config, timing=attrs.evolve(config.timing, **self.timing))
        self.service = IVRService(reactor, config, intake="tcp:0:interface=127.0.0.1", admin="tcp:0:interface=127.0.0.1")
        yield self.service.start()
        self.addCleanup(self.service.stop)

    def edit(self, old: str, new: str) -> None:
        text = self.path.read_text()
        self.assertIn(old, text)
        self.path.write_text(text.replace(old, new))

    @inlineCallbacks
    def test_new_calls_get_the_new_menu(self) -> Any:
        """After a reload, new calls hear the new prompts; a call in progress keeps its menu."""
        before = self.platform.expect_call("call-before", "CRM-PREMIUM", ["menu", "wait:0.05", "press:1"])
        response = yield self.post({"callControlId": "call-before", "externalId": "CRM-PREMIUM"})
        yield response.content()
        self.edit('prompt = "premium_priority.mp3"', 'prompt = "premium_priority_v2.mp3"')
        self.assertTrue(self.service.reload(self.env))
        yield before.when_finished()
        self.assertEqual(before.plays[0].rsplit("/", 1)[1], "premium_priority.mp3")
        self.assertEqual(before.transfer_target, "ext:transfer_premium")
        theirs, ours = yield self.call("CRM-PREMIUM", ["menu", "press:1"], call_id="call-after")
        self.assertEqual(theirs.plays[0].rsplit("/", 1)[1], "premium_priority_v2.mp3")

    @inlineCallbacks
    def test_bad_config_is_refused(self) -> Any:
        """A config that fails validation never replaces the working one."""
        self.edit('action = "transfer_premium"', 'action = "nowhere"')
        self.assertFalse(self.service.reload(self.env))
        theirs, ours = yield self.call("CRM-PREMIUM", ["menu", "press:1"])
        self.assertEqual(theirs.transfer_target, "ext:transfer_premium")

    @inlineCallbacks
    def test_sighup(self) -> Any:
        """SIGHUP reloads the configuration."""
        previous = signal.getsignal(signal.SIGHUP)
        self.addCleanup(signal.signal, signal.SIGHUP, previous)
        reloaded: Deferred[bool] = Deferred()
        original = self.service.reload

        def reload() -> bool:
            taken = original(self.env)
            reloaded.callback(taken)
            return taken

        self.service.reload = reload  # type: ignore[method-assign]
        install_reload_signal(reactor, self.service)
        self.edit('prompt = "ticket_status.mp3"', 'prompt = "ticket_status_v2.mp3"')
        os.kill(os.getpid(), signal.SIGHUP)
        taken = yield reloaded
        self.assertTrue(taken)
        theirs, ours = yield self.call("CRM-TICKETS", ["menu", "press:2"])
        self.assertEqual(theirs.plays[0].rsplit("/", 1)[1], "ticket_status_v2.mp3")


class _Part:
    def __init__(self, broken: bool = False) -> None:
        self.broken = broken
        self.stopped = False

    def stop(self) -> None:
        self.stopped = True
        if self.broken:
            raise RuntimeError("broken part")

    closeCachedConnections = stop  # (standing in for the connection pool)


class _BrokenEnviron(dict):  # type: ignore[type-arg]
    def _broken(self, *args: Any) -> Any:
        raise RuntimeError("the environment broke")

    get = __getitem__ = __contains__ = items = keys = _broken  # type: ignore[assignment]


class IsolationTests(SynchronousTestCase):
    def make(self) -> IVRService:
        config = load_config(SEED, {"CLIENT_ID": "client", "CLIENT_SECRET": "s3cret"})
        return IVRService(MemoryReactorClock(), config, intake="tcp:0:interface=127.0.0.1")

    def test_stop_goes_past_a_part_that_breaks(self) -> None:
        """A part whose stop raises is logged; every other part still stops."""
        service = self.make()
        parts = [_Part(), _Part(broken=True), _Part(), _Part()]
        clients = service.clients
        clients.lookup, clients.source, clients.tokens, clients.pool = parts  # type: ignore[assignment]
        d = service.stop()
        self.assertEqual([p.stopped for p in parts], [True] * 4)
        self.successResultOf(d)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_reload_that_breaks_keeps_the_configuration(self) -> None:
        """An unexpected error while reloading is logged; the working configuration stays."""
        service = self.make()
        before = service.config
        self.assertFalse(service.reload(environ=_BrokenEnviron()))
        self.assertIs(service.config, before)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
