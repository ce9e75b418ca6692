"""
Menus as data: rules over profile attributes, loaded from configuration and
checked when they are loaded, never evaluated with ``eval``.

A :class:`MenuBook` holds the options offered to callers with a profile (each
with an optional rule) and the default options for callers without one.
:meth:`MenuBook.menu_for` picks the :class:`Menu` for one call; menus are
built once per distinct choice of options and then shared, so the per-call
cost is one pass over the rules.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Tuple

import attrs

from .errors import ConfigError
from .messages import VALID_DIGITS

# --- rules -------------------------------------------------------------------


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _same_kind(a: object, b: object) -> bool:
    if _is_number(a) and _is_number(b):
        return True
    return type(a) is type(b)


@attrs.frozen
class Compare:
    """
    Compare one attribute with a value.  A missing attribute, or one of
    another type than the value, fails the rule.
    """

    attribute: str
    op: str
    value: Any

    def matches(self, attributes: Mapping[str, Any]) -> bool:
        if self.op == "exists":
            return (self.attribute in attributes) is self.value
        if self.attribute not in attributes:
            return False
        actual = attributes[self.attribute]
        if self.op == "one_of":
            return any(_same_kind(actual, v) and actual == v for v in self.value)
        if not _same_kind(actual, self.value):
            return False
        if self.op == "equals":
            return bool(actual == self.value)
        if self.op == "not_equals":
            return bool(actual != self.value)
        if not _is_number(actual):
            return False
        return _ORDERINGS[self.op](actual, self.value)


_ORDERINGS: Dict[str, Callable[[Any, Any], bool]] = {
    "gt": lambda a, b: a > b,
    "ge": lambda a, b: a >= b,
    "lt": lambda a, b: a < b,
    "le": lambda a, b: a <= b,
}


@attrs.frozen
class AllOf:
    rules: Tuple["Rule", ...]

    def matches(self, attributes: Mapping[str, Any]) -> bool:
        return all(r.matches(attributes) for r in self.rules)


@attrs.frozen
class AnyOf:
    rules: Tuple["Rule", ...]

    def matches(self, attributes: Mapping[str, Any]) -> bool:
        return any(r.matches(attributes) for r in self.rules)


@attrs.frozen
class Not:
    rule: "Rule"

    def matches(self, attributes: Mapping[str, Any]) -> bool:
        return not self.rule.matches(attributes)


Rule = Any  # Compare | AllOf | AnyOf | Not

COMPARISONS = ("equals", "not_equals", "one_of", "gt", "ge", "lt", "le", "exists")


def parse_rule(data: Any, where: str) -> Rule:
    """
    Parse one rule from configuration.

    Forms: ``{attribute = "x", <op> = value}`` with ``op`` one of
    :data:`COMPARISONS`; ``{all = [rule, ...]}``; ``{any = [rule, ...]}``;
    ``{not = rule}``.

    :param where: the dotted place in the file, for error messages
    :raises ConfigError: naming ``where`` when the rule is not well formed
    """
    if not isinstance(data, dict):
        raise ConfigError(where, "a rule must be a table")
    combinators = [k for k in ("all", "any", "not") if k in data]
    if combinators:
        if len(data) != 1:
            raise ConfigError(where, f"{combinators[0]!r} must stand alone in its table")
        key = combinators[0]
        if key == "not":
            return Not(parse_rule(data["not"], f"{where}.not"))
        items = data[key]
        if not isinstance(items, list) or not items:
            raise ConfigError(f"{where}.{key}", "must be a non-empty list of rules")
        rules = tuple(parse_rule(r, f"{where}.{key}[{i}]") for i, r in enumerate(items))
        return AllOf(rules) if key == "all" else AnyOf(rules)
    attribute = data.get("attribute")
    if not isinstance(attribute, str) or not attribute:
        raise ConfigError(f"{where}.attribute", "must be a non-empty string")
    ops = [k for k in data if k != "attribute"]
    if len(ops) != 1:
        raise ConfigError(
            where, f"needs exactly one comparison, one of: {', '.join(COMPARISONS)}"
        )
    op = ops[0]
    value = data[op]
    if op not in COMPARISONS:
        raise ConfigError(
            f"{where}.{op}",
            f"unknown rule operator; known: {', '.join(COMPARISONS)}",
        )
    if op in ("gt", "ge", "lt", "le") and not _is_number(value):
        raise ConfigError(f"{where}.{op}", "must be a number")
    if op == "exists" and not isinstance(value, bool):
        raise ConfigError(f"{where}.{op}", "must be true or false")
    if op == "one_of":
        if not isinstance(value, list) or not value:
            raise ConfigError(f"{where}.{op}", "must be a non-empty list")
        if any(isinstance(v, (dict, list)) for v in value):
            raise ConfigError(f"{where}.{op}", "must be a list of single values")
        value = tuple(value)
    if isinstance(value, (dict, list)):
        raise ConfigError(f"{where}.{op}", "must be a single value")
    return Compare(attribute, op, value)


# --- menus -------------------------------------------------------------------


@attrs.frozen
class Option:
    """
    One menu entry.

    :ivar key: the key that selects it
    :ivar prompt: the prompt's file name, relative to the audio base URL
    :ivar action: the name of the configured transfer target it leads to
    :ivar when: the rule that must hold for the option to be offered, or
        ``None`` for always
    """

    key: str
    prompt: str
    action: str
    when: Optional[Rule] = None


@attrs.frozen
class Menu:
    """
    The menu offered on one call, ready to send.

    :ivar options: the options, in the order they are offered
    :ivar prompt_urls: the prompt of each option, as absolute URLs
    :ivar keys: every key of the menu, in menu order
    :ivar targets: the transfer target of each key
    :ivar actions: the action name of each key (for logs and outcomes)
    """

    options: Tuple[Option, ...]
    prompt_urls: Tuple[str, ...]
    keys: Tuple[str, ...]
    targets: Mapping[str, str]
    actions: Mapping[str, str]
    is_default: bool


def _build_menu(
    options: Sequence[Option],
    audio_base_url: str,
    targets: Mapping[str, str],
    is_default: bool,
) -> Menu:
    return Menu(
        options=tuple(options),
        prompt_urls=tuple(audio_base_url + o.prompt for o in options),
        keys=tuple(o.key for o in options),
        targets={o.key: targets[o.action] for o in options},
        actions={o.key: o.action for o in options},
        is_default=is_default,
    )


@attrs.frozen
class MenuBook:
    """
    Every menu a call can get, and the prompts and targets around them.

    :ivar audio_base_url: prefix of every prompt file name
    :ivar targets: the allow-list of transfer targets, by action name
    :ivar operator: the action used when the caller gives no input or the
        call cannot go on
    """

    profile_options: Tuple[Option, ...]
    default_options: Tuple[Option, ...]
    targets: Mapping[str, str]
    audio_base_url: str
    confirm_prompt: str
    invalid_prompt: str
    operator: str
    _cache: Dict[Tuple[int, ...], Menu] = attrs.field(
        factory=dict, eq=False, repr=False
    )

    @property
    def default_menu(self) -> Menu:
        menu = self._cache.get(())
        if menu is None:
            menu = self._cache[()] = _build_menu(
                self.default_options, self.audio_base_url, self.targets, True
            )
        return menu

    @property
    def operator_target(self) -> str:
        return self.targets[self.operator]

    @property
    def confirm_url(self) -> str:
        return self.audio_base_url + self.confirm_prompt

    @property
    def invalid_url(self) -> str:
        return self.audio_base_url + self.invalid_prompt

    def menu_for(self, attributes: Optional[Mapping[str, Any]]) -> Menu:
        """
        The menu for a caller.

        :param attributes: the caller's profile attributes, or ``None`` when
            there is no profile (404, failure, or time budget spent)
        """
        if attributes is None:
            return self.default_menu
        chosen = tuple(
            i
            for i, option in enumerate(self.profile_options)
            if option.when is None or option.when.matches(attributes)
        )
        # Key () is the default menu; profile menus are keyed by the indices
        # chosen, shifted by one so that the two never collide.
        cache_key = (-1,) + chosen
        menu = self._cache.get(cache_key)
        if menu is None:
            menu = self._cache[cache_key] = _build_menu(
                [self.profile_options[i] for i in chosen],
                self.audio_base_url,
                self.targets,
                False,
            )
        return menu


_OPTION_KEYS = {"key", "prompt", "action", "when"}


def _parse_options(
    data: Any, where: str, targets: Mapping[str, str], allow_rules: bool
) -> Tuple[Option, ...]:
    if not isinstance(data, list) or not data:
        raise ConfigError(where, "must be a non-empty list of options ([[...]] tables)")
    options = []
    for i, item in enumerate(data):
        here = f"{where}[{i}]"
        if not isinstance(item, dict):
            raise ConfigError(here, "an option must be a table")
        unknown = sorted(set(item) - _OPTION_KEYS)
        if unknown:
            raise ConfigError(f"{here}.{unknown[0]}", "unknown setting")
        key = item.get("key")
        if not isinstance(key, str) or len(key) != 1 or key not in VALID_DIGITS:
            raise ConfigError(f"{here}.key", "must be one of 0-9, * or #")
        prompt = item.get("prompt")
        if not isinstance(prompt, str) or not prompt:
            raise ConfigError(f"{here}.prompt", "must name a prompt file")
        action = item.get("action")
        if not isinstance(action, str) or not action:
            raise ConfigError(f"{here}.action", "must name a transfer target")
        if action not in targets:
            raise ConfigError(
                f"{here}.action",
                f"{action!r} is not a configured transfer target (menu.targets)",
            )
        when = None
        if "when" in item:
            if not allow_rules:
                raise ConfigError(f"{here}.when", "default options take no rule")
            when = parse_rule(item["when"], f"{here}.when")
        options.append(Option(key, prompt, action, when))
    return tuple(options)


def _check_keys_unique(options: Sequence[Option], where: str) -> None:
    """
    Refuse two options on one key in one list of options.
    """
    seen: Dict[str, int] = {}
    for i, option in enumerate(options):
        if option.key in seen:
            raise ConfigError(
                f"{where}[{i}].key",
                f"key {option.key!r} is already used by {where}[{seen[option.key]}]",
            )
        seen[option.key] = i


def parse_menu(data: Any, audio_base_url: str, where: str = "menu") -> MenuBook:
    """
    Load and check the ``[menu]`` table.

    :raises ConfigError: naming the place in the file that is wrong
    """
    if not isinstance(data, dict):
        raise ConfigError(where, "missing or not a table")
    known = {"targets", "options", "default", "confirm_prompt", "invalid_prompt", "operator"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"{where}.{unknown[0]}", "unknown setting")
    targets = data.get("targets")
    if not isinstance(targets, dict) or not targets:
        raise ConfigError(f"{where}.targets", "must be a table of action = \"target\"")
    for name, target in targets.items():
        if not isinstance(target, str) or not target.strip():
            raise ConfigError(f"{where}.targets.{name}", "must be a non-empty string")
    profile_options = _parse_options(data.get("options"), f"{where}.options", targets, True)
    default_options = _parse_options(data.get("default"), f"{where}.default", targets, False)
    _check_keys_unique(profile_options, f"{where}.options")
    _check_keys_unique(default_options, f"{where}.default")
    if all(o.when is not None for o in profile_options):
        raise ConfigError(
            f"{where}.options",
            "needs at least one option without a rule, so every caller has a way out",
        )
    texts = {}
    for name, default in (
        ("confirm_prompt", "selection_confirmed.mp3"),
        ("invalid_prompt", "invalid_selection.mp3"),
        ("operator", "transfer_operator"),
    ):
        value = data.get(name, default)
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{where}.{name}", "must be a non-empty string")
        texts[name] = value
    if texts["operator"] not in targets:
        raise ConfigError(
            f"{where}.operator",
            f"{texts['operator']!r} is not a configured transfer target (menu.targets)",
        )
    return MenuBook(
        profile_options=profile_options,
        default_options=default_options,
        targets=dict(targets),
        audio_base_url=audio_base_url,
        confirm_prompt=texts["confirm_prompt"],
        invalid_prompt=texts["invalid_prompt"],
        operator=texts["operator"],
    )
