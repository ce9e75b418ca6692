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
from collections import Counter, deque
from typing import (
    Any,
    Callable,
    Counter as CounterType,
    Deque,
    FrozenSet,
    Mapping,
    Optional,
    Protocol as TypingProtocol,
    Sequence,
    Tuple,
)

import attrs
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from ivrproto.logthrottle import LogThrottle
from ivrproto.audioconnector.auth import Accepted
from ivrproto.audioconnector.messages import (
    DEFAULT_DIGITS,
    ClientError,
    Close,
    Discarded,
    Dtmf,
    Ignored,
    Invalid,
    MalformedMessage,
    Open,
    Participant,
    Paused,
    Ping,
    PlaybackCompleted,
    PlaybackStarted,
    Received,
    Resumed,
    Update,
    choose_media,
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
from ivrproto.audioconnector.prompts import FRAME_BYTES, SAMPLE_RATE, PromptLibrary

#: The kinds of client messages that break the protocol, as the metrics
#: label them: a bounded set.
PROTOCOL_ERRORS = ("malformed", "sequence", "not-open", "invalid", "unknown-type", "unexpected")


@attrs.frozen
class SessionSettings:
    """
    How a session behaves.  Items marked *unconfirmed* are what Genesys's
    reference code and public notes suggest, not something checked against a
    real org: each is a setting so that it can be adjusted without a release.

    :ivar media_format: the format chosen from the offers (``PCMU``)
    :ivar media_rate: the rate chosen (8000)
    :ivar media_channels: the channels chosen, in order (``external``)
    :ivar frame_bytes: bytes per outbound audio frame (1600: 200 ms)
    :ivar audio_lead: seconds of audio sent ahead of real time (*unconfirmed*:
        how much Genesys buffers)
    :ivar default_retry_after: seconds our audio waits after a ``429`` without
        ``retryAfter``
    :ivar max_retry_after: the longest wait a ``429`` can impose
    :ivar pause_audio_when_paused: hold our audio while the client is paused
    :ivar barge_in: whether a key pressed during a prompt stops the rest of
        the prompt queue (and sends ``barge_in``)
    :ivar bot_turn_events: send a ``bot_turn_response`` event per prompt queue
    :ivar disconnect_grace: seconds between the end of the last prompt and
        ``disconnect`` (*unconfirmed*: whether Genesys keeps playing queued
        audio after ``disconnect``)
    :ivar playback_timeout: seconds past the end of the queued audio that a
        ``disconnect`` waits for ``playback_completed``
    :ivar open_timeout: seconds from the upgrade to ``open`` before the socket
        is dropped
    :ivar close_timeout: seconds from our ``disconnect`` to the client's
        ``close`` before the socket is dropped
    :ivar closed_grace: seconds from our ``closed`` to the client closing the
        socket before it is dropped
    :ivar check_organization: answer ``disconnect{unauthorized}`` when
        ``open``'s organization differs from the upgrade's header
    :ivar organizations: when set, the only organization ids served
    :ivar digits: the keys accepted in ``dtmf`` (*unconfirmed*: A-D)
    """

    media_format: str = "PCMU"
    media_rate: int = SAMPLE_RATE
    media_channels: Tuple[str, ...] = ("external",)
    frame_bytes: int = FRAME_BYTES
    audio_lead: float = 0.4
    default_retry_after: float = 1.0
    max_retry_after: float = 30.0
    pause_audio_when_paused: bool = True
    barge_in: bool = True
    bot_turn_events: bool = True
    disconnect_grace: float = 0.2
    playback_timeout: float = 3.0
    open_timeout: float = 5.0
    close_timeout: float = 10.0
    closed_grace: float = 5.0
    check_organization: bool = True
    organizations: Optional[FrozenSet[str]] = None
    digits: FrozenSet[str] = DEFAULT_DIGITS


@attrs.frozen
class CallInfo:
    """
    What ``open`` and the upgrade said about the call.  ``participant.ani``
    is a raw caller id: never log it.

    :ivar connector: the request path the call came in on (the connector id)
    """

    connector: str
    session_id: str
    organization_id: str
    conversation_id: str
    correlation_id: Optional[str]
    participant: Participant
    language: Optional[str]
    input_variables: Mapping[str, str] = attrs.field(repr=False)
    custom_config: Optional[Mapping[str, Any]]
    media: Mapping[str, Any]

    @property
    def ani(self) -> str:
        return self.participant.ani


class ConnectorCall(TypingProtocol):
    """
    The commands the call logic gives a session.
    """

    @property
    def info(self) -> CallInfo:
        "The call, as ``open`` described it."

    @property
    def language(self) -> Optional[str]:
        "The call's current language (``open``, or a later ``update``)."

    def play(
        self, prompt_names: Sequence[str], text: Optional[str] = None, barge_in: bool = True
    ) -> None:
        "Queue prompts, in order, after any already queued."

    def stop_audio(self) -> None:
        "Drop every queued prompt, and tell the client to drop what it holds."

    @property
    def is_playing(self) -> bool:
        "Whether audio is queued, still playing out, or reported playing."

    @property
    def played_within(self) -> float:
        "Seconds from now by which the queued audio will have been reported played."

    def disconnect(
        self,
        reason: str,
        output_variables: Optional[Mapping[str, str]] = None,
        info: Optional[str] = None,
    ) -> None:
        "End the session, after the queued audio has played."


class ConnectorListener(TypingProtocol):
    """
    What a session reports to the call logic.  Exceptions raised here are
    logged and never reach the connection.
    """

    def opened(self, info: CallInfo) -> None:
        "``opened`` was sent: audio may be played from now on."

    def digit_received(self, digit: str) -> None:
        "The caller pressed a key (after any barge-in has stopped the prompts)."

    def playback_completed(self) -> None:
        """
        Everything queued so far has played: its real-time end has passed
        and, when the client reported ``playback_started``, its
        ``playback_completed`` came (at most ``playback_timeout`` past the
        end); or a barge-in dropped it.
        """

    def hangup_received(self, reason: str) -> None:
        "The client sent ``close`` before we asked to disconnect (e.g. ``end``: the caller hung up)."

    def connection_lost(self, reason: str) -> None:
        "The session is over; called once, last, for every call that was opened."


class SessionTransport(TypingProtocol):
    "What a session needs of its connection."

    def send_text(self, payload: bytes) -> None:
        "Send one text frame."

    def send_audio(self, frame: bytes) -> None:
        "Send one binary frame."

    def drop(self) -> None:
        "Drop the socket now."


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
        # The paced audio sender.
        self._frame_seconds = settings.frame_bytes / SAMPLE_RATE
        # (frame, may a key interrupt it)
        self._queue: Deque[Tuple[bytes, bool]] = deque()
        self._last_interruptible = True
        self._t0 = clock.seconds()
        self._sent_in_run = 0
        self._audio_timer: Optional[IDelayedCall] = None
        self._hold_until = 0.0
        self._client_paused = False
        self._client_playing = False
        # Whether a playback_completed is owed to the listener, and its timer.
        self._played_due = False
        self._played_timer: Optional[IDelayedCall] = None
        # The ending.
        self._pending: Optional[Disconnect] = None
        self._finish_timer: Optional[IDelayedCall] = None
        self._finish_deadline: Optional[IDelayedCall] = None
        self._drop_timer: Optional[IDelayedCall] = clock.callLater(
            settings.open_timeout, self._drop, "no open in time"
        )
        self._lost_reported = False
        #: Why the session ended, once it has (for logs and metrics).
        self.end_reason: Optional[str] = None
        # Counts, for tests and metrics.
        self.frames_sent = 0
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
        problem = self._envelope_problem(received)
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
        self._queue.clear()
        timers = (self._audio_timer, self._finish_timer, self._finish_deadline, self._drop_timer,
                  self._played_timer)
        for timer in timers:
            if timer is not None and timer.active():
                timer.cancel()
        self._audio_timer = self._finish_timer = self._finish_deadline = self._drop_timer = None
        self._played_timer = None
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
        return (
            bool(self._queue)
            or self._clock.seconds() < self._audio_end()
            or self._client_playing
        )

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
        for prompt in prompts:
            self._queue.extend((frame, barge_in) for frame in prompt.frames)
        self._played_due = self._played_due or bool(prompts)
        self._pump()

    @property
    def played_within(self) -> float:
        """
        Seconds from now by which ``playback_completed`` will have been told
        for the audio queued so far (its real-time end plus
        ``playback_timeout``).
        """
        remaining = max(0.0, self._audio_end() - self._clock.seconds())
        return remaining + len(self._queue) * self._frame_seconds + self.settings.playback_timeout

    def stop_audio(self) -> None:
        "Drop the queued audio; if any was playing, send ``barge_in``."
        if self.state is not State.ACTIVE:
            return
        if self.is_playing:
            self._flush()
            self._send(Event((barge_in(),)))
            self._check_played()
            self._maybe_finish()

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
        remaining = max(0.0, self._audio_end() - self._clock.seconds())
        remaining += len(self._queue) * self._frame_seconds
        self._finish_deadline = self._clock.callLater(
            remaining + self.settings.playback_timeout, self._finish
        )
        self._maybe_finish()

    # -- the protocol ----------------------------------------------------------

    def _envelope_problem(self, r: Received) -> Optional[str]:
        if self.session_id is not None and r.id != self.session_id:
            return "message for another session id"
        if r.seq != self._clientseq + 1:
            return f"client seq {r.seq} after {self._clientseq}"
        if r.serverseq is not None and r.serverseq > self._seq:
            return f"client serverseq {r.serverseq} ahead of our seq {self._seq}"
        return None

    def _open_received(self, session_id: str, message: Open) -> None:
        self._cancel_drop()
        self.session_id = session_id
        header_org = self._accepted.organization_id
        s = self.settings
        wrong_org = (
            s.check_organization
            and header_org is not None
            and header_org != message.organization_id
        ) or (s.organizations is not None and message.organization_id not in s.organizations)
        media = choose_media(message.media, s.media_format, s.media_rate, s.media_channels)
        if message.is_probe:
            self.state = State.PROBE
            offer = media or (message.media[0] if message.media else _default_media(s))
            self._send(Opened(offer))
            return
        if wrong_org:
            self._warn("organization", "{session_id}: organization id not accepted")
            self._end(Disconnect("unauthorized", "organization not accepted"), "organization not accepted")
            return
        if media is None:
            self._end(Disconnect("error", "No supported media type was found."), "no supported media offered")
            return
        self._language = message.language
        self._info = CallInfo(
            self._connector,
            session_id,
            message.organization_id,
            message.conversation_id,
            self._accepted.correlation_id,
            message.participant,
            message.language,
            message.input_variables,
            message.custom_config,
            media,
        )
        self._send(Opened(media))
        self.state = State.ACTIVE
        self._t0 = self._clock.seconds()
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
            if self.settings.barge_in and self.is_playing and self._interruptible():
                self.stop_audio()
            self._tell("digit_received", message.digit)
        elif isinstance(message, PlaybackStarted):
            self._client_playing = True
        elif isinstance(message, PlaybackCompleted):
            self._client_playing = False
            if self._played_due:
                self._check_played()
            elif not self._queue and self._pending is None:
                self._tell("playback_completed")
            self._maybe_finish()
        elif isinstance(message, ClientError):
            self._client_error(message)
        elif isinstance(message, Paused):
            self._client_paused = True
        elif isinstance(message, Resumed):
            self._client_paused = False
            self._pump()
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
            self._hold_until = max(self._hold_until, self._clock.seconds() + wait)
            self.rate_limit_pauses += 1
            self._warn("rate-limited", "{session_id}: the client asked us to wait {wait} s", wait=wait)
            self._pump()
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

    # -- audio -------------------------------------------------------------------

    def _audio_end(self) -> float:
        "When the audio sent so far finishes playing, in real time."
        return self._t0 + self._sent_in_run * self._frame_seconds

    def _pump(self) -> None:
        if self._audio_timer is not None and self._audio_timer.active():
            self._audio_timer.cancel()
        self._audio_timer = None
        if self.state is not State.ACTIVE or not self._queue:
            return
        now = self._clock.seconds()
        if now < self._hold_until:
            self._audio_timer = self._clock.callLater(self._hold_until - now, self._pump)
            return
        if self._client_paused and self.settings.pause_audio_when_paused:
            return
        if now >= self._audio_end():
            # Nothing left playing: a new run starts now.
            self._t0, self._sent_in_run = now, 0
        lead = self.settings.audio_lead
        while self._queue:
            due = self._audio_end() - lead
            if due > now + 1e-9:
                self._audio_timer = self._clock.callLater(due - now, self._pump)
                return
            frame, self._last_interruptible = self._queue.popleft()
            self._transport.send_audio(frame)
            self._sent_in_run += 1
            self.frames_sent += 1
        self._check_played()
        self._maybe_finish()

    def _check_played(self) -> None:
        """
        Tell the listener ``playback_completed`` once the queued audio has
        played: its real-time end, then the client's ``playback_completed``
        if it reported ``playback_started`` (at most ``playback_timeout``
        past the end).  The no-input timer of the call logic runs from here.
        """
        if self._played_timer is not None and self._played_timer.active():
            self._played_timer.cancel()
        self._played_timer = None
        if not self._played_due or self.state is not State.ACTIVE or self._queue:
            return
        now, end = self._clock.seconds(), self._audio_end()
        if now < end - 1e-9:
            self._played_timer = self._clock.callLater(end - now, self._check_played)
            return
        late = end + self.settings.playback_timeout
        if self._client_playing and now < late - 1e-9:
            self._played_timer = self._clock.callLater(late - now, self._check_played)
            return
        self._played_due = False
        if self._pending is None:
            self._tell("playback_completed")

    def _interruptible(self) -> bool:
        "Whether the audio playing now may be cut short by a key."
        return self._queue[0][1] if self._queue else self._last_interruptible

    def _flush(self) -> None:
        self._queue.clear()
        if self._audio_timer is not None and self._audio_timer.active():
            self._audio_timer.cancel()
        self._audio_timer = None
        # The client drops what it holds on barge_in: nothing is playing.
        self._t0, self._sent_in_run = self._clock.seconds(), 0
        self._client_playing = False

    def _stop_everything(self) -> None:
        self._flush()
        for timer in (self._finish_timer, self._finish_deadline, self._played_timer):
            if timer is not None and timer.active():
                timer.cancel()
        self._finish_timer = self._finish_deadline = self._played_timer = None

    # -- the ending ------------------------------------------------------------

    def _maybe_finish(self) -> None:
        "Send a pending disconnect once the audio has played."
        if self._pending is None or self.state is not State.ACTIVE or self._queue:
            return
        now = self._clock.seconds()
        end = self._audio_end()
        if self._finish_timer is not None and self._finish_timer.active():
            self._finish_timer.cancel()
        if now < end:
            self._finish_timer = self._clock.callLater(end - now, self._maybe_finish)
        elif not self._client_playing:
            self._finish_timer = self._clock.callLater(self.settings.disconnect_grace, self._finish)
        else:
            self._finish_timer = None

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


def _default_media(s: SessionSettings) -> Mapping[str, Any]:
    return {"type": "audio", "format": s.media_format, "channels": list(s.media_channels),
            "rate": s.media_rate}
