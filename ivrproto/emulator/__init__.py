"""
The local platform emulator: an independent implementation of the server
side of the platform contract (token endpoint, profile API, External
Contacts lookup and the Call Control WebSocket with scripted callers), on
one Twisted web port.

Start it with ``twistd -n ivr-emulator --config examples/emulator.toml``, or
embed it::

    platform = Platform(reactor, profiles={"CRM-1": {"membership_level": "premium"}})
    port = await platform.listen()
    record = platform.expect_call("call-1", "CRM-1", ["menu", "press:1"])
    ...
    await record.when_finished()
    await platform.stop()

It can also be Genesys Cloud's side of the Audio Connector, a client that
places scripted calls on the service's listener
(:func:`~ivrproto.emulator.genesys_client.place_genesys_calls`).

A person can also place a call over HTTP: ``POST /emulator/calls`` (see
:mod:`ivrproto.emulator.byhand`).
"""

from ivrproto.emulator.byhand import keys_script
from ivrproto.emulator.calllog import CallLog, CallRecord
from ivrproto.emulator.placing import accept_calls_by_hand, place_calls
from ivrproto.emulator.genesys import (
    GenesysCallResult,
    GenesysCallSpec,
    GenesysSettings,
    parse_caller_script,
    parse_caller_step,
)
from ivrproto.emulator.genesys_call import GenesysCall
from ivrproto.emulator.genesys_client import connect_genesys_call, genesys_headers, place_genesys_calls
from ivrproto.emulator.genesys_scenario import GenesysScenario, parse_genesys_scenario
from ivrproto.emulator.platform import ALL_SCOPES, FAULT_KINDS, Fault, Faults, Platform, PlatformStats
from ivrproto.emulator.scenario import CallSpec, Scenario, load_scenario, parse_scenario
from ivrproto.emulator.script import parse_step

__all__ = [
    "ALL_SCOPES",
    "FAULT_KINDS",
    "CallLog",
    "CallRecord",
    "CallSpec",
    "Fault",
    "GenesysCall",
    "GenesysCallResult",
    "GenesysCallSpec",
    "GenesysScenario",
    "GenesysSettings",
    "Faults",
    "Platform",
    "PlatformStats",
    "Scenario",
    "accept_calls_by_hand",
    "connect_genesys_call",
    "genesys_headers",
    "keys_script",
    "load_scenario",
    "parse_caller_script",
    "parse_caller_step",
    "parse_genesys_scenario",
    "parse_scenario",
    "parse_step",
    "place_calls",
    "place_genesys_calls",
]
