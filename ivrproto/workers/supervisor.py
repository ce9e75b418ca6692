"""
The supervisor of ``twistd ivr --workers N``: starts the workers, passes
SIGTERM and SIGHUP on to every one, restarts the dead ones.
"""

from __future__ import annotations

import atexit
import os
import re
import signal
import sys
from collections.abc import Callable, Mapping
from typing import Any

import attrs
import orjson
from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.internet.error import ProcessExitedAlready
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from ivrproto.listeners import CannotListen
from ivrproto.workers.sockets import WorkerListener, bind_listeners, worker_spec

#: How a worker is started: twistd, in the foreground.
TWISTD = "from twisted.scripts.twistd import run; run()"
#: The timestamp twistd starts a text log line with.
_TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[^ ]* ")


def _json_record(text: str) -> dict[str, Any] | None:
    """
    A worker's line as the JSON object it is, or None for a text line.
    """
    if not text.startswith("{"):
        return None
    try:
        record = orjson.loads(text)
    except orjson.JSONDecodeError:
        return None
    return record if isinstance(record, dict) else None


@attrs.frozen
class Backoff:
    """
    When a dead worker is started again: ``first`` seconds after the first
    death in a minute, doubling with each further death in that minute up to
    ``cap``; beyond ``max_per_minute`` restarts in any 60 s, the supervisor
    gives up.
    """

    first: float = 0.5
    cap: float = 10.0
    max_per_minute: int = 5

    def delay(self, recent: int) -> float:
        """
        The delay before a restart, with ``recent`` restarts in the last minute.
        """
        return float(min(self.cap, self.first * 2 ** recent))


class _WorkerProtocol(ProcessProtocol):
    """
    One worker process: its output goes to the supervisor's log, a line at a
    time, prefixed with the worker's index.
    """

    def __init__(self, supervisor: Supervisor, index: int) -> None:
        self.supervisor = supervisor
        self.index = index
        self.ended: Deferred[Any] = Deferred()
        self._partial = {1: b"", 2: b""}

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        lines = (self._partial.get(childFD, b"") + data).split(b"\n")
        self._partial[childFD] = lines.pop()
        for line in lines:
            self.supervisor.relay(self.index, line)

    def processEnded(self, reason: Failure) -> None:
        for rest in self._partial.values():
            if rest:
                self.supervisor.relay(self.index, rest)
        self.supervisor.ended(self.index, self, reason)
        self.ended.callback(None)


class Supervisor(Service):
    """
    Runs the workers: starts them, passes signals on, restarts the dead ones.

    :param reactor: the reactor (``IReactorProcess``, ``IReactorTime``)
    :param command: a worker's command line, without ``--worker SPEC``
    :param listeners: each worker's bound sockets (:func:`bind_listeners`)
    :param environ: the workers' environment
    :param on_give_up: called when a worker keeps dying (``twistd`` stops and
        exits 1)
    """

    log = Logger()

    def __init__(
        self,
        reactor: Any,
        command: list[str],
        listeners: list[dict[str, WorkerListener]],
        environ: Mapping[str, str],
        backoff: Backoff = Backoff(),
        on_give_up: Callable[[], Any] = lambda: None,
        logging: Any = None,
    ) -> None:
        self.reactor = reactor
        self.logging = logging
        self.command = command
        self.listeners = listeners
        self.environ = dict(environ)
        self.backoff = backoff
        self.on_give_up = on_give_up
        self.processes: dict[int, Any] = {}
        #: Each worker's pid, the last one started.
        self.pids: dict[int, int] = {}
        self.protocols: dict[int, _WorkerProtocol] = {}
        self.restarts: dict[int, list[float]] = {i: [] for i in range(len(listeners))}
        self.pending: dict[int, Any] = {}
        self.stopping = False
        self.gave_up = False

    def setServiceParent(self, parent: Any) -> None:
        # The supervisor logs as a single process would: the configured
        # format, where twistd logs.
        from ivrproto.wiring import offer_log_observer

        if self.logging is not None:
            offer_log_observer(parent, self.logging)
        super().setServiceParent(parent)

    def startService(self) -> None:
        super().startService()
        shared = self.listeners[0] if self.listeners else {}
        for name in sorted(set(shared) - {"admin"}):
            self.log.info(
                "{name} on {description}, shared by {count} workers", name=name,
                description=shared[name].description, count=len(self.listeners),
            )
        for index in range(len(self.listeners)):
            self.spawn(index)

    def spawn(self, index: int) -> None:
        """
        Start worker ``index``.
        """
        self.pending.pop(index, None)
        spec, fds = worker_spec(index, self.listeners[index])
        protocol = _WorkerProtocol(self, index)
        process = self.reactor.spawnProcess(
            protocol, self.command[0], self.command + ["--worker", spec],
            env=self.environ, childFDs=fds,
        )
        self.processes[index] = process
        self.pids[index] = process.pid
        self.protocols[index] = protocol
        admin = self.listeners[index].get("admin")
        self.log.info(
            "worker {index} started (pid {pid}){admin}", index=index, pid=process.pid,
            admin=f", admin listener on {admin.description}" if admin else "",
        )

    def relay(self, index: int, line: bytes) -> None:
        """
        A line a worker wrote, into the supervisor's log.
        """
        text = line.decode("utf-8", "replace").rstrip("\r")
        record = _json_record(text)
        if record is not None:
            # A worker logging JSON: its own record, with its index, so that
            # the supervisor's JSON log is still one flat object a line (see
            # ivrproto.logs.event_as_json); its text form reads as below.
            self.log.info(
                "worker {index}: {line}", index=index, line=str(record.get("message", "")),
                worker_record=record,
            )
            return
        # (A text line's own timestamp goes: the supervisor's log adds one.)
        text = _TIMESTAMP.sub("", text, count=1)
        if text:
            self.log.info("worker {index}: {line}", index=index, line=text)

    def ended(self, index: int, protocol: _WorkerProtocol, reason: Failure) -> None:
        """
        Worker ``index`` exited: start it again, unless stopping or it
        keeps dying.
        """
        self.processes.pop(index, None)
        self.protocols.pop(index, None)
        pid = self.pids.get(index, "?")
        how = _how(reason)
        if self.stopping or self.gave_up:
            self.log.info("worker {index} (pid {pid}) stopped: {how}", index=index, pid=pid, how=how)
            return
        now = self.reactor.seconds()
        recent = [t for t in self.restarts[index] if now - t < 60.0]
        if len(recent) >= self.backoff.max_per_minute:
            self.log.error(
                "worker {index} (pid {pid}) {how}: {count} restarts in the last minute, "
                "giving up", index=index, pid=pid, how=how, count=len(recent),
            )
            self.gave_up = True
            self.on_give_up()
            return
        delay = self.backoff.delay(len(recent))
        self.restarts[index] = recent + [now]
        self.log.warn(
            "worker {index} (pid {pid}) {how}: restarting it in {delay:g}s "
            "(restart {count} in the last minute)",
            index=index, pid=pid, how=how, delay=delay, count=len(recent) + 1,
        )
        self.pending[index] = self.reactor.callLater(delay, self.spawn, index)

    def signal(self, signum: int) -> None:
        """
        Pass ``signum`` on to every running worker.
        """
        for process in list(self.processes.values()):
            try:
                process.signalProcess(signum)
            except ProcessExitedAlready:  # its processEnded is on the way
                continue

    def reload(self) -> None:
        """
        SIGHUP: every worker reloads its configuration.
        """
        self.log.info("reload: passing SIGHUP to {count} workers", count=len(self.processes))
        self.signal(signal.SIGHUP)

    def stopService(self) -> Deferred[Any]:
        """
        SIGTERM every worker (each drains its calls) and fire once all have
        exited.
        """
        super().stopService()
        self.stopping = True
        for call in self.pending.values():
            if call.active():
                call.cancel()
        self.pending.clear()
        waits = [protocol.ended for protocol in self.protocols.values()]
        self.log.info("stopping: SIGTERM to {count} workers", count=len(waits))
        self.signal(signal.SIGTERM)
        done = DeferredList(waits) if waits else succeed(None)
        return done.addCallback(lambda _: self.log.info("all workers stopped"))


def _how(reason: Failure) -> str:
    value = reason.value
    if getattr(value, "signal", None):
        return f"was killed by signal {value.signal}"
    return f"exited with status {getattr(value, 'exitCode', None)}"


def make_supervisor(reactor: Any, options: Any, count: int) -> Supervisor:
    """
    The service of ``twistd ivr --workers N`` (``N`` > 1): bind, then the
    :class:`Supervisor`.

    :raises SystemExit: with one line, for a listener that cannot be bound
    """
    from ivrproto.checks import load_prompts
    from ivrproto.errors import ConfigError
    from ivrproto.wiring import checked_config

    config = options.config
    ac = config.audio_connector
    try:
        # The checks each worker's service makes (prompts, admin, intake
        # protection), here, before anything binds: a bad file stops the
        # start with one line rather than workers that keep dying.
        checked_config(reactor, config, options["intake"], None, None)
        if ac.enabled:
            load_prompts(config)
    except ConfigError as e:
        raise SystemExit(f"ivrproto: bad configuration: {e}") from None
    try:
        listeners = bind_listeners(
            reactor, count, options["intake"] or config.intake.listen, config.admin.listen,
            ac.listen if ac.enabled else None,
        )
    except CannotListen as e:
        raise SystemExit(str(e)) from None
    command = [sys.executable, "-c", TWISTD, "-n", "--pidfile=", "ivr"]
    if options["config"]:
        command += ["--config", os.path.abspath(options["config"])]
    if options["log-format"]:
        command += ["--log-format", options["log-format"]]

    def give_up() -> None:
        # twistd has no exit status of its own: exit 1 once it has shut down.
        atexit.register(lambda: (sys.stdout.flush(), sys.stderr.flush(), os._exit(1)))
        reactor.stop()

    supervisor = Supervisor(
        reactor, command, listeners, os.environ, on_give_up=give_up, logging=config.logging
    )
    if hasattr(signal, "SIGHUP"):
        signal.signal(signal.SIGHUP, lambda signum, frame: reactor.callFromThread(supervisor.reload))
    reactor.addSystemEventTrigger("after", "startup", _install_stop_signals, reactor)
    return supervisor


def _install_stop_signals(reactor: Any) -> None:
    """
    SIGTERM and SIGINT stop the supervisor (which waits for its workers),
    once; and it exits 0 afterwards, where twistd's own handlers would have
    it kill itself with the signal.
    """
    stopping: list[int] = []

    def stop(signum: int, frame: Any) -> None:
        if stopping:
            Supervisor.log.info("signal {signum} again: already stopping", signum=signum)
            return
        stopping.append(signum)
        Supervisor.log.info("signal {signum}: stopping the workers", signum=signum)
        reactor.callFromThread(reactor.stop)

    for number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(number, stop)
