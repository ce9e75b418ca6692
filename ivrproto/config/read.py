"""
Reading the configuration: the TOML file (:func:`load_config`), each
``[section]`` by its own reader, overridden by the contract's environment
variables (:func:`parse_config`), and the intake-protection check made once
the listening endpoint is known (:func:`check_intake_protection`).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Tuple

from ivrproto._net import endpoint_is_loopback
from ivrproto.config.audio_connector import parse_audio_connector
from ivrproto.config.shared import parse_shared
from ivrproto.config.table import (
    Table,
    check_url,
    did_you_mean,
    set_by_environment,
    with_origin,
)
from ivrproto.config.values import (
    DEFAULT_API_URL,
    DEFAULT_SCOPE,
    ADMIN_TOKEN_ENV,
    ENVIRONMENT,
    INTAKE_LISTEN_ENV,
    LOG_FORMAT_ENV,
    LOG_FORMATS,
    LOG_LEVELS,
    LOOKUP_TYPES,
    PROFILE_SOURCES,
    SECRET_ENV,
    AdminConfig,
    Config,
    IntakeConfig,
    LoggingConfig,
    PlatformConfig,
    ProfilesConfig,
    Timing,
)
from ivrproto.errors import ConfigError
from ivrproto.menu.book import MenuBook
from ivrproto.menu.load import parse_menu
from ivrproto.regions import known_regions, region_urls

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["check_intake_protection", "load_config", "parse_config"]

_SECTIONS = {
    "platform", "intake", "admin", "timing", "profiles", "logging", "menu", "emulator", "calls",
    "audio_connector", "shared",
    "schedules", "closure",  # parsed with the menu (ivrproto.menu.load.parse_menu)
}
_PLATFORM_TEXTS = ("api_url", "login_url", "client_id", "client_secret", "audio_base_url", "scope")


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
    unknown = sorted(set(data) - _SECTIONS)
    if unknown:
        suggestion = did_you_mean(unknown[0], _SECTIONS)
        raise ConfigError(unknown[0], "unknown section" + suggestion, source)
    emulator = _emulator(data, source)
    platform = _platform(data.get("platform"), source, environ, emulator)
    intake = _intake(data.get("intake"), source, environ)
    admin = _admin(data.get("admin"), source, environ)
    timing = _timing(data.get("timing"), source)
    profiles = _profiles(data.get("profiles"), source)
    logging = _logging(data.get("logging"), source, environ)
    menu = _menu(data, platform.audio_base_url, source)
    audio_connector = parse_audio_connector(data.get("audio_connector"), source, base_dir, environ)
    shared = parse_shared(data.get("shared"), source, environ)
    return Config(
        shared=shared,
        platform=platform,
        audio_connector=audio_connector,
        intake=intake,
        timing=timing,
        menu=menu,
        profiles=profiles,
        logging=logging,
        admin=admin,
        source=source,
        base_dir=base_dir,
        emulator=emulator,
    )


def _emulator(data: Mapping[str, Any], source: str) -> Optional[Dict[str, Any]]:
    """
    ``[emulator]`` and ``[[calls]]``: the raw tables of the embedded local
    platform, when it is enabled (checked in full by the emulator).
    """
    table = data.get("emulator")
    if table is None:
        if "calls" in data:
            raise ConfigError("calls", "scripted calls need an [emulator] section", source)
        return None
    if not isinstance(table, dict):
        raise ConfigError("emulator", "must be a table", source)
    enabled = table.get("enabled", True)
    if not isinstance(enabled, bool):
        raise ConfigError("emulator.enabled", "must be true or false", source)
    for name in ("client_id", "client_secret"):
        if name in table and (not isinstance(table[name], str) or not table[name]):
            raise ConfigError(f"emulator.{name}", "must be a non-empty string", source)
    if not enabled:
        return None
    return {
        "emulator": {k: v for k, v in table.items() if k != "enabled"},
        "calls": data.get("calls", []),
    }


def _platform(
    data: Any, source: str, environ: Mapping[str, str], emulator: Optional[Mapping[str, Any]]
) -> PlatformConfig:
    """
    ``[platform]``: the file's settings, the region's URLs, the
    environment's overrides and (with the embedded platform) its defaults.
    """
    values, region_api, region_login = _platform_table(data, source)
    # Each setting's origin, as its error names it: the file, or the variable.
    origins: Dict[str, str] = {}
    for variable, name in ENVIRONMENT.items():
        if environ.get(variable):
            values[name] = environ[variable]
            origins[name] = set_by_environment(variable)
    if emulator is not None:
        # The embedded platform decides the URLs and credentials at start.
        settings = emulator["emulator"]
        values["api_url"] = values["api_url"] or "http://127.0.0.1:0"
        values["client_id"] = values["client_id"] or settings.get("client_id", "ivrproto-local")
        values["client_secret"] = values["client_secret"] or settings.get(
            "client_secret", "local-secret"
        )
    # An explicit api_url wins over the region, and then the login URL
    # follows it (as the contract's default says) unless it is explicit too.
    if not values["api_url"] and not values["login_url"] and region_login:
        values["login_url"] = region_login

    def url(name: str, value: str, tls_unless_loopback: bool) -> str:
        try:
            return check_url(
                value, f"platform.{name}", source, tls_unless_loopback=tls_unless_loopback
            )
        except ConfigError as e:
            raise with_origin(origins.get(name), e) from None

    api_url = url("api_url", values["api_url"] or region_api or DEFAULT_API_URL, True)
    login_url = url("login_url", values["login_url"] or api_url, True)
    for name in ("client_id", "client_secret"):
        if not values[name]:
            raise ConfigError(
                f"platform.{name}",
                f"is required (or set {name.upper()} in the environment)",
                source,
            )
    audio_base_url = values["audio_base_url"] or "https://example.com/ivr/audio/"
    return PlatformConfig(
        api_url=api_url.rstrip("/"),
        login_url=login_url.rstrip("/"),
        client_id=values["client_id"],
        client_secret=values["client_secret"],
        audio_base_url=url("audio_base_url", audio_base_url, False),
        scope=values["scope"] or DEFAULT_SCOPE,
    )


def _platform_table(
    data: Any, source: str
) -> Tuple[Dict[str, Any], Optional[str], Optional[str]]:
    """
    The ``[platform]`` table's own settings, and its region's API and login
    URLs (``None`` without a region).
    """
    table = Table(data, "platform", source)
    values: Dict[str, Any] = {name: table.get(name, str, None) for name in _PLATFORM_TEXTS}
    region = table.get("region", str, None)
    table.finish()
    if region is None:
        return values, None, None
    try:
        region_api, region_login = region_urls(region)
    except KeyError:
        raise ConfigError(
            "platform.region", f"unknown region {region!r}; known: {known_regions()}", source
        ) from None
    return values, region_api, region_login


def _intake(data: Any, source: str, environ: Mapping[str, str]) -> IntakeConfig:
    """
    ``[intake]``, with its endpoint from :data:`INTAKE_LISTEN_ENV` and its
    secret from the environment variable it names.
    """
    table = Table(data, "intake", source)
    defaults = IntakeConfig()
    listen = table.get("listen", str, defaults.listen)
    listen_origin = None
    if environ.get(INTAKE_LISTEN_ENV):
        listen = environ[INTAKE_LISTEN_ENV]
        listen_origin = set_by_environment(INTAKE_LISTEN_ENV)
    config = IntakeConfig(
        listen=listen,
        listen_origin=listen_origin,
        max_body=table.count("max_body", defaults.max_body, minimum=64),
        max_active_calls=table.count("max_active_calls", defaults.max_active_calls, minimum=1),
        outcome_retention=table.positive(
            "outcome_retention", defaults.outcome_retention, allow_zero=True
        ),
        secret=environ.get(table.get("secret_env", str, SECRET_ENV)) or None,
        signature_tolerance=table.positive("signature_tolerance", defaults.signature_tolerance),
        drain_deadline=table.positive("drain_deadline", defaults.drain_deadline, allow_zero=True),
        max_loop_lag=table.positive("max_loop_lag", defaults.max_loop_lag),
        max_connections=table.count("max_connections", defaults.max_connections, minimum=1),
        request_deadline=table.positive("request_deadline", defaults.request_deadline),
        idle_timeout=table.positive("idle_timeout", defaults.idle_timeout),
        fd_reserve=table.count("fd_reserve", defaults.fd_reserve),
    )
    table.finish()
    return config


def _admin(data: Any, source: str, environ: Mapping[str, str]) -> AdminConfig:
    """``[admin]``, with the bearer token from the environment."""
    table = Table(data, "admin", source)
    config = AdminConfig(
        listen=table.get("listen", str, AdminConfig().listen),
        token=environ.get(ADMIN_TOKEN_ENV) or None,
    )
    table.finish()
    return config


def _timing(data: Any, source: str) -> Timing:
    """
    ``[timing]``: every delay and limit of a call.
    """
    t = Table(data, "timing", source)
    d = Timing()
    config = Timing(
        request_timeout=t.positive("request_timeout", d.request_timeout),
        handshake_timeout=t.positive("handshake_timeout", d.handshake_timeout),
        profile_budget=t.positive("profile_budget", d.profile_budget),
        no_input_timeout=t.positive("no_input_timeout", d.no_input_timeout),
        menu_repeats=t.count("menu_repeats", d.menu_repeats),
        confirm_delay=t.positive("confirm_delay", d.confirm_delay, allow_zero=True),
        max_invalid=t.count("max_invalid", d.max_invalid, minimum=0),
        token_cooldown=t.positive("token_cooldown", d.token_cooldown, allow_zero=True),
        token_cooldown_cap=t.positive("token_cooldown_cap", d.token_cooldown_cap),
        token_invalidate_interval=t.positive(
            "token_invalidate_interval", d.token_invalidate_interval, allow_zero=True
        ),
        token_max_lifetime=t.positive("token_max_lifetime", d.token_max_lifetime),
        token_refresh_margin=t.positive(
            "token_refresh_margin", d.token_refresh_margin, allow_zero=True
        ),
        max_frame_size=t.count("max_frame_size", d.max_frame_size, minimum=1024),
        max_write_buffer=t.count("max_write_buffer", d.max_write_buffer, minimum=1024),
        close_timeout=t.positive("close_timeout", d.close_timeout),
        max_keys_kept=t.count("max_keys_kept", d.max_keys_kept, minimum=1),
        max_notes=t.count("max_notes", d.max_notes, minimum=10),
        max_reason_length=t.count("max_reason_length", d.max_reason_length, minimum=16),
    )
    t.finish()
    if config.token_cooldown > config.token_cooldown_cap:
        raise ConfigError(
            "timing.token_cooldown", "must not be more than timing.token_cooldown_cap", source
        )
    if config.profile_budget >= 5.0:
        raise ConfigError(
            "timing.profile_budget", "must be well under 5 seconds (the caller is waiting)", source
        )
    return config


def _profiles(data: Any, source: str) -> ProfilesConfig:
    """
    ``[profiles]``: where profiles come from, their cache and their limits.
    """
    t = Table(data, "profiles", source)
    d = ProfilesConfig()
    config = ProfilesConfig(
        source=t.get("source", str, d.source),
        lookup_type=t.get("lookup_type", str, d.lookup_type),
        cache_ttl=t.positive("cache_ttl", d.cache_ttl, allow_zero=True),
        negative_ttl=t.positive("negative_ttl", d.negative_ttl, allow_zero=True),
        cache_size=t.count("cache_size", d.cache_size, minimum=0),
        cache_max_bytes=t.count("cache_max_bytes", d.cache_max_bytes, minimum=0),
        cache_max_entry_bytes=t.count("cache_max_entry_bytes", d.cache_max_entry_bytes, minimum=0),
        rate_per_minute=t.positive("rate_per_minute", d.rate_per_minute),
        max_pause=t.positive("max_pause", d.max_pause, allow_zero=True),
        breaker_failures=t.count("breaker_failures", d.breaker_failures, minimum=1),
        breaker_reset=t.positive("breaker_reset", d.breaker_reset),
    )
    t.finish()
    if config.rate_per_minute < 1:
        raise ConfigError(
            "profiles.rate_per_minute", "must be at least 1 (requests in any 60 seconds)", source
        )
    if config.source not in PROFILE_SOURCES:
        raise ConfigError(
            "profiles.source", f"must be one of: {', '.join(PROFILE_SOURCES)}", source
        )
    if config.lookup_type not in LOOKUP_TYPES:
        raise ConfigError(
            "profiles.lookup_type", f"must be one of: {', '.join(LOOKUP_TYPES)}", source
        )
    return config


def _logging(data: Any, source: str, environ: Mapping[str, str]) -> LoggingConfig:
    """
    ``[logging]``, with the format from :data:`LOG_FORMAT_ENV` and the hash
    key from the environment variable it names.
    """
    table = Table(data, "logging", source)
    log_format = table.get("format", str, "text")
    config = LoggingConfig(
        format=environ.get(LOG_FORMAT_ENV) or log_format,
        hash_key=environ.get(table.get("hash_key_env", str, "IVR_LOG_KEY")) or None,
        level=table.get("level", str, "info"),
    )
    table.finish()
    if config.level not in LOG_LEVELS:
        raise ConfigError("logging.level", f"must be one of: {', '.join(LOG_LEVELS)}", source)
    if config.format not in LOG_FORMATS:
        raise with_origin(
            set_by_environment(LOG_FORMAT_ENV) if environ.get(LOG_FORMAT_ENV) else None,
            ConfigError("logging.format", f"must be one of: {', '.join(LOG_FORMATS)}", source),
        )
    return config


def _menu(data: Mapping[str, Any], audio_base_url: str, source: str) -> MenuBook:
    """
    ``[menu]``, with the ``[schedules]`` and ``[closure]`` it uses.
    """
    try:
        return parse_menu(
            data.get("menu"),
            audio_base_url,
            schedules=data.get("schedules"),
            closure=data.get("closure"),
        )
    except ConfigError as e:
        raise ConfigError(e.key, e.reason, source) from None


def check_intake_protection(
    config: Config, listen: str, origin: Optional[str] = None
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
        raise with_origin(
            origin,
            ConfigError(
                "intake.listen",
                f"{listen!r} listens beyond loopback: set {SECRET_ENV} so that intake "
                "requests must be signed",
                config.source,
            ),
        )
