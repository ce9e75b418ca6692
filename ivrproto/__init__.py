"""
ivrproto: personalized IVR menus in real time over the Genesys Cloud Call
Control WebSocket, on Twisted.
"""

#: The one place the version is kept: packaging reads it (pyproject.toml), and
#: so do ``ivr --version`` and ``twistd ivr --version``.
__version__ = "0.1.0"
