"""
Rate-limited log lines for input an outsider controls.

Bad input (a malformed frame, a hostile intake request) is logged so that an
operator can see it, but a peer that sends a million bad frames must not
write a million lines.  :class:`LogThrottle` lets the first few lines of each
kind through in every interval and counts the rest; the next line of that
kind that goes through says how many were suppressed.
"""

from __future__ import annotations

from typing import Any, Dict, Tuple

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger, LogLevel


class LogThrottle:
    """
    At most ``burst`` lines of each kind every ``interval`` seconds.

    :param clock: the time source (``IReactorTime``)
    :param log: where the lines go
    :param burst: lines of one kind let through in each interval
    :param interval: the interval's length, in seconds
    """

    def __init__(
        self, clock: IReactorTime, log: Logger, burst: int = 5, interval: float = 60.0
    ) -> None:
        self._clock = clock
        self._log = log
        self._burst = burst
        self._interval = interval
        # kind -> (interval start, lines emitted in it, lines suppressed)
        self._windows: Dict[str, Tuple[float, int, int]] = {}

    def emit(self, kind: str, level: LogLevel, format: str, **fields: Any) -> bool:
        """
        Log one line of ``kind``, unless that kind has used up its interval.

        When lines were suppressed, the line that goes through carries the
        field ``suppressed`` and ends with a count of them.

        :return: whether the line was written
        """
        now = self._clock.seconds()
        start, emitted, suppressed = self._windows.get(kind, (now, 0, 0))
        if now - start >= self._interval:
            start, emitted = now, 0
        if emitted >= self._burst:
            self._windows[kind] = (start, emitted, suppressed + 1)
            return False
        self._windows[kind] = (start, emitted + 1, 0)
        if suppressed:
            format += " ({suppressed} similar lines suppressed)"
            fields["suppressed"] = suppressed
        self._log.emit(level, format, **fields)
        return True

    def warn(self, kind: str, format: str, **fields: Any) -> bool:
        "Like :meth:`emit` at ``warn`` level."
        return self.emit(kind, LogLevel.warn, format, **fields)

    def suppressed(self, kind: str) -> int:
        "How many lines of ``kind`` are waiting to be counted."
        return self._windows.get(kind, (0.0, 0, 0))[2]
