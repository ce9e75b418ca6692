"""
Starts the service for a benchmark: exactly ``twistd`` (``python
benchmarks/service_boot.py -n --pidfile= ivr --config FILE`` is ``twistd -n
--pidfile= ivr --config FILE``), with two additions that change nothing in
the service itself:

- the open-file limit is raised to the hard limit (live sessions);
- the garbage collector's pauses are timed (a ``gc.callbacks`` hook: two
  clock reads per collection) and written as JSON, when the process exits,
  to the file named by ``IVR_BENCH_GC_FILE``; SIGUSR2 forgets the pauses
  timed so far (run.py sends it when the measured window starts).

Neither touches the service's code.
"""

from __future__ import annotations

import atexit
import gc
import json
import os
import resource
import signal
import sys
import time


def main() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    path = os.environ.get("IVR_BENCH_GC_FILE")
    if path:
        pauses: dict[int, list[float]] = {0: [], 1: [], 2: []}
        started = [0.0]

        def callback(phase: str, info: dict) -> None:
            if phase == "start":
                started[0] = time.perf_counter()
            else:
                pauses[info["generation"]].append(time.perf_counter() - started[0])

        gc.callbacks.append(callback)

        def reset(signum: int, frame: object) -> None:
            for v in pauses.values():
                v.clear()

        # SIGUSR2 (sent by run.py when the measured window starts): forget
        # the pauses so far (start-up, warm-up)
        signal.signal(signal.SIGUSR2, reset)

        def write() -> None:
            summary = {
                f"gen{g}": {
                    "count": len(v),
                    "max_ms": round(max(v) * 1000.0, 2) if v else None,
                    "total_ms": round(sum(v) * 1000.0, 1),
                    "over_5ms": sum(1 for x in v if x > 0.005),
                }
                for g, v in pauses.items()
            }
            summary["thresholds"] = list(gc.get_threshold())
            with open(path, "w") as f:
                json.dump(summary, f)

        atexit.register(write)
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
