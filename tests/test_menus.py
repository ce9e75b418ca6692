"""
Tests for the menu book of :mod:`ivrproto.menu`: actions, keys assigned in
order, sub-menus, prompt sets per language, per-menu settings, the checks
made when a book is loaded, and :meth:`MenuBook.walk`.
"""

from __future__ import annotations

import copy
import os
from typing import Any, Optional

import attrs
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from ivrproto.config import load_config
from ivrproto.errors import ConfigError
from ivrproto.menu.book import Action, Collect, MenuBook, MenuSpec, Option, Prompts
from ivrproto.menu.load import parse_menu

SEED = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples", "seed.toml")
AUDIO = "https://example.com/a/"
OPERATOR = {"key": "0", "prompt": "op.mp3", "action": "transfer_operator"}


def _table(**overrides: Any) -> dict[str, Any]:
    """
    A small valid ``[menu]`` table (one menu, no default list), with some
    settings replaced.
    """
    table: dict[str, Any] = {
        "targets": {"a": "ext:a", "b": "ext:b", "transfer_operator": "ext:op"},
        "options": [{"key": "1", "prompt": "a.mp3", "transfer": "a"}, dict(OPERATOR)],
    }
    table.update(copy.deepcopy(overrides))
    return table


def _with_sub(sub: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    """
    A table whose key 1 goes to the sub-menu ``sub``, defined by ``sub``.
    """
    return _table(
        options=[{"key": "1", "prompt": "a.mp3", "submenu": "sub"}, OPERATOR],
        menus={"sub": sub},
        **overrides,
    )


def _collect_table(**collect: Any) -> dict[str, Any]:
    """
    A table whose key 1 collects digits with the given settings.
    """
    settings: dict[str, Any] = {"prompt": "enter.mp3", "then": {"transfer": "a"}}
    settings.update(collect)
    return _table(options=[{"key": "1", "prompt": "a.mp3", "collect": settings}, OPERATOR])


def _lines(book: MenuBook) -> list[str]:
    return ["  " * depth + line for depth, line in book.walk()]


class MenuErrorMixin:
    def assertMenuError(self, table: Any, key: str) -> ConfigError:
        """
        Assert that ``table`` is refused, naming exactly ``key``.
        """
        e = self.assertRaises(ConfigError, parse_menu, table, AUDIO)  # type: ignore[attr-defined]
        self.assertEqual(e.key, key)  # type: ignore[attr-defined]
        self.assertIn(key, str(e))  # type: ignore[attr-defined]
        return e


class ActionTests(MenuErrorMixin, SynchronousTestCase):
    """
    Every kind of action, as parsed and as described.
    """

    def action(self, **item: Any) -> Action:
        book = parse_menu(_table(options=[dict(key="1", prompt="a.mp3", **item), OPERATOR]), AUDIO)
        return book.menu_for({}).actions["1"]

    def describe(self, **item: Any) -> str:
        book = parse_menu(_table(options=[dict(key="1", prompt="a.mp3", **item), OPERATOR]), AUDIO)
        return _lines(book)[1].strip()

    def test_transfer(self) -> None:
        """``transfer`` and the seed's ``action`` both transfer to a configured target."""
        self.assertEqual(self.action(transfer="a"), Action("transfer", "a"))
        self.assertEqual(self.action(action="a"), Action("transfer", "a"))
        self.assertEqual(self.describe(transfer="a"), "1: a.mp3 -> transfer to ext:a")

    def test_transfer_targets(self) -> None:
        """A menu maps each transferring key to its configured target."""
        book = parse_menu(_table(), AUDIO)
        self.assertEqual(dict(book.menu_for({}).targets), {"1": "ext:a", "0": "ext:op"})

    def test_submenu(self) -> None:
        """``submenu`` names another menu."""
        book = parse_menu(_with_sub({"options": [OPERATOR]}), AUDIO)
        self.assertEqual(book.menu_for({}).actions["1"], Action("submenu", "sub"))
        self.assertEqual(_lines(book)[1].strip(), "1: a.mp3 -> submenu sub")
        self.assertNotIn("1", book.menu_for({}).targets)

    def test_play(self) -> None:
        """``play`` names a prompt."""
        self.assertEqual(self.action(play="info.mp3"), Action("play", "info.mp3"))
        self.assertEqual(self.describe(play="info.mp3"), "1: a.mp3 -> play info.mp3")

    def test_repeat(self) -> None:
        """``repeat = true`` repeats the menu."""
        self.assertEqual(self.action(repeat=True), Action("repeat"))
        self.assertEqual(self.describe(repeat=True), "1: a.mp3 -> repeat")

    def test_hangup(self) -> None:
        """``hangup = true`` ends the call."""
        self.assertEqual(self.action(hangup=True), Action("hangup"))
        self.assertEqual(self.describe(hangup=True), "1: a.mp3 -> hangup")

    def test_repeat_and_hangup_must_be_true(self) -> None:
        """``repeat`` and ``hangup`` take only ``true``."""
        for kind in ("repeat", "hangup"):
            for value in (False, 1, "yes"):
                with self.subTest(kind=kind, value=value):
                    table = _table(options=[{"key": "1", "prompt": "a.mp3", kind: value}, OPERATOR])
                    self.assertMenuError(table, f"menu.options[0].{kind}")

    def test_collect_defaults(self) -> None:
        """``collect`` with only a prompt and a next step takes the documented defaults."""
        action = parse_menu(_collect_table(), AUDIO).menu_for({}).actions["1"]
        self.assertEqual(
            action,
            Action(
                "collect",
                collect=Collect(
                    prompt="enter.mp3",
                    then=Action("transfer", "a"),
                    name="digits",
                    min_digits=1,
                    max_digits=16,
                    inter_digit_timeout=3.0,
                    terminator="#",
                    valid_keys="0123456789",
                ),
            ),
        )

    def test_collect_settings(self) -> None:
        """Every collect setting is read."""
        table = _collect_table(
            name="account",
            min_digits=4,
            max_digits=8,
            inter_digit_timeout=2,
            terminator="*",
            valid_keys="0123",
            then={"hangup": True},
        )
        collect = parse_menu(table, AUDIO).menu_for({}).actions["1"].collect
        self.assertEqual(
            collect, Collect("enter.mp3", Action("hangup"), "account", 4, 8, 2.0, "*", "0123")
        )

    def test_collect_no_terminator(self) -> None:
        """An empty terminator means none: the entry ends on max digits or a pause."""
        collect = parse_menu(_collect_table(terminator=""), AUDIO).menu_for({}).actions["1"].collect
        assert collect is not None
        self.assertIsNone(collect.terminator)
        book = parse_menu(_collect_table(terminator="", max_digits=4), AUDIO)
        self.assertEqual(
            _lines(book)[1].strip(), "1: a.mp3 -> collect digits (1-4 digits), then transfer to ext:a"
        )

    def test_collect_described(self) -> None:
        """A collection is described with its name, bounds, terminator and next step."""
        book = parse_menu(_collect_table(name="account", min_digits=4, max_digits=8), AUDIO)
        self.assertEqual(
            _lines(book)[1].strip(),
            "1: a.mp3 -> collect account (4-8 digits, ends with #), then transfer to ext:a",
        )

    def test_collect_then_submenu(self) -> None:
        """A collection can lead to a sub-menu."""
        table = _table(
            options=[
                {"key": "1", "prompt": "a.mp3", "collect": {"prompt": "e.mp3", "then": {"submenu": "sub"}}},
                OPERATOR,
            ],
            menus={"sub": {"options": [OPERATOR]}},
        )
        collect = parse_menu(table, AUDIO).menu_for({}).actions["1"].collect
        assert collect is not None
        self.assertEqual(collect.then, Action("submenu", "sub"))

    def test_exactly_one_action(self) -> None:
        """An option with no action, or with two, is refused at the option."""
        for extra in ({}, {"transfer": "a", "hangup": True}, {"action": "a", "transfer": "a"}):
            with self.subTest(extra=extra):
                table = _table(options=[dict(key="1", prompt="a.mp3", **extra), OPERATOR])
                e = self.assertMenuError(table, "menu.options[0]")
                self.assertIn("exactly one of", e.reason)


class AutoKeyTests(MenuErrorMixin, SynchronousTestCase):
    """
    Options without a key take the next free key, in order 1-9 then 0,
    once the rules have chosen the options.
    """

    def keys(self, options: list[dict[str, Any]], attributes: Optional[dict[str, Any]] = None) -> tuple[str, ...]:
        book = parse_menu(_table(options=options), AUDIO)
        return book.menu_for({} if attributes is None else attributes).keys

    def test_in_order(self) -> None:
        """Keys are handed out 1, 2, 3... in the order of the options."""
        options = [{"prompt": f"p{i}.mp3", "transfer": "a"} for i in range(3)]
        self.assertEqual(self.keys(options), ("1", "2", "3"))

    def test_ten_options(self) -> None:
        """After 9 comes 0."""
        options = [{"prompt": f"p{i}.mp3", "transfer": "a"} for i in range(10)]
        self.assertEqual(self.keys(options), tuple("1234567890"))

    def test_skip_fixed_keys(self) -> None:
        """Fixed keys are skipped, wherever their option stands."""
        options = [
            {"prompt": "p.mp3", "transfer": "a"},
            {"key": "1", "prompt": "one.mp3", "transfer": "a"},
            {"prompt": "q.mp3", "transfer": "a"},
            {"key": "3", "prompt": "three.mp3", "transfer": "a"},
            {"prompt": "r.mp3", "transfer": "a"},
        ]
        self.assertEqual(self.keys(options), ("2", "1", "4", "3", "5"))

    def test_star_and_hash_take_no_auto_key(self) -> None:
        """``*`` and ``#`` are never handed out, and fixing them frees nothing."""
        options = [
            {"key": "*", "prompt": "s.mp3", "transfer": "a"},
            {"prompt": "p.mp3", "transfer": "a"},
            {"key": "#", "prompt": "h.mp3", "transfer": "a"},
        ]
        self.assertEqual(self.keys(options), ("*", "1", "#"))

    def test_after_rules(self) -> None:
        """An option left out by its rule takes no key: the next one moves up."""
        options = [
            {"prompt": "vip.mp3", "transfer": "a", "when": {"attribute": "vip", "equals": True}},
            {"prompt": "p.mp3", "transfer": "b"},
        ]
        book = parse_menu(_table(options=options), AUDIO)
        vip = book.menu_for({"vip": True})
        self.assertEqual(vip.keys, ("1", "2"))
        self.assertEqual(vip.targets, {"1": "ext:a", "2": "ext:b"})
        other = book.menu_for({"vip": False})
        self.assertEqual(other.keys, ("1",))
        self.assertEqual(other.targets, {"1": "ext:b"})
        self.assertEqual(other.prompt_urls, (AUDIO + "p.mp3",))

    def test_fixed_key_of_filtered_option_is_free(self) -> None:
        """A fixed key whose option a rule left out can be handed out."""
        options = [
            {"key": "1", "prompt": "vip.mp3", "transfer": "a", "when": {"attribute": "vip", "exists": True}},
            {"prompt": "p.mp3", "transfer": "b"},
        ]
        self.assertEqual(self.keys(options, {"vip": 1}), ("1", "2"))
        self.assertEqual(self.keys(options, {}), ("1",))

    def test_default_options(self) -> None:
        """Default options take keys the same way."""
        book = parse_menu(
            _table(default=[{"prompt": "x.mp3", "transfer": "a"}, {"key": "1", "prompt": "y.mp3", "transfer": "b"}]),
            AUDIO,
        )
        self.assertEqual(book.menu_for(None).keys, ("2", "1"))
        self.assertTrue(book.menu_for(None).is_default)

    def test_not_enough_keys(self) -> None:
        """More options without a key than free keys is refused."""
        options = [{"key": "1", "prompt": "k.mp3", "transfer": "a"}]
        options += [{"prompt": f"p{i}.mp3", "transfer": "a"} for i in range(10)]
        self.assertMenuError(_table(options=options), "menu.options")

    def test_too_many_options(self) -> None:
        """More options than there are keys is refused."""
        options = [{"prompt": f"p{i}.mp3", "transfer": "a"} for i in range(13)]
        self.assertMenuError(_table(options=options), "menu.options")


class SubMenuTests(MenuErrorMixin, SynchronousTestCase):
    """
    ``[menu.menus.<name>]`` tables: reachable, known, and one start menu.
    """

    def test_reachable(self) -> None:
        """A sub-menu reached from the start menu is built like any menu."""
        book = parse_menu(_with_sub({"options": [{"prompt": "s.mp3", "transfer": "b"}, OPERATOR]}), AUDIO)
        self.assertEqual(set(book.menus), {"main", "sub"})
        menu = book.menu_for({}, "sub")
        self.assertEqual(menu.name, "sub")
        self.assertEqual(menu.keys, ("1", "0"))
        self.assertEqual(menu.targets, {"1": "ext:b", "0": "ext:op"})

    def test_nested(self) -> None:
        """A sub-menu can lead to another, and back to the start."""
        table = _with_sub(
            {"options": [{"prompt": "d.mp3", "submenu": "deeper"}, OPERATOR]},
        )
        table["menus"]["deeper"] = {"options": [{"prompt": "back.mp3", "submenu": "main"}, OPERATOR]}
        book = parse_menu(table, AUDIO)
        self.assertEqual(book.menu_for({}, "deeper").actions["1"], Action("submenu", "main"))

    def test_reached_by_collect_or_on_failure(self) -> None:
        """A sub-menu reached only after a collection or the last try counts as reachable."""
        table = _table(
            options=[
                {"key": "1", "prompt": "a.mp3", "collect": {"prompt": "e.mp3", "then": {"submenu": "after"}}},
                OPERATOR,
            ],
            on_failure={"submenu": "rescue"},
            menus={"after": {"options": [OPERATOR]}, "rescue": {"options": [OPERATOR]}},
        )
        self.assertEqual(set(parse_menu(table, AUDIO).menus), {"main", "after", "rescue"})

    def test_unknown(self) -> None:
        """A sub-menu that does not exist is named where it is used."""
        table = _with_sub({"options": [OPERATOR]})
        table["options"][0]["submenu"] = "nowhere"
        table["menus"]["nowhere_else"] = table["menus"].pop("sub")
        e = self.assertMenuError(table, "menu.options[0].submenu")
        self.assertIn("'nowhere'", e.reason)
        table = _with_sub({"options": [{"prompt": "x.mp3", "submenu": "gone"}, OPERATOR]})
        self.assertMenuError(table, "menu.menus.sub.options[0].submenu")
        table = _table(on_failure={"submenu": "gone"})
        self.assertMenuError(table, "menu.on_failure.submenu")
        table = _collect_table(then={"submenu": "gone"})
        self.assertMenuError(table, "menu.options[0].collect.then.submenu")

    def test_unreachable(self) -> None:
        """A sub-menu that nothing leads to is named."""
        table = _table(menus={"orphan": {"options": [OPERATOR]}})
        e = self.assertMenuError(table, "menu.menus.orphan")
        self.assertIn("cannot be reached", e.reason)

    def test_reached_only_from_unreachable(self) -> None:
        """Two sub-menus that lead only to each other are both unreachable."""
        table = _table(
            menus={
                "x": {"options": [{"prompt": "y.mp3", "submenu": "y"}, OPERATOR]},
                "y": {"options": [{"prompt": "x.mp3", "submenu": "x"}, OPERATOR]},
            }
        )
        self.assertMenuError(table, "menu.menus.x")

    def test_start_defined_twice(self) -> None:
        """``[[menu.options]]`` and ``[menu.menus.main]`` both define the start menu."""
        table = _table(menus={"main": {"options": [OPERATOR]}})
        e = self.assertMenuError(table, "menu.menus.main")
        self.assertIn("twice", e.reason)

    def test_start_names_a_sub_menu(self) -> None:
        """``start`` can name a ``[menu.menus.<name>]`` table instead of ``[[menu.options]]``."""
        table = _table(
            start="welcome",
            menus={
                "welcome": {"options": [{"prompt": "w.mp3", "submenu": "more"}, OPERATOR]},
                "more": {"options": [{"prompt": "m.mp3", "transfer": "b"}, OPERATOR]},
            },
        )
        del table["options"]
        book = parse_menu(table, AUDIO)
        self.assertEqual(book.start, "welcome")
        self.assertEqual(book.default_menu.name, "welcome")
        self.assertEqual(book.menu_for({}).keys, ("1", "0"))
        self.assertEqual(_lines(book)[0], "menu welcome (start)")

    def test_start_defined_twice_under_its_name(self) -> None:
        """``start`` naming a sub-menu while ``[[menu.options]]`` is also given is refused."""
        table = _table(start="welcome", menus={"welcome": {"options": [OPERATOR]}})
        self.assertMenuError(table, "menu.menus.welcome")

    def test_no_start_menu(self) -> None:
        """A book with no start menu names where one goes."""
        table = _table(start="welcome", menus={"other": {"options": [OPERATOR]}})
        del table["options"]
        self.assertMenuError(table, "menu.options")

    def test_menus_not_a_table(self) -> None:
        """``menu.menus`` must be a table of tables."""
        self.assertMenuError(_table(menus=[]), "menu.menus")
        self.assertMenuError(_table(menus={"sub": []}), "menu.menus.sub")

    def test_unknown_sub_menu_setting(self) -> None:
        """A sub-menu takes only menu settings: not the book's."""
        self.assertMenuError(_with_sub({"options": [OPERATOR], "greeting": "x.mp3"}), "menu.menus.sub.greeting")
        self.assertMenuError(_with_sub({"options": [OPERATOR], "targets": {}}), "menu.menus.sub.targets")

    def test_sub_menu_with_default(self) -> None:
        """A sub-menu can have its own options for callers without a profile."""
        book = parse_menu(
            _with_sub({"options": [OPERATOR], "default": [{"prompt": "d.mp3", "transfer": "b"}, OPERATOR]}),
            AUDIO,
        )
        self.assertEqual(book.menu_for(None, "sub").keys, ("1", "0"))
        self.assertTrue(book.menu_for(None, "sub").is_default)
        self.assertEqual(book.menu_for({}, "sub").keys, ("0",))


class PromptSetTests(MenuErrorMixin, SynchronousTestCase):
    """
    Named prompts looked up per language, file names used as they are.
    """

    PROMPTS = {
        "en": {"hello": "en/hello.mp3", "bye": "en/bye.wav", "confirm": "en/ok.mp3"},
        "fr": {"hello": "fr/bonjour.mp3", "confirm": "fr/ok.mp3"},
    }

    def book(self, **overrides: Any) -> MenuBook:
        table = _table(
            prompts=self.PROMPTS,
            language_attribute="language",
            options=[
                {"key": "1", "prompt": "hello", "transfer": "a"},
                {"key": "2", "prompt": "bye", "hangup": True},
                {"key": "0", "prompt": "op.mp3", "transfer": "transfer_operator"},
            ],
            confirm_prompt="confirm",
        )
        table.update(overrides)
        return parse_menu(table, AUDIO)

    def test_in_the_callers_language(self) -> None:
        """A named prompt is the file of the caller's language."""
        menu = self.book().menu_for({"language": "fr"})
        self.assertEqual(menu.language, "fr")
        self.assertEqual(menu.prompt_urls[0], AUDIO + "fr/bonjour.mp3")

    def test_default_language(self) -> None:
        """A caller with no language hears the default set."""
        menu = self.book().menu_for({})
        self.assertEqual(menu.language, "en")
        self.assertEqual(menu.prompt_urls, (AUDIO + "en/hello.mp3", AUDIO + "en/bye.wav", AUDIO + "op.mp3"))

    def test_falls_back_to_default_language(self) -> None:
        """A prompt missing from the caller's set comes from the default set."""
        menu = self.book().menu_for({"language": "fr"})
        self.assertEqual(menu.prompt_urls[1], AUDIO + "en/bye.wav")

    def test_file_name_as_is(self) -> None:
        """A prompt ending in .mp3 or .wav is a file, whatever the language."""
        menu = self.book().menu_for({"language": "fr"})
        self.assertEqual(menu.prompt_urls[2], AUDIO + "op.mp3")
        self.assertEqual(self.book().url("x.wav", "fr"), AUDIO + "x.wav")

    def test_confirmation_in_language(self) -> None:
        """The book's prompts are named prompts too."""
        book = self.book()
        self.assertEqual(book.confirm_url("fr"), AUDIO + "fr/ok.mp3")
        self.assertEqual(book.confirm_url(), AUDIO + "en/ok.mp3")
        self.assertEqual(book.invalid_url(book.menu_for({"language": "fr"})), AUDIO + "invalid_selection.mp3")

    def test_other_default_language(self) -> None:
        """``default_language`` picks the set used when the caller's has no prompt."""
        book = self.book(default_language="fr", options=[{"key": "1", "prompt": "hello", "transfer": "a"}])
        self.assertEqual(book.menu_for({}).prompt_urls, (AUDIO + "fr/bonjour.mp3",))
        self.assertEqual(book.menu_for({"language": "en"}).prompt_urls, (AUDIO + "en/hello.mp3",))

    def test_missing_from_default_set(self) -> None:
        """A prompt name that the default set lacks has no file: refused where it is used."""
        table = _table(prompts=self.PROMPTS, options=[{"key": "1", "prompt": "hullo", "transfer": "a"}])
        e = self.assertMenuError(table, "menu.options[0].prompt")
        self.assertIn("has no file", e.reason)
        self.assertIn("menu.prompts.en", e.reason)

    def test_only_in_another_language(self) -> None:
        """A prompt only the fr set has is refused: an en caller would hear nothing."""
        prompts = copy.deepcopy(self.PROMPTS)
        prompts["fr"]["extra"] = "fr/extra.mp3"
        table = _table(prompts=prompts, options=[{"key": "1", "prompt": "extra", "transfer": "a"}])
        self.assertMenuError(table, "menu.options[0].prompt")

    def test_no_sets_means_files_only(self) -> None:
        """Without prompt sets, every prompt must be a file name."""
        self.assertMenuError(_table(options=[{"key": "1", "prompt": "hello", "transfer": "a"}]), "menu.options[0].prompt")

    def test_default_language_without_a_set(self) -> None:
        """A default language with no prompt set is refused."""
        e = self.assertMenuError(_table(prompts=self.PROMPTS, default_language="de"), "menu.default_language")
        self.assertIn("'de'", e.reason)
        self.assertEqual(parse_menu(_table(default_language="de"), AUDIO).prompts.default_language, "de")

    def test_bad_sets(self) -> None:
        """Prompt sets are tables of prompt = file.mp3/.wav."""
        self.assertMenuError(_table(prompts=[]), "menu.prompts")
        self.assertMenuError(_table(prompts={"en": "x.mp3"}), "menu.prompts.en")
        self.assertMenuError(_table(prompts={"en": {"hello": "hello.ogg"}}), "menu.prompts.en.hello")
        self.assertMenuError(_table(prompts={"en": {"hello": 3}}), "menu.prompts.en.hello")

    def test_prompts_lookup(self) -> None:
        """Prompts.has and Prompts.url, directly."""
        prompts = Prompts(AUDIO, "en", {"en": {"x": "x1.mp3"}, "fr": {"x": "x2.mp3"}})
        self.assertTrue(prompts.has("x"))
        self.assertTrue(prompts.has("any.wav"))
        self.assertFalse(prompts.has("y"))
        self.assertEqual(prompts.url("x", "fr"), AUDIO + "x2.mp3")
        self.assertEqual(prompts.url("x", "de"), AUDIO + "x1.mp3")
        self.assertRaises(KeyError, prompts.url, "y", "en")


class LanguageTests(SynchronousTestCase):
    """
    The caller's language comes from a profile attribute.
    """

    def setUp(self) -> None:
        self.book = parse_menu(
            _table(
                language_attribute="lang",
                prompts={"en": {"hi": "en/hi.mp3"}, "fr": {"hi": "fr/hi.mp3"}},
                options=[{"key": "1", "prompt": "hi", "transfer": "a"}],
            ),
            AUDIO,
        )

    def test_from_attribute(self) -> None:
        """A profile whose attribute names a set gets that language."""
        self.assertEqual(self.book.language_for({"lang": "fr"}), "fr")
        self.assertEqual(self.book.menu_for({"lang": "fr"}).prompt_urls, (AUDIO + "fr/hi.mp3",))

    def test_unknown_language(self) -> None:
        """A language without a set, or a value that is not a string, gives the default."""
        for attributes in ({"lang": "de"}, {"lang": "FR"}, {"lang": 3}, {"lang": ["fr"]}, {"lang": None}, {}, None):
            with self.subTest(attributes=attributes):
                self.assertEqual(self.book.language_for(attributes), "en")

    def test_no_attribute_configured(self) -> None:
        """Without ``language_attribute``, every caller gets the default language."""
        book = parse_menu(
            _table(prompts={"en": {"hi": "en/hi.mp3"}, "fr": {"hi": "fr/hi.mp3"}}, options=[{"key": "1", "prompt": "hi", "transfer": "a"}]),
            AUDIO,
        )
        self.assertEqual(book.language_for({"language": "fr", "lang": "fr"}), "en")

    def test_explicit_language(self) -> None:
        """``menu_for`` keeps a language given to it (a call in a sub-menu keeps its own)."""
        self.assertEqual(self.book.menu_for({}, language="fr").prompt_urls, (AUDIO + "fr/hi.mp3",))

    def test_cached_per_language(self) -> None:
        """Menus are shared per language, never across languages."""
        self.assertIs(self.book.menu_for({"lang": "fr"}), self.book.menu_for({"lang": "fr", "x": 1}))
        self.assertIsNot(self.book.menu_for({"lang": "fr"}), self.book.menu_for({"lang": "en"}))

    def test_bad_attribute_setting(self) -> None:
        """``language_attribute`` is a non-empty string."""
        e = self.assertRaises(ConfigError, parse_menu, _table(language_attribute=""), AUDIO)
        self.assertEqual(e.key, "menu.language_attribute")


class ValidationTests(MenuErrorMixin, SynchronousTestCase):
    """
    The load-time checks of the issue, each naming the exact place.
    """

    def test_two_options_on_one_key(self) -> None:
        """Two options on one key in one menu: the second is named, with the first."""
        table = _with_sub(
            {"options": [{"key": "5", "prompt": "x.mp3", "transfer": "a"}, {"key": "5", "prompt": "y.mp3", "hangup": True}]}
        )
        e = self.assertMenuError(table, "menu.menus.sub.options[1].key")
        self.assertIn("menu.menus.sub.options[0]", e.reason)

    def test_same_key_in_two_menus(self) -> None:
        """The same key in two menus is fine."""
        book = parse_menu(_with_sub({"options": [{"key": "1", "prompt": "x.mp3", "transfer": "b"}]}), AUDIO)
        self.assertEqual(book.menu_for({}, "sub").keys, ("1",))

    def test_transfer_target_not_configured(self) -> None:
        """A transfer to a target not in ``menu.targets`` is named wherever it is."""
        cases = [
            (_table(options=[{"key": "1", "prompt": "a.mp3", "transfer": "nowhere"}, OPERATOR]), "menu.options[0].transfer"),
            (_table(options=[{"key": "1", "prompt": "a.mp3", "action": "nowhere"}, OPERATOR]), "menu.options[0].action"),
            (_with_sub({"options": [{"prompt": "x.mp3", "transfer": "nowhere"}]}), "menu.menus.sub.options[0].transfer"),
            (_collect_table(then={"transfer": "nowhere"}), "menu.options[0].collect.then.transfer"),
            (_table(on_failure={"transfer": "nowhere"}), "menu.on_failure.transfer"),
            (_table(default=[{"prompt": "x.mp3", "transfer": "nowhere"}]), "menu.default[0].transfer"),
        ]
        for table, key in cases:
            with self.subTest(key=key):
                e = self.assertMenuError(table, key)
                self.assertIn("'nowhere'", e.reason)
                self.assertIn("menu.targets", e.reason)

    def test_no_way_out(self) -> None:
        """A menu whose unconditional options only play or repeat is refused."""
        stuck = [
            {"key": "1", "prompt": "x.mp3", "play": "info.mp3"},
            {"key": "2", "prompt": "y.mp3", "repeat": True},
            {"key": "3", "prompt": "z.mp3", "transfer": "a", "when": {"attribute": "x", "exists": True}},
        ]
        e = self.assertMenuError(_with_sub({"options": stuck}), "menu.menus.sub.options")
        self.assertIn("no way out", e.reason)
        self.assertMenuError(_table(options=stuck), "menu.options")
        self.assertMenuError(_table(default=stuck[:2]), "menu.default")

    def test_ways_out(self) -> None:
        """Transfer, hang-up, collect and sub-menu are each a way out."""
        for item in (
            {"transfer": "a"},
            {"hangup": True},
            {"collect": {"prompt": "e.mp3", "then": {"hangup": True}}},
            {"submenu": "main"},
        ):
            with self.subTest(item=item):
                sub = {"options": [dict(key="1", prompt="x.mp3", **item), {"key": "2", "prompt": "y.mp3", "repeat": True}]}
                self.assertIn("sub", parse_menu(_with_sub(sub), AUDIO).menus)

    def test_prompt_with_no_file(self) -> None:
        """A prompt that is neither a file nor a named prompt is named wherever it is."""
        cases = [
            (_table(options=[{"key": "1", "prompt": "hello", "transfer": "a"}, OPERATOR]), "menu.options[0].prompt"),
            (_table(intro="welcome"), "menu.intro"),
            (_table(invalid_prompt="oops"), "menu.invalid_prompt"),
            (_table(no_input_prompt="silence"), "menu.no_input_prompt"),
            (_table(confirm_prompt="ok"), "menu.confirm_prompt"),
            (_with_sub({"options": [OPERATOR], "invalid_prompt": "oops"}), "menu.menus.sub.invalid_prompt"),
            (_with_sub({"options": [OPERATOR], "no_input_prompt": "hm"}), "menu.menus.sub.no_input_prompt"),
            (_with_sub({"options": [OPERATOR], "intro": "hi"}), "menu.menus.sub.intro"),
            (_table(options=[{"key": "1", "prompt": "a.mp3", "play": "info"}, OPERATOR]), "menu.options[0].play"),
            (_collect_table(prompt="enter"), "menu.options[0].collect.prompt"),
        ]
        for table, key in cases:
            with self.subTest(key=key):
                e = self.assertMenuError(table, key)
                self.assertIn("has no file", e.reason)

    def test_prompt_not_a_string(self) -> None:
        """A prompt is a non-empty string."""
        self.assertMenuError(_table(intro=""), "menu.intro")
        self.assertMenuError(_table(options=[{"key": "1", "prompt": 3, "transfer": "a"}]), "menu.options[0].prompt")
        self.assertMenuError(_collect_table(prompt=None), "menu.options[0].collect.prompt")

    def test_unknown_rule_operator(self) -> None:
        """An unknown operator in a rule is named with the option's place."""
        sub = {
            "options": [
                {"prompt": "x.mp3", "transfer": "a", "when": {"attribute": "n", "between": [1, 2]}},
                OPERATOR,
            ]
        }
        e = self.assertMenuError(_with_sub(sub), "menu.menus.sub.options[0].when.between")
        self.assertIn("unknown rule operator", e.reason)

    def test_unknown_book_setting(self) -> None:
        """A misspelt setting of ``[menu]`` is named, not ignored."""
        e = self.assertMenuError(_table(confirm_promt="x.mp3"), "menu.confirm_promt")
        self.assertIn("unknown", e.reason)

    def test_start_settings_without_start_options(self) -> None:
        """Start-menu settings in ``[menu]`` are refused when the start menu is a sub-menu table."""
        table = _table(start="welcome", intro="hi.mp3", menus={"welcome": {"options": [OPERATOR]}})
        del table["options"]
        self.assertMenuError(table, "menu.intro")
        table = _table(start="welcome", default=[OPERATOR], menus={"welcome": {"options": [OPERATOR]}})
        del table["options"]
        self.assertMenuError(table, "menu.default")

    def test_on_failure(self) -> None:
        """``on_failure`` transfers, hangs up or goes to a sub-menu; nothing else."""
        self.assertMenuError(_table(on_failure="transfer_operator"), "menu.on_failure")
        self.assertMenuError(_table(on_failure={"play": "x.mp3"}), "menu.on_failure")
        self.assertMenuError(_table(on_failure={"repeat": True}), "menu.on_failure")
        self.assertMenuError(
            _table(on_failure={"collect": {"prompt": "e.mp3", "then": {"hangup": True}}}), "menu.on_failure"
        )
        self.assertMenuError(_table(on_failure={}), "menu.on_failure")

    def test_on_failure_circle(self) -> None:
        """On-failure sub-menus that lead round in a circle are refused: a silent caller would never leave."""
        table = _with_sub({"options": [OPERATOR], "on_failure": {"submenu": "main"}}, on_failure={"submenu": "sub"})
        e = self.assertMenuError(table, "menu.menus.sub.on_failure")
        self.assertIn("main -> sub -> main", e.reason)
        table = _with_sub({"options": [OPERATOR], "on_failure": {"submenu": "sub"}})
        self.assertMenuError(table, "menu.menus.sub.on_failure")

    def test_on_failure_chain(self) -> None:
        """On-failure sub-menus that end in a transfer or hang-up are fine."""
        table = _with_sub({"options": [OPERATOR], "on_failure": {"hangup": True}}, on_failure={"submenu": "sub"})
        book = parse_menu(table, AUDIO)
        self.assertEqual(book.on_failure(book.menu_for({})), Action("submenu", "sub"))
        self.assertEqual(book.on_failure(book.menu_for({}, "sub")), Action("hangup"))

    def test_per_menu_settings(self) -> None:
        """Each menu's input settings are read; absent ones are left to ``[timing]``."""
        sub = {
            "options": [OPERATOR],
            "intro": "sub_intro.mp3",
            "no_input_timeout": 4,
            "max_no_input": 0,
            "max_invalid": 5,
            "invalid_prompt": "sub_invalid.mp3",
            "no_input_prompt": "sub_silence.mp3",
            "on_failure": {"transfer": "b"},
        }
        book = parse_menu(_with_sub(sub), AUDIO)
        self.assertEqual(
            book.menus["sub"],
            MenuSpec(
                name="sub",
                options=(Option("0", "op.mp3", Action("transfer", "transfer_operator")),),
                intro="sub_intro.mp3",
                no_input_timeout=4.0,
                max_no_input=0,
                max_invalid=5,
                invalid_prompt="sub_invalid.mp3",
                no_input_prompt="sub_silence.mp3",
                on_failure=Action("transfer", "b"),
            ),
        )
        main = book.menus["main"]
        self.assertEqual(
            (main.intro, main.no_input_timeout, main.max_no_input, main.max_invalid, main.on_failure),
            (None, None, None, None, None),
        )
        menu = book.menu_for({}, "sub")
        self.assertEqual(menu.prompt_urls, (AUDIO + "sub_intro.mp3", AUDIO + "op.mp3"))
        self.assertEqual(book.invalid_url(menu), AUDIO + "sub_invalid.mp3")
        self.assertEqual(book.no_input_url(menu), AUDIO + "sub_silence.mp3")
        self.assertIsNone(book.no_input_url(book.menu_for({})))
        self.assertEqual(book.invalid_url(book.menu_for({})), AUDIO + "invalid_selection.mp3")

    def test_bad_per_menu_settings(self) -> None:
        """Timeouts are positive numbers, counts whole numbers of at least 0."""
        for name, value in (
            ("no_input_timeout", 0),
            ("no_input_timeout", -1),
            ("no_input_timeout", "5"),
            ("no_input_timeout", True),
            ("no_input_timeout", float("nan")),
            ("no_input_timeout", float("inf")),
            ("max_no_input", -1),
            ("max_no_input", 1.5),
            ("max_no_input", False),
            ("max_invalid", -1),
            ("max_invalid", "3"),
        ):
            with self.subTest(name=name, value=value):
                self.assertMenuError(_with_sub({"options": [OPERATOR], name: value}), f"menu.menus.sub.{name}")
                self.assertMenuError(_table(**{name: value}), f"menu.{name}")


class CollectValidationTests(MenuErrorMixin, SynchronousTestCase):
    """
    The settings of multi-digit entry.
    """

    WHERE = "menu.options[0].collect"

    def test_not_a_table(self) -> None:
        """``collect`` is a table."""
        table = _table(options=[{"key": "1", "prompt": "a.mp3", "collect": "account"}, OPERATOR])
        self.assertMenuError(table, self.WHERE)

    def test_unknown_setting(self) -> None:
        """A misspelt collect setting is named."""
        self.assertMenuError(_collect_table(max_digit=4), f"{self.WHERE}.max_digit")

    def test_digit_bounds(self) -> None:
        """min_digits and max_digits are whole numbers of at least 1, max not below min."""
        for name, value in (("min_digits", 0), ("min_digits", "4"), ("min_digits", True), ("max_digits", 0), ("max_digits", 2.5)):
            with self.subTest(name=name, value=value):
                self.assertMenuError(_collect_table(**{name: value}), f"{self.WHERE}.{name}")
        e = self.assertMenuError(_collect_table(min_digits=6, max_digits=4), f"{self.WHERE}.max_digits")
        self.assertIn("min_digits", e.reason)
        self.assertMenuError(_collect_table(min_digits=17), f"{self.WHERE}.max_digits")
        parse_menu(_collect_table(min_digits=4, max_digits=4), AUDIO)

    def test_terminator(self) -> None:
        """The terminator is one key, not one of the digits."""
        for value in ("##", 5, "x", True):
            with self.subTest(value=value):
                self.assertMenuError(_collect_table(terminator=value), f"{self.WHERE}.terminator")
        e = self.assertMenuError(_collect_table(terminator="1"), f"{self.WHERE}.terminator")
        self.assertIn("valid_keys", e.reason)
        self.assertMenuError(_collect_table(terminator="*", valid_keys="0123*"), f"{self.WHERE}.terminator")
        parse_menu(_collect_table(terminator="1", valid_keys="02"), AUDIO)

    def test_valid_keys(self) -> None:
        """valid_keys is a non-empty string of keys."""
        for value in ("", "12a", 123, ["1", "2"], None, "1 2"):
            with self.subTest(value=value):
                self.assertMenuError(_collect_table(valid_keys=value), f"{self.WHERE}.valid_keys")

    def test_inter_digit_timeout(self) -> None:
        """The pause between digits is a positive number of seconds."""
        for value in (0, -1, "3", False):
            with self.subTest(value=value):
                self.assertMenuError(_collect_table(inter_digit_timeout=value), f"{self.WHERE}.inter_digit_timeout")

    def test_name(self) -> None:
        """The name of what is collected is a non-empty string."""
        self.assertMenuError(_collect_table(name=""), f"{self.WHERE}.name")
        self.assertMenuError(_collect_table(name=7), f"{self.WHERE}.name")

    def test_then_missing(self) -> None:
        """A collection must say what happens next."""
        table = _table(options=[{"key": "1", "prompt": "a.mp3", "collect": {"prompt": "e.mp3"}}, OPERATOR])
        self.assertMenuError(table, f"{self.WHERE}.then")
        self.assertMenuError(_collect_table(then="a"), f"{self.WHERE}.then")
        self.assertMenuError(_collect_table(then={}), f"{self.WHERE}.then")

    def test_then_play_or_repeat(self) -> None:
        """After a collection comes a transfer, a sub-menu or a hang-up: not a play or a repeat."""
        self.assertMenuError(_collect_table(then={"play": "x.mp3"}), f"{self.WHERE}.then")
        self.assertMenuError(_collect_table(then={"repeat": True}), f"{self.WHERE}.then")

    def test_then_collect(self) -> None:
        """A collection cannot lead to another collection."""
        e = self.assertMenuError(
            _collect_table(then={"collect": {"prompt": "e2.mp3", "then": {"hangup": True}}}),
            f"{self.WHERE}.then.collect",
        )
        self.assertIn("another collection", e.reason)


class WalkTests(SynchronousTestCase):
    """
    :meth:`MenuBook.walk`, the menu tree that ``ivr check`` prints.
    """

    def test_seed(self) -> None:
        """The seed's book, with and without a profile."""
        book = load_config(SEED, {"CLIENT_ID": "x", "CLIENT_SECRET": "y"}).menu
        self.assertEqual(
            list(book.walk()),
            [
                (0, "menu main (start)"),
                (1, "with a profile:"),
                (2, "1: premium_priority.mp3 -> transfer to ext:transfer_premium when membership_level equals 'premium'"),
                (2, "2: ticket_status.mp3 -> transfer to ext:play_ticket_info when open_tickets gt 0"),
                (2, "0: general_operator.mp3 -> transfer to ext:transfer_operator"),
                (1, "without a profile:"),
                (2, "1: general_welcome.mp3 -> transfer to ext:transfer_sales"),
                (2, "2: general_support.mp3 -> transfer to ext:transfer_support"),
                (2, "0: general_operator.mp3 -> transfer to ext:transfer_operator"),
                (1, "after the last try: transfer to ext:transfer_operator"),
            ],
        )

    def test_rich(self) -> None:
        """Sub-menus appear under the option, collection or failure that first reaches them, once."""
        table = _table(
            targets={"billing": "ext:billing", "transfer_operator": "ext:op"},
            options=[
                {"key": "1", "prompt": "billing.mp3", "submenu": "billing"},
                {"prompt": "hours.mp3", "play": "hours_info.mp3"},
                {
                    "prompt": "vip.mp3",
                    "transfer": "billing",
                    "when": {"any": [{"attribute": "tier", "one_of": ["gold", "vip"]}, {"not": {"attribute": "n", "le": 2}}]},
                },
                {"key": "9", "prompt": "again.mp3", "repeat": True},
                OPERATOR,
            ],
            menus={
                "billing": {
                    "options": [
                        {
                            "key": "1",
                            "prompt": "account.mp3",
                            "collect": {
                                "prompt": "enter.mp3",
                                "name": "account",
                                "min_digits": 4,
                                "max_digits": 8,
                                "then": {"submenu": "thanks"},
                            },
                        },
                        {"key": "*", "prompt": "back.mp3", "submenu": "main"},
                        {"key": "#", "prompt": "bye.mp3", "hangup": True},
                    ],
                    "on_failure": {"submenu": "rescue"},
                },
                "thanks": {"options": [{"prompt": "thanks.mp3", "transfer": "billing"}]},
                "rescue": {"options": [OPERATOR], "on_failure": {"hangup": True}},
            },
        )
        self.assertEqual(
            _lines(parse_menu(table, AUDIO)),
            [
                "menu main (start)",
                "    1: billing.mp3 -> submenu billing",
                "      menu billing",
                "          1: account.mp3 -> collect account (4-8 digits, ends with #), then submenu thanks",
                "            menu thanks",
                "                (next free key): thanks.mp3 -> transfer to ext:billing",
                "              after the last try: transfer to ext:op",
                "          *: back.mp3 -> submenu main",
                "          #: bye.mp3 -> hangup",
                "        after the last try: submenu rescue",
                "          menu rescue",
                "              0: op.mp3 -> transfer to ext:op",
                "            after the last try: hangup",
                "    (next free key): hours.mp3 -> play hours_info.mp3",
                "    (next free key): vip.mp3 -> transfer to ext:billing"
                " when (tier one_of ('gold', 'vip') or not (n le 2))",
                "    9: again.mp3 -> repeat",
                "    0: op.mp3 -> transfer to ext:op",
                "  after the last try: transfer to ext:op",
            ],
        )


# --- random valid books ------------------------------------------------------

ATTRIBUTES = ("tier", "n", "vip", "lang")
VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 5),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["gold", "basic", "fr", "en", ""]),
    st.lists(st.integers(0, 3), max_size=2),
    st.dictionaries(st.just("k"), st.integers(), max_size=1),
)


def _compare() -> st.SearchStrategy[dict[str, Any]]:
    attribute = st.sampled_from(ATTRIBUTES)
    scalar = st.one_of(st.booleans(), st.integers(-5, 5), st.sampled_from(["gold", "basic", "fr"]))
    number = st.one_of(st.integers(-5, 5), st.floats(-5, 5))
    return st.one_of(
        st.builds(lambda a, v: {"attribute": a, "equals": v}, attribute, scalar),
        st.builds(lambda a, v: {"attribute": a, "not_equals": v}, attribute, scalar),
        st.builds(lambda a, v: {"attribute": a, "one_of": v}, attribute, st.lists(scalar, min_size=1, max_size=3)),
        st.builds(lambda a, op, v: {"attribute": a, op: v}, attribute, st.sampled_from(["gt", "ge", "lt", "le"]), number),
        st.builds(lambda a, v: {"attribute": a, "exists": v}, attribute, st.booleans()),
    )


RULES = st.recursive(
    _compare(),
    lambda inner: st.one_of(
        st.builds(lambda rs: {"all": rs}, st.lists(inner, min_size=1, max_size=3)),
        st.builds(lambda rs: {"any": rs}, st.lists(inner, min_size=1, max_size=3)),
        st.builds(lambda r: {"not": r}, inner),
    ),
    max_leaves=6,
)

ACTIONS = st.sampled_from(
    [
        {"transfer": "a"},
        {"action": "b"},
        {"play": "info.mp3"},
        {"repeat": True},
        {"hangup": True},
        {"submenu": "sub"},
        {"collect": {"prompt": "enter.mp3", "then": {"transfer": "a"}}},
        {"collect": {"prompt": "enter.mp3", "max_digits": 4, "terminator": "", "then": {"submenu": "sub"}}},
    ]
)


@st.composite
def _options(draw: Any, with_rules: bool = True) -> list[dict[str, Any]]:
    """
    1 to 8 options, some with fixed (distinct) keys, the last always a way out.
    """
    count = draw(st.integers(1, 8))
    fixed = draw(st.permutations(list("1234567890*#")))
    options = []
    for i in range(count):
        option: dict[str, Any] = {"prompt": draw(st.sampled_from(["p.mp3", "hello", "q.wav"]))}
        if draw(st.booleans()):
            option["key"] = fixed[i]
        option.update(draw(ACTIONS))
        if with_rules and draw(st.booleans()):
            option["when"] = draw(RULES)
        options.append(option)
    options[-1].pop("when", None)
    for kind in ("play", "repeat"):
        if kind in options[-1]:
            del options[-1][kind]
            options[-1]["hangup"] = True
    return options


@st.composite
def _books(draw: Any) -> dict[str, Any]:
    table: dict[str, Any] = {
        "targets": {"a": "ext:a", "b": "ext:b", "transfer_operator": "ext:op"},
        "language_attribute": "lang",
        "prompts": {"en": {"hello": "en/hello.mp3"}, "fr": {"hello": "fr/hello.mp3"}},
        "options": draw(_options()),
        "menus": {"sub": {"options": draw(_options())}},
    }
    if draw(st.booleans()):
        table["default"] = draw(_options(with_rules=False))
    if draw(st.booleans()):
        table["intro"] = "hello"
    if draw(st.booleans()):
        table["menus"]["sub"]["on_failure"] = draw(st.sampled_from([{"hangup": True}, {"transfer": "b"}]))
    # The sub-menu is reachable whatever the options drawn.
    table["on_failure"] = {"submenu": "sub"}
    return table


class RandomBookTests(SynchronousTestCase):
    """
    Any valid table loads, and every caller is offered a key.
    """

    @settings(max_examples=200, deadline=None)
    @given(_books(), st.lists(st.dictionaries(st.sampled_from(ATTRIBUTES), VALUES), max_size=4))
    def test_menu_for_never_fails(self, table: dict[str, Any], profiles: list[dict[str, Any]]) -> None:
        """menu_for with any attributes offers at least one key, each with an action, in no language but en or fr."""
        book = parse_menu(table, AUDIO)
        for attributes in [None, {}, *profiles]:
            for name in book.menus:
                menu = book.menu_for(attributes, name)
                self.assertGreaterEqual(len(menu.keys), 1)
                self.assertEqual(len(set(menu.keys)), len(menu.keys))
                self.assertEqual(set(menu.actions), set(menu.keys))
                self.assertEqual(len(menu.prompt_urls), len(menu.keys) + (menu.spec.intro is not None))
                self.assertIn(menu.language, ("en", "fr"))
                for key, target in menu.targets.items():
                    self.assertIn(target, book.targets.values())
                    self.assertEqual(menu.actions[key].kind, "transfer")
                self.assertTrue(all(u.startswith(AUDIO) for u in menu.prompt_urls))
        self.assertTrue(list(book.walk()))


class BookActionsTests(SynchronousTestCase):
    """
    :meth:`MenuBook.actions`, :meth:`MenuBook.on_failure` of a spec, and
    books changed with ``attrs.evolve`` or :meth:`MenuBook.scaled`.
    """

    def book(self) -> MenuBook:
        collect = {"prompt": "enter.mp3", "then": {"transfer": "b"}, "inter_digit_timeout": 4}
        sub = {
            "options": [{"prompt": "c.mp3", "collect": collect}, OPERATOR],
            "no_input_timeout": 6,
            "on_failure": {"hangup": True},
        }
        return parse_menu(_with_sub(sub), AUDIO)

    def test_actions(self) -> None:
        """Every action of every menu, a collection's next step, on-failure actions, then the operator."""
        book = self.book()
        self.assertEqual(
            list(book.actions()),
            [
                Action("submenu", "sub"),
                Action("transfer", "transfer_operator"),
                book.menus["sub"].options[0].action,
                Action("transfer", "b"),
                Action("transfer", "transfer_operator"),
                Action("hangup"),
                Action("transfer", "transfer_operator"),
            ],
        )

    def test_on_failure_of_spec(self) -> None:
        """on_failure takes a spec as well as a built menu, or None."""
        book = self.book()
        self.assertEqual(book.on_failure(book.menus["sub"]), Action("hangup"))
        self.assertEqual(book.on_failure(book.menus["main"]), Action("transfer", "transfer_operator"))
        self.assertEqual(book.on_failure(None), Action("transfer", "transfer_operator"))

    def test_evolve_builds_afresh(self) -> None:
        """A book made by attrs.evolve does not serve the menus built by the old one."""
        book = self.book()
        self.assertEqual(book.menu_for({}, "sub").spec.no_input_timeout, 6.0)
        faster = attrs.evolve(book, menus={**book.menus, "sub": attrs.evolve(book.menus["sub"], no_input_timeout=3.0)})
        self.assertEqual(faster.menu_for({}, "sub").spec.no_input_timeout, 3.0)
        self.assertEqual(book.menu_for({}, "sub").spec.no_input_timeout, 6.0)

    def test_scaled(self) -> None:
        """scaled() divides the menus' no-input and inter-digit timeouts; the original book is unchanged."""
        book = self.book()
        book.menu_for({}, "sub")
        faster = book.scaled(2.0)
        sub = faster.menu_for({}, "sub")
        self.assertEqual(sub.spec.no_input_timeout, 3.0)
        collect = sub.actions["1"].collect
        assert collect is not None
        self.assertEqual(collect.inter_digit_timeout, 2.0)
        self.assertIsNone(faster.menus["main"].no_input_timeout)
        self.assertEqual(book.menu_for({}, "sub").spec.no_input_timeout, 6.0)
        self.assertEqual(faster.version, book.scaled(2.0).version)
