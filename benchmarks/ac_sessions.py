"""
K concurrent Audio Connector sessions streaming prompts against one service
process (``twistd -n ivr``, pinned to core 0) on loopback, with the
emulator's Genesys side as the K clients (pinned to core 1)::

    python benchmarks/ac_sessions.py --sessions 50 200 500 --duration 20

Each session is a premium caller who stays silent: the service plays the
three-prompt menu (4.9 s of audio), and replays it every 5.5 s
(``no_input_timeout``) until the caller hangs up at the end of the window.
The caller streams 200 ms of silence every 200 ms, answers nothing but
pings, and reports ``playback_started``/``completed`` as Genesys does.

What is reported, for the measured window (after the ramp and a warm-up):

- **frame-send jitter**: for each bot frame, its arrival time minus when the
  pacing rule says it is due (frame *i* of a run at ``start + max(0, i x
  0.2 s - audio_lead)``, ``start`` the arrival of the run's first frame);
  p50/p99/max of the absolute value, over every session's frames.  It is
  measured at the client, so it includes the client's own loop lag (also
  reported, with the client process's CPU share: near 100%, the clients and
  not the service set the figure);
- **CPU per session-second** of the service process (``/proc/<pid>/stat``);
- **memory per session**: the service's RSS with the K sessions live, minus
  its RSS before the first call, over K;
- **the prompt cache**: a probe in the service process (SIGUSR1, see
  ``serve``) walks the live sessions' queued frames and counts the distinct
  frame buffers (by ``id()``) and how many are not the prompt library's own:
  0 means every call plays the one shared copy.

``python benchmarks/ac_sessions.py serve ARGS`` is ``twistd ARGS`` with the
probe installed (the service's code is unchanged).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

from run import CLK_TCK, child_env, cpu_ticks, free_port, percentiles, proc_status  # noqa: E402

EXAMPLE = REPO / "examples" / "audio-connector.toml"
API_KEY = "bench-ac-key"
PROBE_ENV = "IVR_BENCH_PROBE_FILE"
FRAME = 0.2


# -- in the service process ------------------------------------------------------


def serve(args: List[str]) -> None:
    "twistd, with the prompt-sharing probe on SIGUSR1."
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    signal.signal(signal.SIGUSR1, _probe)
    sys.argv = ["twistd", *args]
    from twisted.scripts.twistd import run

    run()


def _probe(signum: int, frame: Any) -> None:
    """
    Which frame buffers the live sessions hold: read-only, through the
    sessions' private queues (a benchmark probe, not an interface).
    """
    import gc

    from ivrproto.audioconnector.session import ConnectorSession, State

    sessions = [o for o in gc.get_objects() if isinstance(o, ConnectorSession)]
    libraries = {id(s._prompts): s._prompts for s in sessions}
    own = {id(f) for lib in libraries.values() for p in lib._cache.values() for f in p.frames}
    queued = [f for s in sessions for f, _ in s.playout.queue]
    distinct = {id(f) for f in queued}
    report = {
        "sessions": len(sessions),
        "active": sum(1 for s in sessions if s.state is State.ACTIVE),
        "libraries": len(libraries),
        "prompts": sum(lib.cached for lib in libraries.values()),
        "library_bytes": sum(lib.size for lib in libraries.values()),
        "queued_frames": len(queued),
        "distinct_buffers": len(distinct),
        "buffers_not_in_library": len(distinct - own),
    }
    with open(os.environ[PROBE_ENV], "w") as f:
        json.dump(report, f)


# -- in the benchmark process ----------------------------------------------------


def service_config(directory: Path) -> Path:
    "The example's config with every session replaying its menu."
    text = EXAMPLE.read_text()
    text = text.replace('prompts = "prompts"', f'prompts = "{REPO / "examples" / "prompts"}"')
    for old, new in (("no_input_timeout = 10.0", "no_input_timeout = 5.5"),
                     ("menu_repeats = 2", "menu_repeats = 100000"),
                     ("profile_budget = 0.8", "profile_budget = 2.0")):
        assert old in text, old
        text = text.replace(old, new)
    text += "\n[profiles]\nrate_per_minute = 1e8\n"
    path = directory / "ac-bench.toml"
    path.write_text(text)
    return path


def jitter(times: List[float], turns: List[float], lead: float, start: float, end: float) -> List[float]:
    """
    |arrival - due| of each frame that arrived in [start, end]: a run starts
    at a frame that follows a bot turn with a gap of more than a frame and a
    half (the menu's replay after the audio ended).
    """
    out: List[float] = []
    run_start, index, t = 0.0, 0, 0
    for i, arrival in enumerate(times):
        new_run = i == 0
        if not new_run and arrival - times[i - 1] > 1.5 * FRAME:
            while t < len(turns) and turns[t] <= times[i - 1]:
                t += 1
            new_run = t < len(turns) and turns[t] <= arrival
        if new_run:
            run_start, index = arrival, 0
        due = run_start + max(0.0, index * FRAME - lead)
        if start <= arrival <= end:
            out.append(abs(arrival - due))
        index += 1
    return out


def run_once(reactor: Any, k: int, o: argparse.Namespace, work: Path) -> Any:
    from twisted.internet.defer import ensureDeferred
    from twisted.internet.task import LoopingCall, deferLater

    from ivrproto.emulator import (
        GenesysCallSpec,
        GenesysSettings,
        Platform,
        place_genesys_calls,
    )

    async def go() -> Dict[str, Any]:
        platform = Platform(reactor, clients={"bench": "bench-secret"},
                            profiles={"CRM-BENCH": {"membership_level": "premium",
                                                    "open_tickets": 2}})
        await platform.listen("tcp:0:interface=127.0.0.1")
        port = free_port()
        probe_file = work / f"probe-{k}.json"
        env = child_env({"CLIENT_ID": "bench", "CLIENT_SECRET": "bench-secret",
                         "GENESYS_BASE_URL": platform.base_url, "IVR_AC_API_KEY": API_KEY,
                         PROBE_ENV: str(probe_file)})
        log = open(work / f"service-{k}.log", "w")
        service = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "serve", "-n", "--pidfile=", "ivr",
             "--config", str(service_config(work)),
             "--audio-connector", f"tcp:{port}:interface=127.0.0.1"],
            env=env, cwd=str(work), stdout=log, stderr=subprocess.STDOUT,
        )
        try:
            return await measure(service, port, probe_file)
        finally:
            service.send_signal(signal.SIGTERM)
            service.wait(30)
            log.close()
            await platform.stop()

    async def measure(service: subprocess.Popen, port: int, probe_file: Path) -> Dict[str, Any]:
        cores = os.sched_getaffinity(0)
        if len(cores) >= 2:
            os.sched_setaffinity(service.pid, {min(cores)})
            os.sched_setaffinity(0, cores - {min(cores)})
        log_path = work / f"service-{k}.log"
        for _ in range(300):
            if b"Audio Connector listening on" in log_path.read_bytes():
                break
            if service.poll() is not None:
                raise SystemExit(log_path.read_text())
            await deferLater(reactor, 0.1, lambda: None)
        await deferLater(reactor, 1.0, lambda: None)
        rss0 = proc_status(service.pid).get("VmRSS", 0)
        interval = o.ramp / k
        hold = o.ramp + o.warmup + o.duration + 0.5
        specs = [GenesysCallSpec(input_variables={"externalId": "CRM-BENCH"},
                                 script=(f"wait:{hold - i * interval:.3f}", "hangup"))
                 for i in range(k)]
        settings = GenesysSettings(keep_audio=False, stream_audio=not o.no_caller_audio,
                                   max_call=hold + 60)
        lags: List[float] = []
        last = [reactor.seconds()]

        def tick() -> None:
            now = reactor.seconds()
            lags.append(max(0.0, now - last[0] - 0.05))
            last[0] = now

        ticker = LoopingCall(tick)
        ticker.clock = reactor
        placed = place_genesys_calls(reactor, f"ws://127.0.0.1:{port}/ivr", API_KEY, specs,
                                     settings=settings, interval=interval)
        t0 = reactor.seconds() + o.ramp + o.warmup
        await deferLater(reactor, o.ramp + o.warmup, lambda: None)
        cpu0 = cpu_ticks(service.pid) or 0
        own0 = cpu_ticks(os.getpid()) or 0
        last[0] = reactor.seconds()
        ticker.start(0.05, now=False)
        await deferLater(reactor, o.duration, lambda: None)
        t1 = reactor.seconds()
        cpu1 = cpu_ticks(service.pid) or 0
        own1 = cpu_ticks(os.getpid()) or 0
        ticker.stop()
        rss1 = proc_status(service.pid).get("VmRSS", 0)
        service.send_signal(signal.SIGUSR1)
        for _ in range(100):
            if probe_file.exists() and probe_file.stat().st_size:
                break
            await deferLater(reactor, 0.1, lambda: None)
        probe = json.loads(probe_file.read_text()) if probe_file.exists() else None
        results = await placed
        values: List[float] = []
        for r in results:
            values.extend(jitter(r.audio_times, r.turns, o.lead, t0, t1))
        cpu = (cpu1 - cpu0) / CLK_TCK
        ends: Dict[str, int] = {}
        for r in results:
            ends[r.end or "?"] = ends.get(r.end or "?", 0) + 1
        return {
            "sessions": k,
            "window_s": round(t1 - t0, 2),
            "ends": ends,
            "violations": sum(len(r.violations) for r in results),
            "violation_examples": sorted({v for r in results for v in r.violations})[:5],
            "frames_in_window": len(values),
            "jitter_ms": percentiles(values),
            "client_loop_lag_ms": percentiles(lags),
            # Near 100%: the clients, not the service, set the jitter.
            "client_cpu_share": round((own1 - own0) / CLK_TCK / (t1 - t0), 3),
            # Other work on the host's cores makes every timing figure worse.
            "load_average_1m": round(os.getloadavg()[0], 2),
            "service_cpu_s": round(cpu, 3),
            "service_cpu_share": round(cpu / (t1 - t0), 3),
            "cpu_ms_per_session_second": round(cpu / (k * (t1 - t0)) * 1000, 4),
            "rss_kb_before": rss0,
            "rss_kb_live": rss1,
            "rss_kb_per_session": round((rss1 - rss0) / k, 1),
            "prompt_cache": probe,
        }

    return ensureDeferred(go())


def table(runs: List[Dict[str, Any]]) -> str:
    rows = [("sessions", "jitter p50 ms", "jitter p99 ms", "jitter max ms", "client lag p99 ms",
             "client CPU",
             "CPU ms/session-s", "service CPU", "RSS KB/session", "buffers (not shared)",
             "violations")]
    for r in runs:
        p = r["prompt_cache"] or {}
        rows.append((
            str(r["sessions"]), str(r["jitter_ms"]["p50"]), str(r["jitter_ms"]["p99"]),
            str(r["jitter_ms"]["max"]), str(r["client_loop_lag_ms"]["p99"]),
            f"{r['client_cpu_share']:.0%}",
            str(r["cpu_ms_per_session_second"]), f"{r['service_cpu_share']:.0%}",
            str(r["rss_kb_per_session"]),
            f"{p.get('distinct_buffers')} ({p.get('buffers_not_in_library')})",
            str(r["violations"]),
        ))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.rjust(w) for c, w in zip(row, widths)) for row in rows)


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["serve"]:
        serve(argv[1:])
        return 0
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sessions", type=int, nargs="+", default=[50, 200, 500])
    p.add_argument("--duration", type=float, default=20.0, help="measured seconds")
    p.add_argument("--ramp", type=float, default=5.0, help="seconds to place the K calls")
    p.add_argument("--warmup", type=float, default=6.0, help="seconds before the window")
    p.add_argument("--lead", type=float, default=0.4, help="the service's audio_lead")
    p.add_argument("--no-caller-audio", action="store_true", help="the callers send no audio")
    p.add_argument("--json", metavar="FILE", help="also write the figures here")
    o = p.parse_args(argv)
    from twisted.internet import reactor
    from twisted.internet.defer import ensureDeferred

    runs: List[Dict[str, Any]] = []
    failure: List[Any] = []

    async def all_runs() -> None:
        with tempfile.TemporaryDirectory() as work:
            for k in o.sessions:
                runs.append(await run_once(reactor, k, o, Path(work)))
                print(json.dumps(runs[-1]), flush=True)

    d = ensureDeferred(all_runs())
    d.addErrback(failure.append)
    d.addBoth(lambda _: reactor.stop())
    reactor.run()
    if failure:
        failure[0].printTraceback()
        return 1
    print(table(runs))
    if o.json:
        Path(o.json).write_text(json.dumps(runs, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
