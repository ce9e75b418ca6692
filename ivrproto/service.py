"""
The ivrproto service, composed the Twisted way.  :func:`make_ivr_service`
makes what ``twistd ivr`` runs: an :class:`IVRService`, a ``MultiService``
whose children are its parts (:mod:`ivrproto.wiring`), each a service of
its own:

- ``clients`` (:class:`~ivrproto.clients.service.Clients`): the HTTP
  connection pool, the token source, the profile source and the profile
  lookup, stopped together;
- the ``loop-lag monitor`` (:class:`~ivrproto.intake.overload.LoopLag`);
- the ``intake``, the ``admin listener`` and the ``Audio Connector``, each a
  :class:`~ivrproto.listeners.ListenerService`.

With ``[emulator]``, the embedded platform emulator runs beside the service,
as its sibling under a :class:`~ivrproto.demo.DemoService`, never from
inside it.  :class:`IVRService` itself keeps what spans the parts: drain,
reload and stats.  The reactor is always passed in: only :mod:`ivrproto.tap`
(and the command line's ``react``) reach for the global one.
"""

from __future__ import annotations

import gc
import os
from typing import Any, Mapping, Optional

import attrs
from twisted.application.service import IService, MultiService
from twisted.internet.defer import Deferred, gatherResults, inlineCallbacks, maybeDeferred, succeed
from twisted.internet.interfaces import IAddress, IListeningPort
from twisted.logger import Logger
from twisted.python.failure import Failure

from ivrproto.callcontrol.protocol import CLOSE_GRACE
from ivrproto.checks import check_scenario, load_prompts
from ivrproto.clients.lookup import ProfileLookup
from ivrproto.clients.oauth import TokenSource
from ivrproto.clients.rest import RestProfileClient
from ivrproto._types import IVRReactor
from ivrproto.cluster.state import OFF_STATS
from ivrproto.config import Config, load_config
from ivrproto.errors import ConfigError
from ivrproto.intake.resources import IntakeRefusals
from ivrproto.listeners import ListenerService
from ivrproto.menu.closure import closure_stats
from ivrproto.metrics import REFUSAL_REASONS
from ivrproto.wiring import (
    checked_config,
    make_parts,
    offer_log_observer,
    with_audio_connector,
)

__all__ = ["IVRService", "make_ivr_service"]


#: The collector's thresholds once started: a young collection after 10,000
#: allocations (Python's default is 700), an older one after 10 of those.
#: Fewer collections walk the live calls' objects; a larger first threshold
#: (50,000) made the longest pause longer under load, not shorter.
GC_THRESHOLDS = (10000, 10, 10)


def freeze_startup_objects() -> None:
    """
    Move everything allocated while starting (modules, config, menus) out of
    the garbage collector's view: collections then only walk per-call
    objects, which saves several percent of CPU under load.  Then set the
    collector's thresholds to :data:`GC_THRESHOLDS`.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def make_ivr_service(
    reactor: IVRReactor,
    config: Config,
    intake: Optional[str] = None,
    admin: Optional[str] = None,
    audio_connector: Optional[str] = None,
    on_scenario_done: Optional[Any] = None,
) -> IService:
    """
    The service ``twistd ivr`` runs: an :class:`IVRService`, or, when the
    configuration has ``[emulator]``, a :class:`~ivrproto.demo.DemoService`
    holding the embedded emulator and an :class:`IVRService` side by side
    (the emulator binds at once: the service's clients need its address).

    :param on_scenario_done: called when the embedded platform's scripted
        calls have all ended and the config says ``exit_when_done``
    :raises ConfigError: the configuration does not pass a start-up check
    :raises ~ivrproto.listeners.CannotListen: the emulator cannot listen
    """
    if config.emulator is None:
        return IVRService(reactor, config, intake, admin, audio_connector)
    from ivrproto.demo import DemoService

    return DemoService(reactor, config, intake, admin, audio_connector, on_scenario_done)


class IVRService(MultiService):
    """
    The ivrproto service: a ``MultiService`` of its parts (the clients, the
    loop-lag monitor, the intake, the admin listener and, when on, the
    Audio Connector), every one made here, at once
    (:func:`~ivrproto.wiring.make_parts`).  Each listener binds in
    ``privilegedStartService``, which raises
    :class:`~ivrproto.listeners.CannotListen` for one that cannot.

    :param reactor: the reactor
    :param config: the loaded configuration (its ``[emulator]`` is not run
        here: see :func:`make_ivr_service`)
    :param intake: a server endpoint description overriding the config's
    :param admin: a server endpoint description (or ``"intake"``)
        overriding ``[admin] listen``
    :param audio_connector: a server endpoint description overriding
        ``[audio_connector] listen`` (and turning the Audio Connector on)
    :raises ConfigError: the configuration does not pass a start-up check
    """

    log = Logger()

    #: Calls in progress below which the intake never sheds: a late reactor
    #: with few calls is a stall, not overload.
    shed_floor = 8

    def __init__(
        self,
        reactor: IVRReactor,
        config: Config,
        intake: Optional[str] = None,
        admin: Optional[str] = None,
        audio_connector: Optional[str] = None,
    ) -> None:
        super().__init__()
        self.setName("ivrproto")
        self.reactor = reactor
        #: ``--audio-connector``, which a reload keeps.
        self._audio_connector_override = audio_connector
        config, self.intake_description, self.admin_description = checked_config(
            reactor, config, intake, admin, audio_connector
        )
        self.config = config
        self.draining = False
        self._stopped = False
        parts = make_parts(
            reactor, config, self.intake_description, self.admin_description,
            stats=self.stats, draining=lambda: self.draining, overloaded=self.overloaded,
            current=lambda: self.config,
            # Every prompt file loaded: a bad one is a configuration error,
            # before anything listens.
            prompts=load_prompts(config) if config.audio_connector.enabled else None,
        )
        self.clients = parts.clients
        self.metrics = parts.metrics
        self.registry = parts.registry
        self.loop_lag = parts.loop_lag
        self.intake_guard = parts.intake_guard
        self.admin_listener = parts.admin_listener
        self.audio_connector = parts.audio_connector
        self._addresses = parts.addresses
        #: the shared state on Redis, or ``None`` (``[shared]`` is off)
        self.shared = parts.shared
        # The shared state first: it starts before and stops after the
        # clients and listeners that use it.
        shared = () if parts.shared is None else (parts.shared,)
        for child in (*shared, parts.clients, parts.loop_lag, *parts.listeners):
            child.setServiceParent(self)

    @property
    def tokens(self) -> TokenSource:
        "The token source (of :attr:`clients`)."
        return self.clients.tokens

    @property
    def source(self) -> RestProfileClient:
        "The profile source (of :attr:`clients`)."
        return self.clients.source

    @property
    def lookup(self) -> ProfileLookup:
        "The profile lookup (of :attr:`clients`)."
        return self.clients.lookup

    @property
    def intake_address(self) -> Optional[IAddress]:
        "Where the intake listens (or last listened); ``None`` before."
        return self._addresses.get("intake")

    @property
    def admin_address(self) -> Optional[IAddress]:
        "Where the admin listener listens (or last listened); ``None`` before."
        return self._addresses.get("admin listener")

    @property
    def audio_connector_address(self) -> Optional[IAddress]:
        "Where the Audio Connector listens (or last listened); ``None`` before."
        return self._addresses.get("Audio Connector")

    def _url(self, scheme: str, name: str, path: str = "") -> str:
        address: Any = self._addresses.get(name)
        if address is None:
            raise RuntimeError(f"the {name} is not listening yet")
        return f"{scheme}://{address.host}:{address.port}{path}"

    @property
    def intake_url(self) -> str:
        "The intake's URL (``http://host:port``), once it listens."
        return self._url("http", "intake")

    @property
    def admin_url(self) -> str:
        """
        Where ``/metrics``, ``/v1/stats`` and ``GET /v1/calls/<id>`` are
        served: the admin listener, or the intake with ``[admin] listen =
        "intake"``.
        """
        if self.admin_listener is None:
            return self.intake_url
        return self._url("http", "admin listener")

    @property
    def audio_connector_url(self) -> str:
        "The Audio Connector's WebSocket URL (``ws://host:port/ivr``)."
        return self._url("ws", "Audio Connector", self.config.audio_connector.path)

    @property
    def port(self) -> Optional[IListeningPort]:
        """
        The intake's listening port, while it listens.
        """
        listener: ListenerService = self.getServiceNamed("intake")  # type: ignore[assignment]
        return listener.port

    def setServiceParent(self, parent: Any) -> None:
        offer_log_observer(parent, self.config.logging)
        super().setServiceParent(parent)

    def startService(self) -> None:
        self._start()
        freeze_startup_objects()

    def _start(self) -> None:
        self.privilegedStartService()
        super().startService()
        self.registry.watch_closure()  # the emergency closure's flag file, if [closure]
        self.log.info("ivrproto intake listening on {url}", url=self.intake_url)
        if self.audio_connector is not None:
            self.log.info("Audio Connector listening on {url}", url=self.audio_connector_url)
        if self.admin_listener is not None:
            self.log.info(
                "admin listener (/metrics, /v1/stats, /v1/calls/<id>) on {url}",
                url=self.admin_url,
            )

    def start(self) -> Deferred[None]:
        """
        Start everything; fires once every listener listens, or fails (with
        :class:`~ivrproto.listeners.CannotListen`) once what had started
        has stopped.
        """
        try:
            self._start()
        except Exception:
            failure = Failure()
            return self.stop().addBoth(lambda _: failure)
        return succeed(None)

    def reload(self, environ: Optional[Mapping[str, str]] = None) -> bool:
        """
        Load the configuration file again (on SIGHUP) and, if it passes every
        check, use its menus and timings for new calls.  Calls in progress
        keep the menu they started with; a configuration that fails
        validation never replaces the working one.

        :return: whether the new configuration was taken
        """
        try:
            new = load_config(self.config.source, os.environ if environ is None else environ)
            check_scenario(new)
        except ConfigError as e:
            self.log.error(
                "reload refused, still serving the previous configuration: {error}",
                error=str(e),
            )
            return False
        except Exception:
            # A reload runs from a signal: whatever breaks, the calls in
            # progress and the working configuration stay as they were.
            self.log.failure("reload failed, still serving the previous configuration")
            return False
        new = with_audio_connector(new, self._audio_connector_override)
        needs_restart = [
            name
            for name in ("platform", "intake", "admin", "profiles", "audio_connector", "shared")
            if getattr(new, name) != getattr(self.config, name)
        ]
        if needs_restart:
            self.log.warn(
                "reload: changes to [{sections}] take effect only after a restart",
                sections="], [".join(needs_restart),
            )
        self.config = attrs.evolve(self.config, menu=new.menu, timing=new.timing)
        self.registry.context = attrs.evolve(
            self.registry.context, book=new.menu, timing=new.timing
        )
        self.log.info(
            "configuration reloaded: {menus} menus; calls in progress keep theirs",
            menus=len(new.menu.menus),
        )
        return True

    def stopService(self) -> Deferred[None]:
        # Drain with the intake still listening (it answers 503), then stop.
        if not self.running:
            return self.stop()
        return self.drain().addBoth(lambda _: self.stop())

    @inlineCallbacks
    def drain(self, deadline: Optional[float] = None) -> Any:
        """
        Shut down without losing a call (SIGTERM): the intake answers 503
        and ``/readyz`` not ready at once; calls in progress go on normally;
        at the deadline every call still in a menu is transferred to the
        operator (and one that has chosen, to its choice); then the
        connections close, within a few seconds.
        """
        registry = self.registry
        ac = self.audio_connector
        self.draining = True
        deadline = self.config.intake.drain_deadline if deadline is None else deadline
        self.log.info(
            "draining: {active} calls in progress, {deadline:g}s before they are "
            "transferred to the operator",
            active=len(registry.active) + (0 if ac is None else len(ac.active)),
            deadline=deadline,
        )
        idle = registry.when_idle()
        if ac is not None:
            # Audio Connector calls drain alike; new upgrades get 503.
            ac.start_draining()
            idle = gatherResults([idle, ac.when_idle()]).addCallback(lambda _: None)

        def drain_now() -> None:
            # Each call is ended on its own: one that breaks keeps no other
            # from its transfer.
            registry.drain()
            if ac is not None:
                ac.drain()

        timer = self.reactor.callLater(deadline, drain_now)
        close_timeout = max(self.config.timing.close_timeout, CLOSE_GRACE)
        # Idle, or (past the deadline and the connections' close) not.
        yield idle.addTimeout(
            deadline + close_timeout + 1.0, self.reactor, onTimeoutCancel=lambda _r, _t: None
        )
        if timer.active():
            timer.cancel()
        if registry.connections:
            registry.abort_connections()
        if ac is not None:
            ac.abort_sessions()
        self.log.info("drained")

    def stop(self) -> Deferred[None]:
        """
        Stop every child service (the listeners, the loop-lag monitor, the
        clients together) and the closure's watch, without draining.
        """
        if self._stopped:
            return succeed(None)
        self._stopped = True
        stopped = maybeDeferred(MultiService.stopService, self).addErrback(
            lambda f: self.log.failure("stopping the listeners broke", f)
        )
        try:
            self.registry.stop_watching_closure()
        except Exception:
            self.log.failure("stopping {what} broke", what="the closure switch")
        return stopped.addCallback(lambda _: None)

    def overloaded(self) -> bool:
        """
        Whether new calls should be refused to protect those in progress.
        """
        return self.loop_lag.overloaded and len(self.registry.active) >= self.shed_floor

    def refusals(self) -> dict[str, int]:
        """
        Intake refusals by reason: the site's, and the connections the
        guard answered itself, before any request.
        """
        refused = dict.fromkeys(REFUSAL_REASONS, 0)
        guard = self.intake_guard
        site_refusals: Optional[IntakeRefusals] = getattr(guard.wrappedFactory, "refusals", None)
        if site_refusals is not None:
            refused.update(site_refusals.counts)
        refused["capacity"] += guard.refused
        refused["timeout"] += guard.timed_out
        return refused

    def stats(self) -> dict[str, Any]:
        """
        The service's counters (``GET /v1/stats``): calls by outcome, intake
        refusals by reason, token refreshes, profile lookups by outcome,
        cache and breaker.
        """
        registry, lookup = self.registry, self.lookup
        ac = {} if self.audio_connector is None else {
            "audio_connector": self.audio_connector.stats()
        }
        return {
            **ac,
            "draining": self.draining,
            "loop_lag": round(self.loop_lag.lag, 4),
            "calls": {"active": len(registry.active), **registry.totals},
            "intake": {"refused": self.refusals()},
            "fallbacks": dict(registry.fallbacks),
            "hours": dict(registry.hours_served),
            "closure": closure_stats(registry.closure),
            "closes": dict(registry.closes),
            "tokens": attrs.asdict(self.tokens.stats),
            "shared": OFF_STATS if self.shared is None else self.shared.stats(),
            "profiles": {
                "source": self.config.profiles.source,
                "requests": attrs.asdict(self.source.stats),
                "lookups": attrs.asdict(lookup.stats),
                "cache_entries": lookup.cache_size,
                "cache_bytes": lookup.cache_bytes,
                "breaker": lookup.breaker_state,
            },
        }
