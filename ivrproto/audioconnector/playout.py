"""
The paced audio of one Audio Connector session (:class:`Playout`): the
queue of prompt frames, sent at real time with a small lead on an injected
clock, held for a ``429``'s ``retryAfter`` and while the client is paused,
flushed on barge-in, the moment the queued audio counts as played (its
real-time end, then the client's ``playback_completed`` if it reported
``playback_started``, at most ``playback_timeout`` past the end), and the
wait of a ``disconnect`` for the audio to play out
(:meth:`Playout.when_played_out`).

:class:`~ivrproto.audioconnector.session.ConnectorSession` owns one and
decides when it may send; the rules are described in docs/audio-connector.md
("Audio").
"""

from __future__ import annotations

from collections import deque
from typing import Callable, Deque, Optional, Sequence, Tuple

from twisted.internet.interfaces import IDelayedCall, IReactorTime

from ivrproto.audioconnector.prompts import SAMPLE_RATE, Prompt
from ivrproto.audioconnector.seam import SessionSettings

__all__ = ["Playout"]

#: Slack for comparing clock times.
_EPSILON = 1e-9


class Playout:
    """
    One session's outbound audio.

    :param clock: the pacing's time source
    :param send_audio: writes one frame
    :param settings: ``frame_bytes``, ``audio_lead``,
        ``pause_audio_when_paused`` and ``playback_timeout`` are read
    :param may_send: whether the session may send audio now
    :param played: called once the audio queued so far has played
    :ivar frames_sent: frames written, for metrics
    """

    def __init__(
        self,
        clock: IReactorTime,
        send_audio: Callable[[bytes], None],
        settings: SessionSettings,
        may_send: Callable[[], bool],
        played: Callable[[], None],
    ) -> None:
        self._clock = clock
        self._send_audio = send_audio
        self.settings = settings
        self._may_send = may_send
        self._played = played
        self.frame_seconds = settings.frame_bytes / SAMPLE_RATE
        #: (frame, may a key interrupt it)
        self.queue: Deque[Tuple[bytes, bool]] = deque()
        self._last_interruptible = True
        self._t0 = clock.seconds()
        self._sent_in_run = 0
        self._timer: Optional[IDelayedCall] = None
        self._hold_until = 0.0
        self.client_paused = False
        self.client_playing = False
        # Whether ``played`` is owed, and its timer.
        self.played_due = False
        self._played_timer: Optional[IDelayedCall] = None
        self.frames_sent = 0
        # What runs once the audio has played out (a disconnect), and its
        # timers: the grace after the end, and the latest it may wait.
        self._then: Optional[Callable[[], None]] = None
        self._finish_timer: Optional[IDelayedCall] = None
        self._finish_deadline: Optional[IDelayedCall] = None

    # -- what the session asks -------------------------------------------------

    @property
    def audio_end(self) -> float:
        "When the audio sent so far finishes playing, in real time."
        return self._t0 + self._sent_in_run * self.frame_seconds

    @property
    def remaining(self) -> float:
        "Seconds of audio still to play: in flight and queued."
        in_flight = max(0.0, self.audio_end - self._clock.seconds())
        return in_flight + len(self.queue) * self.frame_seconds

    @property
    def is_playing(self) -> bool:
        "Whether audio is queued, still playing out, or reported playing."
        return bool(self.queue) or self._clock.seconds() < self.audio_end or self.client_playing

    @property
    def played_within(self) -> float:
        "Seconds from now by which ``played`` will have been called for what is queued."
        return self.remaining + self.settings.playback_timeout

    def interruptible(self) -> bool:
        "Whether the audio playing now may be cut short by a key."
        return self.queue[0][1] if self.queue else self._last_interruptible

    def start(self) -> None:
        "The session is open: the first run's timeline starts now."
        self._t0 = self._clock.seconds()

    def add(self, prompts: Sequence[Prompt], barge_in: bool) -> None:
        "Queue prompts after any already queued, and send what is due."
        for prompt in prompts:
            self.queue.extend((frame, barge_in) for frame in prompt.frames)
        self.played_due = self.played_due or bool(prompts)
        self.pump()

    def hold(self, seconds: float) -> None:
        "Send nothing for ``seconds`` (a ``429``)."
        self._hold_until = max(self._hold_until, self._clock.seconds() + seconds)
        self.pump()

    def flush(self) -> None:
        "Drop the queue; the client drops what it holds (``barge_in``): nothing plays."
        self.queue.clear()
        self._cancel("_timer")
        self._t0, self._sent_in_run = self._clock.seconds(), 0
        self.client_playing = False

    def stop(self) -> None:
        "Flush, and owe nothing more (nor run what waited for the end)."
        self.flush()
        self._then = None
        for name in ("_played_timer", "_finish_timer", "_finish_deadline"):
            self._cancel(name)

    def when_played_out(self, then: Callable[[], None]) -> None:
        """
        Run ``then`` once the queued audio has played (its real-time end, and
        the client's ``playback_completed`` if it reported
        ``playback_started``) and ``disconnect_grace`` more has passed; at
        the latest ``playback_timeout`` past the audio's end.
        """
        self._then = then
        self._finish_deadline = self._clock.callLater(self.played_within, self._run_then)
        self.maybe_finish()

    def maybe_finish(self) -> None:
        "Schedule what waits for the end of the audio, as far as it is known."
        if self._then is None or not self._may_send() or self.queue:
            return
        now, end = self._clock.seconds(), self.audio_end
        self._cancel("_finish_timer")
        if now < end:
            self._finish_timer = self._clock.callLater(end - now, self.maybe_finish)
        elif not self.client_playing:
            self._finish_timer = self._clock.callLater(
                self.settings.disconnect_grace, self._run_then
            )

    def _run_then(self) -> None:
        then, self._then = self._then, None
        for name in ("_finish_timer", "_finish_deadline"):
            self._cancel(name)
        if then is not None:
            then()

    # -- the pacing --------------------------------------------------------------

    def pump(self) -> None:
        "Send every frame that is due, and come back for the next."
        self._cancel("_timer")
        if not self._may_send() or not self.queue:
            return
        now = self._clock.seconds()
        if now < self._hold_until:
            self._timer = self._clock.callLater(self._hold_until - now, self.pump)
            return
        if self.client_paused and self.settings.pause_audio_when_paused:
            return
        if now >= self.audio_end:
            # Nothing left playing: a new run starts now.
            self._t0, self._sent_in_run = now, 0
        lead = self.settings.audio_lead
        while self.queue:
            due = self.audio_end - lead
            if due > now + _EPSILON:
                self._timer = self._clock.callLater(due - now, self.pump)
                return
            frame, self._last_interruptible = self.queue.popleft()
            self._send_audio(frame)
            self._sent_in_run += 1
            self.frames_sent += 1
        self.check_played()
        self.maybe_finish()

    def check_played(self) -> None:
        """
        Call ``played`` once the queued audio has played: its real-time end,
        then the client's ``playback_completed`` if it reported
        ``playback_started`` (at most ``playback_timeout`` past the end).
        """
        self._cancel("_played_timer")
        if not self.played_due or not self._may_send() or self.queue:
            return
        now, end = self._clock.seconds(), self.audio_end
        if now < end - _EPSILON:
            self._played_timer = self._clock.callLater(end - now, self.check_played)
            return
        late = end + self.settings.playback_timeout
        if self.client_playing and now < late - _EPSILON:
            self._played_timer = self._clock.callLater(late - now, self.check_played)
            return
        self.played_due = False
        self._played()

    def _cancel(self, name: str) -> None:
        timer: Optional[IDelayedCall] = getattr(self, name)
        if timer is not None and timer.active():
            timer.cancel()
        setattr(self, name, None)
