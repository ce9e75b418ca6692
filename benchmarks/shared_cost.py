#!/usr/bin/env python3
"""
The cost of shared state: the rate benchmark of ``benchmarks/run.py`` run
twice in one go, first with the in-memory default, then with ``[shared]``
on a ``redis-server`` this script starts (on the emulator's core, so that
the service's core is not shared with it), and the two side by side: the
service's CPU per call, the p99 latencies, and Redis's own CPU.

    python benchmarks/shared_cost.py --rate 100 --duration 30

Every call then costs the service up to five Redis round trips (the shared
cache read, the shared rate limit, the cache write, the intake's claim and
the outcome written at the end).  Loopback only.  See ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Optional

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import run  # noqa: E402  (benchmarks/run.py: the harness reused as it is)
from tests.redis_server import RedisServer  # noqa: E402


def parse_args(argv: Optional[list[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=100.0, help="calls per second offered")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of measured load")
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--repeat-callers", type=float, default=0.0, metavar="FRACTION")
    parser.add_argument("--out", default=str(HERE / "results"))
    return parser.parse_args(argv)


def _row(label: str, a: Any, b: Any, unit: str = "") -> str:
    def cell(v: Any) -> str:
        return "-" if v is None else f"{v}{unit}"

    return f"  {label:<34} {cell(a):>14} {cell(b):>14}"


def _p99(result: dict[str, Any], key: str) -> Any:
    return result.get("latency_ms", {}).get(key, {}).get("p99")


def main(argv: Optional[list[str]] = None) -> int:
    a = parse_args(argv)
    common = [
        "--duration", str(a.duration), "--warmup", str(a.warmup),
        "--repeat-callers", str(a.repeat_callers), "--out", a.out,
    ]
    o = run.parse_args(["rate", "--rate", str(a.rate), *common])
    run.raise_nofile()
    print(f"shared-state cost at {a.rate:g} calls/s, {a.duration:g}s each", flush=True)
    memory = run.run_once(o, "rate", 1, 1, f"in-memory {a.rate:g}/s")
    redis = RedisServer()
    redis.start()
    try:
        _, emu_cores, _ = run.placement(1, 1)
        if emu_cores[0] and redis.pid:
            os.sched_setaffinity(redis.pid, emu_cores[0])
        os.environ["IVR_REDIS_URL"] = redis.url
        os.environ["IVR_REDIS_KEY_SALT"] = "benchmark"
        before = run.cpu_ticks(redis.pid) if redis.pid else None
        shared = run.run_once(o, "rate", 1, 1, f"redis {a.rate:g}/s")
        after = run.cpu_ticks(redis.pid) if redis.pid else None
    finally:
        os.environ.pop("IVR_REDIS_URL", None)
        os.environ.pop("IVR_REDIS_KEY_SALT", None)
        redis.cleanup()
    redis_cpu = None if before is None or after is None else (after - before) / run.CLK_TCK
    done = shared.get("transferred_in_window") or 0
    print(run.table(memory), flush=True)
    print(run.table(shared), flush=True)
    print(f"== the cost of sharing at {a.rate:g} calls/s offered")
    print(f"  {'':<34} {'in-memory':>14} {'redis':>14}")
    print(_row("achieved calls/s", memory.get("achieved_rate"), shared.get("achieved_rate")))
    print(_row("service CPU per call", memory.get("service_cpu_ms_per_call"),
               shared.get("service_cpu_ms_per_call"), " ms"))
    for key, label in (("intake_to_first_play", "intake -> first play p99"),
                       ("dtmf_to_next_command", "dtmf -> next command p99")):
        print(_row(label, _p99(memory, key), _p99(shared, key), " ms"))
    print(_row("degraded calls", memory.get("degraded_count"), shared.get("degraded_count")))
    print(_row("errors", memory.get("error_count"), shared.get("error_count")))
    if redis_cpu is not None:
        per_call = round(redis_cpu / done * 1000.0, 3) if done else None
        print(_row("redis-server CPU (whole run)", "", f"{redis_cpu:.2f}", " s"))
        print(_row("redis-server CPU per call", "", per_call, " ms"))
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = Path(a.out) / f"shared-cost-{stamp}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(
        {"command": "python benchmarks/shared_cost.py " + " ".join(argv or sys.argv[1:]),
         "in_memory": memory, "redis": shared, "redis_cpu_seconds": redis_cpu}, indent=2))
    print(f"results: {path}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
