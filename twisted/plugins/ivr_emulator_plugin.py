"""
The ``twistd ivr-emulator`` plugin: the local platform emulator.
"""

from twisted.application.service import ServiceMaker

ivr_emulator = ServiceMaker(
    "ivrproto emulator",
    "ivrproto.emulator.tap",
    "Run the local platform emulator (token, profiles, Call Control) "
    "and place a scenario's calls.",
    "ivr-emulator",
)
