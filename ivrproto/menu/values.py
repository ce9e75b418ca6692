"""
What a menu is made of: the options and what they do (:class:`Action`,
:class:`Collect`), a configured menu (:class:`MenuSpec`), a menu as built for
one caller (:class:`Menu`) and the prompt sets (:class:`Prompts`).  All
frozen; :class:`~ivrproto.menu.book.MenuBook` holds them.
"""

from __future__ import annotations

from typing import Iterator, Mapping, Optional, Tuple

import attrs

from ivrproto.menu.rules import Rule

__all__ = ["AUDIO_SUFFIXES", "Action", "Collect", "Menu", "MenuSpec", "Option", "Prompts"]

#: What a prompt that names a file (rather than a prompt set's entry) ends with.
AUDIO_SUFFIXES = (".mp3", ".wav")

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

    def actions(self) -> Iterator[Action]:
        """
        Every action this menu can take: its options' (and what each
        collection does next), its own on-failure action if it has one, and
        a sub-menu action for its closed-hours variant.
        """
        for option in self.options + (self.default or ()):
            yield option.action
            if option.action.collect is not None:
                yield option.action.collect.then
        if self.on_failure is not None:
            yield self.on_failure
        if self.closed_hours is not None:
            yield Action("submenu", self.closed_hours[1])


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
