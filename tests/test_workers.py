"""
``twistd ivr --workers N``: the supervisor and its workers, as real processes
on loopback; and the supervisor's restart policy, on a fake clock.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import treq
from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.task import Clock, deferLater
from twisted.python.failure import Failure
from twisted.logger import Logger, formatEvent
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.http_headers import Headers

from ivrproto.logs import event_as_json
from ivrproto.workers import (
    AdoptingReactor,
    Backoff,
    Supervisor,
    WorkerListener,
    parse_workers,
    worker_spec,
)

ROOT = Path(__file__).resolve().parent.parent
LOCAL = ROOT / "examples" / "local.toml"
TWISTD = ["-c", "from twisted.scripts.twistd import run; run()"]


def _config(directory: Path) -> str:
    """
    examples/local.toml with its embedded emulator and no scripted calls, the
    admin listener on free ports, and a short drain.
    """
    text = LOCAL.read_text()
    head, menus = text.split("\n[menu]\n", 1)
    head = head.split("\n[[calls]]", 1)[0]
    head = head.replace('listen = "intake"', 'listen = "tcp:0:interface=127.0.0.1"')
    head = head.replace("exit_when_done = true", "exit_when_done = false")
    head = head.replace('"profiles.json"', json.dumps(str(ROOT / "examples" / "profiles.json")))
    head = head.replace("[intake]\n", "[intake]\ndrain_deadline = 1.0\n")
    assert "exit_when_done = false" in head and "drain_deadline" in head
    path = directory / "ivr.toml"
    path.write_text(head + "\n[menu]\n" + menus)
    return str(path)


def _env() -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("CLIENT_ID", "CLIENT_SECRET", "IVR_CONFIG", "IVR_INTAKE_LISTEN",
                     "IVR_LOG_FORMAT", "GENESYS_BASE_URL", "IVR_WORKERS")
    }
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["IVR_AC_API_KEY"] = "workers-test-key"
    env["IVR_AC_CLIENT_SECRET"] = "c2VjcmV0"  # base64 of "secret"
    return env


class _Supervised(ProcessProtocol):
    """
    The supervisor's process: its output, a line at a time, and its end.
    """

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.errors = b""
        self.ended: Deferred[Any] = Deferred()
        self._partial = b""

    def outReceived(self, data: bytes) -> None:
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()
        self.lines.extend(line.decode("utf-8", "replace") for line in lines)

    def errReceived(self, data: bytes) -> None:
        self.errors += data

    def processEnded(self, reason: Failure) -> None:
        self.ended.callback(reason.value)

    def matches(self, pattern: str) -> list[re.Match[str]]:
        return [m for m in (re.search(pattern, line) for line in self.lines) if m]


@inlineCallbacks
def _until(check: Callable[[], Any], what: str, timeout: float = 60.0) -> Any:
    """
    Poll ``check`` (a value, or a Deferred of one) until it is true, for at
    most ``timeout`` seconds.
    """
    waited = 0.0
    while True:
        value = yield check()
        if value:
            return value
        if waited >= timeout:
            raise AssertionError(f"still waiting after {timeout:g}s for {what}")
        yield deferLater(reactor, 0.05, lambda: None)
        waited += 0.05


class WorkersRunTests(TestCase):
    """
    ``twistd -n ivr --workers 2``: one intake port, two processes.
    """

    timeout = 180

    def setUp(self) -> None:
        self.directory = Path(tempfile.mkdtemp())
        self.addCleanup(shutil.rmtree, str(self.directory))

    def start(self, *args: str) -> _Supervised:
        protocol = _Supervised()
        argv = [sys.executable, *TWISTD, "-n", "--pidfile=", "ivr", *args]
        process = reactor.spawnProcess(
            protocol, sys.executable, argv, env=_env(), path=str(self.directory)
        )

        def kill() -> Any:
            if not protocol.ended.called:
                for match in protocol.matches(r"started \(pid (\d+)\)"):
                    _kill(int(match.group(1)))
                process.signalProcess("KILL")
                return protocol.ended

        self.addCleanup(kill)
        return protocol

    @inlineCallbacks
    def stats(self, admin: str) -> Any:
        response = yield treq.get(f"{admin}/v1/stats", persistent=False)
        return json.loads((yield treq.content(response)))

    @inlineCallbacks
    def bad_call(self, intake: str) -> Any:
        """A request the intake refuses (400, counted as bad_request) on a new connection."""
        response = yield treq.post(
            f"{intake}/v1/calls", b"", headers=Headers({"content-type": ["application/json"]}),
            persistent=False,
        )
        yield treq.content(response)
        return response.code

    def listening(self, protocol: _Supervised, index: int, after: int = 0) -> bool:
        return any(
            f"worker {index}: " in line and "ivrproto intake listening on" in line
            for line in protocol.lines[after:]
        )

    @inlineCallbacks
    def test_workers(self) -> Any:
        """Both workers answer; one killed is restarted; SIGHUP reaches both; SIGTERM drains."""
        (self.directory / "prompts").symlink_to(ROOT / "examples" / "prompts")
        protocol = self.start(
            "--config", _config(self.directory), "--workers", "2",
            "--audio-connector", "tcp:0:interface=127.0.0.1",
        )
        shared = yield _until(lambda: protocol.matches(r"intake on tcp:(\d+):"), "the intake")
        intake = f"http://127.0.0.1:{shared[0].group(1)}"
        started = yield _until(
            lambda: len(protocol.matches(r"worker \d started")) == 2 and protocol.matches(
                r"worker (\d) started \(pid (\d+)\), admin listener on tcp:(\d+):"
            ), "two workers"
        )
        admins = {int(m.group(1)): f"http://127.0.0.1:{m.group(3)}" for m in started}
        pids = {int(m.group(1)): int(m.group(2)) for m in started}
        self.assertEqual(sorted(admins), [0, 1])
        self.assertEqual(len(set(admins.values())), 2)
        yield _until(lambda: self.listening(protocol, 0) and self.listening(protocol, 1),
                     "both workers listening")

        @inlineCallbacks
        def answered_by_both() -> Any:
            # A request at a time until each worker has counted some.
            self.assertEqual((yield self.bad_call(intake)), 400)
            counts = []
            for index in (0, 1):
                stats = yield self.stats(admins[index])
                counts.append(stats["intake"]["refused"]["bad_request"])
            return all(counts)

        yield _until(answered_by_both, "requests answered by both workers")

        # The Audio Connector listener is shared too.
        ac = protocol.matches(r"audio_connector on tcp:(\d+):")[0].group(1)
        for index in (0, 1):
            self.assertTrue(protocol.matches(
                rf"worker {index}: .*Audio Connector listening on ws://127.0.0.1:{ac}/"
            ))
        response = yield treq.get(f"http://127.0.0.1:{ac}/", persistent=False)
        yield treq.content(response)
        self.assertLess(response.code, 500)

        # kill -9 one worker: it is started again, and the port keeps answering.
        seen = len(protocol.lines)
        os.kill(pids[0], signal.SIGKILL)
        yield _until(lambda: protocol.matches(
            rf"worker 0 \(pid {pids[0]}\) was killed by signal 9: restarting it in"
        ), "the restart line")
        self.assertEqual((yield self.bad_call(intake)), 400)
        restarted = yield _until(
            lambda: [m for m in protocol.matches(r"worker 0 started \(pid (\d+)\)")
                     if int(m.group(1)) != pids[0]], "worker 0 again"
        )
        pids[0] = int(restarted[0].group(1))
        yield _until(lambda: self.listening(protocol, 0, seen), "worker 0 listening again")
        self.assertEqual((yield self.bad_call(intake)), 400)
        # The restarted worker serves its admin listener on the same port.
        self.assertIn("intake", (yield self.stats(admins[0])))

        # SIGHUP: every worker reloads.
        seen = len(protocol.lines)
        supervisor = protocol.ended  # (the supervisor's own pid is the transport's)
        os.kill(self.pid_of(protocol), signal.SIGHUP)
        def reloaded(index: int) -> bool:
            return any(f"worker {index}: " in line and "configuration reloaded" in line
                       for line in protocol.lines[seen:])

        yield _until(lambda: reloaded(0) and reloaded(1), "both workers reloading")

        # SIGTERM: both drain, then the supervisor exits 0.
        os.kill(self.pid_of(protocol), signal.SIGTERM)
        ended = yield supervisor
        self.assertIsInstance(ended, ProcessDone, "\n".join(protocol.lines))
        for index in (0, 1):
            self.assertTrue(protocol.matches(rf"worker {index}: .*drained"))
        self.assertTrue(protocol.matches(r"all workers stopped"))
        self.assertNotIn("Traceback", "\n".join(protocol.lines))

    def pid_of(self, protocol: _Supervised) -> int:
        assert protocol.transport is not None
        pid = protocol.transport.pid
        assert pid is not None
        return int(pid)

    @inlineCallbacks
    def test_supervisor_killed(self) -> Any:
        """Workers whose supervisor is killed with SIGKILL stop rather than serve on alone."""
        protocol = self.start("--config", _config(self.directory), "--workers", "2")
        yield _until(lambda: self.listening(protocol, 0) and self.listening(protocol, 1),
                     "both workers listening")
        pids = [int(m.group(1)) for m in protocol.matches(r"started \(pid (\d+)\)")]
        self.assertEqual(len(pids), 2)
        os.kill(self.pid_of(protocol), signal.SIGKILL)
        yield protocol.ended
        yield _until(lambda: not any(_alive(pid) for pid in pids), "the workers to stop")

    @inlineCallbacks
    def test_gives_up(self) -> Any:
        """A worker that keeps dying: restarts with a growing delay, then exit 1."""
        config = _config(self.directory)
        protocol = self.start("--config", config, "--workers", "2")
        yield _until(lambda: self.listening(protocol, 0) and self.listening(protocol, 1),
                     "both workers listening")
        pid = int(protocol.matches(r"worker 0 started \(pid (\d+)\)")[0].group(1))
        Path(config).write_text("[timng]\n")  # every restart now fails
        os.kill(pid, signal.SIGKILL)
        ended = yield protocol.ended
        self.assertEqual(getattr(ended, "exitCode", None), 1, "\n".join(protocol.lines))
        delays = [m.group(1) for m in protocol.matches(r"worker 0 .*restarting it in (\S+)s")]
        self.assertEqual(delays, ["0.5", "1", "2", "4", "8"])
        self.assertTrue(protocol.matches(
            r"worker 0 \(pid \d+\) exited with status 1: 5 restarts in the last minute, giving up"
        ))
        self.assertTrue(protocol.matches(r"worker 1 \(pid \d+\) stopped"))

    @inlineCallbacks
    def test_port_in_use(self) -> Any:
        """An intake port already taken: one line on stderr, exit status 1, no worker started."""
        taken = socket.socket()
        self.addCleanup(taken.close)
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        protocol = self.start("--config", _config(self.directory), "--workers", "2",
                              "--intake", f"tcp:{port}:interface=127.0.0.1")
        ended = yield protocol.ended
        self.assertIsInstance(ended, ProcessTerminated)
        self.assertEqual(ended.exitCode, 1)
        lines = protocol.errors.decode().splitlines()
        self.assertEqual(len(lines), 1, lines)
        self.assertIn(f"ivrproto: cannot listen for the intake on tcp:{port}:", lines[0])
        self.assertIn("in use", lines[0])
        self.assertFalse(protocol.matches("started"))

    @inlineCallbacks
    def test_bad_prompts(self) -> Any:
        """A configuration a worker would refuse stops the supervisor: one line, exit 1."""
        protocol = self.start("--config", _config(self.directory), "--workers", "2",
                              "--audio-connector", "tcp:0:interface=127.0.0.1")
        ended = yield protocol.ended
        self.assertEqual(getattr(ended, "exitCode", None), 1)
        lines = protocol.errors.decode().splitlines()
        self.assertEqual(len(lines), 1, lines)
        self.assertIn("bad configuration", lines[0])
        self.assertIn("audio_connector.prompts", lines[0])
        self.assertFalse(protocol.matches("started"))

    @inlineCallbacks
    def test_bad_workers(self) -> Any:
        """--workers 0: one line, exit status 1."""
        protocol = self.start("--config", _config(self.directory), "--workers", "0")
        ended = yield protocol.ended
        self.assertEqual(getattr(ended, "exitCode", None), 1)
        self.assertEqual(
            protocol.errors.decode().strip(),
            "bad --workers: '0' must be a whole number from 1 to 64",
        )


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, exited but not yet reaped, does not)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except OSError:
        pass


class _FakeProcess:
    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.signals: list[Any] = []

    def signalProcess(self, signum: Any) -> None:
        self.signals.append(signum)


class _FakeReactor(Clock):
    """A clock that starts fake processes."""

    def __init__(self) -> None:
        super().__init__()
        self.spawned: list[tuple[Any, _FakeProcess, list[str], dict[int, Any]]] = []

    def spawnProcess(self, protocol: Any, executable: str, args: list[str],
                     env: Any = None, childFDs: Any = None) -> _FakeProcess:
        process = _FakeProcess(1000 + len(self.spawned))
        self.spawned.append((protocol, process, args, childFDs))
        return process


def _died(protocol: Any, code: int = 1) -> None:
    protocol.processEnded(Failure(ProcessTerminated(exitCode=code)))


class SupervisorTests(SynchronousTestCase):
    """
    The supervisor's policy: restarts with a backoff, a bound, signals.
    """

    def setUp(self) -> None:
        self.reactor = _FakeReactor()
        self.gave_up: list[bool] = []
        intake = WorkerListener("intake", "tcp:8080:interface=127.0.0.1", socket.AF_INET, 7,
                                "127.0.0.1", 8080)
        admin = [WorkerListener("admin", f"tcp:{9100 + i}:interface=127.0.0.1", socket.AF_INET,
                                8 + i, "127.0.0.1", 9100 + i) for i in range(2)]
        self.supervisor = Supervisor(
            self.reactor, ["python", "-c", "twistd"],
            [{"intake": intake, "admin": admin[i]} for i in range(2)], {},
            Backoff(first=0.5, cap=4.0, max_per_minute=3),
            on_give_up=lambda: self.gave_up.append(True),
        )
        self.supervisor.startService()

    def test_spawn(self) -> None:
        """Each worker gets the shared intake and its own admin socket, and --worker SPEC."""
        self.assertEqual(len(self.reactor.spawned), 2)
        _, _, args, fds = self.reactor.spawned[1]
        self.assertEqual(args[-2], "--worker")
        spec = json.loads(args[-1])
        self.assertEqual(spec["index"], 1)
        self.assertEqual(fds[spec["intake"][0]], 7)
        self.assertEqual(fds[spec["admin"][0]], 9)
        self.assertEqual(spec["admin"][2], "tcp:9101:interface=127.0.0.1")

    def test_restart_backoff_and_bound(self) -> None:
        """A dead worker restarts after 0.5, 1, 2 s; a fourth death in a minute gives up."""
        for expected in (0.5, 1.0, 2.0):
            protocol = self.supervisor.protocols[0]
            count = len(self.reactor.spawned)
            _died(protocol)
            self.reactor.advance(expected - 0.01)
            self.assertEqual(len(self.reactor.spawned), count)
            self.reactor.advance(0.01)
            self.assertEqual(len(self.reactor.spawned), count + 1)
        _died(self.supervisor.protocols[0])
        self.assertEqual(self.gave_up, [True])
        self.reactor.advance(60)
        self.assertEqual(len(self.reactor.spawned), 5)

    def test_restarts_forgotten_after_a_minute(self) -> None:
        """Deaths more than a minute apart each restart after the first delay."""
        for _ in range(5):
            count = len(self.reactor.spawned)
            _died(self.supervisor.protocols[1])
            self.reactor.advance(0.5)
            self.assertEqual(len(self.reactor.spawned), count + 1)
            self.reactor.advance(61)
        self.assertEqual(self.gave_up, [])

    def test_signals(self) -> None:
        """SIGHUP goes to every worker; stopping sends SIGTERM and waits for every one."""
        self.supervisor.reload()
        processes = [spawned[1] for spawned in self.reactor.spawned]
        self.assertEqual([p.signals for p in processes], [[signal.SIGHUP]] * 2)
        stopped = self.supervisor.stopService()
        self.assertEqual([p.signals[-1] for p in processes], [signal.SIGTERM] * 2)
        self.assertNoResult(stopped)
        _died(self.supervisor.protocols[0], 0)
        self.assertNoResult(stopped)
        _died(self.supervisor.protocols[1], 0)
        self.successResultOf(stopped)
        self.reactor.advance(60)
        self.assertEqual(len(self.reactor.spawned), 2)  # no restart while stopping

    def test_dead_while_waiting_to_restart(self) -> None:
        """Stopping cancels a pending restart."""
        _died(self.supervisor.protocols[0])
        stopped = self.supervisor.stopService()
        _died(self.supervisor.protocols[1], 0)
        self.successResultOf(stopped)
        self.reactor.advance(60)
        self.assertEqual(len(self.reactor.spawned), 2)


class WorkerSideTests(SynchronousTestCase):
    def test_adopting_reactor(self) -> None:
        """listenTCP on a socket the supervisor bound adopts it; anything else binds."""

        class Real:
            def adoptStreamPort(self, fd: int, family: int, factory: Any) -> Any:
                return ("adopted", fd, family, factory)

            def listenTCP(self, port: int, factory: Any, backlog: int, interface: str) -> Any:
                return ("bound", port, interface)

            def seconds(self) -> float:
                return 5.0

        adopting = AdoptingReactor(Real(), {(8080, "127.0.0.1"): (3, socket.AF_INET)})
        self.assertEqual(adopting.listenTCP(8080, "f", 50, "127.0.0.1"),
                         ("adopted", 3, socket.AF_INET, "f"))
        self.assertEqual(adopting.listenTCP(8081, "f", 50, "127.0.0.1"),
                         ("bound", 8081, "127.0.0.1"))
        self.assertEqual(adopting.seconds(), 5.0)

    def test_spec_round_trip(self) -> None:
        from ivrproto.workers import adopted

        listener = WorkerListener("intake", "tcp:8080:interface=127.0.0.1", socket.AF_INET, 9,
                                  "127.0.0.1", 8080)
        spec, fds = worker_spec(2, {"intake": listener})
        _, listen, index = adopted(reactor, spec)
        self.assertEqual((listen, index), ({"intake": "tcp:8080:interface=127.0.0.1"}, 2))
        self.assertEqual(fds[3], 9)

    def test_bind_listeners(self) -> None:
        """One intake socket for all; an admin socket each, on free ports for port 0."""
        from ivrproto.workers import bind_listeners
        from ivrproto.workers.sockets import _asks_any_port

        workers = bind_listeners(
            reactor, 3, "tcp:0:interface=127.0.0.1", "tcp6:port=0:interface=\\:\\:1", None
        )
        ports = [listener.listening for w in workers for listener in w.values()]
        self.addCleanup(lambda: [port.stopListening() for port in set(ports)])
        self.assertEqual(len({w["intake"].fd for w in workers}), 1)
        self.assertEqual(len({w["admin"].fd for w in workers}), 3)
        admin = workers[2]["admin"]
        self.assertEqual((admin.family, admin.host), (socket.AF_INET6, "::1"))
        self.assertEqual(admin.description, f"tcp6:{admin.port}:interface=\\:\\:1")
        self.assertTrue(_asks_any_port("tcp:0:interface=127.0.0.1"))
        self.assertFalse(_asks_any_port("tcp:9100:interface=127.0.0.1"))
        self.assertFalse(_asks_any_port("tcp:interface=127.0.0.1:port=9100"))

    def test_parse_workers(self) -> None:
        self.assertEqual(parse_workers(None, "--workers"), 1)
        self.assertEqual(parse_workers("4", "--workers"), 4)
        for bad in ("0", "x", "65", "-1"):
            with self.assertRaises(SystemExit):
                parse_workers(bad, "IVR_WORKERS")


class RelayTests(SynchronousTestCase):
    """
    What a worker writes reaches the supervisor's log as one line of its own.
    """

    def relayed(self, line: bytes) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        supervisor = Supervisor(_FakeReactor(), ["python"], [], {}, Backoff())
        supervisor.log = Logger(observer=events.append)
        supervisor.relay(3, line)
        return events

    def test_text_line(self) -> None:
        """A text line loses its own timestamp and gains the worker's index."""
        [event] = self.relayed(b"2026-12-02T04:00:00+0000 [ivrproto.session] call ended\r")
        self.assertEqual(formatEvent(event), "worker 3: [ivrproto.session] call ended")

    def test_json_line_stays_flat(self) -> None:
        """A JSON line is written as the worker's own object plus "worker", not a string in another."""
        record = {"time": "2026-12-02T04:00:00Z", "level": "info", "namespace": "ivrproto.session",
                  "message": "call ended", "call_control_id": "c-1", "call_record": {"outcome": "selected"}}
        [event] = self.relayed(json.dumps(record).encode())
        self.assertEqual(formatEvent(event), "worker 3: call ended")
        self.assertEqual(json.loads(event_as_json(event) or ""), {**record, "worker": 3})

    def test_json_like_text(self) -> None:
        """A line that only looks like JSON is relayed as text."""
        [event] = self.relayed(b"{not json")
        self.assertEqual(formatEvent(event), "worker 3: {not json")
