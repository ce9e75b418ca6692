"""
Who can read what: ``/metrics``, ``/v1/stats`` and ``GET /v1/calls/<id>``
are served on the admin listener only, not on the intake (which may be
public); ``/healthz`` and ``/readyz`` are on both.  ``[admin] listen =
"intake"`` keeps them on a loopback intake, and is refused for any other.
"""

from __future__ import annotations

import sys
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

import attrs
import treq
from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import SynchronousTestCase

from ivrproto.config import AdminConfig, load_config, parse_config
from ivrproto.errors import ConfigError
from ivrproto.service import IVRService
from tests.test_integration import SEED, ServiceTestCase

ADMIN_ONLY = ["/metrics", "/v1/stats", "/v1/calls/call-1", "/v1/calls"]


def get(url: str) -> Any:
    return treq.get(url, timeout=5, persistent=False)


class AdminListenerTests(ServiceTestCase):
    @inlineCallbacks
    def test_intake_refuses_admin_routes(self) -> Any:
        """The intake answers 404 for /metrics, /v1/stats and GET /v1/calls/<id> (even of a real call)."""
        yield self.call("CRM-PLAIN", ["menu", "press:0"])
        self.assertNotEqual(self.service.admin_url, self.service.intake_url)
        for path in ["/metrics", "/v1/stats", "/v1/calls/call-1", "/v1/calls/nope"]:
            response = yield get(self.service.intake_url + path)
            body = yield response.json()
            self.assertEqual((path, response.code), (path, 404))
            self.assertEqual(body, {"error": "no such resource"})

    @inlineCallbacks
    def test_admin_serves_them(self) -> Any:
        """The admin listener serves /metrics, /v1/stats, GET /v1/calls and /v1/calls/<id>."""
        yield self.call("CRM-PLAIN", ["menu", "press:0"])
        codes = []
        for path in ADMIN_ONLY:
            response = yield get(self.service.admin_url + path)
            yield response.content()
            codes.append((path, response.code))
        self.assertEqual(codes, [(path, 200) for path in ADMIN_ONLY])
        response = yield get(self.service.admin_url + "/v1/calls/call-1")
        view = yield response.json()
        self.assertEqual(view["outcome"]["kind"], "transferred")
        response = yield get(self.service.admin_url + "/metrics")
        text = yield response.text()
        self.assertIn("ivr_calls_total", text)

    @inlineCallbacks
    def test_probes_on_both(self) -> Any:
        """/healthz and /readyz answer on the intake and on the admin listener."""
        yield self.service.tokens.get_token()
        for base in (self.service.intake_url, self.service.admin_url):
            for path in ("/healthz", "/readyz"):
                response = yield get(base + path)
                yield response.content()
                self.assertEqual((base + path, response.code), (base + path, 200))

    @inlineCallbacks
    def test_admin_takes_no_calls(self) -> Any:
        """POST /v1/calls on the admin listener is a 405: calls come to the intake only."""
        response = yield treq.post(
            self.service.admin_url + "/v1/calls",
            data=b'{"callControlId": "c", "externalId": "e"}',
            headers={"Content-Type": "application/json"},
            timeout=5,
            persistent=False,
        )
        yield response.content()
        self.assertEqual(response.code, 405)
        self.assertEqual(self.service.registry.active, {})


class AdminOnIntakeTests(ServiceTestCase):
    @inlineCallbacks
    def test_intake_serves_admin_routes(self) -> Any:
        """With [admin] listen = "intake", a loopback intake serves the admin routes and no other port opens."""
        service = IVRService(
            reactor, self.service.config, intake="tcp:0:interface=127.0.0.1", admin="intake"
        )
        yield service.start()
        self.addCleanup(service.stop)
        self.assertIsNone(service.admin_listener)
        self.assertEqual(service.admin_url, service.intake_url)
        for path in ("/metrics", "/v1/stats"):
            response = yield get(service.intake_url + path)
            yield response.content()
            self.assertEqual((path, response.code), (path, 200))
        response = yield get(service.intake_url + "/v1/calls/nope")
        self.assertEqual((yield response.json()), {"error": "no such call"})


class AdminConfigTests(SynchronousTestCase):
    def config(self) -> Any:
        return load_config(SEED, {"CLIENT_ID": "client", "CLIENT_SECRET": "s3cret"})

    def test_default_is_loopback(self) -> None:
        """Without an [admin] section the admin listener is on loopback port 9100."""
        self.assertEqual(self.config().admin, AdminConfig("tcp:9100:interface=127.0.0.1"))

    def test_listen_parsed(self) -> None:
        """[admin] listen is read; an unknown key in [admin] is refused."""
        with open(SEED, "rb") as f:
            base = tomllib.load(f)
        environ = {"CLIENT_ID": "client", "CLIENT_SECRET": "s3cret"}
        config = parse_config({**base, "admin": {"listen": "tcp:9200"}}, environ=environ)
        self.assertEqual(config.admin.listen, "tcp:9200")
        with self.assertRaises(ConfigError) as raised:
            parse_config({**base, "admin": {"lisen": "tcp:9200"}}, environ=environ)
        self.assertIn("admin", str(raised.exception))

    def test_on_intake_refused_beyond_loopback(self) -> None:
        """"intake" is refused when the intake listens beyond loopback: the admin routes would be public."""
        config = self.config()
        config = attrs.evolve(config, intake=attrs.evolve(config.intake, secret="k"))
        with self.assertRaises(ConfigError) as raised:
            IVRService(reactor, config, intake="tcp:8080", admin="intake")
        self.assertIn("admin.listen", str(raised.exception))
        IVRService(reactor, config, intake="tcp:8080:interface=127.0.0.1", admin="intake")

    def test_bad_endpoint_refused(self) -> None:
        """An [admin] listen that is not a server endpoint is refused naming admin.listen."""
        with self.assertRaises(ConfigError) as raised:
            IVRService(reactor, self.config(), intake="tcp:0:interface=127.0.0.1", admin="tcp:notaport")
        self.assertIn("admin.listen", str(raised.exception))
