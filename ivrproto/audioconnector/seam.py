"""
The seam between an Audio Connector session and the call logic: how a
session behaves (:class:`SessionSettings`), what ``open`` said
(:class:`CallInfo`), the commands the call logic gives
(:class:`ConnectorCall`), what it is told (:class:`ConnectorListener`), and
what a session needs of its socket (:class:`SessionTransport`).
"""

from __future__ import annotations

from typing import (
    Any,
    FrozenSet,
    Mapping,
    Optional,
    Protocol as TypingProtocol,
    Sequence,
    Tuple,
)

import attrs

from ivrproto.audioconnector.messages import DEFAULT_DIGITS, Participant
from ivrproto.audioconnector.prompts import FRAME_BYTES, SAMPLE_RATE

__all__ = [
    "PROTOCOL_ERRORS",
    "CallInfo",
    "ConnectorCall",
    "ConnectorListener",
    "SessionSettings",
    "SessionTransport",
]

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
