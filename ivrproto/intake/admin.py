"""
The admin listener's site: what only operators should read (``/v1/stats``,
the calls in progress, ``/metrics``), served apart from a public intake.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Optional

from twisted.internet.interfaces import IReactorTime
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from ivrproto.intake._body import capped_request, json_answer
from ivrproto.intake.resources import (
    CallResource,
    HealthResource,
    JSONResource,
    ReadyResource,
    StatsResource,
    _QuietSite,
)
from ivrproto.session.registry import CallRegistry

__all__ = ["make_admin_site"]


class _AdminCallsResource(JSONResource):
    """
    ``GET /v1/calls`` (how many are active) and ``GET /v1/calls/<id>`` on
    the admin site, which takes no calls.
    """

    def __init__(self, registry: CallRegistry) -> None:
        super().__init__()
        self.registry = registry

    def getChild(self, path: bytes, request: Request) -> Resource:
        if path == b"":
            return self
        return CallResource(self.registry, path.decode("utf-8", "replace"))

    def render_GET(self, request: Request) -> bytes:
        return json_answer(request, 200, {"active": len(self.registry.active)})


def make_admin_site(
    registry: CallRegistry,
    token_ready: Callable[[], bool],
    is_draining: Callable[[], bool],
    stats: Callable[[], dict[str, Any]],
    extra: Optional[Mapping[bytes, Resource]] = None,
    clock: Optional[IReactorTime] = None,
) -> Site:
    """
    The admin listener's web site: what only operators should read, which
    a public intake does not serve: ``/v1/stats``, ``GET /v1/calls`` and
    ``GET /v1/calls/<id>``, and ``extra`` (``/metrics``); with
    ``/healthz`` and ``/readyz`` as on the intake.  It takes no requests
    with a body (``POST /v1/calls`` is a 405).

    :param clock: the site's time (default: the registry's reactor)
    """
    root = JSONResource()
    v1 = JSONResource()
    root.putChild(b"v1", v1)
    v1.putChild(b"calls", _AdminCallsResource(registry))
    v1.putChild(b"stats", StatsResource(stats))
    root.putChild(b"healthz", HealthResource())
    root.putChild(b"readyz", ReadyResource(token_ready, is_draining))
    for name, resource in (extra or {}).items():
        root.putChild(name, resource)
    site = _QuietSite(
        root,
        requestFactory=capped_request(4096),
        reactor=registry.context.reactor if clock is None else clock,
    )
    site.displayTracebacks = False
    site.noisy = False
    return site
