"""
Fault injection: the canned answers (:class:`Fault`) that requests of one
kind get instead of the normal ones, queued or drawn at a rate
(:class:`Faults`).  How an endpoint answers with a fault is in
:mod:`ivrproto.emulator.endpoint`.
"""

from __future__ import annotations

import math
import random
from email.utils import formatdate
from typing import Any, Mapping, Optional

import attrs

__all__ = ["FAULT_KINDS", "TOKEN_RATE_LIMITED", "Fault", "Faults"]

#: The kinds of request faults can be injected into: the token endpoint,
#: the profile API, the External Contacts lookup (its own kind: a
#: ``"profile"`` fault does not touch it) and WebSocket upgrades.
FAULT_KINDS = ("token", "profile", "contacts", "websocket")

#: The body of an injected 400 on the token endpoint, unless one is given:
#: Genesys's way of saying its rate limit was hit.
TOKEN_RATE_LIMITED = {
    "error": "invalid_request",
    "error_description": "rate limit exceeded",
}


@attrs.frozen
class Fault:
    """
    A canned answer for requests of one kind.

    :ivar kind: one of :data:`FAULT_KINDS`
    :ivar status: the HTTP status to answer with; ``None`` answers normally
        (after ``delay``); ``0`` answers nothing and aborts the connection
        (after ``delay``)
    :ivar headers: extra response headers (``{"Retry-After": "2"}``)
    :ivar body: the response body: ``bytes``, ``str``, or a JSON value;
        ``None`` for a JSON error body that suits the kind and status (for
        the token endpoint: ``invalid_client`` on 401, and on 400 the
        rate-limit answer :data:`TOKEN_RATE_LIMITED`)
    :ivar delay: seconds to wait before answering
    :ivar retry_after: when given, a ``Retry-After`` header saying this
        many seconds, computed when the answer is sent
    :ivar retry_after_date: write ``retry_after`` as an HTTP-date (the
        emulator's time plus ``retry_after``) instead of delay-seconds
    """

    kind: str
    status: Optional[int]
    headers: Mapping[str, str] = attrs.field(factory=dict)
    body: Any = None
    delay: float = 0.0
    retry_after: Optional[float] = None
    retry_after_date: bool = False

    def retry_after_header(self, now: float) -> Optional[str]:
        """
        :param now: the emulator's time, in seconds since the epoch
        :return: the ``Retry-After`` value this fault sends, if any
        """
        if self.retry_after is None:
            return None
        if self.retry_after_date:
            return formatdate(now + self.retry_after, usegmt=True)
        return str(math.ceil(self.retry_after))


class Faults:
    """
    Fault injection.

    Each fault added with :meth:`add` answers the next ``count`` requests of
    its kind, in the order the faults were added.  A request of a kind with
    no such fault pending fails with the probability set by
    :meth:`set_failure_rate`, drawn from a seeded generator so that a run
    can be repeated.
    """

    def __init__(self) -> None:
        self._queues: dict[str, list[list[Any]]] = {kind: [] for kind in FAULT_KINDS}
        self._rates: dict[str, tuple[float, Fault, random.Random]] = {}
        #: how many requests of each kind got an injected fault
        self.injected: dict[str, int] = {kind: 0 for kind in FAULT_KINDS}

    def add(
        self,
        kind: str,
        status: Optional[int] = None,
        headers: Optional[Mapping[str, str]] = None,
        body: Any = None,
        count: int = 1,
        delay: float = 0.0,
        retry_after: Optional[float] = None,
        retry_after_date: bool = False,
    ) -> Fault:
        """
        Answer the next ``count`` requests of ``kind`` with ``status``.

        ``kind="websocket"`` refuses the next upgrades with ``status`` (the
        WebSocket kind takes neither ``headers``, ``body``, ``delay`` nor
        ``retry_after``).

        Examples: ``add("profile", 429, retry_after=2)`` (delay-seconds),
        ``add("token", 429, retry_after=2, retry_after_date=True)``
        (HTTP-date), ``add("token", 400)`` (Genesys's rate-limit answer),
        ``add("contacts", 503, count=5)``, ``add("profile", delay=3)``
        (slow), ``add("profile", 0)`` (connection dropped).

        :param kind: one of :data:`FAULT_KINDS`
        :param status: see :class:`Fault`
        :param headers: see :class:`Fault`
        :param body: see :class:`Fault`
        :param count: how many requests get this answer
        :param delay: see :class:`Fault`
        :param retry_after: see :class:`Fault`
        :param retry_after_date: see :class:`Fault`
        :return: the fault
        """
        if count < 1:
            raise ValueError("count must be at least 1")
        fault = self._fault(kind, status, headers, body, delay, retry_after, retry_after_date)
        self._queues[kind].append([fault, count])
        return fault

    def set_failure_rate(
        self,
        kind: str,
        rate: float,
        status: Optional[int] = 503,
        *,
        seed: Any = None,
        headers: Optional[Mapping[str, str]] = None,
        body: Any = None,
        delay: float = 0.0,
        retry_after: Optional[float] = None,
        retry_after_date: bool = False,
    ) -> Optional[Fault]:
        """
        Make a fraction of the requests of ``kind`` fail, for load tests.

        Each request of ``kind`` that no :meth:`add` fault answers gets the
        fault with probability ``rate``, drawn from ``random.Random(seed)``
        (one generator per kind, so the same requests fail on every run with
        the same seed).  A rate of 0 turns it off.

        :param rate: the probability, from 0 to 1
        :param status: and the other parameters: as for :meth:`add`
        :param seed: the seed of the generator; ``None`` seeds from the OS
        :return: the fault given to failing requests, or ``None`` when off
        """
        if not (0.0 <= rate <= 1.0):
            raise ValueError("rate must be between 0 and 1")
        fault = self._fault(kind, status, headers, body, delay, retry_after, retry_after_date)
        if rate == 0:
            self._rates.pop(kind, None)
            return None
        self._rates[kind] = (float(rate), fault, random.Random(seed))
        return fault

    def failure_rate(self, kind: str) -> float:
        """
        :return: the probability set by :meth:`set_failure_rate` for ``kind``
        """
        entry = self._rates.get(kind)
        return 0.0 if entry is None else entry[0]

    def pending(self, kind: str) -> int:
        """
        :return: how many more requests of ``kind`` will get a fault added
            with :meth:`add`
        """
        return sum(count for _, count in self._queues[kind])

    def clear(self) -> None:
        """
        Drop every pending fault and every failure rate.
        """
        for queue in self._queues.values():
            queue.clear()
        self._rates.clear()

    def _fault(
        self,
        kind: str,
        status: Optional[int],
        headers: Optional[Mapping[str, str]],
        body: Any,
        delay: float,
        retry_after: Optional[float],
        retry_after_date: bool,
    ) -> Fault:
        if kind not in self._queues:
            raise ValueError(f"unknown fault kind {kind!r} (known: {', '.join(FAULT_KINDS)})")
        if not delay >= 0:
            raise ValueError("delay must not be negative")
        if status is not None and status != 0 and not 100 <= status <= 599:
            raise ValueError(f"bad HTTP status {status}")
        if retry_after is not None and not (0 <= retry_after < 1e9):
            raise ValueError("retry_after must be a number of seconds, 0 or more")
        if kind == "websocket" and (
            status is None
            or status == 0
            or headers
            or body is not None
            or delay
            or retry_after is not None
        ):
            raise ValueError("a websocket fault takes only an HTTP error status")
        return Fault(
            kind,
            status,
            dict(headers or {}),
            body,
            float(delay),
            None if retry_after is None else float(retry_after),
            bool(retry_after_date),
        )

    def take(self, kind: str) -> Optional[Fault]:
        """
        The fault for the request of ``kind`` that just came, if it gets one
        (counted in :attr:`injected`).

        :return: the oldest pending :meth:`add` fault of ``kind``, else, at
            the :meth:`set_failure_rate` rate, that fault, else ``None``
        """
        queue = self._queues[kind]
        fault: Optional[Fault] = None
        if queue:
            entry = queue[0]
            entry[1] -= 1
            if entry[1] == 0:
                del queue[0]
            fault = entry[0]
        else:
            rated = self._rates.get(kind)
            if rated is not None:
                rate, candidate, generator = rated
                if generator.random() < rate:
                    fault = candidate
        if fault is not None:
            self.injected[kind] += 1
        return fault

    def take_refusal(self, kind: str) -> Optional[int]:
        """
        As :meth:`take`, for a kind whose faults only refuse (``websocket``).

        :return: the status to refuse with, or ``None``
        """
        fault = self.take(kind)
        return None if fault is None else fault.status

    #: The name this had when it was private (tests still use it).
    _take_refusal = take_refusal
