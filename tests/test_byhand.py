"""
Tests for calls placed by hand (``POST /emulator/calls``,
:mod:`ivrproto.emulator.byhand`): the caller scripts made of ``keys``, the
endpoint against a platform on loopback, the standalone emulator announcing
such calls, and the README's commands against ``twistd ivr --config
examples/by-hand.toml`` in a subprocess.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, Optional

import treq
from twisted.internet import reactor
from twisted.internet.defer import Deferred, succeed
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase

from ivrproto.emulator import Platform, Scenario, keys_script
from ivrproto.emulator.tap import EmulatorService

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "by-hand.toml"
README = (ROOT / "README.md").read_text(encoding="utf-8")
AUDIO = "https://example.com/ivr/audio/"


def post(url: str, body: Any) -> Deferred[Any]:
    """
    POST a JSON body as ``curl -d`` does (a form content type, which the
    endpoints do not care about), on a connection of its own.
    """
    data = body if isinstance(body, bytes) else json.dumps(body).encode("utf-8")
    return treq.post(
        url,
        data=data,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        timeout=5,
        persistent=False,
    )


def get(url: str) -> Deferred[Any]:
    return treq.get(url, timeout=5, persistent=False)


class KeysScriptTests(SynchronousTestCase):
    """
    ``keys`` as a caller script.
    """

    def test_keys(self) -> None:
        """Each item waits for the next prompts; runs of keys are pressed one by one."""
        self.assertEqual(
            keys_script("7, timeout,12#"),
            ["prompts:0.5", "press:7", "prompts:0.5", "prompts:0.5", "press:1", "press:2", "press:#"],
        )
        self.assertEqual(keys_script(["1", "hangup"]), ["prompts:0.5", "press:1", "prompts:0.5", "hangup"])
        self.assertEqual(keys_script(""), [])

    def test_bad_keys(self) -> None:
        """A bad item, anything after hangup, or a non-string is refused, naming it."""
        self.assertRaisesRegex(ValueError, r"keys\[1\]: 'x'", keys_script, "1,x")
        self.assertRaisesRegex(ValueError, "nothing can follow", keys_script, "hangup,1")
        self.assertRaises(ValueError, keys_script, [1])  # type: ignore[list-item]


class _Response:
    code = 202

    def content(self) -> Deferred[bytes]:
        return succeed(b"{}")


class _RecordingHTTP:
    """
    A treq-like client that answers every POST with 202 and keeps the bodies.
    """

    def __init__(self) -> None:
        self.posted: list[tuple[str, Any]] = []

    def post(self, url: str, json: Any = None, **kwargs: Any) -> Deferred[Any]:
        self.posted.append((url, json))
        return succeed(_Response())


class EndpointTests(TestCase):
    """
    ``POST /emulator/calls`` and ``GET /emulator/calls/<id>`` on a platform on
    loopback.
    """

    timeout = 15

    async def start(self, intake: Optional[str] = None) -> tuple[Platform, _RecordingHTTP]:
        from ivrproto.emulator import accept_calls_by_hand

        platform = Platform(reactor, profiles={"CRM-1": {"membership_level": "premium"}})
        await platform.listen()
        self.addCleanup(platform.stop)
        http = _RecordingHTTP()
        if intake is not None:
            accept_calls_by_hand(reactor, platform, intake, http=http)
        return platform, http

    async def test_without_intake(self) -> None:
        """Without an intake the call is only expected (201), with the script made of its keys."""
        platform, _ = await self.start()
        response = await post(platform.base_url + "/emulator/calls", {"externalId": "CRM-1", "keys": "1"})
        self.assertEqual(response.code, 201)
        body = await response.json()
        self.assertEqual(body["callControlId"], "hand-1")
        self.assertIsNone(body["announcedTo"])
        self.assertIn("/v1/calls", body["next"])
        record = platform.calls["hand-1"]
        self.assertEqual((record.external_id, record.script), ("CRM-1", ("prompts:0.5", "press:1")))

    async def test_announced(self) -> None:
        """With an intake the call is announced there as scripted calls are (202)."""
        platform, http = await self.start("http://127.0.0.1:9/v1/calls")
        response = await post(
            platform.base_url + "/emulator/calls",
            {"callControlId": "mine-1", "externalId": "CRM-1", "script": ["menu", "press:1"]},
        )
        self.assertEqual(response.code, 202)
        body = await response.json()
        self.assertEqual(body["announcedTo"], "http://127.0.0.1:9/v1/calls")
        self.assertEqual(body["status"], "/emulator/calls/mine-1")
        self.assertEqual(
            http.posted, [("http://127.0.0.1:9/v1/calls", {"callControlId": "mine-1", "externalId": "CRM-1"})]
        )
        # "announce": false only expects it.
        response = await post(
            platform.base_url + "/emulator/calls", {"externalId": "CRM-1", "announce": False}
        )
        self.assertEqual(response.code, 201)
        await response.content()
        self.assertEqual(len(http.posted), 1)
        self.assertEqual(sorted(platform.calls), ["hand-1", "mine-1"])

    async def test_bad_requests(self) -> None:
        """Each bad body gets a 400 naming the field; a call in progress a 409; GET elsewhere 405."""
        platform, _ = await self.start()
        url = platform.base_url + "/emulator/calls"
        cases: list[tuple[Any, int, str]] = [
            (b"{not json", 400, "not JSON"),
            ([], 400, "JSON object"),
            ({}, 400, "externalId"),
            ({"externalId": ""}, 400, "externalId"),
            ({"externalId": "A", "callControlId": 7}, 400, "callControlId"),
            ({"externalId": "A", "keys": "1,x"}, 400, "keys[1]"),
            ({"externalId": "A", "script": ["sing"]}, 400, "sing"),
            ({"externalId": "A", "script": "menu"}, 400, "script"),
            ({"externalId": "A", "keys": "1", "script": []}, 400, "not both"),
            ({"externalId": "A", "announce": "yes"}, 400, "announce"),
            ({"externalId": "A", "extenalId": "B"}, 400, "unknown field 'extenalId'"),
            (b"x" * (17 * 1024), 413, "larger"),
        ]
        for body, code, message in cases:
            response = await post(url, body)
            answer = await response.json()
            self.assertEqual((response.code, message in answer["message"]), (code, True), (body, answer))
        response = await post(url, {"externalId": "A", "callControlId": "c1"})
        self.assertEqual(response.code, 201)
        await response.content()
        response = await post(url, {"externalId": "A", "callControlId": "c1"})
        self.assertEqual(response.code, 409)
        await response.content()
        response = await get(url)
        self.assertEqual(response.code, 405)
        await response.content()
        self.assertEqual(list(platform.calls), ["c1"])

    async def test_status(self) -> None:
        """GET /emulator/calls/<id> says what the emulator saw of a call; an unknown id is 404."""
        platform, _ = await self.start()
        platform.expect_call("c/1", "CRM-1", ["menu"])
        response = await get(platform.base_url + "/emulator/calls/c%2F1")
        self.assertEqual(response.code, 200)
        body = await response.json()
        self.assertEqual(
            body,
            {
                "callControlId": "c/1", "connected": False, "finished": False, "outcome": None,
                "transferTarget": None, "plays": [], "keysPressed": [], "closeCode": None,
                "violations": [],
            },
        )
        self.assertNotIn("CRM-1", json.dumps(body))
        response = await get(platform.base_url + "/emulator/calls/nope")
        self.assertEqual(response.code, 404)
        await response.content()


class StandaloneTests(TestCase):
    """
    ``twistd ivr-emulator`` with an intake and no scripted calls.
    """

    async def test_announces_calls_by_hand(self) -> None:
        """A call placed by hand is announced to the scenario's intake."""
        http = _RecordingHTTP()
        scenario = Scenario(intake="http://127.0.0.1:9/v1/calls")
        service = EmulatorService(reactor, scenario, http=http, out=open(os.devnull, "w"))
        self.addCleanup(service._out.close)
        service.startService()
        self.addCleanup(service.stopService)
        assert service.platform is not None
        response = await post(service.platform.base_url + "/emulator/calls", {"externalId": "CRM-1"})
        self.assertEqual(response.code, 202)
        await response.content()
        self.assertEqual(http.posted, [(scenario.intake, {"callControlId": "hand-1", "externalId": "CRM-1"})])


def readme_commands() -> list[str]:
    """
    The ``curl`` command lines of the README's section on its first command.
    """
    section = README[README.index("## What the first command shows"):]
    section = section[: section.index("\n## ", 3)]
    return [line for line in section.splitlines() if line.startswith("curl ")]


class _Twistd(ProcessProtocol):
    """
    Collects a twistd's output; :meth:`when_logged` fires once a pattern is
    in it.
    """

    def __init__(self) -> None:
        self.output = ""
        self._waiting: list[tuple[re.Pattern[str], Deferred[re.Match[str]]]] = []
        self.ended: Deferred[Any] = Deferred()

    def when_logged(self, pattern: str) -> Deferred[re.Match[str]]:
        d: Deferred[re.Match[str]] = Deferred()
        self._waiting.append((re.compile(pattern), d))
        self._check()
        return d

    def _check(self) -> None:
        for entry in list(self._waiting):
            found = entry[0].search(self.output)
            if found:
                self._waiting.remove(entry)
                entry[1].callback(found)

    def outReceived(self, data: bytes) -> None:
        self.output += data.decode("utf-8", "replace")
        self._check()

    errReceived = outReceived

    def processEnded(self, reason: Failure) -> None:
        for _, d in self._waiting:
            d.errback(Exception("twistd ended:\n" + self.output))
        self._waiting = []
        self.ended.callback(reason.value)


class ReadmeTests(TestCase):
    """
    The README's commands for calls placed by hand, against ``twistd ivr
    --config examples/by-hand.toml`` (on free ports instead of 8080 and 8090).
    """

    timeout = 60

    async def test_readme_commands(self) -> None:
        """Each README curl command works, and the service's log shows each call's flow."""
        lines = readme_commands()
        self.assertEqual(len(lines), 3, lines)
        self.assertIn("twistd -n --pidfile= ivr --config examples/by-hand.toml", README)
        example = EXAMPLE.read_text(encoding="utf-8")
        comments = [line[1:].strip() for line in example.splitlines() if line.startswith("#")]
        for line in lines:
            self.assertIn(line, comments)  # the example says the same
        commands = [shlex.split(line) for line in lines]

        directory = Path(tempfile.mkdtemp(prefix="ivrproto-byhand-"))
        self.addCleanup(shutil.rmtree, directory, True)
        text = example.replace("tcp:8080:", "tcp:0:").replace("tcp:8090:", "tcp:0:")
        self.assertEqual(text.count("tcp:0:"), 2)
        shutil.copy(ROOT / "examples" / "profiles.json", directory / "profiles.json")
        path = directory / "by-hand.toml"
        path.write_text(text, encoding="utf-8")

        env = {k: v for k, v in os.environ.items() if k not in ("CLIENT_ID", "CLIENT_SECRET")}
        env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
        twistd = _Twistd()
        process = reactor.spawnProcess(  # type: ignore[attr-defined]
            twistd,
            sys.executable,
            [sys.executable, "-c", "from twisted.scripts.twistd import run; run()",
             "-n", "--pidfile=", "ivr", "--config", str(path)],
            env=env,
            path=str(ROOT),
        )

        async def stop() -> None:
            if twistd.ended.called:
                return
            process.signalProcess("TERM")
            await twistd.ended

        self.addCleanup(stop)
        emulator = (await twistd.when_logged(r"emulator listening on (http://127\.0\.0\.1:\d+)")).group(1)
        intake = (await twistd.when_logged(r"intake listening on (http://127\.0\.0\.1:\d+)")).group(1)
        answers = []
        for command in commands:
            self.assertEqual(command[:4], ["curl", "-s", "-X", "POST"])
            url = command[4].replace("http://127.0.0.1:8090", emulator).replace("http://127.0.0.1:8080", intake)
            self.assertEqual(command[5], "-d")
            response = await post(url, command[6].encode("utf-8"))
            answers.append((response.code, await response.json()))
        self.assertEqual([code for code, _ in answers], [202, 201, 202], answers)
        first = answers[0][1]["callControlId"]
        await twistd.when_logged(re.escape(first) + r": transferred to ext:transfer_premium \(selected\)")
        await twistd.when_logged(r"mine-1: transferred to ext:play_ticket_info \(selected\)")
        self.assertRegex(twistd.output, r"mine-1: .*invalid selection")
        response = await get(emulator + answers[1][1]["status"])
        status = await response.json()
        self.assertEqual((status["outcome"], status["keysPressed"]), ("transferred", ["9", "2"]))
        await stop()
        self.assertNotIn("Traceback", twistd.output)
        self.assertNotIn("no active call", twistd.output)
        self.assertNotIn("CRM-", twistd.output)
