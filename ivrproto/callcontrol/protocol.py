"""
The Call Control WebSocket client: an Autobahn protocol that performs the
handshake of contract section 3 and turns frames into calls on a
:class:`CallControlListener`.  It holds no call logic: that lives in the
session.  Embed it in your own Twisted code with
:func:`~ivrproto.callcontrol.connect.connect_call_control` (its factory and
the choice of endpoint are in :mod:`ivrproto.callcontrol.connect`).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, Optional, Protocol as TypingProtocol

from autobahn.twisted.websocket import WebSocketClientProtocol
from twisted.internet.interfaces import IDelayedCall, IPushProducer
from twisted.logger import Logger
from zope.interface import implementer

from ivrproto._autobahn import QuietAutobahnLog, cancel_close_handshake_timer
from ivrproto.errors import MalformedFrame
from ivrproto.messages import (
    Command,
    Connect,
    Connected,
    DtmfReceived,
    HangupReceived,
    Ignored,
    PlatformError,
    encode,
    parse_event,
)

if TYPE_CHECKING:
    from ivrproto.callcontrol.connect import CallControlFactory

#: Close codes of the contract.
CLOSE_NORMAL = 1000
CLOSE_POLICY = 1008
CLOSE_INTERNAL_ERROR = 1011

_UPGRADE_STATUS = re.compile(r"upgrade failed \[(\d{3})\]")

#: Seconds a closed or closing connection may take to go away before it is
#: dropped (the default of ``[timing] close_timeout``).
CLOSE_GRACE = 3.0

#: The largest frame or message accepted by default (``[timing]
#: max_frame_size``).  A larger one fails the connection (TCP is dropped):
#: control frames are a few hundred bytes, ``media`` frames within the bound
#: are ignored, and the bound keeps one connection from holding the reactor
#: while megabytes are buffered and parsed.  See docs/call-control.md.
MAX_MESSAGE_SIZE = 1024 * 1024

#: Bytes that may wait for a platform that stopped reading, by default
#: (``[timing] max_write_buffer``), beyond the transport's own buffer.
MAX_WRITE_BUFFER = 1024 * 1024


@implementer(IPushProducer)
class _WriteWatch:
    """
    Registered with the transport as a streaming producer: the transport
    pauses it when its write buffer is full (the platform stopped reading),
    and resumes it once the buffer is flushed.
    """

    def __init__(self) -> None:
        self.paused = False
        self.unsent = 0

    def pauseProducing(self) -> None:
        # Twisted calls this on every write while its buffer is full: only
        # the first call starts the count.
        if not self.paused:
            self.paused = True
            self.unsent = 0

    def resumeProducing(self) -> None:
        self.paused = False
        self.unsent = 0

    def stopProducing(self) -> None:
        self.paused = True


def _failure_reason(not_clean: Optional[str], max_size: int) -> str:
    """
    Why the service failed a connection, from Autobahn's account of it.
    """
    text = not_clean or ""
    if "UTF-8" in text or "UTF8" in text:
        return "the platform sent invalid UTF-8; the service closed the connection"
    if "exceed" in text:
        return f"the platform sent a frame over {max_size} bytes; the service closed the connection"
    return "the platform broke the WebSocket protocol; the service closed the connection"


class CallControlListener(TypingProtocol):
    """
    What a :class:`CallControlProtocol` reports, as the frames arrive.
    Exceptions raised by these methods are logged by the protocol and never
    drop the connection.
    """

    def connected(self, protocol: "CallControlProtocol") -> None:
        "The platform answered ``connected``: the call is live."

    def handshake_failed(self, reason: str, status: Optional[int]) -> None:
        "The upgrade was refused, or ``error`` or a close came before ``connected``."

    def digit_received(self, digit: str) -> None:
        "A valid ``dtmf`` event."

    def hangup_received(self, reason: Optional[str]) -> None:
        "A ``hangup`` event."

    def platform_error(self, message: str, code: Optional[str]) -> None:
        "An ``error`` event after ``connected``."

    def connection_closed(self, code: Optional[int], reason: str) -> None:
        "The connection closed, or began to close, after ``connected`` (reported once)."


class CallControlProtocol(WebSocketClientProtocol):
    """
    One Call Control connection: one call.

    The factory that builds it gives it ``call_control_id``, ``listener``
    and ``capabilities`` (one shared
    :class:`~ivrproto.callcontrol.connect.CallControlFactory` serves many
    calls, so these live on the protocol, not on the factory), and copies
    Autobahn's protocol options onto it.
    """

    # Autobahn's own logging (``log``) is replaced: see ``_autobahn``.
    log = QuietAutobahnLog(Logger(namespace="ivrproto.callcontrol.protocol.autobahn"))
    _log = Logger()
    factory: "CallControlFactory"
    call_control_id: str
    listener: CallControlListener
    capabilities: tuple[str, ...]

    #: Autobahn copies every option named here from the factory in
    #: ``_connectionMade`` and ``pformat``s the list for a debug line nobody
    #: reads (about 80 µs a connection).  The factory's ``buildProtocol``
    #: copies the options (``WebSocketClientProtocol.CONFIG_ATTRS``) instead,
    #: so Autobahn finds nothing to copy or format.
    CONFIG_ATTRS: list[str] = []

    def __init__(self) -> None:
        super().__init__()
        self.is_connected = False
        self._failed_upgrade: Optional[str] = None
        self._reported = False
        self._drop_timer: Optional[IDelayedCall] = None
        self._close_reported = False
        self._gone_reason: Optional[str] = None
        self._writes = _WriteWatch()
        self.ignored_frames = 0

    # -- Autobahn callbacks ----------------------------------------------------

    def connectionMade(self) -> None:
        super().connectionMade()
        # Autobahn unregisters it in dropConnection.
        self.registerProducer(self._writes, True)

    def sendData(self, data: bytes, sync: bool = False, chopsize: Optional[int] = None) -> None:
        writes = self._writes
        if writes.paused:
            writes.unsent += len(data)
            if writes.unsent > self.factory.max_write_buffer:
                if self._gone_reason is None:
                    self._gone_reason = (
                        "the platform stopped reading; the service dropped the connection"
                    )
                    self._log.warn(
                        "{call_control_id}: dropping the connection: over {limit} bytes "
                        "wait for a platform that stopped reading",
                        call_control_id=self.call_control_id,
                        limit=self.factory.max_write_buffer,
                    )
                    self._report_close(None, self._gone_reason)
                    self.dropConnection(abort=True)
                return
        super().sendData(data, sync, chopsize)

    def processHandshake(self) -> None:
        # Autobahn decodes the upgrade answer as UTF-8 for a debug line and
        # lets the UnicodeDecodeError escape: refuse such an answer first.
        end = self.data.find(b"\r\n\r\n")
        if end >= 0:
            try:
                self.data[: end + 4].decode("utf-8")
            except UnicodeDecodeError:
                self.failHandshake("upgrade failed: the answer is not valid UTF-8")
                return
        super().processHandshake()

    def failHandshake(self, reason: str) -> None:
        self._failed_upgrade = reason
        super().failHandshake(reason)

    def onOpen(self) -> None:
        self.sendMessage(encode(Connect(self.call_control_id, self.capabilities)), isBinary=False)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        if isBinary:
            self.ignored_frames += 1
            return
        try:
            event = parse_event(payload)
        except MalformedFrame as e:
            self.ignored_frames += 1
            self.factory.bad_input.warn(
                "malformed-frame",
                "{call_control_id}: ignored a frame: {reason}",
                call_control_id=self.call_control_id,
                reason=e.reason,
            )
            return
        try:
            self._dispatch(event)
        except Exception:
            self._log.failure(
                "{call_control_id}: error while handling {event}",
                call_control_id=self.call_control_id,
                event=type(event).__name__,
            )

    def onCloseFrame(self, code: int, reasonRaw: bytes) -> Optional[bool]:
        # The platform's close frame: the connection can carry nothing more.
        # Tell the call now (not when TCP goes, which a platform may delay
        # for ever), and drop TCP if the platform keeps it open.
        result = super().onCloseFrame(code, reasonRaw)
        self._drop_later()
        self._report_close(code, describe_close(code, None))
        return result

    def onClose(self, wasClean: bool, code: Optional[int], reason: Optional[str]) -> None:
        cancel_close_handshake_timer(self)
        if self._drop_timer is not None:
            if self._drop_timer.active():
                self._drop_timer.cancel()
            self._drop_timer = None
        why = self._gone_reason
        if why is None and self.failedByMe and self.droppedByMe:
            why = _failure_reason(self.wasNotCleanReason, self.factory.max_frame_size)
        self._report_close(code, why or describe_close(code, reason))

    def _report_close(self, code: Optional[int], why: str) -> None:
        """
        Tell the listener, once, that the connection is no longer usable.
        """
        if self._close_reported:
            return
        self._close_reported = True
        listener = self.listener
        try:
            if self.is_connected:
                listener.connection_closed(code, why)
            elif not self._reported:
                self._reported = True
                status = None
                if self._failed_upgrade is not None:
                    match = _UPGRADE_STATUS.search(self._failed_upgrade)
                    status = int(match.group(1)) if match else None
                    why = f"upgrade refused (HTTP {status})" if status else "upgrade failed"
                listener.handshake_failed(why, status)
        except Exception:
            self._log.failure(
                "{call_control_id}: error while handling the close",
                call_control_id=self.call_control_id,
            )

    # -- ours ------------------------------------------------------------------

    def _dispatch(self, event: object) -> None:
        listener = self.listener
        if not self.is_connected:
            if isinstance(event, Connected):
                if event.call_control_id not in (None, self.call_control_id):
                    self._reported = True
                    self.close()
                    listener.handshake_failed("connected for another call", None)
                    return
                self.is_connected = True
                listener.connected(self)
            elif isinstance(event, PlatformError):
                self._reported = True
                self.close()
                listener.handshake_failed(f"refused: {event.message}", None)
            else:
                self.ignored_frames += 1
            return
        if isinstance(event, DtmfReceived):
            listener.digit_received(event.digit)
        elif isinstance(event, HangupReceived):
            listener.hangup_received(event.reason)
        elif isinstance(event, PlatformError):
            listener.platform_error(event.message, event.code)
        elif isinstance(event, Ignored):
            self.ignored_frames += 1
        # A second ``connected`` carries nothing new: ignored.

    def send_command(self, command: Command) -> bool:
        """
        Send one command as a text frame.

        :return: ``False``, without sending, once the connection is closing
            or closed
        """
        if self.state != self.STATE_OPEN or self._gone_reason is not None:
            return False
        self.sendMessage(encode(command), isBinary=False)
        return True

    def close(self) -> None:
        """
        Close normally; drop the connection if the platform has not closed
        its end within the factory's ``close_timeout`` seconds.
        """
        if self.state == self.STATE_OPEN:
            self.sendClose(CLOSE_NORMAL)
        self._drop_later()

    def _drop_later(self) -> None:
        if self._drop_timer is None and self.state != self.STATE_CLOSED:
            self._drop_timer = self.factory.reactor.callLater(
                self.factory.close_timeout, self.dropConnection, abort=True
            )

    def abort(self) -> None:
        """
        Drop the connection at once.
        """
        self._reported = True
        self.dropConnection(abort=True)


def describe_close(code: Optional[int], reason: Optional[str]) -> str:
    """
    A short description of a close, for outcomes and logs.
    """
    if code == CLOSE_INTERNAL_ERROR:
        return "platform internal error (1011)"
    if code == CLOSE_POLICY:
        return "handshake refused by policy (1008)"
    if code == CLOSE_NORMAL:
        return "closed normally (1000)"
    if code is None or code == 1006:
        return "connection lost"
    return f"closed with code {code}"
