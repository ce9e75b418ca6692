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

from ivrproto.workers.sockets import (
    MAX_WORKERS,
    WORKERS_ENV,
    AdoptingReactor,
    WorkerListener,
    adopted,
    bind_listeners,
    parse_workers,
    watch_supervisor,
    worker_spec,
)
from ivrproto.workers.supervisor import Backoff, Supervisor, make_supervisor

__all__ = [
    "MAX_WORKERS",
    "WORKERS_ENV",
    "AdoptingReactor",
    "Backoff",
    "Supervisor",
    "WorkerListener",
    "adopted",
    "bind_listeners",
    "make_supervisor",
    "parse_workers",
    "watch_supervisor",
    "worker_spec",
]
