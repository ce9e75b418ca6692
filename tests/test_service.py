"""
The service as a ``MultiService``: its children, what ``stopService`` does
in what order (drain with the intake listening, then stop listening and
the clients), and a start that fails at one listener releasing the others.
"""

from __future__ import annotations

import gc
import socket
from typing import Any

import attrs
import treq
from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.protocol import Factory, Protocol
from twisted.trial.unittest import SynchronousTestCase

from ivrproto.listeners import CannotListen, ListenerService
from ivrproto.service import GC_THRESHOLDS, IVRService, freeze_startup_objects, make_ivr_service

from .test_integration import ServiceTestCase


def _refused(address: Any) -> bool:
    with socket.socket() as s:
        return s.connect_ex((address.host, address.port)) != 0


class CompositionTests(ServiceTestCase):
    def test_children(self) -> None:
        """The intake and the admin listener are endpoint services under the service, with the clients and the loop-lag monitor."""
        names = [child.name for child in self.service]
        self.assertEqual(names, ["clients", "loop-lag monitor", "intake", "admin listener"])
        self.assertIsInstance(self.service.getServiceNamed("intake"), ListenerService)
        self.assertIsInstance(self.service.getServiceNamed("admin listener"), ListenerService)
        self.assertTrue(all(child.running for child in self.service))

    @inlineCallbacks
    def test_embedded_emulator_is_a_sibling(self) -> Any:
        """With an embedded emulator it is the service's sibling, first, stopped with the others."""
        config = attrs.evolve(
            self.service.config,
            emulator={"emulator": {"listen": "tcp:0:interface=127.0.0.1",
                                   "client_id": "client", "client_secret": "s3cret"}},
        )
        service = make_ivr_service(reactor, config, intake="tcp:0:interface=127.0.0.1",
                                   admin="tcp:0:interface=127.0.0.1")
        service.scenario = attrs.evolve(service.scenario, calls=[])
        yield service.start()
        self.assertEqual([c.name for c in service][0], "emulator")
        host, port = service.platform.base_url[len("http://"):].rsplit(":", 1)
        yield service.stop()
        self.assertTrue(_refused(attrs.make_class("A", ["host", "port"])(host, int(port))))
        self.assertFalse(any(child.running for child in service))

    @inlineCallbacks
    def test_embedded_emulator_stops_after_the_drain(self) -> Any:
        """Stopping the demo drains and stops the service first, then the emulator its calls used."""
        config = attrs.evolve(
            self.service.config,
            emulator={"emulator": {"listen": "tcp:0:interface=127.0.0.1",
                                   "client_id": "client", "client_secret": "s3cret"}},
        )
        service = make_ivr_service(reactor, config, intake="tcp:0:interface=127.0.0.1",
                                   admin="tcp:0:interface=127.0.0.1")
        service.scenario = attrs.evolve(service.scenario, calls=[])
        yield service.start()
        order: list[str] = []
        stop_service, stop_emulator = service.ivr.stopService, service.emulator.stopService
        service.ivr.stopService = lambda: stop_service().addCallback(lambda _: order.append("service"))
        service.emulator.stopService = lambda: (order.append("emulator"), stop_emulator())[1]
        yield service.stopService()
        self.assertEqual(order, ["service", "emulator"])
        self.assertFalse(any(child.running for child in service))

    def test_production_service_never_runs_the_emulator(self) -> None:
        """Built directly, the service ignores [emulator]; make_ivr_service without one is the service itself."""
        config = attrs.evolve(
            self.service.config,
            emulator={"emulator": {"listen": "tcp:0:interface=127.0.0.1",
                                   "client_id": "client", "client_secret": "s3cret"}},
        )
        service = IVRService(reactor, config, intake="tcp:0:interface=127.0.0.1",
                             admin="tcp:0:interface=127.0.0.1")
        self.assertNotIn("emulator", [c.name for c in service])
        plain = make_ivr_service(reactor, self.service.config, intake="tcp:0:interface=127.0.0.1",
                                 admin="tcp:0:interface=127.0.0.1")
        self.assertIsInstance(plain, IVRService)

    @inlineCallbacks
    def test_stop_service_drains_then_stops_listening(self) -> Any:
        """stopService drains with the intake still listening (503), then stops every listener."""
        config = self.service.config
        self.service.config = attrs.evolve(
            config, intake=attrs.evolve(config.intake, drain_deadline=0.2)
        )
        record = self.platform.expect_call("call-held", "CRM-PLAIN", [])
        response = yield self.post({"callControlId": "call-held", "externalId": "CRM-PLAIN"})
        yield response.content()
        intake, admin = self.service.intake_address, self.service.admin_address
        stopped = self.service.stopService()
        self.assertFalse(stopped.called)
        response = yield self.post({"callControlId": "call-new", "externalId": "CRM-PLAIN"})
        self.assertEqual(response.code, 503)
        yield response.content()
        yield stopped
        yield record.when_finished()
        self.assertEqual(record.outcome, "transferred")
        self.assertTrue(_refused(intake))
        self.assertTrue(_refused(admin))

    @inlineCallbacks
    def test_failed_start_releases_the_others(self) -> Any:
        """A start that fails at the admin listener fails with CannotListen and leaves the intake closed."""
        held = reactor.listenTCP(0, Factory.forProtocol(Protocol), interface="127.0.0.1")  # type: ignore[attr-defined]
        self.addCleanup(held.stopListening)
        busy = f"tcp:{held.getHost().port}:interface=127.0.0.1"
        service = IVRService(reactor, self.service.config, intake="tcp:0:interface=127.0.0.1",
                             admin=busy)
        failure = yield self.assertFailure(service.start(), CannotListen)
        self.assertEqual(failure.listener, "admin listener")
        self.assertIn("Address already in use", str(failure))
        self.assertIsNotNone(service.intake_address)
        self.assertTrue(_refused(service.intake_address))
        response = yield treq.get(self.service.intake_url + "/healthz", timeout=5, persistent=False)
        self.assertEqual(response.code, 200)  # (the other service is untouched)
        yield response.content()


class FreezeStartupObjectsTests(SynchronousTestCase):
    """
    :func:`freeze_startup_objects`: the start-up objects leave the
    collector's view, and the collector runs less often.
    """

    def test_thresholds(self) -> None:
        """After start-up the collector's thresholds are GC_THRESHOLDS."""
        before = gc.get_threshold()
        self.addCleanup(gc.set_threshold, *before)
        freeze_startup_objects()
        self.assertEqual(gc.get_threshold(), GC_THRESHOLDS)
        self.assertEqual(GC_THRESHOLDS, (10000, 10, 10))
        self.assertGreater(gc.get_freeze_count(), 0)
