"""
The floor of the stack: the least code that carries one seed call with the
libraries the design fixes (twisted.web for the intake, treq for the token
and the profile, an Autobahn ``WebSocketClientProtocol`` for Call Control),
and nothing of ivrproto.

``python benchmarks/run.py rate --service floor ...`` runs this in place of
``twistd ivr``, against the same emulator and load generator, so its CPU per
call is measured exactly as the service's is.  What it leaves out: every
check, timer, retry, fallback, metric and log line; a state machine; the
cache.  It does keep what any client of the contract must do: parse the
intake JSON, fetch and parse the profile (keep-alive pool), open the
WebSocket with the bearer token, send the connect frame, build the menu
from the profile, send the prompts, answer the key with the confirmation,
transfer after ``confirm_delay``, close.  Whatever this costs per call, the
real service cannot cost less on the same libraries: it is the floor that
the 500 calls/s target is compared with.

Usage (run.py does this): ``python benchmarks/floor.py PORT`` with
``GENESYS_BASE_URL``, ``CLIENT_ID`` and ``CLIENT_SECRET`` in the
environment.  Serves ``POST /v1/calls``, ``GET /readyz`` and the parts of
``GET /v1/stats`` that run.py reads.
"""

from __future__ import annotations

import gc
import os
import resource
import signal
import sys
from typing import Any, Optional
from urllib.parse import quote, urlsplit

import orjson
import treq
from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from twisted.internet import reactor
from twisted.web import resource as web_resource
from twisted.web import server
from twisted.web.client import Agent, HTTPConnectionPool

BASE = os.environ["GENESYS_BASE_URL"].rstrip("/")
AUDIO = "https://example.com/ivr/audio/"
CONFIRM_DELAY = 0.05
PROFILE_OPTIONS = (
    ("1", "premium_priority.mp3", "transfer_premium"),
    ("2", "ticket_status.mp3", "play_ticket_info"),
    ("0", "general_operator.mp3", "transfer_operator"),
)
DEFAULT_OPTIONS = (
    ("1", "general_welcome.mp3", "transfer_sales"),
    ("2", "general_support.mp3", "transfer_support"),
    ("0", "general_operator.mp3", "transfer_operator"),
)
STATS = {"calls": {"started": 0, "ended": 0}}

pool = HTTPConnectionPool(reactor, persistent=True)
pool.maxPersistentPerHost = 32
http = treq.client.HTTPClient(Agent(reactor, pool=pool))
token: list[str] = []


def menu_for(attributes: Optional[dict[str, Any]]) -> tuple[tuple[str, str, str], ...]:
    if attributes is None:
        return DEFAULT_OPTIONS
    options = []
    if attributes.get("membership_level") == "premium":
        options.append(PROFILE_OPTIONS[0])
    tickets = attributes.get("open_tickets")
    if isinstance(tickets, (int, float)) and not isinstance(tickets, bool) and tickets > 0:
        options.append(PROFILE_OPTIONS[1])
    options.append(PROFILE_OPTIONS[2])
    return tuple(options)


class Call:
    def __init__(self, call_control_id: str, external_id: str) -> None:
        self.id = call_control_id
        self.options: Optional[tuple[tuple[str, str, str], ...]] = None
        self.proto: Optional[CallProtocol] = None
        self.connected = False
        self.chosen = False
        url = f"{BASE}/api/v2/profiles/external/{quote(external_id, safe='')}"
        d = http.get(url, headers={"Authorization": f"Bearer {token[0]}", "Accept": "application/json"})
        d.addCallback(self.got_response)
        d.addErrback(lambda f: self.got_profile(None))
        factory = WebSocketClientFactory(
            BASE.replace("http", "ws", 1) + "/api/v2/callcontrol/websocket",
            headers={"Authorization": f"Bearer {token[0]}"},
        )
        factory.protocol = CallProtocol
        factory.call = self  # type: ignore[attr-defined]
        split = urlsplit(BASE)
        reactor.connectTCP(split.hostname, split.port, factory)  # type: ignore[attr-defined]

    def got_response(self, response: Any) -> Any:
        if response.code != 200:
            return response.content().addCallback(lambda _: self.got_profile(None))
        return response.content().addCallback(
            lambda body: self.got_profile(orjson.loads(body).get("attributes"))
        )

    def got_profile(self, attributes: Optional[dict[str, Any]]) -> None:
        self.options = menu_for(attributes)
        self.maybe_play()

    def maybe_play(self) -> None:
        if self.options is None or not self.connected or self.proto is None:
            return
        keys = [k for k, _, _ in self.options]
        for _, prompt, _ in self.options:
            self.proto.send({
                "action": "play", "callControlId": self.id, "audio": AUDIO + prompt,
                "dtmf": {"enabled": True, "keys": keys},
            })

    def on_event(self, event: dict[str, Any]) -> None:
        kind = event.get("event")
        if kind == "connected":
            self.connected = True
            self.maybe_play()
        elif kind == "dtmf" and self.options is not None and not self.chosen:
            for key, _, action in self.options:
                if key == event.get("digit"):
                    self.chosen = True
                    assert self.proto is not None
                    self.proto.send({
                        "action": "play", "callControlId": self.id,
                        "audio": AUDIO + "selection_confirmed.mp3", "dtmf": {"enabled": False},
                    })
                    reactor.callLater(CONFIRM_DELAY, self.transfer, action)  # type: ignore[attr-defined]
                    return
            assert self.proto is not None
            self.proto.send({
                "action": "play", "callControlId": self.id,
                "audio": AUDIO + "invalid_selection.mp3",
                "dtmf": {"enabled": True, "keys": [k for k, _, _ in self.options]},
            })
        elif kind == "hangup" and self.proto is not None:
            self.proto.sendClose(1000)

    def transfer(self, action: str) -> None:
        if self.proto is not None:
            self.proto.send({
                "action": "transfer", "callControlId": self.id,
                "target": f"ext:{action}", "type": "number",
            })
            self.proto.sendClose(1000)


class CallProtocol(WebSocketClientProtocol):
    def onOpen(self) -> None:
        call = self.factory.call
        call.proto = self
        self.send({"callControlId": call.id, "media": "audio",
                   "capabilities": ["play", "dtmf", "transfer", "hangup"]})

    def send(self, obj: dict[str, Any]) -> None:
        self.sendMessage(orjson.dumps(obj))

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        if not isBinary:
            self.factory.call.on_event(orjson.loads(payload))

    def onClose(self, wasClean: bool, code: Optional[int], reason: Optional[str]) -> None:
        STATS["calls"]["ended"] += 1
        self.factory.call.proto = None


class Calls(web_resource.Resource):
    isLeaf = True

    def render_POST(self, request: server.Request) -> bytes:
        body = orjson.loads(request.content.read())
        Call(body["callControlId"], body["externalId"])
        STATS["calls"]["started"] += 1
        request.setResponseCode(202)
        request.setHeader(b"content-type", b"application/json")
        return b'{"accepted":true}'


class Stats(web_resource.Resource):
    isLeaf = True

    def render_GET(self, request: server.Request) -> bytes:
        request.setHeader(b"content-type", b"application/json")
        return orjson.dumps({
            "calls": dict(STATS["calls"], active=STATS["calls"]["started"] - STATS["calls"]["ended"]),
            "profiles": {"lookups": {}, "cache_entries": 0, "breaker": "closed"},
            "tokens": {}, "fallbacks": {},
        })


class Ready(web_resource.Resource):
    isLeaf = True

    def render_GET(self, request: server.Request) -> bytes:
        if not token:
            request.setResponseCode(503)
        return b"{}"


def main() -> None:
    port = int(sys.argv[1])
    # run.py sends SIGUSR2 when the window starts (the GC and lag timers forget)
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)
    if os.environ.get("IVR_BENCH_GC_FILE"):
        import stallwatch  # next to this file

        stallwatch.watch(os.environ["IVR_BENCH_GC_FILE"], reactor)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    root = web_resource.Resource()
    v1 = web_resource.Resource()
    root.putChild(b"v1", v1)
    v1.putChild(b"calls", Calls())
    v1.putChild(b"stats", Stats())
    root.putChild(b"readyz", Ready())
    site = server.Site(root)
    site.log = lambda request: None  # type: ignore[method-assign]
    reactor.listenTCP(port, site, backlog=1024, interface="127.0.0.1")  # type: ignore[attr-defined]

    def got_token(body: Any) -> None:
        token.append(body["access_token"])
        gc.freeze()

    d = http.post(
        f"{BASE}/oauth/token",
        data={"grant_type": "client_credentials",
              "scope": "profile:read callcontrol:inbound callcontrol:media"},
        auth=(os.environ["CLIENT_ID"], os.environ["CLIENT_SECRET"]),
    )
    d.addCallback(treq.json_content).addCallback(got_token)
    d.addErrback(lambda f: (print(f, file=sys.stderr), reactor.stop()))  # type: ignore[attr-defined]
    reactor.run()  # type: ignore[attr-defined]


if __name__ == "__main__":
    main()
