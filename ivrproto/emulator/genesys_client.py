"""
The Genesys side's socket: an Autobahn client per call
(:class:`GenesysCallerFactory`), the upgrade's headers (signed when there is
a client secret, with the same code that verifies them), and
:func:`place_genesys_calls`, which places calls and collects their results.

::

    results = await place_genesys_calls(
        reactor, "ws://127.0.0.1:8081/ivr", "api-key",
        [GenesysCallSpec(input_variables={"externalId": "CRM-1"}, script=("menu", "press:1"))],
        client_secret=os.environ.get("IVR_AC_CLIENT_SECRET"),
    )
"""

from __future__ import annotations

import base64
import os
import uuid
from typing import Any, Callable, Dict, Iterable, List, Optional
from urllib.parse import urlsplit

from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.ssl import optionsForClientTLS
from twisted.logger import Logger
from twisted.python.failure import Failure

from ivrproto._autobahn import QuietAutobahnLog, ReactorTimer
from ivrproto.audioconnector.auth import sign_headers
from ivrproto.emulator.genesys import GenesysCallResult, GenesysCallSpec, GenesysSettings
from ivrproto.emulator.genesys_call import GenesysCall

__all__ = [
    "GenesysCallerFactory",
    "GenesysCallerProtocol",
    "connect_genesys_call",
    "genesys_headers",
    "log_genesys_result",
    "place_genesys_calls",
]

_log = Logger()
_quiet = QuietAutobahnLog(Logger(namespace="ivrproto.emulator.genesys"))


def new_nonce() -> str:
    "A fresh nonce as Genesys's client makes them: 18 random bytes, base64 (24 characters)."
    return base64.b64encode(os.urandom(18)).decode("ascii")


def genesys_headers(
    url: str,
    api_key: str,
    session_id: str,
    organization_id: str,
    correlation_id: str,
    client_secret: Optional[str] = None,
    now: float = 0.0,
    nonce: Optional[str] = None,
) -> Dict[str, str]:
    """
    The upgrade's headers: ``Audiohook-*`` and ``X-API-KEY``, plus the HTTP
    Message Signature when ``client_secret`` (base64) is given.  The
    signature covers the request target and ``Host`` as Autobahn sends them
    (``host:port``).

    :param now: the signature's ``created`` (the clock's seconds)
    """
    if not client_secret:
        return {
            "Audiohook-Organization-Id": organization_id,
            "Audiohook-Correlation-Id": correlation_id,
            "Audiohook-Session-Id": session_id,
            "X-API-KEY": api_key,
        }
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "wss" else 80)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    headers = sign_headers(
        api_key, client_secret, target, f"{parts.hostname}:{port}", organization_id,
        session_id, correlation_id, nonce or new_nonce(), int(now),
    )
    del headers["host"]  # Autobahn writes its own, the same
    return headers


class GenesysCallerProtocol(WebSocketClientProtocol):
    "The socket of one :class:`~ivrproto.emulator.genesys_call.GenesysCall`."

    log = _quiet
    factory: "GenesysCallerFactory"
    call: Optional[GenesysCall] = None

    def connectionMade(self) -> None:
        self.call = GenesysCall(
            self.factory.clock, self, self.factory.result, self.factory.settings,
            conversation_id=str(uuid.uuid4()), participant_id=str(uuid.uuid4()),
        )
        super().connectionMade()

    def onOpen(self) -> None:
        assert self.call is not None
        self.call.upgraded()

    def failHandshake(self, reason: str) -> None:
        if self.call is not None:
            self.call.refused(reason)
        super().failHandshake(reason)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        assert self.call is not None
        try:
            if isBinary:
                self.call.audio_received(payload)
            else:
                self.call.text_received(payload)
        except Exception:
            _log.failure("the Genesys-side emulator failed on a message")

    def onClose(self, wasClean: bool, code: Optional[int], reason: Optional[str]) -> None:
        if self.call is not None:
            self.call.connection_lost(code)

    # -- CallerWire ------------------------------------------------------------

    def send_text(self, payload: bytes) -> None:
        if self.state == self.STATE_OPEN:
            self.sendMessage(payload, isBinary=False)

    def send_audio(self, frame: bytes) -> None:
        if self.state == self.STATE_OPEN:
            self.sendMessage(frame, isBinary=True)

    def close(self) -> None:
        if self.state == self.STATE_OPEN:
            self.sendClose()

    def drop(self) -> None:
        self.dropConnection(abort=True)


class GenesysCallerFactory(WebSocketClientFactory):
    """
    Makes the one :class:`GenesysCallerProtocol` of one call; Autobahn's
    timers run on ``clock``.
    """

    protocol = GenesysCallerProtocol  # type: ignore[assignment]
    log = _quiet

    def __init__(
        self,
        clock: IReactorTime,
        url: str,
        headers: Dict[str, str],
        result: GenesysCallResult,
        settings: GenesysSettings,
    ) -> None:
        super().__init__(url, headers=headers, reactor=clock)
        self._batched_timer = ReactorTimer(clock)
        self.setProtocolOptions(
            openHandshakeTimeout=settings.open_timeout,
            closeHandshakeTimeout=2.0,
            autoPingInterval=0,
            maxMessagePayloadSize=0,
        )
        self.clock = clock
        self.result = result
        self.settings = settings


def connect_genesys_call(
    reactor: Any,
    url: str,
    api_key: str,
    spec: GenesysCallSpec,
    client_secret: Optional[str] = None,
    settings: GenesysSettings = GenesysSettings(),
    tls: Any = None,
) -> GenesysCallResult:
    """
    Place one call: connect to ``url`` (``ws://`` or ``wss://``), upgrade and
    run the session.

    :param reactor: connects (``IReactorTCP``) and times everything
    :param tls: the client TLS options for ``wss://`` (by default
        :func:`~twisted.internet.ssl.optionsForClientTLS` of the host)
    :return: the call's result; ``when_finished()`` fires once it is over
    """
    session_id = str(uuid.uuid4())
    result = GenesysCallResult(spec, session_id)
    headers = genesys_headers(
        url, api_key, session_id, settings.organization_id, str(uuid.uuid4()),
        client_secret, reactor.seconds(),
    )
    factory = GenesysCallerFactory(reactor, url, headers, result, settings)
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    endpoint: Any = HostnameEndpoint(reactor, host, parts.port or (443 if factory.isSecure else 80))
    if factory.isSecure:
        endpoint = wrapClientTLS(tls or optionsForClientTLS(host), endpoint)

    def failed(failure: Failure) -> None:
        if result.end is None:
            result.refusal = failure.getErrorMessage()
            result.finish(reactor.seconds(), "unreachable")

    endpoint.connect(factory).addErrback(failed)
    return result


def place_genesys_calls(
    reactor: Any,
    url: str,
    api_key: str,
    specs: Iterable[GenesysCallSpec],
    client_secret: Optional[str] = None,
    settings: GenesysSettings = GenesysSettings(),
    interval: float = 0.0,
    on_call: Optional[Callable[[GenesysCallResult], object]] = None,
    tls: Any = None,
) -> "Deferred[List[GenesysCallResult]]":
    """
    Place calls ``interval`` seconds apart (0: all at once) and collect their
    results, in order, once every one is over.  A call that cannot connect
    or is refused is a result too (``end`` ``"unreachable"`` or
    ``"refused"``); nothing is raised for it.

    :param on_call: called with each result as its call is placed
    :return: cancelling it stops placing further calls
    """
    pending = list(specs)
    results: List[GenesysCallResult] = []
    timers: List[IDelayedCall] = []

    def cancel(_: Any) -> None:
        for timer in timers:
            if timer.active():
                timer.cancel()

    done: Deferred[List[GenesysCallResult]] = Deferred(cancel)

    def place(index: int) -> None:
        while index < len(pending):
            result = connect_genesys_call(
                reactor, url, api_key, pending[index], client_secret, settings, tls
            )
            results.append(result)
            if on_call is not None:
                on_call(result)
            index += 1
            if interval > 0 and index < len(pending):
                timers.append(reactor.callLater(interval, place, index))
                return
        gatherResults([r.when_finished() for r in results]).addCallback(
            lambda _: done.callback(results) if not done.called else None
        )

    if pending:
        place(0)
    else:
        done.callback(results)
    return done


def log_genesys_result(log: Logger, result: GenesysCallResult) -> GenesysCallResult:
    """
    Log one ended Genesys-side call: its name, how it ended, ``ivr_target``
    and ``ivr_outcome``, and its violations (never the ani).

    :return: ``result``
    """
    outputs = result.output_variables or {}
    duration = (
        "-" if result.opened_at is None or result.ended_at is None
        else f"{result.ended_at - result.opened_at:.3f}s"
    )
    log.info(
        "Genesys call {name}: {end}, ivr_target {target}, ivr_outcome {outcome}, "
        "{violations} violations, {unmet} unmet expectations{detail}, duration {duration}",
        name=result.spec.name or result.session_id,
        end=result.end,
        target=outputs.get("ivr_target", "-"),
        outcome=outputs.get("ivr_outcome", "-"),
        violations=len(result.violations),
        unmet=len(result.unmet),
        detail="".join(f"; {v}" for v in result.violations + result.unmet),
        duration=duration,
    )
    return result
