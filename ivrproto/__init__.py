"""
ivrproto: personalized IVR menus in real time over the Genesys Cloud Call
Control WebSocket, on Twisted.

How a call flows through the package::

    POST /v1/calls ─► intake/ (resources, guard, signing, overload)
                         │  admitted
                         ▼
                      session/registry ─► session/runner ─► session/machine
                         │                    │  (automat: menus, keys, timers)
                         │                    ├─► clients/ (OAuth token, profile
                         │                    │   lookup: cache, budget, breaker)
                         │                    ├─► menu/ (the caller's menu, hours,
                         │                    │   closure)
                         │                    └─► callcontrol/ (the Call Control
                         │                        WebSocket: play, collect, transfer)
                         ▼
                      outcome: transferred, hung up or failed (and /metrics)

    Audio Connector ─► audioconnector/ ─► the same session machine and lookup

The wiring is :mod:`ivrproto.service` (a ``MultiService`` of child
services: clients, loop-lag monitor, listeners), made by ``twistd ivr``
(:mod:`ivrproto.tap`, the one place that takes the global reactor) or by
hand; :mod:`ivrproto.emulator` stands in for the platform.

Public entry points, each imported from its own module (this package
imports nothing, so that ``import ivrproto`` stays cheap):

- :func:`ivrproto.service.make_ivr_service` and
  :class:`ivrproto.service.IVRService`: the service;
- :func:`ivrproto.callcontrol.protocol.connect_call_control`: one Call
  Control connection;
- :func:`ivrproto.session.machine.new_session`: one call's state machine;
- :class:`ivrproto.emulator.Platform`: the local platform emulator;
- :mod:`ivrproto.testing`: in-memory fakes for tests;
- :func:`ivrproto.config.load_config`: the configuration;
- ``ivr`` (:mod:`ivrproto.cli.main`): ``ivr check`` and ``ivr simulate``.
"""

__all__ = ["__version__"]

#: The one place the version is kept: packaging reads it (pyproject.toml), and
#: so do ``ivr --version`` and ``twistd ivr --version``.
__version__ = "0.1.0"
