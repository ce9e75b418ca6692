"""
``twistd ivr``: command-line options and the service they make.  The only
module that touches the global reactor.
"""

from __future__ import annotations

import os
from typing import Any, Optional

from twisted.application.service import IService
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
            reactor.stop()  # type: ignore[attr-defined]

    service = IVRService(reactor, options.config, options["intake"], on_scenario_done=stop)
    install_reload_signal(reactor, service)
    return service


def install_reload_signal(reactor: Any, service: Any) -> None:
    """
    SIGHUP reloads the configuration (see :meth:`IVRService.reload`).
    """
    import signal

    if hasattr(signal, "SIGHUP"):
        signal.signal(
            signal.SIGHUP, lambda signum, frame: reactor.callFromThread(service.reload)
        )
