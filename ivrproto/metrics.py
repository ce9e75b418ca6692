"""
Prometheus metrics, served at ``/metrics``.

Counters that the parts keep anyway (token requests, lookups by outcome,
calls by outcome, breaker state) are read at scrape time by a collector, so
they cost nothing per call; only the latencies are observed as calls go.
Labels are bounded sets (outcomes, close codes, reasons): never a caller id,
a call id, a token or an attribute value.  The registry also carries
prometheus_client's process, garbage collector and platform collectors, and
``ivr_build_info``.  ``/metrics`` answers in the format the scraper asks
for (OpenMetrics, or the Prometheus text format).
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Iterator, Mapping, Optional

from prometheus_client import (
    CollectorRegistry,
    GCCollector,
    Histogram,
    Info,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import choose_encoder
from twisted.web.resource import Resource
from twisted.web.server import Request

from ivrproto import __version__

#: Latency buckets, in seconds: callers notice tens of milliseconds.
FAST_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

BREAKER_STATES = ("closed", "half-open", "open")

#: Why the intake refused a request, as ``ivr_intake_refused_total`` labels
#: them: a bounded set.  The connection guard (:mod:`ivrproto.intake.guard`)
#: counts ``timeout`` (408) and some ``capacity`` (the connection cap and the
#: descriptor reserve, before a request is read); the intake the rest.
REFUSAL_REASONS = (
    "overloaded",
    "draining",
    "capacity",
    "unsigned",
    "bad_request",
    "duplicate",
    "too_large",
    "timeout",
)


class Metrics:
    """
    The service's metrics, in a registry of their own.

    :param stats: returns the service's counters (see
        :meth:`IVRService.stats`), read at each scrape
    """

    def __init__(self, stats: Callable[[], Mapping[str, Any]]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.first_prompt = Histogram(
            "ivr_intake_to_first_prompt_seconds",
            "Time from an accepted intake request to the first play command sent.",
            buckets=FAST_BUCKETS,
            registry=self.registry,
        )
        self.key_to_command = Histogram(
            "ivr_key_to_command_seconds",
            "Time from a dtmf event received to the next command sent.",
            buckets=FAST_BUCKETS,
            registry=self.registry,
        )
        self.profile_latency = Histogram(
            "ivr_profile_lookup_seconds",
            "Time a call waited for its profile lookup (cache hits included).",
            buckets=FAST_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(_StatsCollector(stats))
        # A full garbage collection with many calls in progress stalls the
        # process (and sheds calls): python_gc_* shows them, process_* the
        # memory and descriptors behind them.
        ProcessCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        Info("ivr_build", "The running ivrproto's version.", registry=self.registry).info(
            {"version": __version__}
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def render_for(self, accept: Optional[str]) -> tuple[bytes, str]:
        """
        The metrics in the format an ``Accept`` header asks for.

        :return: the body and its content type
        """
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type


class _StatsCollector:
    """
    Turns the service's counters into metric families at scrape time.
    """

    def __init__(self, stats: Callable[[], Mapping[str, Any]]) -> None:
        self._stats = stats

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterator[Any]:
        stats = self._stats()
        calls = stats["calls"]
        active = GaugeMetricFamily("ivr_calls_active", "Calls in progress.")
        active.add_metric([], calls["active"])
        yield active
        lag = GaugeMetricFamily(
            "ivr_reactor_lag_seconds", "How late the reactor runs timers (smoothed)."
        )
        lag.add_metric([], stats.get("loop_lag", 0.0))
        yield lag
        draining = GaugeMetricFamily("ivr_draining", "1 while the service drains.")
        draining.add_metric([], 1 if stats.get("draining") else 0)
        yield draining
        refused = CounterMetricFamily(
            "ivr_intake_refused",
            "Intake requests and connections refused, by reason.",
            labels=["reason"],
        )
        counts = stats.get("intake", {}).get("refused", {})
        for reason in REFUSAL_REASONS:
            refused.add_metric([reason], counts.get(reason, 0))
        yield refused
        total = CounterMetricFamily("ivr_calls", "Calls ended, by outcome.", labels=["outcome"])
        for outcome in ("transferred", "hungup", "failed"):
            total.add_metric([outcome], calls.get(outcome, 0))
        yield total
        fallbacks = CounterMetricFamily(
            "ivr_default_menu_fallbacks",
            "Calls that got the default menu, by why.",
            labels=["reason"],
        )
        for reason, count in sorted(stats.get("fallbacks", {}).items()):
            fallbacks.add_metric([reason], count)
        yield fallbacks
        hours = CounterMetricFamily(
            "ivr_calls_by_schedule_state",
            "Calls ended, by the opening hours that served them (each schedule's "
            "state, closure, or always when there are no schedules).",
            labels=["hours"],
        )
        for label, count in sorted(stats.get("hours", {}).items()):
            hours.add_metric([label], count)
        yield hours
        closes = CounterMetricFamily(
            "ivr_websocket_closes", "Call Control connections closed, by code.", labels=["code"]
        )
        for code, count in sorted(stats.get("closes", {}).items()):
            closes.add_metric([str(code)], count)
        yield closes

        tokens = stats["tokens"]
        requests = CounterMetricFamily(
            "ivr_token_requests", "Requests to the token endpoint."
        )
        requests.add_metric([], tokens.get("requests", 0))
        yield requests
        refreshes = CounterMetricFamily("ivr_token_refreshes", "Access tokens obtained.")
        refreshes.add_metric([], tokens.get("refreshes", 0))
        yield refreshes
        failures = CounterMetricFamily("ivr_token_failures", "Failed token fetches.")
        failures.add_metric([], tokens.get("failures", 0))
        yield failures
        yield from _plain_counters(tokens, (
            ("ivr_token_retries", "retries", "Token requests sent again after a failed one."),
            (
                "ivr_token_fast_failures",
                "fast_failures",
                "Token asks failed at once, without a request, after a failed fetch.",
            ),
            (
                "ivr_token_invalidations",
                "invalidations",
                "Cached access tokens dropped because they were refused.",
            ),
            (
                "ivr_token_invalidations_ignored",
                "invalidations_ignored",
                "Refusals of the access token that kept it (reported too soon after a drop).",
            ),
        ))

        profiles = stats["profiles"]
        lookups = profiles["lookups"]
        by_outcome = CounterMetricFamily(
            "ivr_profile_lookups", "Profile lookups, by outcome.", labels=["outcome"]
        )
        for field, outcome in (
            ("hits", "hit"),
            ("negative_hits", "negative-hit"),
            ("found", "found"),
            ("not_found", "not-found"),
            ("failed", "failed"),
            ("timed_out", "timed-out"),
            ("rate_limited", "rate-limited"),
            ("circuit_open", "circuit-open"),
        ):
            by_outcome.add_metric([outcome], lookups.get(field, 0))
        yield by_outcome
        hits = CounterMetricFamily("ivr_profile_cache_hits", "Lookups answered from the cache.")
        hits.add_metric([], lookups.get("hits", 0) + lookups.get("negative_hits", 0))
        yield hits
        requests = CounterMetricFamily(
            "ivr_profile_requests", "Requests to the profile source (retries included)."
        )
        client = profiles["requests"]
        requests.add_metric([], client.get("requests", 0))
        yield requests
        retries = CounterMetricFamily(
            "ivr_profile_retries", "Requests to the profile source sent again."
        )
        retries.add_metric([], client.get("retries", 0))
        yield retries
        not_retried = CounterMetricFamily(
            "ivr_profile_retries_refused",
            "Profile requests not retried: the shared retry budget was spent, or the "
            "retry would end past the call's deadline.",
            labels=["reason"],
        )
        not_retried.add_metric(["retry-budget"], client.get("budget_spent", 0))
        not_retried.add_metric(["past-deadline"], client.get("past_deadline", 0))
        yield not_retried
        yield from _plain_counters(lookups, (
            (
                "ivr_profile_late_fills",
                "late_fills",
                "Profile fetches that ended after their caller's budget and filled the cache.",
            ),
            (
                "ivr_profile_rate_limit_pauses",
                "pauses",
                "429 answers from the profile source that paused every lookup.",
            ),
            (
                "ivr_profile_cache_evictions",
                "evictions",
                "Profiles dropped from the cache to stay within its entry and byte bounds.",
            ),
            (
                "ivr_profile_cache_too_large",
                "too_large",
                "Profiles not cached because they are larger than cache_max_entry_bytes.",
            ),
        ))
        cache = GaugeMetricFamily("ivr_profile_cache_entries", "Profiles in the cache.")
        cache.add_metric([], profiles.get("cache_entries", 0))
        yield cache
        cache_bytes = GaugeMetricFamily(
            "ivr_profile_cache_bytes", "Estimated memory of the cached profiles, in bytes."
        )
        cache_bytes.add_metric([], profiles.get("cache_bytes", 0))
        yield cache_bytes
        breaker = GaugeMetricFamily(
            "ivr_profile_breaker_state",
            "1 for the circuit breaker's current state.",
            labels=["state"],
        )
        for state in BREAKER_STATES:
            breaker.add_metric([state], 1 if profiles.get("breaker") == state else 0)
        yield breaker


class MetricsResource(Resource):
    """
    ``/metrics``: OpenMetrics for a scraper that asks for it (``Accept:
    application/openmetrics-text``), else the Prometheus text format.
    """

    isLeaf = True

    def __init__(self, metrics: Metrics) -> None:
        super().__init__()
        self.metrics = metrics

    def render_GET(self, request: Request) -> bytes:
        body, content_type = self.metrics.render_for(request.getHeader("accept"))
        request.setHeader(b"content-type", content_type.encode("ascii"))
        request.setHeader(b"vary", b"accept")
        return body


def _plain_counters(
    counts: Mapping[str, Any], rows: Iterable[tuple[str, str, str]]
) -> Iterator[CounterMetricFamily]:
    """
    One unlabelled counter per ``(name, field, help)`` row, read from
    ``counts[field]``.
    """
    for name, field, help_text in rows:
        family = CounterMetricFamily(name, help_text)
        family.add_metric([], counts.get(field, 0))
        yield family
