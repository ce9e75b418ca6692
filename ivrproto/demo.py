"""
The embedded demo: with ``[emulator]`` in the configuration, ``twistd ivr``
runs the local platform emulator beside the service, as its sibling, and
places the scenario's scripted calls once both are up: the Call Control
ones through the emulator, and the Genesys-side ones
(``[emulator.genesys]``, ``[[emulator.genesys_calls]]``) on the service's
Audio Connector listener.  The production service
(:class:`~ivrproto.service.IVRService`) never knows: it is given the
emulator's URLs as its platform.

The Audio Connector's API key comes from ``IVR_AC_API_KEY`` as always; when
it is not set, the demo makes one in-process (:func:`demo_api_key`) and
gives it to both sides, so that the first command stays one paste and no
key is ever written in a file.
"""

from __future__ import annotations

import secrets
from typing import Any, List, Mapping, Optional

import attrs
from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred, gatherResults, maybeDeferred, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from ivrproto.checks import check_scenario
from ivrproto._types import IVRReactor
from ivrproto.config import Config
from ivrproto.listeners import listen_now
from ivrproto.service import IVRService
from ivrproto.wiring import checked_config, offer_log_observer, with_audio_connector

__all__ = ["DemoService", "EmbeddedPlatform", "demo_api_key"]


def demo_api_key(config: Config) -> Config:
    """
    The configuration with an Audio Connector API key made in-process when
    the listener is on and the environment gives none (the embedded demo
    only: its Genesys side is in the same process, and the key is never
    logged nor written anywhere).
    """
    ac = config.audio_connector
    if not ac.enabled or ac.api_key:
        return config
    key = secrets.token_urlsafe(24)
    return attrs.evolve(config, audio_connector=attrs.evolve(ac, api_key=key))


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
    :ivar scenario_done: fires with the Call Control calls' records once
        they have ended
    :ivar genesys_done: fires with the Genesys-side calls' results once they
        have ended
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
        config = demo_api_key(with_audio_connector(config, audio_connector))
        self.config = config
        self.scenario = check_scenario(config)
        checked_config(reactor, config, intake, admin, audio_connector)  # before binding
        self.on_scenario_done = on_scenario_done
        self.scenario_done: Deferred[Any] = Deferred()
        self.genesys_done: Deferred[Any] = Deferred()
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
        self._place_genesys_calls().chainDeferred(self.genesys_done)
        both = gatherResults([self.scenario_done, self.genesys_done], consumeErrors=True)
        both.addCallback(lambda _: self._all_done()).addErrback(
            lambda f: self.log.failure("the scripted calls failed", f)
        )

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
            return records

        return d.addCallback(done)

    def _place_genesys_calls(self) -> "Deferred[List[Any]]":
        """
        Place the Genesys-side calls on the service's Audio Connector (none
        without the listener), logging each one's end.
        """
        from ivrproto.emulator.genesys_client import log_genesys_result, place_genesys_calls

        genesys = self.scenario.genesys
        if not genesys.calls:
            return succeed([])
        if self.ivr.audio_connector is None:
            self.log.warn(
                "{n} Genesys-side calls not placed: the Audio Connector is off "
                "(add [audio_connector])",
                n=len(genesys.calls),
            )
            return succeed([])
        started = self.reactor.seconds()
        ac = self.config.audio_connector
        assert ac.api_key is not None
        self.log.info("placing {n} Genesys-side calls", n=len(genesys.calls))
        d = place_genesys_calls(
            self.reactor, self.ivr.audio_connector_url, ac.api_key, genesys.calls,
            client_secret=ac.client_secret, settings=genesys.settings,
            interval=genesys.interval,
            on_call=lambda r: r.when_finished().addCallback(
                lambda r: log_genesys_result(self.log, r)
            ),
        )

        def done(results: List[Any]) -> List[Any]:
            self.log.info(
                "all {n} Genesys-side calls ended in {elapsed:.2f}s ({ok} as scripted)",
                n=len(results), elapsed=self.reactor.seconds() - started,
                ok=sum(1 for r in results if r.ok),
            )
            return results

        return d.addCallback(done)

    def _all_done(self) -> None:
        if self.on_scenario_done is not None and self.config.emulator is not None:
            if self.config.emulator["emulator"].get("exit_when_done", False):
                self.on_scenario_done()
