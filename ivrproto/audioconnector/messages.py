"""
The Audio Connector's JSON messages as frozen values, with their parsing and
encoding.  No Twisted imports: this module is pure data.

Every text frame is one JSON object with the envelope
``{"version": "2", "id": <session id>, "type": ..., "seq": n, "parameters": {...}}``;
the client adds ``serverseq`` (the last server ``seq`` it saw) and
``position`` (its media position), the server adds ``clientseq`` (the last
client ``seq`` it processed).  :func:`parse_message` reads the client's
messages into a :class:`Received`;
:func:`ivrproto.audioconnector.replies.encode` writes ours.
"""

from __future__ import annotations

import re
from typing import Any, FrozenSet, Mapping, Optional, Tuple, Union

import attrs
import orjson

from ivrproto.errors import IVRError

PROTOCOL_VERSION = "2"

#: Keys a caller can press, by default (whether Genesys also sends ``A``-``D``
#: is not known: the set is a setting of the server).
DEFAULT_DIGITS: FrozenSet[str] = frozenset("0123456789*#")

#: The longest text message the client accepts from us, in characters.
MAX_SERVER_MESSAGE = 65535

#: The ``conversationId`` and ``participant.id`` of a connection probe.
NULL_UUID = "00000000-0000-0000-0000-000000000000"


class MalformedMessage(IVRError):
    """
    A client text message that could not be understood.

    :ivar reason: what is wrong with it (never the message's content)
    """

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"malformed Audio Connector message: {reason}")


_DURATION = re.compile(
    r"P(?:(?P<d>[0-9]+)D)?(?:T(?:(?P<h>[0-9]+)H)?(?:(?P<m>[0-9]+)M)?(?:(?P<s>[0-9]+(?:\.[0-9]+)?)S)?)?"
)


def parse_duration(text: object) -> Optional[float]:
    """
    Seconds in an ISO 8601 duration such as ``PT1.6S``, or ``None`` when the
    value is not one.
    """
    if not isinstance(text, str) or text in ("P", "PT") or text.endswith("T"):
        return None
    m = _DURATION.fullmatch(text)
    if m is None:
        return None
    days, hours, minutes = (int(m.group(k) or 0) for k in "dhm")
    return ((days * 24 + hours) * 60 + minutes) * 60 + float(m.group("s") or 0)


def format_duration(seconds: float) -> str:
    "An ISO 8601 duration (``PT0.4S``) for a number of seconds."
    text = f"{seconds:.3f}".rstrip("0").rstrip(".")
    return f"PT{text}S"


# --- client to server --------------------------------------------------------


@attrs.frozen
class Participant:
    """
    The caller, as ``open`` describes them.  ``ani`` is a raw caller id:
    never put it in a log line.
    """

    id: str = ""
    ani: str = attrs.field(default="", repr=False)
    ani_name: str = attrs.field(default="", repr=False)
    dnis: str = ""


@attrs.frozen
class Open:
    """
    The client opens the session.

    :ivar media: the media offers, each as sent
    :ivar input_variables: the Architect action's Inputs (string values only;
        others are dropped)
    """

    organization_id: str
    conversation_id: str
    participant: Participant
    media: Tuple[Mapping[str, Any], ...]
    language: Optional[str] = None
    input_variables: Mapping[str, str] = attrs.field(factory=dict, repr=False)
    custom_config: Optional[Mapping[str, Any]] = None

    @property
    def is_probe(self) -> bool:
        "Whether this is a connection probe (answered, never served)."
        return self.conversation_id == NULL_UUID and self.participant.id in (NULL_UUID, "")


@attrs.frozen
class Ping:
    "The client checks we are alive: answer ``pong`` at once."

    rtt: Optional[float] = None


@attrs.frozen
class Dtmf:
    "The caller pressed a key."

    digit: str


@attrs.frozen
class PlaybackStarted:
    "The client started playing audio we sent."


@attrs.frozen
class PlaybackCompleted:
    "The client finished playing the audio sent so far."


@attrs.frozen
class Paused:
    "The client paused the audio stream."


@attrs.frozen
class Resumed:
    "The client resumed the audio stream."

    start: Optional[float] = None
    discarded: Optional[float] = None


@attrs.frozen
class Discarded:
    "The client dropped some of the caller's audio."

    start: Optional[float] = None
    discarded: Optional[float] = None


@attrs.frozen
class Update:
    "The client changed a session setting."

    language: Optional[str] = None


@attrs.frozen
class ClientError:
    """
    The client reports an error; with code 429 it asks us to send nothing
    for ``retry_after`` seconds.
    """

    code: int
    message: str = ""
    retry_after: Optional[float] = None


@attrs.frozen
class Close:
    "The client ends the session: answer ``closed``."

    reason: str = ""


@attrs.frozen
class Invalid:
    """
    A message with a sound envelope whose parameters do not fit its type
    (a ``dtmf`` with an unknown key, an ``error`` without a code).  Its
    ``seq`` still counts; the message itself is logged and ignored.

    :ivar reason: what is wrong (never the message's content)
    """

    type: str
    reason: str


@attrs.frozen
class Ignored:
    """
    A message of a type this server does not handle (a new one, or one only
    a server sends).  Kept so that it can be counted and logged.
    """

    type: str


ClientMessage = Union[
    Open,
    Ping,
    Dtmf,
    PlaybackStarted,
    PlaybackCompleted,
    Paused,
    Resumed,
    Discarded,
    Update,
    ClientError,
    Close,
    Invalid,
    Ignored,
]


@attrs.frozen
class Received:
    """
    One client message with its envelope.
    """

    id: str
    seq: int
    serverseq: Optional[int]
    position: Optional[float]
    message: ClientMessage


def _int(obj: Mapping[str, Any], key: str) -> Optional[int]:
    value = obj.get(key)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return None


def _text(obj: Mapping[str, Any], key: str) -> Optional[str]:
    value = obj.get(key)
    return value if isinstance(value, str) else None


def _open(p: Mapping[str, Any]) -> Open:
    org, conv = _text(p, "organizationId"), _text(p, "conversationId")
    if org is None or conv is None:
        raise MalformedMessage("open without string organizationId and conversationId")
    raw_part = p.get("participant")
    part = raw_part if isinstance(raw_part, dict) else {}
    media = p.get("media")
    if not isinstance(media, list) or not all(isinstance(m, dict) for m in media):
        raise MalformedMessage("open without a media list")
    raw_vars = p.get("inputVariables")
    variables = (
        {k: v for k, v in raw_vars.items() if isinstance(v, str)}
        if isinstance(raw_vars, dict)
        else {}
    )
    custom = p.get("customConfig")
    return Open(
        organization_id=org,
        conversation_id=conv,
        participant=Participant(
            _text(part, "id") or "",
            _text(part, "ani") or "",
            _text(part, "aniName") or "",
            _text(part, "dnis") or "",
        ),
        media=tuple(media),
        language=_text(p, "language"),
        input_variables=variables,
        custom_config=custom if isinstance(custom, dict) else None,
    )


def _body(kind: str, p: Mapping[str, Any], digits: FrozenSet[str]) -> ClientMessage:
    if kind == "open":
        return _open(p)
    if kind == "ping":
        return Ping(parse_duration(p.get("rtt")))
    if kind == "dtmf":
        digit = p.get("digit")
        if not isinstance(digit, str) or digit not in digits:
            raise MalformedMessage("dtmf without a single valid digit")
        return Dtmf(digit)
    if kind == "playback_started":
        return PlaybackStarted()
    if kind == "playback_completed":
        return PlaybackCompleted()
    if kind == "paused":
        return Paused()
    if kind == "resumed":
        return Resumed(parse_duration(p.get("start")), parse_duration(p.get("discarded")))
    if kind == "discarded":
        return Discarded(parse_duration(p.get("start")), parse_duration(p.get("discarded")))
    if kind == "update":
        return Update(_text(p, "language"))
    if kind == "error":
        code = _int(p, "code")
        if code is None:
            raise MalformedMessage("error without an integer code")
        return ClientError(code, _text(p, "message") or "", parse_duration(p.get("retryAfter")))
    if kind == "close":
        return Close(_text(p, "reason") or "")
    return Ignored(kind)


def parse_message(
    text: Union[str, bytes], digits: FrozenSet[str] = DEFAULT_DIGITS
) -> Received:
    """
    Parse one text frame from the client.

    :param digits: the keys accepted in ``dtmf``
    :raises MalformedMessage: when the frame is not a JSON object with a
        string ``id`` and ``type``, an integer ``seq`` and an object
        ``parameters``.  The reason never quotes the frame.
    :return: the message; types this server does not handle are
        :class:`Ignored`, and known types whose parameters are wrong are
        :class:`Invalid`
    """
    try:
        obj = orjson.loads(text)
    except ValueError:
        raise MalformedMessage("not valid JSON") from None
    if not isinstance(obj, dict):
        raise MalformedMessage("not a JSON object")
    kind, session_id, seq = _text(obj, "type"), _text(obj, "id"), _int(obj, "seq")
    if kind is None:
        raise MalformedMessage("no string 'type'")
    if session_id is None:
        raise MalformedMessage("no string 'id'")
    if seq is None:
        raise MalformedMessage("no integer 'seq'")
    params = obj.get("parameters")
    if not isinstance(params, dict):
        raise MalformedMessage("no 'parameters' object")
    body: ClientMessage
    try:
        body = _body(kind, params, digits)
    except MalformedMessage as e:
        body = Invalid(kind, e.reason)
    return Received(
        session_id, seq, _int(obj, "serverseq"), parse_duration(obj.get("position")), body
    )


def choose_media(
    offers: Tuple[Mapping[str, Any], ...],
    format: str = "PCMU",
    rate: int = 8000,
    channels: Tuple[str, ...] = ("external",),
) -> Optional[Mapping[str, Any]]:
    """
    The first offer of audio in ``format`` at ``rate`` on exactly
    ``channels``, as offered, or ``None``.
    """
    for offer in offers:
        offered = offer.get("channels")
        if (
            offer.get("type", "audio") == "audio"
            and offer.get("format") == format
            and offer.get("rate") == rate
            and isinstance(offered, list)
            and tuple(offered) == channels
        ):
            return offer
    return None
