"""
What a profile lookup can come to: the outcome names (the ``lookup``
label of the metrics and the call record), the :class:`LookupResult` a
lookup gives the session, prebuilt results for the outcomes without a
profile, and the :class:`LookupStats` the lookup counts.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

import attrs

from ivrproto.clients.profiles import Profile

__all__ = [
    "LookupResult",
    "LookupStats",
    "OUTCOMES",
    "HIT",
    "NEGATIVE_HIT",
    "FOUND",
    "NOT_FOUND",
    "FAILED",
    "TIMED_OUT",
    "RATE_LIMITED",
    "CIRCUIT_OPEN",
]


#: A profile served from the cache.
HIT = "hit"

#: "No profile" served from the cache (a 404 seen within ``negative_ttl``).
NEGATIVE_HIT = "negative-hit"

#: The source found a profile.
FOUND = "found"

#: The source answered that there is no profile (404).
NOT_FOUND = "not-found"

#: The source failed (or the fetch was cancelled at shutdown).
FAILED = "failed"

#: The caller's budget ran out first; the fetch goes on to fill the cache.
TIMED_OUT = "timed-out"

#: No fetch was made: the client-side rate limit is exhausted, or the
#: platform asked (429 with ``Retry-After``) to wait.
RATE_LIMITED = "rate-limited"

#: No fetch was made: the circuit breaker is open.
CIRCUIT_OPEN = "circuit-open"

OUTCOMES = frozenset(
    [HIT, NEGATIVE_HIT, FOUND, NOT_FOUND, FAILED, TIMED_OUT, RATE_LIMITED, CIRCUIT_OPEN]
)


@attrs.frozen
class LookupResult:
    """
    What a lookup answered.

    :ivar profile: the caller's profile, or ``None`` when there is none or it
        is not known
    :ivar outcome: what happened: one of :data:`OUTCOMES`
    """

    profile: Optional[Profile]
    outcome: str = attrs.field(validator=attrs.validators.in_(OUTCOMES))

    @property
    def attributes(self) -> Optional[Mapping[str, Any]]:
        """
        The profile attributes, or ``None`` without a profile.
        """
        return None if self.profile is None else self.profile.attributes


NEGATIVE_HIT_RESULT = LookupResult(None, NEGATIVE_HIT)

NOT_FOUND_RESULT = LookupResult(None, NOT_FOUND)


FAILED_RESULT = LookupResult(None, FAILED)

TIMED_OUT_RESULT = LookupResult(None, TIMED_OUT)


RATE_LIMITED_RESULT = LookupResult(None, RATE_LIMITED)

CIRCUIT_OPEN_RESULT = LookupResult(None, CIRCUIT_OPEN)


@attrs.define
class LookupStats:
    """
    Counters of a :class:`ProfileLookup`, for metrics.

    Every lookup ends in exactly one of the outcome counters (``hits`` to
    ``timed_out``) or in ``cancelled``, once answered.

    :ivar lookups: lookups asked for
    :ivar hits: answered from the cache with a profile
    :ivar negative_hits: answered from the cache with "no profile"
    :ivar found: answered by a fetch with a profile
    :ivar not_found: answered by a fetch with "no profile" (404)
    :ivar failed: answered by a failed (or, at shutdown, cancelled) fetch
    :ivar rate_limited: answered at once because the rate limit was
        exhausted, or the platform asked to wait
    :ivar pauses: 429 answers that paused every lookup
    :ivar circuit_open: answered at once because the breaker was open
    :ivar timed_out: answered when the caller's budget ran out
    :ivar cancelled: given up by the caller (its Deferred cancelled)
    :ivar shared: lookups that joined a fetch already in flight
    :ivar fetches: fetches started
    :ivar late_fills: fetches that ended after their first caller's budget
        and still filled the cache
    :ivar evictions: cache entries dropped to stay within ``max_entries``
        or ``max_bytes``
    :ivar too_large: profiles not cached because they are larger than
        ``max_entry_bytes`` (still given to their callers)
    """

    lookups: int = 0
    hits: int = 0
    negative_hits: int = 0
    found: int = 0
    not_found: int = 0
    failed: int = 0
    rate_limited: int = 0
    circuit_open: int = 0
    timed_out: int = 0
    cancelled: int = 0
    shared: int = 0
    fetches: int = 0
    late_fills: int = 0
    evictions: int = 0
    too_large: int = 0
    pauses: int = 0


#: The counter of :class:`LookupStats` each answer of a flight lands in.
LANDED_STATS = {
    FOUND: "found",
    NOT_FOUND: "not_found",
    HIT: "hits",
    NEGATIVE_HIT: "negative_hits",
    RATE_LIMITED: "rate_limited",
}
