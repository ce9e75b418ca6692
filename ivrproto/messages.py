"""
The Call Control wire messages (contract section 3) as frozen values, with
their parsing and encoding.  No Twisted imports: this module is pure data.

Events come from the platform and are parsed with :func:`parse_event`;
commands go to the platform and are encoded with :func:`encode`.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence, Tuple, Union

import attrs
import orjson

from ivrproto.errors import MalformedFrame

__all__ = [
    "DEFAULT_CAPABILITIES",
    "KNOWN_CAPABILITIES",
    "VALID_DIGITS",
    "Command",
    "Connect",
    "Connected",
    "DtmfReceived",
    "Event",
    "Hangup",
    "HangupReceived",
    "Ignored",
    "Play",
    "PlatformError",
    "Transfer",
    "encode",
    "parse_event",
    "play_menu",
]

#: Every key a caller can press.
VALID_DIGITS = frozenset("0123456789*#")

#: Every capability the contract allows in the connect frame.
KNOWN_CAPABILITIES = ("play", "record", "dtmf", "transfer", "hangup")

#: What ivrproto asks for: everything it uses, nothing more.
DEFAULT_CAPABILITIES = ("play", "dtmf", "transfer", "hangup")


# --- events (platform to client) ---------------------------------------------


@attrs.frozen
class Connected:
    """
    The platform accepted the connect frame: the call is live.

    :ivar call_control_id: the id the platform confirmed, if it sent one
    :ivar session: the platform's session metadata, as sent
    """

    call_control_id: Optional[str]
    session: Mapping[str, Any] = attrs.field(factory=dict)


@attrs.frozen
class DtmfReceived:
    """
    The caller pressed a key.

    :ivar digit: one of ``0``-``9``, ``*``, ``#``
    """

    digit: str


@attrs.frozen
class HangupReceived:
    """
    The caller or the platform ended the call; the platform closes next.
    """

    reason: Optional[str] = None


@attrs.frozen
class PlatformError:
    """
    The platform reports a failure of the last command or of the call.
    """

    message: str
    code: Optional[str] = None


@attrs.frozen
class Ignored:
    """
    A frame with no control meaning for us: ``media`` or an event the
    contract does not list.  Kept so callers can count them.

    :ivar event: the event name (``media``, or whatever was sent)
    """

    event: str


Event = Union[Connected, DtmfReceived, HangupReceived, PlatformError, Ignored]


def _loads(text: Union[str, bytes]) -> Any:
    # orjson: several times faster than json on these small frames; it
    # refuses invalid UTF-8, lone surrogates and nesting deeper than 1024
    # with a JSONDecodeError (a ValueError).
    try:
        return orjson.loads(text)
    except ValueError:
        raise MalformedFrame("not valid JSON") from None


def _optional_text(obj: Mapping[str, Any], key: str) -> Optional[str]:
    """
    A field the contract types as a string.  Numbers carry the same meaning
    and are kept; anything else is dropped (the event itself still counts:
    a hangup with an odd ``reason`` is still a hangup).
    """
    value = obj.get(key)
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    return None


def parse_event(text: Union[str, bytes]) -> Event:
    """
    Parse one text frame from the platform.

    :param text: the frame's payload
    :raises MalformedFrame: when the frame is not a JSON object, has no
        string ``event``, or is a ``dtmf`` event without a single valid key.
        The reason never quotes the frame itself.
    :return: the event; events the contract does not list are :class:`Ignored`
    """
    obj = _loads(text)
    if not isinstance(obj, dict):
        raise MalformedFrame("not a JSON object")
    event = obj.get("event")
    if not isinstance(event, str):
        raise MalformedFrame("no string 'event' field")
    if event == "dtmf":
        digit = obj.get("digit")
        if not isinstance(digit, str) or len(digit) != 1 or digit not in VALID_DIGITS:
            raise MalformedFrame("dtmf event without a single valid digit")
        return DtmfReceived(digit)
    if event == "media":
        return Ignored("media")
    if event == "hangup":
        return HangupReceived(_optional_text(obj, "reason"))
    if event == "error":
        message = _optional_text(obj, "message") or "(no message)"
        return PlatformError(message, _optional_text(obj, "code"))
    if event == "connected":
        session = obj.get("session")
        return Connected(
            _optional_text(obj, "callControlId"),
            session if isinstance(session, dict) else {},
        )
    return Ignored(event)


# --- commands (client to platform) -------------------------------------------


@attrs.frozen
class Connect:
    """
    The first frame after the upgrade.
    """

    call_control_id: str
    capabilities: Tuple[str, ...] = DEFAULT_CAPABILITIES
    media: str = "audio"

    def to_json(self) -> dict[str, Any]:
        return {
            "callControlId": self.call_control_id,
            "media": self.media,
            "capabilities": list(self.capabilities),
        }


@attrs.frozen
class Play:
    """
    Queue one prompt.

    :ivar audio: absolute http(s) URL of the prompt
    :ivar dtmf_enabled: whether keys are listened for during the prompt
    :ivar keys: the keys listened for (only sent when enabled)
    """

    call_control_id: str
    audio: str
    dtmf_enabled: bool
    keys: Tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        dtmf: dict[str, Any] = {"enabled": self.dtmf_enabled}
        if self.dtmf_enabled:
            dtmf["keys"] = list(self.keys)
        return {
            "callControlId": self.call_control_id,
            "action": "play",
            "audio": self.audio,
            "dtmf": dtmf,
        }


@attrs.frozen
class Transfer:
    """
    Hand the call to a queue or number.
    """

    call_control_id: str
    target: str

    def to_json(self) -> dict[str, Any]:
        return {
            "callControlId": self.call_control_id,
            "action": "transfer",
            "target": self.target,
            "type": "number",
        }


@attrs.frozen
class Hangup:
    """
    End the call.
    """

    call_control_id: str

    def to_json(self) -> dict[str, Any]:
        return {"callControlId": self.call_control_id, "action": "hangup"}


Command = Union[Connect, Play, Transfer, Hangup]


def encode(command: Command) -> bytes:
    """
    Encode a command as the UTF-8 payload of one text frame.
    """
    return orjson.dumps(command.to_json())


def play_menu(
    call_control_id: str, audio_urls: Sequence[str], keys: Sequence[str]
) -> Tuple[Play, ...]:
    """
    The ``play`` commands that offer a menu: one per prompt, in order, each
    listening for every key of the menu (contract section 3, item 5).
    """
    keys = tuple(keys)
    return tuple(Play(call_control_id, url, True, keys) for url in audio_urls)
