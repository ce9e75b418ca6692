"""
``twistd ivr --workers N``: N worker processes on one listening port.

The supervisor (the process twistd started) binds every listener once,
before twistd daemonizes, so that a port that cannot be bound is one line on
stderr and exit status 1 as for a single process.  It then starts each worker
as ``twistd -n ivr ... --worker SPEC`` (with this Python), handing it the bound
sockets as inherited file descriptors; the worker adopts them
(``adoptStreamPort``) instead of binding.  The kernel spreads the intake's
(and the Audio Connector's) connections over the workers that accept on the
one socket, and connections waiting in its queue survive a worker's death.

A socket passed down works on every Unix and keeps the bind in one place;
``SO_REUSEPORT`` (one bind per worker) is Linux- and BSD-specific with
different semantics, drops the connections queued on a dying worker's
socket, and Twisted's ``tcp:`` endpoints do not offer it.

The admin listener is per worker, since ``/metrics`` and ``/v1/stats`` count
one process: worker ``i`` listens on the ``[admin] listen`` port plus ``i``
(each on a free port of its own when that port is 0), and the supervisor logs
each worker's admin address.  ``[admin] listen = "intake"`` serves the admin
routes on the shared intake, from whichever worker takes the connection.

The supervisor passes SIGTERM (drain) and SIGHUP (reload) to every worker,
restarts a worker that dies (after a backoff, at most
:attr:`Backoff.max_per_minute` restarts in any minute, then it gives up:
it stops the others and exits 1), and exits once every worker has stopped.
"""

from __future__ import annotations

import atexit
import json
import os
import re
import signal
import socket
import sys
from typing import Any, Callable, Mapping, Optional

import attrs
from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.internet.endpoints import serverFromString
from twisted.internet.protocol import Factory, ProcessProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import directlyProvides, providedBy

from ivrproto.listeners import CannotListen, listen_now

__all__ = [
    "WORKERS_ENV",
    "AdoptingReactor",
    "Backoff",
    "Supervisor",
    "WorkerListener",
    "adopted",
    "bind_listeners",
    "make_supervisor",
    "parse_workers",
]

#: The environment variable standing in for ``--workers``.
WORKERS_ENV = "IVR_WORKERS"
#: The largest ``--workers``.
MAX_WORKERS = 64
#: The first file descriptor a worker finds its sockets at.
FIRST_FD = 3
#: How a worker is started: twistd, in the foreground.
TWISTD = "from twisted.scripts.twistd import run; run()"


#: The timestamp twistd starts a text log line with.
_TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[^ ]* ")


def parse_workers(value: Optional[str], origin: str) -> int:
    """
    ``--workers`` (or :data:`WORKERS_ENV`) as a count.

    :raises SystemExit: with one line naming ``origin`` when it is not a
        whole number from 1 to :data:`MAX_WORKERS`
    """
    if value is None or value == "":
        return 1
    try:
        count = int(value)
    except ValueError:
        count = 0
    if not 1 <= count <= MAX_WORKERS:
        raise SystemExit(f"bad {origin}: {value!r} must be a whole number from 1 to {MAX_WORKERS}")
    return count


@attrs.frozen
class WorkerListener:
    """
    A socket the supervisor bound for a worker.

    :ivar listener: ``intake``, ``admin`` or ``audio_connector`` (the
        :class:`~ivrproto.service.IVRService` argument it stands in for)
    :ivar description: a ``tcp:``/``tcp6:`` description of where it is bound
    :ivar family: ``AF_INET`` or ``AF_INET6``
    :ivar fd: the supervisor's file descriptor
    """

    listener: str
    description: str
    family: int
    fd: int
    host: str
    port: int
    #: The supervisor's listening port, kept open (and referenced: the
    #: socket closes when it is collected).
    listening: Any = attrs.field(eq=False, repr=False, default=None)


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


def _description(kind: str, host: str, port: int) -> str:
    return f"{kind}:{port}:interface={host.replace(':', chr(92) + ':')}"


def _bind(reactor: Any, listener: str, name: str, description: str) -> WorkerListener:
    """
    Bind ``description`` in this process, without accepting on it.

    :raises CannotListen: when it cannot be bound
    :raises SystemExit: when it is not a ``tcp``/``tcp6`` endpoint
    """
    from twisted.internet.tcp import Port

    port = listen_now(name, description, serverFromString(reactor, description).listen(Factory()))
    bound: list[Any] = []
    port.addCallback(bound.append)
    listening = bound[0]
    if not isinstance(listening, Port):
        listening.stopListening()
        raise SystemExit(
            f"ivrproto: --workers needs tcp or tcp6 listeners; the {name} is {description!r}"
        )
    listening.stopReading()  # the workers accept, never the supervisor
    host = listening.getHost()
    kind = "tcp6" if listening.addressFamily == socket.AF_INET6 else "tcp"
    return WorkerListener(
        listener, _description(kind, host.host, host.port), listening.addressFamily,
        listening.fileno(), host.host, host.port, listening,
    )


def bind_listeners(
    reactor: Any, count: int, intake: str, admin: str, audio_connector: Optional[str]
) -> list[dict[str, WorkerListener]]:
    """
    Bind the shared intake (and Audio Connector) once and one admin listener
    per worker.

    :return: for each worker, its listeners by :class:`WorkerListener.listener`
    :raises CannotListen: naming the listener that cannot be bound
    """
    shared = {"intake": _bind(reactor, "intake", "intake", intake)}
    if audio_connector:
        shared["audio_connector"] = _bind(
            reactor, "audio_connector", "Audio Connector", audio_connector
        )
    workers = [dict(shared) for _ in range(count)]
    if admin == "intake":
        return workers
    first = _bind(reactor, "admin", "admin listener", admin)
    workers[0]["admin"] = first
    kind = first.description.partition(":")[0]
    base = 0 if _asks_any_port(admin) else first.port
    for index in range(1, count):
        description = _description(kind, first.host, base and base + index)
        workers[index]["admin"] = _bind(
            reactor, "admin", f"admin listener of worker {index}", description
        )
    return workers


def _asks_any_port(description: str) -> bool:
    """
    Whether a ``tcp``/``tcp6`` description asks for any free port (port 0).
    """
    fields = re.split(r"(?<!\\):", description)[1:]
    positional = [f for f in fields if "=" not in f]
    named = [f.partition("=")[2] for f in fields if f.startswith("port=")]
    return (positional[:1] or named[:1]) == ["0"]


def worker_spec(index: int, listeners: Mapping[str, WorkerListener]) -> tuple[str, dict[int, Any]]:
    """
    The ``--worker`` argument of worker ``index`` and the ``childFDs`` that
    give it its sockets.
    """
    spec: dict[str, Any] = {"index": index}
    fds: dict[int, Any] = {0: "w", 1: "r", 2: "r"}
    for offset, (name, listener) in enumerate(sorted(listeners.items())):
        fds[FIRST_FD + offset] = listener.fd
        spec[name] = [
            FIRST_FD + offset, listener.family, listener.description, listener.port, listener.host,
        ]
    return json.dumps(spec, sort_keys=True), fds


class AdoptingReactor:
    """
    The reactor as a worker's service sees it: ``listenTCP`` on an address
    the supervisor bound adopts the inherited socket instead of binding; every
    other call goes to the reactor.

    :param sockets: ``(port, interface)`` to ``(fd, family)``
    """

    def __init__(self, reactor: Any, sockets: Mapping[tuple[int, str], tuple[int, int]]) -> None:
        self._reactor = reactor
        self._sockets = dict(sockets)
        directlyProvides(self, *providedBy(reactor))

    def listenTCP(self, port: int, factory: Any, backlog: int = 50, interface: str = "") -> Any:
        adopted = self._sockets.get((port, interface))
        if adopted is None:
            return self._reactor.listenTCP(port, factory, backlog, interface)
        fd, family = adopted
        return self._reactor.adoptStreamPort(fd, family, factory)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._reactor, name)


def adopted(reactor: Any, spec: str) -> tuple[AdoptingReactor, dict[str, Optional[str]], int]:
    """
    A worker's side of ``--worker SPEC``.

    :return: the reactor for its service, the ``IVRService`` listener
        arguments (``intake``, ``admin``, ``audio_connector``) and its index
    """
    decoded = json.loads(spec)
    sockets: dict[tuple[int, str], tuple[int, int]] = {}
    listen: dict[str, Optional[str]] = {}
    for name in ("intake", "admin", "audio_connector"):
        if name not in decoded:
            continue
        fd, family, description, port, host = decoded[name]
        sockets[(port, host)] = (fd, family)
        listen[name] = description
    return AdoptingReactor(reactor, sockets), listen, int(decoded["index"])


class _WorkerProtocol(ProcessProtocol):
    """
    One worker process: its output goes to the supervisor's log, a line at a
    time, prefixed with the worker's index.
    """

    def __init__(self, supervisor: "Supervisor", index: int) -> None:
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
        # The supervisor logs as a single process would (see
        # IVRService.setServiceParent): the configured format, where twistd logs.
        from twisted.logger import ILogObserver
        from twisted.python.components import Componentized

        from ivrproto.logs import file_observer, json_observer

        logging = self.logging
        if isinstance(parent, Componentized) and logging is not None:
            if logging.log_file is not None:
                parent.setComponent(ILogObserver, file_observer(logging.log_file(), logging.format))
            elif logging.format == "json":
                parent.setComponent(ILogObserver, json_observer())
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
        # (A text line's own timestamp goes: the supervisor's log adds one.)
        text = _TIMESTAMP.sub("", line.decode("utf-8", "replace").rstrip("\r"), count=1)
        if text:
            self.log.info("worker {index}: {line}", index=index, line=text)

    def ended(self, index: int, protocol: _WorkerProtocol, reason: Failure) -> None:
        """
        Worker ``index`` exited: start it again, unless stopping or it
        keeps dying.
        """
        process = self.processes.pop(index, None)
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
            except Exception:  # gone already: its processEnded is on the way
                pass

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
    config = options.config
    ac = config.audio_connector
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
