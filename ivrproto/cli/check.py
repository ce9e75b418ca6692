"""
``ivr check``: load a configuration the way the service would and describe
it (menus, targets, schedules, languages), or say in one line what is wrong.
"""


from __future__ import annotations

import os
import time
from typing import IO, Iterator, List, Mapping, Optional, Sequence, Tuple

from ivrproto.cli.codes import CREDENTIAL_VARIABLES, EXIT_OK
from ivrproto.config import (
    Config,
    check_audio_connector,
    check_intake_protection,
    load_config,
)
from ivrproto.errors import ConfigError
from ivrproto.menu.book import MenuBook, MenuSpec
from ivrproto.menu.schedules import describe_schedule

__all__ = [
    "load_for_check",
    "run_check",
    "describe_config",
]


def load_for_check(path: str, environ: Mapping[str, str]) -> Tuple[Config, List[str]]:
    """
    Load a configuration as ``twistd ivr`` would, except that missing
    credentials are replaced by placeholders.

    :return: the configuration, and the environment variables given
        placeholders
    :raises ConfigError: for anything else that is wrong
    """
    env = dict(environ)
    placeholders: List[str] = []
    while True:
        try:
            config = load_config(path, env)
        except ConfigError as e:
            variable = CREDENTIAL_VARIABLES.get(e.key)
            if variable is None or env.get(variable) or variable in placeholders:
                raise
            env[variable] = f"placeholder-{variable.lower()}"
            placeholders.append(variable)
            continue
        break
    from ivrproto.checks import check_scenario

    check_scenario(config)
    check_intake_protection(config, config.intake.listen)
    check_audio_connector(config)
    if config.audio_connector.enabled:
        from ivrproto.checks import load_prompts

        load_prompts(config)
    return config, placeholders


def run_check(path: str, environ: Mapping[str, str], out: IO[str]) -> int:
    """
    ``ivr check CONFIG``.

    :raises ConfigError: the configuration is bad
    """
    config, placeholders = load_for_check(path, environ)
    for line in describe_config(config, placeholders):
        print(line, file=out)
    return EXIT_OK


def describe_config(
    config: Config, placeholders: Sequence[str] = (), now: Optional[float] = None
) -> Iterator[str]:
    """
    What ``ivr check`` prints about a good configuration.

    :param now: the time the schedules' next openings and closings are
        counted from (default: the system clock)
    """
    book = config.menu
    platform = config.platform
    yield f"{config.source}: OK"
    yield f"platform: {platform.api_url} (token: {platform.token_url})"
    if config.emulator is not None:
        yield "  (with [emulator]: twistd ivr starts the embedded local platform instead)"
    if placeholders:
        yield (
            "credentials: " + " and ".join(placeholders) + " not set; checked with "
            "placeholders (twistd ivr needs them)"
        )
    yield f"prompts: relative to {book.audio_base_url}"
    yield f"shared state: {config.shared.describe()}"
    ac = config.audio_connector
    if ac.enabled:
        from ivrproto.checks import load_prompts

        library = load_prompts(config)
        yield f"audio connector: {ac.path} on {ac.listen}"
        yield (
            f"  {library.cached} prompts from {ac.prompts} ({library.size // 1024} KiB as PCMU); "
            f"profile key: input variable {ac.profile_key or '(none)'}, else the ani"
        )
        yield "  outputs: " + ", ".join(f"{k}={v}" for k, v in ac.outputs if v)
    yield f"menu version: {book.version} (each call's end-of-call record names it)"
    yield ""
    yield "menu tree:"
    for depth, line in book.walk():
        yield "  " + "  " * depth + line
    yield ""
    yield "input settings (per menu, else [timing]):"
    for name, spec in book.menus.items():
        yield "  " + _describe_inputs(book, spec, config)
    yield ""
    yield "transfer targets (the allow-list):"
    width = max(len(name) for name in book.targets)
    for name, target in book.targets.items():
        marks = []
        if name == book.operator:
            marks.append("operator")
        if not _target_used(book, name):
            marks.append("not used by any option")
        suffix = f"  ({', '.join(marks)})" if marks else ""
        yield f"  {name:<{width}} = {target}{suffix}"
    yield ""
    yield "languages: " + _describe_languages(book)
    if book.schedules or book.closure is not None:
        yield from _describe_hours(book, time.time() if now is None else now)


def _describe_hours(book: MenuBook, now: float) -> Iterator[str]:
    yield ""
    yield "opening hours:"
    for schedule in book.schedules.values():
        yield "  " + describe_schedule(schedule, now)
    closure = book.closure
    if closure is not None:
        then = "hang up" if closure.target is None else f"transfer to {book.targets[closure.target]}"
        state = "present: CLOSED now" if os.path.exists(closure.flag_file) else "absent"
        yield (
            f"  emergency closure: while {closure.flag_file} exists ({state}), new calls hear "
            f"{closure.prompt}, then {then} after {closure.wait:g}s or a key"
        )


def _describe_inputs(book: MenuBook, spec: MenuSpec, config: Config) -> str:
    timing = config.timing
    no_input = spec.no_input_timeout or timing.no_input_timeout
    repeats = timing.menu_repeats if spec.max_no_input is None else spec.max_no_input
    invalid = timing.max_invalid if spec.max_invalid is None else spec.max_invalid
    parts = [
        f"no input after {no_input:g}s",
        f"{repeats} repeat{'s' if repeats != 1 else ''}",
        f"max invalid {invalid if invalid else 'unlimited'}",
    ]
    if spec.intro is not None:
        parts.insert(0, f"intro {spec.intro}")
    for label, prompt in (
        ("invalid prompt", spec.invalid_prompt),
        ("no-input prompt", spec.no_input_prompt),
    ):
        if prompt is not None:
            parts.append(f"{label} {prompt}")
    return f"{spec.name}: " + ", ".join(parts)


def _target_used(book: MenuBook, name: str) -> bool:
    return any(a.kind == "transfer" and a.name == name for a in book.actions())


def _describe_languages(book: MenuBook) -> str:
    prompts = book.prompts
    if not prompts.sets:
        return f"{prompts.default_language} (no prompt sets: every prompt is a file name)"
    names = []
    for language, table in prompts.sets.items():
        mark = " (default)" if language == prompts.default_language else ""
        names.append(f"{language}{mark}: {len(table)} prompts")
    how = (
        f"chosen by the profile attribute {book.language_attribute!r}"
        if book.language_attribute
        else "no language_attribute: every caller gets the default"
    )
    return "; ".join(names) + f"; {how}"
