"""
Caller scripts: the steps a scripted caller takes (``"menu"``,
``"press:1"``, ``"wait:0.5"``...), checked and split into name and argument.

:class:`~ivrproto.emulator.scripted.ScriptedCall` runs them; a scenario
file's ``[[calls]]`` and ``POST /emulator/calls`` take them.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence, TypeVar

_S = TypeVar("_S")

__all__ = [
    "DTMF_KEYS",
    "PROMPT_SETTLE",
    "STEP_NAMES",
    "Step",
    "parse_script",
    "parse_step",
    "parse_steps",
    "step_seconds",
]

#: The keys a caller can press.
DTMF_KEYS = frozenset("0123456789*#")

#: Script steps that take no argument.
_PLAIN_STEPS = frozenset(
    {"menu", "play", "hangup", "drop", "media", "unknown", "garbage", "binary"}
)
#: Script steps written ``name:argument``.
_ARG_STEPS = frozenset({"press", "wait", "error"})
#: Script steps written ``name`` or ``name:argument``.
_OPTIONAL_ARG_STEPS = frozenset({"prompts"})
STEP_NAMES = tuple(sorted(_PLAIN_STEPS | _ARG_STEPS | _OPTIONAL_ARG_STEPS))

#: Seconds without a new ``play`` after which the ``prompts`` step takes the
#: prompts received so far as one batch (a client sends a batch at once).
PROMPT_SETTLE = 0.05

#: One checked step: its name and its argument.
Step = tuple[str, Any]


def parse_step(step: object) -> Step:
    """
    Check one caller script step and split it into its name and argument.

    :param step: a step such as ``"menu"``, ``"press:1"``, ``"wait:0.5"``
        or ``"prompts"``
    :return: ``(name, argument)``; the argument is ``None``, a ``str``
        (``press``, ``error``) or a ``float`` (``wait``, and ``prompts``,
        whose settle time defaults to :data:`PROMPT_SETTLE`)
    :raises ValueError: the step is not a string or not a known step
    """
    if not isinstance(step, str):
        raise ValueError(f"a script step must be a string, not {type(step).__name__}")
    name, colon, argument = step.partition(":")
    if name in _PLAIN_STEPS:
        if colon:
            raise ValueError(f"step {name!r} takes no argument")
        return (name, None)
    if name in _OPTIONAL_ARG_STEPS:
        if not colon:
            return (name, PROMPT_SETTLE)
        return (name, step_seconds(name, argument))
    if name not in _ARG_STEPS:
        raise ValueError(
            f"unknown step {step!r} (known: {', '.join(STEP_NAMES)})"
        )
    if not colon:
        raise ValueError(f"step {name!r} needs an argument: {name}:...")
    if name == "press":
        if not argument:
            raise ValueError("press needs a digit: press:1")
        return (name, argument)
    if name == "wait":
        return (name, step_seconds(name, argument))
    return (name, argument)  # error:MSG, any message


def step_seconds(name: str, argument: str) -> float:
    """
    A step's argument as a number of seconds (``wait:S``, ``prompts:S``).

    :raises ValueError: naming the step
    """
    try:
        seconds = float(argument)
    except ValueError:
        raise ValueError(f"{name} needs a number of seconds, not {argument!r}") from None
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"{name} needs a finite number of seconds >= 0, not {argument!r}")
    return seconds


def parse_steps(script: Sequence[object], parse_one: Callable[[object], _S]) -> tuple[_S, ...]:
    """
    Check a whole script, each step with ``parse_one`` (the Call Control
    callers' :func:`parse_step`, or the Genesys side's).

    :raises ValueError: naming the index of the first bad step
    """
    if isinstance(script, (str, bytes)) or not isinstance(script, Sequence):
        raise ValueError("a script must be a list of steps")
    steps = []
    for index, step in enumerate(script):
        try:
            steps.append(parse_one(step))
        except ValueError as e:
            raise ValueError(f"step {index}: {e}") from None
    return tuple(steps)


def parse_script(script: Sequence[object]) -> tuple[Step, ...]:
    """
    Check a whole caller script.

    :raises ValueError: naming the index of the first bad step
    """
    return parse_steps(script, parse_step)
