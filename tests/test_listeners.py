"""
A listener that cannot be bound stops the process at startup, exit status
1, with one line naming the listener and the reason: ``twistd ivr`` (intake,
admin listener, embedded emulator) and ``twistd ivr-emulator``, in the
foreground and in daemon mode.  Each test holds a port on 127.0.0.1 itself
and points the listener at it.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred, fail, inlineCallbacks, succeed
from twisted.internet.error import CannotListenError
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import MemoryReactorClock
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import SynchronousTestCase, TestCase

from ivrproto.listeners import CannotListen, ListenerService, listen_now, reason_of

ROOT = Path(__file__).resolve().parent.parent
LOCAL = ROOT / "examples" / "local.toml"
EMULATOR = ROOT / "examples" / "emulator.toml"
IN_USE = "Address already in use"


class _Endpoint:
    def __init__(self, result: Deferred[Any]) -> None:
        self.result = result
        self.calls = 0

    def listen(self, factory: Any) -> Deferred[Any]:
        self.calls += 1
        return self.result


class ListenerServiceTests(SynchronousTestCase):
    def test_raises_at_privileged_start(self) -> None:
        """A port that cannot be bound raises CannotListen from privilegedStartService, naming it."""
        error = CannotListenError("127.0.0.1", 8080, OSError(98, IN_USE))
        service = ListenerService("intake", "tcp:8080", _Endpoint(fail(error)), Factory())
        with self.assertRaises(CannotListen) as raised:
            service.privilegedStartService()
        self.assertEqual(
            str(raised.exception), f"ivrproto: cannot listen for the intake on tcp:8080: {IN_USE}"
        )
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_binds_once(self) -> None:
        """twistd's privilegedStartService after the plugin's, and startService, bind nothing more."""
        endpoint = _Endpoint(succeed(object()))
        service = ListenerService("admin listener", "tcp:0", endpoint, Factory())
        service.privilegedStartService()
        service.privilegedStartService()
        service.startService()
        self.assertEqual(endpoint.calls, 1)
        self.assertIsNotNone(service.port)

    def test_stop_never_started(self) -> None:
        """A listener whose sibling failed first, never started, stops without error."""
        service = ListenerService("admin listener", "tcp:0", _Endpoint(Deferred()), Factory())
        self.successResultOf(service.stopService())

    def test_listen_now(self) -> None:
        """listen_now raises for an endpoint that failed at once, and passes one that listens."""
        error = CannotListenError("", 80, OSError(13, "Permission denied"))
        with self.assertRaises(CannotListen) as raised:
            listen_now("emulator", "tcp:80", fail(error), program="ivr-emulator")
        self.assertEqual(
            str(raised.exception),
            "ivr-emulator: cannot listen for the emulator on tcp:80: Permission denied",
        )
        port = object()
        self.assertIs(self.successResultOf(listen_now("emulator", "tcp:0", succeed(port))), port)

    def test_reason_of(self) -> None:
        """The reason is the system's words, not the exception's repr."""
        error = CannotListenError("10.255.255.1", 9100, OSError(99, "Cannot assign requested address"))
        self.assertEqual(reason_of(error), "Cannot assign requested address")
        self.assertEqual(reason_of(ValueError("odd")), "odd")

    def test_memory_reactor(self) -> None:
        """A real endpoint string against a reactor: the port is known once bound."""
        from twisted.internet.endpoints import serverFromString

        clock = MemoryReactorClock()
        service = ListenerService(
            "intake", "tcp:0", serverFromString(clock, "tcp:0:interface=127.0.0.1"), Factory()
        )
        service.privilegedStartService()
        self.assertEqual(len(clock.tcpServers), 1)
        self.assertIsNotNone(service.port)


class TwistdBindFailureTests(TestCase):
    """
    ``twistd`` in a subprocess, with a port the test holds.
    """

    timeout = 60

    def setUp(self) -> None:
        port = reactor.listenTCP(0, Factory.forProtocol(Protocol), interface="127.0.0.1")  # type: ignore[attr-defined]
        self.addCleanup(port.stopListening)
        self.busy = f"tcp:{port.getHost().port}:interface=127.0.0.1"
        self.directory = tempfile.mkdtemp()
        self.addCleanup(_remove_tree, self.directory)

    def config(self, old: str, new: str) -> str:
        text = LOCAL.read_text()
        self.assertIn(old, text)
        path = Path(self.directory) / "ivr.toml"
        path.write_text(text.replace(old, new, 1))
        (Path(self.directory) / "profiles.json").write_text(
            (ROOT / "examples" / "profiles.json").read_text()
        )
        (Path(self.directory) / "prompts").symlink_to(ROOT / "examples" / "prompts")
        return str(path)

    @inlineCallbacks
    def twistd(self, *args: str, daemon: bool = False) -> Any:
        env = {k: v for k, v in os.environ.items() if k not in ("CLIENT_ID", "CLIENT_SECRET")}
        env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
        if daemon:
            mode = [f"--pidfile={self.directory}/twistd.pid", f"--logfile={self.directory}/twistd.log"]
        else:
            mode = ["-n", "--pidfile="]
        out, err, code = yield getProcessOutputAndValue(
            sys.executable,
            ["-c", "from twisted.scripts.twistd import run; run()", *mode, *args],
            env=env,
            path=str(ROOT),
            reactor=reactor,
        )
        return out.decode(), err.decode(), code

    def assertOneLine(self, result: Any, line: str) -> None:
        out, err, code = result
        self.assertEqual(code, 1, out + err)
        self.assertEqual(err.splitlines(), [line], out + err)
        self.assertEqual(out, "")

    @inlineCallbacks
    def test_intake_in_use(self) -> Any:
        """twistd -n ivr with the intake's port in use: rc 1, one line naming the intake."""
        result = yield self.twistd("ivr", "--config", str(LOCAL), "--intake", self.busy)
        self.assertOneLine(result, f"ivrproto: cannot listen for the intake on {self.busy}: {IN_USE}")

    @inlineCallbacks
    def test_intake_in_use_daemon(self) -> Any:
        """In daemon mode the parent exits 1 with the same line, and leaves no pid file."""
        result = yield self.twistd("ivr", "--config", str(LOCAL), "--intake", self.busy, daemon=True)
        self.assertOneLine(result, f"ivrproto: cannot listen for the intake on {self.busy}: {IN_USE}")
        self.assertFalse(os.path.exists(os.path.join(self.directory, "twistd.pid")))

    @inlineCallbacks
    def test_admin_in_use(self) -> Any:
        """An admin listener whose port is in use: rc 1, one line naming the admin listener."""
        path = self.config('listen = "intake"', f'listen = "{self.busy}"')
        result = yield self.twistd("ivr", "--config", path)
        self.assertOneLine(
            result, f"ivrproto: cannot listen for the admin listener on {self.busy}: {IN_USE}"
        )

    @inlineCallbacks
    def test_admin_bad_interface_daemon(self) -> Any:
        """An admin interface this machine does not have, in daemon mode: rc 1 and the system's reason."""
        endpoint = "tcp:9100:interface=192.0.2.1"
        path = self.config('listen = "intake"', f'listen = "{endpoint}"')
        result = yield self.twistd("ivr", "--config", path, daemon=True)
        self.assertOneLine(
            result,
            f"ivrproto: cannot listen for the admin listener on {endpoint}: "
            "Cannot assign requested address",
        )

    @inlineCallbacks
    def test_embedded_emulator_in_use(self) -> Any:
        """The embedded emulator's port in use: rc 1, one line naming the emulator."""
        path = self.config(
            'enabled = true\nlisten = "tcp:0:interface=127.0.0.1"',
            f'enabled = true\nlisten = "{self.busy}"',
        )
        result = yield self.twistd("ivr", "--config", path)
        self.assertOneLine(result, f"ivrproto: cannot listen for the emulator on {self.busy}: {IN_USE}")

    @inlineCallbacks
    def test_ivr_emulator_in_use(self) -> Any:
        """twistd -n ivr-emulator with its port in use: rc 1, one line."""
        result = yield self.twistd("ivr-emulator", "--config", str(EMULATOR), "--listen", self.busy)
        self.assertOneLine(
            result, f"ivr-emulator: cannot listen for the emulator on {self.busy}: {IN_USE}"
        )

    @inlineCallbacks
    def test_ivr_emulator_in_use_daemon(self) -> Any:
        """twistd ivr-emulator in daemon mode with its port in use: the parent exits 1 with the line."""
        result = yield self.twistd(
            "ivr-emulator", "--config", str(EMULATOR), "--listen", self.busy, daemon=True
        )
        self.assertOneLine(
            result, f"ivr-emulator: cannot listen for the emulator on {self.busy}: {IN_USE}"
        )


def _remove_tree(path: str) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)
