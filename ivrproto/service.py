"""
Wires the parts into one service: HTTP client, token source, profile
client, call registry, intake listener and, when the configuration asks for
it, the embedded local platform with its scripted calls.
"""

from __future__ import annotations

import gc
import os
from typing import Any, Mapping, Optional

import attrs
from treq.client import HTTPClient
from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred, DeferredList, inlineCallbacks, maybeDeferred, succeed
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IListeningPort
from twisted.logger import ILogObserver, Logger
from twisted.python.components import Componentized
from twisted.python.failure import Failure
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.resource import Resource

from ivrproto.session.runner import CallContext
from ivrproto.session.registry import CallRegistry
from ivrproto.config import (
    ADMIN_ON_INTAKE,
    Config,
    check_audio_connector,
    check_intake_protection,
    load_config,
)
from ivrproto._net import endpoint_is_loopback
from ivrproto.intake.guard import IntakeGuard
from ivrproto.intake.signing import SignatureCheck
from ivrproto.errors import ConfigError
from ivrproto.clients.limits import RequestWindow, RetryBudget
from ivrproto.intake.resources import IntakeRefusals, make_admin_site, make_site
from ivrproto.listeners import CannotListen, ListenerService, listen_now
from ivrproto.clients.lookup import ProfileLookup
from ivrproto.metrics import REFUSAL_REASONS, Metrics, MetricsResource
from ivrproto.intake.overload import LoopLag
from ivrproto.callcontrol.protocol import CLOSE_GRACE
from ivrproto.clients.oauth import TokenSource
from ivrproto.clients.profiles import ExternalContactsClient, ProfileClient, _ProfileSource


def freeze_startup_objects() -> None:
    """
    Move everything allocated while starting (modules, config, menus) out of
    the garbage collector's view: collections then only walk per-call
    objects, which saves several percent of CPU under load.
    """
    gc.collect()
    gc.freeze()


def idle_or_timeout(reactor: Any, d: Deferred[Any], seconds: float) -> Deferred[Any]:
    """
    ``d``, or ``None`` after ``seconds`` if it has not fired by then.
    """
    result: Deferred[Any] = Deferred()

    def timed_out() -> None:
        if not result.called:
            result.callback(None)

    timer = reactor.callLater(seconds, timed_out)

    def done(value: Any) -> None:
        if timer.active():
            timer.cancel()
        if not result.called:
            result.callback(value)

    d.addBoth(done)
    return result


def check_scenario(config: Config) -> Any:
    """
    Parse the embedded platform's scenario, if the configuration has one.

    :raises ConfigError: naming the bad key
    """
    if config.emulator is None:
        return None
    from ivrproto.emulator import parse_scenario

    table = dict(config.emulator)
    emulator = dict(table["emulator"])
    emulator.pop("exit_when_done", None)
    table["emulator"] = emulator
    return parse_scenario(table, config.base_dir, config.source)


def load_prompts(config: Config) -> Any:
    """
    The Audio Connector's prompt library, every file loaded (at start-up,
    and for ``ivr check``).

    :return: a :class:`~ivrproto.audioconnector.prompts.PromptLibrary`
    :raises ConfigError: naming ``audio_connector.prompts`` and every file
        that cannot be played
    """
    from ivrproto.audioconnector.prompts import PromptLibrary

    ac = config.audio_connector
    library = PromptLibrary(str(ac.prompts), ac.language)
    errors = library.preload()
    if errors:
        raise ConfigError(
            "audio_connector.prompts",
            "; ".join(str(e) for e in errors[:10])
            + (f" (and {len(errors) - 10} more)" if len(errors) > 10 else ""),
            config.source,
        )
    if library.cached == 0:
        raise ConfigError(
            "audio_connector.prompts",
            f"{ac.prompts} holds no prompt (<language>/<name>.wav)",
            config.source,
        )
    return library


def check_admin(config: Config, intake: str, admin: str, reactor: Any = None) -> None:
    """
    Refuse an ``[admin] listen`` that is not an endpoint, or that puts the
    admin routes on an intake listening beyond loopback.

    :raises ConfigError: naming ``admin.listen``
    """
    if admin == ADMIN_ON_INTAKE:
        if not endpoint_is_loopback(intake):
            raise ConfigError(
                "admin.listen",
                f'"{ADMIN_ON_INTAKE}" would serve /metrics, /v1/stats and the calls on an '
                f"intake that listens beyond loopback ({intake!r}): give the admin "
                "listener its own endpoint, such as tcp:9100:interface=127.0.0.1",
                config.source,
            )
        return
    if reactor is None:
        from twisted.internet import reactor
    try:
        serverFromString(reactor, admin)
    except (ValueError, TypeError, KeyError) as e:
        raise ConfigError(
            "admin.listen", f"{admin!r} is not a server endpoint: {e}", config.source
        ) from None


class _LoopLagService(Service):
    """
    Runs a :class:`LoopLag` while the service runs.
    """

    def __init__(self, loop_lag: LoopLag) -> None:
        self.setName("loop-lag monitor")
        self.loop_lag = loop_lag

    def startService(self) -> None:
        super().startService()
        self.loop_lag.start()

    def stopService(self) -> Any:
        super().stopService()
        self.loop_lag.stop()


class _EmbeddedPlatformService(Service):
    """
    Runs the embedded platform emulator: it binds in
    ``privilegedStartService`` and raises :class:`CannotListen` there.
    """

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

    def stopService(self) -> Deferred[None]:
        super().stopService()
        return self.platform.stop()  # type: ignore[no-any-return]


class IVRService(MultiService):
    """
    The ivrproto service: a ``MultiService`` of the embedded platform
    emulator (when the configuration has one), the loop-lag monitor, the
    intake listener and the admin listener.  Each listener binds in
    ``privilegedStartService``, which raises :class:`CannotListen` for one
    that cannot.

    :param reactor: the reactor (``IReactorTCP``, ``IReactorTime``...)
    :param config: the loaded configuration
    :param intake: a server endpoint description overriding the config's
    :param on_scenario_done: called when the embedded platform's scripted
        calls have all ended (``twistd`` stops the reactor here when the
        config says ``exit_when_done``)
    :param admin: a server endpoint description (or ``"intake"``)
        overriding ``[admin] listen``
    :param audio_connector: a server endpoint description overriding
        ``[audio_connector] listen`` (and turning the Audio Connector on)
    """

    log = Logger()

    def __init__(
        self,
        reactor: Any,
        config: Config,
        intake: Optional[str] = None,
        on_scenario_done: Optional[Any] = None,
        admin: Optional[str] = None,
        audio_connector: Optional[str] = None,
    ) -> None:
        super().__init__()
        self.reactor = reactor
        #: ``--audio-connector``, which a reload keeps.
        self._audio_connector_override = audio_connector
        if audio_connector:
            config = attrs.evolve(
                config,
                audio_connector=attrs.evolve(
                    config.audio_connector, enabled=True, listen=audio_connector
                ),
            )
        check_audio_connector(config)
        #: The Audio Connector's prompts, every file loaded (a bad one is a
        #: configuration error, before anything listens).
        self.prompts: Any = load_prompts(config) if config.audio_connector.enabled else None
        self.config = config
        self.intake_description = intake or config.intake.listen
        check_intake_protection(config, self.intake_description)
        self.admin_description = admin or config.admin.listen
        check_admin(config, self.intake_description, self.admin_description, reactor)
        self.scenario = check_scenario(config)
        self.on_scenario_done = on_scenario_done
        self.platform: Any = None
        self.pool: Optional[HTTPConnectionPool] = None
        self.tokens: Optional[TokenSource] = None
        self.source: Optional[_ProfileSource] = None
        self.lookup: Optional[ProfileLookup] = None
        self.registry: Optional[CallRegistry] = None
        self.intake_listener: Optional[ListenerService] = None
        self.admin_listener: Optional[ListenerService] = None
        self.intake_address: Any = None
        self.admin_address: Any = None
        #: The Audio Connector's factory and listener, when it is on.
        self.audio_connector: Any = None
        self.audio_connector_listener: Optional[ListenerService] = None
        self.audio_connector_address: Any = None
        #: Audio Connector calls by outcome (``selected``, ``operator``...).
        self.audio_connector_outcomes: dict[str, int] = {}
        self.audio_connector_calls = 0
        self._prepared = False
        self._stopped = False
        self.draining = False
        self.metrics: Optional[Metrics] = None
        self.loop_lag: Optional[LoopLag] = None
        self.intake_guard: Optional[IntakeGuard] = None
        self.scenario_done: Optional[Deferred[Any]] = None
        self._started: Optional[Deferred[None]] = None

    @property
    def intake_url(self) -> str:
        address = self.intake_address
        assert address is not None, "the intake is not listening yet"
        return f"http://{address.host}:{address.port}"

    @property
    def admin_url(self) -> str:
        """
        Where ``/metrics``, ``/v1/stats`` and ``GET /v1/calls/<id>`` are
        served: the admin listener, or the intake with ``[admin] listen =
        "intake"``.
        """
        if self.admin_description == ADMIN_ON_INTAKE:
            return self.intake_url
        address = self.admin_address
        assert address is not None, "the admin listener is not listening yet"
        return f"http://{address.host}:{address.port}"

    @property
    def audio_connector_url(self) -> str:
        "The Audio Connector's WebSocket URL (``ws://host:port/ivr``)."
        address = self.audio_connector_address
        assert address is not None, "the Audio Connector is not listening yet"
        return f"ws://{address.host}:{address.port}{self.config.audio_connector.path}"

    @property
    def port(self) -> Optional[IListeningPort]:
        """
        The intake's listening port, while it listens.
        """
        return None if self.intake_listener is None else self.intake_listener.port

    def setServiceParent(self, parent: Any) -> None:
        # Offer twistd the application's log observer (its --logger still
        # wins): under ``twistd ivr``, one writing the configured format to
        # the file twistd would log to (standard output with -n, --logfile,
        # twistd.log once daemonized); in a .tac file, JSON logs go to
        # standard output.  Both leave out Twisted's plumbing lines.
        if isinstance(parent, Componentized):
            from ivrproto.logs import file_observer, json_observer

            logging = self.config.logging
            if logging.log_file is not None:
                parent.setComponent(ILogObserver, file_observer(logging.log_file(), logging.format))
            elif logging.format == "json":
                parent.setComponent(ILogObserver, json_observer())
        super().setServiceParent(parent)

    def privilegedStartService(self) -> None:
        """
        Make the parts and bind every listener (the embedded platform's
        first: the clients need its address).

        :raises CannotListen: for a listener that cannot be bound
        """
        if self._prepared:
            return
        self._prepared = True
        platform_config = self.config.platform
        if self.scenario is not None:
            from ivrproto.emulator import Platform

            scenario = self.scenario
            self.platform = Platform(
                self.reactor,
                clients={platform_config.client_id: platform_config.client_secret},
                profiles=scenario.profiles,
                token_ttl=scenario.token_ttl,
                close_after_transfer=scenario.close_after_transfer,
            )
            embedded = _EmbeddedPlatformService(self.platform, scenario.listen)
            embedded.setServiceParent(self)
            embedded.privilegedStartService()
            platform_config = attrs.evolve(
                platform_config, api_url=self.platform.base_url, login_url=self.platform.base_url
            )
        self._make_parts(platform_config)
        super().privilegedStartService()

    def startService(self) -> None:
        self._start()
        freeze_startup_objects()

    def _start(self) -> None:
        self.privilegedStartService()
        super().startService()
        if self.platform is not None:
            self.log.info(
                "embedded platform emulator listening on {url}", url=self.platform.base_url
            )
        self.log.info("ivrproto intake listening on {url}", url=self.intake_url)
        if self.audio_connector_listener is not None:
            self.log.info(
                "Audio Connector listening on {url}", url=self.audio_connector_url
            )
        if self.admin_listener is not None:
            self.log.info(
                "admin listener (/metrics, /v1/stats, /v1/calls/<id>) on {url}",
                url=self.admin_url,
            )
        if self.scenario is not None:
            self.scenario_done = self._place_scripted_calls()

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
        if self._audio_connector_override:
            new = attrs.evolve(
                new,
                audio_connector=attrs.evolve(
                    new.audio_connector, enabled=True, listen=self._audio_connector_override
                ),
            )
        needs_restart = [
            name
            for name in ("platform", "intake", "admin", "profiles", "audio_connector")
            if getattr(new, name) != getattr(self.config, name)
        ]
        if needs_restart:
            self.log.warn(
                "reload: changes to [{sections}] take effect only after a restart",
                sections="], [".join(needs_restart),
            )
        self.config = attrs.evolve(self.config, menu=new.menu, timing=new.timing)
        if self.registry is not None:
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
        if self.registry is None:
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
        assert self.registry is not None
        registry = self.registry
        self.draining = True
        deadline = self.config.intake.drain_deadline if deadline is None else deadline
        self.log.info(
            "draining: {active} calls in progress, {deadline:g}s before they are "
            "transferred to the operator",
            active=len(registry.active),
            deadline=deadline,
        )
        idle = registry.when_idle()
        # registry.drain ends each call on its own: one that breaks keeps
        # no other from its transfer.
        timer = self.reactor.callLater(deadline, registry.drain)
        close_timeout = max(self.config.timing.close_timeout, CLOSE_GRACE)
        yield idle_or_timeout(self.reactor, idle, deadline + close_timeout + 1.0)
        if timer.active():
            timer.cancel()
        if registry.connections:
            registry.abort_connections()
        self.log.info("drained")

    def start(self) -> Deferred[None]:
        """
        Start everything; fires once every listener listens, or fails (with
        :class:`CannotListen`) once what had started has stopped.
        """
        try:
            self._start()
        except Exception:
            failure = Failure()
            return self.stop().addBoth(lambda _: failure)
        return succeed(None)

    def _make_parts(self, platform_config: Any) -> None:
        """
        The clients, the call registry and the listeners' sites.
        """
        timing = self.config.timing
        self.pool = HTTPConnectionPool(self.reactor, persistent=True)
        self.pool.maxPersistentPerHost = 32
        self.pool.cachedConnectionTimeout = 30
        self.pool.retryAutomatically = False
        http = HTTPClient(Agent(self.reactor, pool=self.pool))
        self.tokens = TokenSource(
            self.reactor,
            http,
            platform_config.token_url,
            platform_config.client_id,
            platform_config.client_secret,
            scope=platform_config.scope,
            timeout=timing.request_timeout,
            refresh_margin=timing.token_refresh_margin,
            failure_cooldown=timing.token_cooldown,
            failure_cooldown_cap=timing.token_cooldown_cap,
            invalidate_interval=timing.token_invalidate_interval,
            max_lifetime=timing.token_max_lifetime,
        )
        profiles = self.config.profiles
        retry_budget = RetryBudget(self.reactor)
        # One count of profile requests, first attempts and retries alike.
        window = RequestWindow(self.reactor, int(profiles.rate_per_minute))
        source: _ProfileSource
        if profiles.source == "external-contacts":
            source = ExternalContactsClient(
                self.reactor,
                http,
                platform_config.api_url,
                self.tokens,
                lookup_type=profiles.lookup_type,
                timeout=timing.request_timeout,
                retry_budget=retry_budget,
                request_window=window,
                max_pause=profiles.max_pause,
            )
        else:
            source = ProfileClient(
                self.reactor,
                http,
                platform_config.api_url,
                self.tokens,
                timeout=timing.request_timeout,
                retry_budget=retry_budget,
                request_window=window,
                max_pause=profiles.max_pause,
            )
        self.source = source
        self.lookup = ProfileLookup(
            self.reactor,
            source,
            ttl=profiles.cache_ttl,
            negative_ttl=profiles.negative_ttl,
            max_entries=profiles.cache_size,
            max_bytes=profiles.cache_max_bytes,
            max_entry_bytes=profiles.cache_max_entry_bytes,
            request_window=window,
            breaker_failures=profiles.breaker_failures,
            breaker_reset=profiles.breaker_reset,
        )
        self.metrics = Metrics(self.stats)
        context = CallContext(
            metrics=self.metrics,
            reactor=self.reactor,
            tokens=self.tokens,
            profiles=self.lookup,
            book=self.config.menu,
            timing=timing,
            websocket_url=platform_config.websocket_url,
            log_key=(
                self.config.logging.hash_key.encode("utf-8")
                if self.config.logging.hash_key
                else os.urandom(16)
            ),
        )
        self.registry = CallRegistry(
            context, self.config.intake.max_active_calls, self.config.intake.outcome_retention
        )
        self.registry.watch_closure()  # the emergency closure's flag file, if [closure]
        admin_on_intake = self.admin_description == ADMIN_ON_INTAKE
        admin_routes: dict[bytes, Resource] = {b"metrics": MetricsResource(self.metrics)}
        site = make_site(
            self.registry,
            self.tokens.ready,
            lambda: self.draining,
            self.config.intake.max_body,
            stats=self.stats if admin_on_intake else None,
            extra=admin_routes if admin_on_intake else None,
            show_calls=admin_on_intake,
            is_overloaded=self.overloaded,
            signatures=(
                None
                if self.config.intake.secret is None
                else SignatureCheck(
                    self.config.intake.secret.encode("utf-8"),
                    self.config.intake.signature_tolerance,
                )
            ),
        )
        self.loop_lag = LoopLag(self.reactor, limit=self.config.intake.max_loop_lag)
        _LoopLagService(self.loop_lag).setServiceParent(self)
        site.timeOut = self.config.intake.idle_timeout
        intake = self.config.intake
        self.intake_guard = IntakeGuard(
            site, self.reactor, intake.max_connections, intake.request_deadline, intake.fd_reserve
        )
        self.intake_listener = ListenerService(
            "intake",
            self.intake_description,
            serverFromString(self.reactor, self.intake_description),
            self.intake_guard,
            on_listening=lambda port: setattr(self, "intake_address", port.getHost()),
        )
        self.intake_listener.setServiceParent(self)
        if not admin_on_intake:
            admin_site = make_admin_site(
                self.registry,
                self.tokens.ready,
                lambda: self.draining,
                self.stats,
                extra=admin_routes,
            )
            admin_site.timeOut = self.config.intake.idle_timeout
            self.admin_listener = ListenerService(
                "admin listener",
                self.admin_description,
                serverFromString(self.reactor, self.admin_description),
                admin_site,
                on_listening=lambda port: setattr(self, "admin_address", port.getHost()),
            )
            self.admin_listener.setServiceParent(self)
        if self.config.audio_connector.enabled:
            self._make_audio_connector()

    def _make_audio_connector(self) -> None:
        """
        The Audio Connector listener: Genesys Cloud's Call Audio Connector
        action connects here, and each call plays the same menus.
        """
        from ivrproto.audioconnector.auth import Authenticator, AuthSettings
        from ivrproto.audioconnector.server import AudioConnectorFactory
        from ivrproto.audioconnector.session import SessionSettings

        ac = self.config.audio_connector
        assert ac.api_key is not None  # check_audio_connector
        prompts = self.prompts
        authenticator = Authenticator(
            self.reactor, {ac.api_key: ac.client_secret}, AuthSettings(**dict(ac.auth))
        )
        self.audio_connector = AudioConnectorFactory(
            self.reactor,
            authenticator,
            {ac.path: self._new_audio_connector_call},
            prompts,
            SessionSettings(**dict(ac.session)),
            max_message_size=ac.max_message_size,
        )
        self.audio_connector_listener = ListenerService(
            "Audio Connector",
            ac.listen,
            serverFromString(self.reactor, ac.listen),
            self.audio_connector,
            on_listening=lambda port: setattr(self, "audio_connector_address", port.getHost()),
        )
        self.audio_connector_listener.setServiceParent(self)

    def _new_audio_connector_call(self, call: Any) -> Any:
        """
        The call logic of one Audio Connector call: the menus' state machine,
        joined to the session by a ``SessionBridge``.  The profile key is
        the configured input variable, else the caller's ani as E.164; the
        lookup is the intake's (its budget, cache and fallbacks).
        """
        from ivrproto.audioconnector.adapter import OutputNames, SessionBridge, ani_to_e164
        from ivrproto.session.machine import new_session

        ac = self.config.audio_connector
        info = call.info
        key: Optional[str] = None
        if ac.profile_key:
            value = info.input_variables.get(ac.profile_key)
            if isinstance(value, str) and value.strip():
                key = value.strip()
        if key is None:
            key = ani_to_e164(info.ani or "")
        self.audio_connector_calls += 1
        names = OutputNames(**{name: (value or None) for name, value in ac.outputs})
        book, timing = self.config.menu, self.config.timing
        lookup = self.lookup
        assert lookup is not None
        holder: dict[str, Any] = {}

        def lookup_profile() -> None:
            session = holder["session"]
            if key is None:
                # Nothing to look up by: the default menu, at once.
                session.profile_resolved(None, "not-found")
                return

            def known(result: Any) -> None:
                session.profile_resolved(result.attributes, result.outcome)

            def failed(failure: Failure) -> None:
                # The lookup layer answers every lookup; this is a bug.
                self.log.failure("Audio Connector profile lookup broke; default menu", failure)
                session.profile_resolved(None, "failed")

            lookup.lookup(key, timing.profile_budget).addCallbacks(known, failed)

        def finished(outcome: Any) -> None:
            from ivrproto.audioconnector.adapter import outcome_value

            value = outcome_value(outcome)
            counts = self.audio_connector_outcomes
            counts[value] = counts.get(value, 0) + 1
            # The session id is Genesys's, not the caller's: it may be logged.
            self.log.info(
                "{session_id}: Audio Connector call ended: {outcome} ({reason}); target "
                "{target}",
                session_id=info.session_id,
                outcome=value,
                reason=outcome.reason,
                target=outcome.target or "none",
            )

        bridge = SessionBridge(call, lookup_profile, names=names, finished=finished)
        # The same opening hours (and emergency closure) as an intake call.
        hours = None if self.registry is None else self.registry.hours_now()
        session, core = new_session(
            f"ac-{info.session_id}", book, timing, self.reactor, bridge, hours
        )
        holder["session"] = session
        bridge.attach(session, lambda: core.collected)
        return bridge

    def _place_scripted_calls(self) -> Deferred[Any]:
        from ivrproto.emulator import place_calls

        started = self.reactor.seconds()
        calls = self.scenario.calls
        self.log.info("placing {n} scripted calls", n=len(calls))
        d = place_calls(
            self.reactor,
            self.platform,
            calls,
            self.intake_url + "/v1/calls",
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

    #: Calls in progress below which the intake never sheds: a late reactor
    #: with few calls is a stall, not overload.
    shed_floor = 8

    def overloaded(self) -> bool:
        """
        Whether new calls should be refused to protect those in progress.
        """
        return (
            self.loop_lag is not None
            and self.loop_lag.overloaded
            and self.registry is not None
            and len(self.registry.active) >= self.shed_floor
        )

    def stats(self) -> dict[str, Any]:
        """
        The service's counters (``GET /v1/stats``): calls by outcome, intake
        refusals by reason, token refreshes, profile lookups by outcome,
        cache and breaker.
        """
        assert self.registry is not None and self.tokens is not None
        assert self.lookup is not None and self.source is not None
        refused = dict.fromkeys(REFUSAL_REASONS, 0)
        guard = self.intake_guard
        if guard is not None:
            site_refusals: Optional[IntakeRefusals] = getattr(
                guard.wrappedFactory, "refusals", None
            )
            if site_refusals is not None:
                refused.update(site_refusals.counts)
            # Connections the guard answered itself, before any request.
            refused["capacity"] += guard.refused
            refused["timeout"] += guard.timed_out
        ac: dict[str, Any] = {}
        if self.audio_connector is not None:
            ac = {
                "audio_connector": {
                    "calls": self.audio_connector_calls,
                    "active": len(self.audio_connector.sessions),
                    "refused": self.audio_connector.refusals,
                    "outcomes": dict(self.audio_connector_outcomes),
                    "prompts_cached": self.audio_connector.prompts.cached,
                }
            }
        return {
            **ac,
            "draining": self.draining,
            "loop_lag": round(self.loop_lag.lag, 4) if self.loop_lag is not None else 0.0,
            "calls": {"active": len(self.registry.active), **self.registry.totals},
            "intake": {"refused": refused},
            "fallbacks": dict(self.registry.fallbacks),
            "hours": dict(self.registry.hours_served),
            "closes": dict(self.registry.closes),
            "tokens": attrs.asdict(self.tokens.stats),
            "profiles": {
                "source": self.config.profiles.source,
                "requests": attrs.asdict(self.source.stats),
                "lookups": attrs.asdict(self.lookup.stats),
                "cache_entries": self.lookup.cache_size,
                "cache_bytes": self.lookup.cache_bytes,
                "breaker": self.lookup.breaker_state,
            },
        }

    def stop(self) -> Deferred[None]:
        """
        Stop listening (every child service: the listeners, the loop-lag
        monitor, the embedded platform), then the clients together: the
        profile lookup and source, the token source and the connection pool.
        """
        if self._stopped:
            return succeed(None)
        self._stopped = True
        waits: list[Deferred[Any]] = []

        def step(what: str, action: Any) -> None:
            # Each part stops on its own: one that breaks is logged and
            # keeps no other from stopping.
            try:
                result = action()
            except Exception:
                self.log.failure("stopping {what} broke", what=what)
                return
            if isinstance(result, Deferred):
                waits.append(result)

        waits.append(
            maybeDeferred(MultiService.stopService, self).addErrback(
                lambda f: self.log.failure("stopping the listeners broke", f)
            )
        )
        self.platform = None
        for what, part in (
            ("the loop-lag monitor", self.loop_lag),  # (stopping twice does nothing)
            ("the profile lookup", self.lookup),
            ("the profile source", self.source),
            ("the token source", self.tokens),
        ):
            if part is not None:
                step(what, part.stop)
        if self.registry is not None:
            step("the closure switch", self.registry.stop_watching_closure)
        if self.pool is not None:
            pool, self.pool = self.pool, None
            step("the HTTP connection pool", pool.closeCachedConnections)
        return DeferredList(waits, consumeErrors=True).addCallback(lambda _: None)
