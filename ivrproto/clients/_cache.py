"""
The cache of a :class:`~ivrproto.clients.lookup.ProfileLookup`: lookup
answers by external id, least recently used dropped first, bounded by a
number of entries and by their estimated memory.  Time is passed in.
"""

from __future__ import annotations

import sys
from collections import OrderedDict
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Iterator, Optional

from ivrproto.clients.profiles import Profile

if TYPE_CHECKING:
    from ivrproto.clients.outcomes import LookupResult

__all__ = ["ProfileCache"]

# A cache entry without a profile: the key, the tuple, the node.
_NEGATIVE_ENTRY = 256


class ProfileCache:
    """
    Lookup answers by external id, each with its expiry and its size.

    :param max_entries: entries kept at most
    :param max_bytes: estimated bytes of all entries at most
    :param max_entry_bytes: answers larger than this are not kept
    """

    def __init__(self, max_entries: int, max_bytes: int, max_entry_bytes: int) -> None:
        self._max_entries = max_entries
        self._max_bytes = max_bytes
        self._max_entry_bytes = min(max_entry_bytes, max_bytes)
        # external id -> (expiry time, the answer for a hit, its size)
        self._entries: OrderedDict[str, tuple[float, LookupResult, int]] = OrderedDict()
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    @property
    def bytes(self) -> int:
        """
        The estimated memory of the entries (expired ones included until
        read or evicted).
        """
        return self._bytes

    @property
    def keeps_nothing(self) -> bool:
        """
        Whether it was made to keep no entry.
        """
        return self._max_entries == 0

    def clear(self) -> None:
        """
        Drop every entry.
        """
        self._entries.clear()
        self._bytes = 0

    def get(self, key: str, now: float) -> Optional[LookupResult]:
        """
        The unexpired answer for ``key``, now the most recently used, or
        ``None`` (an expired entry is dropped).
        """
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry[0] > now:
            self._entries.move_to_end(key)
            return entry[1]
        del self._entries[key]
        self._bytes -= entry[2]
        return None

    def put(self, key: str, expires_at: float, hit: LookupResult) -> Optional[int]:
        """
        Keep ``hit`` for ``key`` until ``expires_at``, dropping the least
        recently used entries to stay within the bounds.

        :return: how many entries were dropped, or ``None`` when ``hit`` is
            larger than ``max_entry_bytes`` (and not kept)
        """
        if hit.profile is None:
            size = _NEGATIVE_ENTRY + len(key)
        else:
            size = _footprint(hit.profile, self._max_entry_bytes)
        if size > self._max_entry_bytes:
            return None
        entries = self._entries
        old = entries.pop(key, None)
        if old is not None:
            self._bytes -= old[2]
        entries[key] = (expires_at, hit, size)
        self._bytes += size
        evicted = 0
        while len(entries) > self._max_entries or self._bytes > self._max_bytes:
            _, dropped = entries.popitem(last=False)
            self._bytes -= dropped[2]
            evicted += 1
        return evicted


def _footprint(profile: Profile, limit: int) -> int:
    """
    The memory ``profile`` takes, in bytes: the bound its client gave, or
    else a walk of it that stops once past ``limit`` (a profile from another
    source, which is then known to be too large).
    """
    if profile.footprint is not None:
        return profile.footprint
    getsizeof = sys.getsizeof
    total = 1024 + len(profile.external_id) + len(profile.id)
    stack: list[Any] = [profile.attributes]
    while stack:
        value = stack.pop()
        total += getsizeof(value)
        if isinstance(value, MappingProxyType):
            # The dict behind the view (its table: up to about 90 bytes
            # an entry), and its keys.
            total += 64 + 90 * len(value)
            for key, item in value.items():
                total += getsizeof(key)
                stack.append(item)
        elif isinstance(value, tuple):
            stack.extend(value)
        if total > limit:
            break
    return total
