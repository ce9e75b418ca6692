"""
``twistd ivr``: its options, and the README's first command run for real.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.utils import getProcessOutputAndValue
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase, TestCase

from ivrproto.service import IVRService
from ivrproto.tap import Options, makeService

ROOT = Path(__file__).resolve().parent.parent
LOCAL = str(ROOT / "examples" / "local.toml")
SEED = str(ROOT / "examples" / "seed.toml")


class OptionsTests(SynchronousTestCase):
    def setUp(self) -> None:
        for name in ("CLIENT_ID", "CLIENT_SECRET", "GENESYS_BASE_URL"):
            self.addCleanup(os.environ.pop, name, None)
            os.environ.pop(name, None)

    def write(self, text: str) -> str:
        directory = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, directory)
        path = Path(directory) / "ivr.toml"
        path.write_text(text.replace('"profiles.json"', repr(str(ROOT / "examples" / "profiles.json")).replace("'", '"')))
        return str(path)

    def test_config_required(self) -> None:
        """Without --config, a usage error says so."""
        e = self.assertRaises(usage.UsageError, Options().parseOptions, [])
        self.assertIn("--config", str(e))

    def test_bad_key_named(self) -> None:
        """A bad setting gives one message naming the key, not a traceback."""
        os.environ.update(CLIENT_ID="a", CLIENT_SECRET="b")
        path = self.write(Path(SEED).read_text().replace("confirm_delay = 1.5", 'confirm_delay = "soon"'))
        e = self.assertRaises(SystemExit, Options().parseOptions, ["--config", path])
        self.assertIn("timing.confirm_delay", str(e))

    def test_missing_secret_named(self) -> None:
        """A missing client secret names the setting and its environment variable."""
        os.environ.update(CLIENT_ID="a")
        e = self.assertRaises(SystemExit, Options().parseOptions, ["--config", SEED])
        self.assertIn("platform.client_secret", str(e))
        self.assertIn("CLIENT_SECRET", str(e))

    def test_missing_file(self) -> None:
        """A config file that cannot be read is reported as such."""
        e = self.assertRaises(
            SystemExit, Options().parseOptions, ["--config", "/nonexistent/ivr.toml"]
        )
        self.assertIn("cannot read", str(e))

    def test_bad_scenario_named(self) -> None:
        """A bad scripted call in the embedded platform's scenario names its place."""
        path = self.write(Path(LOCAL).read_text().replace('script = ["menu", "press:1"]', 'script = ["menu", "sing"]', 1))
        e = self.assertRaises(SystemExit, Options().parseOptions, ["--config", path])
        self.assertIn("calls[0].script", str(e))

    def test_bad_intake_endpoint(self) -> None:
        """A malformed --intake endpoint is one line naming --intake."""
        os.environ.update(CLIENT_ID="a", CLIENT_SECRET="b")
        e = self.assertRaises(
            SystemExit, Options().parseOptions, ["--config", SEED, "--intake", "bogus:1"]
        )
        self.assertIn("--intake", str(e))

    def test_make_service(self) -> None:
        """makeService builds the service with the --intake override."""
        os.environ.update(CLIENT_ID="a", CLIENT_SECRET="b")
        options = Options()
        options.parseOptions(["--config", SEED, "--intake", "tcp:0:interface=127.0.0.1"])
        service = makeService(options)
        self.assertIsInstance(service, IVRService)
        self.assertEqual(service.intake_description, "tcp:0:interface=127.0.0.1")


class LocalRunTests(TestCase):
    timeout = 60

    @inlineCallbacks
    def test_local_example(self) -> Any:
        """twistd ivr --config examples/local.toml runs every scripted call and exits."""
        env = {k: v for k, v in os.environ.items() if k not in ("CLIENT_ID", "CLIENT_SECRET")}
        env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
        out, err, code = yield getProcessOutputAndValue(
            sys.executable,
            ["-c", "from twisted.scripts.twistd import run; run()",
             "-n", "--pidfile=", "ivr", "--config", LOCAL],
            env=env,
            path=str(ROOT),
            reactor=reactor,
        )
        log = out.decode() + err.decode()
        self.assertEqual(code, 0, log)
        self.assertIn("all 9 scripted calls ended", log)
        self.assertIn("call-premium-tickets: transferred to ext:transfer_premium", log)
        self.assertIn("call-unknown: transferred to ext:transfer_support", log)
        self.assertIn("call-silent: transferred to ext:transfer_operator (no-input)", log)
        self.assertIn("call-hangup: hungup", log)
        self.assertIn("call-dropped: failed (platform internal error (1011))", log)
        self.assertIn("call-refused: failed", log)
        self.assertNotIn("local-secret", log)
        self.assertNotIn("Bearer", log)
        self.assertNotIn("CRM-", log)
        self.assertNotIn("Traceback", log)
