"""
The sockets of ``twistd ivr --workers N``: bound once by the supervisor,
handed to each worker as inherited file descriptors (``--worker SPEC``), and
adopted there by :class:`AdoptingReactor` in place of a bind.
"""

from __future__ import annotations

import json
import os
import re
import socket
from collections.abc import Mapping
from typing import Any

import attrs
from twisted.internet.endpoints import serverFromString
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from zope.interface import directlyProvides, providedBy

from ivrproto.listeners import listen_now

#: The environment variable standing in for ``--workers``.
WORKERS_ENV = "IVR_WORKERS"
#: The largest ``--workers``.
MAX_WORKERS = 64
#: The first file descriptor a worker finds its sockets at.
FIRST_FD = 3

def parse_workers(value: str | None, origin: str) -> int:
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
    reactor: Any, count: int, intake: str, admin: str, audio_connector: str | None
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


def adopted(reactor: Any, spec: str) -> tuple[AdoptingReactor, dict[str, str | None], int]:
    """
    A worker's side of ``--worker SPEC`` (see also :func:`watch_supervisor`).

    :return: the reactor for its service, the ``IVRService`` listener
        arguments (``intake``, ``admin``, ``audio_connector``) and its index
    """
    decoded = json.loads(spec)
    sockets: dict[tuple[int, str], tuple[int, int]] = {}
    listen: dict[str, str | None] = {}
    for name in ("intake", "admin", "audio_connector"):
        if name not in decoded:
            continue
        fd, family, description, port, host = decoded[name]
        sockets[(port, host)] = (fd, family)
        listen[name] = description
    return AdoptingReactor(reactor, sockets), listen, int(decoded["index"])


class _SupervisorPipe(Protocol):
    """
    The read end of the supervisor's pipe: it never writes; its end means
    the supervisor has gone.
    """

    log = Logger()

    def __init__(self, reactor: Any) -> None:
        self.reactor = reactor

    def connectionLost(self, reason: Any = None) -> None:
        if self.reactor.running:
            self.log.warn("the supervisor has gone: stopping")
            self.reactor.stop()


def watch_supervisor(reactor: Any, fd: int = 0) -> Any:
    """
    Stop the reactor when ``fd`` (the supervisor's pipe) reaches its end: a
    worker watches its standard input, a pipe from the supervisor, and when
    the supervisor is gone (even killed with SIGKILL) the worker stops
    (draining its calls) instead of serving on alone.
    """
    from twisted.internet.stdio import StandardIO

    # StandardIO also wants somewhere to write: nowhere, here (the log has
    # standard output).  (mypy sees the Windows StandardIO, without stdin.)
    nowhere = os.open(os.devnull, os.O_WRONLY)
    return StandardIO(
        _SupervisorPipe(reactor), stdin=fd, stdout=nowhere, reactor=reactor  # type: ignore[call-arg]
    )
