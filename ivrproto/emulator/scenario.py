"""
Scenarios: the emulator's settings and the calls it places, loaded from a
TOML file (or from the ``[emulator]`` table and ``[[calls]]`` list of a
larger config).  :func:`~ivrproto.emulator.placing.place_calls` places the
calls.

The file format::

    [emulator]
    listen = "tcp:0:interface=127.0.0.1"   # default
    client_id = "ivrproto-local"           # default
    client_secret = "local-secret"         # default
    token_ttl = 3600                       # default
    profiles = "profiles.json"             # relative to the file; or an inline table
    intake = "http://127.0.0.1:8080/v1/calls"   # optional
    call_interval = 0.2                    # default 0
    close_after_transfer = 0.0             # default 0
    intake_wait = 30.0                     # default 0: retry refused intake POSTs this long

    [[calls]]
    call_id = "call-premium-1"
    external_id = "CRM-PREMIUM-TICKETS"
    script = ["menu", "press:1"]           # default []
    handshake = "ok"                       # default "ok"; or "error"

    [genesys]                              # the Genesys side (Audio Connector)
    url = "ws://127.0.0.1:8081/ivr"

    [[genesys_calls]]
    external_id = "CRM-PREMIUM-TICKETS"
    script = ["menu", "press:1"]

In a service configuration (``twistd ivr`` with ``[emulator]``), whose
reader passes only ``[emulator]`` and ``[[calls]]`` on, the Genesys side is
``[emulator.genesys]`` and ``[[emulator.genesys_calls]]``; the service's own
Audio Connector is then the url.  (:mod:`ivrproto.emulator.genesys_scenario`
checks both tables.)

Errors name the key, with 0-based indexes: ``calls[2].script[1]``.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any, Mapping, Optional, Union
from urllib.parse import urlsplit

import attrs

from ivrproto.errors import ConfigError

from ivrproto.emulator.genesys_scenario import GenesysScenario, parse_genesys_scenario
from ivrproto.emulator.platform import Platform
from ivrproto.emulator.script import parse_step

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["CallSpec", "Scenario", "load_scenario", "parse_scenario"]

DEFAULT_LISTEN = "tcp:0:interface=127.0.0.1"

_EMULATOR_KEYS = frozenset(
    {
        "listen",
        "client_id",
        "client_secret",
        "token_ttl",
        "profiles",
        "intake",
        "call_interval",
        "close_after_transfer",
        "intake_wait",
    }
)
_CALL_KEYS = frozenset({"call_id", "external_id", "script", "handshake"})
_GENESYS_KEYS = ("genesys", "genesys_calls")


@attrs.frozen
class CallSpec:
    """
    One call to place.

    :ivar call_id: the ``callControlId``
    :ivar external_id: the caller's external id
    :ivar script: the caller script (checked)
    :ivar handshake: ``"ok"`` or ``"error"``
    """

    call_id: str
    external_id: str
    script: tuple[str, ...] = ()
    handshake: str = "ok"


@attrs.frozen
class Scenario:
    """
    A checked scenario: how to run the platform and which calls to place.
    """

    listen: str = DEFAULT_LISTEN
    client_id: str = "ivrproto-local"
    client_secret: str = "local-secret"
    token_ttl: int = 3600
    profiles: Mapping[str, Mapping[str, Any]] = attrs.field(factory=dict)
    intake: Optional[str] = None
    call_interval: float = 0.0
    close_after_transfer: float = 0.0
    intake_wait: float = 0.0
    calls: tuple[CallSpec, ...] = ()
    genesys: GenesysScenario = GenesysScenario()

    def platform(self, reactor: Any) -> Platform:
        """
        :return: a (not yet listening) platform with these settings
        """
        return Platform(
            reactor,
            clients={self.client_id: self.client_secret},
            profiles=self.profiles,
            token_ttl=self.token_ttl,
            close_after_transfer=self.close_after_transfer,
        )


def _string(value: object, key: str, source: str, empty: bool = False) -> str:
    if not isinstance(value, str):
        raise ConfigError(key, f"must be a string, not {type(value).__name__}", source)
    if not empty and not value:
        raise ConfigError(key, "must not be empty", source)
    return value


def _number(value: object, key: str, source: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(key, f"must be a number, not {type(value).__name__}", source)
    if not math.isfinite(value) or value < 0:
        raise ConfigError(key, "must be a finite number >= 0", source)
    return float(value)


def _unknown(table: Mapping[str, Any], known: frozenset[str], prefix: str, source: str) -> None:
    for key in table:
        if key not in known:
            raise ConfigError(
                f"{prefix}{key}", f"unknown setting (known: {', '.join(sorted(known))})", source
            )


def _profiles(value: object, base_dir: Path, source: str) -> dict[str, dict[str, Any]]:
    key = "emulator.profiles"
    if isinstance(value, str):
        path = base_dir / value
        try:
            loaded = json.loads(path.read_text(encoding="utf-8"))
        except OSError as e:
            raise ConfigError(key, f"cannot read {path}: {e.strerror or e}", source) from None
        except ValueError as e:
            raise ConfigError(key, f"{path} is not valid JSON: {e}", source) from None
        where = f"{path}: "
    elif isinstance(value, Mapping):
        loaded, where = value, ""
    else:
        raise ConfigError(key, "must be a file name or a table", source)
    if not isinstance(loaded, Mapping):
        raise ConfigError(key, f"{where}must map external ids to attribute objects", source)
    profiles = {}
    for external_id, attributes in loaded.items():
        if not isinstance(attributes, Mapping):
            raise ConfigError(
                f"{key}[{json.dumps(external_id)}]",
                f"{where}attributes must be an object",
                source,
            )
        profiles[external_id] = dict(attributes)
    return profiles


def _call(value: object, index: int, seen: set[str], source: str) -> CallSpec:
    prefix = f"calls[{index}]"
    if not isinstance(value, Mapping):
        raise ConfigError(prefix, "must be a table", source)
    _unknown(value, _CALL_KEYS, prefix + ".", source)
    if "call_id" not in value:
        raise ConfigError(f"{prefix}.call_id", "missing", source)
    if "external_id" not in value:
        raise ConfigError(f"{prefix}.external_id", "missing", source)
    call_id = _string(value["call_id"], f"{prefix}.call_id", source)
    if call_id in seen:
        raise ConfigError(f"{prefix}.call_id", f"{call_id!r} is used twice", source)
    seen.add(call_id)
    external_id = _string(value["external_id"], f"{prefix}.external_id", source)
    script = value.get("script", [])
    if not isinstance(script, list):
        raise ConfigError(f"{prefix}.script", "must be a list of steps", source)
    for step_index, step in enumerate(script):
        try:
            parse_step(step)
        except ValueError as e:
            raise ConfigError(f"{prefix}.script[{step_index}]", str(e), source) from None
    handshake = value.get("handshake", "ok")
    if handshake not in ("ok", "error"):
        raise ConfigError(f"{prefix}.handshake", 'must be "ok" or "error"', source)
    return CallSpec(call_id, external_id, tuple(script), handshake)


def parse_scenario(table: Mapping[str, Any], base_dir: Path, source: str) -> Scenario:
    """
    Check a scenario given as data.

    :param table: a mapping with an optional ``emulator`` table, an
        optional ``calls`` list and the optional Genesys side (``genesys``
        and ``genesys_calls``, at the top or inside ``emulator``); other keys
        are left to the caller
    :param base_dir: what a relative ``profiles`` file name is relative to
    :param source: where the data came from, for error messages
    :raises ConfigError: naming the bad key
    """
    settings = table.get("emulator", {})
    if not isinstance(settings, Mapping):
        raise ConfigError("emulator", "must be a table", source)
    settings, genesys = _genesys_tables(table, settings, source)
    _unknown(settings, _EMULATOR_KEYS, "emulator.", source)
    values: dict[str, Any] = {}
    for name in ("listen", "client_id", "client_secret"):
        if name in settings:
            values[name] = _string(settings[name], f"emulator.{name}", source)
    if "token_ttl" in settings:
        ttl = settings["token_ttl"]
        if isinstance(ttl, bool) or not isinstance(ttl, int) or ttl <= 0:
            raise ConfigError("emulator.token_ttl", "must be a positive integer", source)
        values["token_ttl"] = ttl
    if "profiles" in settings:
        values["profiles"] = _profiles(settings["profiles"], Path(base_dir), source)
    if "intake" in settings:
        intake = _string(settings["intake"], "emulator.intake", source)
        parts = urlsplit(intake)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigError("emulator.intake", "must be an http(s) URL", source)
        values["intake"] = intake
    for name in ("call_interval", "close_after_transfer", "intake_wait"):
        if name in settings:
            values[name] = _number(settings[name], f"emulator.{name}", source)
    calls = table.get("calls", [])
    if not isinstance(calls, list):
        raise ConfigError("calls", "must be a list of tables ([[calls]])", source)
    seen: set[str] = set()
    values["calls"] = tuple(_call(call, i, seen, source) for i, call in enumerate(calls))
    values["genesys"] = parse_genesys_scenario(genesys, source)
    return Scenario(**values)


def _genesys_tables(
    table: Mapping[str, Any], settings: Mapping[str, Any], source: str
) -> tuple[Mapping[str, Any], dict[str, Any]]:
    """
    Split the Genesys side (``genesys``, ``genesys_calls``) from the
    emulator's settings: at the top of a scenario file, or inside
    ``[emulator]`` in a service configuration, not both.

    :return: the emulator's settings without it, and its tables
    """
    nested = {k: settings[k] for k in _GENESYS_KEYS if k in settings}
    top = {k: table[k] for k in _GENESYS_KEYS if k in table}
    if nested and top:
        raise ConfigError(
            "emulator." + sorted(nested)[0],
            "the Genesys side is given twice (at the top and in [emulator])",
            source,
        )
    rest = {k: v for k, v in settings.items() if k not in _GENESYS_KEYS}
    return rest, nested or top


def load_scenario(path: Union[str, Path]) -> Scenario:
    """
    Load and check a scenario file.

    :raises ConfigError: the file cannot be read, is not TOML, or holds a
        bad setting
    """
    path = Path(path)
    source = str(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as e:
        raise ConfigError("file", f"cannot read: {e.strerror or e}", source) from None
    except UnicodeDecodeError:
        raise ConfigError("file", "not UTF-8 text", source) from None
    try:
        table = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError("file", f"not valid TOML: {e}", source) from None
    _unknown(table, frozenset({"emulator", "calls", *_GENESYS_KEYS}), "", source)
    return parse_scenario(table, path.parent, source)
