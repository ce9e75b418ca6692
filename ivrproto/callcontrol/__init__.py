"""
The Call Control front end: ivrproto as the WebSocket client of the
platform's per-call Call Control endpoint.  The wire values are in
:mod:`ivrproto.messages`; the Autobahn protocol, its factory and
:func:`~ivrproto.callcontrol.protocol.connect_call_control` are in
:mod:`~ivrproto.callcontrol.protocol` (also importable as
:mod:`ivrproto.protocol`).
"""
