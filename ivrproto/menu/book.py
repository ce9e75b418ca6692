"""
Menus as data.

A :class:`MenuBook` holds every menu of a configuration: the start menu and
named sub-menus, each a list of options with optional rules over the
caller's profile attributes (:mod:`ivrproto.menu.rules`), the transfer targets
(an allow-list: nothing a caller, a profile or the platform sends can name
another), the prompts per language, and the input settings of each menu.
Everything is checked when it is loaded: a book that loads is one that no
caller can get stuck in.

:meth:`MenuBook.menu_for` builds the :class:`Menu` offered to one caller;
built menus are shared between calls that choose the same options, so the
per-call cost is one pass over the rules.

Time is an input too: the book holds the ``[schedules]`` (opening hours,
:mod:`ivrproto.menu.schedules`) and the ``[closure]`` (the emergency closure,
:mod:`ivrproto.menu.closure`), and :meth:`MenuBook.menu_for` takes the
:class:`~ivrproto.menu.schedules.Hours` of the call's arrival: ``{open = "..."}``
rules, closed-hours variants of menus, and the closure menu follow it.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Dict, Iterator, Mapping, Optional, Sequence, Tuple

import attrs

from ivrproto.menu.closure import ClosureConfig, parse_closure
from ivrproto.errors import ConfigError
from ivrproto.messages import VALID_DIGITS
from ivrproto.menu.rules import (
    COMPARISONS,
    AllOf,
    AnyOf,
    Compare,
    Not,
    Open,
    Rule,
    parse_rule,
    walk_rule,
)
from ivrproto.menu.schedules import Hours, Schedule, hours_at, parse_schedules

__all__ = [
    "AllOf",
    "AnyOf",
    "COMPARISONS",
    "Action",
    "Collect",
    "Compare",
    "Menu",
    "MenuBook",
    "MenuSpec",
    "Not",
    "Open",
    "Option",
    "menu_version",
    "parse_menu",
    "parse_rule",
]

#: Keys handed out, in this order, to options that do not fix their own.
AUTO_KEYS = "1234567890"
AUDIO_SUFFIXES = (".mp3", ".wav")
START = "main"
#: The name of the menu an emergency closure offers.
CLOSURE = "closure"

# --- what options do ---------------------------------------------------------


@attrs.frozen
class Collect:
    """
    Multi-digit entry (an account number, a date of birth...).

    :ivar prompt: what the caller hears first ("enter your account number")
    :ivar name: what the digits are, for the call's record
    :ivar terminator: the key that ends the entry early, or ``None``
    :ivar valid_keys: the keys that count as digits
    :ivar then: what happens once the digits are in
    """

    prompt: str
    then: "Action"
    name: str = "digits"
    min_digits: int = 1
    max_digits: int = 16
    inter_digit_timeout: float = 3.0
    terminator: Optional[str] = "#"
    valid_keys: str = "0123456789"


@attrs.frozen
class Action:
    """
    What choosing an option does.

    :ivar kind: ``transfer`` (to a configured target), ``submenu``, ``play``
        (a prompt, then the menu again), ``repeat``, ``hangup`` or
        ``collect``
    :ivar name: the target's action name, the sub-menu's name, or the
        prompt played
    """

    kind: str
    name: Optional[str] = None
    collect: Optional[Collect] = None


@attrs.frozen
class Option:
    """
    One menu entry.

    :ivar key: the key that selects it; ``None`` to take the next free key
        in order when the menu is built for a caller
    :ivar prompt: the prompt announcing it (a file name or a named prompt)
    :ivar action: what it does
    :ivar when: the rule that must hold for the option to be offered, or
        ``None`` for always
    """

    key: Optional[str]
    prompt: str
    action: Action
    when: Optional[Rule] = None


@attrs.frozen
class MenuSpec:
    """
    One configured menu, with its input settings (``None``: the ``[timing]``
    default).

    :ivar options: for callers with a profile (the only list, if
        ``default`` is ``None``)
    :ivar default: for callers without a profile
    :ivar intro: a prompt played before the options
    :ivar on_failure: what happens after the last try (default: operator)
    :ivar closed_hours: ``(schedule, menu)``: while the schedule is closed,
        the named menu is offered instead of this one
    """

    name: str
    options: Tuple[Option, ...]
    default: Optional[Tuple[Option, ...]] = None
    intro: Optional[str] = None
    no_input_timeout: Optional[float] = None
    max_no_input: Optional[int] = None
    max_invalid: Optional[int] = None
    invalid_prompt: Optional[str] = None
    no_input_prompt: Optional[str] = None
    on_failure: Optional[Action] = None
    closed_hours: Optional[Tuple[str, str]] = None


@attrs.frozen
class Menu:
    """
    A menu as offered to one caller: prompts as URLs, keys assigned.

    :ivar prompt_urls: the intro (if any) and each option's prompt, in order
    :ivar keys: every key of the menu, in menu order
    :ivar actions: what each key does
    :ivar targets: the transfer target of each key that transfers
    """

    name: str
    language: str
    prompt_urls: Tuple[str, ...]
    keys: Tuple[str, ...]
    actions: Mapping[str, Action]
    targets: Mapping[str, str]
    is_default: bool
    spec: MenuSpec


# --- prompts -----------------------------------------------------------------


@attrs.frozen
class Prompts:
    """
    Prompt sets per language.  A prompt is a file name (``x.mp3``, used as
    is) or a name looked up in the caller's language, then in the default
    language.
    """

    base_url: str
    default_language: str = "en"
    sets: Mapping[str, Mapping[str, str]] = attrs.field(factory=dict)

    def has(self, prompt: str) -> bool:
        return prompt.endswith(AUDIO_SUFFIXES) or prompt in self.sets.get(
            self.default_language, {}
        )

    def url(self, prompt: str, language: str) -> str:
        if prompt.endswith(AUDIO_SUFFIXES):
            return self.base_url + prompt
        for name in (language, self.default_language):
            found = self.sets.get(name, {}).get(prompt)
            if found is not None:
                return self.base_url + found
        raise KeyError(prompt)  # refused at load: see MenuBook checks


# --- the book ----------------------------------------------------------------


@attrs.frozen
class MenuBook:
    """
    Every menu a call can get, and the prompts and targets around them.

    :ivar start: the name of the menu a call starts in
    :ivar targets: the allow-list of transfer targets, by action name
    :ivar operator: the action used when the caller gives no input or the
        call cannot go on
    :ivar language_attribute: the profile attribute that picks the language
    :ivar schedules: the opening hours rules and menus can test
    :ivar closure: the emergency closure's settings, if any
    :ivar version: a short hash of everything above (menus, options, rules,
        targets, prompts, schedules), computed once when the book is made: each call's
        record names the menu that served it, and a reload that changes the
        menu changes it
    """

    menus: Mapping[str, MenuSpec]
    targets: Mapping[str, str]
    prompts: Prompts
    confirm_prompt: str = "selection_confirmed.mp3"
    invalid_prompt: str = "invalid_selection.mp3"
    no_input_prompt: Optional[str] = None
    operator: str = "transfer_operator"
    start: str = START
    language_attribute: Optional[str] = None
    schedules: Mapping[str, Schedule] = attrs.field(factory=dict)
    closure: Optional[ClosureConfig] = None
    _cache: Dict[Tuple[Any, ...], Menu] = attrs.field(factory=dict, eq=False, repr=False)
    version: str = attrs.field(init=False, eq=False)

    @version.default
    def _version(self) -> str:
        return menu_version(self)

    @property
    def audio_base_url(self) -> str:
        return self.prompts.base_url

    @property
    def operator_target(self) -> str:
        return self.targets[self.operator]

    @property
    def default_menu(self) -> Menu:
        return self.menu_for(None)

    @property
    def profile_options(self) -> Tuple[Option, ...]:
        return self.menus[self.start].options

    @property
    def default_options(self) -> Tuple[Option, ...]:
        spec = self.menus[self.start]
        return spec.options if spec.default is None else spec.default

    def language_for(self, attributes: Optional[Mapping[str, Any]]) -> str:
        """
        The caller's prompt language: their profile's, if it has a prompt
        set, else the default.
        """
        if attributes is not None and self.language_attribute is not None:
            language = attributes.get(self.language_attribute)
            if isinstance(language, str) and language in self.prompts.sets:
                return language
        return self.prompts.default_language

    def url(self, prompt: str, language: str) -> str:
        return self.prompts.url(prompt, language)

    def confirm_url(self, language: Optional[str] = None) -> str:
        return self.url(self.confirm_prompt, language or self.prompts.default_language)

    def invalid_url(self, menu: Optional[Menu] = None) -> str:
        prompt = self.invalid_prompt
        language = self.prompts.default_language
        if menu is not None:
            prompt = menu.spec.invalid_prompt or prompt
            language = menu.language
        return self.url(prompt, language)

    def no_input_url(self, menu: Menu) -> Optional[str]:
        prompt = menu.spec.no_input_prompt or self.no_input_prompt
        return None if prompt is None else self.url(prompt, menu.language)

    def on_failure(self, menu: Optional[Menu]) -> Action:
        if menu is not None and menu.spec.on_failure is not None:
            return menu.spec.on_failure
        return Action("transfer", self.operator)

    def hours_at(self, seconds: float, closure: Any = None) -> Hours:
        """
        The state of this book's schedules at ``seconds`` after the epoch,
        with the emergency closure ``closure`` (a
        :class:`~ivrproto.menu.closure.Notice`) if one is in force.
        """
        return hours_at(self.schedules, seconds, closure)

    def menu_for(
        self,
        attributes: Optional[Mapping[str, Any]],
        name: Optional[str] = None,
        language: Optional[str] = None,
        hours: Optional[Hours] = None,
    ) -> Menu:
        """
        The menu offered to a caller.

        :param attributes: the caller's profile attributes, or ``None`` when
            there is no profile (404, failure, or time budget spent)
        :param name: which menu (default: the start menu)
        :param language: the prompt language (default: from the profile)
        :param hours: the schedules when the call arrived; ``None``: every
            schedule counts as open and there is no closure
        """
        if language is None:
            language = self.language_for(attributes)
        if hours is not None and hours.closure is not None and self.closure is not None:
            return self._closure_menu(language)
        spec = self.menus[name or self.start]
        open_now = None if hours is None else hours.open
        if spec.closed_hours is not None and open_now is not None:
            schedule, variant = spec.closed_hours
            if schedule not in open_now:
                spec = self.menus[variant]
        is_default = attributes is None and spec.default is not None
        seen = attributes if attributes is not None else {}
        options = spec.default if is_default else spec.options
        assert options is not None
        chosen = tuple(
            i for i, o in enumerate(options) if o.when is None or o.when.matches(seen, open_now)
        )
        cache_key = (spec.name, language, is_default, chosen)
        menu = self._cache.get(cache_key)
        if menu is None:
            menu = self._cache[cache_key] = self._build(
                spec, language, [options[i] for i in chosen], is_default  # type: ignore[index]
            )
        return menu

    def _closure_menu(self, language: str) -> Menu:
        """
        The emergency closure's menu: its message and no option; after
        ``wait`` seconds, or at the first key, the call goes to the
        closure's target (or is hung up).
        """
        closure = self.closure
        assert closure is not None
        cache_key = (CLOSURE, language, False, None)
        menu = self._cache.get(cache_key)
        if menu is None:
            then = (
                Action("hangup") if closure.target is None else Action("transfer", closure.target)
            )
            spec = MenuSpec(
                name=CLOSURE,
                options=(),
                intro=closure.prompt,
                no_input_timeout=closure.wait,
                max_no_input=0,
                max_invalid=1,
                on_failure=then,
            )
            menu = self._cache[cache_key] = self._build(spec, language, (), False)
        return menu

    def _build(
        self, spec: MenuSpec, language: str, options: Sequence[Option], is_default: bool
    ) -> Menu:
        taken = {o.key for o in options if o.key is not None}
        free = iter(k for k in AUTO_KEYS if k not in taken)
        keys = tuple(o.key if o.key is not None else next(free) for o in options)
        urls = tuple(self.url(o.prompt, language) for o in options)
        if spec.intro is not None:
            urls = (self.url(spec.intro, language),) + urls
        actions = {k: o.action for k, o in zip(keys, options)}
        return Menu(
            name=spec.name,
            language=language,
            prompt_urls=urls,
            keys=keys,
            actions=actions,
            targets={
                k: self.targets[a.name]  # type: ignore[index]
                for k, a in actions.items()
                if a.kind == "transfer"
            },
            is_default=is_default,
            spec=spec,
        )

    def walk(self) -> Iterator[Tuple[int, str]]:
        """
        The menu tree as ``(depth, line)`` pairs, for ``ivr check``.
        """
        seen: set[str] = set()

        def describe(action: Action) -> str:
            if action.kind == "transfer":
                return f"transfer to {self.targets[action.name]}"  # type: ignore[index]
            if action.kind == "collect":
                c = action.collect
                assert c is not None
                return (
                    f"collect {c.name} ({c.min_digits}-{c.max_digits} digits"
                    f"{', ends with ' + c.terminator if c.terminator else ''}), "
                    f"then {describe(c.then)}"
                )
            if action.kind in ("submenu", "play"):
                return f"{action.kind} {action.name}"
            return action.kind

        def lines(name: str, depth: int) -> Iterator[Tuple[int, str]]:
            spec = self.menus[name]
            yield depth, f"menu {name}" + (" (start)" if name == self.start else "")
            if name in seen:
                return
            seen.add(name)
            if spec.closed_hours is not None:
                yield depth + 1, (
                    f"while {spec.closed_hours[0]} is closed: menu {spec.closed_hours[1]} instead"
                )
                yield from into(Action("submenu", spec.closed_hours[1]), depth + 2)
            groups = [("options", spec.options)]
            if spec.default is not None:
                groups = [("with a profile", spec.options), ("without a profile", spec.default)]
            for title, options in groups:
                if len(groups) > 1:
                    yield depth + 1, title + ":"
                for option in options:
                    key = option.key or "(next free key)"
                    when = f" when {_describe_rule(option.when)}" if option.when else ""
                    yield depth + 2, f"{key}: {option.prompt} -> {describe(option.action)}{when}"
                    yield from into(option.action, depth + 3)
            on_failure = self.on_failure_of(spec)
            yield depth + 1, f"after the last try: {describe(on_failure)}"
            yield from into(on_failure, depth + 2)

        def into(action: Action, depth: int) -> Iterator[Tuple[int, str]]:
            # A sub-menu is shown where it is first reached: by an option,
            # after a collection, or after the last try.
            if action.collect is not None:
                action = action.collect.then
            if action.kind == "submenu" and action.name not in seen:
                yield from lines(action.name, depth)  # type: ignore[arg-type]

        yield from lines(self.start, 0)

    def on_failure_of(self, spec: MenuSpec) -> Action:
        return spec.on_failure or Action("transfer", self.operator)


def _canonical(value: Any) -> Any:
    """
    ``value`` as plain JSON data that names each class, with mappings in key
    order: two books serialize alike exactly when they are configured alike.
    """
    if attrs.has(type(value)):
        fields = {
            f.name: _canonical(getattr(value, f.name))
            for f in attrs.fields(type(value))
            if f.init and f.name != "_cache"
        }
        return {"class": type(value).__name__, "fields": fields}
    if isinstance(value, Mapping):
        return {str(k): _canonical(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, (tuple, list)):
        return [_canonical(v) for v in value]
    if isinstance(value, (frozenset, set)):
        return sorted((_canonical(v) for v in value), key=repr)
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return {"class": type(value).__name__, "repr": repr(value)}


def menu_version(book: MenuBook) -> str:
    """
    A short, stable hash of a book's configuration (see
    :attr:`MenuBook.version`).
    """
    text = json.dumps(_canonical(book), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


def _describe_rule(rule: Rule) -> str:
    if isinstance(rule, Compare):
        return f"{rule.attribute} {rule.op} {rule.value!r}"
    if isinstance(rule, Open):
        return f"{rule.schedule} is open"
    if isinstance(rule, Not):
        return f"not ({_describe_rule(rule.rule)})"
    joiner = " and " if isinstance(rule, AllOf) else " or "
    return "(" + joiner.join(_describe_rule(r) for r in rule.rules) + ")"


# --- loading and checking ----------------------------------------------------

_ACTION_KEYS = ("action", "transfer", "submenu", "play", "repeat", "hangup", "collect")
_OPTION_KEYS = {"key", "prompt", "when", *_ACTION_KEYS}
_MENU_KEYS = {
    "options",
    "default",
    "intro",
    "no_input_timeout",
    "max_no_input",
    "max_invalid",
    "invalid_prompt",
    "no_input_prompt",
    "on_failure",
    "closed_hours",
}
_COLLECT_KEYS = {
    "prompt",
    "then",
    "name",
    "min_digits",
    "max_digits",
    "inter_digit_timeout",
    "terminator",
    "valid_keys",
}


def _text(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(where, "must be a non-empty string")
    return value


def _whole(value: Any, where: str, minimum: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ConfigError(where, f"must be a whole number of at least {minimum}")
    return value


def _seconds(value: Any, where: str) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not value > 0:
        raise ConfigError(where, "must be a number of seconds greater than zero")
    if value != value or value == float("inf"):
        raise ConfigError(where, "must be a finite number")
    return float(value)


def _unknown(table: Mapping[str, Any], known: set[str], where: str) -> None:
    unknown = sorted(set(table) - known)
    if unknown:
        raise ConfigError(f"{where}.{unknown[0]}", "unknown setting")


class _Loader:
    """
    Parses the ``[menu]`` table and checks every reference in it.
    """

    def __init__(self, data: Mapping[str, Any], where: str) -> None:
        self.data = data
        self.where = where
        self.targets: Dict[str, str] = {}
        self.prompt_refs: list[tuple[str, str]] = []  # (prompt, where)
        self.submenu_refs: list[tuple[str, str]] = []
        self.schedule_refs: list[tuple[str, str]] = []
        self.variants: list[tuple[str, str]] = []  # (menu, where)

    def prompt(self, value: Any, where: str) -> str:
        prompt = _text(value, where)
        self.prompt_refs.append((prompt, where))
        return prompt

    def action(self, item: Mapping[str, Any], where: str, in_collect: bool = False) -> Action:
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
            name = _text(value, here)
            if name not in self.targets:
                raise ConfigError(
                    here, f"{name!r} is not a configured transfer target ({self.where}.targets)"
                )
            return Action("transfer", name)
        if kind == "submenu":
            name = _text(value, here)
            self.submenu_refs.append((name, here))
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
        if not isinstance(data, dict):
            raise ConfigError(where, "must be a table")
        _unknown(data, _COLLECT_KEYS, where)
        then = data.get("then")
        if not isinstance(then, dict):
            raise ConfigError(f"{where}.then", "must be a table naming what happens next")
        then_action = self.action(then, f"{where}.then", in_collect=True)
        if then_action.kind in ("play", "repeat"):
            raise ConfigError(f"{where}.then", "must transfer, go to a sub-menu or hang up")
        defaults = Collect("", then_action)
        minimum = _whole(data.get("min_digits", defaults.min_digits), f"{where}.min_digits", 1)
        maximum = _whole(data.get("max_digits", defaults.max_digits), f"{where}.max_digits", 1)
        if maximum < minimum:
            raise ConfigError(f"{where}.max_digits", "must be at least min_digits")
        terminator = data.get("terminator", defaults.terminator)
        if terminator == "":
            terminator = None
        if terminator is not None and (
            not isinstance(terminator, str) or len(terminator) != 1 or terminator not in VALID_DIGITS
        ):
            raise ConfigError(f"{where}.terminator", "must be one key (usually #), or empty")
        valid = data.get("valid_keys", defaults.valid_keys)
        if not isinstance(valid, str) or not valid or any(k not in VALID_DIGITS for k in valid):
            raise ConfigError(f"{where}.valid_keys", "must be a string of keys 0-9, * and #")
        if terminator is not None and terminator in valid:
            raise ConfigError(f"{where}.terminator", "must not be one of valid_keys")
        return Collect(
            prompt=self.prompt(data.get("prompt"), f"{where}.prompt"),
            then=then_action,
            name=_text(data.get("name", defaults.name), f"{where}.name"),
            min_digits=minimum,
            max_digits=maximum,
            inter_digit_timeout=_seconds(
                data.get("inter_digit_timeout", defaults.inter_digit_timeout),
                f"{where}.inter_digit_timeout",
            ),
            terminator=terminator,
            valid_keys=valid,
        )

    def options(self, data: Any, where: str, allow_rules: bool) -> Tuple[Option, ...]:
        if not isinstance(data, list) or not data:
            raise ConfigError(where, "must be a non-empty list of options ([[...]] tables)")
        options = []
        for i, item in enumerate(data):
            here = f"{where}[{i}]"
            if not isinstance(item, dict):
                raise ConfigError(here, "an option must be a table")
            _unknown(item, _OPTION_KEYS, here)
            key = item.get("key")
            if key is not None and (
                not isinstance(key, str) or len(key) != 1 or key not in VALID_DIGITS
            ):
                raise ConfigError(f"{here}.key", "must be one of 0-9, * or #")
            prompt = self.prompt(item.get("prompt"), f"{here}.prompt")
            action = self.action(item, here)
            when = None
            if "when" in item:
                when = parse_rule(item["when"], f"{here}.when")
                tests = list(walk_rule(when))
                if not allow_rules and any(isinstance(r, Compare) for r in tests):
                    raise ConfigError(
                        f"{here}.when",
                        "default options take no rule over profile attributes "
                        "(rules over opening hours, {open = \"...\"}, are fine)",
                    )
                for rule in tests:
                    if isinstance(rule, Open):
                        self.schedule_refs.append((rule.schedule, f"{here}.when"))
            options.append(Option(key, prompt, action, when))
        self.check_keys(options, where)
        return tuple(options)

    @staticmethod
    def check_keys(options: Sequence[Option], where: str) -> None:
        seen: Dict[str, int] = {}
        for i, option in enumerate(options):
            if option.key is None:
                continue
            if option.key in seen:
                raise ConfigError(
                    f"{where}[{i}].key",
                    f"key {option.key!r} is already used by {where}[{seen[option.key]}]",
                )
            seen[option.key] = i
        if len(options) > len(AUTO_KEYS) + 2:
            raise ConfigError(where, "has more options than there are keys")
        auto = sum(1 for o in options if o.key is None)
        if auto > len([k for k in AUTO_KEYS if k not in seen]):
            raise ConfigError(where, "not enough free keys for the options without a key")

    def menu(self, name: str, data: Any, where: str) -> MenuSpec:
        if not isinstance(data, dict):
            raise ConfigError(where, "must be a table")
        _unknown(data, _MENU_KEYS | self.extra_keys(where), where)
        options = self.options(data.get("options"), f"{where}.options", True)
        default = None
        if "default" in data:
            default = self.options(data["default"], f"{where}.default", False)
        for group, title in ((options, "options"), (default, "default")):
            if group is not None and not any(
                o.when is None and o.action.kind in ("transfer", "submenu", "hangup", "collect")
                for o in group
            ):
                raise ConfigError(
                    f"{where}.{title}",
                    "has no way out: needs an option without a rule that transfers, "
                    "hangs up, collects input or goes to a sub-menu",
                )
        on_failure = None
        if "on_failure" in data:
            if not isinstance(data["on_failure"], dict):
                raise ConfigError(f"{where}.on_failure", "must be a table such as {transfer = \"...\"}")
            on_failure = self.action(data["on_failure"], f"{where}.on_failure")
            if on_failure.kind not in ("transfer", "hangup", "submenu"):
                raise ConfigError(f"{where}.on_failure", "must transfer, hang up or go to a sub-menu")

        def optional(key: str, parse: Any) -> Any:
            return parse(data[key], f"{where}.{key}") if key in data else None

        closed_hours = None
        if "closed_hours" in data:
            here = f"{where}.closed_hours"
            table = data["closed_hours"]
            if not isinstance(table, dict) or set(table) != {"schedule", "menu"}:
                raise ConfigError(
                    here, 'must be a table such as {schedule = "agents", menu = "after_hours"}'
                )
            closed_hours = (_text(table["schedule"], f"{here}.schedule"), _text(table["menu"], f"{here}.menu"))
            self.schedule_refs.append((closed_hours[0], f"{here}.schedule"))
            self.submenu_refs.append((closed_hours[1], f"{here}.menu"))
            self.variants.append((closed_hours[1], here))

        return MenuSpec(
            name=name,
            options=options,
            default=default,
            intro=optional("intro", self.prompt),
            no_input_timeout=optional("no_input_timeout", _seconds),
            max_no_input=optional("max_no_input", lambda v, w: _whole(v, w, 0)),
            max_invalid=optional("max_invalid", lambda v, w: _whole(v, w, 0)),
            invalid_prompt=optional("invalid_prompt", self.prompt),
            no_input_prompt=optional("no_input_prompt", self.prompt),
            on_failure=on_failure,
            closed_hours=closed_hours,
        )

    def extra_keys(self, where: str) -> set[str]:
        # The start menu lives in [menu] itself, beside the book's settings.
        if where != self.where:
            return set()
        return {
            "targets",
            "menus",
            "prompts",
            "confirm_prompt",
            "invalid_prompt",
            "no_input_prompt",
            "operator",
            "start",
            "language_attribute",
            "default_language",
        }


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
    _unknown(data, _MENU_KEYS | loader.extra_keys(where), where)
    targets = data.get("targets")
    if not isinstance(targets, dict) or not targets:
        raise ConfigError(f"{where}.targets", "must be a table of action = \"target\"")
    for name, target in targets.items():
        if not isinstance(target, str) or not target.strip():
            raise ConfigError(f"{where}.targets.{name}", "must be a non-empty string")
    loader.targets = dict(targets)

    texts: Dict[str, Any] = {}
    for name, default in (
        ("confirm_prompt", "selection_confirmed.mp3"),
        ("invalid_prompt", "invalid_selection.mp3"),
        ("operator", "transfer_operator"),
        ("start", START),
        ("default_language", "en"),
    ):
        texts[name] = _text(data.get(name, default), f"{where}.{name}")
    for name in ("no_input_prompt", "language_attribute"):
        texts[name] = _text(data[name], f"{where}.{name}") if name in data else None
    if texts["operator"] not in loader.targets:
        raise ConfigError(
            f"{where}.operator",
            f"{texts['operator']!r} is not a configured transfer target ({where}.targets)",
        )
    for name in ("confirm_prompt", "invalid_prompt", "no_input_prompt"):
        if texts[name] is not None:
            loader.prompt_refs.append((texts[name], f"{where}.{name}"))

    sets = _parse_prompt_sets(data.get("prompts", {}), f"{where}.prompts")
    prompts = Prompts(audio_base_url, texts["default_language"], sets)
    if sets and texts["default_language"] not in sets:
        raise ConfigError(
            f"{where}.default_language",
            f"{texts['default_language']!r} has no prompt set ({where}.prompts.<language>)",
        )

    menus: Dict[str, MenuSpec] = {}
    sub = data.get("menus", {})
    if not isinstance(sub, dict):
        raise ConfigError(f"{where}.menus", "must be a table of [menu.menus.<name>] tables")
    start = texts["start"]
    if "options" in data:
        if start in sub:
            raise ConfigError(f"{where}.menus.{start}", "the start menu is defined twice")
        start_table = {k: v for k, v in data.items() if k in _MENU_KEYS}
        menus[start] = loader.menu(start, start_table, where)
    else:
        stray = sorted(k for k in data if k in _MENU_KEYS)
        if stray:
            raise ConfigError(
                f"{where}.{stray[0]}",
                f"belongs to a start menu given by [[{where}.options]]; "
                f"move it to [{where}.menus.{start}]",
            )
    for name, table in sub.items():
        menus[name] = loader.menu(name, table, f"{where}.menus.{name}")
    if start not in menus:
        raise ConfigError(
            f"{where}.options", f"no start menu: give [[{where}.options]] or [{where}.menus.{start}]"
        )

    for name, here in loader.submenu_refs:
        if name not in menus:
            raise ConfigError(here, f"there is no menu {name!r}")
    for prompt, here in loader.prompt_refs:
        if not prompts.has(prompt):
            raise ConfigError(
                here,
                f"prompt {prompt!r} has no file: name an .mp3/.wav file or a prompt of "
                f"{where}.prompts.{texts['default_language']}",
            )
    for name, here in loader.schedule_refs:
        if name not in schedule_book:
            raise ConfigError(here, f"there is no schedule {name!r} ([schedules.{name}])")
    used = {name for name, _ in loader.schedule_refs}
    for name in schedule_book:
        if name not in used:
            raise ConfigError(
                f"schedules.{name}",
                "is not used: no rule ({open = \"...\"}) or closed_hours names it",
            )
    for name, here in loader.variants:
        if name in menus and menus[name].closed_hours is not None:
            raise ConfigError(here, f"menu {name!r} has closed hours of its own; pick one menu")
    closure_config = parse_closure(closure, loader.targets, prompts.has)
    _check_reachable(menus, start, where)
    _check_failure_paths(
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


def _parse_prompt_sets(data: Any, where: str) -> Dict[str, Dict[str, str]]:
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


def _check_reachable(menus: Mapping[str, MenuSpec], start: str, where: str) -> None:
    def actions(spec: MenuSpec) -> Iterator[Action]:
        for option in spec.options + (spec.default or ()):
            yield option.action
            if option.action.collect is not None:
                yield option.action.collect.then
        if spec.on_failure is not None:
            yield spec.on_failure
        if spec.closed_hours is not None:
            yield Action("submenu", spec.closed_hours[1])

    reached = {start}
    todo = [start]
    while todo:
        for action in actions(menus[todo.pop()]):
            if action.kind == "submenu" and action.name not in reached:
                reached.add(action.name)  # type: ignore[arg-type]
                todo.append(action.name)  # type: ignore[arg-type]
    for name in menus:
        if name not in reached:
            raise ConfigError(f"{where}.menus.{name}", "cannot be reached from the start menu")


def _check_failure_paths(menus: Mapping[str, MenuSpec], places: Mapping[str, str]) -> None:
    """
    Refuse on-failure sub-menus that lead round in a circle: a caller who
    never presses a key would be offered menus for ever.
    """
    for name in menus:
        path = [name]
        action = menus[name].on_failure
        while action is not None and action.kind == "submenu":
            assert action.name is not None
            if action.name in path:
                raise ConfigError(
                    f"{places[path[-1]]}.on_failure",
                    "goes round in a circle (" + " -> ".join(path + [action.name]) + "): "
                    "a caller who never presses a key would never leave; "
                    "end one of them with a transfer or a hang-up",
                )
            path.append(action.name)
            action = menus[action.name].on_failure
