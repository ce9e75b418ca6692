"""
What an operator asks of the emergency closure through the admin listener
(``PUT`` and ``DELETE /v1/closure``), checked: the notice a ``PUT`` switches on,
its prompt and target taken only from the configuration, and who asks.
"""

from __future__ import annotations

from typing import Any, Dict, Optional


from ivrproto.menu.closure import ADMIN, ClosureConfig, Notice, clean_text

__all__ = ["admin_by", "admin_notice"]


def admin_notice(data: Any, config: ClosureConfig, targets: Any, prompt_ok: Any) -> Notice:
    """
    The admin endpoint's closure from a ``PUT /v1/closure`` body: ``by``
    (required), and optionally ``prompt`` (a prompt with a file), ``target``
    (a configured transfer target's action name) or ``hangup: true``, and
    ``reason``; what is left out is the ``[closure]``'s.

    :param targets: the configured transfer targets' action names
    :param prompt_ok: tells whether a prompt has a file
    :raises ValueError: with a message for the operator
    """
    if not isinstance(data, dict):
        raise ValueError("the body must be a JSON object")
    unknown = sorted(set(data) - {"prompt", "target", "hangup", "by", "reason"})
    if unknown:
        raise ValueError(f"unknown field {unknown[0]!r} (known: by, prompt, target, hangup, reason)")
    by = _admin_text(data, "by", required=True)
    assert by is not None
    prompt = _admin_text(data, "prompt") or config.prompt
    if not prompt_ok(prompt):
        raise ValueError(f"prompt {prompt!r} has no file")
    hangup = data.get("hangup", False)
    if hangup not in (True, False):
        raise ValueError("hangup must be true or false")
    target = _admin_text(data, "target")
    if target is not None and hangup:
        raise ValueError("give target or hangup = true, not both")
    if target is not None and target not in targets:
        known = ", ".join(sorted(targets))
        raise ValueError(f"target {target!r} is not a configured transfer target (known: {known})")
    if target is None and not hangup:
        target, hangup = config.target, config.target is None
    reason = _admin_text(data, "reason") or ""
    return Notice(reason, by, ADMIN, prompt, target, bool(hangup))


def admin_by(data: Any) -> str:
    """
    Who, from a ``DELETE /v1/closure`` body (``{"by": ...}``).

    :raises ValueError: with a message for the operator
    """
    if not isinstance(data, dict):
        raise ValueError("the body must be a JSON object")
    unknown = sorted(set(data) - {"by"})
    if unknown:
        raise ValueError(f"unknown field {unknown[0]!r} (known: by)")
    by = _admin_text(data, "by", required=True)
    assert by is not None
    return by


def _admin_text(data: Dict[str, Any], key: str, required: bool = False) -> Optional[str]:
    value = data.get(key)
    if value is None and not required:
        return None
    text = clean_text(value)
    if not text or not isinstance(value, str):
        raise ValueError(f"{key} must be a non-empty string")
    return text
