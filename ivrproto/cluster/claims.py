"""
The intake's claims and call outcomes, shared.

A claim makes replay protection and "already active" hold across
instances: the first instance to claim a ``callControlId`` gets it
(``SET <prefix>claim:<digest> <holder> NX PX <window>``), and every other
claim of that id within the window is refused, whichever instance it
reaches.  A claim is released (compare-and-delete on the holder's value,
:data:`RELEASE_SCRIPT`) only by its holder, for a call that did not start
after all.

A call's outcome is written as JSON to ``<prefix>call:<digest>`` with a
TTL, so that any instance can answer ``GET /v1/calls/<id>``.  Outcomes
hold what the local call record holds: no caller id or attribute value.
"""

from __future__ import annotations

import os
from typing import Any, Mapping, Optional, Union

import orjson
from twisted.internet.defer import Deferred

from ivrproto.cluster.health import Unavailable
from ivrproto.cluster.redis import SharedRedis

__all__ = ["SharedClaims", "RELEASE_SCRIPT"]

#: KEYS[1] the claim; ARGV[1] the holder's value.
RELEASE_SCRIPT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class SharedClaims:
    """
    Claims on call ids, and call outcomes, shared by every instance.

    :param redis: the shared Redis
    :param holder: this instance's value in the claims it holds (random
        when not given)
    """

    def __init__(self, redis: SharedRedis, holder: Optional[str] = None) -> None:
        self._redis = redis
        self.holder = holder if holder is not None else os.urandom(9).hex()

    def claim(self, call_control_id: str, window: float) -> "Deferred[Union[bool, Unavailable]]":
        """
        Claim ``call_control_id`` for ``window`` seconds.

        :return: a Deferred that never fails, firing with ``True`` (this
            instance has it), ``False`` (claimed already, here or by another
            instance) or :class:`Unavailable` (decide locally)
        """
        key = self._redis.keys.key("claim", call_control_id)
        ms = max(1, int(window * 1000))
        d = self._redis.run(
            "claim",
            lambda r: r.set(key, self.holder, pexpire=ms, only_if_not_exists=True),
        )
        return d.addCallback(
            lambda r: r if isinstance(r, Unavailable) else r is not None
        )

    def release(self, call_control_id: str) -> "Deferred[Any]":
        """
        Release this instance's claim on ``call_control_id``.

        :return: a Deferred that never fails, firing with 1 when released, 0
            when the claim is not this instance's, or :class:`Unavailable`
        """
        key = self._redis.keys.key("claim", call_control_id)
        return self._redis.run(
            "claim_release", lambda r: r.eval(RELEASE_SCRIPT, [key], [self.holder])
        )

    def write_outcome(
        self, call_control_id: str, outcome: Mapping[str, Any], ttl: float
    ) -> "Deferred[Any]":
        """
        Store a call's outcome (JSON-serialisable) for ``ttl`` seconds.

        :return: a Deferred that never fails (``Unavailable`` when Redis was)
        """
        key = self._redis.keys.key("call", call_control_id)
        body = orjson.dumps(dict(outcome))
        ms = max(1, int(ttl * 1000))
        return self._redis.run("outcome_set", lambda r: r.set(key, body, pexpire=ms))

    def read_outcome(
        self, call_control_id: str
    ) -> "Deferred[Union[Optional[dict[str, Any]], Unavailable]]":
        """
        A call's outcome as written by any instance.

        :return: a Deferred that never fails, firing with the outcome,
            ``None`` when none is stored, or :class:`Unavailable`
        """
        key = self._redis.keys.key("call", call_control_id)
        d = self._redis.run("outcome_get", lambda r: r.get(key))
        return d.addCallback(_outcome)


def _outcome(value: Any) -> Any:
    if isinstance(value, Unavailable) or value is None:
        return value
    try:
        outcome = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    return outcome if isinstance(outcome, dict) else None
