"""
The log canary: calls run with every logger at its most verbose (Autobahn's
and txaio's included), with known secret, token, caller id and attribute
values, and none of them appears in any log event, in text or JSON.
"""

from __future__ import annotations

import io
import json
from typing import Any

import treq
import txaio
from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.logger import formatEvent, globalLogPublisher

from ivrproto.emulator import Platform
from ivrproto.logs import event_as_json

from .test_integration import ServiceTestCase

SECRET = "CANARY-SECRET-c0ffee"
CALLER = "CANARY-CALLER-+15551234567"
ATTRIBUTE = "CANARY-ATTR-Ada-Lovelace"


class LogCanaryTests(ServiceTestCase):
    @inlineCallbacks
    def setUp(self) -> Any:
        self.events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)
        previous = txaio.get_global_log_level()
        txaio.set_global_log_level("trace")
        self.addCleanup(txaio.set_global_log_level, previous)
        self.platform = Platform(
            reactor,
            clients={"client": SECRET},
            profiles={CALLER: {"membership_level": "premium", "open_tickets": 1, "name": ATTRIBUTE}},
        )
        yield self.platform.listen("tcp:0:interface=127.0.0.1")
        self.addCleanup(self.platform.stop)
        self.service = yield self.start_service(secret=SECRET)

    @inlineCallbacks
    def test_no_secret_token_caller_or_attribute_in_logs(self) -> Any:
        """Nothing secret or personal is logged, at any level."""
        yield self.call(CALLER, ["menu", "press:7", "play", "press:1"], call_id="call-1")
        yield self.call(CALLER, ["menu", "hangup"], call_id="call-2")
        self.platform.revoke_tokens()  # a 401 path, with the token refused
        yield self.call(CALLER, ["menu", "drop"], call_id="call-3")
        self.platform.faults.add("profile", status=500, count=5)
        self.service.lookup._cache.clear()
        yield self.call(CALLER, ["menu", "press:0"], call_id="call-4")
        response = yield treq.get(self.service.admin_url + "/metrics", timeout=5, persistent=False)
        metrics = yield response.content()
        tokens = list(self.platform._tokens)
        self.assertTrue(tokens)
        self.assertTrue(self.events)
        text = io.StringIO()
        for event in self.events:
            text.write(formatEvent(event) + "\n")
            text.write(event_as_json(event) or "")
            text.write(repr({k: v for k, v in event.items() if k not in ("log_logger", "log_source")}))
        logged = text.getvalue() + metrics.decode()
        for canary in [SECRET, CALLER, "+15551234567", ATTRIBUTE] + tokens:
            self.assertNotIn(canary, logged)
        # The calls are still traceable: by call id, and by a keyed hash.
        self.assertIn("call-1", logged)
        self.assertIn("caller-", logged)
        lines = [json.loads(event_as_json(e)) for e in self.events]  # type: ignore[arg-type]
        self.assertTrue(any(line.get("call_control_id") == "call-1" for line in lines))
