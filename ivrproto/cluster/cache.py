"""
The shared profile cache: the platform's answers for a lookup key, kept
for a TTL, readable by every instance; the local LRU stays in front of it.

A found profile is stored as the bytes the platform returned, and read
back as the same bytes, to be parsed like a fresh answer.  "No such
profile" is stored too, as a negative entry, with its own (shorter) TTL.
The key is ``<prefix>profile:<digest of the lookup key>``: no phone number,
external id or attribute value is ever in a key.

Each stored value starts with one marker byte, ``P`` (a profile follows)
or ``N`` (negative), so that an empty profile body and a negative entry
cannot be confused.
"""

from __future__ import annotations

from typing import Any, Union

import attrs
from twisted.internet.defer import Deferred

from ivrproto.cluster.health import Unavailable
from ivrproto.cluster.redis import SharedRedis

__all__ = ["SharedProfileCache", "Hit", "Negative", "Miss", "MISS", "NEGATIVE", "ENTRY_SCRIPT"]

#: KEYS[1] the entry.  Returns {value or false, ms left}.
ENTRY_SCRIPT = """
return {redis.call('GET', KEYS[1]), redis.call('PTTL', KEYS[1])}
"""

_FOUND = b"P"
_ABSENT = b"N"


@attrs.frozen
class Hit:
    """
    A cached profile.

    :ivar body: the platform's answer, as it sent it
    """

    body: bytes = attrs.field(repr=False)


@attrs.frozen
class Negative:
    "A cached 'no such profile'."


@attrs.frozen
class Miss:
    "Nothing cached (or an entry this version cannot read)."


NEGATIVE = Negative()
MISS = Miss()

CacheResult = Union[Hit, Negative, Miss, Unavailable]


class SharedProfileCache:
    """
    Profiles shared by every instance on one Redis.

    :param redis: the shared Redis
    :param kind: the key kind (one cache per profile source, so that two
        sources never read each other's entries)
    """

    def __init__(self, redis: SharedRedis, kind: str = "profile") -> None:
        self._redis = redis
        self._kind = kind

    def _key(self, lookup_key: Union[str, bytes]) -> str:
        return self._redis.keys.key(self._kind, lookup_key)

    def get(self, lookup_key: Union[str, bytes]) -> "Deferred[CacheResult]":
        """
        Read the entry for ``lookup_key``.

        :return: a Deferred that never fails, firing with :class:`Hit`,
            :data:`NEGATIVE`, :data:`MISS` or :class:`Unavailable`
        """
        d = self._redis.run("cache_get", lambda r: r.get(self._key(lookup_key)))
        return d.addCallback(_read)

    def get_entry(
        self, lookup_key: Union[str, bytes]
    ) -> "Deferred[tuple[CacheResult, float]]":
        """
        Read the entry for ``lookup_key`` with the seconds it has left, so
        that a copy kept elsewhere expires when the shared one does.

        :return: a Deferred that never fails, firing with the result (as
            :meth:`get`) and its seconds left (``0.0`` for a miss or
            :class:`Unavailable`)
        """
        key = self._key(lookup_key)
        d = self._redis.run("cache_get", lambda r: r.eval(ENTRY_SCRIPT, [key], []))
        return d.addCallback(_read_entry)

    def set(
        self, lookup_key: Union[str, bytes], body: bytes, ttl: float
    ) -> "Deferred[Any]":
        """
        Store the platform's answer ``body`` for ``ttl`` seconds.

        :return: a Deferred that never fails (``Unavailable`` when Redis was)
        """
        return self._put(lookup_key, _FOUND + body, ttl)

    def set_negative(self, lookup_key: Union[str, bytes], ttl: float) -> "Deferred[Any]":
        """
        Store "no such profile" for ``ttl`` seconds.

        :return: a Deferred that never fails (``Unavailable`` when Redis was)
        """
        return self._put(lookup_key, _ABSENT, ttl)

    def _put(self, lookup_key: Union[str, bytes], value: bytes, ttl: float) -> "Deferred[Any]":
        ms = int(ttl * 1000)
        if ms <= 0:
            raise ValueError("a cache TTL must be at least a millisecond")
        key = self._key(lookup_key)
        return self._redis.run("cache_set", lambda r: r.set(key, value, pexpire=ms))


def _read_entry(reply: Any) -> "tuple[CacheResult, float]":
    if isinstance(reply, Unavailable):
        return reply, 0.0
    result = _read(reply[0] if reply else None)
    left = int(reply[1]) / 1000.0 if len(reply) > 1 else 0.0
    if left <= 0:
        return MISS, 0.0
    return result, left


def _read(value: Any) -> CacheResult:
    if isinstance(value, Unavailable):
        return value
    if value is None or not isinstance(value, bytes):
        return MISS
    if value[:1] == _FOUND:
        return Hit(value[1:])
    if value == _ABSENT:
        return NEGATIVE
    return MISS
