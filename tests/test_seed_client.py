"""
The seed document's own Node.js client (its "Complete Working Example",
``tests/node/seed_client.js``) against the project's platform emulator.

The emulator implements the server side of the contract and must work with
any client of it, the seed's own included.  These tests need ``node`` (18 or
later, for the native ``fetch`` the seed uses) and the ``ws`` package::

    cd tests/node && npm install --no-audit --no-fund

and are skipped, saying why, when either is missing.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from functools import lru_cache
from pathlib import Path
from typing import Any, Optional

from twisted.internet import reactor
from twisted.internet.defer import Deferred, DeferredList, inlineCallbacks
from twisted.internet.error import ProcessDone, ProcessExitedAlready
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure
from twisted.trial.unittest import SkipTest, TestCase

from ivrproto.emulator import Platform

ROOT = Path(__file__).resolve().parent.parent
NODE_DIR = ROOT / "tests" / "node"
SEED_CLIENT = NODE_DIR / "seed_client.js"
AUDIO = "https://example.com/ivr/audio/"
CLIENT_ID = "seed-client"
CLIENT_SECRET = "seed-s3cret"

PROFILES = {
    "CRM-SEED-PREMIUM": {"membership_level": "premium", "open_tickets": 2},
    "CRM/EU 42?#%\u00e9": {"membership_level": "premium", "open_tickets": 0},
}


@lru_cache(maxsize=None)
def _why_skip() -> Optional[str]:
    """
    :return: why the seed's client cannot run here, or ``None`` when it can
    """
    node = shutil.which("node")
    if node is None:
        return "node is not on PATH (the seed's client needs Node.js 18 or later)"
    if not (NODE_DIR / "node_modules" / "ws").is_dir():
        return (
            "tests/node/node_modules/ws is missing: run "
            "`cd tests/node && npm install --no-audit --no-fund`"
        )
    try:
        version = subprocess.run(
            [node, "--version"], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError) as e:
        return f"node --version failed: {e}"
    match = re.match(r"v(\d+)\.", version)
    if match is None or int(match.group(1)) < 18:
        return f"node {version} is too old: the seed's client needs 18 or later (native fetch)"
    return None


class _NodeProcess(ProcessProtocol):
    """
    Collects a child's output and tells when it has exited.
    """

    def __init__(self) -> None:
        self.out = b""
        self.err = b""
        self.reason: Optional[Failure] = None
        self._waiters: list[Deferred[None]] = []

    def outReceived(self, data: bytes) -> None:
        self.out += data

    def errReceived(self, data: bytes) -> None:
        self.err += data

    def processEnded(self, reason: Failure) -> None:
        self.reason = reason
        waiters, self._waiters = self._waiters, []
        for d in waiters:
            d.callback(None)

    def when_ended(self) -> Deferred[None]:
        """
        :return: a new Deferred that fires with ``None`` once the process has
            ended (at once if it already has); the reason is :attr:`reason`
        """
        d: Deferred[None] = Deferred()
        if self.reason is not None:
            d.callback(None)
        else:
            self._waiters.append(d)
        return d

    def output(self) -> str:
        return (
            "--- stdout ---\n" + self.out.decode("utf-8", "replace")
            + "--- stderr ---\n" + self.err.decode("utf-8", "replace")
        )


class SeedClientTests(TestCase):
    """Runs the seed's Node.js client against the emulator, one call per test."""

    timeout = 60

    @inlineCallbacks
    def setUp(self) -> Any:
        reason = _why_skip()
        if reason is not None:
            raise SkipTest(reason)
        self.platform = Platform(
            reactor, clients={CLIENT_ID: CLIENT_SECRET}, profiles=PROFILES
        )
        yield self.platform.listen("tcp:0:interface=127.0.0.1")
        self.addCleanup(self.platform.stop)

    @inlineCallbacks
    def run_seed(self, call_id: str, external_id: str, script: list[str]) -> Any:
        """
        Expect a call, run the seed's client for it and wait until the
        emulator has seen the call end; return (record, process).
        """
        record = self.platform.expect_call(call_id, external_id, script)
        env = {
            "PATH": os.environ.get("PATH", os.defpath),
            "GENESYS_BASE_URL": self.platform.base_url,
            "CLIENT_ID": CLIENT_ID,
            "CLIENT_SECRET": CLIENT_SECRET,
            "AUDIO_BASE_URL": AUDIO,
        }
        node = _NodeProcess()
        transport = reactor.spawnProcess(
            node,
            shutil.which("node"),
            ["node", str(SEED_CLIENT), call_id, external_id],
            env=env,
            path=str(ROOT),
        )

        def kill() -> Deferred[None]:
            # The seed never clears its 10 s handshake timer, so after the
            # call the process would linger that long before exiting.
            try:
                transport.signalProcess("TERM")
            except ProcessExitedAlready:
                pass
            return node.when_ended()

        self.addCleanup(kill)
        yield DeferredList(
            [record.when_finished(), node.when_ended()], fireOnOneCallback=True
        )
        if not record.finished:
            self.fail(
                "the seed's client exited before the emulator saw its call end\n"
                + node.output()
            )
        yield kill()
        reason = node.reason
        if reason is not None and reason.check(ProcessDone) is None:
            # Killed by us (SIGTERM) is the normal end; an exit of its own
            # with a status other than 0 is not.
            exit_code = getattr(reason.value, "exitCode", None)
            if exit_code not in (None, 0):
                self.fail(f"the seed's client failed ({exit_code})\n" + node.output())
        self.assertNotIn(b"IVR session failed", node.err, node.output())
        return record, node

    def play(self, call_id: str, prompt: str, dtmf: dict[str, Any]) -> dict[str, Any]:
        return {"callControlId": call_id, "action": "play", "audio": AUDIO + prompt, "dtmf": dtmf}

    def transfer(self, call_id: str, target: str) -> dict[str, Any]:
        return {"callControlId": call_id, "action": "transfer", "target": target, "type": "number"}

    @inlineCallbacks
    def test_premium_profile(self) -> Any:
        """A premium caller with open tickets gets keys 1, 2, 0; pressing 1 transfers to ext:transfer_premium."""
        call_id = "call-seed-premium"
        record, node = yield self.run_seed(call_id, "CRM-SEED-PREMIUM", ["menu", "press:1"])
        self.assertEqual(
            record.handshake_frame,
            {
                "callControlId": call_id,
                "media": "audio",
                "capabilities": ["play", "dtmf", "transfer", "hangup"],
            },
        )
        self.assertTrue(record.connected)
        self.assertEqual(self.platform.stats.calls_connected, 1)
        self.assertEqual(self.platform.stats.tokens_issued, 1)
        self.assertEqual(self.platform.stats.profile_requests, 1)
        keys = {"enabled": True, "keys": ["1", "2", "0"]}
        self.assertEqual(
            record.commands,
            [
                # All menu prompts at once, each offering every key.
                self.play(call_id, "premium_priority.mp3", keys),
                self.play(call_id, "ticket_status.mp3", keys),
                self.play(call_id, "general_operator.mp3", keys),
                # The complete example's name, not the contract's
                # selection_confirmed.mp3 (a prompt name is the client's
                # business: not a protocol violation).
                self.play(call_id, "confirmed.mp3", {"enabled": False}),
                self.transfer(call_id, "ext:transfer_premium"),
            ],
        )
        self.assertEqual(record.keys_pressed, ["1"])
        self.assertEqual(record.outcome, "transferred")
        self.assertEqual(record.transfer_target, "ext:transfer_premium")
        self.assertEqual(record.close_code, 1000)
        self.assertEqual(record.violations, [])
        self.assertIn(b"Profile loaded for CRM-SEED-PREMIUM: Found", node.out, node.output())
        self.assertIn(b"IVR session active", node.out, node.output())

    @inlineCallbacks
    def test_unknown_profile(self) -> Any:
        """An unknown caller (404) gets only key 0; pressing 0 transfers to ext:transfer_operator."""
        call_id = "call-seed-unknown"
        record, node = yield self.run_seed(call_id, "CRM-NOBODY", ["menu", "press:0"])
        self.assertTrue(record.connected)
        self.assertEqual(self.platform.stats.profile_requests, 1)
        # The complete example's buildDynamicMenu(null) offers key 0 only,
        # unlike its own Step 3 version and the contract's item 4 (keys 1, 2
        # and 0): a difference of menu, not of protocol.
        self.assertEqual(
            record.commands,
            [
                self.play(call_id, "general_operator.mp3", {"enabled": True, "keys": ["0"]}),
                self.play(call_id, "confirmed.mp3", {"enabled": False}),
                self.transfer(call_id, "ext:transfer_operator"),
            ],
        )
        self.assertEqual(record.outcome, "transferred")
        self.assertEqual(record.transfer_target, "ext:transfer_operator")
        self.assertEqual(record.close_code, 1000)
        self.assertEqual(record.violations, [])
        self.assertIn(b"Profile loaded for CRM-NOBODY: Not found", node.out, node.output())

    @inlineCallbacks
    def test_invalid_key_then_valid(self) -> Any:
        """An invalid key gets invalid.mp3 without dtmf.keys (flagged), then key 1 still transfers."""
        call_id = "call-seed-invalid"
        # Reserved characters in the external id: the seed's
        # encodeURIComponent and the emulator's path routing agree.
        external_id = "CRM/EU 42?#%\u00e9"
        record, node = yield self.run_seed(
            call_id, external_id, ["menu", "press:7", "press:1"]
        )
        keys = {"enabled": True, "keys": ["1", "0"]}
        self.assertEqual(
            record.commands,
            [
                self.play(call_id, "premium_priority.mp3", keys),
                self.play(call_id, "general_operator.mp3", keys),
                self.play(call_id, "invalid.mp3", {"enabled": True}),
                self.play(call_id, "confirmed.mp3", {"enabled": False}),
                self.transfer(call_id, "ext:transfer_premium"),
            ],
        )
        # The seed's invalid-key prompt enables DTMF without saying which
        # keys; the contract never requires the list, so that is no violation.
        self.assertEqual(record.violations, [])
        self.assertEqual(record.plays[-1], AUDIO + "confirmed.mp3")
        self.assertEqual(record.outcome, "transferred")
        self.assertEqual(record.transfer_target, "ext:transfer_premium")
        self.assertIn(
            "Profile loaded for CRM/EU 42?#%\u00e9: Found".encode("utf-8"),
            node.out,
            node.output(),
        )
