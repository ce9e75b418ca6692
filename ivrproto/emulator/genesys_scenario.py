"""
Genesys-side calls in a scenario file: the ``[genesys]`` table and the
``[[genesys_calls]]`` list, checked into :class:`GenesysScenario`.

::

    [genesys]
    url = "ws://127.0.0.1:8081/ivr"   # the service's Audio Connector (ws:// or wss://)
    interval = 0.0                    # seconds between two calls
    report_playback = true            # any GenesysSettings field, by name

    [[genesys_calls]]
    name = "premium"
    external_id = "CRM-PREMIUM-TICKETS"   # the input variable externalId
    ani = "tel:+14155550100"              # default
    input_variables = { callReason = "billing" }
    script = ["menu", "press:1"]
    expect_end = "completed"
    expect = { ivr_target = "ext:transfer_premium", ivr_outcome = "selected" }

The API key and the client secret are never in the file: the caller of
:func:`parse_genesys_scenario` reads them from the environment
(``IVR_AC_API_KEY``, ``IVR_AC_CLIENT_SECRET``), as the service does.  Errors
name the key, with 0-based indexes: ``genesys_calls[2].script[1]``.
"""

from __future__ import annotations

import math
from typing import Any, Dict, Mapping, Optional, Tuple
from urllib.parse import urlsplit

import attrs

from ivrproto.errors import ConfigError
from ivrproto.emulator.genesys import GenesysCallSpec, GenesysSettings, parse_caller_step

__all__ = ["CALL_KEYS", "SETTING_KEYS", "GenesysScenario", "parse_genesys_scenario"]

#: ``[genesys]`` keys that are :class:`GenesysSettings` fields, with their types.
SETTING_KEYS: Dict[str, type] = {
    "stream_audio": bool,
    "ping_delay": float,
    "ping_interval": float,
    "report_playback": bool,
    "completed_after_barge_in": bool,
    "open_timeout": float,
    "close_timeout": float,
    "max_call": float,
    "organization_id": str,
}
_TABLE_KEYS = frozenset({"url", "interval", *SETTING_KEYS})
CALL_KEYS = frozenset(
    {"name", "ani", "external_id", "input_variables", "language", "script", "expect_end",
     "expect", "probe"}
)
_ENDS = frozenset({"completed", "error", "unauthorized", "hangup", "probe", "refused",
                   "unreachable", "dropped", "timeout"})


@attrs.frozen
class GenesysScenario:
    "Where the Genesys side calls, how it behaves, and the calls it places."

    url: Optional[str] = None
    interval: float = 0.0
    settings: GenesysSettings = GenesysSettings()
    calls: Tuple[GenesysCallSpec, ...] = ()


def _unknown(table: Mapping[str, Any], known: frozenset[str], prefix: str, source: str) -> None:
    for key in table:
        if key not in known:
            raise ConfigError(f"{prefix}{key}",
                              f"unknown setting (known: {', '.join(sorted(known))})", source)


def _value(value: object, kind: type, key: str, source: str) -> Any:
    if kind is bool:
        if not isinstance(value, bool):
            raise ConfigError(key, "must be true or false", source)
        return value
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(key, f"must be a number, not {type(value).__name__}", source)
        if not math.isfinite(value) or value < 0:
            raise ConfigError(key, "must be a finite number >= 0", source)
        return float(value)
    if not isinstance(value, str) or not value:
        raise ConfigError(key, "must be a non-empty string", source)
    return value


def _strings(value: object, key: str, source: str) -> Dict[str, str]:
    if not isinstance(value, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise ConfigError(key, "must be a table of strings", source)
    return dict(value)


def _call(value: object, index: int, source: str) -> GenesysCallSpec:
    prefix = f"genesys_calls[{index}]"
    if not isinstance(value, Mapping):
        raise ConfigError(prefix, "must be a table", source)
    _unknown(value, CALL_KEYS, prefix + ".", source)
    fields: Dict[str, Any] = {}
    for name in ("name", "ani", "language"):
        if name in value:
            if not isinstance(value[name], str):
                raise ConfigError(f"{prefix}.{name}", "must be a string", source)
            fields[name] = value[name]
    inputs = _strings(value.get("input_variables", {}), f"{prefix}.input_variables", source)
    if "external_id" in value:
        inputs["externalId"] = _value(value["external_id"], str, f"{prefix}.external_id", source)
    fields["input_variables"] = inputs
    script = value.get("script", [])
    if not isinstance(script, list):
        raise ConfigError(f"{prefix}.script", "must be a list of steps", source)
    for step_index, step in enumerate(script):
        try:
            parse_caller_step(step)
        except ValueError as e:
            raise ConfigError(f"{prefix}.script[{step_index}]", str(e), source) from None
    fields["script"] = tuple(script)
    if "expect_end" in value:
        if value["expect_end"] not in _ENDS:
            raise ConfigError(f"{prefix}.expect_end", f"must be one of {', '.join(sorted(_ENDS))}",
                              source)
        fields["expect_end"] = value["expect_end"]
    fields["expect"] = _strings(value.get("expect", {}), f"{prefix}.expect", source)
    if "probe" in value:
        fields["probe"] = _value(value["probe"], bool, f"{prefix}.probe", source)
    return GenesysCallSpec(**fields)


def parse_genesys_scenario(table: Mapping[str, Any], source: str) -> GenesysScenario:
    """
    Check the ``genesys`` table and the ``genesys_calls`` list of a scenario
    (other keys are left to the caller).

    :raises ConfigError: naming the bad key
    """
    settings = table.get("genesys", {})
    if not isinstance(settings, Mapping):
        raise ConfigError("genesys", "must be a table", source)
    _unknown(settings, _TABLE_KEYS, "genesys.", source)
    url = None
    if "url" in settings:
        url = _value(settings["url"], str, "genesys.url", source)
        parts = urlsplit(url)
        if parts.scheme not in ("ws", "wss") or not parts.hostname:
            raise ConfigError("genesys.url", "must be a ws:// or wss:// URL", source)
    interval = _value(settings.get("interval", 0.0), float, "genesys.interval", source)
    values = {k: _value(settings[k], kind, f"genesys.{k}", source)
              for k, kind in SETTING_KEYS.items() if k in settings}
    calls = table.get("genesys_calls", [])
    if not isinstance(calls, list):
        raise ConfigError("genesys_calls", "must be a list of tables ([[genesys_calls]])", source)
    return GenesysScenario(
        url, interval, GenesysSettings(**values),
        tuple(_call(call, i, source) for i, call in enumerate(calls)),
    )
