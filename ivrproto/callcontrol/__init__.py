"""
The Call Control front end: ivrproto as the WebSocket client of the
platform's per-call Call Control endpoint.  The wire values are in
:mod:`ivrproto.messages`; the Autobahn protocol is in
:mod:`~ivrproto.callcontrol.protocol`, its factory and
:func:`~ivrproto.callcontrol.connect.connect_call_control` in
:mod:`~ivrproto.callcontrol.connect` (all importable as
:mod:`ivrproto.protocol`).
"""
