"""
The Call Control WebSocket server of the emulator (contract section 3).

The pieces, from the inside out:

- :func:`~ivrproto.emulator.script.parse_step` checks one caller script
  step (``"press:1"``).
- :class:`~ivrproto.emulator.calllog.CallLog` is what a test reads
  afterwards: every command the client sent, the prompts it played, the keys
  the caller pressed, how the call ended, and each way the client broke the
  contract.
- :class:`~ivrproto.emulator.scripted.ScriptedCall` is the per-call logic
  once ``connected`` has been sent: it checks commands and runs the caller
  script.
- :class:`CallControlServerProtocol` (this module) is the thin Autobahn
  shim: it checks the upgrade and the first frame, then forwards frames to
  the scripted call.  What it needs of the platform is the small
  :class:`CallGate` interface.

This module does not import ivrproto's client modules: it is an independent
implementation of the server side of the contract.
"""

from __future__ import annotations

import uuid
from typing import Any, Optional, Protocol

import orjson
from autobahn.twisted.websocket import (
    WebSocketServerFactory,
    WebSocketServerProtocol,
)
from autobahn.websocket.protocol import WebSocketProtocol
from autobahn.websocket.types import ConnectionDeny, ConnectionRequest
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from ivrproto._autobahn import QuietAutobahnLog, ReactorTimer, cancel_close_handshake_timer
from ivrproto.emulator.calllog import CallLog
from ivrproto.emulator.scripted import CLOSE_INTERNAL, ScriptedCall

__all__ = ["WS_SCOPES", "CallGate", "CallControlServerFactory", "CallControlServerProtocol"]

CAPABILITIES = frozenset({"play", "record", "dtmf", "transfer", "hangup"})

CLOSE_POLICY = 1008

NO_ACTIVE_CALL = "no active call with that id"

#: A client that opens the socket and never sends its first frame is closed
#: (1008) after this many seconds, so that it does not hold a slot for ever.
FIRST_FRAME_TIMEOUT = 30.0

#: The scopes a WebSocket upgrade's bearer token needs.
WS_SCOPES = ("callcontrol:inbound", "callcontrol:media")

_REFUSALS = {401: "Unauthorized", 403: "Forbidden", 429: "Too Many Requests"}


class CallGate(Protocol):
    """
    What the Call Control server needs from the platform behind it
    (:class:`~ivrproto.emulator.platform.Platform` is one).
    """

    #: seconds between a ``transfer`` command and the server's close
    close_after_transfer: float

    @property
    def clock(self) -> IReactorTime:
        """Schedules the first-frame timeout and the scripted calls' steps."""

    def authorize_upgrade(self, token: Optional[str]) -> Optional[int]:
        """
        Decide on one WebSocket upgrade: check its bearer token (for
        :data:`WS_SCOPES`), apply any injected refusal, and count it.

        :param token: the upgrade's bearer token, if it has one
        :return: ``None`` to accept, else the HTTP status to refuse with
        """

    def claim_call(self, call_id: str) -> Optional[CallLog]:
        """
        :return: the log of the expected call ``call_id`` when it is neither
            connected nor finished, else ``None``
        """

    def call_connected(self, log: CallLog) -> None:
        """
        The call's handshake was answered with ``connected``.
        """


def _bearer(headers: dict[str, str]) -> Optional[str]:
    value = headers.get("authorization", "")
    scheme, _, token = value.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


def _check_handshake(frame: object) -> Optional[str]:
    """
    :return: ``None`` when the first frame is acceptable, else why not
    """
    if not isinstance(frame, dict):
        return "first frame must be a JSON object"
    if not isinstance(frame.get("callControlId"), str) or not frame["callControlId"]:
        return "callControlId missing"
    capabilities = frame.get("capabilities")
    if not isinstance(capabilities, list) or not capabilities:
        return "capabilities must be a non-empty list"
    for capability in capabilities:
        if not isinstance(capability, str) or capability not in CAPABILITIES:
            return "unsupported capability"
    if frame.get("media") != "audio":
        return 'media must be "audio"'
    return None


class CallControlServerProtocol(WebSocketServerProtocol):
    """
    The server end of one Call Control WebSocket.

    It checks the upgrade's bearer token, then the client's first frame, and
    from ``connected`` on forwards every frame to a
    :class:`~ivrproto.emulator.scripted.ScriptedCall`.
    """

    log = QuietAutobahnLog(Logger(namespace="ivrproto.emulator.autobahn"))
    _log = Logger()

    #: Autobahn copies each of these options from the factory on every
    #: connection and formats the list with ``pprint`` for a debug line,
    #: whether or not anyone reads it (about 9% of the emulator's CPU at
    #: 300 calls/s).  None here: :meth:`CallControlServerFactory.buildProtocol`
    #: sets the same options on the protocol instead (Autobahn keeps
    #: options already set on a protocol as they are).  Never mutated.
    CONFIG_ATTRS: list[str] = []

    factory: CallControlServerFactory
    _record: Optional[CallLog] = None
    _session: Optional[ScriptedCall] = None
    _first_frame_timer: Optional[IDelayedCall] = None
    _handshake_seen = False
    _closed = False

    def onConnect(self, request: ConnectionRequest) -> None:
        status = self.factory.gate.authorize_upgrade(_bearer(request.headers))
        if status is not None:
            raise ConnectionDeny(status, _REFUSALS.get(status, "Refused"))
        return None

    def onOpen(self) -> None:
        self._first_frame_timer = self.factory.clock.callLater(
            FIRST_FRAME_TIMEOUT, self._close, CLOSE_POLICY, "no handshake frame"
        )

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        if isBinary:
            return
        session = self._session
        try:
            if session is not None:
                try:
                    command = orjson.loads(payload)
                except ValueError:
                    session.undecodable_frame()
                else:
                    session.command_received(command)
            elif not self._handshake_seen and not self._closed:
                self._handshake_seen = True
                self._handshake(payload)
        except Exception:
            self._log.failure("emulator failed on a Call Control frame")
            self._close(CLOSE_INTERNAL, "emulator error")

    def _handshake(self, payload: bytes) -> None:
        self._cancel_first_frame_timer()
        try:
            frame = orjson.loads(payload)
        except ValueError:
            frame = None
        problem = _check_handshake(frame)
        if problem is not None:
            self._close(CLOSE_POLICY, problem)
            return
        call_id = frame["callControlId"]
        gate = self.factory.gate
        record = gate.claim_call(call_id)
        if record is None:
            self.send_event({"event": "error", "message": NO_ACTIVE_CALL})
            self._close(CLOSE_POLICY, NO_ACTIVE_CALL)
            return
        self._record = record
        record.handshake_frame = frame
        if record.handshake == "error":
            record.outcome = "refused"
            record.close_code = CLOSE_POLICY
            self.send_event({"event": "error", "message": NO_ACTIVE_CALL})
            self._close(CLOSE_POLICY, NO_ACTIVE_CALL)
            return
        gate.call_connected(record)
        self._session = ScriptedCall(
            record, self, self.factory.clock, gate.close_after_transfer
        )
        self.send_event(
            {
                "event": "connected",
                "callControlId": call_id,
                "session": {"id": str(uuid.uuid4()), "media": "audio"},
            }
        )
        self._session.started()

    def _cancel_first_frame_timer(self) -> None:
        if self._first_frame_timer is not None:
            if self._first_frame_timer.active():
                self._first_frame_timer.cancel()
            self._first_frame_timer = None

    def dropConnection(self, abort: bool = False) -> None:
        # After a clean closing handshake Autobahn aborts the TCP connection,
        # which throws away our own close frame when it is still in the write
        # buffer (both ends closed at once, as the seed's client does after
        # a transfer).  Flush it instead; stop() still aborts.
        if abort and self.wasClean:
            abort = False
        super().dropConnection(abort)

    def onClose(self, wasClean: bool, code: Optional[int], reason: Optional[str]) -> None:
        self._closed = True
        cancel_close_handshake_timer(self)
        self._cancel_first_frame_timer()
        if self._session is not None:
            self._session.connection_closed(code)
        elif self._record is not None:  # refused handshake
            if self._record.close_code is None:
                self._record.close_code = code
            self._record.finish(self.factory.clock.seconds(), "refused")

    # Wire

    def send_event(self, event: dict[str, Any]) -> None:
        if self.state == WebSocketProtocol.STATE_OPEN:
            self.sendMessage(orjson.dumps(event), isBinary=False)

    def send_raw(self, payload: bytes, binary: bool) -> None:
        if self.state == WebSocketProtocol.STATE_OPEN:
            self.sendMessage(payload, isBinary=binary)

    def close(self, code: int, reason: str) -> None:
        self._close(code, reason)

    def _close(self, code: int, reason: str) -> None:
        # sendClose() refuses 1008 and 1011, which the contract uses.
        if self.state == WebSocketProtocol.STATE_OPEN:
            self.sendCloseFrame(code=code, reasonUtf8=reason.encode("utf-8")[:120])


class CallControlServerFactory(WebSocketServerFactory):
    """
    Builds :class:`CallControlServerProtocol` for one :class:`CallGate`,
    with every timer (Autobahn's own included) on ``clock``.

    :param gate: decides on upgrades and hands out the expected calls
    :param clock: the reactor's time
    """

    protocol = CallControlServerProtocol  # type: ignore[assignment]
    log = QuietAutobahnLog(Logger(namespace="ivrproto.emulator.autobahn"))

    def __init__(self, gate: CallGate, clock: IReactorTime) -> None:
        super().__init__(server="ivrproto-emulator", reactor=clock)
        # Autobahn's handshake and ping timers: on ``clock``, not batched on
        # the global reactor (see ``ivrproto._autobahn.ReactorTimer``).
        self._batched_timer = ReactorTimer(clock)
        self.gate = gate
        self.clock = clock
        self.setProtocolOptions(
            maxFramePayloadSize=64 * 1024,
            maxMessagePayloadSize=64 * 1024,
            openHandshakeTimeout=10,
            closeHandshakeTimeout=5,
            autoPingInterval=30,
            autoPingTimeout=15,
        )

    def buildProtocol(self, addr: Any) -> Any:
        """
        :return: a protocol with this factory's options set on it (what
            Autobahn would copy itself, see
            :attr:`CallControlServerProtocol.CONFIG_ATTRS`)
        """
        protocol = super().buildProtocol(addr)
        for name in _SERVER_OPTIONS:
            setattr(protocol, name, getattr(self, name))
        return protocol


#: Every option Autobahn's server protocol reads from its factory.
_SERVER_OPTIONS = tuple(WebSocketServerProtocol.CONFIG_ATTRS)
