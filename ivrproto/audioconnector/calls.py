"""
The Audio Connector's side of the service: the listener's factory, and the
call logic of each call (the intake's menus, lookup and opening hours,
joined to the Audio Connector session by a ``SessionBridge``).
:class:`~ivrproto.service.IVRService` makes one :class:`AudioConnectorCalls`
when ``[audio_connector]`` is on, and serves its ``factory``.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from ivrproto.config import Config

__all__ = ["AudioConnectorCalls"]


class AudioConnectorCalls:
    """
    The Audio Connector factory and its call counts.

    :param reactor: the reactor the sessions' timers run on
    :param config: the current configuration (a reload's menus and timings
        reach calls that start after it)
    :param prompts: the loaded prompt library
    :param lookup: the intake's :class:`~ivrproto.clients.lookup.ProfileLookup`
    :param hours_now: the opening hours (and closure) a call arriving now gets
    :ivar factory: the ``AudioConnectorFactory`` the listener serves
    :ivar calls: calls taken
    :ivar outcomes: calls ended, by outcome (``selected``, ``operator``...)
    :ivar on_call: when set, told ``(bridge, core)`` of each new call
        (``ivr simulate`` reads the call's timeline and prompts there)
    """

    log = Logger()

    def __init__(
        self,
        reactor: IReactorTime,
        config: Callable[[], Config],
        prompts: Any,
        lookup: Any,
        hours_now: Callable[[], Any],
    ) -> None:
        from ivrproto.audioconnector.auth import Authenticator, AuthSettings
        from ivrproto.audioconnector.server import AudioConnectorFactory
        from ivrproto.audioconnector.session import SessionSettings

        self._reactor = reactor
        self._config = config
        self._lookup = lookup
        self._hours_now = hours_now
        self.calls = 0
        self.outcomes: dict[str, int] = {}
        self.on_call: Optional[Callable[[Any, Any], None]] = None
        #: The calls in progress, by session id: their ``SessionBridge``.
        self.active: dict[str, Any] = {}
        ac = config().audio_connector
        assert ac.api_key is not None  # check_audio_connector
        authenticator = Authenticator(
            reactor, {ac.api_key: ac.client_secret}, AuthSettings(**dict(ac.auth))
        )
        self.factory = AudioConnectorFactory(
            reactor,
            authenticator,
            {ac.path: self.new_call},
            prompts,
            SessionSettings(**dict(ac.session)),
            max_message_size=ac.max_message_size,
            max_write_buffer=ac.max_write_buffer,
            write_timeout=ac.write_timeout,
        )

    def stats(self) -> dict[str, Any]:
        """
        The ``audio_connector`` section of ``GET /v1/stats``.
        """
        return {
            "calls": self.calls,
            "active": len(self.factory.sessions),
            "in_progress": len(self.active),
            "refused": self.factory.refusals,
            "refused_by_reason": dict(self.factory.refusals_by_reason),
            "outcomes": dict(self.outcomes),
            "prompts_cached": self.factory.prompts.cached,
            **self.factory.counts(),
        }

    def profile_key(self, info: Any) -> Optional[str]:
        """
        The profile key of a call: the configured input variable, else the
        caller's ani as E.164.
        """
        from ivrproto.audioconnector.adapter import ani_to_e164

        ac = self._config().audio_connector
        if ac.profile_key:
            value = info.input_variables.get(ac.profile_key)
            if isinstance(value, str) and value.strip():
                return value.strip()
        return ani_to_e164(info.ani or "")

    def new_call(self, call: Any) -> Any:
        """
        The call logic of one Audio Connector call: the menus' state machine,
        joined to the session by a ``SessionBridge``; the lookup is the
        intake's (its budget, cache and fallbacks).
        """
        from ivrproto.audioconnector.adapter import OutputNames, SessionBridge
        from ivrproto.session.machine import new_session

        config = self._config()
        ac = config.audio_connector
        info = call.info
        key = self.profile_key(info)
        self.calls += 1
        names = OutputNames(**{name: (value or None) for name, value in ac.outputs})
        book, timing = config.menu, config.timing
        lookup = self._lookup
        holder: dict[str, Any] = {}

        def lookup_profile() -> None:
            session = holder["session"]
            if key is None:
                # Nothing to look up by: the default menu, at once.
                session.profile_resolved(None, "not-found")
                return

            def known(result: Any) -> None:
                session.profile_resolved(result.attributes, result.outcome)

            def failed(failure: Failure) -> None:
                # The lookup layer answers every lookup; this is a bug.
                self.log.failure("Audio Connector profile lookup broke; default menu", failure)
                session.profile_resolved(None, "failed")

            lookup.lookup(key, timing.profile_budget).addCallbacks(known, failed)

        def finished(outcome: Any) -> None:
            self.active.pop(info.session_id, None)
            self._ended(info.session_id, outcome)

        bridge = SessionBridge(call, lookup_profile, names=names, finished=finished)
        # The same opening hours (and emergency closure) as an intake call.
        session, core = new_session(
            f"ac-{info.session_id}", book, timing, self._reactor, bridge, self._hours_now()
        )
        holder["session"] = session
        bridge.attach(session, lambda: core.collected, core)
        self.active[info.session_id] = bridge
        if self.on_call is not None:
            self.on_call(bridge, core)
        return bridge

    # -- draining (SIGTERM) ------------------------------------------------------

    def start_draining(self) -> None:
        "Refuse new upgrades (503); the calls in progress go on."
        self.factory.accepting = False

    def drain(self) -> None:
        """
        The drain deadline: end every call still in progress as a Call
        Control call is ended (the operator, or the caller's choice), each
        on its own.
        """
        for bridge in list(self.active.values()):
            try:
                bridge.drain()
            except Exception:
                self.log.failure("draining an Audio Connector call broke")

    def when_idle(self) -> Any:
        "Fires once no Audio Connector session is open."
        return self.factory.when_idle()

    def abort_sessions(self) -> None:
        "Drop every session still open (past the drain's close allowance)."
        self.factory.abort_sessions()

    def _ended(self, session_id: str, outcome: Any) -> None:
        from ivrproto.audioconnector.adapter import outcome_value

        value = outcome_value(outcome)
        self.outcomes[value] = self.outcomes.get(value, 0) + 1
        # The session id is Genesys's, not the caller's: it may be logged.
        self.log.info(
            "{session_id}: Audio Connector call ended: {outcome} ({reason}); target "
            "{target}",
            session_id=session_id,
            outcome=value,
            reason=outcome.reason,
            target=outcome.target or "none",
        )
