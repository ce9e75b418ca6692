"""
When a :class:`~ivrproto.clients.oauth.TokenSource` asks the token endpoint
again after a failed fetch: the :class:`TokenBackoff` keeps the failures in
a row and answers two questions, "may callers without a token have a fetch
now?" (the cool-down) and "may a background refresh start now?" (the
refresh backoff).  It holds time passed in, never the reactor, and logs
nothing.
"""

from __future__ import annotations

import math
from typing import Optional

from ivrproto.clients._retry import RetryPolicy
from ivrproto.errors import TokenError

__all__ = ["TokenBackoff"]

# 2 ** 62 seconds is far beyond any cap.
_MAX_EXPONENT = 62


class TokenBackoff:
    """
    The refresh and cool-down policy of one token source, and its state.

    After a 401 (the client credentials refused), fetches fail at once for
    ``refused_cooldown`` and no background refresh starts meanwhile.  After
    any other failed fetch, callers without a valid token fail at once for
    ``failure_cooldown``, doubled with each failed fetch in a row up to
    ``failure_cooldown_cap``, and at least until the ``Retry-After`` of a
    throttled answer (up to that cap too); 0 turns that off.  After a
    failed background refresh, the next one waits a backoff of ``retry``
    that grows with each failure.  A fetch that succeeds forgets it all.

    :param retry: the backoff of background refreshes
    :param refused_cooldown: the cool-down after a 401
    :param failure_cooldown: the first cool-down after another failure
    :param failure_cooldown_cap: the longest one
    """

    def __init__(
        self,
        retry: RetryPolicy,
        refused_cooldown: float,
        failure_cooldown: float,
        failure_cooldown_cap: float,
    ) -> None:
        if not refused_cooldown >= 0:
            raise ValueError("refused_cooldown must not be negative")
        if not (0 <= failure_cooldown <= failure_cooldown_cap < math.inf):
            raise ValueError("failure_cooldown must be between 0 and a finite failure_cooldown_cap")
        self._retry = retry
        self.refused_cooldown = refused_cooldown
        self.failure_cooldown = failure_cooldown
        self.failure_cooldown_cap = failure_cooldown_cap
        # Failed background refreshes since the last token, and when the
        # next one may start.
        self._refresh_failures = 0
        self._next_refresh_at = 0.0
        # The invalid_client error, and until when it is repeated at once.
        self._refusal: Optional[TokenError] = None
        self._refused_until = 0.0
        # The error of the last failed fetch, and until when callers without
        # a valid token get it at once; failed fetches in a row; until when
        # the endpoint asked (429 Retry-After) not to be asked again.
        self._last_error: Optional[TokenError] = None
        self._cooldown_until = 0.0
        self._fetch_failures = 0
        self._throttled_until = 0.0

    @property
    def refresh_failures(self) -> int:
        """
        Failed fetches in a row while a token was still cached.
        """
        return self._refresh_failures

    def blocking(self, now: float) -> Optional[TokenError]:
        """
        The error callers without a valid token get at once, without a
        request, while the cool-down after a failed fetch holds; else
        ``None``.
        """
        if self._last_error is not None and now < self._cooldown_until:
            return self._last_error
        return None

    def cooldown_left(self, now: float) -> float:
        """
        Seconds the cool-down still holds (0 when over).
        """
        return max(0.0, self._cooldown_until - now)

    def may_refresh(self, now: float) -> bool:
        """
        Whether a background refresh may start: its backoff is over and the
        credentials were not just refused.
        """
        if now < self._next_refresh_at:
            return False
        return self._refusal is None or now >= self._refused_until

    def throttled(self, now: float, delay: float) -> None:
        """
        The endpoint asked not to be asked for ``delay`` seconds: the
        cool-down after this fetch lasts at least that long.
        """
        self._throttled_until = max(self._throttled_until, now + delay)

    def succeeded(self) -> None:
        """
        A fetch got a token: every failure is forgotten.
        """
        self._refresh_failures = 0
        self._next_refresh_at = 0.0
        self._refusal = None
        self._last_error = None
        self._fetch_failures = 0

    def failed(self, error: TokenError, now: float) -> None:
        """
        A fetch failed with ``error``: start its cool-down.
        """
        self._fetch_failures += 1
        if error.status == 401:
            self._refusal = error
            self._refused_until = now + self.refused_cooldown
            cooldown = self.refused_cooldown
        else:
            exponent = min(self._fetch_failures - 1, _MAX_EXPONENT)
            cooldown = min(self.failure_cooldown_cap, self.failure_cooldown * float(2**exponent))
            if self.failure_cooldown > 0:
                cooldown = max(cooldown, min(self._throttled_until - now, self.failure_cooldown_cap))
        self._last_error = error
        self._cooldown_until = now + cooldown

    def refresh_failed(self, now: float) -> float:
        """
        The failed fetch was a refresh while a token is still cached: the
        next one waits a backoff.

        :return: that backoff, in seconds
        """
        delay = self._retry.backoff(self._refresh_failures)
        self._refresh_failures += 1
        self._next_refresh_at = now + delay
        return delay
