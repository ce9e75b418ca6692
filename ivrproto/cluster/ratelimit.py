"""
The platform's profile rate limit, shared: at most ``limit`` lookups in
any ``window`` seconds for one OAuth client, counted by every instance
that uses that client, and a pause that the platform asked one instance
for (``429`` with ``Retry-After``) holding for all of them.

One Lua script (:data:`TAKE_SCRIPT`) does the whole decision on the Redis
server, on the server's clock (``TIME``), so that instances whose clocks
disagree still count one window.  The window is a sorted set of the
requests of the last ``window`` seconds, scored by their time in
microseconds; like :class:`~ivrproto.clients.limits.RequestWindow` it never lets
more than ``limit`` through in any window, and a request at ``t`` still
counts at ``t + window``.  The pause is a key of its own with a ``PX``
expiry, read by the same script.

When Redis is unavailable the instance's local
:class:`~ivrproto.clients.limits.RequestWindow` decides.  It is kept up to date
with this instance's own requests and with the pauses it saw, so a
fallback starts from what it knows rather than from an empty window.
"""

from __future__ import annotations

import itertools
import os
from typing import Any

import attrs
from twisted.internet.defer import Deferred

from ivrproto.clients.limits import RequestWindow
from ivrproto.cluster.health import Unavailable
from ivrproto.cluster.redis import SharedRedis

__all__ = ["SharedRequestWindow", "Admission", "TAKE_SCRIPT", "PAUSE_SCRIPT"]

#: KEYS[1] the window (sorted set), KEYS[2] the pause; ARGV[1] the limit,
#: ARGV[2] the window in microseconds, ARGV[3] a member unique to this
#: request.  Returns {1, count} when taken, {0, 0, ms} when paused for ms
#: more, {0, 1, ms} when full until the oldest request leaves in ms.
TAKE_SCRIPT = """
local paused = redis.call('PTTL', KEYS[2])
if paused > 0 then
  return {0, 0, paused}
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. (now - window))
local count = redis.call('ZCARD', KEYS[1])
if count >= limit then
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  local wait = tonumber(oldest[2]) + window - now
  return {0, 1, math.max(1, math.ceil(wait / 1000))}
end
redis.call('ZADD', KEYS[1], now, ARGV[3])
redis.call('PEXPIRE', KEYS[1], math.ceil(window / 1000) + 1000)
return {1, count + 1}
"""

#: KEYS[1] the pause; ARGV[1] its length in ms.  A longer pause in force
#: is kept.  Returns the pause's remaining ms.
PAUSE_SCRIPT = """
local ms = tonumber(ARGV[1])
local left = redis.call('PTTL', KEYS[1])
if left < ms then
  redis.call('SET', KEYS[1], '1', 'PX', ms)
  return ms
end
return left
"""


@attrs.frozen
class Admission:
    """
    Whether one lookup may be sent.

    :ivar allowed: whether it may
    :ivar shared: whether the shared window decided (``False``: the local
        one did, Redis being unavailable)
    :ivar paused: whether a pause the platform asked for refused it
    :ivar retry_in: when refused by the shared window, seconds until a
        request could be taken (``0.0`` when unknown)
    """

    allowed: bool
    shared: bool
    paused: bool = False
    retry_in: float = 0.0

    def __bool__(self) -> bool:
        return self.allowed


class SharedRequestWindow:
    """
    A :class:`~ivrproto.clients.limits.RequestWindow` shared by every instance
    with the same client id.

    :param redis: the shared Redis
    :param client_id: the OAuth client whose limit this is (only its digest
        is in the keys)
    :param local: the local window, used when Redis is unavailable; it has
        the limit and the window length
    """

    def __init__(self, redis: SharedRedis, client_id: str, local: RequestWindow) -> None:
        self._redis = redis
        self.local = local
        self._window_key = redis.keys.key("rl", client_id)
        self._pause_key = redis.keys.key("rl", client_id, ":pause")
        # Members of the sorted set: unique across instances and requests.
        self._instance = os.urandom(6).hex()
        self._sequence = itertools.count()

    @property
    def limit(self) -> int:
        return self.local.limit

    @property
    def window(self) -> float:
        return self.local.window

    def try_take(self) -> "Deferred[Admission]":
        """
        Count one lookup now if the shared window and any pause allow it.

        :return: a Deferred that never fails, firing with an
            :class:`Admission`
        """
        member = f"{self._instance}:{next(self._sequence)}"
        args = [self.local.limit, int(self.local.window * 1_000_000), member]
        d = self._redis.run(
            "ratelimit",
            lambda r: r.eval(TAKE_SCRIPT, [self._window_key, self._pause_key], args),
        )
        return d.addCallback(self._decided)

    def _decided(self, reply: Any) -> Admission:
        if isinstance(reply, Unavailable):
            paused = self.local.paused()
            return Admission(self.local.try_take(), shared=False, paused=paused)
        if reply[0] == 1:
            # Recorded locally too (the local window holds a subset of the
            # shared one, so this never refuses): a fallback then starts
            # from this instance's own recent requests.
            self.local.try_take()
            return Admission(True, shared=True)
        wait = int(reply[2]) / 1000.0
        if reply[1] == 0:
            self.local.pause_until(self._redis.reactor.seconds() + wait)
            return Admission(False, shared=True, paused=True, retry_in=wait)
        return Admission(False, shared=True, retry_in=wait)

    def pause_for(self, seconds: float) -> "Deferred[Any]":
        """
        Refuse every lookup, on every instance, for ``seconds`` (a longer
        pause in force is kept); the local window is paused too.

        :return: a Deferred that never fails, firing with the pause's
            remaining milliseconds on Redis or with :class:`Unavailable`
        """
        self.local.pause_until(self._redis.reactor.seconds() + seconds)
        ms = max(1, int(seconds * 1000))
        return self._redis.run(
            "pause", lambda r: r.eval(PAUSE_SCRIPT, [self._pause_key], [ms])
        )
