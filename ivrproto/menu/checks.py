"""
The checks of a menu book, called by :mod:`ivrproto.menu.load`: of one
value and of one option list (its keys, a way out) as they are read, and
those that need every
menu at once (the references the tables make to sub-menus, prompts and
schedules resolve, every menu can be reached from the start menu, and no
chain of on-failure sub-menus goes round in a circle).
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Sequence, Tuple

import attrs

from ivrproto.errors import ConfigError
from ivrproto.menu.book import AUTO_KEYS
from ivrproto.menu.values import MenuSpec, Option, Prompts
from ivrproto.messages import VALID_DIGITS

__all__ = [
    "References",
    "check_failure_paths",
    "check_keys",
    "check_reachable",
    "check_seconds",
    "check_text",
    "check_unknown",
    "check_way_out",
    "check_whole",
    "is_key",
]

# --- one value ---------------------------------------------------------------

def check_text(value: Any, where: str) -> str:
    """``value``, a non-empty string."""
    if not isinstance(value, str) or not value:
        raise ConfigError(where, "must be a non-empty string")
    return value


def check_whole(value: Any, where: str, minimum: int) -> int:
    """``value``, a whole number of at least ``minimum``."""
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ConfigError(where, f"must be a whole number of at least {minimum}")
    return value


def check_seconds(value: Any, where: str) -> float:
    """``value``, a finite number of seconds greater than zero."""
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not value > 0:
        raise ConfigError(where, "must be a number of seconds greater than zero")
    if value != value or value == float("inf"):
        raise ConfigError(where, "must be a finite number")
    return float(value)


def check_unknown(table: Mapping[str, Any], known: set[str], where: str) -> None:
    """Refuse a key of ``table`` that is not ``known``."""
    unknown = sorted(set(table) - known)
    if unknown:
        raise ConfigError(f"{where}.{unknown[0]}", "unknown setting")


def is_key(value: Any) -> bool:
    """Whether ``value`` is one key a caller can press."""
    return isinstance(value, str) and len(value) == 1 and value in VALID_DIGITS


# --- one option list ---------------------------------------------------------

#: What a menu must offer, by an option without a rule, not to trap a caller.
_WAYS_OUT = ("transfer", "submenu", "hangup", "collect")


def check_way_out(options: Sequence[Option], where: str) -> None:
    """
    Refuse an option list that can trap a caller: one without an option,
    offered whatever the rules say, that leaves it.
    """
    if not any(o.when is None and o.action.kind in _WAYS_OUT for o in options):
        raise ConfigError(
            where,
            "has no way out: needs an option without a rule that transfers, "
            "hangs up, collects input or goes to a sub-menu",
        )


def check_keys(options: Sequence[Option], where: str) -> None:
    """
    No key used twice in one list, and enough keys for the options
    without one.
    """
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


# --- the whole book ----------------------------------------------------------

#: A name a table uses, and the place in the file that uses it.
Reference = Tuple[str, str]


@attrs.define
class References:
    """
    The names a ``[menu]`` table uses, each with the place that uses it,
    collected while it is read.

    :ivar variants: menus named as another menu's closed-hours variant
    """

    prompts: List[Reference] = attrs.Factory(list)
    submenus: List[Reference] = attrs.Factory(list)
    schedules: List[Reference] = attrs.Factory(list)
    variants: List[Reference] = attrs.Factory(list)

    def check(
        self,
        menus: Mapping[str, MenuSpec],
        prompts: Prompts,
        schedules: Mapping[str, object],
        where: str,
    ) -> None:
        """
        Every reference resolves; every schedule is used; a closed-hours
        variant has no variant of its own.

        :param where: the place of the ``[menu]`` table (``menu``)
        :raises ConfigError: naming the first bad place
        """
        for name, here in self.submenus:
            if name not in menus:
                raise ConfigError(here, f"there is no menu {name!r}")
        for prompt, here in self.prompts:
            if not prompts.has(prompt):
                raise ConfigError(
                    here,
                    f"prompt {prompt!r} has no file: name an .mp3/.wav file or a prompt of "
                    f"{where}.prompts.{prompts.default_language}",
                )
        for name, here in self.schedules:
            if name not in schedules:
                raise ConfigError(here, f"there is no schedule {name!r} ([schedules.{name}])")
        used = {name for name, _ in self.schedules}
        for name in schedules:
            if name not in used:
                raise ConfigError(
                    f"schedules.{name}",
                    "is not used: no rule ({open = \"...\"}) or closed_hours names it",
                )
        for name, here in self.variants:
            if name in menus and menus[name].closed_hours is not None:
                raise ConfigError(here, f"menu {name!r} has closed hours of its own; pick one menu")


def check_reachable(menus: Mapping[str, MenuSpec], start: str, where: str) -> None:
    """
    Refuse a menu that no action leads to from the start menu.
    """
    reached = {start}
    todo = [start]
    while todo:
        for action in menus[todo.pop()].actions():
            if action.kind == "submenu" and action.name not in reached:
                reached.add(action.name)  # type: ignore[arg-type]
                todo.append(action.name)  # type: ignore[arg-type]
    for name in menus:
        if name not in reached:
            raise ConfigError(f"{where}.menus.{name}", "cannot be reached from the start menu")


def check_failure_paths(menus: Mapping[str, MenuSpec], places: Mapping[str, str]) -> None:
    """
    Refuse on-failure sub-menus that lead round in a circle: a caller who
    never presses a key would be offered menus for ever.

    :param places: where each menu is in the file
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
