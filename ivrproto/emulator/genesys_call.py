"""
One Audio Connector session as Genesys Cloud runs it, without the socket:
:class:`GenesysCall` (see :mod:`ivrproto.emulator.genesys` for the script
and the result it fills).
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

import orjson
from twisted.internet.interfaces import IDelayedCall, IReactorTime

from ivrproto.audioconnector.messages import format_duration
from ivrproto.emulator.genesys import (
    NULL_UUID,
    ULAW_SILENCE,
    CallerWire,
    GenesysCallResult,
    GenesysSettings,
    parse_caller_script,
)
from ivrproto.emulator.genesys_checks import ServerChecks

__all__ = ["GenesysCall"]

#: The bot's audio is PCMU at 8 kHz: one byte per sample.
BYTES_PER_SECOND = 8000


class GenesysCall:
    """
    The Genesys side of one session, from the upgrade to the socket's end.

    The owner calls :meth:`upgraded` (or :meth:`refused`), then
    :meth:`text_received` and :meth:`audio_received` for what the server
    sends, and :meth:`connection_lost` once.  Everything is recorded in
    :attr:`result`; the server's breaches go to its ``violations``.

    :param clock: times everything (pings, caller audio, playout, script)
    :param wire: the socket
    :param result: filled in as the session goes
    """

    def __init__(
        self,
        clock: IReactorTime,
        wire: CallerWire,
        result: GenesysCallResult,
        settings: GenesysSettings = GenesysSettings(),
        conversation_id: str = "b6cf730c-371a-4682-9779-5ee2e8d0c190",
        participant_id: str = "91c32d13-d078-40ab-8750-42bd52c48f6d",
    ) -> None:
        self._clock = clock
        self._wire = wire
        self.result = result
        self.settings = settings
        self._conversation_id = conversation_id
        self._participant_id = participant_id
        spec = result.spec
        self.checks = ServerChecks(result.session_id, settings.offers, spec.probe)
        self._steps = list(parse_caller_script(spec.script))
        self.seq = 0
        self.position = 0.0
        self.close_sent = False
        self._pings: List[int] = []  # seqs of unanswered pings
        self._timers: Dict[str, IDelayedCall] = {}
        self._playout_end = 0.0
        self._playing = False
        self._turn_pending = False  # a bot turn that no step consumed yet
        self._waiting: Optional[str] = None  # what the current step waits for
        self._settle_time = 0.0
        self._silence = ULAW_SILENCE * settings.frame_bytes

    # -- from the owner ----------------------------------------------------------

    def upgraded(self) -> None:
        "The upgrade succeeded: send ``open``."
        self.result.upgraded_at = self._clock.seconds()
        self._send("open", **self._open_parameters())
        self._later("open", self.settings.open_timeout, self._timed_out, "no opened")
        self._later("max", self.settings.max_call, self._too_long)

    def refused(self, reason: str, unreachable: bool = False) -> None:
        "The upgrade failed (a 401, say) or no connection was made."
        self.result.refusal = reason
        self.result.finish(self._clock.seconds(), "unreachable" if unreachable else "refused")

    def text_received(self, payload: bytes) -> None:
        now = self._clock.seconds()
        try:
            message = orjson.loads(payload)
        except orjson.JSONDecodeError:
            self.result.violations.append("a text message that is not JSON")
            return
        kind = message.get("type") if isinstance(message, dict) else None
        ping = self._pings[0] if kind == "pong" and self._pings else None
        self.result.violations.extend(
            self.checks.text(message, len(payload.decode("utf-8", "replace")), self.seq,
                             self.close_sent, ping)
        )
        if not isinstance(message, dict):
            return
        self.result.messages.append((now, message))
        parameters = message.get("parameters")
        handler = getattr(self, f"_on_{kind}", None) if isinstance(kind, str) else None
        if handler is not None and isinstance(parameters, dict):
            handler(parameters)

    def audio_received(self, frame: bytes) -> None:
        now = self._clock.seconds()
        r = self.result
        r.violations.extend(self.checks.audio(frame))
        r.audio_times.append(now)
        r.audio_sizes.append(len(frame))
        if self.settings.keep_audio:
            r.frames.append(frame)
        if self.close_sent or self.checks.disconnect is not None:
            return
        if not self._playing:
            self._playing = True
            self._turn_pending = True
            if self.settings.report_playback and self.checks.opened:
                self._send("playback_started")
            self._step_event("turn")
        self._playout_end = max(now, self._playout_end) + len(frame) / BYTES_PER_SECOND
        if "playout" not in self._timers:
            # One timer per run of audio, moved on when it fires early.
            self._later("playout", self._playout_end - now, self._played_out)
        self._step_event("audio")

    def connection_lost(self, code: Optional[int] = None) -> None:
        "The socket is gone (the last call)."
        self._cancel_all()
        r = self.result
        r.close_code = code
        if r.end is None:
            if self.checks.closed:
                disconnect = self.checks.disconnect
                r.end = (
                    "probe" if r.spec.probe
                    else str(disconnect.get("reason")) if disconnect is not None
                    else "hangup"
                )
            else:
                r.end = "dropped"
        r.finish(self._clock.seconds(), r.end)

    # -- server messages ---------------------------------------------------------

    def _on_opened(self, parameters: Dict[str, Any]) -> None:
        self._cancel("open")
        if self.result.opened_at is not None:
            return
        self.result.opened_at = self._clock.seconds()
        if self.result.spec.probe:
            self._close("end")
            return
        if self.settings.stream_audio:
            self._caller_audio()
        self._later("ping", self.settings.ping_delay, self._ping)
        self._run_steps()

    def _on_pong(self, parameters: Dict[str, Any]) -> None:
        if self._pings:
            self._pings.pop(0)

    def _on_event(self, parameters: Dict[str, Any]) -> None:
        entities = parameters.get("entities")
        for entity in entities if isinstance(entities, list) else ():
            kind = entity.get("type") if isinstance(entity, dict) else None
            if kind == "bot_turn_response":
                self.result.turns.append(self._clock.seconds())
                self._turn_pending = True
                self._step_event("turn")
            elif kind == "barge_in":
                self.result.barge_ins.append(self._clock.seconds())
                self._flush_playout()

    def _on_disconnect(self, parameters: Dict[str, Any]) -> None:
        r = self.result
        variables = parameters.get("outputVariables")
        r.output_variables = dict(variables) if isinstance(variables, dict) else {}
        info = parameters.get("info")
        r.disconnect_info = info if isinstance(info, str) else None
        self._stop_playout()
        if not self.close_sent:
            self._close("disconnect")

    def _on_closed(self, parameters: Dict[str, Any]) -> None:
        self._cancel_all()
        self._wire.close()

    def _on_pause(self, parameters: Dict[str, Any]) -> None:
        self._send("paused")

    def _on_resume(self, parameters: Dict[str, Any]) -> None:
        self._send("resumed", start=format_duration(self.position), discarded="PT0S")

    # -- what we send ------------------------------------------------------------

    def _send(self, kind: str, **parameters: Any) -> None:
        if self.close_sent:
            return
        self.seq += 1
        message = {
            "version": "2",
            "type": kind,
            "id": self.result.session_id,
            "seq": self.seq,
            "serverseq": self.checks.serverseq,
            "position": format_duration(self.position),
            "parameters": parameters,
        }
        self.result.sent.append(message)
        self._wire.send_text(orjson.dumps(message))

    def _close(self, reason: str) -> None:
        self._send("close", reason=reason)
        self.close_sent = True
        for name in ("caller-audio", "ping", "playout", "step", "max"):
            self._cancel(name)
        self._later("close", self.settings.close_timeout, self._timed_out, "no closed")

    def _open_parameters(self) -> Dict[str, Any]:
        spec = self.result.spec
        probe = spec.probe
        params: Dict[str, Any] = {
            "organizationId": self.settings.organization_id,
            "conversationId": NULL_UUID if probe else self._conversation_id,
            "participant": {
                "id": NULL_UUID if probe else self._participant_id,
                "ani": "" if probe else spec.ani,
                "aniName": "",
                "dnis": "" if probe else "tel:+18005550199",
            },
            "media": [dict(o) for o in self.settings.offers],
        }
        if spec.language is not None and not probe:
            params["language"] = spec.language
        if spec.input_variables and not probe:
            params["inputVariables"] = dict(spec.input_variables)
        return params

    def _caller_audio(self) -> None:
        frame = self._silence
        self._wire.send_audio(frame)
        self.position += len(frame) / BYTES_PER_SECOND
        self._later("caller-audio", len(frame) / BYTES_PER_SECOND, self._caller_audio)

    def _ping(self) -> None:
        if self._pings:
            self.result.violations.append(
                f"no pong within {self.settings.ping_interval:g} s for ping {self._pings[0]}"
            )
        self._send("ping")
        self._pings.append(self.seq)
        self._later("ping", self.settings.ping_interval, self._ping)

    # -- playout -----------------------------------------------------------------

    def _played_out(self) -> None:
        self._timers.pop("playout", None)
        left = self._playout_end - self._clock.seconds()
        if left > 1e-6:
            self._later("playout", left, self._played_out)
            return
        self._playing = False
        if self.settings.report_playback:
            self._send("playback_completed")
        self._step_event("played")

    def _flush_playout(self) -> None:
        "A ``barge_in``: what we hold is dropped."
        was_playing = self._playing
        self._stop_playout()
        if was_playing and self.settings.report_playback and self.settings.completed_after_barge_in:
            self._send("playback_completed")
        if was_playing:
            self._step_event("played")

    def _stop_playout(self) -> None:
        self._cancel("playout")
        self._playing = False
        self._playout_end = self._clock.seconds()

    # -- the script --------------------------------------------------------------

    def _run_steps(self) -> None:
        "Run steps until one has to wait (or the script or the call is over)."
        while self._steps and self._waiting is None and not self.close_sent:
            name, argument = self._steps.pop(0)
            if name in ("prompts", "menu"):
                self._waiting = name
                self._settle_time = float(argument) if name == "prompts" else 0.05
                if self._turn_pending:
                    self._later("step", self._settle_time, self._settled)
            elif name == "audio":
                if not self._playing:
                    self._waiting = "audio"
            elif name == "press":
                for key in argument:
                    self.result.keys.append((self._clock.seconds(), key, self._playing))
                    self._send("dtmf", digit=key)
            elif name == "wait":
                self._waiting = "wait"
                self._later("step", argument, self._resume)
            elif name == "hangup":
                self._close("end")
            elif name == "drop":
                self._cancel_all()
                self.close_sent = True
                self._wire.drop()
            elif name == "error":
                extra = {"retryAfter": "PT1S"} if argument == 429 else {}
                self._send("error", code=argument, message="emulated client error", **extra)

    def _step_event(self, what: str) -> None:
        "Something a waiting step may be waiting for happened."
        waiting = self._waiting
        if waiting in ("prompts", "menu") and what == "turn":
            self._later("step", self._settle_time, self._settled)
        elif waiting == "audio" and what == "audio":
            self._resume()
        elif waiting == "played" and what == "played":
            self._resume()

    def _settled(self) -> None:
        self._timers.pop("step", None)
        self._turn_pending = False
        if self._waiting == "menu" and self._playing:
            self._waiting = "played"
            return
        self._resume()

    def _resume(self) -> None:
        self._timers.pop("step", None)
        self._waiting = None
        self._run_steps()

    # -- timers ------------------------------------------------------------------

    def _timed_out(self, what: str) -> None:
        self._timers.clear()
        self.result.violations.append(what)
        self.result.end = "timeout"
        self._cancel_all()
        self._wire.drop()

    def _too_long(self) -> None:
        self._timers.pop("max", None)
        self.result.violations.append(f"the call lasted over {self.settings.max_call:g} s")
        self._close("end")

    def _later(self, name: str, delay: float, f: Any, *args: Any) -> None:
        self._cancel(name)
        self._timers[name] = self._clock.callLater(max(0.0, delay), f, *args)

    def _cancel(self, name: str) -> None:
        timer = self._timers.pop(name, None)
        if timer is not None and timer.active():
            timer.cancel()

    def _cancel_all(self) -> None:
        for name in list(self._timers):
            self._cancel(name)
