"""
Tests for :mod:`ivrproto.logs`: the JSON lines, the filter of Twisted's
plumbing lines, and where ``twistd ivr`` logs.
"""

from __future__ import annotations

import io
import json
import os
import signal
import sys
import tempfile
import shutil
from datetime import datetime
from typing import Any, List

from twisted.internet.protocol import Factory
from twisted.logger import LogLevel, LogPublisher, Logger
from twisted.python import log as legacy_log
from twisted.python.logfile import LogFile
from twisted.trial.unittest import SynchronousTestCase

from ivrproto.logs import (
    event_as_json,
    file_observer,
    json_observer,
    log_file_opener,
    rfc3339,
    twistd_log_file,
)


def _publish(observer: Any) -> Logger:
    publisher = LogPublisher(observer)
    return Logger(namespace="ivrproto.test", observer=publisher)


class JsonLineTests(SynchronousTestCase):
    """
    Each JSON line has an RFC 3339 time and the formatted message.
    """

    def test_rfc3339_time(self) -> None:
        """The time is RFC 3339 in UTC, to the microsecond."""
        line = event_as_json(
            {"log_time": 1796168585.123456, "log_format": "hello {who}", "who": "you",
             "log_level": LogLevel.warn, "log_namespace": "x"}
        )
        assert line is not None
        self.assertTrue(line.endswith("\n"))
        record = json.loads(line)
        self.assertEqual(record["time"], "2026-12-01T23:43:05.123456Z")
        self.assertEqual(record["message"], "hello you")
        self.assertEqual(record["level"], "warn")
        parsed = datetime.fromisoformat(record["time"].replace("Z", "+00:00"))
        self.assertAlmostEqual(parsed.timestamp(), 1796168585.123456, places=5)

    def test_whole_second(self) -> None:
        """A whole second keeps its six digits of fraction."""
        self.assertEqual(rfc3339(0), "1970-01-01T00:00:00.000000Z")

    def test_not_utf8(self) -> None:
        """A message with a lone surrogate still gives a line of JSON."""
        line = event_as_json({"log_time": 0.0, "log_format": "x\udcff"})
        assert line is not None
        self.assertIn("x", json.loads(line)["message"])

    def test_json_observer(self) -> None:
        """json_observer writes one JSON object a line to the file given."""
        out = io.StringIO()
        _publish(json_observer(out)).info("call {n} ended", n=1, call_control_id="c-1")
        record = json.loads(out.getvalue())
        self.assertEqual(record["message"], "call 1 ended")
        self.assertEqual(record["call_control_id"], "c-1")


class PlumbingFilterTests(SynchronousTestCase):
    """
    Twisted's lines about its own factories and ports never reach the log,
    in either format; other lines do.
    """

    def lines(self, log_format: str) -> List[str]:
        out = io.StringIO()
        observer = file_observer(out, log_format)
        publisher = LogPublisher(observer)

        class _NoisyFactory(Factory):
            noisy = True

        factory = _NoisyFactory()
        # Factory logs through twisted.logger's global publisher: send that here.
        from twisted.logger import globalLogPublisher

        globalLogPublisher.addObserver(publisher)
        self.addCleanup(globalLogPublisher.removeObserver, publisher)
        factory.doStart()
        factory.doStop()
        legacy_log.msg("_QuietSite (_ConnectionTracker) starting on 36687")
        legacy_log.msg("(TCP Port 36687 Closed)")
        legacy_log.msg("a legacy line of the application")
        Logger(namespace="ivrproto.test", observer=publisher).info("intake listening on {url}", url="u")
        return out.getvalue().splitlines()

    def test_text(self) -> None:
        """Text logs leave out factory and port lines, and keep the rest."""
        text = "\n".join(self.lines("text"))
        for noise in ("Starting factory", "Stopping factory", "_QuietSite", "_ConnectionTracker", "Port 36687"):
            self.assertNotIn(noise, text)
        self.assertIn("a legacy line of the application", text)
        self.assertIn("intake listening on u", text)

    def test_json(self) -> None:
        """JSON logs leave out the same lines."""
        messages = [json.loads(line)["message"] for line in self.lines("json")]
        self.assertEqual(messages, ["a legacy line of the application", "intake listening on u"])


class LevelTests(SynchronousTestCase):
    """
    ``[logging] level``: events below it are left out, in both formats.
    """

    def lines(self, log_format: str, *level: str) -> List[str]:
        out = io.StringIO()
        log = _publish(file_observer(out, log_format, *level))
        log.debug("{call_control_id}: call arrived", call_control_id="c-1")
        log.info("{line}", line="c-1: transferred", call_control_id="c-1")
        log.warn("a warning")
        return out.getvalue().splitlines()

    def test_info_by_default(self) -> None:
        """By default debug lines are dropped and info and warnings kept."""
        for log_format in ("text", "json"):
            text = "\n".join(self.lines(log_format))
            self.assertNotIn("call arrived", text)
            self.assertIn("c-1: transferred", text)
            self.assertIn("a warning", text)

    def test_debug(self) -> None:
        """At ``debug`` the arrival line is written."""
        self.assertIn("call arrived", "\n".join(self.lines("text", "debug")))

    def test_warn(self) -> None:
        """At ``warn`` only the warning is left."""
        [line] = self.lines("json", "warn")
        self.assertEqual(json.loads(line)["message"], "a warning")


class TwistdLogFileTests(SynchronousTestCase):
    """
    The file chosen is the one twistd would log to.
    """

    def setUp(self) -> None:
        self.directory = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.directory)
        if hasattr(signal, "SIGUSR1"):
            self.addCleanup(signal.signal, signal.SIGUSR1, signal.getsignal(signal.SIGUSR1))
            signal.signal(signal.SIGUSR1, signal.SIG_DFL)

    def test_nodaemon(self) -> None:
        """With -n and no --logfile (or --logfile -): standard output."""
        self.assertIs(twistd_log_file({"nodaemon": True, "logfile": None}), sys.stdout)
        self.assertIs(twistd_log_file({"nodaemon": True, "logfile": "-"}), sys.stdout)

    def test_daemon_to_stdout(self) -> None:
        """A daemon cannot log to standard output, as twistd says."""
        self.assertRaises(SystemExit, twistd_log_file, {"nodaemon": False, "logfile": "-"})

    def test_logfile(self) -> None:
        """--logfile: a rotating LogFile there, rotated on SIGUSR1."""
        path = os.path.join(self.directory, "ivr.log")
        log_file = twistd_log_file({"nodaemon": True, "logfile": path})
        self.addCleanup(log_file.close)
        self.assertIsInstance(log_file, LogFile)
        self.assertEqual(os.path.abspath(log_file.path), path)  # type: ignore[attr-defined]
        if hasattr(signal, "SIGUSR1"):
            self.assertNotEqual(signal.getsignal(signal.SIGUSR1), signal.SIG_DFL)

    def test_daemon_default(self) -> None:
        """A daemon without --logfile logs to twistd.log."""
        here = os.getcwd()
        os.chdir(self.directory)
        self.addCleanup(os.chdir, here)
        log_file = twistd_log_file({"nodaemon": False, "logfile": None})
        self.addCleanup(log_file.close)
        self.assertEqual(
            os.path.realpath(log_file.path),  # type: ignore[attr-defined]
            os.path.realpath(os.path.join(self.directory, "twistd.log")),
        )


class OpenerTests(SynchronousTestCase):
    """
    log_file_opener leaves logging alone where twistd was told otherwise.
    """

    def test_twistd(self) -> None:
        """Under twistd's options, an opener of the file twistd would log to."""
        opener = log_file_opener({"logger": None, "logfile": None, "nodaemon": True}, "json")
        assert opener is not None
        self.assertIs(opener(), sys.stdout)

    def test_logger_or_syslog_wins(self) -> None:
        """twistd's --logger or --syslog: no opener."""
        self.assertIsNone(log_file_opener({"logger": "a.b", "logfile": None}, "json"))
        self.assertIsNone(log_file_opener({"logger": None, "logfile": None, "syslog": True}, "json"))
        self.assertIsNone(log_file_opener(None, "json"))

    def test_twist(self) -> None:
        """Under twist, its file observer factory writes the format asked for."""
        options = {"fileLogObserverFactory": None, "logFile": None}
        self.assertIsNone(log_file_opener(options, "json"))
        out = io.StringIO()
        _publish(options["fileLogObserverFactory"](out)).info("hi")  # type: ignore[misc]
        self.assertEqual(json.loads(out.getvalue())["message"], "hi")


class CallRecordLineTests(SynchronousTestCase):
    """
    The end-of-call audit record reaches JSON lines as one structured field.
    """

    def test_call_record_copied(self) -> None:
        """A call_record dict on the event is copied whole; other fields are not."""
        record = {"menu_version": "abc123", "outcome": "transferred", "reason": "bad \udc80"}
        line = event_as_json(
            {"log_time": 0.0, "log_format": "call ended", "log_namespace": "x",
             "call_record": record, "request": object()}
        )
        assert line is not None
        parsed = json.loads(line)
        self.assertEqual(parsed["call_record"]["menu_version"], "abc123")
        self.assertEqual(parsed["call_record"]["reason"], "bad ?")
        self.assertNotIn("request", parsed)
