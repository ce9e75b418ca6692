"""
Fakes shared by the tests that run calls on a clock.
"""

from __future__ import annotations

from typing import Any

import attrs
from autobahn.exception import Disconnected
from twisted.internet.defer import Deferred


@attrs.define(eq=False)
class RecordingConnection:
    """
    A Call Control connection that connects at once and records the commands
    sent; ``closing`` makes every send raise as Autobahn's does once a close
    frame has arrived, and ``explode`` makes it raise as a bug would.
    """

    sent: list[Any] = attrs.Factory(list)
    is_closed: Deferred[Any] = attrs.Factory(Deferred)
    closing: bool = False
    explode: bool = False

    def send_command(self, command: Any) -> None:
        if self.explode:
            raise RuntimeError("a bug below the session")
        if self.closing:
            raise Disconnected("Attempt to send on a closed protocol")
        self.sent.append(command)

    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass

    def dropConnection(self, abort: bool = False) -> None:
        pass
