"""
A smoke run of the benchmark harness (``benchmarks/run.py``): a few seconds
of calls at a low rate through a real service process and a real emulator
process, over loopback.  It checks that the harness works (the table, the
JSON, no errors), not how fast anything is.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

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


class RateSmokeTests(TestCase):
    """
    ``benchmarks/run.py rate --rate 20 --duration 2``.
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
