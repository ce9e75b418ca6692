"""
``twistd ivr``: command-line options and the service they make.  The only
module that touches the global reactor.
"""

from __future__ import annotations

import os
from typing import Any, Optional

from twisted.application.service import IService
from twisted.internet.error import ReactorNotRunning
from twisted.logger import Logger
from twisted.python import usage

import attrs

from .config import LOG_FORMATS, Config, check_intake_protection, load_config
from .errors import ConfigError


class Options(usage.Options):
    """
    ``twistd ivr --config FILE [--intake ENDPOINT]``
    """

    synopsis = "--config FILE [--intake ENDPOINT]"
    longdesc = (
        "Personalized IVR menus over the Genesys Cloud Call Control API. "
        "The environment variables GENESYS_BASE_URL, GENESYS_LOGIN_URL, CLIENT_ID, "
        "CLIENT_SECRET and AUDIO_BASE_URL override the config file."
    )
    optParameters = [
        ["config", "c", None, "The configuration file (TOML). Required."],
        [
            "log-format",
            None,
            None,
            "text or json (one JSON object a line); overrides [logging] format.",
        ],
        [
            "intake",
            "i",
            None,
            "Twisted server endpoint of the intake listener "
            "(e.g. tcp:8080:interface=127.0.0.1); overrides the config file.",
        ],
    ]

    config: Optional[Config] = None

    def opt_version(self) -> None:
        """
        Display ivrproto's version (and Twisted's) and exit.
        """
        from twisted import version as twisted_version

        from . import __version__

        print(f"ivrproto {__version__} (Twisted {twisted_version.short()})")
        raise SystemExit(0)

    def postOptions(self) -> None:
        if not self["config"]:
            raise usage.UsageError("--config FILE is required")
        if self["intake"]:
            from twisted.internet import reactor
            from twisted.internet.endpoints import serverFromString

            try:
                serverFromString(reactor, self["intake"])
            except (ValueError, TypeError, KeyError) as e:
                raise usage.UsageError(f"bad --intake endpoint {self['intake']!r}: {e}") from None
        from .service import check_scenario

        try:
            self.config = load_config(self["config"], os.environ)
            check_scenario(self.config)
            check_intake_protection(self.config, self["intake"] or self.config.intake.listen)
        except ConfigError as e:
            raise usage.UsageError(f"bad configuration: {e}") from None
        if self["log-format"] is not None:
            if self["log-format"] not in LOG_FORMATS:
                raise usage.UsageError(f"--log-format must be one of: {', '.join(LOG_FORMATS)}")
            self.config = attrs.evolve(
                self.config,
                logging=attrs.evolve(self.config.logging, format=self["log-format"]),
            )


def makeService(options: Options) -> IService:
    """
    Make the service ``twistd ivr`` runs.
    """
    from twisted.internet import reactor

    from .service import IVRService

    assert options.config is not None

    def stop() -> None:
        if reactor.running:  # type: ignore[attr-defined]
            _stop_quietly(reactor)

    try:
        service = IVRService(reactor, options.config, options["intake"], on_scenario_done=stop)
    except ConfigError as e:
        raise SystemExit(f"ivrproto: bad configuration: {e}") from None
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
    from .listeners import CannotListen

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
