"""
The admin listener's site: what only operators should read (``/v1/stats``,
the calls in progress, ``/metrics``) and the emergency closure's switch
(``/v1/closure``), served apart from a public intake.
"""

from __future__ import annotations

import hmac
from typing import Any, Callable, Mapping, Optional

from twisted.internet.interfaces import IReactorTime
from twisted.web.resource import Resource
from twisted.logger import Logger
from twisted.web.server import Request, Site

from ivrproto.config.values import ADMIN_TOKEN_ENV
from ivrproto.intake._body import capped_request, json_answer, loads_body
from ivrproto.intake.resources import (
    CallResource,
    HealthResource,
    JSONResource,
    ReadyResource,
    StatsResource,
    _QuietSite,
)
from ivrproto.menu.closure import admin_by, admin_notice
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


class _ClosureResource(JSONResource):
    """
    ``/v1/closure``: ``GET`` the emergency closure's state; ``PUT`` switches
    the endpoint's closure on (a JSON object: ``by``, and optionally
    ``prompt``, ``target`` or ``hangup``, ``reason``), ``DELETE`` switches it
    off (``{"by": ...}``).  The write methods need ``Authorization: Bearer
    <token>``, the token from :data:`~ivrproto.config.values.ADMIN_TOKEN_ENV`
    (compared in constant time, never logged); without a token configured
    they are refused.
    """

    log = Logger()

    def __init__(self, registry: CallRegistry, token: Optional[str]) -> None:
        super().__init__()
        self.registry = registry
        self._token = None if token is None else token.encode("utf-8")

    def render_GET(self, request: Request) -> bytes:
        switch = self.registry.closure
        if switch is None:
            return json_answer(request, 200, {"state": "off", "configured": False})
        return json_answer(request, 200, dict(switch.state(), configured=True))

    def render_PUT(self, request: Request) -> bytes:
        return self._write(request, on=True)

    def render_DELETE(self, request: Request) -> bytes:
        return self._write(request, on=False)

    def _write(self, request: Request, on: bool) -> bytes:
        refused = self._refused(request)
        if refused is not None:
            return refused
        switch = self.registry.closure
        if switch is None:
            return json_answer(
                request, 409, {"error": "no [closure] in the configuration: add one to switch it here"}
            )
        book = self.registry.context.book
        try:
            data = loads_body(request.content.read() if request.content is not None else b"")
            if on:
                notice = admin_notice(data, switch.config, book.targets, book.prompts.has)
            else:
                by = admin_by(data)
        except ValueError as e:
            return json_answer(request, 400, {"error": str(e)})
        address = request.getClientAddress()
        peer = f"{getattr(address, 'host', '?')}:{getattr(address, 'port', '?')}"
        if on:
            switch.switch_on(notice, peer)
        else:
            switch.switch_off(by, peer)
        return json_answer(request, 200, dict(switch.state(), configured=True))

    def _refused(self, request: Request) -> Optional[bytes]:
        """The answer to a write without the right token, or ``None``."""
        if self._token is None:
            return json_answer(request, 403, {
                "error": f"changing the closure here is off: set {ADMIN_TOKEN_ENV} in the "
                "service's environment to a secret token and send it as "
                "'Authorization: Bearer <token>' (or use the [closure] flag_file)",
            })
        header = request.getHeader(b"authorization") or b""
        scheme, _, given = header.partition(b" ")
        if scheme.lower() != b"bearer" or not hmac.compare_digest(given.strip(), self._token):
            request.setHeader(b"www-authenticate", b'Bearer realm="ivrproto-admin"')
            return json_answer(request, 401, {"error": "a valid 'Authorization: Bearer' token is required"})
        return None


def make_admin_site(
    registry: CallRegistry,
    token_ready: Callable[[], bool],
    is_draining: Callable[[], bool],
    stats: Callable[[], dict[str, Any]],
    extra: Optional[Mapping[bytes, Resource]] = None,
    clock: Optional[IReactorTime] = None,
    token: Optional[str] = None,
) -> Site:
    """
    The admin listener's web site: what only operators should read, which
    a public intake does not serve: ``/v1/stats``, ``GET /v1/calls`` and
    ``GET /v1/calls/<id>``, and ``extra`` (``/metrics``); with
    ``/healthz`` and ``/readyz`` as on the intake.  It takes no requests
    with a body (``POST /v1/calls`` is a 405) but ``PUT`` and ``DELETE
    /v1/closure`` (see :class:`_ClosureResource`).

    :param clock: the site's time (default: the registry's reactor)
    :param token: the bearer token of the write methods, or ``None`` to
        refuse them
    """
    root = JSONResource()
    v1 = JSONResource()
    root.putChild(b"v1", v1)
    v1.putChild(b"calls", _AdminCallsResource(registry))
    v1.putChild(b"stats", StatsResource(stats))
    v1.putChild(b"closure", _ClosureResource(registry, token))
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
