"""
A smoke run of ``benchmarks/ac_sessions.py``: three Audio Connector
sessions for a second against a real service process on loopback.  It
checks that the harness works and what it reports, not how fast anything is.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from twisted.trial.unittest import TestCase

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "ac_sessions.py"


class SmokeTests(TestCase):
    timeout = 120

    def test_three_sessions(self) -> None:
        "Every session ends as the script says, with no violation, sharing the prompts."
        out = Path(tempfile.mkdtemp()) / "ac.json"
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("IVR_", "GENESYS_", "CLIENT_"))}
        subprocess.run(
            [sys.executable, str(SCRIPT), "--sessions", "3", "--duration", "1", "--ramp", "0.3",
             "--warmup", "1", "--json", str(out)],
            cwd=str(ROOT), env=env, check=True, capture_output=True, timeout=100,
        )
        (run,) = json.loads(out.read_text())
        self.assertEqual(run["ends"], {"hangup": 3})
        self.assertEqual(run["violations"], 0)
        self.assertGreater(run["frames_in_window"], 0)
        self.assertIsNotNone(run["jitter_ms"]["p99"])
        cache = run["prompt_cache"]
        self.assertEqual((cache["sessions"], cache["libraries"]), (3, 1))
        self.assertEqual(cache["buffers_not_in_library"], 0)
