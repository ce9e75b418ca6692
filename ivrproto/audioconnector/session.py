"""
One Audio Connector session, from the first text message to ``closed``: the
protocol's rules, the paced audio sender, and the seam to the call logic.

:class:`ConnectorSession` does no I/O of its own: it is given a clock and a
:class:`SessionTransport` (send a text frame, send a binary frame, drop the
socket), and is fed what arrives (:meth:`~ConnectorSession.text_received`,
:meth:`~ConnectorSession.audio_received`,
:meth:`~ConnectorSession.connection_lost`).  The Autobahn protocol in
:mod:`.server` is a thin shim around it.

The call logic (which prompt, what a key means) is not here: after ``open``
the session asks its ``new_listener`` for a :class:`ConnectorListener`, tells
it what happens, and takes commands through the :class:`ConnectorCall` it is
given (:meth:`~ConnectorSession.play`, :meth:`~ConnectorSession.stop_audio`,
:meth:`~ConnectorSession.disconnect`).
"""

from __future__ import annotations

import enum
from collections import Counter
from typing import (
    Any,
    Callable,
    Counter as CounterType,
    Mapping,
    Optional,
    Sequence,
)

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from ivrproto.logthrottle import LogThrottle
from ivrproto.audioconnector.auth import Accepted
from ivrproto.audioconnector.messages import (
    ClientError,
    Close,
    Discarded,
    Dtmf,
    Ignored,
    Invalid,
    MalformedMessage,
    Open,
    Paused,
    Ping,
    PlaybackCompleted,
    PlaybackStarted,
    Resumed,
    Update,
    parse_message,
)
from ivrproto.audioconnector.replies import (
    Closed,
    Disconnect,
    Event,
    MessageTooLarge,
    Opened,
    Pong,
    ServerMessage,
    barge_in,
    bot_turn_response,
    encode,
)
from ivrproto.audioconnector.playout import Playout
from ivrproto.audioconnector.prompts import PromptLibrary
from ivrproto.audioconnector.rules import answer_open, envelope_problem
from ivrproto.audioconnector.seam import (
    PROTOCOL_ERRORS,
    CallInfo,
    ConnectorCall,
    ConnectorListener,
    SessionSettings,
    SessionTransport,
)

class State(enum.Enum):
    OPENING = "opening"
    PROBE = "probe"
    ACTIVE = "active"
    DISCONNECTING = "disconnecting"
    CLOSED = "closed"
    GONE = "gone"


class ConnectorSession:
    """
    One session.

    :param clock: the time source of every timer and of the pacing
    :param transport: where frames go
    :param accepted: what the upgrade's authentication found
    :param connector: the request path (connector id)
    :param new_listener: makes the call logic for an opened (non-probe) call
    :param prompts: the prompts ``play`` takes names from
    :param bad_input: where lines about what the client sent wrong go
    """

    _log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        transport: SessionTransport,
        accepted: Accepted,
        connector: str,
        new_listener: Callable[[ConnectorCall], ConnectorListener],
        prompts: PromptLibrary,
        settings: SessionSettings = SessionSettings(),
        bad_input: Optional[LogThrottle] = None,
    ) -> None:
        self._clock = clock
        self._transport = transport
        self._accepted = accepted
        self._connector = connector
        self._new_listener = new_listener
        self._prompts = prompts
        self.settings = settings
        self._bad_input = bad_input or LogThrottle(clock, self._log)
        self.state = State.OPENING
        self.session_id: Optional[str] = accepted.session_id
        self._info: Optional[CallInfo] = None
        self._listener: Optional[ConnectorListener] = None
        self._language: Optional[str] = None
        # Sequence numbers: ours (the last sent) and the client's (the last
        # processed).
        self._seq = 0
        self._clientseq = 0
        #: The paced audio sender.
        self.playout = Playout(
            clock, transport.send_audio, settings,
            may_send=lambda: self.state is State.ACTIVE,
            played=self._prompts_played,
        )
        # The ending.
        self._pending: Optional[Disconnect] = None
        self._drop_timer: Optional[IDelayedCall] = clock.callLater(
            settings.open_timeout, self._drop, "no open in time"
        )
        self._lost_reported = False
        #: Why the session ended, once it has (for logs and metrics).
        self.end_reason: Optional[str] = None
        # Counts, for tests and metrics.
        self.audio_bytes_received = 0
        self.messages_ignored = 0
        self.rate_limit_pauses = 0
        #: Client messages that broke the protocol, by kind (:data:`PROTOCOL_ERRORS`).
        self.protocol_errors: CounterType[str] = Counter()

    # -- what arrives ----------------------------------------------------------

    def text_received(self, payload: bytes) -> None:
        "One text frame from the client."
        if self.state in (State.CLOSED, State.GONE):
            return
        try:
            received = parse_message(payload, self.settings.digits)
        except MalformedMessage as e:
            self._warn("malformed", "{session_id}: malformed message: {reason}", reason=e.reason)
            self._fail("malformed message")
            return
        message = received.message
        if isinstance(message, Close):
            self._clientseq = received.seq
            self._close_received(message)
            return
        problem = envelope_problem(received, self.session_id, self._clientseq, self._seq)
        if problem is not None:
            self._warn("sequence", "{session_id}: {problem}", problem=problem)
            self._clientseq = received.seq
            self._fail(problem)
            return
        self._clientseq = received.seq
        if isinstance(message, Ping):
            # At once, whatever the state: clientseq is this ping's seq.
            self._send(Pong())
            return
        if self.state is State.OPENING:
            if isinstance(message, Open):
                self._open_received(received.id, message)
            else:
                self.protocol_errors["not-open"] += 1
                self._fail(f"expected open, got {_kind(message)}")
            return
        if self.state is not State.ACTIVE:
            # A probe, or a session we are ending: only ping and close matter.
            return
        self._active_message(message)

    def audio_received(self, frame: bytes) -> None:
        "One binary frame of caller audio (not used: keys arrive as ``dtmf``)."
        self.audio_bytes_received += len(frame)

    def connection_lost(self, reason: str) -> None:
        "The socket is gone."
        if self.state is State.GONE:
            return
        if self.end_reason is None:
            self.end_reason = reason
        self.state = State.GONE
        self.playout.stop()
        self._cancel_drop()
        if self._listener is not None and not self._lost_reported:
            self._lost_reported = True
            self._tell("connection_lost", self.end_reason)

    # -- commands (ConnectorCall) ----------------------------------------------

    @property
    def info(self) -> CallInfo:
        if self._info is None:
            raise RuntimeError("the session is not open")
        return self._info

    @property
    def language(self) -> Optional[str]:
        return self._language

    @property
    def is_playing(self) -> bool:
        "Whether audio is queued here, still playing out, or reported playing."
        return self.playout.is_playing

    @property
    def frames_sent(self) -> int:
        "Audio frames sent (for metrics)."
        return self.playout.frames_sent

    def play(
        self, prompt_names: Sequence[str], text: Optional[str] = None, barge_in: bool = True
    ) -> None:
        """
        Queue prompts after any already queued, and start sending.

        :param text: what the prompts say, for the ``bot_turn_response`` event
        :param barge_in: whether a key pressed during these prompts stops the
            queue (when the ``barge_in`` setting is on)
        :raises PromptError: when a prompt has no playable file (nothing is
            queued then)
        """
        if self.state is not State.ACTIVE or self._pending is not None:
            return
        prompts = [self._prompts.get(self._language, name) for name in prompt_names]
        if self.settings.bot_turn_events:
            self._send(Event((bot_turn_response(text),)))
        self.playout.add(prompts, barge_in)

    @property
    def played_within(self) -> float:
        """
        Seconds from now by which ``playback_completed`` will have been told
        for the audio queued so far (its real-time end plus
        ``playback_timeout``).
        """
        return self.playout.played_within

    def stop_audio(self) -> None:
        "Drop the queued audio; if any was playing, send ``barge_in``."
        if self.state is not State.ACTIVE:
            return
        if self.is_playing:
            self.playout.flush()
            self._send(Event((barge_in(),)))
            self.playout.check_played()
            self.playout.maybe_finish()

    def disconnect(
        self,
        reason: str,
        output_variables: Optional[Mapping[str, str]] = None,
        info: Optional[str] = None,
    ) -> None:
        """
        Send ``disconnect`` once the queued audio has played (the client's
        ``playback_completed``, within ``playback_timeout`` past the audio's
        end), then wait for the client's ``close``.

        :param reason: ``completed``, ``error`` or ``unauthorized``
        :param output_variables: string values only
        """
        if self.state is not State.ACTIVE or self._pending is not None:
            return
        self._pending = Disconnect(reason, info, output_variables)
        self.playout.when_played_out(self._finish)

    # -- the protocol ----------------------------------------------------------

    def _open_received(self, session_id: str, message: Open) -> None:
        self._cancel_drop()
        self.session_id = session_id
        answer = answer_open(message, self._accepted, self.settings, self._connector, session_id)
        if answer.probe is not None:
            self.state = State.PROBE
            self._send(Opened(answer.probe))
            return
        if answer.refusal is not None:
            if answer.refusal.reason == "unauthorized":
                self._warn("organization", "{session_id}: organization id not accepted")
            self._end(answer.refusal, answer.why)
            return
        assert answer.call is not None
        self._language = message.language
        self._info = answer.call
        self._send(Opened(answer.call.media))
        self.state = State.ACTIVE
        self.playout.start()
        try:
            self._listener = self._new_listener(self)
        except Exception:
            self._log.failure("{session_id}: the call logic failed to start", session_id=session_id)
            self._end(Disconnect("error", "internal error"), "call logic failed to start")
            return
        self._tell("opened", self._info)

    def _active_message(self, message: object) -> None:
        if isinstance(message, Dtmf):
            if self._pending is not None:
                return
            if self.settings.barge_in and self.is_playing and self.playout.interruptible():
                self.stop_audio()
            self._tell("digit_received", message.digit)
        elif isinstance(message, PlaybackStarted):
            self.playout.client_playing = True
        elif isinstance(message, PlaybackCompleted):
            self.playout.client_playing = False
            if self.playout.played_due:
                self.playout.check_played()
            elif not self.playout.queue and self._pending is None:
                self._tell("playback_completed")
            self.playout.maybe_finish()
        elif isinstance(message, ClientError):
            self._client_error(message)
        elif isinstance(message, Paused):
            self.playout.client_paused = True
        elif isinstance(message, Resumed):
            self.playout.client_paused = False
            self.playout.pump()
        elif isinstance(message, Update):
            if message.language is not None:
                self._language = message.language
        elif isinstance(message, Discarded):
            pass
        elif isinstance(message, Invalid):
            self.messages_ignored += 1
            self._warn("invalid", "{session_id}: ignored a {type} message: {reason}",
                       type=message.type, reason=message.reason)
        elif isinstance(message, Ignored):
            self.messages_ignored += 1
            self._warn("unknown-type", "{session_id}: ignored a message of type {type}",
                       type=message.type[:40])
        else:
            self.messages_ignored += 1
            self._warn("unexpected", "{session_id}: ignored an unexpected {type}",
                       type=_kind(message))

    def _client_error(self, error: ClientError) -> None:
        if error.code == 429:
            wait = error.retry_after if error.retry_after is not None else self.settings.default_retry_after
            wait = min(max(wait, 0.0), self.settings.max_retry_after)
            self.rate_limit_pauses += 1
            self._warn("rate-limited", "{session_id}: the client asked us to wait {wait} s", wait=wait)
            self.playout.hold(wait)
        else:
            self._warn("client-error", "{session_id}: the client reported error {code}",
                       code=error.code)

    def _close_received(self, close: Close) -> None:
        reported_hangup = self.state is State.ACTIVE and self._pending is None
        if self.state not in (State.CLOSED, State.GONE):
            self._cancel_drop()
            self._send(Closed())
            self.state = State.CLOSED
            if self.end_reason is None:
                self.end_reason = f"client closed ({close.reason or 'no reason'})"
            self._stop_everything()
            self._drop_timer = self._clock.callLater(
                self.settings.closed_grace, self._drop, "socket kept open after closed"
            )
        if reported_hangup:
            self._tell("hangup_received", close.reason)

    def _fail(self, why: str) -> None:
        "Our side cannot go on: ``disconnect{error}``."
        if self.state in (State.OPENING, State.ACTIVE, State.PROBE):
            self._end(Disconnect("error", why), why)

    def _end(self, message: Disconnect, why: str) -> None:
        self._stop_everything()
        self._cancel_drop()
        if self.end_reason is None:
            self.end_reason = why
        try:
            payload = encode(message, self.session_id or "", self._seq + 1, self._clientseq)
        except MessageTooLarge:
            self._log.error("{session_id}: output variables too large; ending with an error",
                            session_id=self.session_id)
            message = Disconnect("error", "output variables too large")
            self.end_reason = "output variables too large"
            payload = encode(message, self.session_id or "", self._seq + 1, self._clientseq)
        self._seq += 1
        self._transport.send_text(payload)
        self.state = State.DISCONNECTING
        self._drop_timer = self._clock.callLater(
            self.settings.close_timeout, self._drop, "no close after disconnect"
        )

    def _send(self, message: ServerMessage) -> None:
        "The one way JSON goes out: ``seq`` from 1 without gaps."
        payload = encode(message, self.session_id or "", self._seq + 1, self._clientseq)
        self._seq += 1
        self._transport.send_text(payload)

    def _prompts_played(self) -> None:
        if self._pending is None:
            self._tell("playback_completed")

    def _stop_everything(self) -> None:
        self.playout.stop()

    # -- the ending ------------------------------------------------------------

    def _finish(self) -> None:
        pending, self._pending = self._pending, None
        if pending is not None and self.state is State.ACTIVE:
            self._end(pending, f"disconnect ({pending.reason})")

    # -- helpers -----------------------------------------------------------------

    def _cancel_drop(self) -> None:
        if self._drop_timer is not None and self._drop_timer.active():
            self._drop_timer.cancel()
        self._drop_timer = None

    def abort(self, why: str) -> None:
        "Drop the socket now (the service is stopping)."
        if self.state is not State.GONE:
            self._cancel_drop()
            self._drop(why)

    def _drop(self, why: str) -> None:
        self._drop_timer = None
        if self.end_reason is None or self.state is State.OPENING:
            self.end_reason = why
        self._log.info("{session_id}: dropping the socket: {why}", session_id=self.session_id, why=why)
        self._transport.drop()

    def _tell(self, method: str, *args: Any) -> None:
        listener = self._listener
        if listener is None:
            return
        try:
            getattr(listener, method)(*args)
        except Exception:
            self._log.failure("{session_id}: the call logic failed in {method}",
                              session_id=self.session_id, method=method)

    def _warn(self, kind: str, format: str, **fields: Any) -> None:
        if kind in PROTOCOL_ERRORS:
            self.protocol_errors[kind] += 1
        self._bad_input.warn(kind, format, session_id=self.session_id, **fields)


def _kind(message: object) -> str:
    return type(message).__name__
