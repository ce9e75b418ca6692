"""
``/v1/closure`` on a real service (``examples/hours.toml``, pointed at the
emulator): the README's curl commands, the bearer token, the refusals, a
closed call end to end, the metric, and the token never in a log line.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any, Optional

import attrs
import treq
from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import TestCase

from ivrproto.config import load_config
from ivrproto.emulator import Platform
from ivrproto.service import IVRService

from .test_integration import PROFILES, ROOT

HOURS = str(ROOT / "examples" / "hours.toml")
README = (ROOT / "README.md").read_text(encoding="utf-8")
TOKEN = "t0ken-for-the-closure-tests-9f2c"
ADMIN_README = "http://127.0.0.1:9100"


def readme_closure_commands() -> list[str]:
    """The ``curl`` command lines of the README's emergency closure part."""
    section = README[README.index("**Emergency closure.**"):]
    section = section[: section.index("\n## ")]
    return [line for line in section.splitlines() if line.startswith("curl ")]


def curl(line: str, base: str, token: str) -> tuple[str, str, dict[str, str], Optional[bytes]]:
    """
    What a README ``curl -s [-X M] URL [-H H] [-d D]`` line asks: method,
    URL (on ``base``), headers and body, with ``$IVR_ADMIN_TOKEN`` as the
    shell would expand it.
    """
    words = shlex.split(line.replace("$IVR_ADMIN_TOKEN", token))
    assert words[:2] == ["curl", "-s"], words
    method, headers, body, url = "GET", {}, None, None
    rest = iter(words[2:])
    for word in rest:
        if word == "-X":
            method = next(rest)
        elif word == "-H":
            name, _, value = next(rest).partition(": ")
            headers[name] = value
        elif word == "-d":
            body = next(rest).encode("utf-8")
            method = "POST" if method == "GET" else method
        else:
            assert word.startswith(ADMIN_README), word
            url = base + word[len(ADMIN_README):]
    assert url is not None
    return method, url, headers, body


class EndpointTestCase(TestCase):
    """
    The emulator and the service of ``examples/hours.toml``, with the flag
    file in a temporary place and a short closure wait.
    """

    token: Optional[str] = TOKEN

    @inlineCallbacks
    def setUp(self) -> Any:
        self.events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)
        self.platform = Platform(reactor, clients={"client": "s3cret"}, profiles=PROFILES)
        yield self.platform.listen("tcp:0:interface=127.0.0.1")
        self.addCleanup(self.platform.stop)
        environ = {"GENESYS_BASE_URL": self.platform.base_url, "CLIENT_ID": "client", "CLIENT_SECRET": "s3cret"}
        if self.token is not None:
            environ["IVR_ADMIN_TOKEN"] = self.token
        config = load_config(HOURS, environ)
        self.flag = Path(self.mktemp())
        menu = config.menu
        assert menu.closure is not None
        closure = attrs.evolve(menu.closure, flag_file=str(self.flag), wait=0.2)
        config = attrs.evolve(config, menu=attrs.evolve(menu, closure=closure))
        config = attrs.evolve(config, intake=attrs.evolve(config.intake, max_loop_lag=30.0))
        self.service = IVRService(
            reactor, config, intake="tcp:0:interface=127.0.0.1", admin="tcp:0:interface=127.0.0.1"
        )
        yield self.service.start()
        self.addCleanup(self.service.stop)

    def request(self, method: str, path: str, body: Any = None, token: Optional[str] = None,
                base: Optional[str] = None, headers: Optional[dict[str, str]] = None) -> Any:
        headers = dict(headers or {})
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
        return treq.request(method, (base or self.service.admin_url) + path, data=data,
                            headers=headers, timeout=5, persistent=False)

    @inlineCallbacks
    def answer(self, *args: Any, **kw: Any) -> Any:
        response = yield self.request(*args, **kw)
        body = yield response.json()
        return response.code, body

    @inlineCallbacks
    def closed_call(self, call_id: str, script: tuple[str, ...] = ("play",)) -> Any:
        """Place a call while closed; return the platform's record and ours."""
        record = self.platform.expect_call(call_id, "CRM-PLAIN", script)
        response = yield treq.post(
            self.service.intake_url + "/v1/calls",
            data=json.dumps({"callControlId": call_id, "externalId": "CRM-PLAIN"}).encode(),
            headers={"Content-Type": "application/json"}, timeout=5, persistent=False,
        )
        self.assertEqual(response.code, 202)
        yield response.content()
        ours = yield self.service.registry.when_ended(call_id)
        theirs = yield record.when_finished()
        return theirs, ours

    def logged(self) -> list[str]:
        return [formatEvent(e) for e in self.events]


class ReadmeClosureTests(EndpointTestCase):
    @inlineCallbacks
    def test_readme_commands(self) -> Any:
        """The README's three curl commands: off, on (a new call hears it and goes to voicemail), off; logged once each."""
        lines = readme_closure_commands()
        self.assertEqual([shlex.split(line)[2:4] for line in lines],
                         [[ADMIN_README + "/v1/closure"], ["-X", "PUT"], ["-X", "DELETE"]][:1]
                         + [["-X", "PUT"], ["-X", "DELETE"]])
        answers = []
        for line, then in zip(lines, ("off", "call", "done")):
            method, url, headers, body = curl(line, self.service.admin_url, TOKEN)
            response = yield treq.request(method, url, data=body, headers=headers, timeout=5, persistent=False)
            answers.append((response.code, (yield response.json())))
            if then == "call":
                theirs, ours = yield self.closed_call("closed-1")
                self.assertEqual(theirs.violations, [])
                self.assertEqual(theirs.plays, ["https://example.com/ivr/audio/emergency_closed.mp3"])
                self.assertEqual((ours.outcome.kind, ours.outcome.target), ("transferred", "ext:voicemail"))
                self.assertEqual(ours.hours["closure"]["by"], "duty manager")
        self.assertEqual([code for code, _ in answers], [200, 200, 200])
        self.assertEqual(answers[0][1]["state"], "off")
        on = answers[1][1]
        self.assertEqual(
            {k: on[k] for k in ("state", "source", "prompt", "target", "by", "reason")},
            {"state": "on", "source": "admin", "prompt": "emergency_closed.mp3",
             "target": "transfer_voicemail", "by": "duty manager", "reason": "flooding at the site"},
        )
        self.assertRegex(on["since"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
        self.assertEqual((answers[2][1]["state"], answers[2][1]["sources"]["admin"]), ("off", {"state": "off"}))
        changes = [line for line in self.logged() if "(admin endpoint)" in line]
        self.assertEqual(len(changes), 2)
        self.assertRegex(changes[0], r"emergency closure on by duty manager from 127\.0\.0\.1:\d+ \(admin endpoint\): was off, now on")
        self.assertRegex(changes[1], r"emergency closure off by duty manager from 127\.0\.0\.1:\d+")
        self.assertFalse([line for line in self.logged() if TOKEN in line])
        self.assertFalse([e for e in self.events if TOKEN in repr(e)])

    def test_examples_say_the_same(self) -> None:
        """docs/configuration.md and examples/hours.toml show the same endpoint and token header."""
        docs = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
        example = Path(HOURS).read_text(encoding="utf-8")
        for text in (docs, example):
            self.assertIn('curl -s -X PUT http://127.0.0.1:9100/v1/closure -H "Authorization: Bearer $IVR_ADMIN_TOKEN"', text)
            self.assertIn('curl -s -X DELETE http://127.0.0.1:9100/v1/closure -H "Authorization: Bearer $IVR_ADMIN_TOKEN"', text)


class EndpointTests(EndpointTestCase):
    @inlineCallbacks
    def test_token_required(self) -> Any:
        """No token, a wrong one, or another scheme is a 401 and changes nothing."""
        body = {"by": "mallory"}
        for kw in ({}, {"token": "wrong"}, {"token": TOKEN[:-1]},
                   {"headers": {"Authorization": f"Basic {TOKEN}"}}):
            for method in ("PUT", "DELETE"):
                response = yield self.request(method, "/v1/closure", body, **kw)
                self.assertEqual((method, kw, response.code), (method, kw, 401))
                self.assertEqual(response.headers.getRawHeaders("www-authenticate"), ['Bearer realm="ivrproto-admin"'])
                self.assertIn("Bearer", (yield response.json())["error"])
        code, state = yield self.answer("GET", "/v1/closure")
        self.assertEqual((code, state["state"]), (200, "off"))
        self.assertFalse([line for line in self.logged() if "mallory" in line])

    @inlineCallbacks
    def test_bad_bodies(self) -> Any:
        """An unknown target is a 400 naming the known ones; so are other bad bodies."""
        code, body = yield self.answer("PUT", "/v1/closure", {"by": "ops", "target": "ext:+15551234"}, token=TOKEN)
        self.assertEqual(code, 400)
        self.assertIn("known: transfer_agents, transfer_callback, transfer_night_desk, "
                      "transfer_operator, transfer_voicemail", body["error"])
        for raw in (b"{", b"[]", b'{"target": "transfer_operator"}', b""):
            code, body = yield self.answer("PUT", "/v1/closure", raw, token=TOKEN)
            self.assertEqual((raw, code), (raw, 400))
        code, body = yield self.answer("DELETE", "/v1/closure", {}, token=TOKEN)
        self.assertEqual(code, 400)
        self.assertEqual(self.service.registry.closure.admin, None)  # type: ignore[union-attr]

    @inlineCallbacks
    def test_not_on_the_intake(self) -> Any:
        """The intake has no /v1/closure, for any method."""
        for method in ("GET", "PUT", "DELETE"):
            code, body = yield self.answer(method, "/v1/closure", {"by": "x"}, token=TOKEN,
                                           base=self.service.intake_url)
            self.assertEqual((method, code), (method, 404))

    @inlineCallbacks
    def test_flag_file_and_metric(self) -> Any:
        """GET says the flag file's closure is serving; ivr_closure_active says each source; a call in progress keeps its menu."""
        self.flag.write_text('{"reason": "flood", "by": "site lead"}')
        self.service.registry.closure.check()  # type: ignore[union-attr]
        code, state = yield self.answer("GET", "/v1/closure")
        self.assertEqual((state["state"], state["source"], state["by"]), ("on", "flag-file", "site lead"))
        self.assertEqual(state["target"], "transfer_voicemail")
        yield self.answer("PUT", "/v1/closure", {"by": "ops", "hangup": True}, token=TOKEN)
        response = yield self.request("GET", "/metrics")
        text = yield response.text()
        self.assertIn('ivr_closure_active{source="flag-file"} 1.0', text)
        self.assertIn('ivr_closure_active{source="admin"} 1.0', text)
        code, state = yield self.answer("DELETE", "/v1/closure", {"by": "ops"}, token=TOKEN)
        self.assertEqual((code, state["state"], state["source"]), (200, "on", "flag-file"))
        self.flag.unlink()
        self.service.registry.closure.check()  # type: ignore[union-attr]
        response = yield self.request("GET", "/metrics")
        text = yield response.text()
        self.assertIn('ivr_closure_active{source="flag-file"} 0.0', text)
        self.assertIn('ivr_closure_active{source="admin"} 0.0', text)


    @inlineCallbacks
    def test_a_key_goes_at_once(self) -> Any:
        """On the emulated platform, a key during the message sends the call to the PUT's target at once."""
        code, _ = yield self.answer("PUT", "/v1/closure", {"by": "ops", "target": "transfer_callback"}, token=TOKEN)
        self.assertEqual(code, 200)
        theirs, ours = yield self.closed_call("closed-2", ("play", "press:5"))
        self.assertEqual(theirs.violations, [])
        self.assertEqual(theirs.plays, ["https://example.com/ivr/audio/emergency_closed.mp3"])
        self.assertEqual((ours.outcome.kind, ours.outcome.target), ("transferred", "ext:callback"))
        self.assertEqual(ours.keys, ("5",))


    @inlineCallbacks
    def test_without_closure_table(self) -> Any:
        """After a reload without [closure], GET says it is not configured and a PUT is a 409."""
        registry = self.service.registry
        registry.context = attrs.evolve(registry.context, book=attrs.evolve(registry.context.book, closure=None))
        code, state = yield self.answer("GET", "/v1/closure")
        self.assertEqual((code, state), (200, {"state": "off", "configured": False}))
        code, body = yield self.answer("PUT", "/v1/closure", {"by": "ops"}, token=TOKEN)
        self.assertEqual(code, 409)
        self.assertIn("no [closure] in the configuration", body["error"])


class NoTokenTests(EndpointTestCase):
    token = None

    @inlineCallbacks
    def test_writes_refused(self) -> Any:
        """Without IVR_ADMIN_TOKEN, PUT and DELETE are a 403 that says how to turn them on; GET works."""
        for method in ("PUT", "DELETE"):
            code, body = yield self.answer(method, "/v1/closure", {"by": "ops"}, token="anything")
            self.assertEqual(code, 403)
            self.assertIn("set IVR_ADMIN_TOKEN in the service's environment", body["error"])
        code, state = yield self.answer("GET", "/v1/closure")
        self.assertEqual((code, state["state"], state["configured"]), (200, "off", True))
