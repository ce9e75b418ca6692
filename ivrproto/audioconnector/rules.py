"""
The Audio Connector protocol's rules that need no state of a session, as
pure functions: whether a client message's envelope follows the sequence
rules (:func:`envelope_problem`), and how an ``open`` is answered
(:func:`answer_open`: a probe, a refusal, or the call's
:class:`~ivrproto.audioconnector.seam.CallInfo`).
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

import attrs

from ivrproto.audioconnector.auth import Accepted
from ivrproto.audioconnector.messages import Open, Received, choose_media
from ivrproto.audioconnector.replies import Disconnect
from ivrproto.audioconnector.seam import CallInfo, SessionSettings

__all__ = ["OpenAnswer", "answer_open", "envelope_problem"]


def envelope_problem(
    r: Received, session_id: Optional[str], clientseq: int, seq: int
) -> Optional[str]:
    """
    What is wrong with a message's envelope, or ``None``: another session's
    id, a client ``seq`` that is not the next, or a ``serverseq`` ahead of
    ours.
    """
    if session_id is not None and r.id != session_id:
        return "message for another session id"
    if r.seq != clientseq + 1:
        return f"client seq {r.seq} after {clientseq}"
    if r.serverseq is not None and r.serverseq > seq:
        return f"client serverseq {r.serverseq} ahead of our seq {seq}"
    return None


@attrs.frozen
class OpenAnswer:
    """
    How to answer an ``open``: exactly one of the fields is set.

    :ivar probe: a connection probe: the offer to copy into ``opened``
    :ivar refusal: the ``disconnect`` to send (wrong organization, no
        usable media), with ``why`` for the log
    :ivar call: an accepted call
    """

    probe: Optional[Mapping[str, Any]] = None
    refusal: Optional[Disconnect] = None
    why: str = ""
    call: Optional[CallInfo] = None


def answer_open(
    message: Open, accepted: Accepted, settings: SessionSettings, connector: str, session_id: str
) -> OpenAnswer:
    """
    Answer an ``open``: a probe gets ``opened`` with the offer it made (or a
    default one); an organization not accepted (the upgrade's header, or the
    ``organizations`` setting) gets ``disconnect{unauthorized}``; no PCMU
    offer on the external channel gets ``disconnect{error}``; anything else
    is a call.
    """
    s = settings
    header_org = accepted.organization_id
    wrong_org = (
        s.check_organization and header_org is not None and header_org != message.organization_id
    ) or (s.organizations is not None and message.organization_id not in s.organizations)
    media = choose_media(message.media, s.media_format, s.media_rate, s.media_channels)
    if message.is_probe:
        return OpenAnswer(probe=media or (message.media[0] if message.media else _default_media(s)))
    if wrong_org:
        return OpenAnswer(refusal=Disconnect("unauthorized", "organization not accepted"),
                          why="organization not accepted")
    if media is None:
        return OpenAnswer(refusal=Disconnect("error", "No supported media type was found."),
                          why="no supported media offered")
    return OpenAnswer(call=CallInfo(
        connector, session_id, message.organization_id, message.conversation_id,
        accepted.correlation_id, message.participant, message.language,
        message.input_variables, message.custom_config, media,
    ))


def _default_media(s: SessionSettings) -> Mapping[str, Any]:
    return {"type": "audio", "format": s.media_format, "channels": list(s.media_channels),
            "rate": s.media_rate}
