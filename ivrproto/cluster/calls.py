"""
The intake's and the call registry's use of the shared claims and
outcomes (:class:`~ivrproto.cluster.claims.SharedClaims`): which window a
claim holds for, which claims are released when their call ends, and the
outcome written when a call ends, for ``GET /v1/calls/<id>`` on any
instance.
"""

from __future__ import annotations

from typing import Any, Optional, Union

from twisted.internet.defer import Deferred, succeed

from ivrproto.cluster.claims import SharedClaims
from ivrproto.cluster.health import Unavailable

__all__ = ["SharedCalls"]


class SharedCalls:
    """
    Claims on call ids and call outcomes, for the intake and the registry.

    :param claims: the shared claims
    :param retention: seconds an outcome is kept (0: none written)
    :param claim_window: seconds the claim of an unsigned request holds at
        most (a call that is still going on; released when it ends)
    """

    def __init__(self, claims: SharedClaims, retention: float, claim_window: float) -> None:
        self._claims = claims
        self.retention = retention
        self.claim_window = claim_window
        # Calls whose claim is "already active", not replay protection.
        self._release_at_end: set[str] = set()

    def claim(
        self, call_control_id: str, replay_window: Optional[float]
    ) -> "Deferred[Union[bool, Unavailable]]":
        """
        Claim a call id for this instance.

        :param replay_window: for a signed request, the window within which
            no copy of it may start a call anywhere (the claim then stays
            after the call ends); ``None`` for an unsigned one, whose claim
            is released when its call ends
        :return: a Deferred that never fails: ``True`` (start it),
            ``False`` (taken elsewhere: refuse it) or :class:`Unavailable`
            (the local checks decide)
        """
        window = self.claim_window if replay_window is None else replay_window
        d = self._claims.claim(call_control_id, window)
        if replay_window is None:

            def taken(result: Any) -> Any:
                if result is True:
                    self._release_at_end.add(call_control_id)
                return result

            d.addCallback(taken)
        return d

    def release(self, call_control_id: str) -> None:
        "Let go of a claim whose call did not start after all."
        self._release_at_end.discard(call_control_id)
        self._claims.release(call_control_id)

    def call_ended(self, call_control_id: str, outcome: dict[str, Any]) -> None:
        """
        Write a call's outcome (its record's JSON view) for every instance,
        and release its claim if it was an unsigned request's.  Nothing
        waits for either.
        """
        if call_control_id in self._release_at_end:
            self._release_at_end.discard(call_control_id)
            self._claims.release(call_control_id)
        if self.retention > 0:
            self._claims.write_outcome(call_control_id, outcome, self.retention)

    def outcome(self, call_control_id: str) -> "Deferred[Optional[dict[str, Any]]]":
        """
        The outcome any instance wrote, or ``None`` (none, or Redis
        unavailable).
        """
        if self.retention <= 0:
            return succeed(None)
        d = self._claims.read_outcome(call_control_id)
        return d.addCallback(lambda r: None if isinstance(r, Unavailable) else r)
