"""
The parts of :class:`~ivrproto.service.IVRService`, made from a checked
configuration: the clients, the call registry, the loop-lag monitor and the
listeners (the intake behind its guard, the admin listener, the Audio
Connector), each listener a :class:`~ivrproto.listeners.ListenerService`
that binds in ``privilegedStartService``.  Nothing here listens, starts a
timer or reads the global reactor: the service adopts the parts as its
children and starts them.  Also here: the checks a start needs
(:func:`checked_config`) and the log observer offered to twistd
(:func:`offer_log_observer`).
"""

from __future__ import annotations

import os
from typing import Any, Callable, Optional

import attrs
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IAddress
from twisted.logger import ILogObserver
from twisted.python.components import Componentized
from twisted.web.resource import Resource

from ivrproto.audioconnector.calls import AudioConnectorCalls
from ivrproto.checks import check_admin
from ivrproto._types import IVRReactor
from ivrproto.clients.service import Clients, make_clients
from ivrproto.cluster.calls import SharedCalls
from ivrproto.cluster.state import SharedState
from ivrproto.config import (
    ADMIN_ON_INTAKE,
    Config,
    LoggingConfig,
    check_audio_connector,
    check_intake_protection,
)
from ivrproto.intake.guard import IntakeGuard
from ivrproto.intake.overload import LoopLag
from ivrproto.intake.admin import make_admin_site
from ivrproto.intake.resources import make_site
from ivrproto.intake.signing import SignatureCheck
from ivrproto.listeners import ListenerService
from ivrproto.metrics import Metrics, MetricsResource
from ivrproto.session.registry import CallRegistry
from ivrproto.session.runner import CallContext

__all__ = [
    "Parts", "checked_config", "make_parts", "offer_log_observer", "with_audio_connector",
]


def with_audio_connector(config: Config, listen: Optional[str]) -> Config:
    """
    The configuration with ``--audio-connector``: the Audio Connector on, on
    ``listen`` (unchanged without one).
    """
    if not listen:
        return config
    ac = attrs.evolve(config.audio_connector, enabled=True, listen=listen)
    return attrs.evolve(config, audio_connector=ac)


def checked_config(
    reactor: IVRReactor,
    config: Config,
    intake: Optional[str],
    admin: Optional[str],
    audio_connector: Optional[str],
) -> tuple[Config, str, str]:
    """
    The configuration with the command line's overrides, checked as a start
    needs it (the prompt files apart).

    :return: the configuration, the intake's and the admin listener's
        endpoint descriptions
    :raises ConfigError: naming the bad key
    """
    config = with_audio_connector(config, audio_connector)
    check_audio_connector(config)
    intake = intake or config.intake.listen
    check_intake_protection(config, intake)
    admin = admin or config.admin.listen
    check_admin(config, intake, admin, reactor)
    return config, intake, admin


def offer_log_observer(parent: Any, logging: LoggingConfig) -> None:
    """
    Offer twistd the application's log observer (its ``--logger`` still
    wins): under ``twistd ivr``, one writing the configured format to the
    file twistd would log to (standard output with -n, --logfile,
    twistd.log once daemonized); in a .tac file, JSON logs go to standard
    output.  Both leave out Twisted's plumbing lines.

    :param parent: the service's parent; only an application is offered one
    """
    if not isinstance(parent, Componentized):
        return
    from ivrproto.logs import file_observer, json_observer

    if logging.log_file is not None:
        parent.setComponent(ILogObserver, file_observer(logging.log_file(), logging.format, logging.level))
    elif logging.format == "json":
        parent.setComponent(ILogObserver, json_observer(level=logging.level))


@attrs.frozen
class Parts:
    """
    What the service is made of.

    :ivar listeners: every listener, in the order they bind
    :ivar addresses: where each listener listens (or last listened), by
        name, filled in as each binds
    :ivar admin_listener: ``None`` when the admin routes are on the intake
    :ivar audio_connector: ``None`` unless the Audio Connector is on
    :ivar shared: ``None`` unless ``[shared]`` names a Redis
    """

    clients: Clients
    metrics: Metrics
    registry: CallRegistry
    loop_lag: LoopLag
    intake_guard: IntakeGuard
    listeners: tuple[ListenerService, ...]
    admin_listener: Optional[ListenerService]
    addresses: dict[str, IAddress]
    audio_connector: Optional[AudioConnectorCalls]
    shared: Optional[SharedState] = None


@attrs.frozen
class _Hooks:
    """
    What the sites read from the service, at request time.
    """

    stats: Callable[[], dict[str, Any]]
    draining: Callable[[], bool]
    overloaded: Callable[[], bool]


def make_parts(
    reactor: IVRReactor,
    config: Config,
    intake: str,
    admin: str,
    stats: Callable[[], dict[str, Any]],
    draining: Callable[[], bool],
    overloaded: Callable[[], bool],
    current: Callable[[], Config],
    prompts: Any = None,
) -> Parts:
    """
    Every part, for a configuration that :func:`checked_config` passed.

    :param intake: the intake's endpoint description
    :param admin: the admin listener's (or ``"intake"``)
    :param stats: the service's ``GET /v1/stats``, which ``/metrics`` reads too
    :param current: the service's configuration as a reload leaves it
    :param prompts: the Audio Connector's prompt library, when it is on
    """
    clients = make_clients(reactor, config, config.platform)
    metrics = Metrics(stats)
    registry = _registry(reactor, config, clients, metrics)
    shared = None if not config.shared.enabled else SharedState(reactor, config.shared)
    shared_calls = None if shared is None else _share(config, shared, clients, registry)
    addresses: dict[str, IAddress] = {}

    def listen(name: str, description: str, factory: Any) -> ListenerService:
        return ListenerService(
            name,
            description,
            serverFromString(reactor, description),
            factory,
            on_listening=lambda port: addresses.__setitem__(name, port.getHost()),
        )

    hooks = _Hooks(stats, draining, overloaded)
    guard, sites = _sites(reactor, config, registry, clients, metrics, admin, hooks, shared_calls)
    intake_listener = listen("intake", intake, guard)
    admin_listener = None if sites is None else listen("admin listener", admin, sites)
    listeners = (intake_listener,) + (() if admin_listener is None else (admin_listener,))
    calls = None
    if config.audio_connector.enabled:
        calls = AudioConnectorCalls(reactor, current, prompts, clients.lookup, registry.hours_now)
        listeners += (listen("Audio Connector", config.audio_connector.listen, calls.factory),)
    return Parts(
        clients=clients,
        metrics=metrics,
        registry=registry,
        loop_lag=LoopLag(reactor, limit=config.intake.max_loop_lag),
        intake_guard=guard,
        listeners=listeners,
        admin_listener=admin_listener,
        addresses=addresses,
        audio_connector=calls,
        shared=shared,
    )


def _share(
    config: Config, shared: SharedState, clients: Clients, registry: CallRegistry
) -> SharedCalls:
    """
    Put the shared state behind the profile lookup, the token source and
    the call registry (docs/shared-state.md).

    :return: the claims and outcomes, for the intake
    """
    profiles, client_id = config.profiles, config.platform.client_id
    kind = "profile" if profiles.source == "profiles" else f"contact-{profiles.lookup_type}"
    # The source's answer format (a class attribute of each source): the
    # shared cache stores profiles in it.
    shape = clients.source._shape
    clients.lookup.use_shared(
        shared.profiles(client_id, clients.lookup.request_window, shape, kind)
    )
    clients.tokens.use_shared(shared.token(client_id))
    calls = shared.calls(config.intake.outcome_retention)
    registry.outcome_store = calls
    return calls


def _registry(
    reactor: IVRReactor, config: Config, clients: Clients, metrics: Metrics
) -> CallRegistry:
    """
    The calls in progress, and what every call shares.
    """
    logging = config.logging
    context = CallContext(
        metrics=metrics,
        reactor=reactor,
        tokens=clients.tokens,
        profiles=clients.lookup,
        book=config.menu,
        timing=config.timing,
        websocket_url=config.platform.websocket_url,
        log_key=logging.hash_key.encode("utf-8") if logging.hash_key else os.urandom(16),
    )
    return CallRegistry(context, config.intake.max_active_calls, config.intake.outcome_retention)


def _sites(
    reactor: IVRReactor,
    config: Config,
    registry: CallRegistry,
    clients: Clients,
    metrics: Metrics,
    admin: str,
    hooks: _Hooks,
    shared: Optional[SharedCalls] = None,
) -> tuple[IntakeGuard, Optional[Any]]:
    """
    The intake's site behind its guard, and the admin listener's site
    unless the admin routes are on the intake.
    """
    intake = config.intake
    admin_on_intake = admin == ADMIN_ON_INTAKE
    admin_routes: dict[bytes, Resource] = {b"metrics": MetricsResource(metrics)}
    site = make_site(
        registry,
        clients.tokens.ready,
        hooks.draining,
        intake.max_body,
        stats=hooks.stats if admin_on_intake else None,
        extra=admin_routes if admin_on_intake else None,
        show_calls=admin_on_intake,
        is_overloaded=hooks.overloaded,
        clock=reactor,
        signatures=(
            None
            if intake.secret is None
            else SignatureCheck(intake.secret.encode("utf-8"), intake.signature_tolerance)
        ),
        shared=shared,
    )
    site.timeOut = intake.idle_timeout
    guard = IntakeGuard(
        site, reactor, intake.max_connections, intake.request_deadline, intake.fd_reserve
    )
    if admin_on_intake:
        return guard, None
    admin_site = make_admin_site(
        registry, clients.tokens.ready, hooks.draining, hooks.stats, extra=admin_routes, clock=reactor,
        token=config.admin.token,
    )
    admin_site.timeOut = intake.idle_timeout
    return guard, admin_site
