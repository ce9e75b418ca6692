"""
``run.py compare``: several services at the same offered rates, back to back
in one sitting, and one table of them side by side with their ratios.

    python benchmarks/run.py compare --rate 100,300 --services ivrproto,floor,seed-node

Each (rate, service) is an ordinary ``rate`` run (the same emulator, load
generator and measurements); with ``--rounds N`` the services are
interleaved N times, the order rotated each round, and the table shows the
median of the rounds.  Ratios are against ``seed-node`` (the seed's logic in
one Node.js process) and ``floor`` (the bare libraries), when they ran.
"""

from __future__ import annotations

import statistics
from typing import Any, Optional

#: What --services accepts, and the name run.py's --service uses.
ALIASES = {"ivrproto": "ivr", "ivr": "ivr", "floor": "floor", "seed-node": "seed-node",
           "seed": "seed-node", "node": "seed-node"}
#: How each service is named in the table.
TITLES = {"ivr": "ivrproto", "floor": "floor", "seed-node": "seed-node"}
#: The emulator's CPU share above which the platform side limits the run.
PLATFORM_BOUND = 90.0
#: A load generator this late (p99, ms) offered less than was asked, in bursts.
LATE_LAG_MS = 20.0
#: CPU% of a core taken by processes other than the benchmark's.
CROWDED = 10.0


def parse_services(text: str) -> list[str]:
    out = []
    for part in text.split(","):
        name = ALIASES.get(part.strip().lower())
        if name is None:
            raise ValueError(f"unknown service {part.strip()!r} (ivrproto, floor, seed-node)")
        if name not in out:
            out.append(name)
    return out


def parse_rates(text: str) -> list[float]:
    rates = [float(part) for part in text.split(",") if part.strip()]
    if not rates or any(r <= 0 for r in rates):
        raise ValueError("--rate must be positive numbers, comma-separated")
    return rates


def plan(rates: list[float], services: list[str], rounds: int) -> list[tuple[float, str]]:
    """
    The runs in order: per rate, ``rounds`` rounds of every service, the
    order rotated each round (so drift of the machine does not always
    favour the same one).
    """
    out = []
    for rate in rates:
        for r in range(rounds):
            k = r % len(services)
            for service in services[k:] + services[:k]:
                out.append((rate, service))
    return out


def _median(values: list[Optional[float]]) -> Optional[float]:
    vals = [v for v in values if v is not None]
    return round(statistics.median(vals), 3) if vals else None


def _p99(run: dict[str, Any], key: str) -> Optional[float]:
    return (run["latency_ms"].get(key) or {}).get("p99")


def _row(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """
    One service at one rate: the median over its rounds.
    """
    def proc(run: dict[str, Any], name: str) -> Optional[float]:
        return run["processes"].get(name, {}).get("cpu_percent")

    def other(run: dict[str, Any]) -> Optional[float]:
        vals = [c.get("other_percent") for c in (run.get("cores") or {}).values()]
        vals = [v for v in vals if v is not None]
        return max(vals) if vals else None

    def stall(run: dict[str, Any], kind: str, key: str) -> Optional[float]:
        gc = run["processes"].get("service0", {}).get("gc") or {}
        return (gc.get(kind) or {}).get(key)

    return {
        "rounds": len(runs),
        "offered": sum(r["offered"] for r in runs),
        "completed_ok": sum(r["completed_ok"] for r in runs),
        "errors": sum(r["error_count"] for r in runs),
        "degraded": sum(r.get("degraded_count") or 0 for r in runs),
        "achieved_rate": _median([r["achieved_rate"] for r in runs]),
        "cpu_ms_per_call": _median([r["service_cpu_ms_per_call"] for r in runs]),
        "first_play_p99_ms": _median([_p99(r, "intake_to_first_play") for r in runs]),
        "dtmf_p99_ms": _median([_p99(r, "dtmf_to_next_command") for r in runs]),
        "service_cpu_percent": _median([proc(r, "service0") for r in runs]),
        "emulator_cpu_percent": _median([proc(r, "emulator0") for r in runs]),
        "emulator_cpu_ms_per_call": _median([r.get("emulator_cpu_ms_per_call") for r in runs]),
        "loadgen_lag_p99_ms": _median([_p99(r, "loadgen_schedule_lag") for r in runs]),
        "other_load_percent": _median([other(r) for r in runs]),
        # the service's own event loop: how late its timers ran, and its
        # garbage collector's pauses (benchmarks/stallwatch.py, server.js)
        "loop_lag_p99_ms": _median([stall(r, "loop_lag", "p99_ms") for r in runs]),
        "loop_lag_max_ms": _median([stall(r, "loop_lag", "max_ms") for r in runs]),
        "gc_pause_p99_ms": _median([stall(r, "pauses", "p99_ms") for r in runs]),
        "gc_pause_max_ms": _median([stall(r, "pauses", "max_ms") for r in runs]),
    }


def _ratio(a: Optional[float], b: Optional[float]) -> Optional[float]:
    return round(a / b, 2) if a and b else None


def summarize(runs: list[dict[str, Any]], services: list[str]) -> dict[str, Any]:
    """
    Per rate, per service: the row, and its ratios to seed-node and floor.
    """
    by_rate: dict[str, Any] = {}
    for rate in sorted({r["target_rate"] for r in runs}):
        rows = {}
        for service in services:
            mine = [r for r in runs if r["target_rate"] == rate and r["service"] == service]
            if mine:
                rows[service] = _row(mine)
        for row in rows.values():
            for base in ("seed-node", "floor"):
                if base in rows:
                    ref = rows[base]
                    row[f"x_{base}"] = {
                        "cpu_ms_per_call": _ratio(row["cpu_ms_per_call"], ref["cpu_ms_per_call"]),
                        "first_play_p99": _ratio(row["first_play_p99_ms"], ref["first_play_p99_ms"]),
                        "dtmf_p99": _ratio(row["dtmf_p99_ms"], ref["dtmf_p99_ms"]),
                    }
        platform_bound = [
            TITLES[s] for s, row in rows.items()
            if (row["emulator_cpu_percent"] or 0) >= PLATFORM_BOUND
            or (row["loadgen_lag_p99_ms"] or 0) > LATE_LAG_MS
        ]
        crowded = [
            TITLES[s] for s, row in rows.items() if (row["other_load_percent"] or 0) > CROWDED
        ]
        by_rate[f"{rate:g}"] = {"rows": rows, "platform_bound": platform_bound, "crowded": crowded}
    return by_rate


def _f(v: Any, digits: int = 2) -> str:
    if v is None:
        return "-"
    return f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def render(summary: dict[str, Any], platform_note: str) -> str:
    head = (f"   {'service':<10}{'done/offered':>14}{'err':>5}{'degr':>5}{'ms CPU/call':>12}"
            f"{'x seed':>8}{'x floor':>8}{'p99 play':>10}{'x seed':>8}{'p99 dtmf':>10}"
            f"{'x seed':>8}{'loop lag p99/max':>18}{'GC p99/max':>14}"
            f"{'svc CPU%':>9}{'emu CPU%':>9}{'emu ms':>8}{'gen lag':>8}{'other%':>8}")
    lines = ["== compare: side by side (median of rounds; latencies in ms; x = ratio)"]
    for rate, block in summary.items():
        lines.append(f"-- offered {rate} calls/s")
        lines.append(head)
        for service, row in block["rows"].items():
            seed = row.get("x_seed-node") or {}
            floor = row.get("x_floor") or {}
            lines.append(
                f"   {TITLES[service]:<10}{row['completed_ok']:>8}/{row['offered']:<5}"
                f"{row['errors']:>5}{row['degraded']:>5}{_f(row['cpu_ms_per_call'], 3):>12}"
                f"{_f(seed.get('cpu_ms_per_call')):>8}{_f(floor.get('cpu_ms_per_call')):>8}"
                f"{_f(row['first_play_p99_ms'], 1):>10}{_f(seed.get('first_play_p99')):>8}"
                f"{_f(row['dtmf_p99_ms'], 1):>10}{_f(seed.get('dtmf_p99')):>8}"
                f"{_f(row['loop_lag_p99_ms'], 1) + '/' + _f(row['loop_lag_max_ms'], 1):>18}"
                f"{_f(row['gc_pause_p99_ms'], 1) + '/' + _f(row['gc_pause_max_ms'], 1):>14}"
                f"{_f(row['service_cpu_percent'], 1):>9}{_f(row['emulator_cpu_percent'], 1):>9}"
                f"{_f(row['emulator_cpu_ms_per_call'], 2):>8}"
                f"{_f(row['loadgen_lag_p99_ms'], 1):>8}{_f(row['other_load_percent'], 1):>8}"
            )
        if block["platform_bound"]:
            lines.append(
                f"   the platform side limited the run of {', '.join(block['platform_bound'])}: the "
                f"emulator used >= {PLATFORM_BOUND:g}% of its core or the load generator ran "
                f"over {LATE_LAG_MS:g} ms late (p99), so those figures (latency tails above "
                "all) are partly the emulator's, not the service's")
        if block["crowded"]:
            lines.append(
                f"   other jobs took over {CROWDED:g}% of a core during the run of "
                f"{', '.join(block['crowded'])}: compare with care, or run again")
    lines.append(f"   platform side: {platform_note}")
    lines.append("   loop lag = how late the service's 10 ms probe timer fired; GC = its garbage "
                 "collector's pauses (every generation); emu ms = emulator CPU per call; gen lag = "
                 "the load generator's p99 delay")
    lines.append("   other% = CPU used on a core by anything but the process pinned there "
                 "(another job on the machine spoils a run: run it again)")
    return "\n".join(lines)

