"""
The rules a bot server must keep, as the Genesys side of an Audio Connector
session checks them: :class:`ServerChecks` is fed every message the server
sends and returns each breach as a sentence.

It has no I/O and no clock; :class:`~ivrproto.emulator.genesys.GenesysCall`
owns one per session.  It is written from the protocol's rules, not from
ivrproto's server code, so that it can catch that code's mistakes.
"""

from __future__ import annotations

from typing import Any, List, Mapping, Optional, Sequence

__all__ = ["MAX_AUDIO_FRAME", "MAX_TEXT", "SERVER_TYPES", "ServerChecks"]

#: The message types a server may send; the client rejects any other.
SERVER_TYPES = frozenset(
    {"opened", "pong", "event", "disconnect", "closed", "pause", "resume", "updated", "reconnect"}
)
#: The longest text message the client accepts, in characters.
MAX_TEXT = 65535
#: The largest binary message a server sends (Genesys's sample server).
MAX_AUDIO_FRAME = 64000

_DISCONNECT_REASONS = frozenset({"completed", "unauthorized", "error"})
_DISPOSITIONS = frozenset({"match", "no_match", "no_input"})


class ServerChecks:
    """
    The server's side of one session, as far as the client can see it.

    :param session_id: every message's ``id`` must be this
    :param offers: the media offers of our ``open``; ``opened`` must choose
        exactly one of them, unchanged
    :param probe: the session is a connection probe: nothing but ``opened``
        and ``closed`` may come
    :ivar serverseq: the last server ``seq`` seen
    :ivar opened: ``opened`` has arrived
    :ivar disconnect: the ``disconnect`` message, once it arrived
    :ivar closed: ``closed`` has arrived
    """

    def __init__(
        self, session_id: str, offers: Sequence[Mapping[str, Any]], probe: bool = False
    ) -> None:
        self.session_id = session_id
        self.offers = [dict(o) for o in offers]
        self.probe = probe
        self.serverseq = 0
        self.opened = False
        self.disconnect: Optional[Mapping[str, Any]] = None
        self.closed = False

    def text(
        self,
        message: object,
        length: int,
        our_seq: int,
        close_sent: bool,
        ping_seq: Optional[int] = None,
    ) -> List[str]:
        """
        Check one text message.

        :param message: the decoded JSON
        :param length: its length on the wire, in characters
        :param our_seq: the ``seq`` of the last message we sent
        :param close_sent: whether we have sent ``close``
        :param ping_seq: for a ``pong``, the ``seq`` of the ping it answers
        :return: the breaches, in words (empty when all is well)
        """
        if not isinstance(message, dict):
            return ["a text message that is not a JSON object"]
        problems: List[str] = []
        kind = message.get("type")
        name = kind if isinstance(kind, str) else "message"
        if length > MAX_TEXT:
            problems.append(f"{name} of {length} characters (over {MAX_TEXT})")
        if message.get("version") != "2":
            problems.append(f"{name} with version {message.get('version')!r}")
        if message.get("id") != self.session_id:
            problems.append(f"{name} for another session id")
        if not isinstance(kind, str) or kind not in SERVER_TYPES:
            problems.append(f"unknown server message type {kind!r}")
        problems.extend(self._sequence(message, name, our_seq, ping_seq))
        parameters = message.get("parameters")
        if not isinstance(parameters, dict):
            problems.append(f"{name} without parameters")
            parameters = {}
        problems.extend(self._state(name, parameters, close_sent))
        return problems

    def audio(self, frame: bytes) -> List[str]:
        "Check one binary message from the server."
        problems = []
        if not self.opened:
            problems.append("audio before opened")
        elif self.probe:
            problems.append("audio during a connection probe")
        # Audio after our close is no breach: it was on its way.
        if self.closed:
            problems.append("audio after closed")
        elif self.disconnect is not None:
            problems.append("audio after disconnect")
        if len(frame) > MAX_AUDIO_FRAME:
            problems.append(f"audio frame of {len(frame)} bytes (over {MAX_AUDIO_FRAME})")
        return problems

    # -- the rules ---------------------------------------------------------------

    def _sequence(
        self, message: Mapping[str, Any], name: str, our_seq: int, ping_seq: Optional[int]
    ) -> List[str]:
        problems = []
        seq = message.get("seq")
        if isinstance(seq, bool) or not isinstance(seq, int):
            problems.append(f"{name} without an integer seq")
        else:
            if seq != self.serverseq + 1:
                problems.append(f"{name} seq {seq} after {self.serverseq}")
            self.serverseq = seq
        clientseq = message.get("clientseq")
        if isinstance(clientseq, bool) or not isinstance(clientseq, int):
            problems.append(f"{name} without an integer clientseq")
            return problems
        if clientseq > our_seq:
            problems.append(f"{name} clientseq {clientseq} ahead of our seq {our_seq}")
        if name == "pong" and ping_seq is not None and clientseq != ping_seq:
            problems.append(f"pong clientseq {clientseq}, not the ping's seq {ping_seq}")
        if name == "pong" and ping_seq is None:
            problems.append("pong without a ping")
        return problems

    def _state(self, name: str, parameters: Mapping[str, Any], close_sent: bool) -> List[str]:
        if self.closed:
            return [f"{name} after closed"]
        if name == "closed":
            self.closed = True
            problems = [] if close_sent else ["closed without close"]
            if parameters:
                problems.append("closed with parameters")
            return problems
        if not self.opened and name not in ("opened", "disconnect"):
            return [f"{name} before opened"]
        if name == "opened":
            return self._opened(parameters)
        if name == "disconnect":
            return self._disconnect(parameters)
        if name == "event":
            return self._event(parameters)
        return []

    def _opened(self, parameters: Mapping[str, Any]) -> List[str]:
        if self.opened:
            return ["opened twice"]
        self.opened = True
        media = parameters.get("media")
        if not isinstance(media, list) or len(media) != 1:
            return ["opened without exactly one media"]
        if media[0] not in self.offers:
            return ["opened media that is not one of the offers"]
        return []

    def _disconnect(self, parameters: Mapping[str, Any]) -> List[str]:
        if self.disconnect is not None:
            return ["disconnect twice"]
        self.disconnect = parameters
        problems = []
        if parameters.get("reason") not in _DISCONNECT_REASONS:
            problems.append(f"disconnect reason {parameters.get('reason')!r}")
        variables = parameters.get("outputVariables", {})
        if not isinstance(variables, dict):
            problems.append("outputVariables that are not an object")
        else:
            for key, value in variables.items():
                if not isinstance(value, str):
                    problems.append(f"output variable {key!r} is not a string")
        if self.probe and parameters.get("reason") != "unauthorized":
            problems.append("disconnect during a connection probe")
        return problems

    def _event(self, parameters: Mapping[str, Any]) -> List[str]:
        if self.probe:
            return ["event during a connection probe"]
        if self.disconnect is not None:
            return ["event after disconnect"]
        entities = parameters.get("entities")
        if not isinstance(entities, list) or not entities:
            return ["event without entities"]
        problems = []
        for entity in entities:
            if not isinstance(entity, dict) or not isinstance(entity.get("type"), str):
                problems.append("event entity without a type")
            elif entity["type"] == "bot_turn_response":
                data = entity.get("data")
                if not isinstance(data, dict) or data.get("disposition") not in _DISPOSITIONS:
                    problems.append("bot_turn_response without a known disposition")
        return problems
