"""
Tests for the ``/readyz`` resource: it answers at once, from the token
source's last outcome, never waiting for a token request.
"""

from __future__ import annotations

import json

from treq.testing import StubTreq
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.test.requesthelper import DummyRequest

from ivrproto.intake.resources import ReadyResource
from ivrproto.clients.oauth import TokenSource

from .scripted import HANG, ScriptedResource, json_answer


def render(resource: ReadyResource) -> tuple[int, dict[str, str]]:
    """
    Render a GET at once: the body must be there when render returns.
    """
    request = DummyRequest([b""])
    body = resource.render_GET(request)  # type: ignore[arg-type]
    assert isinstance(body, bytes), body
    return request.responseCode or 200, json.loads(body)


class ReadyResourceTests(SynchronousTestCase):
    """
    /readyz never waits for a token fetch (a probe gives up after 1 s).
    """

    def make(self, answers: list) -> TokenSource:  # type: ignore[type-arg]
        self.clock = Clock()
        self.stub = StubTreq(ScriptedResource(answers))
        tokens = TokenSource(
            self.clock, self.stub, "http://login.test/oauth/token", "id", "secret", timeout=32.0
        )
        self.addCleanup(tokens.stop)
        return tokens

    def test_answers_at_once_while_fetch_hangs(self) -> None:
        """With the token endpoint hanging, /readyz says 503 at once, not after the 32 s timeout."""
        tokens = self.make([HANG])
        resource = ReadyResource(tokens.ready, lambda: False)
        code, body = render(resource)
        self.assertEqual((code, body["status"]), (503, "not ready"))
        self.stub.flush()
        self.assertEqual(render(resource)[0], 503)

    def test_ready_from_last_outcome(self) -> None:
        """After a token was had, /readyz says 200."""
        tokens = self.make([json_answer(200, {"access_token": "tok", "expires_in": 60})])
        self.stub.flush()
        resource = ReadyResource(tokens.ready, lambda: False)
        self.assertEqual(render(resource), (200, {"status": "ready"}))

    def test_failed_fetch_not_ready(self) -> None:
        """A refused token request makes /readyz 503 without naming any secret."""
        tokens = self.make([json_answer(401, {"error": "invalid_client"})])
        resource = ReadyResource(tokens.ready, lambda: False)
        code, body = render(resource)
        self.assertEqual(code, 503)
        self.assertNotIn("secret", json.dumps(body))

    def test_draining(self) -> None:
        """Draining wins over a good token."""
        resource = ReadyResource(lambda: True, lambda: True)
        self.assertEqual(render(resource), (503, {"status": "draining"}))
