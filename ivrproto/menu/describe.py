"""
A menu book in words, for ``ivr check``: the menu tree
(:func:`menu_tree`), what an action does (:func:`describe_action`) and what
a rule asks (:func:`describe_rule`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterator, Mapping, Set, Tuple

from ivrproto.menu.rules import AllOf, Compare, Not, Open, Rule
from ivrproto.menu.values import Action, MenuSpec

if TYPE_CHECKING:
    from ivrproto.menu.book import MenuBook

__all__ = ["describe_action", "describe_rule", "menu_tree"]

#: One line of the tree: its depth and its text.
Line = Tuple[int, str]


def describe_rule(rule: Rule) -> str:
    """
    ``rule`` as it reads: ``(tier equals 'gold' and agents is open)``.
    """
    if isinstance(rule, Compare):
        return f"{rule.attribute} {rule.op} {rule.value!r}"
    if isinstance(rule, Open):
        return f"{rule.schedule} is open"
    if isinstance(rule, Not):
        return f"not ({describe_rule(rule.rule)})"
    joiner = " and " if isinstance(rule, AllOf) else " or "
    return "(" + joiner.join(describe_rule(r) for r in rule.rules) + ")"


def describe_action(action: Action, targets: Mapping[str, str]) -> str:
    """
    What ``action`` does: ``transfer to queue:billing``, ``submenu sales``,
    ``collect account (4-8 digits, ends with #), then hangup``...

    :param targets: the book's transfer targets, by action name
    """
    if action.kind == "transfer":
        return f"transfer to {targets[action.name]}"  # type: ignore[index]
    if action.kind == "collect":
        c = action.collect
        assert c is not None
        return (
            f"collect {c.name} ({c.min_digits}-{c.max_digits} digits"
            f"{', ends with ' + c.terminator if c.terminator else ''}), "
            f"then {describe_action(c.then, targets)}"
        )
    if action.kind in ("submenu", "play"):
        return f"{action.kind} {action.name}"
    return action.kind


def menu_tree(book: "MenuBook") -> Iterator[Line]:
    """
    The menu tree as ``(depth, line)`` pairs, from the start menu.  A
    sub-menu is shown in full where it is first reached (by an option, after
    a collection, after the last try, or as a closed-hours variant), and
    named only elsewhere.
    """
    return _Tree(book).menu(book.start, 0)


class _Tree:
    """
    One walk of a book's menus, remembering those already shown.
    """

    def __init__(self, book: "MenuBook") -> None:
        self.book = book
        self.seen: Set[str] = set()

    def menu(self, name: str, depth: int) -> Iterator[Line]:
        book = self.book
        spec = book.menus[name]
        yield depth, f"menu {name}" + (" (start)" if name == book.start else "")
        if name in self.seen:
            return
        self.seen.add(name)
        if spec.closed_hours is not None:
            schedule, variant = spec.closed_hours
            yield depth + 1, f"while {schedule} is closed: menu {variant} instead"
            yield from self.into(Action("submenu", variant), depth + 2)
        yield from self.options(spec, depth)
        on_failure = book.on_failure(spec)
        yield depth + 1, f"after the last try: {describe_action(on_failure, book.targets)}"
        yield from self.into(on_failure, depth + 2)

    def options(self, spec: MenuSpec, depth: int) -> Iterator[Line]:
        groups = [("options", spec.options)]
        if spec.default is not None:
            groups = [("with a profile", spec.options), ("without a profile", spec.default)]
        for title, options in groups:
            if len(groups) > 1:
                yield depth + 1, title + ":"
            for option in options:
                key = option.key or "(next free key)"
                when = f" when {describe_rule(option.when)}" if option.when else ""
                does = describe_action(option.action, self.book.targets)
                yield depth + 2, f"{key}: {option.prompt} -> {does}{when}"
                yield from self.into(option.action, depth + 3)

    def into(self, action: Action, depth: int) -> Iterator[Line]:
        # A sub-menu is shown where it is first reached: by an option,
        # after a collection, or after the last try.
        if action.collect is not None:
            action = action.collect.then
        if action.kind == "submenu" and action.name not in self.seen:
            yield from self.menu(action.name, depth)  # type: ignore[arg-type]
