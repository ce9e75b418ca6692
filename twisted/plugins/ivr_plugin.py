"""
The ``twistd ivr`` plugin: the ivrproto service (see :mod:`ivrproto.tap`
for its options, ``twistd ivr --help`` for their text).
"""

from twisted.application.service import ServiceMaker

ivr = ServiceMaker(
    "ivrproto",
    "ivrproto.tap",
    "Personalized IVR menus over the Genesys Cloud Call Control API",
    "ivr",
)
