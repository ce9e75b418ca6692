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
from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList, inlineCallbacks, succeed
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IListeningPort
from twisted.logger import ILogObserver, Logger
from twisted.python.components import Componentized
from twisted.web.client import Agent, HTTPConnectionPool

from .calls import CallContext, CallRegistry
from .config import Config, check_intake_protection, load_config
from .connlimit import IntakeGuard
from .signing import SignatureCheck
from .errors import ConfigError
from ._retry import RequestWindow, RetryBudget
from .intake import IntakeRefusals, make_site
from .lookup import ProfileLookup
from .metrics import REFUSAL_REASONS, Metrics, MetricsResource
from .overload import LoopLag
from .protocol import CLOSE_GRACE
from .oauth import TokenSource
from .profiles import ExternalContactsClient, ProfileClient, _ProfileSource


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
    from .emulator import parse_scenario

    table = dict(config.emulator)
    emulator = dict(table["emulator"])
    emulator.pop("exit_when_done", None)
    table["emulator"] = emulator
    return parse_scenario(table, config.base_dir, config.source)


class IVRService(Service):
    """
    The ivrproto service.

    :param reactor: the reactor (``IReactorTCP``, ``IReactorTime``...)
    :param config: the loaded configuration
    :param intake: a server endpoint description overriding the config's
    :param on_scenario_done: called when the embedded platform's scripted
        calls have all ended (``twistd`` stops the reactor here when the
        config says ``exit_when_done``)
    """

    log = Logger()

    def __init__(
        self,
        reactor: Any,
        config: Config,
        intake: Optional[str] = None,
        on_scenario_done: Optional[Any] = None,
    ) -> None:
        self.reactor = reactor
        self.config = config
        self.intake_description = intake or config.intake.listen
        check_intake_protection(config, self.intake_description)
        self.scenario = check_scenario(config)
        self.on_scenario_done = on_scenario_done
        self.platform: Any = None
        self.pool: Optional[HTTPConnectionPool] = None
        self.tokens: Optional[TokenSource] = None
        self.source: Optional[_ProfileSource] = None
        self.lookup: Optional[ProfileLookup] = None
        self.registry: Optional[CallRegistry] = None
        self.port: Optional[IListeningPort] = None
        self.intake_address: Any = None
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

    def setServiceParent(self, parent: Any) -> None:
        # With JSON logs asked for, offer twistd the JSON observer as the
        # application's log observer (twistd's --logger still wins).
        if self.config.logging.format == "json" and isinstance(parent, Componentized):
            from .logs import json_observer

            parent.setComponent(ILogObserver, json_observer())
        super().setServiceParent(parent)

    def startService(self) -> None:
        super().startService()
        self._started = self.start()

        def failed(failure: Any) -> None:
            self.log.failure("ivrproto could not start", failure)
            if self.reactor.running:
                self.reactor.stop()

        self._started.addCallback(lambda _: freeze_startup_objects())
        self._started.addErrback(failed)

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
        needs_restart = [
            name
            for name in ("platform", "intake", "profiles")
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
        super().stopService()
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

    @inlineCallbacks
    def start(self) -> Any:
        """
        Start everything; fires once the intake listens.
        """
        platform_config = self.config.platform
        if self.scenario is not None:
            from .emulator import Platform

            scenario = self.scenario
            self.platform = Platform(
                self.reactor,
                clients={platform_config.client_id: platform_config.client_secret},
                profiles=scenario.profiles,
                token_ttl=scenario.token_ttl,
                close_after_transfer=scenario.close_after_transfer,
            )
            yield self.platform.listen(scenario.listen)
            platform_config = attrs.evolve(
                platform_config, api_url=self.platform.base_url, login_url=self.platform.base_url
            )
            self.log.info(
                "embedded platform emulator listening on {url}", url=self.platform.base_url
            )

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
        site = make_site(
            self.registry,
            self.tokens.ready,
            lambda: self.draining,
            self.config.intake.max_body,
            stats=self.stats,
            extra={b"metrics": MetricsResource(self.metrics)},
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
        self.loop_lag.start()
        site.timeOut = self.config.intake.idle_timeout
        intake = self.config.intake
        self.intake_guard = IntakeGuard(
            site, self.reactor, intake.max_connections, intake.request_deadline, intake.fd_reserve
        )
        endpoint = serverFromString(self.reactor, self.intake_description)
        self.port = yield endpoint.listen(self.intake_guard)
        self.intake_address = self.port.getHost()
        self.log.info("ivrproto intake listening on {url}", url=self.intake_url)
        if self.scenario is not None:
            self.scenario_done = self._place_scripted_calls()

    def _place_scripted_calls(self) -> Deferred[Any]:
        from .emulator import place_calls

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
        return {
            "draining": self.draining,
            "loop_lag": round(self.loop_lag.lag, 4) if self.loop_lag is not None else 0.0,
            "calls": {"active": len(self.registry.active), **self.registry.totals},
            "intake": {"refused": refused},
            "fallbacks": dict(self.registry.fallbacks),
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
        Stop listening, end the embedded platform, close idle connections.
        """
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

        if self.port is not None:
            port, self.port = self.port, None
            waits.append(succeed(None).addCallback(lambda _: port.stopListening()))
        if self.platform is not None:
            platform, self.platform = self.platform, None
            step("the embedded platform", platform.stop)
        for what, part in (
            ("the loop-lag monitor", self.loop_lag),
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
