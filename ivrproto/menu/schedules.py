"""
Opening hours as data: named schedules, each in an IANA time zone, with
weekly hours and dated exceptions, loaded from the ``[schedules]`` table and
checked when they are loaded.

A schedule is read on the wall clock of its zone: ``08:00-18:00`` opens at
08:00 local time whatever the offset from UTC is that day, so the days
daylight saving starts or ends need nothing special.  A wall time that does
not exist (the hour skipped in spring) is simply never seen; one that happens
twice (the hour repeated in autumn) is open or closed both times alike.

A range past midnight is written with ``+1`` on its end (``22:00-02:00+1``)
and belongs to the day it starts on.  A date's entry (``"2026-12-25" =
[]``, or ``"12-24" = ["08:00-12:00"]`` every year) replaces that day's
weekly hours.
"""

from __future__ import annotations

import datetime as _dt
import re
from typing import Any, Dict, Iterator, Mapping, Optional, Tuple
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import attrs

from ivrproto.errors import ConfigError

__all__ = ["Hours", "Schedule", "parse_schedules"]

#: The day names of weekly hours, Monday first (``date.weekday()`` order).
DAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
#: Names that stand for several days.
GROUPS = {"weekdays": DAYS[:5], "weekend": DAYS[5:]}
#: How far ahead ``ivr check`` looks for the next opening or closing.
HORIZON_DAYS = 400

_TIME = re.compile(r"^([01][0-9]|2[0-4]):([0-5][0-9])$")

Range = Tuple[int, int]  # (start, end) in minutes after the day's midnight; end <= 2880


@attrs.frozen
class Schedule:
    """
    One named schedule.

    :ivar time_zone: the IANA name of its zone (``Europe/Berlin``)
    :ivar weekly: the ranges of each day, Monday first
    :ivar dates: the ranges of given dates, replacing the weekly ones (an
        empty tuple: closed all day)
    :ivar yearly: the same for ``(month, day)``, every year; a dated entry
        wins over a yearly one
    """

    name: str
    time_zone: str
    weekly: Tuple[Tuple[Range, ...], ...]
    dates: Mapping[_dt.date, Tuple[Range, ...]] = attrs.field(factory=dict)
    yearly: Mapping[Tuple[int, int], Tuple[Range, ...]] = attrs.field(factory=dict)
    zone: ZoneInfo = attrs.field(init=False, eq=False, repr=False)

    @zone.default
    def _zone(self) -> ZoneInfo:
        return ZoneInfo(self.time_zone)

    def ranges_on(self, day: _dt.date) -> Tuple[Range, ...]:
        """
        The ranges that start on ``day``.
        """
        found = self.dates.get(day)
        if found is None:
            found = self.yearly.get((day.month, day.day))
        if found is None:
            found = self.weekly[day.weekday()]
        return found

    def is_open(self, seconds: float) -> bool:
        """
        Whether the schedule is open at ``seconds`` after the epoch (UTC).
        """
        local = _dt.datetime.fromtimestamp(seconds, self.zone)
        minute = local.hour * 60 + local.minute + local.second / 60
        day = local.date()
        if any(start <= minute < end for start, end in self.ranges_on(day)):
            return True
        yesterday = day - _dt.timedelta(days=1)
        return any(minute + 1440 < end for _, end in self.ranges_on(yesterday))

    def _boundaries(self, after: float) -> Iterator[float]:
        """
        Every instant after ``after`` where a range starts or ends, in order,
        for a year or so.
        """
        first = _dt.datetime.fromtimestamp(after, self.zone).date() - _dt.timedelta(days=1)
        instants = []
        for n in range(HORIZON_DAYS):
            day = first + _dt.timedelta(days=n)
            midnight = _dt.datetime.combine(day, _dt.time(0), tzinfo=self.zone)
            for start, end in self.ranges_on(day):
                for minute in (start, end):
                    # Aware arithmetic in one zone is wall-clock arithmetic.
                    at = (midnight + _dt.timedelta(minutes=minute)).timestamp()
                    if at > after:
                        instants.append(at)
        return iter(sorted(instants))

    def next_change(self, after: float, to_open: bool) -> Optional[float]:
        """
        The next instant after ``after`` at which the schedule opens
        (``to_open``) or closes, or ``None`` if it does not within
        :data:`HORIZON_DAYS`.
        """
        leaving = self.is_open(after) == to_open
        for at in self._boundaries(after):
            state = self.is_open(at)
            if leaving:
                leaving = state == to_open
            elif state == to_open:
                return at
        return None


@attrs.frozen
class Hours:
    """
    The state of the schedules when a call arrived: it chooses the call's
    menu, and the call keeps it to the end.

    :ivar open: the schedules open then
    :ivar schedules: every schedule's name
    :ivar closure: the emergency closure in force then, or ``None``
    """

    open: frozenset[str] = frozenset()
    schedules: Tuple[str, ...] = ()
    closure: Optional[Any] = None  # ivrproto.menu.closure.Notice

    @property
    def label(self) -> str:
        """
        ``closure``, or each schedule as ``name=open|closed``; ``always`` when
        there are none.
        """
        if self.closure is not None:
            return "closure"
        if not self.schedules:
            return "always"
        return ",".join(f"{n}={'open' if n in self.open else 'closed'}" for n in self.schedules)

    def to_json(self) -> Dict[str, Any]:
        """
        What the call's record says about the hours that served it.
        """
        return {
            "schedules": {n: "open" if n in self.open else "closed" for n in self.schedules},
            "closure": None if self.closure is None else self.closure.to_json(),
        }


def hours_at(
    schedules: Mapping[str, Schedule], seconds: float, closure: Optional[Any] = None
) -> Hours:
    """
    The state of ``schedules`` at ``seconds`` after the epoch.
    """
    return Hours(
        frozenset(n for n, s in schedules.items() if s.is_open(seconds)),
        tuple(schedules),
        closure,
    )


# --- loading and checking ----------------------------------------------------


def _minutes(text: str, where: str, what: str) -> int:
    found = _TIME.match(text.strip())
    if found is None or (found.group(1) == "24" and found.group(2) != "00"):
        raise ConfigError(where, f"{what} {text.strip()!r} is not a time of day (HH:MM)")
    return int(found.group(1)) * 60 + int(found.group(2))


def _range(value: Any, where: str) -> Range:
    if not isinstance(value, str) or value.count("-") != 1:
        raise ConfigError(where, 'must be a range of times such as "08:00-18:00"')
    start_text, end_text = value.split("-")
    next_day = end_text.strip().endswith("+1")
    if next_day:
        end_text = end_text.strip()[:-2]
    start = _minutes(start_text, where, "start")
    end = _minutes(end_text, where, "end")
    if start >= 1440:
        raise ConfigError(where, "a range cannot start at 24:00")
    if next_day:
        if end > start:
            raise ConfigError(where, f"{value!r} is longer than a day")
        return start, end + 1440
    if end <= start:
        raise ConfigError(
            where,
            f"{value!r} ends before it starts; a range past midnight is written "
            f"with +1 on its end ({start_text.strip()}-{end_text.strip()}+1)",
        )
    return start, end


def _ranges(value: Any, where: str) -> Tuple[Range, ...]:
    if value == "closed":
        return ()
    if not isinstance(value, list):
        raise ConfigError(where, 'must be a list of ranges such as ["08:00-18:00"], or "closed"')
    ranges = sorted(_range(v, f"{where}[{i}]") for i, v in enumerate(value))
    for (s1, e1), (s2, e2) in zip(ranges, ranges[1:]):
        if s2 < e1:
            raise ConfigError(where, f"ranges overlap: {_show((s1, e1))} and {_show((s2, e2))}")
    return tuple(ranges)


def _show(r: Range) -> str:
    def hm(m: int) -> str:
        return f"{m // 60 % 24 if m > 1440 else m // 60:02d}:{m % 60:02d}"

    return f"{hm(r[0])}-{hm(r[1])}" + ("+1" if r[1] > 1440 else "")


def _date_key(key: str, where: str) -> Tuple[Optional[_dt.date], Optional[Tuple[int, int]]]:
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", key):
        try:
            return _dt.date.fromisoformat(key), None
        except ValueError:
            raise ConfigError(where, f"{key!r} is not a date that exists") from None
    if re.fullmatch(r"\d{2}-\d{2}", key):
        month, day = int(key[:2]), int(key[3:])
        try:
            _dt.date(2000, month, day)  # a leap year: 02-29 exists
        except ValueError:
            raise ConfigError(where, f"{key!r} is not a day of the year that exists") from None
        return None, (month, day)
    raise ConfigError(where, "a date is YYYY-MM-DD (that day) or MM-DD (every year)")


def parse_schedule(name: str, data: Any, where: str) -> Schedule:
    """
    Load one ``[schedules.<name>]`` table.

    :raises ConfigError: naming the place in the file that is wrong
    """
    if not isinstance(data, dict):
        raise ConfigError(where, "must be a table")
    known = {"time_zone", "dates", *DAYS, *GROUPS}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"{where}.{unknown[0]}", "unknown setting")
    zone = data.get("time_zone")
    if not isinstance(zone, str) or not zone:
        raise ConfigError(f"{where}.time_zone", 'must name an IANA time zone ("Europe/Berlin")')
    try:
        ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"{where}.time_zone", f"unknown time zone {zone!r}") from None
    days: Dict[str, Tuple[Range, ...]] = {}
    for group, members in GROUPS.items():
        if group in data:
            both = [d for d in members if d in data]
            if both:
                raise ConfigError(f"{where}.{both[0]}", f"is already given by {where}.{group}")
            for day in members:
                days[day] = _ranges(data[group], f"{where}.{group}")
    for day in DAYS:
        if day in data:
            days[day] = _ranges(data[day], f"{where}.{day}")
    weekly = tuple(days.get(day, ()) for day in DAYS)
    for i, today in enumerate(weekly):
        late = [r for r in today if r[1] > 1440]
        tomorrow = weekly[(i + 1) % 7]
        if late and tomorrow and late[-1][1] - 1440 > tomorrow[0][0]:
            raise ConfigError(
                f"{where}.{DAYS[i]}",
                f"{_show(late[-1])} overlaps {DAYS[(i + 1) % 7]}'s {_show(tomorrow[0])}",
            )
    dates: Dict[_dt.date, Tuple[Range, ...]] = {}
    yearly: Dict[Tuple[int, int], Tuple[Range, ...]] = {}
    table = data.get("dates", {})
    if not isinstance(table, dict):
        raise ConfigError(f"{where}.dates", 'must be a table of "YYYY-MM-DD" = [ranges]')
    for key, value in table.items():
        here = f"{where}.dates.{key}"
        on, every_year = _date_key(key, here)
        ranges = _ranges(value, here)
        if on is not None:
            dates[on] = ranges
        else:
            assert every_year is not None
            yearly[every_year] = ranges
    return Schedule(name, zone, weekly, dates, yearly)


def parse_schedules(data: Any, where: str = "schedules") -> Dict[str, Schedule]:
    """
    Load the ``[schedules]`` table: one ``[schedules.<name>]`` table each.

    :raises ConfigError: naming the place in the file that is wrong
    """
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(where, "must be a table of [schedules.<name>] tables")
    return {name: parse_schedule(name, table, f"{where}.{name}") for name, table in data.items()}


def describe_schedule(schedule: Schedule, now: float) -> str:
    """
    One line for ``ivr check``: whether the schedule is open now, and its
    next opening and closing times in its zone.
    """

    def when(at: Optional[float]) -> str:
        if at is None:
            return f"not within {HORIZON_DAYS} days"
        return _dt.datetime.fromtimestamp(at, schedule.zone).strftime("%a %Y-%m-%d %H:%M %Z")

    state = "open" if schedule.is_open(now) else "closed"
    return (
        f"{schedule.name} ({schedule.time_zone}): {state} now; "
        f"next opens {when(schedule.next_change(now, True))}, "
        f"next closes {when(schedule.next_change(now, False))}"
    )
