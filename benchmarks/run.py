#!/usr/bin/env python3
"""
ivrproto benchmarks: one command per figure of the issue.

    python benchmarks/run.py rate  --rate 500 --duration 60
    python benchmarks/run.py live  --calls 10000
    python benchmarks/run.py scale --rate 800 --duration 30 --services 2

Each run starts the service (``twistd -n ivr``) as its own process, pinned
to one core, and the platform emulator with the load generator
(``benchmarks/loadgen.py``) as another, pinned to the other core; offers
calls to the service's intake, measures at the platform side, prints a
table and writes ``benchmarks/results/<name>-<timestamp>.json``.

Everything talks over 127.0.0.1 only.  See ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform as _platform
import queue
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any, Optional

import compare
import nodeservice

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SEED = REPO / "examples" / "seed.toml"
LOADGEN = HERE / "loadgen.py"
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024

CLIENT_ID = "ivrproto-bench"
CLIENT_SECRET = "bench-secret"

#: The issue's targets, for the verdict column.
TARGETS = {
    "rate": 500.0,
    "first_play_p99_ms": 20.0,
    "dtmf_p99_ms": 5.0,
    "live_sessions": 10000,
    "kb_per_session": 20.0,
    "scale": 1.8,
}

#: Only loopback, ever: no proxy from the environment.
_HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))


# -- processes ---------------------------------------------------------------------


def raise_nofile() -> int:
    """
    Raise this process's open-file limit to the hard limit (inherited by
    the processes it starts).
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_ticks(pid: int) -> Optional[int]:
    """
    utime + stime of a process, in clock ticks (``/proc/<pid>/stat``).
    """
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return int(fields[11]) + int(fields[12])


def core_ticks() -> dict[int, tuple[int, int, int]]:
    """
    Per core, from ``/proc/stat``: (busy, steal, total) clock ticks.  Steal
    is time the hypervisor gave this virtual core to someone else.
    """
    out: dict[int, tuple[int, int, int]] = {}
    try:
        with open("/proc/stat") as f:
            for line in f:
                if not line.startswith("cpu") or line.startswith("cpu "):
                    continue
                name, *values = line.split()
                v = [int(x) for x in values[:8]]
                user, nice, system, idle, iowait, irq, softirq, steal = v
                out[int(name[3:])] = (user + nice + system + irq + softirq, steal, sum(v))
    except (OSError, ValueError):
        pass
    return out


def proc_status(pid: int) -> dict[str, int]:
    """
    VmRSS, VmHWM... of ``/proc/<pid>/status``, in kB.
    """
    out: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("Vm"):
                    name, value = line.split(":", 1)
                    out[name] = int(value.split()[0])
    except OSError:
        pass
    return out


def fd_count(pid: int) -> Optional[int]:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


def http_json(url: str, timeout: float = 5.0) -> Any:
    assert url.startswith("http://127.0.0.1:"), url
    with _HTTP.open(url, timeout=timeout) as response:
        return json.loads(response.read())


def closing_stats(port: int) -> Optional[dict[str, Any]]:
    """
    :return: a service's ``GET /v1/stats`` after the run, or ``None`` when
        it does not answer within 30 s (a service swamped by a crowded
        machine: the run's figures still stand, its counters are missing)
    """
    try:
        return http_json(f"http://127.0.0.1:{port}/v1/stats", timeout=30.0)  # type: ignore[no-any-return]
    except OSError:
        return None


class Sampler(threading.Thread):
    """
    CPU ticks of every watched process, twice a second: the CPU% timeline.
    """

    def __init__(self, interval: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.interval = interval
        self.pids: dict[str, int] = {}
        self.samples: list[Any] = []
        self._stop = threading.Event()

    def snapshot(self) -> tuple[float, dict[str, Optional[int]], dict[int, tuple[int, int, int]]]:
        return (
            time.monotonic(),
            {name: cpu_ticks(pid) for name, pid in self.pids.items()},
            core_ticks(),
        )

    def run(self) -> None:
        while not self._stop.wait(self.interval):
            self.samples.append(self.snapshot())

    def stop(self) -> None:
        self._stop.set()

    def peak(self, name: str, start: float, end: float, span: float = 1.0) -> Optional[float]:
        """
        The highest CPU% of ``name`` over any ``span`` seconds within [start, end].
        """
        points = [(t, s.get(name)) for t, s, _ in self.samples if start <= t <= end]
        points = [(t, v) for t, v in points if v is not None]
        best = None
        j = 0
        for i in range(len(points)):
            while j < len(points) and points[j][0] - points[i][0] < span:
                j += 1
            if j >= len(points):
                break
            t0, v0 = points[i]
            t1, v1 = points[j]
            pct = (v1 - v0) / CLK_TCK / (t1 - t0) * 100.0
            best = pct if best is None else max(best, pct)
        return None if best is None else round(best, 1)


class Child:
    """
    A process of the benchmark: the service or the emulator.
    """

    def __init__(
        self,
        name: str,
        argv: list[str],
        env: dict[str, str],
        log: Path,
        cores: Optional[set[int]],
        pipes: bool = False,
    ) -> None:
        self.name = name
        self.log_path = log
        self._log = open(log, "wb")
        self.popen = subprocess.Popen(
            argv,
            env=env,
            cwd=str(REPO),
            stdin=subprocess.PIPE if pipes else subprocess.DEVNULL,
            stdout=subprocess.PIPE if pipes else self._log,
            stderr=self._log,
            start_new_session=True,
        )
        self.pid = self.popen.pid
        self.cores = cores
        if cores:
            os.sched_setaffinity(self.pid, cores)
        self.events: "queue.Queue[tuple[dict[str, Any], Any]]" = queue.Queue()

    def alive(self) -> bool:
        return self.popen.poll() is None

    def tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(text[-lines:])

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> None:
        if self.alive():
            try:
                self.popen.send_signal(sig)
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)
        if self.popen.stdin:
            try:
                self.popen.stdin.close()
            except OSError:
                pass
        self._log.close()


class Emulator(Child):
    """
    ``benchmarks/loadgen.py``: reads its JSON lines in a thread, and takes
    a CPU snapshot of every process the moment each line arrives.
    """

    def __init__(self, *args: Any, sampler: Sampler, **kwargs: Any) -> None:
        super().__init__(*args, pipes=True, **kwargs)
        self.sampler = sampler
        self.url: Optional[str] = None
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for raw in self.popen.stdout:
            snapshot = self.sampler.snapshot()
            try:
                event = json.loads(raw)
            except ValueError:
                continue
            self.events.put((event, snapshot))
        self.events.put(({"event": "exited"}, self.sampler.snapshot()))

    def send(self, line: str) -> None:
        assert self.popen.stdin is not None
        self.popen.stdin.write((line + "\n").encode("utf-8"))
        self.popen.stdin.flush()

    def next_event(self, timeout: float) -> tuple[dict[str, Any], Any]:
        try:
            return self.events.get(timeout=timeout)
        except queue.Empty:
            raise RunError(f"{self.name}: no word for {timeout:.0f}s") from None


class RunError(Exception):
    pass


# -- configuration -------------------------------------------------------------------


def service_config(port: int, *, live: bool, cache_size: int) -> str:
    """
    The service's config for a benchmark: the seed's menu, short calls, and
    no client-side profile rate limit.
    """
    seed = SEED.read_text()
    menu = seed[seed.index("\n[menu]") :]
    no_input = 600.0 if live else 10.0
    # live measures how many sessions one process holds: a full garbage
    # collection there stalls the process for up to a second, and with the
    # default max_loop_lag the calls arriving during and just after the
    # stall would be shed (README, "Capacity").  rate keeps the default.
    shed = "max_loop_lag = 5.0\n" if live else ""
    return f"""# written by benchmarks/run.py
[platform]
audio_base_url = "https://example.com/ivr/audio/"
# api_url, client_id and client_secret come from the environment

[intake]
listen = "tcp:{port}:interface=127.0.0.1:backlog=1024"
max_active_calls = 50000
outcome_retention = 30.0
drain_deadline = 1.0
{shed}
[admin]
# The intake is loopback only: /v1/stats (read below) is served on it.
listen = "intake"

[timing]
request_timeout = 5.0
handshake_timeout = 10.0
profile_budget = 0.8
no_input_timeout = {no_input}
menu_repeats = 2
confirm_delay = 0.05
max_invalid = 3

[profiles]
cache_ttl = 300.0
cache_size = {cache_size}
rate_per_minute = 100000000.0
breaker_failures = 50
{menu}"""


def child_env(extra: Optional[dict[str, str]] = None) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.lower().endswith("_proxy") and k not in ("IVR_INTAKE_SECRET",)
    }
    env["PYTHONPATH"] = os.pathsep.join(
        [str(REPO)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
    )
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env.update(extra or {})
    return env


# -- one run ---------------------------------------------------------------------------


def percentiles(values: list[float]) -> dict[str, Any]:
    """
    count, p50/p90/p99/max/mean (nearest rank), in milliseconds.
    """
    if not values:
        return {"count": 0, "p50": None, "p90": None, "p99": None, "max": None, "mean": None}
    ordered = sorted(values)
    n = len(ordered)

    def rank(p: float) -> float:
        index = max(0, min(n - 1, -(-int(p * n) // 100) - 1))
        return round(ordered[index] * 1000.0, 3)

    return {
        "count": n,
        "p50": rank(50),
        "p90": rank(90),
        "p99": rank(99),
        "max": round(ordered[-1] * 1000.0, 3),
        "mean": round(sum(ordered) / n * 1000.0, 3),
    }


def placement(services: int, emulators: int) -> tuple[list[Optional[set[int]]], list[Optional[set[int]]], str]:
    """
    Which cores each service and each emulator may use.

    One service: the service on the first core, the emulator(s) on the
    others.  As many services as cores: one core each, the emulator(s) on
    every core (they compete; see calls per service-CPU-second).
    """
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        return [None] * services, [None] * emulators, "one core: nothing pinned"
    if services < len(cores):
        svc = [{cores[i]} for i in range(services)]
        rest = set(cores[services:])
        emu = [set(rest) for _ in range(emulators)]
        how = (
            f"service{'s' if services > 1 else ''} on core{'s' if services > 1 else ''} "
            f"{','.join(str(c) for c in cores[:services])}; "
            f"emulator+load generator on core{'s' if len(rest) > 1 else ''} "
            f"{','.join(str(c) for c in sorted(rest))}"
        )
    else:
        svc = [{cores[i % len(cores)]} for i in range(services)]
        emu = [set(cores) for _ in range(emulators)]
        how = (
            f"services on cores {','.join(str(min(s)) for s in svc)}; emulator+load "
            f"generator unpinned (competes with the services for CPU)"
        )
    return svc, emu, how


def run_once(o: argparse.Namespace, mode: str, services: int, emulators: int, label: str) -> dict[str, Any]:
    """
    Start the emulator(s) and service(s), run the load, measure, stop.
    """
    work = Path(tempfile.mkdtemp(prefix="ivr-bench-"))
    sampler = Sampler()
    sampler.start()
    svc_cores, emu_cores, how = placement(services, emulators)
    tag = f"{int(time.time()) % 100000}{label[:1]}"
    emus: list[Emulator] = []
    svcs: list[Child] = []
    spies: list[subprocess.Popen[bytes]] = []
    result: dict[str, Any] = {
        "label": label,
        "mode": mode,
        "services": services,
        "emulators": emulators,
        "placement": how,
        "service": getattr(o, "service", "ivr"),
    }
    deadline = time.monotonic() + o.warmup + o.duration + o.drain_timeout + 120
    if mode == "live":
        deadline = time.monotonic() + o.calls / o.rate + o.hold + o.drain_timeout + 180
    try:
        # the emulator(s)
        for j in range(emulators):
            results_file = work / f"emulator{j}.json"
            argv = [
                sys.executable,
                str(LOADGEN),
                "--mode", mode,
                "--rate", str(o.rate / emulators),
                "--results", str(results_file),
                "--tag", f"{tag}{j}",
                "--seed", str(o.seed + j),
                "--connections", str(o.connections),
                "--drain-timeout", str(o.drain_timeout),
                "--max-seconds", str(max(60.0, deadline - time.monotonic())),
            ]
            if mode == "rate":
                argv += [
                    "--duration", str(o.duration),
                    "--warmup", str(o.warmup),
                    "--repeat-callers", str(o.repeat_callers),
                ]
            else:
                argv += ["--calls", str(o.calls // emulators), "--hold", str(o.hold)]
            emu = Emulator(
                f"emulator{j}",
                argv,
                child_env(),
                work / f"emulator{j}.log",
                emu_cores[j],
                sampler=sampler,
            )
            emu.results_file = results_file  # type: ignore[attr-defined]
            emus.append(emu)
            sampler.pids[emu.name] = emu.pid
        for emu in emus:
            while emu.url is None:
                event, _ = emu.next_event(30)
                if event["event"] == "listening":
                    emu.url = event["url"]
                elif event["event"] in ("fatal", "exited"):
                    raise RunError(f"{emu.name}: {event.get('message', 'exited')}\n{emu.tail()}")
        # the service(s), each pointed at one emulator
        ports = []
        for i in range(services):
            port = free_port()
            ports.append(port)
            config = work / f"service{i}.toml"
            config.write_text(service_config(port, live=mode == "live", cache_size=o.cache_size))
            # twistd, plus a timer on the garbage collector's pauses
            argv = [
                sys.executable,
                str(HERE / "service_boot.py"),
                "-n",
                "--pidfile=",
                "ivr",
                "--config",
                str(config),
            ]
            if getattr(o, "service", "ivr") == "floor":
                # the same call with the same libraries and nothing of ivrproto
                argv = [sys.executable, str(HERE / "floor.py"), str(port)]
            elif getattr(o, "service", "ivr") == "seed-node":
                # the seed's logic in one Node.js process (installs ws on first use)
                try:
                    argv = nodeservice.argv(port)
                except nodeservice.Unavailable as e:
                    raise RunError(str(e)) from None
            env = child_env(
                {
                    "GENESYS_BASE_URL": emus[i % emulators].url or "",
                    "CLIENT_ID": CLIENT_ID,
                    "CLIENT_SECRET": CLIENT_SECRET,
                    "IVR_LOG_KEY": "benchmark",
                    "IVR_BENCH_GC_FILE": str(work / f"service{i}-gc.json"),
                }
            )
            svc = Child(f"service{i}", argv, env, work / f"service{i}.log", svc_cores[i])
            svcs.append(svc)
            sampler.pids[svc.name] = svc.pid
        for svc, port in zip(svcs, ports):
            wait_ready(svc, port)
            # every thread, not only the main one (Node starts its own early)
            nodeservice.pin_threads(svc.pid, svc.cores)
        before = {
            svc.name: {
                "status": proc_status(svc.pid),
                "fds": fd_count(svc.pid),
                "stats": http_json(f"http://127.0.0.1:{port}/v1/stats", timeout=30.0),  # a swamped service is slow
            }
            for svc, port in zip(svcs, ports)
        }
        # go: emulator j announces calls to the services it serves
        for j, emu in enumerate(emus):
            intakes = [
                f"http://127.0.0.1:{ports[i]}" for i in range(services) if i % emulators == j
            ]
            emu.send("go " + json.dumps({"intakes": intakes}))
        events: dict[str, list[tuple[dict[str, Any], Any]]] = {}
        marks: dict[str, Any] = {}
        done = set()
        while len(done) < len(emus):
            if time.monotonic() > deadline:
                raise RunError("the run took too long")
            for svc in svcs:
                if not svc.alive():
                    raise RunError(f"{svc.name} exited\n{svc.tail()}")
            for emu in emus:
                if emu.name in done:
                    continue
                try:
                    event, snapshot = emu.events.get(timeout=0.2)
                except queue.Empty:
                    continue
                kind = event["event"]
                events.setdefault(kind, []).append((event, snapshot))
                if kind == "window_start" and "window_start" not in marks:
                    marks["window_start"] = snapshot
                    for svc in svcs:
                        svc.popen.send_signal(signal.SIGUSR2)  # GC timings: from now
                    if o.py_spy:
                        spies += start_py_spy(o, svcs, emus, work, mode)
                elif kind == "window_end":
                    marks["window_end"] = snapshot  # the last one wins
                elif kind == "live_ready":
                    marks.setdefault("live", []).append(event)
                    if len(marks["live"]) == len(emus):
                        marks["live_ready"] = snapshot
                        marks["live_state"] = {
                            svc.name: {
                                "status": proc_status(svc.pid),
                                "fds": fd_count(svc.pid),
                                "stats": http_json(f"http://127.0.0.1:{port}/v1/stats", timeout=30.0),  # a swamped service is slow
                            }
                            for svc, port in zip(svcs, ports)
                        }
                        marks["live_emulators"] = {
                            e.name: {"status": proc_status(e.pid), "fds": fd_count(e.pid)}
                            for e in emus
                        }
                elif kind == "drained":
                    marks["drained"] = snapshot
                elif kind == "done":
                    done.add(emu.name)
                elif kind in ("fatal", "exited"):
                    raise RunError(f"{emu.name}: {event.get('message', 'exited early')}\n{emu.tail()}")
        # let the services finish closing what the callers hung up (a
        # burst of hang-ups takes them a moment), for at most 15 s
        settle_until = time.monotonic() + 15.0
        while time.monotonic() < settle_until:
            busy = 0
            for svc, port in zip(svcs, ports):
                try:
                    busy += http_json(f"http://127.0.0.1:{port}/v1/stats")["calls"]["active"]
                except Exception:
                    pass
            if busy == 0:
                break
            time.sleep(0.2)
        after = {
            svc.name: {
                "status": proc_status(svc.pid),
                "fds": fd_count(svc.pid),
                "stats": closing_stats(port),
            }
            for svc, port in zip(svcs, ports)
        }
        for spy in spies:
            try:
                spy.wait(30)
            except subprocess.TimeoutExpired:
                spy.kill()
        parts = [json.loads(Path(e.results_file).read_text()) for e in emus]  # type: ignore[attr-defined]
        result.update(
            summarize(o, mode, parts, marks, before, after, svcs, emus, sampler, events)
        )
        if o.py_spy:
            result["profiles"] = summarize_py_spy(work, o)
    finally:
        for svc in svcs:
            svc.stop(signal.SIGTERM, 15)
        for i, svc in enumerate(svcs):
            gc_file = work / f"service{i}-gc.json"
            if gc_file.exists() and "processes" in result:
                result["processes"][svc.name]["gc"] = json.loads(gc_file.read_text())
        for emu in emus:
            try:
                emu.popen.wait(10)
            except subprocess.TimeoutExpired:
                pass
            emu.stop(signal.SIGTERM, 5)
        for spy in spies:
            if spy.poll() is None:
                spy.kill()
        sampler.stop()
        if o.keep_logs:
            safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in label)
            dest = Path(o.out) / f"logs-{safe}-{time.strftime('%Y%m%d-%H%M%S')}"
            shutil.copytree(work, dest)
            result["logs"] = str(dest)
        shutil.rmtree(work, ignore_errors=True)
    return result


def wait_ready(svc: Child, port: int, timeout: float = 30.0) -> None:
    """
    Until ``/readyz`` says ready (an access token is cached by then).
    """
    give_up = time.monotonic() + timeout
    while time.monotonic() < give_up:
        if not svc.alive():
            raise RunError(f"{svc.name} exited at start\n{svc.tail()}")
        try:
            http_json(f"http://127.0.0.1:{port}/readyz", timeout=2)
            return
        except Exception:
            time.sleep(0.1)
    raise RunError(f"{svc.name} not ready after {timeout:.0f}s\n{svc.tail()}")


def cpu_between(a: Any, b: Any, name: str) -> Optional[float]:
    """
    CPU seconds of ``name`` between two snapshots.
    """
    if a is None or b is None:
        return None
    va, vb = a[1].get(name), b[1].get(name)
    if va is None or vb is None:
        return None
    return (vb - va) / CLK_TCK


def summarize(
    o: argparse.Namespace,
    mode: str,
    parts: list[dict[str, Any]],
    marks: dict[str, Any],
    before: dict[str, Any],
    after: dict[str, Any],
    svcs: list[Child],
    emus: list[Emulator],
    sampler: Sampler,
    events: dict[str, Any],
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    start, end = marks.get("window_start"), marks.get("window_end") or marks.get("live_ready")
    window = (end[0] - start[0]) if start and end else None
    out["window_seconds"] = round(window, 3) if window else None

    def total(key: str) -> int:
        return sum(p.get(key) or 0 for p in parts)

    def merged(key: str) -> dict[str, int]:
        m: dict[str, int] = {}
        for p in parts:
            for k, v in (p.get(key) or {}).items():
                m[k] = m.get(k, 0) + v
        return m

    out["offered"] = total("offered")
    out["target_rate"] = o.rate
    duration = max((p.get("duration") or 0) for p in parts) or None
    out["offered_rate"] = round(out["offered"] / duration, 2) if duration else None
    out["completed_ok"] = total("completed_ok")
    out["completed_in_window"] = total("completed_in_window")
    out["transferred_in_window"] = total("transferred_in_window")
    out["degraded"] = merged("degraded")
    out["degraded_count"] = sum(out["degraded"].values())
    out["achieved_rate"] = (
        round(out["completed_in_window"] / duration, 2) if duration and mode == "rate" else None
    )
    out["errors"] = merged("errors")
    out["error_count"] = sum(out["errors"].values())
    out["error_examples"] = [e for p in parts for e in p.get("error_examples", [])][:10]
    out["intake_status"] = merged("intake_status")
    out["outcomes"] = merged("outcomes")
    out["violations"] = out["errors"].get("violation", 0)
    latency: dict[str, Any] = {}
    for key in parts[0]["samples"]:
        values = [v for p in parts for v in p["samples"][key]]
        latency[key] = percentiles(values)
    out["latency_ms"] = latency
    out["emulator_gc"] = [p.get("emulator_gc") for p in parts]
    out["loadgen_worst_lags_ms_at_s"] = [p.get("worst_lags") for p in parts]
    out["platform_stats"] = {
        k: sum(p["platform_stats"][k] for p in parts) for k in parts[0]["platform_stats"]
    }

    # processes
    procs: dict[str, Any] = {}
    for child in list(svcs) + list(emus):
        info: dict[str, Any] = {"pid": child.pid, "cores": sorted(child.cores or [])}
        if window:
            cpu = cpu_between(start, end, child.name)
            info["cpu_seconds_window"] = round(cpu, 2) if cpu is not None else None
            info["cpu_percent"] = round(cpu / window * 100.0, 1) if cpu is not None else None
            info["cpu_percent_peak_1s"] = sampler.peak(child.name, start[0], end[0])
        drained = marks.get("drained")
        cpu_all = cpu_between(start, drained, child.name)
        if cpu_all is not None:
            info["cpu_seconds_to_drain"] = round(cpu_all, 2)
        status = after.get(child.name, {}).get("status") if child in svcs else None
        if status:
            info["peak_rss_kb"] = status.get("VmHWM")
            info["rss_kb_end"] = status.get("VmRSS")
        procs[child.name] = info
    for emu, p in zip(emus, parts):
        procs[emu.name]["peak_rss_kb"] = p.get("emulator_peak_rss_kb")
        procs[emu.name]["gc"] = p.get("emulator_gc")
    out["processes"] = procs
    # each core: how busy, with what (ours vs anything else), and steal
    cores: dict[str, Any] = {}
    if start and end and len(start) > 2:
        for core, (b0, s0, t0) in start[2].items():
            if core not in end[2]:
                continue
            b1, s1, t1 = end[2][core]
            total_ticks = max(1, t1 - t0)
            ours = [
                n for n, info in procs.items() if info.get("cores") == [core]
            ]
            ours_pct = sum((procs[n].get("cpu_percent") or 0.0) for n in ours)
            busy_pct = (b1 - b0) / total_ticks * 100.0
            cores[f"cpu{core}"] = {
                "busy_percent": round(busy_pct, 1),
                "steal_percent": round((s1 - s0) / total_ticks * 100.0, 1),
                "pinned_here": ours,
                "other_percent": round(busy_pct - ours_pct, 1) if ours else None,
            }
    out["cores"] = cores

    service_cpu = sum((procs[s.name].get("cpu_seconds_window") or 0.0) for s in svcs)
    out["service_cpu_seconds"] = round(service_cpu, 2)
    if mode == "rate":
        done = out["transferred_in_window"]  # every call the service carried through
        out["service_cpu_ms_per_call"] = round(service_cpu / done * 1000.0, 3) if done else None
        out["calls_per_service_cpu_second"] = round(done / service_cpu, 1) if service_cpu else None
        emu_cpu = sum((procs[e.name].get("cpu_seconds_window") or 0.0) for e in emus)
        out["emulator_cpu_ms_per_call"] = round(emu_cpu / done * 1000.0, 3) if done else None
        out["service_peak_rss_kb"] = max(
            (procs[s.name].get("peak_rss_kb") or 0) for s in svcs
        )

    # the service's own counters, over the window (after minus before)
    stats: dict[str, Any] = {}
    for svc in svcs:
        b, a = before[svc.name]["stats"], after[svc.name]["stats"]
        if a is None:  # the service did not answer (see closing_stats)
            stats[svc.name] = {"unanswered": True}
            continue
        lookups_a, lookups_b = a["profiles"]["lookups"], b["profiles"]["lookups"]
        delta = {k: lookups_a[k] - lookups_b.get(k, 0) for k in lookups_a if isinstance(lookups_a[k], (int, float))}
        tokens = {
            k: a["tokens"][k] - b["tokens"].get(k, 0)
            for k in a["tokens"]
            if isinstance(a["tokens"][k], (int, float))
        }
        calls = {
            k: a["calls"].get(k, 0) - b["calls"].get(k, 0)
            for k in a["calls"]
            if k != "active"
        }
        stats[svc.name] = {
            "calls": calls,
            "profile_lookups": delta,
            "tokens": tokens,
            "cache_entries": a["profiles"]["cache_entries"],
            "breaker": a["profiles"]["breaker"],
            "fallbacks": a.get("fallbacks"),
            "active_at_end": a["calls"].get("active"),
        }
    out["service_stats"] = stats
    lookups = sum(s.get("profile_lookups", {}).get("lookups", 0) for s in stats.values())
    hits = sum(s.get("profile_lookups", {}).get("hits", 0) for s in stats.values())
    out["cache_hit_rate"] = round(hits / lookups, 4) if lookups else None
    out["token_requests"] = sum(s.get("tokens", {}).get("requests", 0) for s in stats.values())
    out["default_menu_fallbacks"] = sum(
        sum((s.get("fallbacks") or {}).values()) for s in stats.values()
    )

    # which side ran out of CPU
    sat = []
    for name, info in procs.items():
        pct = info.get("cpu_percent")
        if pct is not None and pct >= 90.0:
            sat.append(f"{name} ({pct:.0f}% CPU)")
    out["saturated"] = sat

    if mode == "live":
        live_events = [e for e in marks.get("live", [])]
        live = sum(e["live"] for e in live_events)
        out["live_sessions"] = live
        out["ramp_seconds"] = max((e["ramp_seconds"] for e in live_events), default=None)
        svc = svcs[0]
        b_status = before[svc.name]["status"]
        l_state = marks.get("live_state", {}).get(svc.name, {})
        l_status = l_state.get("status", {})
        a_status = after[svc.name]["status"]
        out["service_rss_kb"] = {
            "before": b_status.get("VmRSS"),
            "live": l_status.get("VmRSS"),
            "after_hangup": a_status.get("VmRSS"),
            "peak": a_status.get("VmHWM"),
        }
        if live and l_status.get("VmRSS") and b_status.get("VmRSS"):
            out["kb_per_live_session"] = round(
                (l_status["VmRSS"] - b_status["VmRSS"]) / live, 2
            )
        else:
            out["kb_per_live_session"] = None
        out["service_active_calls_at_live"] = (
            l_state.get("stats", {}).get("calls", {}).get("active")
        )
        out["fds"] = {
            "service_before": before[svc.name]["fds"],
            "service_live": l_state.get("fds"),
            "service_after": after[svc.name]["fds"],
            "emulator_live": sum(
                (v.get("fds") or 0) for v in marks.get("live_emulators", {}).values()
            ),
        }
        out["emulator_rss_kb_live"] = sum(
            (v.get("status", {}).get("VmRSS") or 0)
            for v in marks.get("live_emulators", {}).values()
        )
        out["nofile_limit"] = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return out


# -- py-spy ---------------------------------------------------------------------------


def start_py_spy(
    o: argparse.Namespace, svcs: list[Child], emus: list[Emulator], work: Path, mode: str
) -> list[subprocess.Popen[bytes]]:
    exe = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(exe).exists():
        print("py-spy not found: pip install py-spy", file=sys.stderr)
        return []
    seconds = max(1, int(o.duration if mode == "rate" else o.calls / o.rate))
    targets = []
    if o.py_spy in ("service", "both"):
        targets.append(svcs[0])
    if o.py_spy in ("emulator", "both"):
        targets.append(emus[0])
    spies = []
    for child in targets:
        out = work / f"py-spy-{child.name}.txt"
        spies.append(
            subprocess.Popen(
                [
                    exe, "record", "--pid", str(child.pid), "--duration", str(seconds),
                    "--rate", "200", "--format", "raw", "--nonblocking",
                    "--output", str(out),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
    return spies


def summarize_py_spy(work: Path, o: argparse.Namespace, top: int = 25) -> dict[str, Any]:
    """
    Self and inclusive sample counts per function from py-spy's raw
    (collapsed) stacks.
    """
    out: dict[str, Any] = {}
    for path in sorted(work.glob("py-spy-*.txt")):
        name = path.stem[len("py-spy-") :]
        own: dict[str, int] = {}
        incl: dict[str, int] = {}
        files: dict[str, int] = {}
        total = 0
        for line in path.read_text(errors="replace").splitlines():
            stack, _, count = line.rpartition(" ")
            if not stack or not count.isdigit():
                continue
            n = int(count)
            total += n
            frames = [_function(f) for f in stack.split(";")]
            frames = [f for f in frames if f]
            if not frames:
                continue
            own[frames[-1]] = own.get(frames[-1], 0) + n
            module = _module(frames[-1])
            files[module] = files.get(module, 0) + n
            for f in set(frames):
                incl[f] = incl.get(f, 0) + n

        def ranked(d: dict[str, int]) -> list[list[Any]]:
            return [
                [k, v, round(v / total * 100.0, 1)]
                for k, v in sorted(d.items(), key=lambda kv: -kv[1])[:top]
            ]

        out[name] = {
            "samples": total,
            "self": ranked(own),
            "inclusive": ranked(incl),
            "self_by_file": ranked(files),
        }
        dest = Path(o.out) / f"py-spy-{name}-{time.strftime('%Y%m%d-%H%M%S')}.txt"
        shutil.copy(path, dest)
        out[name]["raw"] = str(dest)
    return out


def _function(frame: str) -> str:
    """
    ``func (path/to/file.py:123)`` -> ``func (file.py)``; thread and
    process frames are dropped.
    """
    frame = frame.strip()
    if frame.startswith("process ") or frame.startswith("thread "):
        return ""
    name, _, where = frame.partition(" (")
    where = where.rstrip(")")
    path = where.rsplit(":", 1)[0]
    parts = path.split("/")
    short = "/".join(parts[-2:]) if len(parts) > 1 else path
    for marker in ("site-packages/", "/work/main/"):
        if marker in path:
            short = path.split(marker, 1)[1]
    return f"{name} ({short})"


def _module(function: str) -> str:
    return function.rpartition(" (")[2].rstrip(")")


# -- output ------------------------------------------------------------------------------


def fmt(v: Any, unit: str = "", digits: int = 1) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}f}{unit}"
    return f"{v}{unit}"


def verdict(ok: Optional[bool]) -> str:
    return "" if ok is None else ("  [meets target]" if ok else "  [MISSES target]")


def table(run: dict[str, Any]) -> str:
    lines = []
    mode = run["mode"]
    lines.append(f"== {run['label']}: {run['services']} service process(es), "
                 f"{run['emulators']} emulator process(es)")
    lines.append(f"   placement: {run['placement']}")
    if run.get("service") == "floor":
        lines.append("   service: benchmarks/floor.py (the same call on the same libraries, "
                     "nothing of ivrproto), not twistd ivr")
    elif run.get("service") == "seed-node":
        lines.append("   service: benchmarks/seed_node/server.js (the seed's logic, many calls in "
                     "one Node.js process), not twistd ivr; GC pauses are V8's (gen0 scavenge, "
                     "gen1 incremental, gen2 mark-compact)")
    rows: list[tuple[str, str]] = []
    if mode == "rate":
        rows.append(("offered", f"{fmt(run['offered_rate'])} calls/s ({run['offered']} calls in "
                     f"{fmt(run['window_seconds'])} s)"))
        ok = run["achieved_rate"] is not None and run["achieved_rate"] >= TARGETS["rate"] * 0.99
        rows.append(("achieved", f"{fmt(run['achieved_rate'])} full calls/s completed in the window "
                     f"({run['completed_ok']} of the {run['offered']} offered calls completed in full)"
                     + (verdict(ok) if run["target_rate"] >= TARGETS["rate"] else "")))
    else:
        rows.append(("live sessions", f"{run['live_sessions']} callers waiting in the menu "
                     f"(ramped at {fmt(run['target_rate'])}/s in {fmt(run['ramp_seconds'])} s)"
                     + verdict(run["live_sessions"] >= TARGETS["live_sessions"]
                               if run["offered"] >= TARGETS["live_sessions"] else None)))
    err = run["error_count"]
    rows.append(("errors", f"{err}" + (f"  {run['errors']}" if err else "")
                 + f"  (intake answers {run['intake_status']})"))
    rows.append(("outcomes", json.dumps(run["outcomes"])))
    if run.get("degraded_count"):
        rows.append(("degraded", f"{run['degraded_count']} calls transferred via the default menu "
                     f"(profile lookup over its budget): {json.dumps(run['degraded'])}"))
    for name, info in run["processes"].items():
        text = (f"{fmt(info.get('cpu_percent'))}% of a core over the window "
                f"(peak 1 s {fmt(info.get('cpu_percent_peak_1s'))}%), "
                f"{fmt(info.get('cpu_seconds_window'), ' s', 2)} CPU")
        if info.get("peak_rss_kb"):
            text += f", peak RSS {info['peak_rss_kb'] / 1024:.1f} MB"
        rows.append((f"{name} CPU", text))
    for name, info in run["processes"].items():
        g = info.get("gc")
        if g:
            rows.append((f"{name} GC pauses", "; ".join(
                f"gen{n} {g[f'gen{n}']['count']}x max {fmt(g[f'gen{n}']['max_ms'], ' ms', 1)}"
                for n in range(3)) + " (from the window's start)"))
            for kind, title in (("pauses", "GC pause"), ("loop_lag", "loop lag")):
                d = g.get(kind)
                if d:
                    rows.append((f"{name} {title}", f"{d['count']}x p50 {fmt(d['p50_ms'], ' ms', 2)} "
                                 f"p99 {fmt(d['p99_ms'], ' ms', 2)} max {fmt(d['max_ms'], ' ms', 1)}"
                                 + (" (a 10 ms timer: how late it fired)" if kind == "loop_lag" else "")))
    if mode == "rate":
        rows.append(("service CPU per call", "(per transferred call) "
                     f"{fmt(run['service_cpu_ms_per_call'], ' ms', 3)} "
                     f"= {fmt(run['calls_per_service_cpu_second'])} calls per service-CPU-second "
                     "(its ceiling on one core)"))
        rows.append(("emulator CPU per call", f"{fmt(run['emulator_cpu_ms_per_call'], ' ms', 3)} "
                     "(platform + load generator; its core's ceiling is about "
                     f"{fmt(1000.0 / run['emulator_cpu_ms_per_call'] if run['emulator_cpu_ms_per_call'] else None, '', 0)} calls/s)"))
        rows.append(("service peak RSS", f"{run['service_peak_rss_kb'] / 1024:.1f} MB (VmHWM)"))
    else:
        rss = run["service_rss_kb"]
        per = run["kb_per_live_session"]
        rows.append(("service RSS", f"before {fmt(_mb(rss['before']))} MB, live "
                     f"{fmt(_mb(rss['live']))} MB, after hang-up {fmt(_mb(rss['after_hangup']))} MB, "
                     f"peak {fmt(_mb(rss['peak']))} MB"))
        rows.append(("RSS per live session", f"{fmt(per, ' kB', 2)}"
                     + verdict(per <= TARGETS["kb_per_session"] if per is not None else None)))
        fds = run["fds"]
        rows.append(("open files", f"service {fds['service_before']} -> {fds['service_live']} "
                     f"-> {fds['service_after']}; emulator {fds['emulator_live']} while live; "
                     f"RLIMIT_NOFILE {run['nofile_limit']}"))
        rows.append(("emulator RSS live", f"{fmt(_mb(run['emulator_rss_kb_live']))} MB"))
    rows.append(("token requests", f"{run['token_requests']} during the run (token from cache)"))
    hit = run["cache_hit_rate"]
    rows.append(("profile cache hits", f"{fmt(hit * 100 if hit is not None else None, '%')} of lookups; "
                 f"default-menu fallbacks {run['default_menu_fallbacks']}"))
    rows.append(("saturated", ", ".join(run["saturated"]) or "nothing at >= 90% CPU"))
    for core, c in (run.get("cores") or {}).items():
        text = f"busy {c['busy_percent']}%, steal {c['steal_percent']}%"
        if c["pinned_here"]:
            text += (f"; {', '.join(c['pinned_here'])} pinned here, anything else "
                     f"{c['other_percent']}%")
        rows.append((f"{core}", text))
    width = max(len(r[0]) for r in rows)
    for k, v in rows:
        lines.append(f"   {k:<{width}}  {v}")
    lat = run["latency_ms"]
    names = {
        "intake_to_first_play": "intake POST -> first play",
        "dtmf_to_next_command": "dtmf -> next command",
        "intake_post_answer": "intake POST -> 202",
        "intake_to_call_end": "intake POST -> call closed",
        "loadgen_schedule_lag": "load generator lag",
    }
    targets = {"intake_to_first_play": TARGETS["first_play_p99_ms"],
               "dtmf_to_next_command": TARGETS["dtmf_p99_ms"]}
    lines.append(f"   {'latency (ms)':<28}{'count':>8}{'p50':>9}{'p90':>9}{'p99':>9}{'max':>9}")
    for key, title in names.items():
        p = lat.get(key)
        if not p or not p["count"]:
            continue
        mark = ""
        if key in targets and p["p99"] is not None:
            mark = "  p99 target <= %g: %s" % (targets[key], "ok" if p["p99"] <= targets[key] else "MISSED")
        lines.append(f"   {title:<28}{p['count']:>8}{fmt(p['p50'], '', 2):>9}{fmt(p['p90'], '', 2):>9}"
                     f"{fmt(p['p99'], '', 2):>9}{fmt(p['max'], '', 2):>9}{mark}")
    if run.get("profiles"):
        for name, prof in run["profiles"].items():
            lines.append(f"   py-spy {name}: {prof['samples']} samples; top functions by own time:")
            for fn, n, pct in prof["self"][:15]:
                lines.append(f"      {pct:5.1f}%  {fn}")
            lines.append("     by file (own time):")
            for fn, n, pct in prof["self_by_file"][:12]:
                lines.append(f"      {pct:5.1f}%  {fn}")
    return "\n".join(lines)


def _mb(kb: Optional[int]) -> Optional[float]:
    return None if kb is None else kb / 1024.0


# -- main -----------------------------------------------------------------------------------


def parse_args(argv: Optional[list[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="benchmarks/run.py",
        description="ivrproto benchmarks (loopback only). See benchmarks/README.md.",
    )
    sub = parser.add_subparsers(dest="mode", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--out", default=str(HERE / "results"),
                       help="where the JSON results go (default benchmarks/results)")
        p.add_argument("--name", default=None, help="the results file's name prefix")
        p.add_argument("--connections", type=int, default=4,
                       help="persistent intake connections per service (default 4)")
        p.add_argument("--drain-timeout", type=float, default=15.0,
                       help="seconds to wait for calls in progress after the load (default 15)")
        p.add_argument("--cache-size", type=int, default=10000,
                       help="[profiles] cache_size of the service (default 10000)")
        p.add_argument("--py-spy", choices=("service", "emulator", "both"), default=None,
                       help="profile a process with py-spy during the window")
        p.add_argument("--keep-logs", action="store_true",
                       help="keep the service and emulator logs and configs in --out")
        p.add_argument("--seed", type=int, default=1)
        p.add_argument("--service", choices=("ivr", "floor", "seed-node"), default="ivr",
                       help="floor: benchmarks/floor.py, the least code that carries the "
                       "same call on the same libraries, in place of twistd ivr; seed-node: "
                       "the seed's logic in one Node.js process (benchmarks/seed_node)")

    rate = sub.add_parser("rate", help="full calls at a fixed rate")
    rate.add_argument("--rate", type=float, default=100.0, help="calls per second offered")
    rate.add_argument("--duration", type=float, default=30.0, help="seconds of measured load")
    rate.add_argument("--warmup", type=float, default=2.0, help="seconds of unmeasured load first")
    rate.add_argument("--repeat-callers", type=float, default=0.0, metavar="FRACTION",
                      help="fraction of calls that reuse an earlier caller's id")
    common(rate)

    live = sub.add_parser("live", help="callers that stay in the menu: sessions and memory")
    live.add_argument("--calls", type=int, default=1000, help="live sessions to open")
    live.add_argument("--rate", type=float, default=250.0, help="calls per second while ramping")
    live.add_argument("--hold", type=float, default=8.0,
                      help="seconds after the ramp before every caller hangs up")
    common(live)

    cmp = sub.add_parser("compare", help="ivrproto, floor and seed-node side by side, with ratios")
    cmp.add_argument("--rate", default="100", metavar="R[,R...]",
                     help="offered calls per second, one or more, comma-separated (default 100)")
    cmp.add_argument("--services", default="ivrproto,floor,seed-node", metavar="S[,S...]",
                     help="which services, in order: ivrproto, floor, seed-node (default all three)")
    cmp.add_argument("--rounds", type=int, default=1,
                     help="interleaved rounds per rate, order rotated each round (default 1)")
    cmp.add_argument("--duration", type=float, default=15.0, help="seconds of measured load per run")
    cmp.add_argument("--warmup", type=float, default=2.0, help="seconds of unmeasured load first")
    cmp.add_argument("--repeat-callers", type=float, default=0.0, metavar="FRACTION")
    common(cmp)

    scale = sub.add_parser("scale", help="one service process vs several, same offered load")
    scale.add_argument("--rate", type=float, default=800.0)
    scale.add_argument("--duration", type=float, default=30.0)
    scale.add_argument("--warmup", type=float, default=2.0)
    scale.add_argument("--services", type=int, default=2)
    scale.add_argument("--emulators", type=int, default=1,
                       help="emulator processes in the multi-service run: 1, or one per service")
    scale.add_argument("--repeat-callers", type=float, default=0.0, metavar="FRACTION")
    common(scale)
    o = parser.parse_args(argv)
    if o.mode == "compare":
        try:
            o.rates = compare.parse_rates(o.rate)
            o.service_list = compare.parse_services(o.services)
        except ValueError as e:
            parser.error(str(e))
        if o.rounds < 1:
            parser.error("--rounds must be at least 1")
        o.rate = o.rates[0]
    if o.mode == "live":
        o.warmup, o.duration, o.repeat_callers = 0.0, 0.0, 0.0
    if o.mode == "scale" and o.emulators not in (1, o.services):
        parser.error("--emulators must be 1 or --services")
    if o.rate <= 0:
        parser.error("--rate must be positive")
    return o


def main(argv: Optional[list[str]] = None) -> int:
    o = parse_args(argv)
    Path(o.out).mkdir(parents=True, exist_ok=True)
    nofile = raise_nofile()
    command = "python benchmarks/run.py " + " ".join(argv if argv is not None else sys.argv[1:])
    started = time.strftime("%Y%m%d-%H%M%S")
    report: dict[str, Any] = {
        "mode": o.mode,
        "command": command,
        "timestamp": started,
        "machine": {
            "cpus": sorted(os.sched_getaffinity(0)),
            "python": sys.version.split()[0],
            "platform": _platform.platform(),
            "nofile": nofile,
        },
        "options": {k: v for k, v in vars(o).items() if k not in ("out",)},
        "targets": TARGETS,
        "runs": [],
    }
    print(f"ivrproto benchmark: {command}", flush=True)
    if "seed-node" in (getattr(o, "service_list", None) or [o.service]):
        try:
            nodeservice.find_node()
            nodeservice.install()  # npm ci on first use, before any process starts
        except nodeservice.Unavailable as e:
            print(f"benchmark failed: {e}", file=sys.stderr)
            return 2
    try:
        if o.mode == "rate":
            report["runs"].append(run_once(o, "rate", 1, 1, f"rate {o.rate:g}/s"))
        elif o.mode == "live":
            report["runs"].append(run_once(o, "live", 1, 1, f"live {o.calls}"))
        elif o.mode == "compare":
            run_compare(o, report)
        else:
            one = run_once(o, "rate", 1, 1, f"scale 1 service at {o.rate:g}/s")
            report["runs"].append(one)
            print(table(one), flush=True)
            many = run_once(
                o, "rate", o.services, o.emulators, f"scale {o.services} services at {o.rate:g}/s"
            )
            report["runs"].append(many)
            report["scale"] = {
                "achieved_ratio": _ratio(many["achieved_rate"], one["achieved_rate"]),
                "calls_per_service_cpu_second_ratio": _ratio(
                    many["calls_per_service_cpu_second"], one["calls_per_service_cpu_second"]
                ),
                "one_service": {
                    "achieved_rate": one["achieved_rate"],
                    "calls_per_service_cpu_second": one["calls_per_service_cpu_second"],
                    "service_cpu_percent": one["processes"]["service0"].get("cpu_percent"),
                },
                "many_services": {
                    "achieved_rate": many["achieved_rate"],
                    "calls_per_service_cpu_second": many["calls_per_service_cpu_second"],
                    "service_cpu_percent": {
                        n: p.get("cpu_percent")
                        for n, p in many["processes"].items()
                        if n.startswith("service")
                    },
                },
            }
    except RunError as e:
        print(f"benchmark failed: {e}", file=sys.stderr)
        return 2
    if o.mode == "compare":
        print(compare.render(report["compare"], PLATFORM_NOTE), flush=True)
    for run in report["runs"][-1:] if o.mode == "scale" else [] if o.mode == "compare" else report["runs"]:
        print(table(run), flush=True)
    if o.mode == "scale":
        s = report["scale"]
        print(f"== scale: {o.services} services vs 1 at {o.rate:g} calls/s offered")
        print(f"   achieved calls/s: {s['one_service']['achieved_rate']} -> "
              f"{s['many_services']['achieved_rate']}  (x{fmt(s['achieved_ratio'], '', 2)})")
        print(f"   calls per service-CPU-second: {s['one_service']['calls_per_service_cpu_second']} -> "
              f"{s['many_services']['calls_per_service_cpu_second']}  "
              f"(x{fmt(s['calls_per_service_cpu_second_ratio'], '', 2)})")
        print("   On 2 cores the emulator needs a core of its own, so the multi-service run's "
              "achieved rate is bounded by the CPU left to the services; compare the calls per "
              "service-CPU-second (x1.0 = perfect scaling per core) and the services' CPU%.")
        ratio = s["calls_per_service_cpu_second_ratio"]
        if ratio:
            projected = round(ratio * o.services, 2)
            report["scale"]["projected_ratio_full_cores"] = projected
            print(f"   projected with a full core per service: {o.services} x {ratio:.2f} = "
                  f"x{projected:.2f} the single service's throughput"
                  + verdict(projected >= TARGETS["scale"]))
        if one["achieved_rate"] is not None and one["achieved_rate"] < 0.9 * o.rate:
            print("   (the single service was overloaded at this rate: its calls per CPU-second "
                  "include the work wasted on calls that failed or fell back to the default menu)")
    name = o.name or o.mode
    path = Path(o.out) / f"{name}-{started}.json"
    path.write_text(json.dumps(report, indent=2))
    print(f"results: {path}", flush=True)
    return 0


#: What the platform side is, for the comparison's footnote.
PLATFORM_NOTE = ("ivrproto.emulator.Platform and the load generator in one Python process on the "
                 "other core (startup objects frozen out of the GC, rarer young collections; "
                 "the emulator's lean Call Control path: WebSocket upgrades go straight to "
                 "Autobahn, options set once by the factory, frames with orjson); its CPU per "
                 "call is the 'emu ms' column: 1000 / emu ms is the most it can offer")


def run_compare(o: argparse.Namespace, report: dict[str, Any]) -> None:
    """
    Every (rate, service) of ``compare.plan`` as a ``rate`` run, back to
    back; each table is printed as its run ends, the comparison at the end.
    """
    steps = compare.plan(o.rates, o.service_list, o.rounds)
    for n, (rate, service) in enumerate(steps, 1):
        run_o = argparse.Namespace(**vars(o))
        run_o.rate, run_o.service = rate, service
        label = f"compare {n}/{len(steps)}: {compare.TITLES[service]} at {rate:g}/s"
        print(f"-- {label}", flush=True)
        run = run_once(run_o, "rate", 1, 1, label)
        report["runs"].append(run)
        print(table(run), flush=True)
    report["compare"] = compare.summarize(report["runs"], o.service_list)


def _ratio(a: Optional[float], b: Optional[float]) -> Optional[float]:
    if not a or not b:
        return None
    return round(a / b, 3)


if __name__ == "__main__":
    sys.exit(main())
