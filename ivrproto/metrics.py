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
from ivrproto.cluster.health import OPERATIONS as _SHARED_OPS

#: Latency buckets, in seconds: callers notice tens of milliseconds.
FAST_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

BREAKER_STATES = ("closed", "half-open", "open")

#: The shared operations counted by ``ivr_shared_fallbacks`` (a failed
#: probe is no fallback: Redis is down already).
SHARED_OPERATIONS = tuple(op for op in _SHARED_OPS if op != "probe")

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


#: The Audio Connector's labels (the same sets as
#: :mod:`ivrproto.audioconnector`'s, written out so that this module stays
#: free of the audio code): what the flow is told, why an upgrade was
#: refused, and what a client broke.
AC_OUTCOMES = ("selected", "operator", "hangup", "failed")
AC_REFUSALS = ("unauthorized", "unknown-path", "draining")
AC_PROTOCOL_ERRORS = ("malformed", "sequence", "not-open", "invalid", "unknown-type", "unexpected")


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


#: A family's samples, read from the service's stats: ``(label value or
#: None, value)`` pairs.
_Samples = Callable[[Mapping[str, Any]], Iterable[tuple[Optional[str], float]]]


def _at(stats: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    for key in path[:-1]:
        stats = stats.get(key, {})
    return stats.get(path[-1], 0)


def _one(*path: str) -> _Samples:
    "One unlabelled sample: the number at ``path``."
    return lambda stats: [(None, _at(stats, path))]


def _each(path: tuple[str, ...], pairs: Iterable[tuple[str, str]]) -> _Samples:
    "One sample per ``(field, label)``, the fields read under ``path``."
    pairs = tuple(pairs)
    return lambda stats: [(label, _at(stats, path + (field,))) for field, label in pairs]


def _every(*path: str) -> _Samples:
    "One sample per entry of the table at ``path``, in key order."
    return lambda stats: [(str(k), v) for k, v in sorted((_at(stats, path) or {}).items())]


def _same(names: Iterable[str]) -> tuple[tuple[str, str], ...]:
    return tuple((name, name) for name in names)


_G, _C = GaugeMetricFamily, CounterMetricFamily

#: Every family the collector makes, in the order it yields them:
#: ``(type, name, help, label name or None, samples)``.
_FAMILIES: tuple[tuple[Any, str, str, Optional[str], _Samples], ...] = (
    (_G, "ivr_calls_active", "Calls in progress.", None, _one("calls", "active")),
    (_G, "ivr_reactor_lag_seconds", "How late the reactor runs timers (smoothed).", None,
     _one("loop_lag")),
    (_G, "ivr_draining", "1 while the service drains.", None,
     lambda stats: [(None, 1 if stats.get("draining") else 0)]),
    (_C, "ivr_intake_refused", "Intake requests and connections refused, by reason.",
     "reason", _each(("intake", "refused"), _same(REFUSAL_REASONS))),
    (_C, "ivr_calls", "Calls ended, by outcome.", "outcome",
     _each(("calls",), _same(("transferred", "hungup", "failed")))),
    (_C, "ivr_default_menu_fallbacks", "Calls that got the default menu, by why.", "reason",
     _every("fallbacks")),
    (_C, "ivr_calls_by_schedule_state",
     "Calls ended, by the opening hours that served them (each schedule's state, closure, "
     "or always when there are no schedules).", "hours", _every("hours")),
    (_G, "ivr_closure_active", "1 while the emergency closure is switched on, by source.",
     "source", _each(("closure",), (("flag_file", "flag-file"), ("admin", "admin")))),
    (_C, "ivr_websocket_closes", "Call Control connections closed, by code.", "code",
     _every("closes")),
    (_C, "ivr_token_requests", "Requests to the token endpoint.", None,
     _one("tokens", "requests")),
    (_C, "ivr_token_refreshes", "Access tokens obtained.", None, _one("tokens", "refreshes")),
    (_C, "ivr_token_failures", "Failed token fetches.", None, _one("tokens", "failures")),
    (_C, "ivr_token_retries", "Token requests sent again after a failed one.", None,
     _one("tokens", "retries")),
    (_C, "ivr_token_fast_failures",
     "Token asks failed at once, without a request, after a failed fetch.", None,
     _one("tokens", "fast_failures")),
    (_C, "ivr_token_invalidations", "Cached access tokens dropped because they were refused.",
     None, _one("tokens", "invalidations")),
    (_C, "ivr_token_invalidations_ignored",
     "Refusals of the access token that kept it (reported too soon after a drop).", None,
     _one("tokens", "invalidations_ignored")),
    (_C, "ivr_profile_lookups", "Profile lookups, by outcome.", "outcome",
     _each(("profiles", "lookups"), (
         ("hits", "hit"), ("negative_hits", "negative-hit"), ("found", "found"),
         ("not_found", "not-found"), ("failed", "failed"), ("timed_out", "timed-out"),
         ("rate_limited", "rate-limited"), ("circuit_open", "circuit-open"),
     ))),
    (_C, "ivr_profile_cache_hits", "Lookups answered from the cache.", None,
     lambda stats: [(None, _at(stats, ("profiles", "lookups", "hits"))
                     + _at(stats, ("profiles", "lookups", "negative_hits")))]),
    (_C, "ivr_profile_requests", "Requests to the profile source (retries included).", None,
     _one("profiles", "requests", "requests")),
    (_C, "ivr_profile_retries", "Requests to the profile source sent again.", None,
     _one("profiles", "requests", "retries")),
    (_C, "ivr_profile_retries_refused",
     "Profile requests not retried: the shared retry budget was spent, or the retry would "
     "end past the call's deadline.", "reason",
     _each(("profiles", "requests"),
           (("budget_spent", "retry-budget"), ("past_deadline", "past-deadline")))),
    (_C, "ivr_profile_late_fills",
     "Profile fetches that ended after their caller's budget and filled the cache.", None,
     _one("profiles", "lookups", "late_fills")),
    (_C, "ivr_profile_rate_limit_pauses",
     "429 answers from the profile source that paused every lookup.", None,
     _one("profiles", "lookups", "pauses")),
    (_C, "ivr_profile_cache_evictions",
     "Profiles dropped from the cache to stay within its entry and byte bounds.", None,
     _one("profiles", "lookups", "evictions")),
    (_C, "ivr_profile_cache_too_large",
     "Profiles not cached because they are larger than cache_max_entry_bytes.", None,
     _one("profiles", "lookups", "too_large")),
    (_G, "ivr_profile_cache_entries", "Profiles in the cache.", None,
     _one("profiles", "cache_entries")),
    (_G, "ivr_profile_cache_bytes", "Estimated memory of the cached profiles, in bytes.", None,
     _one("profiles", "cache_bytes")),
    (_G, "ivr_shared_up", "Whether the shared Redis answers (1) or not (0, or shared state off).",
     None, lambda stats: [(None, 1 if _at(stats, ("shared", "up")) else 0)]),
    (_C, "ivr_shared_outages", "Times the shared Redis went down.", None,
     _one("shared", "outages")),
    (_C, "ivr_shared_fallbacks",
     "Shared-state operations that used local state instead of Redis, by operation.",
     "operation", _each(("shared", "fallbacks"), _same(SHARED_OPERATIONS))),
    (_G, "ivr_profile_breaker_state", "1 for the circuit breaker's current state.", "state",
     lambda stats: [(state, 1 if _at(stats, ("profiles", "breaker")) == state else 0)
                    for state in BREAKER_STATES]),
    # The Audio Connector (zero while it is off).
    (_G, "ivr_audio_connector_sessions_open", "Audio Connector sessions (sockets) open.", None,
     _one("audio_connector", "active")),
    (_G, "ivr_audio_connector_calls_active", "Audio Connector calls in progress.", None,
     _one("audio_connector", "in_progress")),
    (_C, "ivr_audio_connector_calls", "Audio Connector calls ended, by the outcome the flow is told.",
     "outcome", _each(("audio_connector", "outcomes"), _same(AC_OUTCOMES))),
    (_C, "ivr_audio_connector_refused",
     "Audio Connector upgrades refused, by reason (401, 404, 503 while draining).", "reason",
     _each(("audio_connector", "refused_by_reason"), _same(AC_REFUSALS))),
    (_C, "ivr_audio_connector_frames_sent", "Audio frames (200 ms of PCMU) sent to Genesys.",
     None, _one("audio_connector", "frames_sent")),
    (_C, "ivr_audio_connector_rate_limit_pauses",
     "429 errors from Genesys that paused a session's audio.", None,
     _one("audio_connector", "rate_limit_pauses")),
    (_C, "ivr_audio_connector_protocol_errors",
     "Messages from Genesys that broke the protocol, by kind.", "kind",
     _each(("audio_connector", "protocol_errors"), _same(AC_PROTOCOL_ERRORS))),
)


class _StatsCollector:
    """
    Turns the service's counters into metric families at scrape time, as
    :data:`_FAMILIES` lists them.
    """

    def __init__(self, stats: Callable[[], Mapping[str, Any]]) -> None:
        self._stats = stats

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterator[Any]:
        stats = self._stats()
        for kind, name, help_text, label, samples in _FAMILIES:
            family = kind(name, help_text, labels=None if label is None else [label])
            for value_label, value in samples(stats):
                family.add_metric([] if value_label is None else [value_label], value)
            yield family


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
