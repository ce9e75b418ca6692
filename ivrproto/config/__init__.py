"""
The service's configuration: a TOML file, overridden by the contract's
environment variables, loaded into frozen values.  Every problem is reported
as one :class:`~ivrproto.errors.ConfigError` naming the bad key.

The values are in :mod:`ivrproto.config.values` (the Audio Connector's in
:mod:`ivrproto.config.audio_connector`, the shared state's in
:mod:`ivrproto.config.shared`), the reader of the file and the
environment in :mod:`ivrproto.config.read`, and the TOML table reader in
:mod:`ivrproto.config.table`; every name is importable from here.
"""

from ivrproto.config.audio_connector import (
    AC_API_KEY_ENV,
    AC_AUTH_SETTINGS,
    AC_CLIENT_SECRET_ENV,
    AC_SESSION_SETTINGS,
    AudioConnectorConfig,
    check_audio_connector,
)
from ivrproto.config.read import check_intake_protection, load_config, parse_config
from ivrproto.config.shared import KEY_SALT_ENV, REDIS_URL_ENV, SharedConfig
from ivrproto.config.table import check_url, did_you_mean, from_environment
from ivrproto.config.values import (
    ADMIN_ON_INTAKE,
    CONFIG_ENV,
    DEFAULT_API_URL,
    DEFAULT_SCOPE,
    ENVIRONMENT,
    INTAKE_LISTEN_ENV,
    LOG_FORMAT_ENV,
    LOG_FORMATS,
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

__all__ = [
    "AC_API_KEY_ENV",
    "AC_AUTH_SETTINGS",
    "AC_CLIENT_SECRET_ENV",
    "AC_SESSION_SETTINGS",
    "ADMIN_ON_INTAKE",
    "CONFIG_ENV",
    "DEFAULT_API_URL",
    "DEFAULT_SCOPE",
    "ENVIRONMENT",
    "INTAKE_LISTEN_ENV",
    "LOG_FORMATS",
    "LOG_FORMAT_ENV",
    "LOOKUP_TYPES",
    "PROFILE_SOURCES",
    "SECRET_ENV",
    "AdminConfig",
    "AudioConnectorConfig",
    "Config",
    "ConfigError",
    "IntakeConfig",
    "KEY_SALT_ENV",
    "REDIS_URL_ENV",
    "SharedConfig",
    "LoggingConfig",
    "PlatformConfig",
    "ProfilesConfig",
    "Timing",
    "check_audio_connector",
    "check_intake_protection",
    "check_url",
    "did_you_mean",
    "from_environment",
    "load_config",
    "parse_config",
]
