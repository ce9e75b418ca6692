"""
The package type-checks (mypy, with the zope.interface plugin; settings in
setup.cfg).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from twisted.trial.unittest import SkipTest, SynchronousTestCase

ROOT = Path(__file__).resolve().parent.parent


class MypyTests(SynchronousTestCase):
    def test_mypy_clean(self) -> None:
        """mypy finds no issue in ivrproto."""
        try:
            import mypy  # noqa: F401
        except ImportError:
            raise SkipTest("mypy is not installed (pip install '.[test]')")
        cache = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, cache)
        result = subprocess.run(
            [sys.executable, "-m", "mypy", "--cache-dir", cache, "ivrproto"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=600,
        )
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
