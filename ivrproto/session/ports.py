"""
What a call's state machine is fed and what it drives: the inputs
(:class:`CallSession`), the port it asks to do I/O (:class:`CallPort`) and the
:class:`Outcome` every call ends with.  No I/O, no state.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional, Protocol

import attrs

from ivrproto.menu.book import Collect
from ivrproto.messages import Command


def clip(text: str, limit: int) -> str:
    """
    ``text``, cut to ``limit`` characters with a note of how many were left out.
    """
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... (+{len(text) - limit} chars)"


@attrs.frozen
class Outcome:
    """
    How a call ended.

    :ivar kind: ``transferred``, ``hungup`` or ``failed``
    :ivar target: the transfer target, when transferred
    :ivar action: the configured action name of the target
    :ivar reason: why: ``selected``, ``no-input``, ``invalid-input``,
        ``platform-error``, ``caller``, or what failed
    """

    kind: str
    reason: str
    target: Optional[str] = None
    action: Optional[str] = None

    def to_json(self) -> dict[str, Any]:
        result: dict[str, Any] = {"kind": self.kind, "reason": self.reason}
        if self.target is not None:
            result["target"] = self.target
            result["action"] = self.action
        return result


class CallPort(Protocol):
    """
    What a session drives.  The service implements it with the token source,
    the profile client and the Call Control protocol; tests implement it with
    a recording fake.
    """

    def lookup_profile(self) -> None:
        """
        Start the profile lookup; answer with
        :meth:`CallSession.profile_resolved`.
        """

    def open_connection(self) -> None:
        """
        Open the Call Control connection; answer with
        :meth:`CallSession.connected` or :meth:`CallSession.connection_failed`.
        """

    def send(self, command: Command) -> Optional[bool]:
        """
        Send one command on the open connection.  Never raises: answers
        ``False`` when the connection can no longer carry it.
        """

    def close(self) -> None:
        """
        Close the connection normally (code 1000).
        """

    def abort(self) -> None:
        """
        Give up on a connection that is still being opened.
        """

    def finished(self, outcome: Outcome) -> None:
        """
        The call has ended; nothing more will be asked of the port.
        """


class CallSession(Protocol):
    """
    The inputs of a call's state machine.
    """

    def start(self) -> None:
        "A call was accepted."

    def profile_resolved(self, attributes: Optional[Mapping[str, Any]], how: str) -> None:
        "The profile lookup ended: ``attributes`` is ``None`` with no profile."

    def profile_budget_spent(self) -> None:
        "The lookup took longer than its budget."

    def connected(self) -> None:
        "The platform answered ``connected``."

    def connection_failed(self, reason: str) -> None:
        "The connection could not be opened or was refused."

    def handshake_timed_out(self) -> None:
        "No ``connected`` within the handshake timeout."

    def digit_received(self, digit: str) -> None:
        "The caller pressed a key."

    def transfer_chosen(self, action: str) -> None:
        "The caller chose a transfer: confirm it, then transfer (internal)."

    def collect_started(self, collect: Collect) -> None:
        "The caller chose an option that collects digits (internal)."

    def menu_entered(self, name: str) -> None:
        "Go to a menu (internal)."

    def hangup_chosen(self, reason: str) -> None:
        "End the call from our side (internal)."

    def transfer_now(self, action: str, reason: str) -> None:
        "Transfer at once, without confirmation (internal)."

    def give_up(self, reason: str) -> None:
        "The last try is spent: do the menu's on-failure action (internal)."

    def input_timed_out(self) -> None:
        "No key (or no next digit) within the timeout."

    def confirm_elapsed(self) -> None:
        "The confirmation delay is over."

    def hangup_received(self, reason: Optional[str]) -> None:
        "The caller or the platform ended the call."

    def platform_error(self, message: str) -> None:
        "The platform reported a failure after ``connected``."

    def connection_lost(self, reason: str) -> None:
        "The connection closed (after ``connected``)."

    def drain(self) -> None:
        "The service is shutting down: end the call without cutting the caller off."
