"""
``twistd ivr-emulator``: run the platform emulator from a scenario file and
place the scenario's calls.

This is the only module of the emulator that uses the global reactor, and
only inside :func:`makeService`.
"""

from __future__ import annotations

import os
import sys
from typing import Any, Mapping, Optional

import attrs
from twisted.application.service import Service
from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger
from twisted.python import usage

from ivrproto.errors import ConfigError
from ivrproto.listeners import CannotListen, listen_now

from ivrproto.config.audio_connector import AC_API_KEY_ENV, AC_CLIENT_SECRET_ENV
from ivrproto.emulator.calllog import CallLog
from ivrproto.emulator.genesys import GenesysCallResult
from ivrproto.emulator.genesys_client import log_genesys_result, place_genesys_calls
from ivrproto.emulator.placing import accept_calls_by_hand, place_calls
from ivrproto.emulator.platform import Platform
from ivrproto.emulator.scenario import Scenario, load_scenario

__all__ = ["EmulatorService", "Options", "makeService"]


class Options(usage.Options):
    """
    ``twistd ivr-emulator --config FILE [--listen ENDPOINT]``
    """

    synopsis = "--config FILE [--listen ENDPOINT]"
    longdesc = (
        "Run the local platform emulator (token endpoint, profile API and "
        "Call Control WebSocket on one port) and place the scenario's calls, "
        "the Genesys-side ones ([[genesys_calls]]) on [genesys] url."
    )
    optParameters = [
        ["config", "c", None, "The scenario file (TOML). Required."],
        [
            "listen",
            "l",
            None,
            "A Twisted server endpoint string; overrides [emulator] listen.",
        ],
    ]

    scenario: Scenario

    def postOptions(self) -> None:
        if not self["config"]:
            raise usage.UsageError("--config FILE is required")
        try:
            scenario = load_scenario(self["config"])
        except ConfigError as e:
            raise usage.UsageError(str(e)) from None
        if self["listen"]:
            scenario = _with_listen(scenario, self["listen"])
        self.scenario = scenario


def _with_listen(scenario: Scenario, listen: str) -> Scenario:
    return attrs.evolve(scenario, listen=listen)


class EmulatorService(Service):
    """
    Runs a :class:`Platform` while the service runs, and places the
    scenario's calls once it listens.

    :param reactor: the reactor
    :param scenario: what to run
    :param http: a treq-like client for the intake POSTs (default treq)
    :param out: where the "listening" line is printed (default stdout)
    :param environ: where the Genesys side's API key and client secret are
        read (``IVR_AC_API_KEY``, ``IVR_AC_CLIENT_SECRET``); default none
    """

    _log = Logger()

    def __init__(
        self,
        reactor: Any,
        scenario: Scenario,
        http: Any = None,
        out: Any = None,
        environ: Optional[Mapping[str, str]] = None,
    ) -> None:
        self._reactor = reactor
        self._environ: Mapping[str, str] = environ or {}
        self.genesys_placed: Optional[Deferred[list[GenesysCallResult]]] = None
        self.scenario = scenario
        self._http = http
        self._out = out
        self.platform: Optional[Platform] = None
        self.placed: Optional[Deferred[list[CallLog]]] = None
        self._bound: Optional[Deferred[Any]] = None

    def privilegedStartService(self) -> None:
        """
        Bind the emulator's port.

        :raises CannotListen: when it cannot be bound
        """
        if self._bound is not None:
            return
        super().privilegedStartService()
        self.platform = self.scenario.platform(self._reactor)
        self._bound = Deferred()  # tried: a failure below is not retried
        self._bound = listen_now(
            "emulator",
            self.scenario.listen,
            self.platform.listen(self.scenario.listen),
            program="ivr-emulator",
        )

    def startService(self) -> None:
        self.privilegedStartService()
        super().startService()
        assert self._bound is not None
        self._bound.addCallbacks(self._listening, self._failed)

    def _failed(self, failure: Any) -> None:
        # Only an endpoint that fails later than at once gets here.
        self._log.error(
            "ivr-emulator cannot listen on {endpoint}: {reason}",
            endpoint=self.scenario.listen,
            reason=failure.getErrorMessage(),
        )
        self._reactor.callWhenRunning(self._reactor.stop)

    def _listening(self, port: Any) -> None:
        assert self.platform is not None
        line = f"ivr-emulator listening on {self.platform.base_url}"
        self._log.info("{line}", line=line)
        out = self._out if self._out is not None else sys.stdout
        print(line, file=out, flush=True)
        scenario = self.scenario
        self._place_genesys_calls()
        if not scenario.calls:
            if scenario.intake is not None:
                accept_calls_by_hand(
                    self._reactor,
                    self.platform,
                    scenario.intake,
                    http=self._http,
                    intake_wait=scenario.intake_wait,
                    on_call=self._watch,
                )
            return
        self.placed = place_calls(
            self._reactor,
            self.platform,
            scenario.calls,
            scenario.intake,
            http=self._http,
            interval=scenario.call_interval,
            intake_wait=scenario.intake_wait,
            on_call=self._watch,
        )
        self.placed.addCallback(self._all_done)

    def _place_genesys_calls(self) -> None:
        "Place the Genesys-side calls on ``[genesys] url``, logging each one's end."
        genesys = self.scenario.genesys
        if not genesys.calls:
            return
        api_key = self._environ.get(AC_API_KEY_ENV)
        if genesys.url is None or not api_key:
            self._log.error(
                "{n} Genesys-side calls not placed: they need [genesys] url and "
                "the API key in {env}",
                n=len(genesys.calls), env=AC_API_KEY_ENV,
            )
            return
        self.genesys_placed = place_genesys_calls(
            self._reactor, genesys.url, api_key, genesys.calls,
            client_secret=self._environ.get(AC_CLIENT_SECRET_ENV) or None,
            settings=genesys.settings, interval=genesys.interval,
            on_call=lambda r: r.when_finished().addCallback(
                lambda r: log_genesys_result(self._log, r)
            ),
        )

    def _watch(self, record: CallLog) -> None:
        record.when_finished().addCallback(self._report)

    def _report(self, record: CallLog) -> CallLog:
        duration = (
            "-"
            if record.connected_at is None or record.ended_at is None
            else f"{record.ended_at - record.connected_at:.3f}s"
        )
        self._log.info(
            "call {call_id}: {outcome}, target {target}, keys {keys}, "
            "{plays} plays, {violations} violations, duration {duration}",
            call_id=record.call_id,
            outcome=record.outcome,
            target=record.transfer_target,
            keys=",".join(record.keys_pressed) or "-",
            plays=len(record.plays),
            violations=len(record.violations),
            duration=duration,
        )
        return record

    def _all_done(self, records: list[CallLog]) -> list[CallLog]:
        transferred = sum(1 for r in records if r.outcome == "transferred")
        self._log.info(
            "all {count} calls finished ({transferred} transferred)",
            count=len(records),
            transferred=transferred,
        )
        return records

    def stopService(self) -> Deferred[None]:
        super().stopService()
        for placed in (self.placed, self.genesys_placed):
            if placed is not None and not placed.called:
                placed.cancel()
                placed.addErrback(lambda _: None)
        if self.platform is None:
            return succeed(None)
        return self.platform.stop()


def _quiet_pool(reactor: Any) -> Any:
    """
    A connection pool whose client factory does not log "Starting factory"
    and "Stopping factory" for every connection.

    The one place the emulator leans on Twisted internals: the pool's
    client factory class, ``_HTTP11ClientFactory``, and the pool's
    ``_factory`` attribute that names it, are private to
    ``twisted.web.client`` (Twisted has no public way to make the pool's
    factories quiet).  A Twisted release that renames either breaks this
    helper (an ImportError, or the log lines come back), and nothing else:
    a plain ``HTTPConnectionPool(reactor)`` is then the replacement.
    """
    from twisted.web.client import HTTPConnectionPool, _HTTP11ClientFactory

    class QuietFactory(_HTTP11ClientFactory):
        noisy = False

    pool = HTTPConnectionPool(reactor)
    pool._factory = QuietFactory
    return pool


def _quiet_http(reactor: Any) -> Any:
    """
    A treq client on ``reactor`` whose connection pool is quiet (a retried
    intake POST would log twice a second): see :func:`_quiet_pool`.
    """
    from treq.client import HTTPClient
    from twisted.web.client import Agent

    return HTTPClient(Agent(reactor, pool=_quiet_pool(reactor)))


def makeService(options: Options) -> EmulatorService:
    """
    :return: the emulator service for parsed :class:`Options`
    """
    from twisted.internet import reactor

    service = EmulatorService(
        reactor, options.scenario, http=_quiet_http(reactor), environ=os.environ
    )
    # Bind before twistd daemonizes (see ivrproto.tap.bind_before_daemonizing).
    try:
        service.privilegedStartService()
    except CannotListen as e:
        raise SystemExit(str(e)) from None
    return service
