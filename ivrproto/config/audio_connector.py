"""
The ``[audio_connector]`` section: the Audio Connector listener's settings
(:class:`AudioConnectorConfig`), read from the file and its credentials from
the environment (:func:`parse_audio_connector`), and the check that the
credentials can work (:func:`check_audio_connector`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Optional, Tuple

import attrs

from ivrproto.config.table import Table, set_by_environment, with_origin
from ivrproto.errors import ConfigError
from ivrproto.messages import VALID_DIGITS

if TYPE_CHECKING:
    from ivrproto.config.values import Config

__all__ = [
    "AC_API_KEY_ENV",
    "AC_AUTH_SETTINGS",
    "AC_CLIENT_SECRET_ENV",
    "AC_SESSION_SETTINGS",
    "AudioConnectorConfig",
    "check_audio_connector",
    "parse_audio_connector",
]

#: The environment variables of the Audio Connector's credentials (never in
#: the config file): the API key Genesys sends as ``X-API-KEY``, and the
#: integration's client secret as Genesys shows it (base64; empty or unset:
#: unsigned requests with the right key are accepted).
AC_API_KEY_ENV = "IVR_AC_API_KEY"
AC_CLIENT_SECRET_ENV = "IVR_AC_CLIENT_SECRET"


@attrs.frozen
class AudioConnectorConfig:
    """
    ``[audio_connector]``: the Audio Connector listener (Genesys Cloud's
    Call Audio Connector action connects to it).

    :ivar enabled: whether ``twistd ivr`` serves it (the section is present,
        or ``--audio-connector`` is given)
    :ivar listen: a Twisted server endpoint description
    :ivar path: the request path served (the integration's connector id)
    :ivar prompts: the prompt directory (one sub-directory per language)
    :ivar language: the language whose prompt is played when a call's own
        language has none
    :ivar profile_key: the ``inputVariables`` entry holding the profile key;
        without it (or with ``""``), the caller's ani as E.164
    :ivar outputs: output variable names: target, outcome, option, digits,
        reason (``""`` leaves one out)
    :ivar api_key: from :data:`AC_API_KEY_ENV`
    :ivar client_secret: from :data:`AC_CLIENT_SECRET_ENV` (base64)
    :ivar auth: the ``AuthSettings`` fields set in the section
    :ivar session: the ``SessionSettings`` fields set in the section
    :ivar max_message_size: the largest text message accepted, in bytes
    :ivar max_write_buffer: bytes of audio queued for a client that has
        stopped reading (the socket's buffer full) before further frames are
        not queued
    :ivar write_timeout: seconds a client may leave the socket's buffer full
        before the connection is dropped
    """

    enabled: bool = False
    listen: str = "tcp:8081:interface=127.0.0.1"
    path: str = "/ivr"
    prompts: Path = Path("prompts")
    language: str = "en-US"
    profile_key: str = "externalId"
    outputs: Tuple[Tuple[str, str], ...] = (
        ("target", "ivr_target"),
        ("outcome", "ivr_outcome"),
        ("option", "ivr_option"),
        ("digits", "ivr_digits"),
        ("reason", "ivr_reason"),
    )
    api_key: Optional[str] = attrs.field(default=None, repr=False)
    client_secret: Optional[str] = attrs.field(default=None, repr=False)
    auth: Tuple[Tuple[str, Any], ...] = ()
    session: Tuple[Tuple[str, Any], ...] = ()
    max_message_size: int = 64 * 1024
    max_write_buffer: int = 64 * 1024
    write_timeout: float = 10.0


#: ``[audio_connector]`` settings passed to ``AuthSettings``, by kind.
AC_AUTH_SETTINGS = {
    "clock_skew": "seconds",
    "max_signature_age": "seconds",
    "min_nonce_length": "count",
    "min_failure_delay": "seconds",
}
#: ``[audio_connector]`` settings passed to ``SessionSettings``, by kind.
AC_SESSION_SETTINGS = {
    "audio_lead": "seconds0",
    "default_retry_after": "seconds",
    "max_retry_after": "seconds",
    "pause_audio_when_paused": "bool",
    "barge_in": "bool",
    "bot_turn_events": "bool",
    "disconnect_grace": "seconds0",
    "playback_timeout": "seconds",
    "open_timeout": "seconds",
    "close_timeout": "seconds",
    "closed_grace": "seconds",
    "check_organization": "bool",
    "organizations": "strings",
    "digits": "keys",
}
#: The keys a ``digits`` setting may name: the Call Control keys, and the
#: A-D that the Audio Connector's ``dtmf`` may also carry.
_AC_KEYS = VALID_DIGITS | frozenset("ABCD")


def parse_audio_connector(
    data: Any, source: str, base_dir: Path, environ: Mapping[str, str]
) -> AudioConnectorConfig:
    """
    The ``[audio_connector]`` table (``None``: absent, the listener is off),
    with the credentials from ``environ``.

    :param base_dir: what a relative ``prompts`` directory is relative to
    """
    defaults = AudioConnectorConfig()
    api_key = environ.get(AC_API_KEY_ENV) or None
    client_secret = environ.get(AC_CLIENT_SECRET_ENV) or None
    if data is None:
        return attrs.evolve(defaults, api_key=api_key, client_secret=client_secret)
    table = Table(data, "audio_connector", source)
    enabled = table.get("enabled", bool, True)
    path = table.get("path", str, defaults.path)
    if not path.startswith("/") or "?" in path or "#" in path:
        raise ConfigError(table.key("path"), 'must be a path such as "/ivr"', source)
    profile_key = table.get("profile_key", str, defaults.profile_key)
    prompts = Path(table.get("prompts", str, str(defaults.prompts)))
    outputs = _outputs(table.get("outputs", dict, {}), defaults, source)
    config = AudioConnectorConfig(
        enabled=enabled,
        listen=table.get("listen", str, defaults.listen),
        path=path,
        prompts=prompts if prompts.is_absolute() else base_dir / prompts,
        language=table.get("language", str, defaults.language),
        profile_key=profile_key,
        outputs=outputs,
        auth=_settings(table, AC_AUTH_SETTINGS),
        session=_settings(table, AC_SESSION_SETTINGS),
        max_message_size=table.count(
            "max_message_size", defaults.max_message_size, minimum=1024
        ),
        max_write_buffer=table.count(
            "max_write_buffer", defaults.max_write_buffer, minimum=1600
        ),
        write_timeout=table.positive("write_timeout", defaults.write_timeout),
        api_key=api_key,
        client_secret=client_secret,
    )
    table.finish()
    return config


def _outputs(
    data: Any, defaults: AudioConnectorConfig, source: str
) -> Tuple[Tuple[str, str], ...]:
    """
    ``[audio_connector.outputs]``: the output variables' names.
    """
    table = Table(data, "audio_connector.outputs", source)
    outputs = tuple((name, table.get(name, str, default)) for name, default in defaults.outputs)
    table.finish()
    chosen = [v for _, v in outputs if v]
    if len(set(chosen)) != len(chosen):
        raise ConfigError("audio_connector.outputs", "names the same variable twice", source)
    return outputs


def _settings(table: Table, kinds: Mapping[str, str]) -> Tuple[Tuple[str, Any], ...]:
    """
    The settings of ``kinds`` that the table sets, each read as its kind.
    """
    out = []
    for name, kind in kinds.items():
        if name not in table.data:
            table.used.add(name)
            continue
        out.append((name, _setting(table, name, kind)))
    return tuple(out)


def _setting(table: Table, name: str, kind: str) -> Any:
    if kind == "seconds":
        return table.positive(name, 0.0)
    if kind == "seconds0":
        return table.positive(name, 0.0, allow_zero=True)
    if kind == "count":
        return table.count(name, 0, minimum=1)
    if kind == "bool":
        return table.get(name, bool, False)
    if kind == "strings":
        items = table.get(name, list, [])
        if not items or not all(isinstance(i, str) and i for i in items):
            raise ConfigError(table.key(name), "must be a list of ids", table.source)
        return frozenset(items)
    keys = table.get(name, str, "")
    if not keys or not set(keys) <= _AC_KEYS:
        raise ConfigError(table.key(name), "must be keys among 0-9 * # A-D", table.source)
    return frozenset(keys)


def check_audio_connector(config: "Config") -> None:
    """
    Refuse Audio Connector credentials that cannot work: no API key in the
    environment, or a client secret that is not base64.  (Does nothing when
    the Audio Connector is off.)  With the embedded platform (``[emulator]``)
    a missing key is no error: the demo makes one in-process for its own
    Genesys side (:func:`ivrproto.demo.demo_api_key`).

    :raises ConfigError: naming the environment variable
    """
    ac = config.audio_connector
    if not ac.enabled:
        return
    if not ac.api_key and config.emulator is None:
        raise ConfigError(
            "audio_connector",
            f"needs the API key in the environment variable {AC_API_KEY_ENV} "
            "(never in the file)",
            config.source,
        )
    if ac.client_secret:
        from ivrproto.audioconnector.auth import parse_secret

        try:
            parse_secret(ac.client_secret)
        except ValueError as e:
            raise with_origin(
                set_by_environment(AC_CLIENT_SECRET_ENV),
                ConfigError("audio_connector", str(e), config.source),
            ) from None

