"""
Reading TOML tables: :class:`Table` reads one, remembering the keys used so
that an unknown one is refused (with the nearest known name); the helpers
that say where a bad value came from (the file, an environment variable, a
command-line option); and :func:`check_url`.
"""

from __future__ import annotations

import difflib
import math
from typing import Any, Optional
from urllib.parse import urlsplit

from ivrproto._net import is_loopback_host
from ivrproto.errors import ConfigError

__all__ = [
    "Table",
    "check_url",
    "did_you_mean",
    "from_environment",
    "set_by_environment",
    "with_origin",
]


def from_environment(variable: str) -> str:
    """
    How an error names the environment variable ``variable`` as the origin
    of a bad value (rather than the file): ``GENESYS_BASE_URL (environment)``.
    """
    return f"{variable} (environment)"


def set_by_environment(variable: str) -> str:
    """
    How an error's origin names the environment variable ``variable``:
    ``(set by the environment variable GENESYS_BASE_URL)``.
    """
    return f"the environment variable {variable}"


def with_origin(origin: Optional[str], error: ConfigError) -> ConfigError:
    """
    ``error``, saying that the bad value was set by ``origin`` (an
    environment variable, or a
    command-line option such as ``--intake``), not by the file: ``... (set
    by the environment variable GENESYS_BASE_URL)``.
    """
    if origin is None:
        return error
    return ConfigError(error.key, f"{error.reason} (set by {origin})", error.source)


def did_you_mean(name: str, known: "Any") -> str:
    """
    ``"; did you mean X?"`` for the known name nearest ``name``, or ``""``.
    """
    close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.6)
    return f"; did you mean {close[0]}?" if close else ""


def check_url(url: Any, key: str, source: Optional[str], *, tls_unless_loopback: bool) -> str:
    """
    Check that ``url`` is an absolute http(s) URL; with
    ``tls_unless_loopback``, plain http only for loopback hosts.
    """
    if not isinstance(url, str) or not url:
        raise ConfigError(key, "must be an absolute http(s) URL", source)
    try:
        parts = urlsplit(url)
        hostname = parts.hostname
    except ValueError:  # for example "http://[::1" (an unclosed IPv6 literal)
        raise ConfigError(key, "must be an absolute http(s) URL", source) from None
    if parts.scheme not in ("http", "https") or not hostname:
        raise ConfigError(key, f"must be an absolute http(s) URL, not {url!r}", source)
    if tls_unless_loopback and parts.scheme == "http" and not is_loopback_host(hostname):
        raise ConfigError(
            key, "plain http is allowed only for loopback hosts; use https", source
        )
    return url


class Table:
    """
    Reads one TOML table, remembering the keys used so that unknown ones are
    reported.
    """

    def __init__(self, data: Any, where: str, source: str) -> None:
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ConfigError(where, "must be a table", source)
        self.data = data
        self.where = where
        self.source = source
        self.used: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self.where}.{name}"

    def get(self, name: str, kind: Any, default: Any) -> Any:
        self.used.add(name)
        if name not in self.data:
            return default
        value = self.data[name]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
            names = {str: "a string", float: "a number", int: "a whole number", bool: "true or false"}
            raise ConfigError(self.key(name), f"must be {names.get(kind, kind)}", self.source)
        return value

    def positive(self, name: str, default: float, *, allow_zero: bool = False) -> float:
        value = self.get(name, float, default)
        # TOML has nan and inf: neither is a usable delay.
        if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
            bound = "zero or more" if allow_zero else "greater than zero"
            raise ConfigError(self.key(name), f"must be a finite number, {bound}", self.source)
        return value

    def count(self, name: str, default: int, *, minimum: int = 0) -> int:
        value = self.get(name, int, default)
        if value < minimum:
            raise ConfigError(self.key(name), f"must be at least {minimum}", self.source)
        return value

    def finish(self) -> None:
        unknown = sorted(set(self.data) - self.used)
        if unknown:
            raise ConfigError(
                self.key(unknown[0]),
                "unknown setting" + did_you_mean(unknown[0], self.used),
                self.source,
            )
