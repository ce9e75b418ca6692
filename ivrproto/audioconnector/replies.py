"""
The messages the Audio Connector server sends (``opened``, ``pong``,
``event``, ``disconnect``, ``closed``) as frozen values, and :func:`encode`,
which writes one with its envelope.  No Twisted imports: pure data, as
:mod:`ivrproto.audioconnector.messages` (the client's messages) is.
"""

from __future__ import annotations

from typing import Any, Dict, Mapping, Optional, Tuple, Union

import attrs
import orjson

from ivrproto.errors import IVRError
from ivrproto.audioconnector.messages import MAX_SERVER_MESSAGE, PROTOCOL_VERSION, format_duration

__all__ = [
    "Closed",
    "Disconnect",
    "Entity",
    "Event",
    "MessageTooLarge",
    "Opened",
    "Pong",
    "ServerMessage",
    "barge_in",
    "bot_turn_response",
    "encode",
]

@attrs.frozen
class Opened:
    """
    The answer to ``open``: the one media offer chosen, copied as offered.
    """

    media: Mapping[str, Any]
    discard_to: Optional[float] = None
    start_paused: Optional[bool] = None

    type = "opened"

    def parameters(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {"media": [self.media]}
        if self.discard_to is not None:
            out["discardTo"] = format_duration(self.discard_to)
        if self.start_paused is not None:
            out["startPaused"] = self.start_paused
        return out


@attrs.frozen
class Pong:
    "The answer to ``ping``."

    type = "pong"

    def parameters(self) -> Dict[str, Any]:
        return {}


@attrs.frozen
class Entity:
    """
    One entity of an ``event``: ``barge_in`` (empty data) or
    ``bot_turn_response`` (``disposition``, ``text``, ``confidence``).
    """

    type: str
    data: Mapping[str, Any] = attrs.field(factory=dict)


def barge_in() -> Entity:
    "The entity that tells the client to stop playing our queued audio."
    return Entity("barge_in")


def bot_turn_response(text: Optional[str], disposition: str = "match") -> Entity:
    "The entity that reports one bot turn (for Genesys's reporting)."
    data: Dict[str, Any] = {"disposition": disposition, "confidence": 1}
    if text is not None:
        data["text"] = text
    return Entity("bot_turn_response", data)


@attrs.frozen
class Event:
    "Events for the client."

    entities: Tuple[Entity, ...]

    type = "event"

    def parameters(self) -> Dict[str, Any]:
        return {"entities": [{"type": e.type, "data": dict(e.data)} for e in self.entities]}


def _string_map(
    instance: object, attribute: "attrs.Attribute[Any]", value: Optional[Mapping[str, str]]
) -> None:
    if value is None:
        return
    for k, v in value.items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise TypeError("outputVariables must map strings to strings")


@attrs.frozen
class Disconnect:
    """
    We ask the client to end the session.

    :ivar reason: ``completed``, ``unauthorized`` or ``error``
    :ivar info: a short text for the client's log
    :ivar output_variables: what the Architect flow receives (strings only)
    """

    reason: str
    info: Optional[str] = None
    output_variables: Optional[Mapping[str, str]] = attrs.field(
        default=None, validator=_string_map
    )

    type = "disconnect"

    def parameters(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {"reason": self.reason}
        if self.info is not None:
            out["info"] = self.info
        if self.output_variables is not None:
            out["outputVariables"] = dict(self.output_variables)
        return out


@attrs.frozen
class Closed:
    "The answer to ``close``; its parameters are always empty."

    type = "closed"

    def parameters(self) -> Dict[str, Any]:
        return {}


ServerMessage = Union[Opened, Pong, Event, Disconnect, Closed]


class MessageTooLarge(IVRError):
    "An outbound message over the client's limit."


def encode(message: ServerMessage, session_id: str, seq: int, clientseq: int) -> bytes:
    """
    Encode one of our messages as the UTF-8 payload of a text frame.

    :raises MessageTooLarge: when it is longer than the client accepts
    """
    payload = orjson.dumps(
        {
            "version": PROTOCOL_VERSION,
            "id": session_id,
            "type": message.type,
            "seq": seq,
            "clientseq": clientseq,
            "parameters": message.parameters(),
        }
    )
    if len(payload) > MAX_SERVER_MESSAGE:
        raise MessageTooLarge(f"a {message.type} message of {len(payload)} bytes is too large")
    return payload
