"""
The configuration's frozen values, one class per section, and the constants
they are checked against.  :mod:`ivrproto.config.read` fills them from the
file and the environment.
"""

from __future__ import annotations

from pathlib import Path
from typing import IO, Any, Callable, Mapping, Optional
from urllib.parse import urlsplit

import attrs

from ivrproto.clients.oauth import DEFAULT_SCOPE
from ivrproto.clients.profiles import CONTACT_LOOKUP_TYPES
from ivrproto.config.audio_connector import AudioConnectorConfig
from ivrproto.config.shared import SharedConfig
from ivrproto.menu.book import MenuBook

__all__ = [
    "ADMIN_ON_INTAKE",
    "CONFIG_ENV",
    "DEFAULT_API_URL",
    "DEFAULT_SCOPE",
    "ENVIRONMENT",
    "ADMIN_TOKEN_ENV",
    "INTAKE_LISTEN_ENV",
    "LOG_FORMATS",
    "LOG_FORMAT_ENV",
    "LOOKUP_TYPES",
    "PROFILE_SOURCES",
    "SECRET_ENV",
    "AdminConfig",
    "Config",
    "IntakeConfig",
    "LoggingConfig",
    "PlatformConfig",
    "ProfilesConfig",
    "Timing",
]

DEFAULT_API_URL = "https://api.us-east-1.mypurecloud.com"

#: The environment variable holding the intake's shared secret (by default).
SECRET_ENV = "IVR_INTAKE_SECRET"

#: The environment variable holding the admin listener's bearer token
#: (never in the file).
ADMIN_TOKEN_ENV = "IVR_ADMIN_TOKEN"

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
#: ``[logging] level``: the least severe events the service's log keeps.
LOG_LEVELS = ("debug", "info", "warn", "error")


@attrs.frozen
class LoggingConfig:
    """
    :ivar format: ``text`` (twistd's usual lines) or ``json`` (one object a line)
    :ivar hash_key: the key of the keyed hash that stands in for caller ids
        in logs (from the environment variable named by ``hash_key_env``);
        ``None``: a random key per process
    :ivar level: the least severe events written (``debug``, ``info``,
        ``warn`` or ``error``); per-call arrival lines are at ``debug``
    :ivar log_file: opens the file the service logs to, in ``format``, when
        the service is started by ``twistd ivr`` (the file twistd would log
        to: see :func:`ivrproto.logs.log_file_opener`); not from the file
    """

    format: str = "text"
    hash_key: Optional[str] = attrs.field(default=None, repr=False)
    level: str = "info"
    log_file: Optional[Callable[[], IO[Any]]] = attrs.field(default=None, eq=False, repr=False)


PROFILE_SOURCES = ("profiles", "external-contacts")
#: The External Contacts lookup types (the client's own list).
LOOKUP_TYPES = CONTACT_LOOKUP_TYPES


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
    :ivar token: the bearer token of the admin listener's write methods
        (``PUT``/``DELETE /v1/closure``), from :data:`ADMIN_TOKEN_ENV`;
        ``None``: they are refused
    """

    listen: str = "tcp:9100:interface=127.0.0.1"
    token: Optional[str] = attrs.field(default=None, repr=False, eq=False)


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
    shared: SharedConfig = SharedConfig()
    # repr=False: the emulator table may hold the (local) client secret.
    emulator: Optional[Mapping[str, Any]] = attrs.field(default=None, repr=False)
