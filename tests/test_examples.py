"""
Tests for the example files and the checkout itself: the commands that the
examples' comments give are the README's, and what a daemon leaves behind is
not picked up by git.
"""

from __future__ import annotations

import fnmatch
import re
from pathlib import Path

from typing import Any

from twisted.internet.defer import gatherResults, inlineCallbacks
from twisted.trial.unittest import SynchronousTestCase, TestCase

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")


def commented_commands(path: Path) -> list[str]:
    """
    The ``twistd`` commands in an example's leading comment, one per line.
    """
    commands = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            break
        text = line.lstrip("#").strip()
        if re.search(r"\btwistd\b", text) and not text.startswith("`"):
            commands.append(text)
    return commands


class EmulatorExampleTests(SynchronousTestCase):
    """
    ``examples/emulator.toml``'s own instructions.
    """

    def test_start_command_is_readmes(self) -> None:
        """The start command in the example's comment is the README's, without PYTHONPATH."""
        commands = commented_commands(ROOT / "examples" / "emulator.toml")
        self.assertIn("twistd -n ivr-emulator --config examples/emulator.toml", commands)
        for command in commands:
            self.assertNotIn("PYTHONPATH", command)
        self.assertIn("twistd -n ivr-emulator --config examples/emulator.toml", README)


class GitignoreTests(SynchronousTestCase):
    """
    ``.gitignore``.
    """

    def test_daemon_files_ignored(self) -> None:
        """twistd's log, its rotated logs and its pid file (daemon mode) are ignored."""
        patterns = [
            line.strip()
            for line in (ROOT / ".gitignore").read_text(encoding="utf-8").splitlines()
            if line.strip() and not line.startswith("#")
        ]
        for name in ("twistd.log", "twistd.log.1", "twistd.pid"):
            self.assertTrue(
                any(fnmatch.fnmatch(name, pattern) for pattern in patterns),
                f"{name} is not ignored",
            )


class FirstCommandTests(TestCase):
    """
    The README's first command's configuration, ``examples/local.toml``, end
    to end in-process: every Call Control call and every Genesys-side call
    (Audio Connector) ends as its script says.
    """

    timeout = 60

    #: callControlId: (the emulator's outcome, the transfer target)
    CALL_CONTROL = {
        "call-premium-tickets": ("transferred", "ext:transfer_premium"),
        "call-premium": ("transferred", "ext:transfer_premium"),
        "call-tickets": ("transferred", "ext:play_ticket_info"),
        "call-plain": ("transferred", "ext:transfer_operator"),
        "call-unknown": ("transferred", "ext:transfer_support"),
        "call-silent": ("transferred", "ext:transfer_operator"),
        "call-hangup": ("hungup-by-caller", None),
    }

    @inlineCallbacks
    def test_both_fronts(self) -> Any:
        """Nine Call Control calls and three Audio Connector calls, each as scripted."""
        from twisted.internet import reactor

        from ivrproto.config import load_config
        from ivrproto.demo import DemoService

        config = load_config(str(ROOT / "examples" / "local.toml"), {})
        demo = DemoService(reactor, config)  # no IVR_AC_API_KEY: a key made in-process
        self.assertTrue(demo.config.audio_connector.api_key)
        demo.startService()
        self.addCleanup(demo.stop)
        records, results = yield gatherResults([demo.scenario_done, demo.genesys_done])
        self.assertEqual(len(records), 9)
        seen = {r.call_id: (r.outcome, r.transfer_target) for r in records}
        for call_id, expected in self.CALL_CONTROL.items():
            self.assertEqual(seen[call_id], expected, call_id)
        self.assertEqual(len(results), 3)
        for result in results:
            self.assertTrue(result.ok, (result.spec.name, result.end, result.violations, result.unmet))
        ends = {r.spec.name: r.end for r in results}
        self.assertEqual(ends["ac-hangup"], "hangup")
        self.assertEqual(ends["ac-premium-barge-in"], "completed")
