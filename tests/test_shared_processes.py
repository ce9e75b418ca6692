"""
Three ``twistd -n ivr`` processes sharing one ``redis-server``, against one
emulated platform in this test process: three cold processes and 300 calls
make one token request, the profile rate limit (20 a minute) holds for the
three together, and a signed request replayed to another process starts
nothing.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any, List

import treq
from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults, inlineCallbacks
from twisted.internet.protocol import ProcessProtocol
from twisted.trial.unittest import TestCase

from ivrproto.emulator import Platform
from ivrproto.intake.signing import sign

from .redis_server import SKIP_REASON, RedisServer
from .test_integration import PROFILES, ROOT, SEED

SECRET = "intake-s3cret"
LIMIT = 20


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Twistd(ProcessProtocol):
    "One twistd's output; ``listening`` fires with the intake's line."

    def __init__(self) -> None:
        self.output = b""
        self.listening: Deferred[None] = Deferred()
        self.ended: Deferred[None] = Deferred()

    def outReceived(self, data: bytes) -> None:
        self.output += data
        if b"ivrproto intake listening on" in self.output and not self.listening.called:
            self.listening.callback(None)

    errReceived = outReceived

    def processEnded(self, reason: Any) -> None:
        if not self.listening.called:
            self.listening.errback(AssertionError(self.output.decode(errors="replace")))
        self.ended.callback(None)


def _config(directory: Path, n: int, admin_port: int) -> str:
    seed = Path(SEED).read_text(encoding="utf-8")
    at = seed.index("\n[menu]")
    text = (
        seed[:at]
        + f'\n[admin]\nlisten = "tcp:{admin_port}:interface=127.0.0.1"\n'
        + f"\n[profiles]\nrate_per_minute = {float(LIMIT)}\n"
        + '\n[shared]\ntimeout = 0.9\ntoken_wait = 20.0\nkey_prefix = "procs:"\n'
        + seed[at:]
    )
    path = directory / f"instance{n}.toml"
    path.write_text(text, encoding="utf-8")
    return str(path)


class ProcessesTests(TestCase):
    if SKIP_REASON:
        skip = SKIP_REASON
    timeout = 180

    @inlineCallbacks
    def setUp(self) -> Any:
        self.redis = RedisServer()
        self.redis.start()
        self.addCleanup(self.redis.cleanup)
        self.platform = Platform(reactor, clients={"client": "s3cret"}, profiles=PROFILES)
        yield self.platform.listen("tcp:0:interface=127.0.0.1")
        self.addCleanup(self.platform.stop)
        self.intakes: List[str] = []
        started = []
        directory = Path(self.mktemp())
        directory.mkdir(parents=True)
        for n in range(3):
            port = _free_port()
            self.intakes.append(f"http://127.0.0.1:{port}")
            started.append(self._spawn(_config(directory, n, _free_port()), port))
        # Started together: three cold instances.
        yield gatherResults(started)

    def _spawn(self, config: str, port: int) -> "Deferred[None]":
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("IVR_", "GENESYS_", "CLIENT_"))}
        env.update({
            "GENESYS_BASE_URL": self.platform.base_url,
            "CLIENT_ID": "client",
            "CLIENT_SECRET": "s3cret",
            "IVR_REDIS_URL": self.redis.url,
            "IVR_REDIS_KEY_SALT": "processes",
            "IVR_INTAKE_SECRET": SECRET,
            "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
        })
        twistd = _Twistd()
        process = reactor.spawnProcess(  # type: ignore[attr-defined]
            twistd, sys.executable,
            [sys.executable, "-c", "from twisted.scripts.twistd import run; run()",
             "-n", "--pidfile=", "ivr", "--config", config,
             "--intake", f"tcp:{port}:interface=127.0.0.1"],
            env=env, path=str(ROOT),
        )

        def stop() -> "Deferred[None]":
            if not twistd.ended.called:
                process.signalProcess("TERM")
            return twistd.ended

        self.addCleanup(stop)
        self.addCleanup(lambda: self.assertNotIn(b"s3cret", twistd.output))
        return twistd.listening

    def post(self, n: int, call_id: str, external_id: str, when: int = 0) -> Any:
        body = json.dumps({"callControlId": call_id, "externalId": external_id}).encode()
        now = when or int(time.time())
        return treq.post(
            self.intakes[n] + "/v1/calls",
            data=body,
            headers={
                b"Content-Type": [b"application/json"],
                b"X-IVR-Timestamp": [str(now).encode()],
                b"X-IVR-Signature": [sign(SECRET.encode(), now, body).encode()],
            },
            timeout=10,
            persistent=False,
        )

    @inlineCallbacks
    def call(self, n: int, call_id: str, external_id: str, script: List[str]) -> Any:
        record = self.platform.expect_call(call_id, external_id, script)
        response = yield self.post(n, call_id, external_id)
        self.assertEqual(response.code, 202, (yield response.text()))
        return (yield record.when_finished())

    @inlineCallbacks
    def test_three_processes_share_state(self) -> Any:
        """One token for 300 calls, one rate limit for three processes, replays refused."""
        began = time.monotonic()
        # New callers, more than the limit: a profile request for at most
        # LIMIT of them in the window, the default menu for the others.
        records = yield gatherResults([
            self.call(i % 3, f"new-{i}", f"NEW-{i}", ["menu", "press:0"]) for i in range(45)
        ])
        self.assertTrue(all(r.plays for r in records))
        for batch in range(9):
            records = yield gatherResults([
                self.call(i % 3, f"call-{batch}-{i}", "CRM-PREMIUM", ["menu", "press:1"])
                for i in range(28)
            ])
            self.assertTrue(all(r.plays for r in records))
        self.assertEqual(self.platform.stats.token_requests, 1)
        elapsed = time.monotonic() - began
        windows = 1 + int(elapsed // 60)
        self.assertLessEqual(self.platform.stats.profile_requests, LIMIT * windows)
        # A signed request replayed to each other process starts nothing.
        now = int(time.time())
        record = self.platform.expect_call("replayed", "CRM-PLAIN", ["menu", "press:0"])
        first = yield self.post(0, "replayed", "CRM-PLAIN", now)
        self.assertEqual(first.code, 202)
        yield first.content()
        yield record.when_finished()
        connected = self.platform.stats.calls_connected
        for n in (1, 2):
            again = yield self.post(n, "replayed", "CRM-PLAIN", now)
            self.assertEqual(again.code, 409)
            yield again.content()
        self.assertEqual(self.platform.stats.calls_connected, connected)
