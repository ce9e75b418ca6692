"""
Tests for :mod:`ivrproto.menu`: rules over profile attributes, the ``[menu]``
table, and the menu chosen for each caller (contract section 3, items 1-5).
"""

from __future__ import annotations

import copy
import os
from typing import Any, Optional

from twisted.trial.unittest import SynchronousTestCase

from ivrproto.config import load_config
from ivrproto.errors import ConfigError
from ivrproto.menu.book import (
    Action,
    AllOf,
    AnyOf,
    Compare,
    Menu,
    MenuBook,
    Not,
    Option,
    parse_rule,
)
from ivrproto.menu.load import parse_menu

SEED = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples", "seed.toml")
AUDIO = "https://example.com/ivr/audio/"


def _rule(data: Any) -> Any:
    return parse_rule(data, "r")


def _menu_table(**overrides: Any) -> dict[str, Any]:
    """
    A small valid ``[menu]`` table, with some settings replaced.
    """
    table: dict[str, Any] = {
        "targets": {"a": "ext:a", "b": "ext:b", "transfer_operator": "ext:op"},
        "options": [
            {"key": "1", "prompt": "a.mp3", "action": "a", "when": {"attribute": "x", "exists": True}},
            {"key": "0", "prompt": "op.mp3", "action": "transfer_operator"},
        ],
        "default": [{"key": "0", "prompt": "op.mp3", "action": "transfer_operator"}],
    }
    table.update(overrides)
    return table


class CompareTests(SynchronousTestCase):
    """
    Each comparison operator, and how missing or wrongly typed attributes
    fail it.
    """

    def matches(self, rule: Any, attributes: dict[str, Any]) -> bool:
        return bool(_rule(rule).matches(attributes))

    def test_equals(self) -> None:
        """equals holds for an equal value of the same kind."""
        rule = {"attribute": "level", "equals": "premium"}
        self.assertTrue(self.matches(rule, {"level": "premium"}))
        self.assertFalse(self.matches(rule, {"level": "basic"}))
        self.assertFalse(self.matches(rule, {"level": "Premium"}))

    def test_equals_int_and_float(self) -> None:
        """1 equals 1.0: both are numbers."""
        self.assertTrue(self.matches({"attribute": "n", "equals": 1}, {"n": 1.0}))
        self.assertTrue(self.matches({"attribute": "n", "equals": 1.0}, {"n": 1}))

    def test_equals_wrong_type(self) -> None:
        """A value of another type is not equal, even when Python says so."""
        self.assertFalse(self.matches({"attribute": "n", "equals": 1}, {"n": True}))
        self.assertFalse(self.matches({"attribute": "n", "equals": True}, {"n": 1}))
        self.assertFalse(self.matches({"attribute": "n", "equals": 0}, {"n": False}))
        self.assertFalse(self.matches({"attribute": "n", "equals": 3}, {"n": "3"}))
        self.assertFalse(self.matches({"attribute": "n", "equals": "3"}, {"n": 3}))
        self.assertFalse(self.matches({"attribute": "n", "equals": "x"}, {"n": ["x"]}))
        self.assertFalse(self.matches({"attribute": "n", "equals": "x"}, {"n": None}))

    def test_equals_bool(self) -> None:
        """A boolean equals a boolean."""
        self.assertTrue(self.matches({"attribute": "vip", "equals": True}, {"vip": True}))
        self.assertFalse(self.matches({"attribute": "vip", "equals": True}, {"vip": False}))

    def test_not_equals(self) -> None:
        """not_equals holds for another value of the same kind only."""
        rule = {"attribute": "level", "not_equals": "premium"}
        self.assertTrue(self.matches(rule, {"level": "basic"}))
        self.assertFalse(self.matches(rule, {"level": "premium"}))
        self.assertFalse(self.matches(rule, {}))
        self.assertFalse(self.matches(rule, {"level": 1}))
        self.assertFalse(self.matches({"attribute": "n", "not_equals": 1}, {"n": 1.0}))
        self.assertTrue(self.matches({"attribute": "n", "not_equals": 1}, {"n": 2}))

    def test_one_of(self) -> None:
        """one_of holds when the value is one of the list, of the same kind."""
        rule = {"attribute": "level", "one_of": ["gold", "premium", 3]}
        self.assertTrue(self.matches(rule, {"level": "premium"}))
        self.assertTrue(self.matches(rule, {"level": 3.0}))
        self.assertFalse(self.matches(rule, {"level": "basic"}))
        self.assertFalse(self.matches(rule, {"level": "3"}))
        self.assertFalse(self.matches(rule, {}))
        self.assertFalse(self.matches({"attribute": "n", "one_of": [1, 2]}, {"n": True}))
        self.assertFalse(self.matches({"attribute": "n", "one_of": [True]}, {"n": 1}))

    def test_orderings(self) -> None:
        """gt, ge, lt and le compare numbers."""
        cases = [
            ("gt", 0, 1, True), ("gt", 0, 0, False), ("gt", 0, -1, False),
            ("ge", 0, 0, True), ("ge", 0, -1, False), ("ge", 0, 0.5, True),
            ("lt", 5, 4.5, True), ("lt", 5, 5, False), ("lt", 5, 6, False),
            ("le", 5, 5, True), ("le", 5, 5.0, True), ("le", 5, 6, False),
            ("gt", 1.5, 2, True), ("le", -1, -1.0, True),
        ]  # fmt: skip
        for op, bound, actual, expected in cases:
            with self.subTest(op=op, bound=bound, actual=actual):
                self.assertIs(
                    self.matches({"attribute": "n", op: bound}, {"n": actual}), expected
                )

    def test_orderings_wrong_type(self) -> None:
        """A string "3" is not > 0, and True is not a number."""
        for op in ("gt", "ge", "lt", "le"):
            for actual in ("3", True, False, None, [1], {"n": 1}):
                with self.subTest(op=op, actual=actual):
                    self.assertFalse(self.matches({"attribute": "n", op: 0}, {"n": actual}))

    def test_orderings_missing(self) -> None:
        """A missing attribute fails every ordering."""
        for op in ("gt", "ge", "lt", "le"):
            self.assertFalse(self.matches({"attribute": "n", op: 0}, {"m": 1}))

    def test_exists(self) -> None:
        """exists tests presence, whatever the value."""
        self.assertTrue(self.matches({"attribute": "x", "exists": True}, {"x": None}))
        self.assertFalse(self.matches({"attribute": "x", "exists": True}, {}))
        self.assertTrue(self.matches({"attribute": "x", "exists": False}, {}))
        self.assertFalse(self.matches({"attribute": "x", "exists": False}, {"x": 0}))

    def test_missing_attribute(self) -> None:
        """A missing attribute fails equals, not_equals and one_of."""
        for rule in (
            {"attribute": "x", "equals": 1},
            {"attribute": "x", "not_equals": 1},
            {"attribute": "x", "one_of": [1]},
        ):
            self.assertFalse(self.matches(rule, {"y": 1}))

    def test_parsed_values(self) -> None:
        """A comparison parses to a Compare of attribute, operator and value."""
        self.assertEqual(_rule({"attribute": "a", "gt": 0}), Compare("a", "gt", 0))
        self.assertEqual(_rule({"attribute": "a", "one_of": [1, 2]}), Compare("a", "one_of", (1, 2)))


class CombinatorTests(SynchronousTestCase):
    """
    all, any and not.
    """

    PREMIUM = {"attribute": "level", "equals": "premium"}
    TICKETS = {"attribute": "tickets", "gt": 0}

    def test_all(self) -> None:
        """all holds when every rule holds."""
        rule = _rule({"all": [self.PREMIUM, self.TICKETS]})
        self.assertIsInstance(rule, AllOf)
        self.assertTrue(rule.matches({"level": "premium", "tickets": 2}))
        self.assertFalse(rule.matches({"level": "premium", "tickets": 0}))
        self.assertFalse(rule.matches({"level": "basic", "tickets": 2}))
        self.assertFalse(rule.matches({}))

    def test_any(self) -> None:
        """any holds when one rule holds."""
        rule = _rule({"any": [self.PREMIUM, self.TICKETS]})
        self.assertIsInstance(rule, AnyOf)
        self.assertTrue(rule.matches({"level": "premium"}))
        self.assertTrue(rule.matches({"tickets": 1}))
        self.assertFalse(rule.matches({"level": "basic", "tickets": 0}))
        self.assertFalse(rule.matches({}))

    def test_not(self) -> None:
        """not inverts its rule, so a missing attribute makes it hold."""
        rule = _rule({"not": self.PREMIUM})
        self.assertIsInstance(rule, Not)
        self.assertFalse(rule.matches({"level": "premium"}))
        self.assertTrue(rule.matches({"level": "basic"}))
        self.assertTrue(rule.matches({}))

    def test_nested(self) -> None:
        """Combinators nest."""
        rule = _rule(
            {"any": [{"all": [self.PREMIUM, {"not": self.TICKETS}]}, {"attribute": "vip", "exists": True}]}
        )
        self.assertTrue(rule.matches({"level": "premium", "tickets": 0}))
        self.assertTrue(rule.matches({"level": "premium"}))
        self.assertFalse(rule.matches({"level": "premium", "tickets": 3}))
        self.assertTrue(rule.matches({"vip": False}))


class ParseRuleErrorTests(SynchronousTestCase):
    """
    Badly shaped rules are refused with the place they are at.
    """

    def assertRuleError(self, data: Any, key: str) -> ConfigError:
        e = self.assertRaises(ConfigError, parse_rule, data, "menu.options[0].when")
        self.assertEqual(e.key, key)
        self.assertIn(key, str(e))
        return e

    def test_not_a_table(self) -> None:
        """A rule must be a table."""
        for data in ("x", 1, ["a"], None, True):
            self.assertRuleError(data, "menu.options[0].when")

    def test_no_attribute(self) -> None:
        """A comparison needs a non-empty attribute name."""
        self.assertRuleError({"equals": 1}, "menu.options[0].when.attribute")
        self.assertRuleError({"attribute": "", "equals": 1}, "menu.options[0].when.attribute")
        self.assertRuleError({"attribute": 1, "equals": 1}, "menu.options[0].when.attribute")
        self.assertRuleError({}, "menu.options[0].when.attribute")

    def test_no_operator(self) -> None:
        """A comparison needs exactly one operator."""
        self.assertRuleError({"attribute": "a"}, "menu.options[0].when")
        self.assertRuleError({"attribute": "a", "gt": 0, "lt": 3}, "menu.options[0].when")

    def test_unknown_operator(self) -> None:
        """An unknown operator is named, with the known ones."""
        e = self.assertRuleError({"attribute": "a", "greater": 0}, "menu.options[0].when.greater")
        self.assertIn("equals", e.reason)

    def test_ordering_needs_number(self) -> None:
        """gt, ge, lt and le need a number, not a string or a bool."""
        for op in ("gt", "ge", "lt", "le"):
            for value in ("0", True, [0], {"a": 0}):
                self.assertRuleError({"attribute": "a", op: value}, f"menu.options[0].when.{op}")

    def test_exists_needs_bool(self) -> None:
        """exists takes true or false."""
        for value in (1, "yes", [True]):
            self.assertRuleError({"attribute": "a", "exists": value}, "menu.options[0].when.exists")

    def test_one_of_needs_list(self) -> None:
        """one_of takes a non-empty list of single values."""
        for value in ("premium", [], 1, {"a": 1}, [[1]], [{"a": 1}]):
            self.assertRuleError({"attribute": "a", "one_of": value}, "menu.options[0].when.one_of")

    def test_equals_single_value(self) -> None:
        """equals and not_equals take a single value, not a list or table."""
        for op in ("equals", "not_equals"):
            for value in ([1], {"a": 1}):
                self.assertRuleError({"attribute": "a", op: value}, f"menu.options[0].when.{op}")

    def test_combinator_alone(self) -> None:
        """all, any and not stand alone in their table."""
        leaf = {"attribute": "a", "exists": True}
        self.assertRuleError({"all": [leaf], "attribute": "a"}, "menu.options[0].when")
        self.assertRuleError({"all": [leaf], "any": [leaf]}, "menu.options[0].when")
        self.assertRuleError({"not": leaf, "exists": True}, "menu.options[0].when")

    def test_combinator_needs_rules(self) -> None:
        """all and any take a non-empty list of rules."""
        for key in ("all", "any"):
            for value in ([], {"attribute": "a", "exists": True}, "x"):
                self.assertRuleError({key: value}, f"menu.options[0].when.{key}")

    def test_nested_error_place(self) -> None:
        """An error deep in a rule names its full path."""
        self.assertRuleError(
            {"any": [{"attribute": "a", "exists": True}, {"not": {"attribute": "b", "gt": "x"}}]},
            "menu.options[0].when.any[1].not.gt",
        )
        self.assertRuleError({"not": "x"}, "menu.options[0].when.not")
        self.assertRuleError({"all": [{"attribute": "a", "exists": True}, 3]}, "menu.options[0].when.all[1]")


class SeedMenuTests(SynchronousTestCase):
    """
    ``examples/seed.toml`` gives exactly the contract's menus.
    """

    def setUp(self) -> None:
        self.book = load_config(SEED, {"CLIENT_ID": "x", "CLIENT_SECRET": "y"}).menu

    def assertMenu(
        self, menu: Menu, expected: list[tuple[str, str, str]], is_default: bool
    ) -> None:
        """
        Assert a menu's keys, prompts and targets, as (key, prompt, action).
        """
        self.assertEqual(menu.keys, tuple(k for k, _, _ in expected))
        self.assertEqual(menu.prompt_urls, tuple(AUDIO + p for _, p, _ in expected))
        self.assertEqual(dict(menu.targets), {k: "ext:" + a for k, _, a in expected})
        self.assertEqual(dict(menu.actions), {k: Action("transfer", a) for k, _, a in expected})
        self.assertIs(menu.is_default, is_default)

    def test_premium_with_tickets(self) -> None:
        """A premium caller with open tickets gets keys 1, 2 and 0."""
        menu = self.book.menu_for({"membership_level": "premium", "open_tickets": 3})
        self.assertMenu(
            menu,
            [
                ("1", "premium_priority.mp3", "transfer_premium"),
                ("2", "ticket_status.mp3", "play_ticket_info"),
                ("0", "general_operator.mp3", "transfer_operator"),
            ],
            False,
        )

    def test_premium_only(self) -> None:
        """A premium caller without open tickets gets keys 1 and 0."""
        menu = self.book.menu_for({"membership_level": "premium", "open_tickets": 0})
        self.assertMenu(
            menu,
            [
                ("1", "premium_priority.mp3", "transfer_premium"),
                ("0", "general_operator.mp3", "transfer_operator"),
            ],
            False,
        )

    def test_tickets_only(self) -> None:
        """A caller with open tickets only gets keys 2 and 0."""
        menu = self.book.menu_for({"membership_level": "basic", "open_tickets": 1})
        self.assertMenu(
            menu,
            [
                ("2", "ticket_status.mp3", "play_ticket_info"),
                ("0", "general_operator.mp3", "transfer_operator"),
            ],
            False,
        )

    def test_neither(self) -> None:
        """A profile with neither gets the operator key alone."""
        for attributes in (
            {},
            {"membership_level": "basic", "open_tickets": 0},
            {"membership_level": ["premium"], "open_tickets": "3"},
            {"membership_level": None, "open_tickets": True},
            {"open_tickets": -1, "other": {"nested": 1}},
        ):
            with self.subTest(attributes=attributes):
                menu = self.book.menu_for(attributes)
                self.assertMenu(
                    menu, [("0", "general_operator.mp3", "transfer_operator")], False
                )

    def test_no_profile(self) -> None:
        """No profile gets the default menu of item 4."""
        self.assertMenu(
            self.book.menu_for(None),
            [
                ("1", "general_welcome.mp3", "transfer_sales"),
                ("2", "general_support.mp3", "transfer_support"),
                ("0", "general_operator.mp3", "transfer_operator"),
            ],
            True,
        )
        self.assertIs(self.book.menu_for(None), self.book.default_menu)

    def test_empty_profile_is_not_default(self) -> None:
        """A profile with no attributes is a profile, not the default menu."""
        self.assertIsNot(self.book.menu_for({}), self.book.menu_for(None))
        self.assertFalse(self.book.menu_for({}).is_default)

    def test_prompts_and_operator(self) -> None:
        """The confirmation, invalid-key prompts and operator are the seed's."""
        self.assertEqual(self.book.confirm_url(), AUDIO + "selection_confirmed.mp3")
        self.assertEqual(self.book.invalid_url(), AUDIO + "invalid_selection.mp3")
        self.assertEqual(self.book.operator, "transfer_operator")
        self.assertEqual(self.book.operator_target, "ext:transfer_operator")

    def test_cached(self) -> None:
        """The same choice of options gives the same menu object."""
        a = self.book.menu_for({"membership_level": "premium", "open_tickets": 1})
        b = self.book.menu_for({"membership_level": "premium", "open_tickets": 7, "x": 1})
        c = self.book.menu_for({"membership_level": "premium"})
        self.assertIs(a, b)
        self.assertIsNot(a, c)
        self.assertIs(c, self.book.menu_for({"membership_level": "premium", "open_tickets": 0}))
        self.assertIs(self.book.menu_for(None), self.book.menu_for(None))
        self.assertIs(self.book.menu_for({}), self.book.menu_for({"open_tickets": 0}))


class ParseMenuTests(SynchronousTestCase):
    """
    Checks on the ``[menu]`` table, each naming the place that is wrong.
    """

    def assertMenuError(self, table: Any, key: str) -> ConfigError:
        e = self.assertRaises(ConfigError, parse_menu, table, AUDIO)
        self.assertEqual(e.key, key)
        self.assertIn(key, str(e))
        return e

    def test_valid(self) -> None:
        """A valid table loads, with the default prompts and operator."""
        book = parse_menu(_menu_table(), AUDIO)
        self.assertIsInstance(book, MenuBook)
        self.assertEqual(book.confirm_prompt, "selection_confirmed.mp3")
        self.assertEqual(book.invalid_prompt, "invalid_selection.mp3")
        self.assertEqual(book.operator, "transfer_operator")
        self.assertEqual(
            book.profile_options[1],
            Option("0", "op.mp3", Action("transfer", "transfer_operator"), None),
        )
        self.assertEqual(book.menu_for({"x": 1}).keys, ("1", "0"))
        self.assertEqual(book.menu_for({}).keys, ("0",))
        self.assertEqual(book.menu_for(None).targets, {"0": "ext:op"})

    def test_does_not_keep_the_input(self) -> None:
        """Changing the table after loading does not change the menus."""
        table = _menu_table()
        book = parse_menu(table, AUDIO)
        table["targets"]["a"] = "ext:evil"
        self.assertEqual(book.menu_for({"x": 1}).targets["1"], "ext:a")

    def test_not_a_table(self) -> None:
        """A missing [menu] is named."""
        self.assertMenuError(None, "menu")
        self.assertMenuError([], "menu")

    def test_unknown_setting(self) -> None:
        """An unknown menu setting is named."""
        self.assertMenuError(_menu_table(greeting="hi.mp3"), "menu.greeting")

    def test_targets(self) -> None:
        """Targets must be a non-empty table of non-empty strings."""
        self.assertMenuError(_menu_table(targets={}), "menu.targets")
        self.assertMenuError(_menu_table(targets=["ext:a"]), "menu.targets")
        table = _menu_table()
        table["targets"]["b"] = 5
        self.assertMenuError(table, "menu.targets.b")
        table["targets"]["b"] = "  "
        self.assertMenuError(table, "menu.targets.b")

    def test_options_list(self) -> None:
        """options and default must be non-empty lists of tables."""
        self.assertMenuError(_menu_table(options=[]), "menu.options")
        self.assertMenuError(_menu_table(options=None), "menu.options")
        self.assertMenuError(_menu_table(default={"key": "0"}), "menu.default")
        self.assertMenuError(_menu_table(default=[]), "menu.default")
        self.assertMenuError(_menu_table(default=["x"]), "menu.default[0]")

    def test_default_optional(self) -> None:
        """Without default options, callers without a profile get the options whose rules hold."""
        table = _menu_table()
        del table["default"]
        book = parse_menu(table, AUDIO)
        self.assertEqual(book.menu_for(None).keys, ("0",))
        self.assertFalse(book.menu_for(None).is_default)

    def test_duplicate_key(self) -> None:
        """Two options on one key are refused, naming the second."""
        table = _menu_table()
        table["options"].append({"key": "1", "prompt": "b.mp3", "action": "b"})
        e = self.assertMenuError(table, "menu.options[2].key")
        self.assertIn("menu.options[0]", e.reason)
        table = _menu_table()
        table["default"].append({"key": "0", "prompt": "b.mp3", "action": "b"})
        self.assertMenuError(table, "menu.default[1].key")

    def test_same_key_in_both_lists(self) -> None:
        """A key may be used once in each list."""
        book = parse_menu(_menu_table(), AUDIO)
        self.assertEqual(book.menu_for(None).keys, ("0",))

    def test_unknown_action(self) -> None:
        """An action that is not a configured target is named."""
        table = _menu_table()
        table["options"][1]["action"] = "nowhere"
        e = self.assertMenuError(table, "menu.options[1].action")
        self.assertIn("nowhere", e.reason)
        table = _menu_table()
        table["default"][0]["action"] = "nowhere"
        self.assertMenuError(table, "menu.default[0].action")

    def test_bad_key(self) -> None:
        """A key must be one of 0-9, * or #."""
        for key in ("A", "10", "", 1, " ", "٣"):
            with self.subTest(key=key):
                table = _menu_table()
                table["options"][1]["key"] = key
                self.assertMenuError(table, "menu.options[1].key")
        for key in "*#":
            table = _menu_table()
            table["options"][1]["key"] = key
            self.assertEqual(parse_menu(table, AUDIO).menu_for({}).keys, (key,))

    def test_missing_prompt_or_action(self) -> None:
        """An option needs a prompt and an action."""
        table = _menu_table()
        del table["options"][1]["prompt"]
        self.assertMenuError(table, "menu.options[1].prompt")
        table = _menu_table()
        del table["options"][1]["action"]
        e = self.assertMenuError(table, "menu.options[1]")
        self.assertIn("needs exactly one of", e.reason)
        for name in ("prompt", "action"):
            table = _menu_table()
            table["options"][1][name] = 3
            self.assertMenuError(table, f"menu.options[1].{name}")

    def test_when_on_default(self) -> None:
        """Default options take no rule."""
        table = _menu_table()
        table["default"][0]["when"] = {"attribute": "x", "exists": True}
        self.assertMenuError(table, "menu.default[0].when")

    def test_unknown_option_setting(self) -> None:
        """An unknown option setting is named."""
        table = _menu_table()
        table["options"][0]["target"] = "ext:elsewhere"
        self.assertMenuError(table, "menu.options[0].target")
        table = _menu_table()
        table["default"][0]["prompt_url"] = "https://x/"
        self.assertMenuError(table, "menu.default[0].prompt_url")

    def test_no_unconditional_option(self) -> None:
        """A profile menu needs one option without a rule."""
        table = _menu_table()
        table["options"][1]["when"] = {"attribute": "y", "exists": False}
        self.assertMenuError(table, "menu.options")

    def test_bad_rule(self) -> None:
        """A bad rule in an option names the option's place."""
        table = _menu_table()
        table["options"][0]["when"] = {"attribute": "x", "between": [1, 2]}
        self.assertMenuError(table, "menu.options[0].when.between")
        table["options"][0]["when"] = "x > 1"
        self.assertMenuError(table, "menu.options[0].when")
        table["options"][0]["when"] = {"all": [{"attribute": "x", "gt": "1"}]}
        self.assertMenuError(table, "menu.options[0].when.all[0].gt")

    def test_texts(self) -> None:
        """Prompts and operator are non-empty strings; the operator a target."""
        for name in ("confirm_prompt", "invalid_prompt", "operator"):
            self.assertMenuError(_menu_table(**{name: ""}), f"menu.{name}")
            self.assertMenuError(_menu_table(**{name: 1}), f"menu.{name}")
        e = self.assertMenuError(_menu_table(operator="a_person"), "menu.operator")
        self.assertIn("a_person", e.reason)
        book = parse_menu(_menu_table(operator="b"), AUDIO)
        self.assertEqual(book.operator_target, "ext:b")

    def test_where_prefix(self) -> None:
        """Errors use the place given for the table."""
        e = self.assertRaises(ConfigError, parse_menu, _menu_table(options=[]), AUDIO, "ivr.menu")
        self.assertEqual(e.key, "ivr.menu.options")

    def test_only_config_errors(self) -> None:
        """Wrongly shaped values anywhere give a ConfigError, nothing else."""
        base = _menu_table()
        shapes: list[Any] = [None, 1, "x", [], {}, [1], [{}], {"a": []}, True]
        paths: list[tuple[Any, ...]] = [
            ("targets",),
            ("options",),
            ("default",),
            ("options", 0),
            ("options", 0, "when"),
            ("options", 0, "key"),
            ("options", 0, "when", "exists"),
            ("default", 0),
        ]
        for path in paths:
            for shape in shapes:
                table: Any = copy.deepcopy(base)
                target: Any = table
                for part in path[:-1]:
                    target = target[part]
                target[path[-1]] = shape
                try:
                    book = parse_menu(table, AUDIO)
                except ConfigError as e:
                    # It names where the bad value is, under the table.
                    self.assertTrue(e.key.startswith("menu"), (path, shape, e.key))
                else:
                    # A shape the loader takes (an empty "default" list...)
                    # must still give a whole book.
                    self.assertIsInstance(book, MenuBook, (path, shape))


def _book_with(rule: Optional[dict[str, Any]]) -> MenuBook:
    options: list[dict[str, Any]] = [{"key": "0", "prompt": "op.mp3", "action": "transfer_operator"}]
    if rule is not None:
        options.insert(0, {"key": "1", "prompt": "a.mp3", "action": "a", "when": rule})
    return parse_menu(_menu_table(options=options), AUDIO)


class MenuForTests(SynchronousTestCase):
    """
    :meth:`MenuBook.menu_for` with rules loaded from a table.
    """

    def test_rule_selects_option(self) -> None:
        """An option is offered exactly when its rule holds."""
        book = _book_with({"attribute": "open_tickets", "gt": 0})
        self.assertEqual(book.menu_for({"open_tickets": 1}).keys, ("1", "0"))
        self.assertEqual(book.menu_for({"open_tickets": "1"}).keys, ("0",))
        self.assertEqual(book.menu_for({"open_tickets": True}).keys, ("0",))

    def test_prompt_urls(self) -> None:
        """Prompt URLs are the audio base URL and the file name."""
        book = parse_menu(_menu_table(), "http://127.0.0.1:9/a/")
        self.assertEqual(book.menu_for({"x": 1}).prompt_urls, ("http://127.0.0.1:9/a/a.mp3", "http://127.0.0.1:9/a/op.mp3"))
        self.assertEqual(book.confirm_url(), "http://127.0.0.1:9/a/selection_confirmed.mp3")
