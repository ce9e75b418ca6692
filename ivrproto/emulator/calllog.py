"""
What the emulator saw of one expected call: :class:`CallLog`, what a test
reads afterwards.
"""

from __future__ import annotations

from typing import Any, Optional

import attrs
from twisted.internet.defer import Deferred, succeed

from ivrproto.emulator.script import Step

__all__ = ["CallLog", "CallRecord"]


@attrs.define(eq=False)
class CallLog:
    """
    Everything the emulator saw of one expected call.

    :ivar call_id: the ``callControlId`` the client must present
    :ivar external_id: the caller's external id (what the intake is told)
    :ivar script: the caller script, as given
    :ivar handshake: ``"ok"``, or ``"error"`` to refuse the handshake
    :ivar commands: every decoded command object received after ``connected``
    :ivar command_times: when each of ``commands`` arrived (``reactor.seconds()``)
    :ivar plays: the ``audio`` URL of every valid ``play`` command, in order
    :ivar keys_pressed: every digit the scripted caller sent
    :ivar key_times: when each of ``keys_pressed`` was sent
    :ivar handshake_frame: the client's connect frame, decoded
    :ivar outcome: ``None`` while the call is live, then one of
        ``"transferred"``, ``"hungup-by-client"``, ``"hungup-by-caller"``,
        ``"dropped"``, ``"refused"``, ``"closed"``, ``"intake-failed"``
    :ivar transfer_target: the ``target`` of the (first) valid transfer
    :ivar close_code: the code of the close that ended the connection (ours
        when we closed first, else the client's; 1006 when the TCP
        connection went away without a close)
    :ivar violations: each way the client broke the contract, in order
    """

    call_id: str
    external_id: str
    script: tuple[str, ...] = attrs.field(default=(), converter=tuple)
    handshake: str = "ok"
    commands: list[dict[str, Any]] = attrs.field(factory=list)
    plays: list[str] = attrs.field(factory=list)
    keys_pressed: list[str] = attrs.field(factory=list)
    command_times: list[float] = attrs.field(factory=list)
    key_times: list[float] = attrs.field(factory=list)
    handshake_frame: Optional[dict[str, Any]] = None
    outcome: Optional[str] = None
    transfer_target: Optional[str] = None
    close_code: Optional[int] = None
    violations: list[str] = attrs.field(factory=list)
    connected: bool = False
    connected_at: Optional[float] = None
    first_play_at: Optional[float] = None
    transfer_at: Optional[float] = None
    ended_at: Optional[float] = None
    _steps: tuple[Step, ...] = attrs.field(default=(), repr=False, alias="steps")
    _waiters: list[Deferred[CallLog]] = attrs.field(
        factory=list, init=False, repr=False
    )

    @property
    def steps(self) -> tuple[Step, ...]:
        """
        The caller script, checked (see :func:`~ivrproto.emulator.script.parse_step`).
        """
        return self._steps

    @property
    def finished(self) -> bool:
        """
        Whether the call is over (its connection closed, or it never got one).
        """
        return self.ended_at is not None

    def when_finished(self) -> Deferred[CallLog]:
        """
        :return: a new Deferred that fires with this record once the call's
            WebSocket connection is closed (at once if that already happened)
        """
        if self.finished:
            return succeed(self)
        d: Deferred[CallLog] = Deferred()
        self._waiters.append(d)
        return d

    def finish(self, when: float, outcome: Optional[str] = None) -> None:
        """
        Mark the call as over and fire every :meth:`when_finished` waiter.

        :param when: the time it ended (``reactor.seconds()``)
        :param outcome: the outcome, if none was recorded yet
        """
        if self.finished:
            return
        if self.outcome is None and outcome is not None:
            self.outcome = outcome
        self.ended_at = when
        waiters, self._waiters = self._waiters, []
        for d in waiters:
            d.callback(self)


#: The name :class:`CallLog` had before (it collided with the client side's
#: call record); ``ivrproto.emulator.CallRecord`` stays importable.
CallRecord = CallLog
