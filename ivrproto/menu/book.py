"""
Menus as data, and the menu each caller gets.

A :class:`MenuBook` holds every menu of a configuration: the start menu and
named sub-menus, each a list of options with optional rules over the
caller's profile attributes (:mod:`ivrproto.menu.rules`), the transfer targets
(an allow-list: nothing a caller, a profile or the platform sends can name
another), the prompts per language, and the input settings of each menu (the parts
are in :mod:`ivrproto.menu.values`).  Everything is checked when it is
loaded (:func:`ivrproto.menu.load.parse_menu`): a book that loads is one
that no caller can get stuck in.

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
from typing import Any, Dict, Iterator, Mapping, Optional, Sequence, Tuple, Union

import attrs

from ivrproto.menu.closure import ClosureConfig
from ivrproto.menu.describe import menu_tree
from ivrproto.menu.rules import (
    COMPARISONS,
    AllOf,
    AnyOf,
    Compare,
    Not,
    Open,
    parse_rule,
)
from ivrproto.menu.schedules import Hours, Schedule, hours_at
from ivrproto.menu.values import AUDIO_SUFFIXES, Action, Collect, Menu, MenuSpec, Option, Prompts

__all__ = [
    "AUDIO_SUFFIXES",
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
    "Prompts",
    "menu_version",
    "parse_rule",
]

#: Keys handed out, in this order, to options that do not fix their own.
AUTO_KEYS = "1234567890"
START = "main"
#: The name of the menu an emergency closure offers.
CLOSURE = "closure"
#: The keys the closure's message listens for: all of them.
CLOSURE_KEYS = tuple("0123456789*#")


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
    # Built menus, shared by the calls that choose the same options.  Not an
    # argument: attrs.evolve() makes a book with an empty one, so a changed
    # book never serves menus built from the old settings.
    _built: Dict[Tuple[Any, ...], Menu] = attrs.field(
        init=False, factory=dict, eq=False, repr=False
    )
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

    def on_failure(self, menu: Union[Menu, MenuSpec, None]) -> Action:
        """
        What happens after the last try in ``menu`` (a built menu or its
        spec): its own ``on_failure``, else a transfer to the operator.
        """
        spec = menu.spec if isinstance(menu, Menu) else menu
        if spec is not None and spec.on_failure is not None:
            return spec.on_failure
        return Action("transfer", self.operator)

    def actions(self) -> Iterator[Action]:
        """
        Every action of every menu (see :meth:`MenuSpec.actions`), then the
        operator transfer that a menu without ``on_failure`` ends with.
        """
        for spec in self.menus.values():
            yield from spec.actions()
        yield Action("transfer", self.operator)

    def walk(self) -> Iterator[Tuple[int, str]]:
        """
        The menu tree as ``(depth, line)`` pairs, for ``ivr check`` (see
        :func:`ivrproto.menu.describe.menu_tree`).
        """
        return menu_tree(self)

    def scaled(self, speed: float) -> "MenuBook":
        """
        This book with its caller-facing delays divided by ``speed``: each
        menu's no-input timeout, each collection's inter-digit timeout and
        the closure's wait (for ``ivr simulate``).  The new book builds its
        menus afresh.
        """

        def option(o: Option) -> Option:
            c = o.action.collect
            if c is None:
                return o
            faster = attrs.evolve(c, inter_digit_timeout=c.inter_digit_timeout / speed)
            return attrs.evolve(o, action=attrs.evolve(o.action, collect=faster))

        def menu(spec: MenuSpec) -> MenuSpec:
            timeout = spec.no_input_timeout
            return attrs.evolve(
                spec,
                options=tuple(option(o) for o in spec.options),
                default=None if spec.default is None else tuple(map(option, spec.default)),
                no_input_timeout=None if timeout is None else timeout / speed,
            )

        closure = self.closure
        if closure is not None:
            closure = attrs.evolve(closure, wait=closure.wait / speed)
        menus = {name: menu(spec) for name, spec in self.menus.items()}
        return attrs.evolve(self, menus=menus, closure=closure)

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
            return self._closure_menu(language, hours.closure)
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
        menu = self._built.get(cache_key)
        if menu is None:
            menu = self._built[cache_key] = self._build(
                spec, language, [options[i] for i in chosen], is_default  # type: ignore[index]
            )
        return menu

    def _closure_menu(self, language: str, notice: Any = None) -> Menu:
        """
        The emergency closure's menu: its message and no option; after
        ``wait`` seconds, or at the first key (any), the call goes to the
        closure's target (or is hung up).  The admin endpoint's closure
        (``notice``) names its own prompt and target; one that a reload made
        unknown gives way to the ``[closure]``'s.
        """
        closure = self.closure
        assert closure is not None
        prompt, then = closure.prompt, (
            Action("hangup") if closure.target is None else Action("transfer", closure.target)
        )
        if notice is not None and notice.prompt is not None and self.prompts.has(notice.prompt):
            prompt = notice.prompt
        if notice is not None and notice.hangup:
            then = Action("hangup")
        elif notice is not None and notice.target in self.targets:
            then = Action("transfer", notice.target)
        cache_key = (CLOSURE, language, prompt, then)
        menu = self._built.get(cache_key)
        if menu is None:
            spec = MenuSpec(
                name=CLOSURE,
                options=(),
                intro=prompt,
                no_input_timeout=closure.wait,
                max_no_input=0,
                max_invalid=1,
                on_failure=then,
            )
            # It listens for every key (the platform refuses a play that
            # listens for none), and none is an option: the first key is an
            # invalid one, the last try, and the call goes at once.
            menu = self._built[cache_key] = attrs.evolve(
                self._build(spec, language, (), False), keys=CLOSURE_KEYS
            )
        return menu

    def is_closure_menu(self, menu: Optional[Menu]) -> bool:
        """Whether ``menu`` is an emergency closure's (built by this book)."""
        if menu is None or menu.spec.name != CLOSURE:
            return False
        key = (CLOSURE, menu.language, menu.spec.intro, menu.spec.on_failure)
        return self._built.get(key) is menu

    def give_up_reason(self, menu: Optional[Menu], reason: str) -> str:
        """
        Why a call leaves ``menu`` after its last try, for its outcome:
        ``closure`` for the emergency closure's menu (whose wait is a
        no-input timeout and whose keys are invalid input), else ``reason``.
        """
        return "closure" if self.is_closure_menu(menu) else reason

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


def _canonical(value: Any) -> Any:
    """
    ``value`` as plain JSON data that names each class, with mappings in key
    order: two books serialize alike exactly when they are configured alike.
    """
    if attrs.has(type(value)):
        fields = {
            f.name: _canonical(getattr(value, f.name))
            for f in attrs.fields(type(value))
            if f.init
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


