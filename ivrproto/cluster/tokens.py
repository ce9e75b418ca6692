"""
The OAuth token, shared: one token for every instance with the same
client id, stored with its expiry, refreshed by one instance at a time.

Keys: ``<prefix>token:<digest of the client id>`` holds the token, with a
``PX`` expiry equal to its remaining validity; ``...:lock`` is the refresh
lock, ``SET NX PX`` with a value unique to its holder.  An instance that
needs a token (:meth:`SharedToken.obtain`):

1. uses the stored one when it is valid for long enough;
2. otherwise takes the lock, reads again (another instance may have just
   stored one), and fetches one, stores it and releases the lock in one
   script (:data:`PUBLISH_SCRIPT`);
3. or, when another instance holds the lock, keeps using the old token if
   it is still valid, and otherwise polls (on the reactor, every
   ``poll_interval``, at most ``wait_bound`` seconds) for the new one;
4. fetches its own when Redis is unavailable, or when the wait ran out with
   no valid token (the holder died or is stuck).

:meth:`SharedToken.invalidate` (after a 401) deletes the token everywhere,
but only if it is still the one that was refused: the script compares a
SHA-1 of the stored value with that of the refused token, so a newer token
stored meanwhile by another instance is kept.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any, Awaitable, Callable, Optional, Union

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater

from ivrproto.cluster.health import Unavailable
from ivrproto.cluster.redis import SharedRedis

__all__ = ["SharedToken", "TokenGrant", "READ_SCRIPT", "PUBLISH_SCRIPT", "INVALIDATE_SCRIPT"]

#: KEYS[1] token, KEYS[2] lock.  Returns {ms left (-2: none), lock held (0/1), token}.
READ_SCRIPT = """
return {redis.call('PTTL', KEYS[1]), redis.call('EXISTS', KEYS[2]), redis.call('GET', KEYS[1])}
"""

#: KEYS[1] token, KEYS[2] lock; ARGV[1] token, ARGV[2] validity in ms,
#: ARGV[3] the lock holder's value.  Stores the token, releases the lock if
#: it is still this holder's.
PUBLISH_SCRIPT = """
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
if redis.call('GET', KEYS[2]) == ARGV[3] then
  redis.call('DEL', KEYS[2])
end
return 1
"""

#: KEYS[1] lock; ARGV[1] the holder's value.  Releases the lock if held by it.
RELEASE_SCRIPT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

#: KEYS[1] token; ARGV[1] SHA-1 (hex) of the refused token.  Deletes the
#: token only if it is that one.
INVALIDATE_SCRIPT = """
local value = redis.call('GET', KEYS[1])
if value and redis.sha1hex(value) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


@attrs.frozen
class TokenGrant:
    """
    A token and how long it stays valid.

    :ivar token: the access token (never shown)
    :ivar expires_in: seconds it stays valid
    """

    token: str = attrs.field(repr=False)
    expires_in: float


def _sha1(token: str) -> str:
    return hashlib.sha1(token.encode("utf-8")).hexdigest()


class SharedToken:
    """
    One client's token, shared through Redis.

    :param redis: the shared Redis
    :param client_id: the OAuth client (only its digest is in the keys)
    :param lock_ttl: seconds the refresh lock lasts if its holder never
        releases it (longer than a token request takes)
    :param wait_bound: the longest wait for another instance's refresh
    :param poll_interval: seconds between reads while waiting
    """

    def __init__(
        self,
        redis: SharedRedis,
        client_id: str,
        *,
        lock_ttl: float = 10.0,
        wait_bound: float = 2.0,
        poll_interval: float = 0.05,
    ) -> None:
        self._redis = redis
        self._token_key = redis.keys.key("token", client_id)
        self._lock_key = redis.keys.key("token", client_id, ":lock")
        self.lock_ttl = lock_ttl
        self.wait_bound = wait_bound
        self.poll_interval = poll_interval

    def read(self) -> "Deferred[Union[Optional[TokenGrant], Unavailable]]":
        """
        The stored token, ``None`` when there is none, or
        :class:`Unavailable`.  (``read_with_lock`` also says whether a
        refresh is under way.)
        """
        return self.read_with_lock().addCallback(
            lambda r: r if isinstance(r, Unavailable) else r[0]
        )

    def read_with_lock(self) -> "Deferred[Any]":
        "``(token or None, whether the refresh lock is held)``, or :class:`Unavailable`."
        keys = [self._token_key, self._lock_key]
        d = self._redis.run("token_get", lambda r: r.eval(READ_SCRIPT, keys, []))
        return d.addCallback(_read_reply)

    def try_lock(self) -> "Deferred[Union[Optional[str], Unavailable]]":
        """
        Take the refresh lock.

        :return: the holder's value when taken, ``None`` when another
            instance holds it, or :class:`Unavailable`
        """
        owner = os.urandom(12).hex()
        ms = max(1, int(self.lock_ttl * 1000))
        d = self._redis.run(
            "token_lock",
            lambda r: r.set(self._lock_key, owner, pexpire=ms, only_if_not_exists=True),
        )
        return d.addCallback(
            lambda r: r if isinstance(r, Unavailable) else (owner if r else None)
        )

    def publish(self, grant: TokenGrant, owner: str) -> "Deferred[Any]":
        "Store ``grant`` and release the lock held as ``owner``."
        ms = int(grant.expires_in * 1000)
        if ms <= 0:
            return self.release(owner)
        keys = [self._token_key, self._lock_key]
        return self._redis.run(
            "token_set", lambda r: r.eval(PUBLISH_SCRIPT, keys, [grant.token, ms, owner])
        )

    def release(self, owner: str) -> "Deferred[Any]":
        "Release the lock held as ``owner`` (a refresh that failed)."
        return self._redis.run(
            "token_set", lambda r: r.eval(RELEASE_SCRIPT, [self._lock_key], [owner])
        )

    def invalidate(self, token: str) -> "Deferred[Any]":
        """
        Delete the stored token if it is ``token`` (the platform refused it).

        :return: a Deferred that never fails, firing with 1 when deleted, 0
            when another token is stored, or :class:`Unavailable`
        """
        return self._redis.run(
            "token_invalidate",
            lambda r: r.eval(INVALIDATE_SCRIPT, [self._token_key], [_sha1(token)]),
        )

    def obtain(
        self, fetch: Callable[[], Awaitable[TokenGrant]], min_validity: float = 0.0
    ) -> "Deferred[TokenGrant]":
        """
        A token valid for at least ``min_validity`` seconds: the shared one,
        or one fetched with ``fetch`` by this instance or another.

        :param fetch: asks the platform for a token; its errors are the
            caller's, passed on as they are
        """
        return Deferred.fromCoroutine(self._obtain(fetch, min_validity))

    async def _obtain(
        self, fetch: Callable[[], Awaitable[TokenGrant]], min_validity: float
    ) -> TokenGrant:
        current = await self.read()
        if isinstance(current, Unavailable):
            return await fetch()
        if current is not None and current.expires_in > min_validity:
            return current
        owner = await self.try_lock()
        if isinstance(owner, Unavailable):
            return await fetch()
        if owner is not None:
            return await self._refresh(fetch, owner, min_validity)
        if current is not None:
            # Another instance is refreshing; the old token is still valid
            # (if not for long): use it now rather than wait.
            return current
        fresh = await self._wait(min_validity)
        if fresh is not None:
            return fresh
        return await fetch()

    async def _refresh(
        self, fetch: Callable[[], Awaitable[TokenGrant]], owner: str, min_validity: float
    ) -> TokenGrant:
        # Read again under the lock: another instance may have stored a
        # token between this one's first read and its taking the lock.
        stored = await self.read()
        if isinstance(stored, TokenGrant) and stored.expires_in > min_validity:
            await self.release(owner)
            return stored
        try:
            grant = await fetch()
        except BaseException:
            await self.release(owner)
            raise
        await self.publish(grant, owner)
        return grant

    async def _wait(self, min_validity: float) -> Optional[TokenGrant]:
        """
        Poll for a token valid for ``min_validity``, until ``wait_bound``
        runs out, the lock is released without one, or Redis is
        unavailable.
        """
        reactor = self._redis.reactor
        deadline = reactor.seconds() + self.wait_bound
        while reactor.seconds() < deadline:
            await deferLater(reactor, self.poll_interval, lambda: None)
            reply = await self.read_with_lock()
            if isinstance(reply, Unavailable):
                return None
            grant, locked = reply
            if grant is not None and grant.expires_in > min_validity:
                return grant
            if not locked:
                return None
        return None


def _read_reply(reply: Any) -> Any:
    if isinstance(reply, Unavailable):
        return reply
    left, locked = int(reply[0]), bool(reply[1])
    value = reply[2] if len(reply) > 2 else None
    if left <= 0 or not isinstance(value, bytes):
        return (None, locked)
    return (TokenGrant(value.decode("utf-8"), left / 1000.0), locked)
