"""
What makes a benchmarked Python service's event loop run late, timed from
inside the process: every garbage collection's pause (a ``gc.callbacks``
hook, two clock reads per collection) and the reactor's lag (a timer every
:data:`PROBE_INTERVAL` seconds notes how late it fired).

:func:`watch` starts both and writes the summary (counts, p50, p99, max) as
JSON, when the process exits, to the file it is given; SIGUSR2 forgets what
was timed so far (run.py sends it when the measured window starts).
``service_boot.py`` (``twistd ivr``) and ``floor.py`` use it; seed-node's
``server.js`` writes the same summary from V8's own figures.
"""

from __future__ import annotations

import atexit
import gc
import json
import signal
import time
from typing import Any, Callable, Optional

#: Seconds between two lag probes (100 a second: about 0.05% of a core).
PROBE_INTERVAL = 0.01


def _quantile(values: list[float], q: float) -> Optional[float]:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _ms(value: Optional[float], digits: int = 2) -> Optional[float]:
    return None if value is None else round(value * 1000.0, digits)


def distribution(values: list[float]) -> dict[str, Any]:
    """
    :param values: durations in seconds
    :return: their count, p50, p99 and max in milliseconds
    """
    return {
        "count": len(values),
        "p50_ms": _ms(_quantile(values, 0.50)),
        "p99_ms": _ms(_quantile(values, 0.99)),
        "max_ms": _ms(max(values) if values else None),
    }


class StallWatch:
    """
    The garbage collector's pauses and the reactor's lag of this process.
    """

    def __init__(self) -> None:
        self.pauses: dict[int, list[float]] = {0: [], 1: [], 2: []}
        self.lags: list[float] = []
        self._started = 0.0
        self._due = 0.0

    def gc_callback(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.pauses[info["generation"]].append(time.perf_counter() - self._started)

    def probe(self, reactor: Any) -> None:
        """Note how late this probe came, and schedule the next one."""
        now = time.perf_counter()
        if self._due:
            self.lags.append(max(0.0, now - self._due))
        self._due = now + PROBE_INTERVAL
        reactor.callLater(PROBE_INTERVAL, self.probe, reactor)

    def reset(self, *_: Any) -> None:
        for v in self.pauses.values():
            v.clear()
        self.lags.clear()

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for g, v in self.pauses.items():
            out[f"gen{g}"] = {
                "count": len(v),
                "max_ms": _ms(max(v) if v else None),
                "total_ms": round(sum(v) * 1000.0, 1),
                "over_5ms": sum(1 for x in v if x > 0.005),
            }
        out["pauses"] = distribution([x for v in self.pauses.values() for x in v])
        out["loop_lag"] = distribution(self.lags)
        out["loop_lag"]["probe_interval_ms"] = PROBE_INTERVAL * 1000.0
        out["thresholds"] = list(gc.get_threshold())
        return out


def watch(path: str, reactor: Any) -> Callable[[], None]:
    """
    Time this process's collections and reactor lag until it exits.

    :param path: where the JSON summary goes
    :param reactor: the reactor to probe (probing starts when it runs)
    :return: writes the summary now (for an exit that skips ``atexit``)
    """
    stalls = StallWatch()
    gc.callbacks.append(stalls.gc_callback)
    signal.signal(signal.SIGUSR2, stalls.reset)
    reactor.callWhenRunning(stalls.probe, reactor)

    def write() -> None:
        with open(path, "w") as f:
            json.dump(stalls.summary(), f)

    atexit.register(write)
    return write
