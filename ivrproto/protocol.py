"""
The Call Control WebSocket client, under the import path the documentation
gives since the first release: :func:`connect_call_control`, the protocol,
its factory and the listener interface.  The implementation lives in
:mod:`ivrproto.callcontrol.protocol` and :mod:`ivrproto.callcontrol.connect`.
"""

from ivrproto.callcontrol.connect import CallControlFactory, connect_call_control
from ivrproto.callcontrol.protocol import CallControlListener, CallControlProtocol, describe_close

__all__ = [
    "CallControlFactory",
    "CallControlListener",
    "CallControlProtocol",
    "connect_call_control",
    "describe_close",
]
