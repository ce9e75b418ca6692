"""
Tests for :mod:`ivrproto.clients._retry`.
"""

from __future__ import annotations

from email.utils import formatdate
from typing import Any

from hypothesis import given, settings, strategies as st
from treq.testing import StubTreq
from twisted.internet.defer import CancelledError, Deferred, fail, succeed
from twisted.internet.error import ConnectionRefusedError, DNSLookupError
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from twisted.web._newclient import ResponseNeverReceived
from twisted.web.iweb import UNKNOWN_LENGTH
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from ivrproto.clients._http import (
    BodyIncomplete,
    BodyTimedOut,
    BodyTooLarge,
    describe_request_failure,
    read_body,
)
from ivrproto.clients._cancel import Cancelled, run_cancellable, sleep
from ivrproto.clients.limits import RetryBudget
from ivrproto.clients._retry import (
    RetryPolicy,
    full_jitter,
    parse_retry_after,
    policy_with,
    retry_after_jitter,
)

NOW = 1_700_000_000.0


class RetryAfterTests(SynchronousTestCase):
    """
    parse_retry_after reads both forms of RFC 9110 section 10.2.3.
    """

    def test_delay_seconds(self) -> None:
        """delay-seconds is read as str or bytes."""
        self.assertEqual(parse_retry_after("5", NOW, 10), 5.0)
        self.assertEqual(parse_retry_after(b" 0 ", NOW, 10), 0.0)
        self.assertEqual(parse_retry_after(b"2.5", NOW, 10), 2.5)

    def test_capped(self) -> None:
        """Long delays are cut to the cap."""
        self.assertEqual(parse_retry_after(b"86400", NOW, 10), 10.0)
        far = formatdate(NOW + 86400, usegmt=True)
        self.assertEqual(parse_retry_after(far, NOW, 10), 10.0)

    def test_http_date(self) -> None:
        """An IMF-fixdate gives the seconds until that date."""
        self.assertEqual(parse_retry_after(formatdate(NOW + 7, usegmt=True), NOW, 60), 7.0)
        self.assertEqual(
            parse_retry_after(b"Tue, 14 Nov 2023 22:13:27 GMT", NOW, 60), 7.0
        )

    def test_obsolete_date_forms(self) -> None:
        """The obsolete RFC 850 form is accepted too."""
        self.assertEqual(parse_retry_after("Tuesday, 14-Nov-23 22:13:27 GMT", NOW, 60), 7.0)

    def test_past_date(self) -> None:
        """A date in the past means retry now."""
        self.assertEqual(parse_retry_after(formatdate(NOW - 100, usegmt=True), NOW, 60), 0.0)

    def test_garbage(self) -> None:
        """Absent, negative or unreadable values give None."""
        for value in [None, "", b"   ", "-5", "soon", b"\xff\xfe", "1e3", "5 seconds", "NaN", "inf"]:
            self.assertIsNone(parse_retry_after(value, NOW, 60), value)

    @settings(max_examples=200, deadline=None)
    @given(st.one_of(st.text(), st.binary()), st.floats(0, 1e6))
    def test_never_raises(self, value: Any, cap: float) -> None:
        """Any header value gives None or a delay within [0, cap]."""
        delay = parse_retry_after(value, NOW, cap)
        if delay is not None:
            self.assertTrue(0 <= delay <= cap)


class FullJitterTests(SynchronousTestCase):
    """
    full_jitter is random() times the capped exponential bound.
    """

    def test_values(self) -> None:
        """The bound doubles per attempt up to the cap."""
        self.assertEqual([full_jitter(n, 0.25, 5.0, lambda: 1.0) for n in range(6)], [0.25, 0.5, 1.0, 2.0, 4.0, 5.0])
        self.assertEqual(full_jitter(3, 0.25, 5.0, lambda: 0.5), 1.0)
        self.assertEqual(full_jitter(3, 0.25, 5.0, lambda: 0.0), 0.0)

    def test_huge_attempt(self) -> None:
        """An absurd attempt number does not overflow."""
        self.assertEqual(full_jitter(10**6, 0.25, 5.0, lambda: 1.0), 5.0)


class RetryAfterJitterTests(SynchronousTestCase):
    """
    retry_after_jitter adds up to min(1 s, 10 %) to a Retry-After wait.
    """

    def test_values(self) -> None:
        """Never less than asked, at most a second more."""
        self.assertEqual(retry_after_jitter(0, lambda: 0.9), 0.0)
        self.assertEqual(retry_after_jitter(2, lambda: 0.0), 2.0)
        self.assertAlmostEqual(retry_after_jitter(2, lambda: 0.5), 2.1)
        self.assertAlmostEqual(retry_after_jitter(120, lambda: 0.5), 120.5)

    @given(st.floats(0, 1e6), st.floats(0, 1, exclude_max=True))
    def test_bounds(self, delay: float, r: float) -> None:
        """delay <= wait <= delay + min(1, delay / 10)."""
        wait = retry_after_jitter(delay, lambda: r)
        self.assertTrue(delay <= wait <= delay + min(1.0, delay * 0.1) + 1e-9)


class RetryBudgetTests(SynchronousTestCase):
    """
    RetryBudget allows ratio * recent first attempts plus a floor per second.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(NOW)

    def spend_all(self, budget: RetryBudget) -> int:
        spent = 0
        while budget.try_spend():
            spent += 1
            if spent > 10**6:
                raise AssertionError("unbounded budget")
        return spent

    def test_floor(self) -> None:
        """With no attempts, min_per_second * window retries are allowed, then none."""
        budget = RetryBudget(self.clock)
        self.assertEqual(self.spend_all(budget), 50)
        self.assertFalse(budget.try_spend())
        self.assertEqual(budget.refused, 2)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_ratio(self) -> None:
        """Each first attempt earns ratio of a retry."""
        budget = RetryBudget(self.clock, ratio=0.2, min_per_second=0)
        self.assertFalse(budget.try_spend())
        for _ in range(100):
            budget.record_attempt()
        self.assertEqual(self.spend_all(budget), 20)
        for _ in range(5):
            budget.record_attempt()
        self.assertEqual(self.spend_all(budget), 1)

    def test_decay(self) -> None:
        """Spent retries are forgotten over time, and so are old attempts."""
        budget = RetryBudget(self.clock, ratio=0.5, min_per_second=1.0, window=10.0)
        self.assertEqual(self.spend_all(budget), 10)
        self.clock.advance(10)
        # 10 spent decayed to 10/e, so about 6 more fit under the floor of 10.
        self.assertEqual(self.spend_all(budget), 6)
        for _ in range(100):
            budget.record_attempt()
        self.clock.advance(1000)
        self.assertAlmostEqual(budget.available, 10.0)

    def test_steady_state(self) -> None:
        """Under an outage, retries settle at ratio * attempt rate + the floor rate."""
        budget = RetryBudget(self.clock, ratio=0.2, min_per_second=5.0, window=10.0)
        allowed: list[int] = []
        for second in range(120):
            granted = 0
            for _ in range(100):
                budget.record_attempt()
                if budget.try_spend():
                    granted += 1
                self.clock.advance(0.01)
            allowed.append(granted)
        rate = sum(allowed[-60:]) / 60
        self.assertTrue(24 <= rate <= 26, rate)

    def test_clock_going_back(self) -> None:
        """A clock that goes back does not inflate the budget."""
        budget = RetryBudget(self.clock, ratio=0, min_per_second=1.0)
        self.spend_all(budget)
        self.clock.rightNow -= 100
        self.assertFalse(budget.try_spend())

    def test_bad_settings(self) -> None:
        """Negative, infinite or NaN settings are refused."""
        for kwargs in (
            {"ratio": -0.1},
            {"ratio": float("nan")},
            {"min_per_second": -1},
            {"min_per_second": float("inf")},
            {"window": 0},
        ):
            self.assertRaises(ValueError, RetryBudget, self.clock, **kwargs)


class SleepTests(SynchronousTestCase):
    """
    sleep waits on the given clock and can be cancelled.
    """

    def test_sleep_and_cancel(self) -> None:
        """It fires after the delay; cancelling removes its timer."""
        clock = Clock()
        d = sleep(clock, 2)
        clock.advance(1.9)
        self.assertNoResult(d)
        clock.advance(0.1)
        self.assertIsNone(self.successResultOf(d))
        d = sleep(clock, 2)
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.assertEqual(clock.getDelayedCalls(), [])


class Body(Resource):
    """
    Answers with a scripted body.
    """

    isLeaf = True

    def __init__(self, render: Any) -> None:
        super().__init__()
        self._render = render
        self.requests: list[Request] = []

    def render(self, request: Request) -> Any:
        self.requests.append(request)
        return self._render(request)


class ReadBodyTests(SynchronousTestCase):
    """
    read_body is bounded in time and size.
    """

    def response(self, render: Any) -> Any:
        self.clock = Clock()
        self.resource = Body(render)
        self.stub = StubTreq(self.resource)
        d = self.stub.request("GET", "http://example.test/", unbuffered=True)
        self.stub.flush()
        self.addCleanup(self.assert_no_timers)
        return self.successResultOf(d)

    def assert_no_timers(self) -> None:
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_small_body(self) -> None:
        """A body within the bounds is returned whole."""
        response = self.response(lambda request: b"hello")
        d = read_body(self.clock, response, 1.0, 5)
        self.stub.flush()
        self.assertEqual(self.successResultOf(d), b"hello")

    def test_content_length_too_large(self) -> None:
        """A Content-Length over the limit fails at once."""
        response = self.response(lambda request: b"x" * 100)
        d = read_body(self.clock, response, 1.0, 99)
        self.stub.flush()
        self.assertIn("100 bytes", self.failureResultOf(d, BodyTooLarge).value.reason)

    def test_chunked_too_large(self) -> None:
        """A body without Content-Length is cut off past the limit."""

        def chunks(request: Request) -> Any:
            request.write(b"x" * 60)
            request.write(b"y" * 60)
            return NOT_DONE_YET

        response = self.response(chunks)
        self.assertIs(response.length, UNKNOWN_LENGTH)
        d = read_body(self.clock, response, 1.0, 100)
        self.stub.flush()
        self.failureResultOf(d, BodyTooLarge)

    def test_timeout(self) -> None:
        """A body that does not finish in time fails with BodyTimedOut."""

        def trickle(request: Request) -> Any:
            request.write(b"x")
            return NOT_DONE_YET

        response = self.response(trickle)
        d = read_body(self.clock, response, 3.0, 100)
        self.stub.flush()
        self.assertNoResult(d)
        self.clock.advance(3.0)
        self.failureResultOf(d, BodyTimedOut)
        self.stub.flush()

    def test_cancel(self) -> None:
        """Cancelling the read drops the connection and the deadline."""

        def trickle(request: Request) -> Any:
            request.write(b"x")
            return NOT_DONE_YET

        response = self.response(trickle)
        d = read_body(self.clock, response, 3.0, 100)
        self.stub.flush()
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.stub.flush()

    def test_connection_lost(self) -> None:
        """A connection lost mid-body fails with BodyIncomplete."""

        def trickle(request: Request) -> Any:
            request.setHeader(b"content-length", b"10")
            request.write(b"x")
            return NOT_DONE_YET

        response = self.response(trickle)
        d = read_body(self.clock, response, 3.0, 100)
        self.stub.flush()
        self.resource.requests[0].channel.transport.loseConnection()
        self.stub.flush()
        self.failureResultOf(d, BodyIncomplete)


class DescribeTests(SynchronousTestCase):
    """
    Request failures are described without their text.
    """

    def test_descriptions(self) -> None:
        """Known failures get short reasons; none repeats the exception's text."""
        self.assertEqual(describe_request_failure(CancelledError(), 2), "timed out after 2s")
        self.assertEqual(
            describe_request_failure(ResponseNeverReceived([CancelledError()]), 2.5),
            "timed out after 2.5s",
        )
        self.assertEqual(
            describe_request_failure(ConnectionRefusedError("secret-host"), 2),
            "connection failed",
        )
        self.assertEqual(
            describe_request_failure(DNSLookupError("secret-host"), 2),
            "host name lookup failed",
        )
        self.assertNotIn("secret", describe_request_failure(ValueError("secret"), 2))


class RunCancellableTests(SynchronousTestCase):
    """
    run_cancellable tells a cancellation from a timeout.
    """

    def test_result(self) -> None:
        """The coroutine's result and errors come through."""

        async def ok(flag: Cancelled) -> int:
            return await succeed(3)

        async def bad(flag: Cancelled) -> int:
            await fail(ValueError("x"))
            return 0

        self.assertEqual(self.successResultOf(run_cancellable(ok)), 3)
        self.failureResultOf(run_cancellable(bad), ValueError)

    def test_cancel_sets_flag(self) -> None:
        """Cancelling sets the flag and the awaited Deferred is cancelled."""
        seen: list[bool] = []
        waiting: Deferred[None] = Deferred()

        async def body(flag: Cancelled) -> str:
            try:
                await waiting
            except CancelledError:
                seen.append(bool(flag))
                raise
            return "done"

        d = run_cancellable(body)
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.assertEqual(seen, [True])

    def test_swallowed_cancel_still_cancels(self) -> None:
        """A coroutine that ignores the cancellation still ends cancelled."""

        async def body(flag: Cancelled) -> str:
            try:
                await Deferred()
            except CancelledError:
                pass
            return "ignored"

        d = run_cancellable(body)
        d.cancel()
        self.failureResultOf(d, CancelledError)


class PolicyWithTests(SynchronousTestCase):
    """
    policy_with: a client's RetryPolicy, from retry= or the older keywords.
    """

    default = RetryPolicy(3, 0.1, 1.0, 2.0, lambda: 0.5)

    def test_default(self) -> None:
        """Without either, the default is used."""
        self.assertIs(policy_with(None, self.default), self.default)

    def test_given(self) -> None:
        """A policy given is used as it is."""
        mine = RetryPolicy(5, 1.0, 9.0, 3.0, lambda: 0.1)
        self.assertIs(policy_with(mine, self.default), mine)

    def test_keywords(self) -> None:
        """The separate keywords replace the default's numbers."""
        policy = policy_with(None, self.default, max_attempts=7, backoff_base=0.5,
                             backoff_cap=4.0, retry_after_cap=6.0)
        self.assertEqual(
            (policy.max_attempts, policy.base, policy.cap, policy.retry_after_cap),
            (7, 0.5, 4.0, 6.0),
        )
        self.assertIs(policy.random, self.default.random)

    def test_both(self) -> None:
        """A policy and a separate keyword together are refused."""
        with self.assertRaises(TypeError):
            policy_with(self.default, self.default, backoff_cap=2.0)

    def test_invalid(self) -> None:
        """max_attempts below 1 is still refused."""
        with self.assertRaises(ValueError):
            policy_with(None, self.default, max_attempts=0)
