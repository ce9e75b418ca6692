"""
The ``[intake]`` bounds on connections: defaults, values read, and values
refused with a message naming the key.
"""

from __future__ import annotations

from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from ivrproto.config import IntakeConfig, parse_config
from ivrproto.errors import ConfigError

MENU = {
    "targets": {"transfer_operator": "ext:op"},
    "options": [{"key": "0", "prompt": "p.mp3", "action": "transfer_operator"}],
    "default": [{"key": "0", "prompt": "p.mp3", "action": "transfer_operator"}],
}


def parse(intake: dict[str, Any]) -> IntakeConfig:
    return parse_config(
        {"platform": {"client_id": "a", "client_secret": "b"}, "menu": MENU, "intake": intake}
    ).intake


class IntakeBoundsTests(SynchronousTestCase):
    def test_defaults(self) -> None:
        """Without settings the connection bounds have their documented defaults."""
        intake = parse({})
        self.assertEqual(
            (intake.max_connections, intake.request_deadline, intake.idle_timeout, intake.fd_reserve),
            (1024, 10.0, 30.0, 256),
        )

    def test_values_read(self) -> None:
        """Each bound is read from [intake]."""
        intake = parse(
            {"max_connections": 50, "request_deadline": 2.5, "idle_timeout": 5, "fd_reserve": 0}
        )
        self.assertEqual(
            (intake.max_connections, intake.request_deadline, intake.idle_timeout, intake.fd_reserve),
            (50, 2.5, 5.0, 0),
        )

    def test_bad_values_refused(self) -> None:
        """Zero connections, a zero, negative or infinite deadline, a negative reserve are refused by name."""
        for key, value in (
            ("max_connections", 0),
            ("max_connections", 1.5),
            ("request_deadline", 0),
            ("request_deadline", float("inf")),
            ("idle_timeout", -1),
            ("fd_reserve", -1),
        ):
            with self.assertRaises(ConfigError) as caught:
                parse({key: value})
            self.assertIn(f"intake.{key}", str(caught.exception))
