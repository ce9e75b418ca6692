"""
The Audio Connector server over real loopback sockets, with a Genesys-side
Autobahn client.
"""

from __future__ import annotations

from typing import Any

from autobahn.twisted.websocket import connectWS
from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IListeningPort
from twisted.trial.unittest import TestCase

from ivrproto.audioconnector.auth import Authenticator, AuthSettings, sign_headers
from ivrproto.audioconnector.prompts import PromptLibrary
from ivrproto.audioconnector.server import AudioConnectorFactory
from ivrproto.audioconnector.session import CallInfo, ConnectorCall
from ivrproto.audioconnector.testing import (
    ORGANIZATION_ID,
    SESSION_ID,
    GenesysClientFactory,
    GenesysClientProtocol,
    upgrade_headers,
)

from .test_ac_server import temp_dir, write_prompt

SECRET = "c2VjcmV0LWJ5dGVzLWZvci10aGUtdGVzdHM="


class MenuListener:
    "Plays a prompt; a key ends the call with that key as an output."

    def __init__(self, call: ConnectorCall) -> None:
        self.call = call

    def opened(self, info: CallInfo) -> None:
        self.call.play(["welcome"], "Welcome")

    def digit_received(self, digit: str) -> None:
        self.call.disconnect("completed", {"ivr_outcome": "selected", "ivr_digits": digit})

    def playback_completed(self) -> None:
        pass

    def hangup_received(self, reason: str) -> None:
        pass

    def connection_lost(self, reason: str) -> None:
        pass


class LoopbackTests(TestCase):
    @inlineCallbacks
    def setUp(self) -> Any:  # type: ignore[override]
        prompts = temp_dir(self)
        write_prompt(prompts, "welcome", 2.0)
        auth = Authenticator(reactor, {"signed": SECRET, "plain": None},
                             AuthSettings(min_failure_delay=0.05))
        self.factory = AudioConnectorFactory(
            reactor, auth, {"/ivr": MenuListener}, PromptLibrary(prompts)
        )
        port: IListeningPort = yield serverFromString(
            reactor, "tcp:0:interface=127.0.0.1"
        ).listen(self.factory)
        self.addCleanup(port.stopListening)
        self.port = port.getHost().port  # type: ignore[attr-defined]

    def client(self, headers: Any) -> Deferred[GenesysClientProtocol]:
        factory = GenesysClientFactory(reactor, f"ws://127.0.0.1:{self.port}/ivr", headers)

        def script(client: GenesysClientProtocol, kind: str, message: Any) -> None:
            # Press a key as soon as the prompt starts arriving.
            if kind == "audio" and len(client.audio) == 1:
                client.send("dtmf", digit="1")

        factory.on_message = script
        factory.open_on_upgrade = True
        connectWS(factory)
        return factory.done

    @inlineCallbacks
    def test_signed_call_with_barge_in(self) -> Any:
        "A signed call over TCP: opened, prompt, a key barges in, disconnect, closed."
        headers = sign_headers(
            "signed", SECRET, "/ivr", f"127.0.0.1:{self.port}", ORGANIZATION_ID, SESSION_ID,
            "corr", "bG9vcGJhY2stbm9uY2UtMDAwMDAx", int(reactor.seconds()),
        )
        del headers["host"]
        client = yield self.client(headers)
        self.assertEqual(client.types(), ["opened", "event", "event", "disconnect", "closed"])
        self.assertEqual(client.received[2]["parameters"]["entities"][0]["type"], "barge_in")
        self.assertEqual(client.received[3]["parameters"]["outputVariables"],
                         {"ivr_outcome": "selected", "ivr_digits": "1"})
        self.assertEqual(client.violations, [])
        self.assertLess(len(client.audio), 10)
        self.assertEqual(self.factory.sessions, set())

    @inlineCallbacks
    def test_refused_upgrade(self) -> Any:
        "An unknown key over TCP gets 401 and no session."
        client = yield self.client(upgrade_headers("nobody"))
        self.assertFalse(client.upgraded)
        self.assertIn("401", client.upgrade_failure or "")
        self.assertEqual(self.factory.refusals, 1)
