"""
``twistd ivr``: its options, and the README's first command run for real.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import gatherResults, inlineCallbacks
from twisted.internet.utils import getProcessOutputAndValue
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase, TestCase

import attrs

from ivrproto.config import AdminConfig
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
        assert options.config is not None
        # makeService binds the listeners: an admin listener on any free port.
        options.config = attrs.evolve(
            options.config, admin=AdminConfig(listen="tcp:0:interface=127.0.0.1")
        )
        service = makeService(options)
        self.addCleanup(service.stop)  # type: ignore[attr-defined]
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
        # Twisted's plumbing lines (pool factories, ports by private class
        # names) are left out; the service says where it listens.
        self.assertIn("ivrproto intake listening on", log)
        for noise in ("Starting factory", "Stopping factory", "_QuietSite", "_ConnectionTracker"):
            self.assertNotIn(noise, log)


class EnvironmentOptionsTests(SynchronousTestCase):
    """
    IVR_CONFIG, IVR_INTAKE_LISTEN and IVR_LOG_FORMAT stand in for the
    options, which win over them.
    """

    def setUp(self) -> None:
        names = ("CLIENT_ID", "CLIENT_SECRET", "GENESYS_BASE_URL", "IVR_CONFIG",
                 "IVR_INTAKE_LISTEN", "IVR_LOG_FORMAT")
        for name in names:
            self.addCleanup(os.environ.pop, name, None)
            os.environ.pop(name, None)
        os.environ.update(CLIENT_ID="a", CLIENT_SECRET="b")

    def test_config_from_environment(self) -> None:
        """Without --config, IVR_CONFIG names the file; --config wins over it."""
        os.environ["IVR_CONFIG"] = SEED
        options = Options()
        options.parseOptions([])
        assert options.config is not None
        self.assertEqual(options.config.source, SEED)
        options = Options()
        options.parseOptions(["--config", LOCAL])
        assert options.config is not None
        self.assertEqual(options.config.source, LOCAL)

    def test_config_from_environment_unreadable(self) -> None:
        """An unreadable IVR_CONFIG file names the variable."""
        os.environ["IVR_CONFIG"] = "/nonexistent/ivr.toml"
        e = self.assertRaises(SystemExit, Options().parseOptions, [])
        self.assertEqual(
            str(e),
            "bad configuration: IVR_CONFIG (environment): cannot read /nonexistent/ivr.toml: "
            "No such file or directory",
        )

    def test_intake_from_environment(self) -> None:
        """IVR_INTAKE_LISTEN sets the intake; --intake wins over it."""
        os.environ["IVR_INTAKE_LISTEN"] = "tcp:0:interface=127.0.0.2"
        options = Options()
        options.parseOptions(["--config", SEED])
        self.assertEqual(
            bound_service(self, options).intake_description, "tcp:0:interface=127.0.0.2"
        )
        options = Options()
        options.parseOptions(["--config", SEED, "--intake", "tcp:0:interface=127.0.0.1"])
        self.assertEqual(
            bound_service(self, options).intake_description, "tcp:0:interface=127.0.0.1"
        )

    def test_bad_intake_from_environment(self) -> None:
        """A malformed or open IVR_INTAKE_LISTEN names the variable."""
        os.environ["IVR_INTAKE_LISTEN"] = "bogus:1"
        e = self.assertRaises(SystemExit, Options().parseOptions, ["--config", SEED])
        self.assertIn("IVR_INTAKE_LISTEN (environment)", str(e))
        os.environ["IVR_INTAKE_LISTEN"] = "tcp:8080"
        e = self.assertRaises(SystemExit, Options().parseOptions, ["--config", SEED])
        self.assertIn("set by the environment variable IVR_INTAKE_LISTEN", str(e))
        e = self.assertRaises(
            SystemExit, Options().parseOptions, ["--config", SEED, "--intake", "tcp:8081"]
        )
        self.assertIn("set by --intake", str(e))

    def test_log_format_from_environment(self) -> None:
        """IVR_LOG_FORMAT sets the log format; --log-format wins over it."""
        os.environ["IVR_LOG_FORMAT"] = "json"
        options = Options()
        options.parseOptions(["--config", SEED])
        assert options.config is not None
        self.assertEqual(options.config.logging.format, "json")
        options = Options()
        options.parseOptions(["--config", SEED, "--log-format", "text"])
        assert options.config is not None
        self.assertEqual(options.config.logging.format, "text")
        os.environ["IVR_LOG_FORMAT"] = "xml"
        e = self.assertRaises(SystemExit, Options().parseOptions, ["--config", SEED])
        self.assertIn("IVR_LOG_FORMAT", str(e))
        options = Options()
        options.parseOptions(["--config", SEED, "--log-format", "json"])
        assert options.config is not None
        self.assertEqual(options.config.logging.format, "json")


class TwistdLoggingTests(SynchronousTestCase):
    """
    Under twistd, the service offers the application an observer of the file
    twistd would log to.
    """

    def setUp(self) -> None:
        for name in ("CLIENT_ID", "CLIENT_SECRET", "IVR_LOG_FORMAT"):
            self.addCleanup(os.environ.pop, name, None)
            os.environ.pop(name, None)
        os.environ.update(CLIENT_ID="a", CLIENT_SECRET="b")
        self.directory = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.directory)
        import signal

        # A log file is rotated on SIGUSR1, as twistd's: keep the handler local.
        if hasattr(signal, "SIGUSR1"):
            self.addCleanup(signal.signal, signal.SIGUSR1, signal.getsignal(signal.SIGUSR1))
            signal.signal(signal.SIGUSR1, signal.SIG_DFL)

    def server_options(self, argv: list[str]) -> Any:
        from twisted.scripts.twistd import ServerOptions

        options = ServerOptions()
        options.parseOptions(argv)
        return options

    def test_logfile_component(self) -> None:
        """With --logfile, the application's log observer writes JSON lines to that file."""
        from twisted.application.service import Application
        from twisted.logger import ILogObserver, Logger

        path = os.path.join(self.directory, "ivr.log")
        options = self.server_options(
            ["-n", "--logfile", path, "ivr", "--config", SEED, "--log-format", "json"]
        )
        application = Application("ivr")
        bound_service(self, options.subOptions).setServiceParent(application)
        observer = ILogObserver(application)
        Logger(namespace="ivrproto.test", observer=observer).info("hello {x}", x=1)
        lines = Path(path).read_text().splitlines()
        self.assertEqual([json.loads(line)["message"] for line in lines], ["hello 1"])


def bound_service(case: Any, options: Options) -> Any:
    """
    ``makeService(options)``, which binds its listeners, with the admin
    listener on any free port and every listener released at cleanup.
    """
    assert options.config is not None
    options.config = attrs.evolve(
        options.config, admin=AdminConfig(listen="tcp:0:interface=127.0.0.1")
    )
    service = makeService(options)
    case.addCleanup(service.stop)
    return service


def _env() -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("CLIENT_ID", "CLIENT_SECRET", "IVR_CONFIG", "IVR_INTAKE_LISTEN",
                     "IVR_LOG_FORMAT", "GENESYS_BASE_URL")
    }
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


TWISTD = ["-c", "from twisted.scripts.twistd import run; run()"]


class ConfigErrorRunTests(TestCase):
    """
    A bad configuration stops ``twistd ivr`` (and ``python -m twisted ivr``)
    with one line on stderr naming the problem, and a non-zero exit status.
    """

    timeout = 60

    def setUp(self) -> None:
        self.directory = Path(tempfile.mkdtemp())
        self.addCleanup(shutil.rmtree, str(self.directory))

    @inlineCallbacks
    def one_line(self, runner: list[str], args: list[str], environ: dict[str, str] = {}) -> Any:
        env = {**_env(), **environ}
        out, err, code = yield getProcessOutputAndValue(
            sys.executable, runner + args, env=env, path=str(self.directory), reactor=reactor
        )
        text = err.decode()
        self.assertNotEqual(code, 0, text)
        self.assertEqual(len(text.splitlines()), 1, text)
        self.assertNotIn("Usage", out.decode() + text)
        return text.strip()

    def write(self, text: str, name: str = "bad") -> str:
        path = self.directory / f"{name}.toml"
        path.write_text(text)
        return str(path)

    @inlineCallbacks
    def test_twistd(self) -> Any:
        """Missing file, bad TOML, bad value, misspelt key, bad --intake, bad variable: one line each."""
        seed = Path(SEED).read_text()
        credentials = {"CLIENT_ID": "a", "CLIENT_SECRET": "b"}
        ivr = ["-n", "--pidfile=", "ivr"]
        bad_value = self.write(seed.replace("confirm_delay = 1.5", 'confirm_delay = "soon"'), "value")
        cases = [
            (["--config", "/nonexistent/ivr.toml"], {},
             "bad configuration: --config: cannot read /nonexistent/ivr.toml"),
            (["--config", self.write("x = \n", "toml")], {}, "(file): not valid TOML"),
            (["--config", bad_value], credentials,
             f"bad configuration: {bad_value}: timing.confirm_delay: must be a number"),
            (["--config", self.write(seed.replace("confirm_delay = 1.5", "confrim_delay = 1.5"), "key")],
             credentials, "timing.confrim_delay: unknown setting; did you mean confirm_delay?"),
            (["--config", SEED, "--intake", "bogus:1"], credentials,
             "bad --intake: 'bogus:1' is not a server endpoint"),
            (["--config", SEED], {**credentials, "GENESYS_BASE_URL": "http://api.example.com"},
             "platform.api_url: plain http is allowed only for loopback hosts; use https "
             "(set by the environment variable GENESYS_BASE_URL)"),
        ]
        # The runs are independent: start them all at once.
        lines = yield gatherResults(
            [self.one_line(TWISTD, ivr + args, environ) for args, environ, _ in cases]
        )
        for (args, _, expected), line in zip(cases, lines):
            self.assertIn(expected, line, args)
        self.assertEqual(lines[2], cases[2][2])

    @inlineCallbacks
    def test_python_m_twisted(self) -> Any:
        """python -m twisted ivr reports a bad file in one line too."""
        line = yield self.one_line(
            ["-m", "twisted"], ["ivr", "--config", self.write("[timng]\n")]
        )
        self.assertIn("timng: unknown section; did you mean timing?", line)


def _scenario(directory: Path, exit_when_done: bool) -> str:
    text = Path(LOCAL).read_text().replace(
        '"profiles.json"', json.dumps(str(ROOT / "examples" / "profiles.json"))
    ).replace('prompts = "prompts"', f'prompts = {json.dumps(str(ROOT / "examples" / "prompts"))}')
    if not exit_when_done:
        text = text.replace("exit_when_done = true", "exit_when_done = false")
        assert "exit_when_done = false" in text
    path = directory / "ivr.toml"
    path.write_text(text)
    return str(path)


class LogFileRunTests(TestCase):
    """
    ``twistd ivr``'s logs, text or JSON, go where twistd logs: --logfile, and
    twistd.log once daemonized; without Twisted's plumbing lines.
    """

    timeout = 60

    def setUp(self) -> None:
        self.directory = Path(tempfile.mkdtemp())
        self.addCleanup(shutil.rmtree, str(self.directory))

    def assertNoPlumbing(self, text: str) -> None:
        for noise in ("Starting factory", "Stopping factory", "_QuietSite", "_ConnectionTracker",
                      "_HTTP11ClientFactory", "Port ", "Traceback"):
            self.assertNotIn(noise, text)

    def assertJsonLines(self, text: str) -> list[dict[str, Any]]:
        records = [json.loads(line) for line in text.splitlines()]
        self.assertTrue(records)
        for record in records:
            self.assertRegex(record["time"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")
        return records

    @inlineCallbacks
    def test_json_logfile(self) -> Any:
        """--logfile with JSON logs: RFC 3339 JSON lines in the file, nothing on stdout."""
        log = self.directory / "ivr.log"
        out, err, code = yield getProcessOutputAndValue(
            sys.executable,
            TWISTD + ["-n", "--pidfile=", f"--logfile={log}", "ivr",
                      "--config", _scenario(self.directory, True), "--log-format", "json"],
            env=_env(), path=str(self.directory), reactor=reactor,
        )
        self.assertEqual((code, out, err), (0, b"", b""))
        text = log.read_text()
        records = self.assertJsonLines(text)
        messages = [r["message"] for r in records]
        self.assertIn("all 9 scripted calls ended", " ".join(messages))
        self.assertNoPlumbing(text)

    @inlineCallbacks
    def test_daemon(self) -> Any:
        """A daemon keeps logging JSON to twistd.log after daemonizing, until SIGTERM stops it."""
        import signal

        from twisted.internet.task import deferLater

        pidfile = self.directory / "twistd.pid"
        log = self.directory / "twistd.log"
        env = _env()
        env["IVR_LOG_FORMAT"] = "json"
        out, err, code = yield getProcessOutputAndValue(
            sys.executable,
            TWISTD + [f"--pidfile={pidfile}", f"--rundir={self.directory}", "ivr",
                      "--config", _scenario(self.directory, False)],
            env=env, path=str(self.directory), reactor=reactor,
        )
        self.assertEqual(code, 0, (out + err).decode())
        pid = int(pidfile.read_text())
        self.addCleanup(_kill, pid)

        def logged(what: str) -> bool:
            return log.exists() and what in log.read_text()

        # Wait (polling, up to the test's timeout) for what happens after
        # daemonizing: the service starting.
        while not logged("ivrproto intake listening on"):
            yield deferLater(reactor, 0.05, lambda: None)
        os.kill(pid, signal.SIGTERM)
        while pidfile.exists() or not logged("Server Shut Down."):
            yield deferLater(reactor, 0.05, lambda: None)
        text = log.read_text()
        records = self.assertJsonLines(text)
        self.assertIn("drained", [r["message"] for r in records])
        self.assertNoPlumbing(text)


def _kill(pid: int) -> None:
    import signal

    try:
        os.kill(pid, signal.SIGKILL)
    except OSError:
        pass
