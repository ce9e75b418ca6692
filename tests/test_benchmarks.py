"""
A smoke run of the benchmark harness (``benchmarks/run.py``): a few seconds
of calls at a low rate through a real service process and a real emulator
process, over loopback.  It checks that the harness works (the table, the
JSON, no errors), not how fast anything is.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Optional
from unittest import SkipTest

from twisted.trial.unittest import TestCase

ROOT = Path(__file__).resolve().parent.parent
RUN = ROOT / "benchmarks" / "run.py"

RUN_KEYS = {
    "label",
    "mode",
    "placement",
    "offered",
    "offered_rate",
    "achieved_rate",
    "completed_ok",
    "errors",
    "error_count",
    "intake_status",
    "outcomes",
    "latency_ms",
    "processes",
    "service_cpu_ms_per_call",
    "calls_per_service_cpu_second",
    "service_peak_rss_kb",
    "service_stats",
    "cache_hit_rate",
    "token_requests",
    "saturated",
}
LATENCIES = {"intake_to_first_play", "dtmf_to_next_command", "intake_post_answer"}


class BenchmarkRun(TestCase):
    """
    Runs ``benchmarks/run.py`` as a child process, its results in a
    temporary directory.
    """

    def setUp(self) -> None:
        self.out = tempfile.mkdtemp(prefix="ivr-bench-test-")
        self.addCleanup(shutil.rmtree, self.out, True)

    def run_benchmark(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            [str(ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
        )
        return subprocess.run(
            [sys.executable, str(RUN), *args, "--out", self.out],
            cwd=str(ROOT),
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )


class RateSmokeTests(BenchmarkRun):
    """
    ``benchmarks/run.py rate --rate 20 --duration 2``.
    """

    def test_rate(self) -> None:
        """
        A short rate run prints the table and writes JSON with every figure,
        and every call went through: intake, menu, key, transfer.
        """
        done = self.run_benchmark(
            "rate", "--rate", "20", "--duration", "2", "--warmup", "0.5",
            "--drain-timeout", "5", "--name", "smoke",
        )
        self.assertEqual(done.returncode, 0, done.stdout + done.stderr)
        for text in ("latency (ms)", "intake POST -> first play", "dtmf -> next command",
                     "service CPU per call", "saturated", "results:"):
            self.assertIn(text, done.stdout)
        files = list(Path(self.out).glob("smoke-*.json"))
        self.assertEqual(len(files), 1, done.stdout)
        report = json.loads(files[0].read_text())
        self.assertEqual(report["mode"], "rate")
        self.assertEqual(len(report["runs"]), 1)
        run = report["runs"][0]
        self.assertLessEqual(RUN_KEYS, set(run))
        self.assertLessEqual(LATENCIES, set(run["latency_ms"]))
        self.assertEqual(run["error_count"], 0, run["errors"])
        self.assertEqual(run["offered"], 40)
        self.assertEqual(run["completed_ok"], 40)
        self.assertEqual(run["outcomes"], {"transferred": 40})
        self.assertEqual(run["intake_status"], {"202": 40})
        self.assertEqual(run["latency_ms"]["intake_to_first_play"]["count"], 40)
        self.assertEqual(run["latency_ms"]["dtmf_to_next_command"]["count"], 40)
        self.assertEqual(run["token_requests"], 0)
        self.assertEqual(set(run["processes"]), {"service0", "emulator0"})
        self.assertGreater(run["service_peak_rss_kb"], 0)

    def test_floor(self) -> None:
        """
        ``--service floor`` runs benchmarks/floor.py in place of the service:
        the same calls go through in full, and the table says which ran.
        """
        done = self.run_benchmark(
            "rate", "--rate", "20", "--duration", "2", "--warmup", "0.5",
            "--drain-timeout", "5", "--name", "floor", "--service", "floor",
        )
        self.assertEqual(done.returncode, 0, done.stdout + done.stderr)
        self.assertIn("service: benchmarks/floor.py", done.stdout)
        files = list(Path(self.out).glob("floor-*.json"))
        self.assertEqual(len(files), 1, done.stdout)
        run = json.loads(files[0].read_text())["runs"][0]
        self.assertEqual(run["service"], "floor")
        self.assertEqual(run["error_count"], 0, run["errors"])
        self.assertEqual(run["completed_ok"], 40)
        self.assertEqual(run["outcomes"], {"transferred": 40})
        self.assertEqual(run["latency_ms"]["dtmf_to_next_command"]["count"], 40)


def _seed_node_missing() -> Optional[str]:
    """
    Why ``--service seed-node`` cannot run here without installing
    anything (benchmarks/nodeservice.py decides), or None.
    """
    spec = importlib.util.spec_from_file_location(
        "_bench_nodeservice", ROOT / "benchmarks" / "nodeservice.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.available()


class SeedNodeSmokeTests(BenchmarkRun):
    """
    ``--service seed-node``: the seed's logic in one Node.js process.
    Skipped when node or the installed ``ws`` package is missing: the test
    never runs npm (``npm ci`` in benchmarks/seed_node, or any
    ``run.py --service seed-node``, installs it).
    """

    def setUp(self) -> None:
        missing = _seed_node_missing()
        if missing:
            raise SkipTest(missing)
        super().setUp()

    def test_rate(self) -> None:
        """
        The same calls go through in full against server.js, measured the
        same way (its CPU, its GC pauses, the same latency points).
        """
        done = self.run_benchmark(
            "rate", "--rate", "20", "--duration", "2", "--warmup", "0.5",
            "--drain-timeout", "5", "--name", "seed", "--service", "seed-node",
        )
        self.assertEqual(done.returncode, 0, done.stdout + done.stderr)
        self.assertIn("service: benchmarks/seed_node/server.js", done.stdout)
        files = list(Path(self.out).glob("seed-*.json"))
        self.assertEqual(len(files), 1, done.stdout)
        run = json.loads(files[0].read_text())["runs"][0]
        self.assertLessEqual(RUN_KEYS, set(run))
        self.assertEqual(run["service"], "seed-node")
        self.assertEqual(run["error_count"], 0, run["errors"])
        self.assertEqual(run["completed_ok"], 40)
        self.assertEqual(run["outcomes"], {"transferred": 40})
        self.assertEqual(run["intake_status"], {"202": 40})
        self.assertEqual(run["latency_ms"]["intake_to_first_play"]["count"], 40)
        self.assertEqual(run["latency_ms"]["dtmf_to_next_command"]["count"], 40)
        self.assertEqual(run["token_requests"], 0)
        self.assertGreater(run["processes"]["service0"]["cpu_seconds_window"], 0)
        self.assertIn("gen0", run["processes"]["service0"]["gc"])

    def test_compare(self) -> None:
        """
        ``compare`` runs each service in turn and prints them side by side
        with their ratios to seed-node.
        """
        done = self.run_benchmark(
            "compare", "--rate", "20", "--services", "floor,seed-node", "--duration", "1",
            "--warmup", "0.5", "--drain-timeout", "5", "--name", "cmp",
        )
        self.assertEqual(done.returncode, 0, done.stdout + done.stderr)
        self.assertIn("== compare: side by side", done.stdout)
        files = list(Path(self.out).glob("cmp-*.json"))
        self.assertEqual(len(files), 1, done.stdout)
        report = json.loads(files[0].read_text())
        self.assertEqual([r["service"] for r in report["runs"]], ["floor", "seed-node"])
        rows = report["compare"]["20"]["rows"]
        self.assertEqual(set(rows), {"floor", "seed-node"})
        self.assertEqual(rows["seed-node"]["x_seed-node"]["cpu_ms_per_call"], 1.0)
        self.assertIsNotNone(rows["floor"]["x_seed-node"]["cpu_ms_per_call"])
        for row in rows.values():
            self.assertEqual(row["errors"], 0)
            self.assertEqual(row["completed_ok"], row["offered"])
