"""
Readings of the contract that an independent implementation of it checked:
each test pins the behaviour the contract asks for where the service once
did otherwise.
"""

from __future__ import annotations

from typing import Any

import treq
from twisted.internet.defer import inlineCallbacks
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from ivrproto.testing import RecordingListener, connect_in_memory

from .test_integration import ServiceTestCase
from .test_oauth import TokenSourceTestsMixin, token_answer
from .test_session import SessionTestCase


class EarlyKeyTests(SessionTestCase):
    def test_key_before_the_menu_is_handled(self) -> None:
        """A key pressed after connected but before the menu is handled once the menu is out."""
        session, core = self.make()
        session.start()
        session.connected()
        session.digit_received("1")
        self.assertEqual(self.port.sent, [])
        session.profile_resolved({"membership_level": "premium"}, "found")
        self.assertEqual(
            self.port.plays(),
            ["premium_priority.mp3", "general_operator.mp3", "selection_confirmed.mp3"],
        )
        self.clock.advance(1.5)
        self.assertEqual(self.port.transfers(), ["ext:transfer_premium"])

    def test_early_invalid_key(self) -> None:
        """An early key not in the menu gets the invalid-selection prompt after the menu."""
        session, core = self.make()
        session.start()
        session.connected()
        session.digit_received("9")
        self.clock.advance(0.8)  # the budget runs out: default menu
        self.assertEqual(self.port.plays()[-1], "invalid_selection.mp3")
        session.hangup_received(None)


class InvalidKeyTimerTests(SessionTestCase):
    def test_invalid_key_keeps_the_no_input_clock(self) -> None:
        """The menu is repeated 10 s after the last menu prompt, invalid key or not (item 8)."""
        session, core = self.live(None, "not-found")
        self.clock.advance(5)
        session.digit_received("9")
        self.clock.advance(4.99)
        self.assertEqual(len(self.port.plays()), 4)  # menu + invalid
        self.clock.advance(0.01)
        self.assertEqual(len(self.port.plays()), 7)  # the menu again
        session.hangup_received(None)

    def test_hangup_without_reason(self) -> None:
        """A hangup without a reason is recorded as such, not as the caller's."""
        session, core = self.live()
        session.hangup_received(None)
        self.assertEqual(self.port.outcomes[0].reason, "unspecified")


class ZeroLifetimeTokenTests(TokenSourceTestsMixin, SynchronousTestCase):
    def test_expires_in_zero(self) -> None:
        """expires_in 0 is an int: the token serves the waiting call and is not reused."""
        source = self.make([token_answer("tok-1", expires_in=0), token_answer("tok-2")])
        self.assertEqual(self.token_of(source.get_token()), "tok-1")
        self.assertEqual(self.token_of(source.get_token()), "tok-2")


class LargeMediaTests(SynchronousTestCase):
    def test_large_media_frame_is_ignored(self) -> None:
        """A media event of a few hundred kilobytes is ignored; the call goes on."""
        clock = Clock()
        listener = RecordingListener()
        client, server, pump = connect_in_memory(clock, listener)
        server.send_event("media", payload="A" * 300_000)
        server.send_binary(b"\x00" * 300_000)
        server.send_event("dtmf", digit="1")
        pump.flush()
        self.assertEqual(listener.names(), ["connected", "digit_received"])
        client.close()
        pump.flush()


class CallIdTests(ServiceTestCase):
    @inlineCallbacks
    def test_any_printable_call_id(self) -> None:
        """The contract types callControlId as str: spaces and slashes are accepted."""
        call_id = "call 7/a+b=="
        record = self.platform.expect_call(call_id, "CRM-PLAIN", ["menu", "press:0"])
        response = yield self.post({"callControlId": call_id, "externalId": "CRM-PLAIN"})
        self.assertEqual(response.code, 202)
        self.assertEqual(
            response.headers.getRawHeaders(b"location"), [b"/v1/calls/call%207%2Fa%2Bb%3D%3D"]
        )
        yield response.content()
        yield record.when_finished()
        yield self.service.registry.when_ended(call_id)
        response = yield treq.get(
            self.service.admin_url + "/v1/calls/call%207%2Fa%2Bb%3D%3D", timeout=5, persistent=False
        )
        view: Any = yield response.json()
        self.assertEqual(view["outcome"]["target"], "ext:transfer_operator")
