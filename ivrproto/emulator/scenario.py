"""
Scenarios: the emulator's settings and the calls it places, loaded from a
TOML file (or from the ``[emulator]`` table and ``[[calls]]`` list of a
larger config), and :func:`place_calls`, which expects each call and tells
an intake about it.

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

Errors name the key, with 0-based indexes: ``calls[2].script[1]``.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Optional, Union
from urllib.parse import urlsplit

import attrs
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.error import ConnectError
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from ivrproto.errors import ConfigError

from ivrproto.emulator.callcontrol import CallRecord, parse_step
from ivrproto.emulator.platform import Platform

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = [
    "CallSpec",
    "Scenario",
    "accept_calls_by_hand",
    "load_scenario",
    "parse_scenario",
    "place_calls",
]

_log = Logger()

DEFAULT_LISTEN = "tcp:0:interface=127.0.0.1"
INTAKE_TIMEOUT = 5.0
INTAKE_RETRY = 0.5

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

    :param table: a mapping with an optional ``emulator`` table and an
        optional ``calls`` list (other keys are left to the caller)
    :param base_dir: what a relative ``profiles`` file name is relative to
    :param source: where the data came from, for error messages
    :raises ConfigError: naming the bad key
    """
    settings = table.get("emulator", {})
    if not isinstance(settings, Mapping):
        raise ConfigError("emulator", "must be a table", source)
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
    return Scenario(**values)


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
    _unknown(table, frozenset({"emulator", "calls"}), "", source)
    return parse_scenario(table, path.parent, source)


def place_calls(
    reactor: Any,
    platform: Platform,
    calls: Iterable[CallSpec],
    intake_url: Optional[str] = None,
    http: Any = None,
    interval: float = 0.0,
    on_call: Optional[Callable[[CallRecord], object]] = None,
    intake_wait: float = 0.0,
) -> Deferred[list[CallRecord]]:
    """
    Place calls one after the other: expect each on the platform and, when
    ``intake_url`` is given, POST ``{"callControlId", "externalId"}`` to it.

    A failed POST (no answer within 5 s, or not a 2xx status) is logged and
    added to the record's violations; when the client has not connected by
    then, the call ends with the outcome ``"intake-failed"``.  Nothing is
    raised for it.

    :param reactor: spaces the calls (``IReactorTime``) and times the POSTs
    :param calls: the calls, placed in this order
    :param intake_url: where to announce each call, or ``None``
    :param http: a treq-like client (``post``); by default ``treq``
    :param interval: seconds between two calls
    :param on_call: called with each record as its call is placed
    :param intake_wait: while the intake refuses connections, try each POST
        again every half second for up to this many seconds (so that the
        emulator may be started before the service)
    :return: fires with every call's record, in order, once every call has
        finished; cancelling it stops placing further calls
    """
    specs = list(calls)
    if http is None:
        import treq as http
    records: list[CallRecord] = []
    finished: list[Deferred[CallRecord]] = []
    pending: set[IDelayedCall] = set()

    def cancel(_: Deferred[list[CallRecord]]) -> None:
        for timer in pending:
            if timer.active():
                timer.cancel()
        pending.clear()

    result: Deferred[list[CallRecord]] = Deferred(cancel)
    if intake_url is not None:
        accept_calls_by_hand(reactor, platform, intake_url, http, intake_wait, on_call)

    def place(index: int) -> None:
        spec = specs[index]
        try:
            record = platform.expect_call(
                spec.call_id, spec.external_id, spec.script, spec.handshake
            )
        except Exception:
            result.errback(Failure())
            return
        records.append(record)
        if on_call is not None:
            on_call(record)
        finished.append(record.when_finished())
        if intake_url is not None:
            _announce(reactor, http, intake_url, record, pending, intake_wait)
        if index + 1 < len(specs):
            pending.add(reactor.callLater(interval, place_next, index + 1))
        else:
            gatherResults(finished).addCallback(
                lambda _: result.callback(records) if not result.called else None
            )

    def place_next(index: int) -> None:
        pending.difference_update([t for t in pending if not t.active()])
        place(index)

    if specs:
        place(0)
    else:
        result.callback(records)
    return result


def accept_calls_by_hand(
    reactor: Any,
    platform: Platform,
    intake_url: str,
    http: Any = None,
    intake_wait: float = 0.0,
    on_call: Optional[Callable[[CallRecord], object]] = None,
) -> None:
    """
    Announce the calls placed by hand on ``platform`` (``POST
    /emulator/calls``) to ``intake_url``, as :func:`place_calls` announces
    scripted ones.

    :param http: a treq-like client (``post``); by default ``treq``
    :param intake_wait: as for :func:`place_calls`
    :param on_call: called with each record as its call is placed
    """
    if http is None:
        import treq as http

    def announce(record: CallRecord) -> None:
        _announce(reactor, http, intake_url, record, platform._timers, intake_wait)

    platform.announce_calls_to(intake_url, announce, on_call)


def _announce(
    reactor: Any,
    http: Any,
    url: str,
    record: CallRecord,
    timers: set[IDelayedCall],
    wait: float,
) -> None:
    """
    POST the call to the intake; never fails.  While the connection is
    refused, try again every half second until ``wait`` seconds have passed.
    """
    body = {"callControlId": record.call_id, "externalId": record.external_id}
    give_up_at = reactor.seconds() + wait

    def answered(response: Any) -> Deferred[Any]:
        code = response.code
        reading = response.content()
        reading.addTimeout(INTAKE_TIMEOUT, reactor)
        return reading.addCallback(lambda _: code)

    def checked(code: int) -> None:
        if not 200 <= code < 300:
            failed(f"HTTP {code}")

    def failed(reason: Union[str, Failure]) -> None:
        if (
            isinstance(reason, Failure)
            and reason.check(ConnectError)
            and reactor.seconds() + INTAKE_RETRY <= give_up_at
        ):
            timers.add(reactor.callLater(INTAKE_RETRY, post))
            return
        if isinstance(reason, Failure):
            reason = reason.getErrorMessage() or reason.type.__name__
        _log.warn(
            "intake POST for {call_id} failed: {reason}",
            call_id=record.call_id,
            reason=reason,
        )
        record.violations.append(f"intake POST failed: {reason}")
        if not record.connected:
            record.finish(reactor.seconds(), "intake-failed")

    def post() -> None:
        timers.difference_update([t for t in timers if not t.active()])
        try:
            d = http.post(url, json=body, timeout=INTAKE_TIMEOUT, reactor=reactor)
        except Exception:
            failed(Failure())
            return
        d.addCallback(answered)
        d.addCallbacks(checked, failed)
        d.addErrback(lambda f: _log.failure("intake POST bookkeeping failed", f))

    post()
