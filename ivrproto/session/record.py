"""
What is kept of a call once it has ended: the :class:`CallRecord` that
``GET /v1/calls/<id>`` and the end-of-call log line show, and the keyed
caller reference that stands in for the raw caller id everywhere.
"""


from __future__ import annotations

import hashlib
import hmac
from typing import Any, Mapping, Optional

import attrs

from ivrproto.session.core import SessionCore
from ivrproto.session.ports import Outcome


__all__ = [
    "caller_ref",
    "CallRecord",
    "PERSONAL",
    "describe_option",
    "describe_timeline",
    "describe_keys",
]


def caller_ref(external_id: str, key: bytes) -> str:
    """
    A stable, keyed stand-in for a caller id, safe to log: the raw id never
    appears in logs, errors or metrics.
    """
    digest = hmac.new(key, external_id.encode("utf-8"), hashlib.sha256).hexdigest()
    return "caller-" + digest[:12]


@attrs.frozen
class CallRecord:
    """
    What ``GET /v1/calls/<id>`` shows of an ended call.

    :ivar menu_version: :attr:`~ivrproto.menu.book.MenuBook.version` of the menu
        configuration that served the call
    :ivar option: the last option the caller chose (see
        :func:`describe_option`), or ``None``
    :ivar fallback: why the caller got no personal menu (the profile
        lookup's outcome: ``not-found``, ``timed-out``, ``rate-limited``,
        ``failed``...), or ``none``
    :ivar hours: the opening hours that served the call
        (:meth:`~ivrproto.menu.schedules.Hours.to_json`)
    """

    call_control_id: str
    outcome: Outcome
    duration: float
    menu: str
    keys: tuple[str, ...]
    profile: str = "pending"
    menu_version: str = ""
    option: Optional[Mapping[str, Optional[str]]] = None
    fallback: str = "none"
    hours: Optional[Mapping[str, Any]] = None

    def to_json(self) -> dict[str, Any]:
        return {
            "callControlId": self.call_control_id,
            "state": "ended",
            "outcome": self.outcome.to_json(),
            "profile": self.profile,
            "fallback": self.fallback,
            "menu": self.menu,
            "menuVersion": self.menu_version,
            "option": None if self.option is None else dict(self.option),
            "keys": list(self.keys),
            "duration": round(self.duration, 3),
            "hours": None if self.hours is None else dict(self.hours),
        }


#: The profile lookup outcomes that give the caller their own menu.
PERSONAL = frozenset({"found", "hit"})


def describe_option(core: SessionCore) -> Optional[dict[str, Optional[str]]]:
    """
    The last option the caller chose, as the call's record shows it: the
    menu, the key, what the option does and what it names (the target's
    action name and the target for a transfer, the sub-menu, the prompt, or
    the name of the digits a ``collect`` asks for: never the digits).
    """
    if core.selected is None:
        return None
    menu, key, action = core.selected
    name = action.name
    if action.kind == "collect" and action.collect is not None:
        name = action.collect.name
    target = core.book.targets.get(name) if action.kind == "transfer" and name else None
    return {"menu": menu, "key": key, "action": action.kind, "name": name, "target": target}


def _option_text(option: Optional[Mapping[str, Optional[str]]]) -> str:
    if option is None:
        return "none"
    what = " ".join(str(option[k]) for k in ("action", "name") if option.get(k))
    return f"{option['key']} in {option['menu']} ({what})"


def describe_timeline(core: SessionCore) -> str:
    """
    One line with a call's timeline: ``+0.012s connected; +0.020s menu...``,
    with the count of notes left out before the last one.
    """
    parts = [f"+{t:.3f}s {what}" for t, what in core.timeline]
    if core.notes_dropped:
        parts.insert(len(parts) - 1, f"({core.notes_dropped} more notes)")
    return "; ".join(parts)


def describe_keys(core: SessionCore) -> str:
    """
    The keys a call kept, with the count of those it did not.
    """
    text = " ".join(core.keys)
    more = core.keys_total - len(core.keys)
    return f"{text} (+{more} more)" if more > 0 else text
