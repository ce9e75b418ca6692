"""
The start-up checks that need more than the configuration parser has: the
embedded emulator's scenario parser, a reactor to parse endpoints with, or
the Audio Connector's prompt files.  ``twistd ivr`` runs them before it
binds anything, ``ivr check`` and ``ivr simulate`` before they report, and
a reload before it takes a new file; each raises the one
:class:`~ivrproto.errors.ConfigError` that names the bad key.

They live here rather than in :mod:`ivrproto.config` because that module
stays free of the emulator, the reactor and the audio code, and rather than
in :mod:`ivrproto.service` because the command line uses them without a
service.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.endpoints import serverFromString

from ivrproto._net import endpoint_is_loopback
from ivrproto.config import ADMIN_ON_INTAKE, Config
from ivrproto.errors import ConfigError

__all__ = ["check_admin", "check_scenario", "load_prompts"]


def check_scenario(config: Config) -> Any:
    """
    Parse the embedded platform's scenario, if the configuration has one.

    :return: a :class:`~ivrproto.emulator.scenario.Scenario`, or ``None``
    :raises ConfigError: naming the bad key
    """
    if config.emulator is None:
        return None
    from ivrproto.emulator import parse_scenario

    table = dict(config.emulator)
    emulator = dict(table["emulator"])
    emulator.pop("exit_when_done", None)
    table["emulator"] = emulator
    return parse_scenario(table, config.base_dir, config.source)


def load_prompts(config: Config) -> Any:
    """
    The Audio Connector's prompt library, every file loaded (at start-up,
    and for ``ivr check``).

    :return: a :class:`~ivrproto.audioconnector.prompts.PromptLibrary`
    :raises ConfigError: naming ``audio_connector.prompts`` and every file
        that cannot be played
    """
    from ivrproto.audioconnector.prompts import PromptLibrary

    ac = config.audio_connector
    library = PromptLibrary(str(ac.prompts), ac.language)
    errors = library.preload()
    if errors:
        raise ConfigError(
            "audio_connector.prompts",
            "; ".join(str(e) for e in errors[:10])
            + (f" (and {len(errors) - 10} more)" if len(errors) > 10 else ""),
            config.source,
        )
    if library.cached == 0:
        raise ConfigError(
            "audio_connector.prompts",
            f"{ac.prompts} holds no prompt (<language>/<name>.wav)",
            config.source,
        )
    return library


def check_admin(config: Config, intake: str, admin: str, reactor: Any) -> None:
    """
    Refuse an ``[admin] listen`` that is not an endpoint, or that puts the
    admin routes on an intake listening beyond loopback.

    :param reactor: the reactor the endpoint would listen on (parsing an
        endpoint description needs one; nothing is bound)
    :raises ConfigError: naming ``admin.listen``
    """
    if admin == ADMIN_ON_INTAKE:
        if not endpoint_is_loopback(intake):
            raise ConfigError(
                "admin.listen",
                f'"{ADMIN_ON_INTAKE}" would serve /metrics, /v1/stats and the calls on an '
                f"intake that listens beyond loopback ({intake!r}): give the admin "
                "listener its own endpoint, such as tcp:9100:interface=127.0.0.1",
                config.source,
            )
        return
    try:
        serverFromString(reactor, admin)
    except (ValueError, TypeError, KeyError) as e:
        raise ConfigError(
            "admin.listen", f"{admin!r} is not a server endpoint: {e}", config.source
        ) from None
