"""
The platform side of a benchmark: one process running the local platform
emulator (:class:`ivrproto.emulator.Platform`) and a load generator that
announces calls to one or more service intakes at a fixed rate.

``benchmarks/run.py`` starts this process, reads its JSON lines on stdout
and sends it one ``go`` line on stdin once the services are ready::

    {"event": "listening", "url": "http://127.0.0.1:PORT"}     (us)
    go {"intakes": ["http://127.0.0.1:PORT", ...]}              (run.py)
    {"event": "window_start", ...} / "window_end" / "live_ready" / "drained"
    {"event": "done", "results": FILE}

Every timestamp compared here comes from this process's reactor clock:
``CallRecord`` times (first ``play``, keys, commands) are the emulator's
``reactor.seconds()``, and so is the moment each intake POST is written.

The load generator is built not to be the bottleneck: intake POSTs go over
a few persistent HTTP/1.1 connections per intake, pipelined, written by a
minimal client protocol (no treq/Agent per request), and calls are
scheduled by one ``LoopingCall`` that sends however many calls are due.
"""

from __future__ import annotations

import argparse
import bisect
import json
import os
import random
import resource
import sys
import time
from collections import deque
from typing import Any, Callable, Iterator, Mapping, Optional
from urllib.parse import urlsplit

from twisted.internet import protocol, reactor, stdio, task
from twisted.internet.defer import Deferred
from twisted.protocols.basic import LineReceiver

from ivrproto.emulator import CallRecord, Platform

CLIENT_ID = "ivrproto-bench"
CLIENT_SECRET = "bench-secret"

#: The profile every generated caller has: premium without open tickets, so
#: the profile menu offers 1 (premium) and 0 (operator), and "press:1" is a
#: real choice that the default menu would send elsewhere.
PREMIUM = {"membership_level": "premium", "open_tickets": 0}
EXPECTED_TARGET = "ext:transfer_premium"
MENU_PLAYS = 2  # prompts of that menu

RATE_SCRIPT = ("menu", "press:1")


#: Where :func:`emit` writes: the stdio transport once it exists.
_out: list[Any] = []


def emit(event: str, **fields: Any) -> None:
    """
    One JSON line for run.py on stdout.
    """
    fields["event"] = event
    fields["mono"] = time.monotonic()
    line = (json.dumps(fields) + "\n").encode("utf-8")
    if _out:
        _out[0].write(line)
    else:
        sys.stdout.buffer.write(line)
        sys.stdout.flush()


def raise_nofile() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


class GeneratedProfiles(Mapping[str, Mapping[str, Any]]):
    """
    The profile store for generated callers: every external id with the
    benchmark's prefix has the premium profile, made on demand (a dict of
    every generated id would only cost memory).  The emulator reads its
    store with ``.get(external_id)`` only.
    """

    def __init__(self, prefix: str, attributes: dict[str, Any]) -> None:
        self.prefix = prefix
        self.attributes = attributes

    def __getitem__(self, external_id: str) -> Mapping[str, Any]:
        if external_id.startswith(self.prefix):
            return self.attributes
        raise KeyError(external_id)

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0

    def __contains__(self, external_id: object) -> bool:
        return isinstance(external_id, str) and external_id.startswith(self.prefix)


def _rounded(values: list[float]) -> list[float]:
    return [round(v, 7) for v in values]


class Call:
    __slots__ = (
        "call_id",
        "external_id",
        "phase",
        "ideal_at",
        "sent_at",
        "answered_at",
        "status",
        "record",
        "repeat",
    )

    def __init__(self, call_id: str, external_id: str, phase: str, ideal_at: float, repeat: bool):
        self.call_id = call_id
        self.external_id = external_id
        self.phase = phase
        self.ideal_at = ideal_at
        self.sent_at = 0.0
        self.answered_at: Optional[float] = None
        self.status: Optional[int] = None
        self.record: Optional[CallRecord] = None
        self.repeat = repeat


class IntakeConnection(protocol.Protocol):
    """
    A persistent HTTP/1.1 connection to one intake, with pipelined
    ``POST /v1/calls`` requests; answers come back in order.
    """

    def __init__(self, generator: "LoadGenerator", host: bytes) -> None:
        self.generator = generator
        self.host = host
        self.pending: deque[Call] = deque()
        self.buffer = b""
        self.connected_d: Deferred[IntakeConnection] = Deferred()
        self.lost = False

    def connectionMade(self) -> None:
        self.transport.setTcpNoDelay(True)
        self.connected_d.callback(self)

    def post(self, call: Call) -> None:
        body = (
            b'{"callControlId":"%s","externalId":"%s"}'
            % (call.call_id.encode("ascii"), call.external_id.encode("ascii"))
        )
        self.pending.append(call)
        self.transport.write(
            b"POST /v1/calls HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (self.host, len(body), body)
        )

    def dataReceived(self, data: bytes) -> None:
        buffer = self.buffer + data if self.buffer else data
        while True:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                break
            head = buffer[:end]
            start = head.lower().find(b"\r\ncontent-length:")
            if start < 0:
                self.generator.fatal("intake answer without Content-Length")
                self.transport.abortConnection()
                return
            stop = head.find(b"\r\n", start + 2)
            length = int(head[start + 17 : stop if stop >= 0 else len(head)])
            total = end + 4 + length
            if len(buffer) < total:
                break
            status = int(head[9:12])
            buffer = buffer[total:]
            if self.pending:
                self.generator.intake_answered(self.pending.popleft(), status)
        self.buffer = buffer

    def connectionLost(self, reason: Any = None) -> None:
        self.lost = True
        pending, self.pending = self.pending, deque()
        for call in pending:
            self.generator.intake_failed(call, "intake connection lost")
        self.generator.connection_lost(self)


class IntakeFactory(protocol.ClientFactory):
    noisy = False

    def __init__(self, generator: "LoadGenerator", host: bytes) -> None:
        self.generator = generator
        self.host = host

    def buildProtocol(self, addr: Any) -> IntakeConnection:
        p = IntakeConnection(self.generator, self.host)
        p.factory = self
        return p

    def clientConnectionFailed(self, connector: Any, reason: Any) -> None:
        self.generator.fatal(f"cannot connect to the intake: {reason.getErrorMessage()}")


class Intake:
    """
    The connections to one intake, used round-robin.
    """

    def __init__(self, generator: "LoadGenerator", url: str, count: int) -> None:
        parts = urlsplit(url)
        self.host = parts.hostname or "127.0.0.1"
        if self.host not in ("127.0.0.1", "localhost", "::1"):
            raise SystemExit(f"refusing a non-loopback intake: {url}")
        self.port = parts.port or 80
        self.generator = generator
        self.count = count
        self.connections: list[IntakeConnection] = []
        self.next = 0
        self.factory = IntakeFactory(generator, f"{self.host}:{self.port}".encode("ascii"))

    def connect(self) -> Deferred[Any]:
        from twisted.internet.defer import gatherResults

        waits = []
        for _ in range(self.count):
            p = self.factory.buildProtocol(None)
            waits.append(p.connected_d)
            reactor.connectTCP(self.host, self.port, _Single(p), timeout=5)
            self.connections.append(p)
        return gatherResults(waits)

    def post(self, call: Call) -> None:
        conns = self.connections
        for _ in range(len(conns)):
            conn = conns[self.next]
            self.next = (self.next + 1) % len(conns)
            if not conn.lost:
                conn.post(call)
                return
        self.generator.intake_failed(call, "no intake connection left")


class _Single(protocol.ClientFactory):
    noisy = False

    def __init__(self, p: IntakeConnection) -> None:
        self.p = p

    def buildProtocol(self, addr: Any) -> IntakeConnection:
        return self.p

    def clientConnectionFailed(self, connector: Any, reason: Any) -> None:
        self.p.generator.fatal(f"cannot connect to the intake: {reason.getErrorMessage()}")


class LoadGenerator:
    def __init__(self, options: argparse.Namespace) -> None:
        self.o = options
        self.tag = options.tag
        self.prefix = f"bench-{self.tag}-"
        self.platform = Platform(
            reactor,
            clients={CLIENT_ID: CLIENT_SECRET},
            profiles=GeneratedProfiles(self.prefix, PREMIUM),
            close_after_transfer=0.0,
        )
        self.random = random.Random(options.seed)
        self.intakes: list[Intake] = []
        self.seq = 0
        self.recent_ids: list[str] = []
        self.outstanding = 0  # calls placed whose record has not finished
        self.all_done: Optional[Deferred[None]] = None
        self.failed: Optional[str] = None
        self.lost_connections = 0
        # measurements (window calls only, unless named otherwise)
        self.window = {"start": None, "end": None}
        self.offered = {"warmup": 0, "window": 0, "live": 0}
        self.first_play: list[float] = []
        self.dtmf_next: list[float] = []
        self.intake_rtt: list[float] = []
        self.call_time: list[float] = []
        self.lag: list[float] = []
        self.lag_at: list[float] = []
        self.intake_status: dict[str, int] = {}
        self.outcomes: dict[str, int] = {}
        self.errors: dict[str, int] = {}
        self.error_examples: list[str] = []
        self.completed_in_window = 0  # full calls (any phase) that ended inside the window
        self.transferred_in_window = 0  # transferred anywhere, ended inside the window
        self.degraded: dict[str, int] = {}  # window calls transferred elsewhere, by target
        self.window_ok = 0
        self.repeats = 0
        self.max_pending_posts = 0
        # live mode
        self.live_waiting: list[Call] = []
        self.live_calls: list[Call] = []

    # -- errors ---------------------------------------------------------------

    def fatal(self, message: str) -> None:
        if self.failed is None:
            self.failed = message
            emit("fatal", message=message)
            reactor.callLater(0, self._stop)

    def _error(self, kind: str, call: Call, detail: str = "") -> None:
        if call.phase == "warmup":
            kind = "warmup " + kind
        self.errors[kind] = self.errors.get(kind, 0) + 1
        if len(self.error_examples) < 20:
            self.error_examples.append(f"{call.call_id}: {kind} {detail}".strip())

    # -- placing calls ----------------------------------------------------------

    def new_call(self, phase: str, ideal_at: float, script: tuple[str, ...]) -> Call:
        self.seq += 1
        call_id = f"b{self.tag}-{self.seq}"
        repeat = False
        if (
            self.o.repeat_callers > 0
            and self.recent_ids
            and self.random.random() < self.o.repeat_callers
        ):
            external_id = self.random.choice(self.recent_ids)
            repeat = True
        else:
            external_id = f"{self.prefix}{self.seq}"
            if self.o.repeat_callers > 0:
                if len(self.recent_ids) < 5000:
                    self.recent_ids.append(external_id)
                else:
                    self.recent_ids[self.random.randrange(5000)] = external_id
        call = Call(call_id, external_id, phase, ideal_at, repeat)
        record = self.platform.expect_call(call_id, external_id, script)
        call.record = record
        self.outstanding += 1
        record.when_finished().addCallback(self._finished, call)
        intake = self.intakes[self.seq % len(self.intakes)]
        call.sent_at = reactor.seconds()
        intake.post(call)
        self.offered[phase] += 1
        if phase == "window":
            self.lag.append(call.sent_at - ideal_at)
            self.lag_at.append(ideal_at)
            if repeat:
                self.repeats += 1
        return call

    def offer(
        self,
        phase: str,
        rate: float,
        count: int,
        script: Callable[[float], tuple[str, ...]],
    ) -> Deferred[None]:
        """
        Offer ``count`` calls at ``rate`` per second, from now.
        """
        done: Deferred[None] = Deferred()
        start = reactor.seconds()
        sent = [0]
        interval = max(0.002, min(0.05, 1.0 / rate))

        def tick() -> None:
            now = reactor.seconds()
            due = min(count, int((now - start) * rate) + 1)
            while sent[0] < due:
                ideal = start + sent[0] / rate
                self.new_call(phase, ideal, script(ideal))
                sent[0] += 1
            if sent[0] >= count:
                loop.stop()

        loop = task.LoopingCall(tick)
        loop.start(interval, now=True).addCallback(lambda _: done.callback(None))
        return done

    # -- answers ----------------------------------------------------------------

    def intake_answered(self, call: Call, status: int) -> None:
        call.status = status
        call.answered_at = reactor.seconds()
        key = str(status)
        if call.phase != "warmup":
            self.intake_status[key] = self.intake_status.get(key, 0) + 1
            self.intake_rtt.append(call.answered_at - call.sent_at)
        if status != 202:
            self._error(f"intake HTTP {status}", call)
            record = call.record
            if record is not None and not record.connected:
                record.finish(reactor.seconds(), "intake-failed")

    def intake_failed(self, call: Call, reason: str) -> None:
        if call.phase != "warmup":
            self.intake_status["connection"] = self.intake_status.get("connection", 0) + 1
        self._error("intake failed", call, reason)
        record = call.record
        if record is not None and not record.connected:
            record.finish(reactor.seconds(), "intake-failed")

    def connection_lost(self, conn: IntakeConnection) -> None:
        self.lost_connections += 1

    def _finished(self, record: CallRecord, call: Call) -> None:
        self.outstanding -= 1
        self.platform.forget(record.call_id)  # bound the emulator's memory
        outcome = record.outcome or "none"
        if call.phase != "warmup":
            self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1
        expected = "hungup-by-caller" if call.phase == "live" else "transferred"
        ok = True
        if outcome != expected:
            ok = False
            if outcome != "intake-failed":  # counted already
                self._error(f"outcome {outcome}", call)
        elif call.phase != "live" and record.transfer_target != EXPECTED_TARGET:
            # transferred, but not where a premium caller pressing 1 goes:
            # the profile was not there in time (default menu)
            ok = False
            if call.phase != "warmup":
                key = str(record.transfer_target)
                self.degraded[key] = self.degraded.get(key, 0) + 1
        if record.violations and outcome != "intake-failed":
            ok = False
            self._error("violation", call, record.violations[0])
        start, end = self.window["start"], self.window["end"]
        if (
            call.phase != "live"
            and outcome == "transferred"
            and start is not None
            and record.ended_at >= start
            and (end is None or record.ended_at <= end)
        ):
            self.transferred_in_window += 1
            if ok:
                self.completed_in_window += 1
        if call.phase == "window" and ok:
            self.window_ok += 1
            self.first_play.append(record.first_play_at - call.sent_at)
            if record.key_times:
                key_at = record.key_times[0]
                i = bisect.bisect_right(record.command_times, key_at)
                if i < len(record.command_times):
                    self.dtmf_next.append(record.command_times[i] - key_at)
            self.call_time.append(record.ended_at - call.sent_at)
        if self.outstanding == 0 and self.all_done is not None and not self.all_done.called:
            self.all_done.callback(None)

    def wait_all(self, timeout: float) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        if self.outstanding == 0:
            d.callback(None)
            return d
        self.all_done = d
        timer = reactor.callLater(timeout, lambda: d.called or d.callback(None))
        d.addBoth(lambda r: (timer.active() and timer.cancel(), r)[1])
        return d

    # -- runs -------------------------------------------------------------------

    async def start(self, intakes: list[str]) -> None:
        for url in intakes:
            self.intakes.append(Intake(self, url, self.o.connections))
        for intake in self.intakes:
            await intake.connect()
        if self.o.mode == "rate":
            await self.run_rate()
        else:
            await self.run_live()

    async def run_rate(self) -> None:
        o = self.o

        def script(_: float) -> tuple[str, ...]:
            return RATE_SCRIPT

        if o.warmup > 0:
            await self.offer("warmup", o.rate, max(1, int(o.warmup * o.rate)), script)
        self.window["start"] = reactor.seconds()
        for pauses in GC_PAUSES.values():
            pauses.clear()
        emit("window_start", t=self.window["start"])
        count = max(1, int(round(o.duration * o.rate)))
        await self.offer("window", o.rate, count, script)
        # the last call is due at start + (count-1)/rate; the window is
        # count/rate long
        end_at = self.window["start"] + count / o.rate
        remaining = end_at - reactor.seconds()
        if remaining > 0:
            await task.deferLater(reactor, remaining, lambda: None)
        self.window["end"] = reactor.seconds()
        emit("window_end", t=self.window["end"], outstanding=self.outstanding)
        await self.wait_all(o.drain_timeout)
        unfinished = self.outstanding
        emit("drained", outstanding=unfinished)
        self.finish_results(unfinished)

    async def run_live(self) -> None:
        o = self.o
        n = o.calls
        t0 = reactor.seconds()
        hangup_at = t0 + n / o.rate + o.hold

        def script(_: float) -> tuple[str, ...]:
            wait = max(0.0, hangup_at - reactor.seconds())
            return ("menu", f"wait:{wait:.3f}", "hangup")

        self.window["start"] = t0
        for pauses in GC_PAUSES.values():
            pauses.clear()
        emit("window_start", t=t0, hangup_at=hangup_at)
        offering = self.offer("live", o.rate, n, script)
        # wait until every caller has heard the whole menu (or the hold is
        # nearly over), then tell run.py to measure
        ready_by = hangup_at - 1.0
        live_at = None
        while True:
            await task.deferLater(reactor, 0.25, lambda: None)
            if self.failed:
                return
            live = self.count_live()
            if (offering.called and live >= n) or reactor.seconds() >= ready_by:
                live_at = reactor.seconds()
                break
        emit(
            "live_ready",
            live=live,
            offered=self.offered["live"],
            ramp_seconds=round(live_at - t0, 3),
            emulator_fds=len(os.listdir("/proc/self/fd")),
        )
        if not offering.called:
            await offering
        self.window["end"] = reactor.seconds()
        await self.wait_all(max(0.0, hangup_at - reactor.seconds()) + o.drain_timeout)
        unfinished = self.outstanding
        emit("drained", outstanding=unfinished)
        self.finish_results(unfinished, live=live, ramp_seconds=live_at - t0)

    def count_live(self) -> int:
        # records whose whole menu has been played and that are still up
        live = 0
        for record in list(self.platform.calls.values()):
            if len(record.plays) >= MENU_PLAYS and not record.finished:
                live += 1
        return live

    def finish_results(self, unfinished: int, **extra: Any) -> None:
        o = self.o
        if unfinished:
            self.errors["unfinished after drain"] = unfinished
        duration = (self.window["end"] or 0) - (self.window["start"] or 0)
        offered = self.offered["window"] if o.mode == "rate" else self.offered["live"]
        results = {
            "mode": o.mode,
            "target_rate": o.rate,
            "duration": round(duration, 3),
            "offered": offered,
            "offered_rate": round(offered / duration, 2) if duration > 0 else None,
            "warmup_calls": self.offered["warmup"],
            "completed_ok": self.window_ok,
            "completed_in_window": self.completed_in_window,
            "transferred_in_window": self.transferred_in_window,
            "degraded": self.degraded,
            "achieved_rate": round(self.completed_in_window / duration, 2)
            if duration > 0 and o.mode == "rate"
            else None,
            "repeat_callers": o.repeat_callers,
            "repeated_calls": self.repeats,
            # raw seconds, so that run.py can merge several emulators
            "samples": {
                "intake_to_first_play": _rounded(self.first_play),
                "dtmf_to_next_command": _rounded(self.dtmf_next),
                "intake_post_answer": _rounded(self.intake_rtt),
                "intake_to_call_end": _rounded(self.call_time),
                "loadgen_schedule_lag": _rounded(self.lag),
            },
            "intake_status": self.intake_status,
            "outcomes": self.outcomes,
            "errors": self.errors,
            "error_count": sum(self.errors.values()),
            "error_examples": self.error_examples,
            "lost_intake_connections": self.lost_connections,
            "platform_stats": {
                k: getattr(self.platform.stats, k)
                for k in (
                    "token_requests",
                    "tokens_issued",
                    "profile_requests",
                    "ws_upgrades",
                    "ws_refused",
                    "calls_connected",
                )
            },
            "emulator_gc": {
                f"gen{g}": {
                    "count": len(v),
                    "max_ms": round(max(v) * 1000.0, 2) if v else None,
                    "total_ms": round(sum(v) * 1000.0, 1),
                }
                for g, v in GC_PAUSES.items()
            },
            "worst_lags": sorted(
                ((round(lag * 1000.0, 2), round(at - (self.window["start"] or 0), 3))
                 for lag, at in zip(self.lag, self.lag_at)),
                reverse=True,
            )[:10],
            "emulator_peak_rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        }
        results.update(extra)
        with open(o.results, "w") as f:
            json.dump(results, f, indent=2)
        emit("done", results=o.results)
        reactor.callLater(0, self._stop)

    def _stop(self) -> None:
        for intake in self.intakes:
            for conn in intake.connections:
                if not conn.lost and conn.transport is not None:
                    conn.transport.loseConnection()
        d = self.platform.stop()
        timer = reactor.callLater(3, reactor.stop)

        def stopped(_: Any) -> None:
            if timer.active():
                timer.cancel()
            if reactor.running:
                reactor.stop()

        d.addBoth(stopped)


class Control(LineReceiver):
    """
    Reads ``go {...}`` from stdin.
    """

    delimiter = b"\n"

    def __init__(self, generator: LoadGenerator) -> None:
        self.generator = generator
        self.started = False

    def lineReceived(self, line: bytes) -> None:
        text = line.decode("utf-8").strip()
        if text.startswith("go ") and not self.started:
            self.started = True
            spec = json.loads(text[3:])
            d = Deferred.fromCoroutine(self.generator.start(spec["intakes"]))
            d.addErrback(lambda f: self.generator.fatal(f.getTraceback()))
        elif text == "stop":
            self.generator._stop()

    def connectionLost(self, reason: Any = None) -> None:
        # run.py went away: stop
        if reactor.running:
            reactor.callLater(0, self.generator._stop)


def lighten_emulator() -> None:
    """
    Make this process cheaper, so that the platform side is less of a
    bottleneck: everything built at start is frozen out of the garbage
    collector's view, and young-generation collections are rarer (calls make
    and drop many small containers; a full collection is a stall in the
    middle of the measurements).  No library is patched.
    """
    import gc

    gc.collect()
    gc.freeze()
    gc.set_threshold(1000, 20, 100)


#: Garbage collector pauses of this process, in seconds, by generation.
GC_PAUSES: dict[int, list[float]] = {0: [], 1: [], 2: []}


def watch_gc() -> None:
    import gc

    started = [0.0]

    def callback(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            GC_PAUSES[info["generation"]].append(time.perf_counter() - started[0])

    gc.callbacks.append(callback)


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mode", choices=("rate", "live"), default="rate")
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--hold", type=float, default=5.0)
    parser.add_argument("--repeat-callers", type=float, default=0.0)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--drain-timeout", type=float, default=10.0)
    parser.add_argument("--max-seconds", type=float, default=600.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--tag", default="x")
    parser.add_argument("--listen", default="tcp:0:interface=127.0.0.1")
    parser.add_argument("--results", required=True)
    parser.add_argument(
        "--plain", action="store_true",
        help="do not lighten the emulator (see lighten_emulator)",
    )
    o = parser.parse_args(argv)
    raise_nofile()
    if not o.plain:
        lighten_emulator()
    watch_gc()
    generator = LoadGenerator(o)

    def listening(port: Any) -> None:
        emit("listening", url=generator.platform.base_url, pid=os.getpid())

    generator.platform.listen(o.listen).addCallbacks(
        listening, lambda f: generator.fatal(f.getErrorMessage())
    )
    control = Control(generator)
    stdio.StandardIO(control)
    _out.append(control.transport)
    # a hard bound on the whole run, whatever happens
    reactor.callLater(o.max_seconds, generator.fatal, "run.py's time limit reached")
    reactor.run()


if __name__ == "__main__":
    main()
