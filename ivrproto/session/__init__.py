"""
One call, from the moment it is accepted to its outcome.

- :mod:`~ivrproto.session.machine`: the state machine of one call (automat),
  with no I/O of its own and the clock injected; :func:`new_session` builds it.
  :mod:`~ivrproto.session.core` holds what a call knows
  (:class:`~ivrproto.session.core.SessionCore`),
  :mod:`~ivrproto.session.ports` its inputs, port and outcome, and
  :mod:`~ivrproto.session.ignored` the inputs each state ignores.
- :mod:`~ivrproto.session.runner`: :class:`~ivrproto.session.runner.CallRunner`
  carries out what the machine asks (token, profile lookup, the platform
  connection, commands) and feeds the answers back as inputs.
- :mod:`~ivrproto.session.registry`: the calls in progress, recent outcomes,
  drain.
- :mod:`~ivrproto.session.record`: what is kept of an ended call.
"""

from ivrproto.session.machine import new_session
from ivrproto.session.ports import CallPort, CallSession, Outcome

__all__ = ["CallPort", "CallSession", "Outcome", "new_session"]
