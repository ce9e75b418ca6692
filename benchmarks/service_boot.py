"""
Starts the service for a benchmark: exactly ``twistd`` (``python
benchmarks/service_boot.py -n --pidfile= ivr --config FILE`` is ``twistd -n
--pidfile= ivr --config FILE``), with two additions that change nothing in
the service itself:

- the open-file limit is raised to the hard limit (live sessions);
- the garbage collector's pauses and the reactor's lag are timed
  (:mod:`stallwatch`: a ``gc.callbacks`` hook, and a timer every 10 ms)
  and written as JSON, when the process exits, to the file named by
  ``IVR_BENCH_GC_FILE``; SIGUSR2 forgets what was timed so far (run.py
  sends it when the measured window starts).

Neither touches the service's code.
"""

from __future__ import annotations

import os
import resource
import sys

import stallwatch


def main() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    path = os.environ.get("IVR_BENCH_GC_FILE")
    if path:
        from twisted.internet import reactor  # the default one, as twistd's

        write = stallwatch.watch(path, reactor)
        # twistd ends a process stopped by a signal by sending itself that
        # signal again (no atexit then): write first.
        from twisted.application import app

        exit_with_signal = app._exitWithSignal

        def write_then_exit(sig: int) -> None:
            write()
            exit_with_signal(sig)

        app._exitWithSignal = write_then_exit
    from twisted.scripts.twistd import run

    sys.argv[0] = "twistd"
    run()


if __name__ == "__main__":
    main()
