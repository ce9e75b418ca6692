"""
The embedded demo: with ``[emulator]`` in the configuration, ``twistd ivr``
runs the local platform emulator beside the service, as its sibling, and
places the scenario's scripted calls once both are up.  The production
service (:class:`~ivrproto.service.IVRService`) never knows: it is given
the emulator's URLs as its platform.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

import attrs
from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from ivrproto.checks import check_scenario
from ivrproto._types import IVRReactor
from ivrproto.config import Config
from ivrproto.listeners import listen_now
from ivrproto.service import IVRService
from ivrproto.wiring import checked_config, offer_log_observer

__all__ = ["DemoService", "EmbeddedPlatform"]


class EmbeddedPlatform(Service):
    """
    Runs the embedded platform emulator (the ``emulator`` service).  It
    binds in ``privilegedStartService`` and raises
    :class:`~ivrproto.listeners.CannotListen` there.
    """

    log = Logger()

    def __init__(self, platform: Any, description: str) -> None:
        self.setName("emulator")
        self.platform = platform
        self.description = description
        self._listening: Optional[Deferred[Any]] = None

    def privilegedStartService(self) -> None:
        if self._listening is not None:
            return
        super().privilegedStartService()
        self._listening = Deferred()  # tried: a failure below is not retried
        self._listening = listen_now(
            "emulator", self.description, self.platform.listen(self.description)
        )

    def startService(self) -> None:
        self.privilegedStartService()
        super().startService()
        self.log.info("embedded platform emulator listening on {url}", url=self.platform.base_url)

    def stopService(self) -> Deferred[None]:
        super().stopService()
        return self.platform.stop()  # type: ignore[no-any-return]


class DemoService(MultiService):
    """
    The embedded emulator (first) and the service, side by side.  The
    emulator binds here, at once: the service's clients are made with its
    address.  Stopping drains the service first, then stops the emulator,
    so that the calls in progress end normally.

    :param on_scenario_done: called when the scripted calls have all ended
        (``twistd`` stops the reactor here when the config says
        ``exit_when_done``)
    :ivar scenario: the scripted calls, placed when the service starts
    :ivar scenario_done: fires with the calls' records once they have ended
    :raises ConfigError: the configuration does not pass a start-up check
    :raises ~ivrproto.listeners.CannotListen: the emulator cannot listen
    """

    log = Logger()

    def __init__(
        self,
        reactor: IVRReactor,
        config: Config,
        intake: Optional[str] = None,
        admin: Optional[str] = None,
        audio_connector: Optional[str] = None,
        on_scenario_done: Optional[Any] = None,
    ) -> None:
        from ivrproto.emulator import Platform

        super().__init__()
        self.reactor = reactor
        self.config = config
        self.scenario = check_scenario(config)
        checked_config(reactor, config, intake, admin, audio_connector)  # before binding
        self.on_scenario_done = on_scenario_done
        self.scenario_done: Deferred[Any] = Deferred()
        self._stopped = False
        platform_config = config.platform
        self.platform = Platform(
            reactor,
            clients={platform_config.client_id: platform_config.client_secret},
            profiles=self.scenario.profiles,
            token_ttl=self.scenario.token_ttl,
            close_after_transfer=self.scenario.close_after_transfer,
        )
        self.emulator = EmbeddedPlatform(self.platform, self.scenario.listen)
        self.emulator.setServiceParent(self)
        self.emulator.privilegedStartService()
        platform_config = attrs.evolve(
            platform_config, api_url=self.platform.base_url, login_url=self.platform.base_url
        )
        try:
            self.ivr = IVRService(
                reactor, attrs.evolve(config, platform=platform_config), intake, admin,
                audio_connector,
            )
        except BaseException:
            self.platform.stop()
            raise
        self.ivr.setServiceParent(self)

    def setServiceParent(self, parent: Any) -> None:
        offer_log_observer(parent, self.config.logging)
        super().setServiceParent(parent)

    def startService(self) -> None:
        self.privilegedStartService()
        super().startService()
        self._place_scripted_calls().chainDeferred(self.scenario_done)

    def start(self) -> Deferred[None]:
        """
        Start both; fires once everything listens, or fails (with
        :class:`~ivrproto.listeners.CannotListen`) once what had started
        has stopped.
        """
        try:
            self.startService()
        except Exception:
            failure = Failure()
            return self.stop().addBoth(lambda _: failure)
        return succeed(None)

    def reload(self, environ: Optional[Mapping[str, str]] = None) -> bool:
        "The service's :meth:`~ivrproto.service.IVRService.reload`."
        return self.ivr.reload(environ)

    def stopService(self) -> Deferred[None]:
        # The service drains (the emulator's calls still connected), then
        # the emulator stops.
        return self._stop(self.ivr.stopService)

    def stop(self) -> Deferred[None]:
        """
        Stop the service without draining, then the emulator.
        """
        return self._stop(self.ivr.stop)

    def _stop(self, stop_service: Any) -> Deferred[None]:
        if self._stopped:
            return succeed(None)
        self._stopped = True
        Service.stopService(self)
        d = maybeDeferred(stop_service)
        return d.addBoth(lambda _: self.emulator.stopService())

    def _place_scripted_calls(self) -> Deferred[Any]:
        from ivrproto.emulator import place_calls

        started = self.reactor.seconds()
        calls = self.scenario.calls
        self.log.info("placing {n} scripted calls", n=len(calls))
        d = place_calls(
            self.reactor,
            self.platform,
            calls,
            self.ivr.intake_url + "/v1/calls",
            interval=self.scenario.call_interval,
        )

        def done(records: Any) -> Any:
            elapsed = self.reactor.seconds() - started
            transferred = sum(1 for r in records if r.outcome == "transferred")
            self.log.info(
                "all {n} scripted calls ended in {elapsed:.2f}s "
                "({transferred} transferred)",
                n=len(records),
                elapsed=elapsed,
                transferred=transferred,
            )
            if self.on_scenario_done is not None and self.config.emulator is not None:
                if self.config.emulator["emulator"].get("exit_when_done", False):
                    self.on_scenario_done()
            return records

        return d.addCallback(done)
