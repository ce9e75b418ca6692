"""
ivrproto: personalized IVR menus in real time over the Genesys Cloud Call
Control WebSocket, on Twisted.
"""

__version__ = "0.1.0"
