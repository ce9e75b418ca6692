"""
Loading the ``[menu]`` table (with the ``[schedules]`` and ``[closure]``
tables its rules and menus use) into a :class:`~ivrproto.menu.book.MenuBook`,
and checking it: every reference resolves, every menu has a way out and can
be reached, and no chain of on-failure sub-menus goes round in a circle.

:func:`parse_menu` reads the book's own settings, then each menu
(:meth:`_Loader.menu`), each option list (:meth:`_Loader.options`), each
action and collection; the references they make are collected as they are
read and checked once every menu is known (:mod:`ivrproto.menu.checks`).
"""

from __future__ import annotations

from typing import Any, Dict, Mapping, Optional, Tuple

from ivrproto.errors import ConfigError
from ivrproto.menu.book import START, MenuBook
from ivrproto.menu.checks import (
    References,
    check_failure_paths,
    check_keys,
    check_reachable,
    check_seconds,
    check_text,
    check_unknown,
    check_way_out,
    check_whole,
    is_key,
)
from ivrproto.menu.closure import parse_closure
from ivrproto.menu.rules import Compare, Open, parse_rule, walk_rule
from ivrproto.menu.schedules import parse_schedules
from ivrproto.menu.values import AUDIO_SUFFIXES, Action, Collect, MenuSpec, Option, Prompts
from ivrproto.messages import VALID_DIGITS

__all__ = ["parse_menu"]

_ACTION_KEYS = ("action", "transfer", "submenu", "play", "repeat", "hangup", "collect")
_OPTION_KEYS = {"key", "prompt", "when", *_ACTION_KEYS}
_MENU_KEYS = {
    "options", "default", "intro", "no_input_timeout", "max_no_input", "max_invalid",
    "invalid_prompt", "no_input_prompt", "on_failure", "closed_hours",
}
_COLLECT_KEYS = {
    "prompt", "then", "name", "min_digits", "max_digits", "inter_digit_timeout", "terminator",
    "valid_keys",
}
#: The book's own settings, beside the start menu's in ``[menu]``.
_BOOK_KEYS = {
    "targets", "menus", "prompts", "confirm_prompt", "invalid_prompt", "no_input_prompt",
    "operator", "start", "language_attribute", "default_language",
}
#: The book's text settings that have a default, and the default.
_BOOK_TEXTS = (
    ("confirm_prompt", "selection_confirmed.mp3"),
    ("invalid_prompt", "invalid_selection.mp3"),
    ("operator", "transfer_operator"),
    ("start", START),
    ("default_language", "en"),
)


def parse_menu(
    data: Any,
    audio_base_url: str,
    where: str = "menu",
    schedules: Any = None,
    closure: Any = None,
) -> MenuBook:
    """
    Load and check the ``[menu]`` table, with the ``[schedules]`` and
    ``[closure]`` tables its rules and menus use.

    The start menu's options are ``[[menu.options]]`` (callers with a
    profile) and ``[[menu.default]]`` (without); sub-menus are
    ``[menu.menus.<name>]`` tables of the same shape.

    :raises ConfigError: naming the place in the file that is wrong
    """
    schedule_book = parse_schedules(schedules)
    if not isinstance(data, dict):
        raise ConfigError(where, "missing or not a table")
    loader = _Loader(data, where)
    check_unknown(data, _MENU_KEYS | loader.extra_keys(where), where)
    loader.targets = _targets(data.get("targets"), f"{where}.targets")
    texts = loader.texts()
    language = texts["default_language"]
    prompts = Prompts(audio_base_url, language, _prompt_sets(data.get("prompts", {}), where))
    if prompts.sets and language not in prompts.sets:
        raise ConfigError(
            f"{where}.default_language",
            f"{language!r} has no prompt set ({where}.prompts.<language>)",
        )
    start = texts["start"]
    menus = loader.menus(start)
    loader.refs.check(menus, prompts, schedule_book, where)
    closure_config = parse_closure(closure, loader.targets, prompts.has)
    check_reachable(menus, start, where)
    check_failure_paths(
        menus,
        {n: where if n == start and "options" in data else f"{where}.menus.{n}" for n in menus},
    )
    return MenuBook(
        menus=menus,
        targets=loader.targets,
        prompts=prompts,
        confirm_prompt=texts["confirm_prompt"],
        invalid_prompt=texts["invalid_prompt"],
        no_input_prompt=texts["no_input_prompt"],
        operator=texts["operator"],
        start=start,
        language_attribute=texts["language_attribute"],
        schedules=schedule_book,
        closure=closure_config,
    )


# --- the book's own tables ---------------------------------------------------


def _targets(data: Any, where: str) -> Dict[str, str]:
    """
    ``[menu.targets]``: the allow-list of transfer targets.
    """
    if not isinstance(data, dict) or not data:
        raise ConfigError(where, "must be a table of action = \"target\"")
    for name, target in data.items():
        if not isinstance(target, str) or not target.strip():
            raise ConfigError(f"{where}.{name}", "must be a non-empty string")
    return dict(data)


def _prompt_sets(data: Any, menu: str) -> Dict[str, Dict[str, str]]:
    """
    ``[menu.prompts.<language>]``: each language's prompt = "file".
    """
    where = f"{menu}.prompts"
    if not isinstance(data, dict):
        raise ConfigError(where, "must be a table of [prompts.<language>] tables")
    sets: Dict[str, Dict[str, str]] = {}
    for language, table in data.items():
        here = f"{where}.{language}"
        if not isinstance(table, dict):
            raise ConfigError(here, "must be a table of prompt = \"file\"")
        for name, file in table.items():
            if not isinstance(file, str) or not file.endswith(AUDIO_SUFFIXES):
                raise ConfigError(f"{here}.{name}", "must name an .mp3 or .wav file")
        sets[language] = dict(table)
    return sets


class _Loader:
    """
    Reads the ``[menu]`` table's menus, options and actions, collecting the
    references they make (:attr:`refs`) for the checks that need every menu.
    """

    def __init__(self, data: Mapping[str, Any], where: str) -> None:
        self.data = data
        self.where = where
        self.targets: Dict[str, str] = {}
        self.refs = References()

    def extra_keys(self, where: str) -> set[str]:
        # The start menu lives in [menu] itself, beside the book's settings.
        return set(_BOOK_KEYS) if where == self.where else set()

    def texts(self) -> Dict[str, Any]:
        """
        The book's text settings: prompts, operator, start menu, languages.
        """
        data, where = self.data, self.where
        texts: Dict[str, Any] = {
            name: check_text(data.get(name, default), f"{where}.{name}")
            for name, default in _BOOK_TEXTS
        }
        for name in ("no_input_prompt", "language_attribute"):
            texts[name] = check_text(data[name], f"{where}.{name}") if name in data else None
        if texts["operator"] not in self.targets:
            raise ConfigError(
                f"{where}.operator",
                f"{texts['operator']!r} is not a configured transfer target ({where}.targets)",
            )
        for name in ("confirm_prompt", "invalid_prompt", "no_input_prompt"):
            if texts[name] is not None:
                self.refs.prompts.append((texts[name], f"{where}.{name}"))
        return texts

    def menus(self, start: str) -> Dict[str, MenuSpec]:
        """
        Every menu: the start menu (in ``[menu]`` itself, or one of
        ``[menu.menus]``) and the sub-menus.
        """
        data, where = self.data, self.where
        menus: Dict[str, MenuSpec] = {}
        sub = data.get("menus", {})
        if not isinstance(sub, dict):
            raise ConfigError(f"{where}.menus", "must be a table of [menu.menus.<name>] tables")
        if "options" in data:
            if start in sub:
                raise ConfigError(f"{where}.menus.{start}", "the start menu is defined twice")
            start_table = {k: v for k, v in data.items() if k in _MENU_KEYS}
            menus[start] = self.menu(start, start_table, where)
        else:
            stray = sorted(k for k in data if k in _MENU_KEYS)
            if stray:
                raise ConfigError(
                    f"{where}.{stray[0]}",
                    f"belongs to a start menu given by [[{where}.options]]; "
                    f"move it to [{where}.menus.{start}]",
                )
        for name, table in sub.items():
            menus[name] = self.menu(name, table, f"{where}.menus.{name}")
        if start not in menus:
            raise ConfigError(
                f"{where}.options",
                f"no start menu: give [[{where}.options]] or [{where}.menus.{start}]",
            )
        return menus

    def menu(self, name: str, data: Any, where: str) -> MenuSpec:
        """
        One menu's table: its option lists and its input settings.
        """
        if not isinstance(data, dict):
            raise ConfigError(where, "must be a table")
        check_unknown(data, _MENU_KEYS | self.extra_keys(where), where)
        options = self.options(data.get("options"), f"{where}.options", True)
        default = None
        if "default" in data:
            default = self.options(data["default"], f"{where}.default", False)
        check_way_out(options, f"{where}.options")
        if default is not None:
            check_way_out(default, f"{where}.default")
        on_failure = closed_hours = None
        if "on_failure" in data:
            on_failure = self.on_failure(data["on_failure"], where)
        if "closed_hours" in data:
            closed_hours = self.closed_hours(data["closed_hours"], where)

        def optional(key: str, parse: Any) -> Any:
            return parse(data[key], f"{where}.{key}") if key in data else None

        return MenuSpec(
            name=name,
            options=options,
            default=default,
            intro=optional("intro", self.prompt),
            no_input_timeout=optional("no_input_timeout", check_seconds),
            max_no_input=optional("max_no_input", lambda v, w: check_whole(v, w, 0)),
            max_invalid=optional("max_invalid", lambda v, w: check_whole(v, w, 0)),
            invalid_prompt=optional("invalid_prompt", self.prompt),
            no_input_prompt=optional("no_input_prompt", self.prompt),
            on_failure=on_failure,
            closed_hours=closed_hours,
        )

    def on_failure(self, data: Any, menu: str) -> Action:
        where = f"{menu}.on_failure"
        if not isinstance(data, dict):
            raise ConfigError(where, "must be a table such as {transfer = \"...\"}")
        action = self.action(data, where)
        if action.kind not in ("transfer", "hangup", "submenu"):
            raise ConfigError(where, "must transfer, hang up or go to a sub-menu")
        return action

    def closed_hours(self, table: Any, menu: str) -> Tuple[str, str]:
        here = f"{menu}.closed_hours"
        if not isinstance(table, dict) or set(table) != {"schedule", "menu"}:
            raise ConfigError(
                here, 'must be a table such as {schedule = "agents", menu = "after_hours"}'
            )
        schedule = check_text(table["schedule"], f"{here}.schedule")
        variant = check_text(table["menu"], f"{here}.menu")
        self.refs.schedules.append((schedule, f"{here}.schedule"))
        self.refs.submenus.append((variant, f"{here}.menu"))
        self.refs.variants.append((variant, here))
        return schedule, variant

    def options(self, data: Any, where: str, allow_rules: bool) -> Tuple[Option, ...]:
        """
        One list of options; ``allow_rules``: whether they may test profile
        attributes (not in ``default``, for callers without a profile).
        """
        if not isinstance(data, list) or not data:
            raise ConfigError(where, "must be a non-empty list of options ([[...]] tables)")
        options = [self.option(item, f"{where}[{i}]", allow_rules) for i, item in enumerate(data)]
        check_keys(options, where)
        return tuple(options)

    def option(self, item: Any, here: str, allow_rules: bool) -> Option:
        if not isinstance(item, dict):
            raise ConfigError(here, "an option must be a table")
        check_unknown(item, _OPTION_KEYS, here)
        key = item.get("key")
        if key is not None and not is_key(key):
            raise ConfigError(f"{here}.key", "must be one of 0-9, * or #")
        prompt = self.prompt(item.get("prompt"), f"{here}.prompt")
        action = self.action(item, here)
        when = self.rule(item["when"], f"{here}.when", allow_rules) if "when" in item else None
        return Option(key, prompt, action, when)

    def rule(self, data: Any, where: str, allow_rules: bool) -> Any:
        when = parse_rule(data, where)
        tests = list(walk_rule(when))
        if not allow_rules and any(isinstance(r, Compare) for r in tests):
            raise ConfigError(
                where,
                "default options take no rule over profile attributes "
                "(rules over opening hours, {open = \"...\"}, are fine)",
            )
        for rule in tests:
            if isinstance(rule, Open):
                self.refs.schedules.append((rule.schedule, where))
        return when

    def prompt(self, value: Any, where: str) -> str:
        prompt = check_text(value, where)
        self.refs.prompts.append((prompt, where))
        return prompt

    def action(self, item: Mapping[str, Any], where: str, in_collect: bool = False) -> Action:
        """
        The one action key of an option (or of ``on_failure``, or a
        collection's ``then``).
        """
        given = [k for k in _ACTION_KEYS if k in item]
        if len(given) != 1:
            raise ConfigError(
                where,
                "needs exactly one of: " + ", ".join(_ACTION_KEYS[1:]) + " (or action)",
            )
        kind = given[0]
        value = item[kind]
        here = f"{where}.{kind}"
        if kind in ("action", "transfer"):
            name = check_text(value, here)
            if name not in self.targets:
                raise ConfigError(
                    here, f"{name!r} is not a configured transfer target ({self.where}.targets)"
                )
            return Action("transfer", name)
        if kind == "submenu":
            name = check_text(value, here)
            self.refs.submenus.append((name, here))
            return Action("submenu", name)
        if kind == "play":
            return Action("play", self.prompt(value, here))
        if kind in ("repeat", "hangup"):
            if value is not True:
                raise ConfigError(here, "must be true")
            return Action(kind)
        if in_collect:
            raise ConfigError(here, "a collection cannot lead to another collection")
        return Action("collect", collect=self.collect(value, here))

    def collect(self, data: Any, where: str) -> Collect:
        """
        A ``collect = {...}`` table: multi-digit entry.
        """
        if not isinstance(data, dict):
            raise ConfigError(where, "must be a table")
        check_unknown(data, _COLLECT_KEYS, where)
        then = data.get("then")
        if not isinstance(then, dict):
            raise ConfigError(f"{where}.then", "must be a table naming what happens next")
        then_action = self.action(then, f"{where}.then", in_collect=True)
        if then_action.kind in ("play", "repeat"):
            raise ConfigError(f"{where}.then", "must transfer, go to a sub-menu or hang up")
        defaults = Collect("", then_action)
        minimum = check_whole(
            data.get("min_digits", defaults.min_digits), f"{where}.min_digits", 1
        )
        maximum = check_whole(
            data.get("max_digits", defaults.max_digits), f"{where}.max_digits", 1
        )
        if maximum < minimum:
            raise ConfigError(f"{where}.max_digits", "must be at least min_digits")
        terminator, valid = _collect_keys(data, defaults, where)
        return Collect(
            prompt=self.prompt(data.get("prompt"), f"{where}.prompt"),
            then=then_action,
            name=check_text(data.get("name", defaults.name), f"{where}.name"),
            min_digits=minimum,
            max_digits=maximum,
            inter_digit_timeout=check_seconds(
                data.get("inter_digit_timeout", defaults.inter_digit_timeout),
                f"{where}.inter_digit_timeout",
            ),
            terminator=terminator,
            valid_keys=valid,
        )


def _collect_keys(
    data: Mapping[str, Any], defaults: Collect, where: str
) -> Tuple[Optional[str], str]:
    """
    A collection's ``terminator`` (``""``: none) and ``valid_keys``.
    """
    terminator = data.get("terminator", defaults.terminator)
    if terminator == "":
        terminator = None
    if terminator is not None and not is_key(terminator):
        raise ConfigError(f"{where}.terminator", "must be one key (usually #), or empty")
    valid = data.get("valid_keys", defaults.valid_keys)
    if not isinstance(valid, str) or not valid or any(k not in VALID_DIGITS for k in valid):
        raise ConfigError(f"{where}.valid_keys", "must be a string of keys 0-9, * and #")
    if terminator is not None and terminator in valid:
        raise ConfigError(f"{where}.terminator", "must not be one of valid_keys")
    return terminator, valid
