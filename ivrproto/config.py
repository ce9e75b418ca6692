"""
The service's configuration: a TOML file, overridden by the contract's
environment variables, loaded into frozen values.  Every problem is reported
as one :class:`~ivrproto.errors.ConfigError` naming the bad key.
"""

from __future__ import annotations

import difflib
import math
import sys
from pathlib import Path
from typing import IO, Any, Callable, Dict, Mapping, Optional, Tuple
from urllib.parse import urlsplit

import attrs

from ivrproto.errors import ConfigError
from ivrproto.menu.book import MenuBook
from ivrproto.menu.load import parse_menu
from ivrproto.regions import known_regions, region_urls
from ivrproto._net import endpoint_is_loopback, is_loopback_host

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

DEFAULT_API_URL = "https://api.us-east-1.mypurecloud.com"

#: The environment variable holding the intake's shared secret (by default).
SECRET_ENV = "IVR_INTAKE_SECRET"
DEFAULT_SCOPE = "profile:read callcontrol:inbound callcontrol:media"

#: Environment variables of the contract, and the setting each overrides.
ENVIRONMENT = {
    "GENESYS_BASE_URL": "api_url",
    "GENESYS_LOGIN_URL": "login_url",
    "CLIENT_ID": "client_id",
    "CLIENT_SECRET": "client_secret",
    "AUDIO_BASE_URL": "audio_base_url",
}

#: The environment variables of the deployment (each below its command-line
#: option, above the file): the config file's path (for ``twistd ivr``), the
#: intake's endpoint (``[intake] listen``) and the log format
#: (``[logging] format``).
CONFIG_ENV = "IVR_CONFIG"
INTAKE_LISTEN_ENV = "IVR_INTAKE_LISTEN"
LOG_FORMAT_ENV = "IVR_LOG_FORMAT"


def from_environment(variable: str) -> str:
    """
    How an error names the environment variable ``variable`` as the origin
    of a bad value (rather than the file): ``GENESYS_BASE_URL (environment)``.
    """
    return f"{variable} (environment)"


def _set_by_environment(variable: str) -> str:
    return f"the environment variable {variable}"


def _from(origin: Optional[str], error: ConfigError) -> ConfigError:
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


@attrs.frozen
class PlatformConfig:
    """
    Where the platform is and how to authenticate to it.
    """

    api_url: str
    login_url: str
    client_id: str
    client_secret: str = attrs.field(repr=False)
    audio_base_url: str
    scope: str = DEFAULT_SCOPE

    @property
    def token_url(self) -> str:
        return self.login_url.rstrip("/") + "/oauth/token"

    @property
    def websocket_url(self) -> str:
        parts = urlsplit(self.api_url)
        scheme = {"https": "wss", "http": "ws"}[parts.scheme]
        return f"{scheme}://{parts.netloc}{parts.path.rstrip('/')}/api/v2/callcontrol/websocket"


@attrs.frozen
class IntakeConfig:
    """
    The HTTP listener through which calls arrive (contract section 4).

    :ivar listen: a Twisted server endpoint description
    :ivar max_body: the largest request body accepted, in bytes
    :ivar max_active_calls: calls in progress beyond which new ones get 503
    :ivar outcome_retention: seconds an ended call stays visible at
        ``GET /v1/calls/<id>``
    :ivar secret: the shared secret of signed intake requests (from the
        environment variable named by ``secret_env``); required when the
        intake listens beyond loopback
    :ivar signature_tolerance: seconds a signed request's timestamp may be off
    :ivar drain_deadline: seconds after SIGTERM before calls still in a menu
        are transferred to the operator
    :ivar max_loop_lag: seconds the reactor may run late before new calls
        are refused (503) to protect the calls in progress
    :ivar max_connections: intake connections open at once; more get 503
    :ivar request_deadline: seconds a client has, from opening the
        connection (or starting its next request), to send a whole request;
        bytes arriving do not extend it
    :ivar idle_timeout: seconds a kept-alive connection may stay silent
        between requests
    :ivar fd_reserve: file descriptors below the open-file limit that intake
        connections never take, kept for the outgoing connections
    :ivar listen_origin: what set ``listen``, as errors name it: the file
        (``None``) or the environment (:data:`INTAKE_LISTEN_ENV`)
    """

    listen: str = "tcp:8080:interface=127.0.0.1"
    max_body: int = 16 * 1024
    max_active_calls: int = 10_000
    outcome_retention: float = 300.0
    secret: Optional[str] = attrs.field(default=None, repr=False)
    signature_tolerance: float = 300.0
    drain_deadline: float = 25.0
    max_loop_lag: float = 0.1
    max_connections: int = 1024
    request_deadline: float = 10.0
    idle_timeout: float = 30.0
    fd_reserve: int = 256
    listen_origin: Optional[str] = attrs.field(default=None, eq=False)


@attrs.frozen
class Timing:
    """
    Every delay and limit of a call; all in seconds unless named otherwise.

    :ivar max_invalid: invalid keys after which the caller goes to the
        operator; 0 for no limit (contract section 3, item 7: keep waiting)
    :ivar token_cooldown: after a failed token fetch, calls without a token
        fail at once for this long (doubling with each failed fetch in a
        row); 0 turns it off
    :ivar token_cooldown_cap: the longest such cool-down
    :ivar token_invalidate_interval: a token refused by the platform is
        dropped at most once per this many seconds
    :ivar token_max_lifetime: the longest token lifetime believed
    """

    request_timeout: float = 5.0
    handshake_timeout: float = 10.0
    profile_budget: float = 0.8
    no_input_timeout: float = 10.0
    menu_repeats: int = 2
    confirm_delay: float = 1.5
    max_invalid: int = 3
    token_refresh_margin: float = 60.0
    token_cooldown: float = 1.0
    token_cooldown_cap: float = 10.0
    token_invalidate_interval: float = 5.0
    token_max_lifetime: float = 86400.0
    #: What the platform can make a call grow: the largest Call Control
    #: frame or message accepted (larger ones fail the connection), the
    #: bytes queued to a platform that stopped reading before it is dropped,
    #: the seconds a closing connection may take to go away, and what a
    #: call keeps and logs (keys, timeline notes, characters of a reason).
    max_frame_size: int = 1024 * 1024
    max_write_buffer: int = 1024 * 1024
    close_timeout: float = 3.0
    max_keys_kept: int = 64
    max_notes: int = 100
    max_reason_length: int = 200


LOG_FORMATS = ("text", "json")


@attrs.frozen
class LoggingConfig:
    """
    :ivar format: ``text`` (twistd's usual lines) or ``json`` (one object a line)
    :ivar hash_key: the key of the keyed hash that stands in for caller ids
        in logs (from the environment variable named by ``hash_key_env``);
        ``None``: a random key per process
    :ivar log_file: opens the file the service logs to, in ``format``, when
        the service is started by ``twistd ivr`` (the file twistd would log
        to: see :func:`ivrproto.logs.log_file_opener`); not from the file
    """

    format: str = "text"
    hash_key: Optional[str] = attrs.field(default=None, repr=False)
    log_file: Optional[Callable[[], IO[Any]]] = attrs.field(default=None, eq=False, repr=False)


PROFILE_SOURCES = ("profiles", "external-contacts")
LOOKUP_TYPES = ("Phone", "ExternalId", "Email")


@attrs.frozen
class ProfilesConfig:
    """
    Where caller profiles come from, and how lookups are cached and limited.

    :ivar source: ``profiles`` (``GET /api/v2/profiles/external/{id}``) or
        ``external-contacts`` (Genesys External Contacts identifier lookup)
    :ivar lookup_type: for External Contacts: ``Phone``, ``ExternalId`` or ``Email``
    :ivar cache_max_bytes: memory the profile cache takes at most, in bytes
        (as estimated from each profile's body)
    :ivar cache_max_entry_bytes: profiles larger than this are not cached
    :ivar rate_per_minute: profile requests this process makes at most in
        any 60 seconds (whole requests, at least 1), retries included
    :ivar max_pause: the longest ``Retry-After`` of a 429 believed, in
        seconds: every lookup pauses that long at most
    :ivar breaker_failures: consecutive failures that open the circuit breaker
    :ivar breaker_reset: seconds the breaker stays open before a probe
    """

    source: str = "profiles"
    lookup_type: str = "Phone"
    cache_ttl: float = 300.0
    negative_ttl: float = 30.0
    cache_size: int = 10_000
    cache_max_bytes: int = 64 * 1024 * 1024
    cache_max_entry_bytes: int = 1024 * 1024
    rate_per_minute: float = 200.0
    max_pause: float = 60.0
    breaker_failures: int = 5
    breaker_reset: float = 10.0


#: ``[admin] listen`` value that serves the admin routes on the intake
#: itself (allowed only when the intake listens on loopback).
ADMIN_ON_INTAKE = "intake"


@attrs.frozen
class AdminConfig:
    """
    :ivar listen: Twisted server endpoint of the admin listener, which
        serves ``/metrics``, ``/v1/stats`` and ``GET /v1/calls/<id>`` (and
        ``/healthz``, ``/readyz``); or :data:`ADMIN_ON_INTAKE` to serve them
        on a loopback intake
    """

    listen: str = "tcp:9100:interface=127.0.0.1"


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
_AC_OUTPUTS = ("target", "outcome", "option", "digits", "reason")


def _parse_audio_connector(
    data: Any, source: str, base_dir: Path, environ: Mapping[str, str]
) -> AudioConnectorConfig:
    defaults = AudioConnectorConfig()
    api_key = environ.get(AC_API_KEY_ENV) or None
    client_secret = environ.get(AC_CLIENT_SECRET_ENV) or None
    if data is None:
        return attrs.evolve(defaults, api_key=api_key, client_secret=client_secret)
    table = _Table(data, "audio_connector", source)
    enabled = table.get("enabled", bool, True)
    path = table.get("path", str, defaults.path)
    if not path.startswith("/") or "?" in path or "#" in path:
        raise ConfigError(table.key("path"), 'must be a path such as "/ivr"', source)
    profile_key = table.get("profile_key", str, defaults.profile_key)
    prompts = Path(table.get("prompts", str, str(defaults.prompts)))
    outputs_table = _Table(table.get("outputs", dict, {}), "audio_connector.outputs", source)
    outputs = tuple(
        (name, outputs_table.get(name, str, default))
        for name, default in defaults.outputs
    )
    outputs_table.finish()
    chosen = [v for _, v in outputs if v]
    if len(set(chosen)) != len(chosen):
        raise ConfigError("audio_connector.outputs", "names the same variable twice", source)

    def settings(kinds: Mapping[str, str]) -> Tuple[Tuple[str, Any], ...]:
        out = []
        for name, kind in kinds.items():
            if name not in table.data:
                table.used.add(name)
                continue
            value: Any
            if kind == "seconds":
                value = table.positive(name, 0.0)
            elif kind == "seconds0":
                value = table.positive(name, 0.0, allow_zero=True)
            elif kind == "count":
                value = table.count(name, 0, minimum=1)
            elif kind == "bool":
                value = table.get(name, bool, False)
            elif kind == "strings":
                items = table.get(name, list, [])
                if not items or not all(isinstance(i, str) and i for i in items):
                    raise ConfigError(table.key(name), "must be a list of ids", source)
                value = frozenset(items)
            else:
                keys = table.get(name, str, "")
                if not keys or not set(keys) <= set("0123456789*#ABCD"):
                    raise ConfigError(table.key(name), "must be keys among 0-9 * # A-D", source)
                value = frozenset(keys)
            out.append((name, value))
        return tuple(out)

    config = AudioConnectorConfig(
        enabled=enabled,
        listen=table.get("listen", str, defaults.listen),
        path=path,
        prompts=prompts if prompts.is_absolute() else base_dir / prompts,
        language=table.get("language", str, defaults.language),
        profile_key=profile_key,
        outputs=outputs,
        auth=settings(AC_AUTH_SETTINGS),
        session=settings(AC_SESSION_SETTINGS),
        max_message_size=table.count(
            "max_message_size", defaults.max_message_size, minimum=1024
        ),
        api_key=api_key,
        client_secret=client_secret,
    )
    table.finish()
    return config


def check_audio_connector(config: "Config") -> None:
    """
    Refuse Audio Connector credentials that cannot work: no API key in the
    environment, or a client secret that is not base64.  (Does nothing when
    the Audio Connector is off.)

    :raises ConfigError: naming the environment variable
    """
    ac = config.audio_connector
    if not ac.enabled:
        return
    if not ac.api_key:
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
            raise _from(
                _set_by_environment(AC_CLIENT_SECRET_ENV),
                ConfigError("audio_connector", str(e), config.source),
            ) from None


@attrs.frozen
class Config:
    """
    The whole configuration.

    :ivar emulator: the raw ``emulator`` and ``calls`` tables when the
        embedded local platform is enabled, else ``None``
    """

    platform: PlatformConfig
    intake: IntakeConfig
    timing: Timing
    menu: MenuBook
    source: str
    base_dir: Path
    profiles: ProfilesConfig = ProfilesConfig()
    logging: LoggingConfig = LoggingConfig()
    admin: AdminConfig = AdminConfig()
    audio_connector: AudioConnectorConfig = AudioConnectorConfig()
    # repr=False: the emulator table may hold the (local) client secret.
    emulator: Optional[Mapping[str, Any]] = attrs.field(default=None, repr=False)






def check_intake_protection(
    config: "Config", listen: str, origin: Optional[str] = None
) -> None:
    """
    Refuse an intake that listens beyond loopback with no shared secret.

    :param origin: where ``listen`` came from, when not from the file (e.g.
        ``--intake``); by default the origin of the configuration's own
        ``[intake] listen`` (the file, or :data:`INTAKE_LISTEN_ENV`)
    :raises ConfigError: naming ``intake.listen``
    """
    if origin is None and listen == config.intake.listen:
        origin = config.intake.listen_origin
    if config.intake.secret is None and not endpoint_is_loopback(listen):
        raise _from(
            origin,
            ConfigError(
                "intake.listen",
                f"{listen!r} listens beyond loopback: set {SECRET_ENV} so that intake "
                "requests must be signed",
                config.source,
            ),
        )


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


class _Table:
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


def parse_config(
    data: Mapping[str, Any],
    *,
    source: str = "<config>",
    base_dir: Path = Path("."),
    environ: Mapping[str, str] = {},
) -> Config:
    """
    Build a :class:`Config` from parsed TOML and the environment.

    :param environ: the environment; the variables of :data:`ENVIRONMENT`
        override the file
    :raises ConfigError: for the first problem found
    """
    known = {
        "platform", "intake", "admin", "timing", "profiles", "logging", "menu", "emulator", "calls",
        "audio_connector",
    }
    known |= {"schedules", "closure"}  # parsed with the menu (ivrproto.menu.book.parse_menu)
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(unknown[0], "unknown section" + did_you_mean(unknown[0], known), source)

    emulator_table = data.get("emulator")
    emulator: Optional[Dict[str, Any]] = None
    if emulator_table is not None:
        if not isinstance(emulator_table, dict):
            raise ConfigError("emulator", "must be a table", source)
        enabled = emulator_table.get("enabled", True)
        if not isinstance(enabled, bool):
            raise ConfigError("emulator.enabled", "must be true or false", source)
        for name in ("client_id", "client_secret"):
            if name in emulator_table and (
                not isinstance(emulator_table[name], str) or not emulator_table[name]
            ):
                raise ConfigError(f"emulator.{name}", "must be a non-empty string", source)
        if enabled:
            emulator = {
                "emulator": {k: v for k, v in emulator_table.items() if k != "enabled"},
                "calls": data.get("calls", []),
            }
    elif "calls" in data:
        raise ConfigError("calls", "scripted calls need an [emulator] section", source)

    platform = _Table(data.get("platform"), "platform", source)
    values: Dict[str, Any] = {}
    for name in ("api_url", "login_url", "client_id", "client_secret", "audio_base_url", "scope"):
        values[name] = platform.get(name, str, None)
    region = platform.get("region", str, None)
    platform.finish()
    region_api = region_login = None
    if region is not None:
        try:
            region_api, region_login = region_urls(region)
        except KeyError:
            raise ConfigError(
                "platform.region", f"unknown region {region!r}; known: {known_regions()}", source
            ) from None
    # Each setting's origin, as its error names it: the file, or the variable.
    origins: Dict[str, str] = {}
    for variable, name in ENVIRONMENT.items():
        if environ.get(variable):
            values[name] = environ[variable]
            origins[name] = _set_by_environment(variable)

    if emulator is not None:
        # The embedded platform decides the URLs and credentials at start.
        values["api_url"] = values["api_url"] or "http://127.0.0.1:0"
        values["client_id"] = values["client_id"] or emulator["emulator"].get(
            "client_id", "ivrproto-local"
        )
        values["client_secret"] = values["client_secret"] or emulator["emulator"].get(
            "client_secret", "local-secret"
        )
    # An explicit api_url wins over the region, and then the login URL
    # follows it (as the contract's default says) unless it is explicit too.
    if not values["api_url"] and not values["login_url"] and region_login:
        values["login_url"] = region_login
    try:
        api_url = check_url(
            values["api_url"] or region_api or DEFAULT_API_URL,
            "platform.api_url",
            source,
            tls_unless_loopback=True,
        )
    except ConfigError as e:
        raise _from(origins.get("api_url"), e) from None
    try:
        login_url = check_url(
            values["login_url"] or api_url,
            "platform.login_url",
            source,
            tls_unless_loopback=True,
        )
    except ConfigError as e:
        raise _from(origins.get("login_url"), e) from None
    for name in ("client_id", "client_secret"):
        if not values[name]:
            variable = name.upper()
            raise ConfigError(
                f"platform.{name}", f"is required (or set {variable} in the environment)", source
            )
    try:
        audio_base_url = check_url(
            values["audio_base_url"] or "https://example.com/ivr/audio/",
            "platform.audio_base_url",
            source,
            tls_unless_loopback=False,
        )
    except ConfigError as e:
        raise _from(origins.get("audio_base_url"), e) from None
    platform_config = PlatformConfig(
        api_url=api_url.rstrip("/"),
        login_url=login_url.rstrip("/"),
        client_id=values["client_id"],
        client_secret=values["client_secret"],
        audio_base_url=audio_base_url,
        scope=values["scope"] or DEFAULT_SCOPE,
    )

    intake = _Table(data.get("intake"), "intake", source)
    intake_defaults = IntakeConfig()
    listen = intake.get("listen", str, intake_defaults.listen)
    listen_origin = None
    if environ.get(INTAKE_LISTEN_ENV):
        listen = environ[INTAKE_LISTEN_ENV]
        listen_origin = _set_by_environment(INTAKE_LISTEN_ENV)
    intake_config = IntakeConfig(
        listen=listen,
        listen_origin=listen_origin,
        max_body=intake.count("max_body", intake_defaults.max_body, minimum=64),
        max_active_calls=intake.count(
            "max_active_calls", intake_defaults.max_active_calls, minimum=1
        ),
        outcome_retention=intake.positive(
            "outcome_retention", intake_defaults.outcome_retention, allow_zero=True
        ),
        secret=environ.get(intake.get("secret_env", str, SECRET_ENV)) or None,
        signature_tolerance=intake.positive(
            "signature_tolerance", intake_defaults.signature_tolerance
        ),
        drain_deadline=intake.positive(
            "drain_deadline", intake_defaults.drain_deadline, allow_zero=True
        ),
        max_loop_lag=intake.positive("max_loop_lag", intake_defaults.max_loop_lag),
        max_connections=intake.count(
            "max_connections", intake_defaults.max_connections, minimum=1
        ),
        request_deadline=intake.positive("request_deadline", intake_defaults.request_deadline),
        idle_timeout=intake.positive("idle_timeout", intake_defaults.idle_timeout),
        fd_reserve=intake.count("fd_reserve", intake_defaults.fd_reserve),
    )
    intake.finish()

    admin = _Table(data.get("admin"), "admin", source)
    admin_config = AdminConfig(listen=admin.get("listen", str, AdminConfig().listen))
    admin.finish()

    timing = _Table(data.get("timing"), "timing", source)
    defaults = Timing()
    timing_config = Timing(
        request_timeout=timing.positive("request_timeout", defaults.request_timeout),
        handshake_timeout=timing.positive("handshake_timeout", defaults.handshake_timeout),
        profile_budget=timing.positive("profile_budget", defaults.profile_budget),
        no_input_timeout=timing.positive("no_input_timeout", defaults.no_input_timeout),
        menu_repeats=timing.count("menu_repeats", defaults.menu_repeats),
        confirm_delay=timing.positive("confirm_delay", defaults.confirm_delay, allow_zero=True),
        max_invalid=timing.count("max_invalid", defaults.max_invalid, minimum=0),
        token_cooldown=timing.positive(
            "token_cooldown", defaults.token_cooldown, allow_zero=True
        ),
        token_cooldown_cap=timing.positive("token_cooldown_cap", defaults.token_cooldown_cap),
        token_invalidate_interval=timing.positive(
            "token_invalidate_interval", defaults.token_invalidate_interval, allow_zero=True
        ),
        token_max_lifetime=timing.positive("token_max_lifetime", defaults.token_max_lifetime),
        token_refresh_margin=timing.positive(
            "token_refresh_margin", defaults.token_refresh_margin, allow_zero=True
        ),
        max_frame_size=timing.count("max_frame_size", defaults.max_frame_size, minimum=1024),
        max_write_buffer=timing.count(
            "max_write_buffer", defaults.max_write_buffer, minimum=1024
        ),
        close_timeout=timing.positive("close_timeout", defaults.close_timeout),
        max_keys_kept=timing.count("max_keys_kept", defaults.max_keys_kept, minimum=1),
        max_notes=timing.count("max_notes", defaults.max_notes, minimum=10),
        max_reason_length=timing.count(
            "max_reason_length", defaults.max_reason_length, minimum=16
        ),
    )
    timing.finish()
    if timing_config.token_cooldown > timing_config.token_cooldown_cap:
        raise ConfigError(
            "timing.token_cooldown", "must not be more than timing.token_cooldown_cap", source
        )
    if timing_config.profile_budget >= 5.0:
        raise ConfigError(
            "timing.profile_budget", "must be well under 5 seconds (the caller is waiting)", source
        )

    profiles = _Table(data.get("profiles"), "profiles", source)
    profile_defaults = ProfilesConfig()
    profiles_config = ProfilesConfig(
        source=profiles.get("source", str, profile_defaults.source),
        lookup_type=profiles.get("lookup_type", str, profile_defaults.lookup_type),
        cache_ttl=profiles.positive("cache_ttl", profile_defaults.cache_ttl, allow_zero=True),
        negative_ttl=profiles.positive(
            "negative_ttl", profile_defaults.negative_ttl, allow_zero=True
        ),
        cache_size=profiles.count("cache_size", profile_defaults.cache_size, minimum=0),
        cache_max_bytes=profiles.count(
            "cache_max_bytes", profile_defaults.cache_max_bytes, minimum=0
        ),
        cache_max_entry_bytes=profiles.count(
            "cache_max_entry_bytes", profile_defaults.cache_max_entry_bytes, minimum=0
        ),
        rate_per_minute=profiles.positive("rate_per_minute", profile_defaults.rate_per_minute),
        max_pause=profiles.positive("max_pause", profile_defaults.max_pause, allow_zero=True),
        breaker_failures=profiles.count(
            "breaker_failures", profile_defaults.breaker_failures, minimum=1
        ),
        breaker_reset=profiles.positive("breaker_reset", profile_defaults.breaker_reset),
    )
    profiles.finish()
    if profiles_config.rate_per_minute < 1:
        raise ConfigError(
            "profiles.rate_per_minute", "must be at least 1 (requests in any 60 seconds)", source
        )
    if profiles_config.source not in PROFILE_SOURCES:
        raise ConfigError(
            "profiles.source", f"must be one of: {', '.join(PROFILE_SOURCES)}", source
        )
    if profiles_config.lookup_type not in LOOKUP_TYPES:
        raise ConfigError(
            "profiles.lookup_type", f"must be one of: {', '.join(LOOKUP_TYPES)}", source
        )

    logging = _Table(data.get("logging"), "logging", source)
    log_format = logging.get("format", str, "text")
    logging_config = LoggingConfig(
        format=environ.get(LOG_FORMAT_ENV) or log_format,
        hash_key=environ.get(logging.get("hash_key_env", str, "IVR_LOG_KEY")) or None,
    )
    logging.finish()
    if logging_config.format not in LOG_FORMATS:
        raise _from(
            _set_by_environment(LOG_FORMAT_ENV) if environ.get(LOG_FORMAT_ENV) else None,
            ConfigError("logging.format", f"must be one of: {', '.join(LOG_FORMATS)}", source),
        )

    try:
        menu = parse_menu(
            data.get("menu"),
            platform_config.audio_base_url,
            schedules=data.get("schedules"),
            closure=data.get("closure"),
        )
    except ConfigError as e:
        raise ConfigError(e.key, e.reason, source) from None

    audio_connector = _parse_audio_connector(
        data.get("audio_connector"), source, base_dir, environ
    )

    return Config(
        platform=platform_config,
        audio_connector=audio_connector,
        intake=intake_config,
        timing=timing_config,
        menu=menu,
        profiles=profiles_config,
        logging=logging_config,
        admin=admin_config,
        source=source,
        base_dir=base_dir,
        emulator=emulator,
    )


def load_config(path: str, environ: Mapping[str, str] = {}) -> Config:
    """
    Read and check a configuration file.

    :raises ConfigError: when the file cannot be read, is not TOML, or holds
        a bad setting
    """
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as e:
        raise ConfigError("--config", f"cannot read {path}: {e.strerror}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError("(file)", f"not valid TOML: {e}", str(p)) from None
    except RecursionError:
        raise ConfigError("(file)", "not valid TOML: nested too deeply", str(p)) from None
    return parse_config(data, source=str(p), base_dir=p.resolve().parent, environ=environ)
