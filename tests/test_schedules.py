"""
Opening hours (:mod:`ivrproto.menu.schedules`): loading and checking schedules,
reading them on their zone's wall clock across daylight-saving changes, the
``{open = ...}`` rule, closed-hours menus, and the hours a call keeps from
its arrival to its end.
"""

from __future__ import annotations

import copy
import datetime as dt
import io
from pathlib import Path
from typing import Any, Optional
from zoneinfo import ZoneInfo

import attrs
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from ivrproto.session.runner import CallContext, CallRunner
from ivrproto.session.registry import CallRegistry
from ivrproto.cli.codes import CommandLineError as UsageError
from ivrproto.cli.check import describe_config
from ivrproto.cli.main import main
from ivrproto.cli.simulate import parse_at
from ivrproto.config import load_config
from ivrproto.errors import ConfigError
from ivrproto.clients.outcomes import LookupResult
from ivrproto.menu.book import MenuBook
from ivrproto.menu.load import parse_menu
from ivrproto.messages import Play, Transfer
from ivrproto.menu.schedules import Hours, Schedule, parse_schedule
from tests.fakes import RecordingConnection

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
HOURS = str(EXAMPLES / "hours.toml")
ENV = {"CLIENT_ID": "a", "CLIENT_SECRET": "b"}
AUDIO = "https://example.com/ivr/audio/"


def local(zone: str, *when: int, fold: int = 0) -> float:
    """Seconds after the epoch of a wall time in ``zone``."""
    return dt.datetime(*when, tzinfo=ZoneInfo(zone), fold=fold).timestamp()  # type: ignore[misc]


def utc(*when: int) -> float:
    return dt.datetime(*when, tzinfo=dt.timezone.utc).timestamp()  # type: ignore[misc]


def schedule(**table: Any) -> Schedule:
    table.setdefault("time_zone", "Europe/Berlin")
    return parse_schedule("s", table, "schedules.s")


def every_day(*ranges: str) -> dict[str, Any]:
    return {"weekdays": list(ranges), "weekend": list(ranges)}


def menu_table(**overrides: Any) -> dict[str, Any]:
    """
    A ``[menu]`` whose option 1 (agents) is offered only while ``agents``
    is open, and whose option 2 goes to a sub-menu that has the same rule.
    """
    table: dict[str, Any] = {
        "targets": {"agents": "ext:agents", "op": "ext:op", "callback": "ext:callback"},
        "operator": "op",
        "options": [
            {"key": "1", "prompt": "agents.mp3", "action": "agents", "when": {"open": "agents"}},
            {"key": "2", "prompt": "more.mp3", "submenu": "more"},
            {"key": "0", "prompt": "op.mp3", "action": "op"},
        ],
        "menus": {
            "more": {
                "options": [
                    {"key": "1", "prompt": "agents.mp3", "action": "agents",
                     "when": {"open": "agents"}},
                    {"key": "0", "prompt": "op.mp3", "action": "op"},
                ]
            }
        },
    }
    table.update(overrides)
    return table


SCHEDULES = {"agents": {"time_zone": "Europe/Berlin", "weekdays": ["08:00-18:00"]}}


def book(menu: Optional[dict[str, Any]] = None, schedules: Any = SCHEDULES, **kw: Any) -> MenuBook:
    return parse_menu(menu or menu_table(), AUDIO, schedules=copy.deepcopy(schedules), **kw)


class ScheduleLoadTests(SynchronousTestCase):
    """
    What a schedule refuses when it is loaded, and where it says so.
    """

    def refused(self, key: str, **table: Any) -> str:
        with self.assertRaises(ConfigError) as e:
            schedule(**table)
        self.assertEqual(e.exception.key, key)
        return e.exception.reason

    def test_unknown_time_zone(self) -> None:
        """An IANA name that does not exist is refused."""
        self.refused("schedules.s.time_zone", time_zone="Europe/Atlantis")
        self.refused("schedules.s.time_zone", time_zone="../../etc/passwd")

    def test_overlapping_ranges(self) -> None:
        """Two ranges of a day that overlap are refused."""
        reason = self.refused("schedules.s.monday", monday=["08:00-12:00", "11:30-14:00"])
        self.assertIn("overlap", reason)

    def test_inverted_range(self) -> None:
        """A range that ends before it starts is refused, pointing at +1 for past midnight."""
        reason = self.refused("schedules.s.monday[0]", monday=["18:00-08:00"])
        self.assertIn("18:00-08:00+1", reason)
        self.refused("schedules.s.monday[0]", monday=["08:00-08:00"])

    def test_range_longer_than_a_day(self) -> None:
        """A +1 range that ends after it started the day before is refused."""
        self.assertIn("longer than a day", self.refused("schedules.s.monday[0]", monday=["08:00-09:00+1"]))

    def test_not_a_time(self) -> None:
        """25:00 and 24:30 are not times of day."""
        self.refused("schedules.s.monday[0]", monday=["08:00-25:00"])
        self.refused("schedules.s.monday[0]", monday=["08:00-24:30"])
        self.assertEqual(schedule(monday=["20:00-24:00"]).weekly[0], ((1200, 1440),))

    def test_past_midnight_overlapping_the_next_day(self) -> None:
        """A range past midnight that runs into the next day's first range is refused."""
        self.refused("schedules.s.monday", monday=["20:00-03:00+1"], tuesday=["02:00-05:00"])

    def test_dates_that_do_not_exist(self) -> None:
        """2026-02-30 and every year's 02-30 are refused; 02-29 is a day of the year."""
        self.refused("schedules.s.dates.2026-02-30", dates={"2026-02-30": []})
        self.refused("schedules.s.dates.02-30", dates={"02-30": "closed"})
        self.refused("schedules.s.dates.christmas", dates={"christmas": []})
        self.assertIn((2, 29), schedule(dates={"02-29": []}).yearly)

    def test_a_day_given_twice(self) -> None:
        """weekdays and monday cannot both be given."""
        self.refused("schedules.s.monday", weekdays=["08:00-18:00"], monday=["09:00-10:00"])

    def test_unknown_setting(self) -> None:
        """A misspelt day is not silently closed."""
        self.refused("schedules.s.munday", munday=["08:00-18:00"])


class ScheduleReferenceTests(SynchronousTestCase):
    """
    What the menu refuses about the schedules it names.
    """

    def refused(self, key: str, **kw: Any) -> str:
        with self.assertRaises(ConfigError) as e:
            book(**kw)
        self.assertEqual(e.exception.key, key)
        return e.exception.reason

    def test_unused_schedule(self) -> None:
        """A schedule that no rule and no closed_hours names is refused."""
        schedules = dict(SCHEDULES, spare={"time_zone": "UTC", "weekdays": ["08:00-09:00"]})
        self.assertIn("not used", self.refused("schedules.spare", schedules=schedules))

    def test_rule_naming_a_missing_schedule(self) -> None:
        """{open = "nobody"} with no [schedules.nobody] is refused."""
        table = menu_table()
        table["options"][0]["when"] = {"not": {"open": "nobody"}}
        self.assertIn("'nobody'", self.refused("menu.options[0].when", menu=table))

    def test_closed_hours_naming_a_missing_schedule_or_menu(self) -> None:
        """closed_hours must name a schedule and a menu that exist."""
        table = menu_table(closed_hours={"schedule": "nobody", "menu": "more"})
        self.refused("menu.closed_hours.schedule", menu=table)
        table = menu_table(closed_hours={"schedule": "agents", "menu": "nowhere"})
        self.refused("menu.closed_hours.menu", menu=table)

    def test_open_rule_must_stand_alone(self) -> None:
        """{open = ..., attribute = ...} in one table is refused."""
        table = menu_table()
        table["options"][0]["when"] = {"open": "agents", "attribute": "x"}
        self.refused("menu.options[0].when", menu=table)

    def test_default_options_take_hours_rules_only(self) -> None:
        """A default option may test the hours, not a profile attribute."""
        table = menu_table()
        table["default"] = [
            {"key": "1", "prompt": "agents.mp3", "action": "agents", "when": {"open": "agents"}},
            {"key": "0", "prompt": "op.mp3", "action": "op"},
        ]
        b = book(table)
        closed = b.hours_at(local("Europe/Berlin", 2026, 12, 5, 10, 0))
        self.assertEqual(b.menu_for(None, hours=closed).keys, ("0",))
        table["default"][0]["when"] = {"attribute": "x", "exists": True}
        self.refused("menu.default[0].when", menu=table)


class WallClockTests(SynchronousTestCase):
    """
    Schedules follow their zone's wall clock: daylight-saving changes in
    both directions, ranges past midnight, holidays.
    """

    def test_berlin_summer_time_starts(self) -> None:
        """On 2026-03-29 Berlin opens at 08:00 CEST (06:00 UTC), an hour earlier in UTC than the day before."""
        s = schedule(**every_day("08:00-18:00"))
        self.assertFalse(s.is_open(utc(2026, 3, 28, 6, 30)))  # 07:30 CET
        self.assertTrue(s.is_open(utc(2026, 3, 28, 7, 30)))  # 08:30 CET
        self.assertTrue(s.is_open(utc(2026, 3, 29, 6, 30)))  # 08:30 CEST
        self.assertFalse(s.is_open(utc(2026, 3, 29, 5, 30)))  # 07:30 CEST
        self.assertTrue(s.is_open(utc(2026, 3, 28, 16, 30)))  # 17:30 CET
        self.assertFalse(s.is_open(utc(2026, 3, 29, 16, 30)))  # 18:30 CEST

    def test_berlin_skipped_hour(self) -> None:
        """A range through the hour skipped in spring ends when the clock jumps to 03:00."""
        s = schedule(sunday=["01:00-02:30"])
        self.assertTrue(s.is_open(utc(2026, 3, 29, 0, 45)))  # 01:45 CET
        self.assertFalse(s.is_open(utc(2026, 3, 29, 1, 0)))  # 03:00 CEST

    def test_berlin_summer_time_ends(self) -> None:
        """On 2026-10-25 the repeated 02:00-03:00 is open both times, and 08:00 is 07:00 UTC."""
        s = schedule(sunday=["02:00-02:30", "08:00-18:00"], saturday=["08:00-18:00"])
        self.assertTrue(s.is_open(local("Europe/Berlin", 2026, 10, 25, 2, 15, fold=0)))
        self.assertTrue(s.is_open(local("Europe/Berlin", 2026, 10, 25, 2, 15, fold=1)))
        self.assertEqual(
            local("Europe/Berlin", 2026, 10, 25, 2, 15, fold=1)
            - local("Europe/Berlin", 2026, 10, 25, 2, 15, fold=0),
            3600,
        )
        self.assertFalse(s.is_open(utc(2026, 10, 25, 0, 45)))  # 02:45 CEST
        self.assertFalse(s.is_open(utc(2026, 10, 25, 1, 45)))  # 02:45 CET
        self.assertTrue(s.is_open(utc(2026, 10, 24, 6, 30)))  # 08:30 CEST
        self.assertFalse(s.is_open(utc(2026, 10, 25, 6, 30)))  # 07:30 CET
        self.assertTrue(s.is_open(utc(2026, 10, 25, 7, 0)))  # 08:00 CET

    def test_new_york_both_changes(self) -> None:
        """America/New_York: 09:00 is 13:00 UTC in summer time (from 2026-03-08 to 2026-11-01), 14:00 UTC outside."""
        s = schedule(time_zone="America/New_York", **every_day("09:00-17:00"))
        self.assertFalse(s.is_open(utc(2026, 3, 7, 13, 30)))  # 08:30 EST
        self.assertTrue(s.is_open(utc(2026, 3, 8, 13, 30)))  # 09:30 EDT
        self.assertTrue(s.is_open(utc(2026, 10, 31, 13, 30)))  # 09:30 EDT
        self.assertFalse(s.is_open(utc(2026, 11, 1, 13, 30)))  # 08:30 EST
        self.assertTrue(s.is_open(utc(2026, 11, 1, 14, 0)))  # 09:00 EST

    def test_range_past_midnight(self) -> None:
        """Friday 22:00-02:00+1 is open into Saturday night and belongs to Friday."""
        s = schedule(friday=["22:00-02:00+1"], dates={"2026-12-19": [], "2026-12-25": []})
        berlin = "Europe/Berlin"
        self.assertFalse(s.is_open(local(berlin, 2026, 12, 4, 21, 59)))
        self.assertTrue(s.is_open(local(berlin, 2026, 12, 4, 23, 0)))
        self.assertTrue(s.is_open(local(berlin, 2026, 12, 5, 1, 59)))
        self.assertFalse(s.is_open(local(berlin, 2026, 12, 5, 2, 0)))
        # A holiday on the Saturday leaves Friday's night alone...
        self.assertTrue(s.is_open(local(berlin, 2026, 12, 19, 1, 0)))
        # ...and one on the Friday takes it all, into Saturday.
        self.assertFalse(s.is_open(local(berlin, 2026, 12, 25, 23, 0)))
        self.assertFalse(s.is_open(local(berlin, 2026, 12, 26, 1, 0)))

    def test_holiday_on_a_weekday(self) -> None:
        """Christmas (a Friday in 2026) is closed every year; Christmas Eve has morning hours; a date wins over MM-DD."""
        s = schedule(
            weekdays=["08:00-18:00"],
            dates={"12-25": "closed", "12-24": ["08:00-12:00"], "2027-12-24": []},
        )
        berlin = "Europe/Berlin"
        self.assertTrue(s.is_open(local(berlin, 2026, 12, 23, 15, 0)))
        self.assertTrue(s.is_open(local(berlin, 2026, 12, 24, 11, 0)))
        self.assertFalse(s.is_open(local(berlin, 2026, 12, 24, 13, 0)))
        self.assertFalse(s.is_open(local(berlin, 2026, 12, 25, 10, 0)))
        self.assertFalse(s.is_open(local(berlin, 2027, 12, 24, 10, 0)))
        self.assertTrue(s.is_open(local(berlin, 2026, 12, 28, 10, 0)))

    def test_next_opening_and_closing(self) -> None:
        """From Christmas Day the next opening is Monday 08:00, the next closing Monday 12:30; across the spring change too."""
        s = load_config(HOURS, ENV).menu.schedules["agents"]
        now = local("Europe/Berlin", 2026, 12, 25, 10, 0)
        self.assertEqual(s.next_change(now, True), local("Europe/Berlin", 2026, 12, 28, 8, 0))
        self.assertEqual(s.next_change(now, False), local("Europe/Berlin", 2026, 12, 28, 12, 30))
        daily = schedule(**every_day("08:00-18:00"))
        self.assertEqual(daily.next_change(utc(2026, 3, 28, 20, 0), True), utc(2026, 3, 29, 6, 0))
        self.assertIsNone(schedule().next_change(now, True))


class MenuHoursTests(SynchronousTestCase):
    """
    The menu follows the hours: options offered only while open, closed-hours
    variants, and built menus shared between calls with the same hours.
    """

    def test_option_only_while_open(self) -> None:
        """The agents' option is offered while their schedule is open, and not otherwise."""
        b = book()
        open_ = b.hours_at(local("Europe/Berlin", 2026, 12, 4, 10, 0))
        closed = b.hours_at(local("Europe/Berlin", 2026, 12, 4, 19, 0))
        self.assertEqual(open_.open, {"agents"})
        self.assertEqual(b.menu_for({}, hours=open_).keys, ("1", "2", "0"))
        self.assertEqual(b.menu_for({}, hours=closed).keys, ("2", "0"))
        # Without hours (as before schedules), every schedule counts as open.
        self.assertEqual(b.menu_for({}).keys, ("1", "2", "0"))

    def test_built_menus_are_shared(self) -> None:
        """Two calls with the same hours share one built menu; other hours build another."""
        b = book()
        one = b.menu_for({}, hours=b.hours_at(local("Europe/Berlin", 2026, 12, 4, 10, 0)))
        two = b.menu_for({}, hours=b.hours_at(local("Europe/Berlin", 2026, 12, 4, 11, 0)))
        other = b.menu_for({}, hours=b.hours_at(local("Europe/Berlin", 2026, 12, 4, 19, 0)))
        self.assertIs(one, two)
        self.assertIsNot(one, other)

    def test_closed_hours_variant(self) -> None:
        """While agents is closed, the start menu is the after-hours one."""
        table = menu_table(closed_hours={"schedule": "agents", "menu": "after"})
        table["options"][1]["submenu"] = "after"
        table["menus"] = {
            "after": {"intro": "closed.mp3", "options": [
                {"key": "1", "prompt": "callback.mp3", "action": "callback"}]}
        }
        b = book(table)
        closed = b.hours_at(local("Europe/Berlin", 2026, 12, 6, 10, 0))  # a Sunday
        menu = b.menu_for({}, hours=closed)
        self.assertEqual((menu.name, menu.keys), ("after", ("1",)))
        self.assertEqual(menu.prompt_urls[0], AUDIO + "closed.mp3")
        self.assertEqual(b.menu_for({}, hours=b.hours_at(local("Europe/Berlin", 2026, 12, 7, 10, 0))).name, "main")

    def test_the_variant_has_no_variant(self) -> None:
        """A closed-hours menu with closed hours of its own is refused."""
        table = menu_table(closed_hours={"schedule": "agents", "menu": "more"})
        table["menus"]["more"]["closed_hours"] = {"schedule": "agents", "menu": "more"}
        with self.assertRaises(ConfigError) as e:
            book(table)
        self.assertEqual(e.exception.key, "menu.closed_hours")

    def test_hours_change_the_version(self) -> None:
        """Other hours are another menu version."""
        later = {"agents": {"time_zone": "Europe/Berlin", "weekdays": ["09:00-18:00"]}}
        self.assertNotEqual(book().version, book(schedules=later).version)
        self.assertEqual(book().version, book().version)


# A connection that connects at once and records commands.
Connection = RecordingConnection


class _Tokens:
    def get_token(self) -> "Deferred[str]":
        return succeed("token")

    def invalidate(self, token: str) -> None:
        pass


class _NoProfiles:
    def lookup(self, external_id: str, budget: float) -> "Deferred[LookupResult]":
        return succeed(LookupResult(None, "not-found"))


class CallsTestCase(SynchronousTestCase):
    """
    A registry on a Clock set to real dates; every call connects at once.
    """

    def make_registry(self, menu_book: MenuBook, when: float) -> None:
        self.clock = Clock()
        self.clock.advance(when)
        self.connections: dict[str, Connection] = {}
        self.listeners: dict[str, CallRunner] = {}
        self.ended: list[Any] = []
        config = load_config(HOURS, ENV)
        self.timing = attrs.evolve(config.timing, no_input_timeout=30.0)

        def connect(reactor: Any, url: str, token: str, call_id: str, listener: Any, **kw: Any) -> Any:
            self.listeners[call_id] = listener
            connection = self.connections[call_id] = Connection()
            listener.connected(connection)
            return succeed(connection)

        context = CallContext(
            reactor=self.clock, tokens=_Tokens(), profiles=_NoProfiles(), book=menu_book,
            timing=self.timing, websocket_url="ws://127.0.0.1:1/x", log_key=b"k", connect=connect,
        )
        self.registry = CallRegistry(context, max_active=10, retention=300, on_call_ended=self.ended.append)

    def offered(self, call_id: str) -> tuple[str, ...]:
        plays = [c for c in self.connections[call_id].sent if isinstance(c, Play) and c.dtmf_enabled]
        return plays[-1].keys

    def transferred(self, call_id: str) -> Optional[str]:
        transfers = [c for c in self.connections[call_id].sent if isinstance(c, Transfer)]
        return transfers[0].target if transfers else None


class CallHoursTests(CallsTestCase):
    """
    A call keeps the hours it arrived in, and its record says which.
    """

    def test_call_keeps_its_arrival_hours(self) -> None:
        """A call that arrives at 17:59 still gets the agents' option in a sub-menu after 18:00."""
        self.make_registry(book(), local("Europe/Berlin", 2026, 12, 4, 17, 59, 50))
        self.registry.start_call("early", "CRM-1")
        self.assertEqual(self.offered("early"), ("1", "2", "0"))
        self.clock.advance(20)
        self.registry.start_call("late", "CRM-2")
        self.assertEqual(self.offered("late"), ("2", "0"))
        self.listeners["early"].digit_received("2")
        self.assertEqual(self.offered("early"), ("1", "0"))
        self.listeners["late"].digit_received("2")
        self.assertEqual(self.offered("late"), ("0",))
        self.listeners["early"].digit_received("1")
        self.clock.advance(self.timing.confirm_delay)
        self.assertEqual(self.transferred("early"), "ext:agents")
        (record,) = self.ended
        self.assertEqual(record.hours, {"schedules": {"agents": "open"}, "closure": None})
        self.assertEqual(record.to_json()["hours"], record.hours)
        self.assertEqual(self.registry.hours_served, {"agents=open": 1})
        self.listeners["late"].hangup_received("caller")
        self.assertEqual(self.registry.hours_served, {"agents=open": 1, "agents=closed": 1})

    def test_hours_label(self) -> None:
        """The label names each schedule's state, the closure, or that there are none."""
        self.assertEqual(Hours(frozenset({"a"}), ("a", "b")).label, "a=open,b=closed")
        self.assertEqual(Hours().label, "always")


class CliHoursTests(SynchronousTestCase):
    """
    ``ivr check`` prints the hours; ``--at`` reads a time in the schedules' zone.
    """

    def test_check_prints_next_opening_and_closing(self) -> None:
        """Each schedule's state and next opening and closing, and the closure switch."""
        config = load_config(HOURS, ENV)
        lines = list(describe_config(config, now=local("Europe/Berlin", 2026, 12, 25, 10, 0)))
        self.assertIn(
            "  agents (Europe/Berlin): closed now; next opens Mon 2026-12-28 08:00 CET, "
            "next closes Mon 2026-12-28 12:30 CET",
            lines,
        )
        self.assertTrue(any(line.startswith("  emergency closure: while /run/ivrproto/closed") for line in lines))

    def test_check_refuses_a_bad_schedule(self) -> None:
        """ivr check exits 1 naming an unknown zone."""
        path = Path(self.mktemp())
        path.write_text(Path(HOURS).read_text().replace('"Europe/Berlin"', '"Europe/Nowhere"', 1))
        out, err = io.StringIO(), io.StringIO()
        self.assertEqual(main(["check", str(path)], out, err, ENV), 1)
        self.assertIn("schedules.agents.time_zone", out.getvalue() + err.getvalue())

    def test_at_in_the_schedules_zone(self) -> None:
        """A time without an offset is in the schedules' zone; with one, as given."""
        b = load_config(HOURS, ENV).menu
        self.assertEqual(parse_at("2026-12-25T10:00", b), utc(2026, 12, 25, 9, 0))
        self.assertEqual(parse_at("2026-07-01T10:00", b), utc(2026, 7, 1, 8, 0))
        self.assertEqual(parse_at("2026-12-25T10:00-05:00", b), utc(2026, 12, 25, 15, 0))
        with self.assertRaises(UsageError):
            parse_at("Christmas", b)

    def test_at_with_zones_that_differ(self) -> None:
        """Schedules in two zones need an offset."""
        schedules = dict(SCHEDULES, us={"time_zone": "America/New_York", "weekdays": ["09:00-17:00"]})
        table = menu_table()
        table["options"][2]["when"] = {"any": [{"open": "us"}, {"not": {"open": "us"}}]}
        table["options"].append({"key": "9", "prompt": "op.mp3", "action": "op"})
        b = book(table, schedules)
        with self.assertRaises(UsageError):
            parse_at("2026-12-25T10:00", b)
        self.assertEqual(parse_at("2026-12-25T10:00Z", b), utc(2026, 12, 25, 10, 0))
