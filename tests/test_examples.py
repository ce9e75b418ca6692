"""
Tests for the example files and the checkout itself: the commands that the
examples' comments give are the README's, and what a daemon leaves behind is
not picked up by git.
"""

from __future__ import annotations

import fnmatch
import re
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

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
