"""
``twistd ivr``: command-line options and the service they make.  The only
module of the service that touches the global reactor (the command line's
``ivr simulate`` runs it through ``react``, and ``twistd ivr-emulator`` has
its own): everything below :func:`makeService` is given it.
"""

from __future__ import annotations

import os
from typing import Any, Mapping, Optional

import attrs
from twisted.application.service import IService
from twisted.internet.error import ReactorNotRunning
from twisted.logger import Logger
from twisted.python import usage

from ivrproto.config import (
    AC_API_KEY_ENV,
    CONFIG_ENV,
    INTAKE_LISTEN_ENV,
    LOG_FORMAT_ENV,
    LOG_FORMATS,
    Config,
    check_audio_connector,
    check_intake_protection,
    from_environment,
    load_config,
)
from ivrproto.errors import ConfigError
from ivrproto.logs import log_file_opener


class Options(usage.Options):
    """
    ``twistd ivr --config FILE [--intake ENDPOINT] [--audio-connector ENDPOINT]
    [--log-format FORMAT]``

    Each option has an environment equivalent (:data:`CONFIG_ENV`,
    :data:`INTAKE_LISTEN_ENV`, :data:`LOG_FORMAT_ENV`): the option wins
    over the variable, and the variable over the file.  A bad configuration
    stops the start with one line on stderr (exit status 1), without
    twistd's usage text.
    """

    synopsis = "--config FILE [--intake ENDPOINT] [--audio-connector ENDPOINT]"
    longdesc = (
        "Personalized IVR menus over the Genesys Cloud Call Control API. "
        "The environment variables GENESYS_BASE_URL, GENESYS_LOGIN_URL, CLIENT_ID, "
        "CLIENT_SECRET and AUDIO_BASE_URL override the config file; "
        f"{CONFIG_ENV}, {INTAKE_LISTEN_ENV} and {LOG_FORMAT_ENV} stand in for "
        "--config, --intake and --log-format."
    )
    optParameters = [
        ["config", "c", None, f"The configuration file (TOML). Required (or {CONFIG_ENV})."],
        [
            "log-format",
            None,
            None,
            "text or json (one JSON object a line); overrides "
            f"{LOG_FORMAT_ENV} and [logging] format.",
        ],
        [
            "intake",
            "i",
            None,
            "Twisted server endpoint of the intake listener "
            f"(e.g. tcp:8080:interface=127.0.0.1); overrides {INTAKE_LISTEN_ENV} "
            "and the config file.",
        ],
        [
            "audio-connector",
            None,
            None,
            "Twisted server endpoint of the Audio Connector listener (e.g. "
            "tcp:8081:interface=127.0.0.1); overrides [audio_connector] listen, "
            f"and serves the Audio Connector even without that section ({AC_API_KEY_ENV} "
            "must be set).",
        ],
    ]
    optParameters += [
        [
            "workers",
            None,
            None,
            "Worker processes sharing the listeners (default 1: this process serves); "
            "overrides IVR_WORKERS.",
        ],
        ["worker", None, None, "Internal: set by the supervisor on the workers it starts."],
    ]
    compData = usage.Completions(optActions={"config": usage.CompleteFiles("*.toml")})

    config: Optional[Config] = None
    workers: int = 1

    def opt_version(self) -> None:
        """
        Display ivrproto's version (and Twisted's) and exit.
        """
        from ivrproto import __version__
        from twisted import version as twisted_version

        print(f"ivrproto {__version__} (Twisted {twisted_version.short()})")
        raise SystemExit(0)

    def postOptions(self) -> None:
        # A missing --config is a usage error (twistd shows the usage); every
        # other problem is one line on stderr and exit status 1 (SystemExit
        # with a message: twistd lets it through, without its usage text).
        log_format = self["log-format"]
        config = self._check_listeners(self._load(log_format))
        if log_format is not None:
            config = attrs.evolve(config, logging=attrs.evolve(config.logging, format=log_format))
        # Log where twistd logs (--logfile, or twistd.log once daemonized).
        opener = log_file_opener(self.parent, config.logging.format, config.logging.level)
        if opener is not None:
            config = attrs.evolve(config, logging=attrs.evolve(config.logging, log_file=opener))
        self.config = config
        from ivrproto.workers import WORKERS_ENV, parse_workers

        self.workers = (
            1 if self["worker"]
            else parse_workers(self["workers"] or os.environ.get(WORKERS_ENV),
                               "--workers" if self["workers"] else WORKERS_ENV)
        )

    def _load(self, log_format: Optional[str]) -> Config:
        """
        Load ``--config`` (or :data:`CONFIG_ENV`) with the environment's
        overrides, and check its scenario.

        :param log_format: ``--log-format``, which hides :data:`LOG_FORMAT_ENV`
        :raises usage.UsageError: there is no configuration to load
        :raises SystemExit: with the one line, for a bad configuration or
            ``--log-format``
        """
        from ivrproto.checks import check_scenario

        environ: Mapping[str, str] = os.environ
        path = self["config"] or environ.get(CONFIG_ENV)
        if not path:
            raise usage.UsageError(f"--config FILE (or {CONFIG_ENV}) is required")
        path_origin = None if self["config"] else from_environment(CONFIG_ENV)
        if log_format is not None and log_format not in LOG_FORMATS:
            raise SystemExit(
                f"bad --log-format {log_format!r}: must be one of: {', '.join(LOG_FORMATS)}"
            )
        if log_format is not None:
            # The option wins: the variable is not even read.
            environ = {k: v for k, v in environ.items() if k != LOG_FORMAT_ENV}
        try:
            config = load_config(path, environ)
            check_scenario(config)
        except ConfigError as e:
            if path_origin is not None and e.key == "--config":
                raise SystemExit(f"bad configuration: {path_origin}: {e.reason}") from None
            raise SystemExit(f"bad configuration: {e}") from None
        return config

    def _check_listeners(self, config: Config) -> Config:
        """
        Check the intake's and the Audio Connector's endpoints and their
        protection; ``--audio-connector`` goes into the configuration.

        :raises SystemExit: with the one line naming the bad one
        """
        if self["intake"]:
            _check_endpoint(self["intake"], "--intake")
        else:
            _check_endpoint(
                config.intake.listen,
                f"configuration: {from_environment(INTAKE_LISTEN_ENV)}"
                if config.intake.listen_origin
                else f"configuration: {config.source}: intake.listen",
            )
        ac = config.audio_connector
        if self["audio-connector"]:
            _check_endpoint(self["audio-connector"], "--audio-connector")
            config = attrs.evolve(
                config,
                audio_connector=attrs.evolve(ac, enabled=True, listen=self["audio-connector"]),
            )
        elif ac.enabled:
            _check_endpoint(ac.listen, f"configuration: {config.source}: audio_connector.listen")
        try:
            check_intake_protection(
                config,
                self["intake"] or config.intake.listen,
                "--intake" if self["intake"] else None,
            )
            check_audio_connector(config)
        except ConfigError as e:
            raise SystemExit(f"bad configuration: {e}") from None
        return config


def _check_endpoint(description: str, origin: str) -> None:
    """
    Parse a server endpoint description, as the intake will.

    :raises SystemExit: with one line naming ``origin`` when it is malformed
    """
    from twisted.internet import reactor
    from twisted.internet.endpoints import serverFromString

    try:
        serverFromString(reactor, description)
    except (ValueError, TypeError, KeyError) as e:
        raise SystemExit(f"bad {origin}: {description!r} is not a server endpoint: {e}") from None


def makeService(options: Options) -> IService:
    """
    Make the service ``twistd ivr`` runs.
    """
    from twisted.internet import reactor

    from ivrproto.listeners import CannotListen
    from ivrproto.service import make_ivr_service

    assert options.config is not None

    def stop() -> None:
        if reactor.running:  # type: ignore[attr-defined]
            _stop_quietly(reactor)

    if options.workers > 1:
        from ivrproto.workers import make_supervisor

        return make_supervisor(reactor, options, options.workers)
    service_reactor: Any = reactor
    listen: dict[str, Any] = {"intake": options["intake"]}
    if options["worker"]:
        from ivrproto.workers import adopted, watch_supervisor

        service_reactor, listen, _ = adopted(reactor, options["worker"])
        reactor.callWhenRunning(watch_supervisor, reactor)  # type: ignore[attr-defined]
    try:
        # (--audio-connector is already in options.config.)
        service = make_ivr_service(
            service_reactor,
            options.config,
            on_scenario_done=stop,
            **listen,
        )
    except ConfigError as e:
        raise SystemExit(f"ivrproto: bad configuration: {e}") from None
    except CannotListen as e:  # the embedded emulator binds at once
        raise SystemExit(str(e)) from None
    bind_before_daemonizing(service)
    install_reload_signal(reactor, service)
    # Twisted installs its own SIGTERM and SIGINT handlers as the reactor
    # starts: wrap them once it has.
    reactor.addSystemEventTrigger(  # type: ignore[attr-defined]
        "after", "startup", install_stop_signals
    )
    return service


def bind_before_daemonizing(service: IService) -> None:
    """
    Bind every listener now, in the process that twistd started: twistd
    daemonizes before it calls ``privilegedStartService``, so a port that
    cannot be bound would otherwise be reported by the daemon's parent as
    twistd's "An error has occurred" with the message cut at 100 bytes.
    Here it is one line on stderr and exit status 1, in daemon mode as in
    the foreground; twistd's own ``privilegedStartService`` later finds
    everything bound and does nothing.

    :raises SystemExit: with the one line, for a listener that cannot bind
    """
    from ivrproto.listeners import CannotListen

    try:
        service.privilegedStartService()
    except CannotListen as e:
        raise SystemExit(str(e)) from None


class StopOnce:
    """
    A stop-signal handler that passes the first signal on to the reactor's
    own handler and notes any later one: while the service drains, a second
    SIGTERM would make the reactor's ``stop`` raise ``ReactorNotRunning``
    (a critical traceback in the log) and change nothing.

    :param previous: the reactor's handler
    """

    log = Logger()

    def __init__(self, previous: Any) -> None:
        self.previous = previous
        self.signalled = False

    def __call__(self, signum: int, frame: Any) -> None:
        if not self.signalled:
            self.signalled = True
            self.previous(signum, frame)
            return
        self.log.info("signal {signum} again: already shutting down", signum=signum)


def install_stop_signals(signals: Any = None) -> None:
    """
    Wrap the handlers of SIGTERM and SIGINT in :class:`StopOnce`.

    :param signals: the :mod:`signal` module (a fake in tests)
    """
    if signals is None:
        import signal as signals
    for name in ("SIGTERM", "SIGINT"):
        number = getattr(signals, name, None)
        if number is None:
            continue
        previous = signals.getsignal(number)
        if callable(previous) and not isinstance(previous, StopOnce):
            signals.signal(number, StopOnce(previous))


def _stop_quietly(reactor: Any) -> None:
    try:
        reactor.stop()
    except ReactorNotRunning:
        pass


def install_reload_signal(reactor: Any, service: Any) -> None:
    """
    SIGHUP reloads the configuration (see :meth:`IVRService.reload`).
    """
    import signal

    if hasattr(signal, "SIGHUP"):
        signal.signal(
            signal.SIGHUP, lambda signum, frame: reactor.callFromThread(service.reload)
        )
