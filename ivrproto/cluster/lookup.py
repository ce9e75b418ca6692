"""
What a :class:`~ivrproto.clients.lookup.ProfileLookup` asks the shared
state before and after a fetch: the shared profile cache (behind its local
LRU) and the shared rate limit with its pause.

Before a fetch, :meth:`SharedProfiles.before_fetch` reads the shared cache
and, on a miss, asks the shared window for a slot: two round trips at most,
each bounded by :meth:`~ivrproto.cluster.redis.SharedRedis.run`.  After a
fetch, :meth:`SharedProfiles.fetched` stores the answer for the other
instances, and :meth:`SharedProfiles.pause` spreads a ``429``'s pause.

A profile is stored in the platform's own answer format (its
:class:`~ivrproto.clients.profiles.Shape`: ``id``, the attributes object,
the modification date), and read back with the same parser a fresh answer
goes through.  Nothing of the profile is in a key or a log line.
"""

from __future__ import annotations

from typing import Any, Optional, Union

import attrs
import orjson
from twisted.internet.defer import Deferred

from ivrproto.clients.profiles import Profile, Shape
from ivrproto.cluster.cache import Hit, Negative, SharedProfileCache
from ivrproto.cluster.ratelimit import Admission, SharedRequestWindow
from ivrproto.errors import ProfileError

__all__ = ["Cached", "SharedProfiles", "encode_profile"]


@attrs.frozen
class Cached:
    """
    An answer found in the shared cache.

    :ivar profile: the profile, or ``None`` for a cached "no such profile"
    :ivar left: seconds the shared entry has left
    """

    profile: Optional[Profile]
    left: float


def _plain(value: Any) -> Any:
    # The read-only views a Profile holds, for the JSON encoder.
    return dict(value)


def encode_profile(shape: Shape, profile: Profile) -> bytes:
    """
    ``profile`` as the endpoint of ``shape`` answers it: what
    :meth:`Shape.read` reads back into an equal profile.
    """
    body: dict[str, Any] = {"id": profile.id, shape.attributes: profile.attributes}
    if profile.date_modified is not None:
        body[shape.date_modified] = profile.date_modified
    if shape.external_id is not None:
        body[shape.external_id] = profile.external_id
    return orjson.dumps(body, default=_plain)


def _malformed(what: str) -> ProfileError:
    return ProfileError("shared profile cache", 200, f"malformed entry: {what}")


class SharedProfiles:
    """
    The shared cache and rate limit of one profile source.

    :param window: the shared window (its ``local`` is the lookup's own)
    :param cache: the shared cache, of this source's kind
    :param shape: the source's answer format
    """

    def __init__(self, window: SharedRequestWindow, cache: SharedProfileCache, shape: Shape) -> None:
        self.window = window
        self.cache = cache
        self.shape = shape
        #: lookups answered from the shared cache (their callers are counted
        #: as the lookup's hits or negative hits)
        self.hits = 0
        #: the last pause sent to Redis (fires once it is written, or not)
        self.pausing: Optional[Deferred[Any]] = None

    def before_fetch(self, external_id: str) -> "Deferred[Union[Cached, Admission]]":
        """
        The shared cache's answer for ``external_id``, or, without one,
        whether a fetch may be sent now.

        :return: a Deferred that never fails
        """
        d = self.cache.get_entry(external_id)

        def read(entry: "tuple[Any, float]") -> Any:
            result, left = entry
            if isinstance(result, Negative):
                return Cached(None, left)
            if isinstance(result, Hit):
                try:
                    return Cached(self.shape.read(result.body, external_id, _malformed), left)
                except ProfileError:
                    pass  # an entry this version cannot read: a miss
            return self.window.try_take()

        return d.addCallback(read)

    def fetched(
        self, external_id: str, profile: Optional[Profile], ttl: float, negative_ttl: float
    ) -> None:
        """
        Store what a fetch answered, for every instance (nothing waits for
        it; Redis being unavailable only skips it).
        """
        if profile is None:
            if negative_ttl >= 0.001:
                self.cache.set_negative(external_id, negative_ttl)
        elif ttl >= 0.001:
            self.cache.set(external_id, encode_profile(self.shape, profile), ttl)

    def pause(self, seconds: float) -> None:
        "Spread the platform's pause to every instance (and this one)."
        self.pausing = self.window.pause_for(max(seconds, 0.001))
