"""
Rules over profile attributes and opening hours, loaded from configuration
and checked when they are loaded, never evaluated with ``eval``.  A missing
attribute, or one of another type than the rule compares with, fails the
rule.  ``{open = "agents"}`` holds while the schedule ``agents`` is open
(:mod:`ivrproto.menu.schedules`): every rule is given the set of schedules open
when the call arrived.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Iterator, Mapping, Tuple, Union

import attrs

from ivrproto.errors import ConfigError


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

    def matches(self, attributes: Mapping[str, Any], open_now: Any = None) -> bool:
        """
        Whether the caller's ``attributes`` pass: ``exists`` tests presence;
        ``equals``, ``not_equals`` and ``one_of`` need a value of the same
        kind (any number matches any number); ``gt``, ``ge``, ``lt`` and
        ``le`` need numbers.

        :param open_now: unused (see :class:`Open`)
        """
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
    """
    ``{all = [rule, ...]}``: holds when every one of its rules holds.
    """

    rules: Tuple["Rule", ...]

    def matches(self, attributes: Mapping[str, Any], open_now: Any = None) -> bool:
        """
        Whether every rule matches ``attributes`` with the schedules
        ``open_now`` (see :class:`Open`).
        """
        return all(r.matches(attributes, open_now) for r in self.rules)


@attrs.frozen
class AnyOf:
    """
    ``{any = [rule, ...]}``: holds when at least one of its rules holds.
    """

    rules: Tuple["Rule", ...]

    def matches(self, attributes: Mapping[str, Any], open_now: Any = None) -> bool:
        """
        Whether some rule matches ``attributes`` with the schedules
        ``open_now`` (see :class:`Open`).
        """
        return any(r.matches(attributes, open_now) for r in self.rules)


@attrs.frozen
class Not:
    """
    ``{not = rule}``: holds when its rule does not.  (A missing attribute
    fails a comparison, so ``not`` of it holds.)
    """

    rule: "Rule"

    def matches(self, attributes: Mapping[str, Any], open_now: Any = None) -> bool:
        """
        Whether the rule fails for ``attributes`` with the schedules
        ``open_now`` (see :class:`Open`).
        """
        return not self.rule.matches(attributes, open_now)


@attrs.frozen
class Open:
    """
    Holds while the schedule is open.

    ``open_now`` is the set of schedules open when the call arrived, or
    ``None`` when no time is given (every schedule counts as open).
    """

    schedule: str

    def matches(self, attributes: Mapping[str, Any], open_now: Any = None) -> bool:
        """
        Whether the schedule is in ``open_now`` (always, when that is
        ``None``); ``attributes`` are not looked at.
        """
        return open_now is None or self.schedule in open_now


#: Any rule: what :func:`parse_rule` returns.
Rule = Union[Compare, AllOf, AnyOf, Not, Open]


def walk_rule(rule: Rule) -> Iterator[Rule]:
    """
    ``rule`` and every rule inside it.
    """
    yield rule
    if isinstance(rule, (AllOf, AnyOf)):
        for inner in rule.rules:
            yield from walk_rule(inner)
    elif isinstance(rule, Not):
        yield from walk_rule(rule.rule)


COMPARISONS = ("equals", "not_equals", "one_of", "gt", "ge", "lt", "le", "exists")


def parse_rule(data: Any, where: str) -> Rule:
    """
    Parse one rule from configuration.

    Forms: ``{attribute = "x", <op> = value}`` with ``op`` one of
    :data:`COMPARISONS`; ``{open = "schedule"}``; ``{all = [rule, ...]}``;
    ``{any = [rule, ...]}``; ``{not = rule}``.

    :param where: the dotted place in the file, for error messages
    :raises ConfigError: naming ``where`` when the rule is not well formed
    """
    if not isinstance(data, dict):
        raise ConfigError(where, "a rule must be a table")
    if "open" in data:
        if len(data) != 1:
            raise ConfigError(where, "'open' must stand alone in its table")
        name = data["open"]
        if not isinstance(name, str) or not name:
            raise ConfigError(f"{where}.open", "must name a schedule ([schedules.<name>])")
        return Open(name)
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


