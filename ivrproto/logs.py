"""
Logs as one JSON object per line, and the observers ``twistd ivr`` logs to.

``twistd ivr --log-format json`` (or ``IVR_LOG_FORMAT=json``, or ``[logging]
format = "json"``) writes JSON lines where twistd writes its text log (the
service offers twistd the observer, see :func:`log_file_opener`): to
standard output with ``-n``, else to ``--logfile`` (``twistd.log`` by
default), with twistd's rotation of that file (every megabyte, and on
SIGUSR1).  ``twistd --logger ivrproto.logs.json_observer`` writes them to
standard output.

Each line carries the time (RFC 3339, UTC), level, namespace and the
formatted message, and the call's correlation id (``call_control_id``) when
the event has one, and the end-of-call audit record (``call_record``: menu
version, option, outcome, fallback, target; never collected digits or a raw
caller id) on the line that ends a call.  No other event field is copied, so that nothing logged
by accident (a request object, a header) reaches the output; the messages
themselves never hold a secret, a token, a raw caller id or a profile
attribute value.

In both formats, the lines Twisted writes about its own plumbing (HTTP
client pool factories starting and stopping, listening ports named by
private class names) are left out: the service logs its own line when a
listener starts.  So are events below ``[logging] level`` (``info`` by
default: the per-call arrival line is at ``debug``); they are dropped before
anything formats them.
"""

from __future__ import annotations

import re
import sys
from datetime import datetime, timezone
from typing import IO, Any, Callable, Mapping, Optional, cast

import orjson
from twisted.logger import (
    FileLogObserver,
    FilteringLogObserver,
    ILogFilterPredicate,
    ILogObserver,
    LogEvent,
    LogLevel,
    LogLevelFilterPredicate,
    PredicateResult,
    formatEvent,
    textFileLogObserver,
)
from twisted.python.failure import Failure

#: Factories' start and stop lines (``Factory.noisy``): the HTTP client pool
#: makes a factory for every connection it opens.
_FACTORY_FORMATS = frozenset({"Starting factory {factory!r}", "Stopping factory {factory!r}"})

#: Lines of Twisted's older log API about listening ports and protocols.
_PLUMBING = re.compile(
    r"(?:\S.* starting on \S+"
    r"|\((?:\w+ )?Port \S+ Closed\)"
    r"|(?:Starting|Stopping) protocol \S.*)\Z",
    re.DOTALL,
)


def is_operator_event(event: LogEvent) -> PredicateResult:
    """
    A :class:`~twisted.logger.FilteringLogObserver` predicate that leaves out
    Twisted's plumbing lines (see the module's docstring).
    """
    if event.get("log_format") in _FACTORY_FORMATS:
        return PredicateResult.no
    if event.get("log_namespace") == "log_legacy":
        text = event.get("log_text")
        if not isinstance(text, str):
            message = event.get("message")
            text = " ".join(map(str, message)) if isinstance(message, tuple) else ""
        if _PLUMBING.match(text):
            return PredicateResult.no
    return PredicateResult.maybe


def quiet(observer: ILogObserver, level: str = "info") -> ILogObserver:
    """
    ``observer``, without Twisted's plumbing lines or events below ``level``
    (a :class:`~twisted.logger.LogLevel` name).
    """
    levels = LogLevelFilterPredicate(defaultLogLevel=LogLevel.levelWithName(level))
    # A plain callable is a predicate (FilteringLogObserver calls it).
    return FilteringLogObserver(
        observer, [levels, cast(ILogFilterPredicate, is_operator_event)]
    )


def rfc3339(timestamp: float) -> str:
    """
    A POSIX time as RFC 3339 in UTC, to the microsecond:
    ``2026-12-01T23:43:05.123456Z``.
    """
    moment = datetime.fromtimestamp(timestamp, tz=timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _replace_surrogates(value: Any) -> Any:
    "``value`` with every string made valid UTF-8, at any depth."
    if isinstance(value, str):
        return value.encode("utf-8", "replace").decode("utf-8")
    if isinstance(value, dict):
        return {_replace_surrogates(k): _replace_surrogates(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_replace_surrogates(v) for v in value]
    return value


def event_as_json(event: Mapping[str, Any]) -> Optional[str]:
    """
    One log event as a line of JSON.  A worker's own JSON record, relayed by
    the supervisor of ``twistd ivr --workers`` as ``worker_record``, is
    written as it came, with ``worker`` (its index) added.
    """
    worker_record = event.get("worker_record")
    if isinstance(worker_record, dict):
        return orjson.dumps({**worker_record, "worker": event.get("index")}).decode("utf-8") + "\n"
    record: dict[str, Any] = {
        "time": rfc3339(event.get("log_time", 0.0)),
        "level": getattr(event.get("log_level"), "name", "info"),
        "namespace": event.get("log_namespace", "-"),
        "message": formatEvent(dict(event)),
    }
    call_control_id = event.get("call_control_id")
    if isinstance(call_control_id, str):
        record["call_control_id"] = call_control_id
    call_record = event.get("call_record")
    if isinstance(call_record, dict):
        record["call_record"] = call_record
    failure = event.get("log_failure")
    if isinstance(failure, Failure):
        record["error"] = failure.getErrorMessage()
        record["error_type"] = failure.type.__name__
        record["traceback"] = failure.getTraceback()
    try:
        line = orjson.dumps(record)
    except orjson.JSONEncodeError:
        # A lone surrogate (say, from undecodable bytes) is not UTF-8.
        line = orjson.dumps(_replace_surrogates(record))
    return line.decode("utf-8") + "\n"


def file_observer(out: IO[Any], log_format: str, level: str = "info") -> ILogObserver:
    """
    An observer writing ``log_format`` (``text`` or ``json``) lines to
    ``out``, without Twisted's plumbing lines or events below ``level``.
    """
    if log_format == "json":
        return quiet(FileLogObserver(out, event_as_json), level)
    return quiet(textFileLogObserver(out), level)


def json_observer(out: Optional[IO[str]] = None, level: str = "info") -> ILogObserver:
    """
    A log observer writing one JSON object per line (to standard output),
    for events at ``level`` or above.
    """
    return file_observer(out if out is not None else sys.stdout, "json", level)


def twistd_log_file(options: Mapping[str, Any]) -> IO[Any]:
    """
    The file twistd logs to for its ``options``, chosen and opened as
    twistd does: standard output with ``--nodaemon`` (or ``--logfile -``),
    else ``--logfile`` (``twistd.log`` by default) as a
    :class:`~twisted.python.logfile.LogFile`, which rotates every megabyte
    and on SIGUSR1.
    """
    name = options.get("logfile") or ""
    # Without "nodaemon" (twistd on Windows), twistd never daemonizes.
    nodaemon = options.get("nodaemon", True)
    if name == "-":
        if not nodaemon:
            sys.exit("Daemons cannot log to stdout, exiting!")
        return sys.stdout
    if nodaemon and not name:
        return sys.stdout
    from twisted.python.logfile import LogFile

    log_file = LogFile.fromFullPath(name or "twistd.log")
    import signal

    if hasattr(signal, "SIGUSR1") and not signal.getsignal(signal.SIGUSR1):

        def rotate(signum: int, frame: Any) -> None:
            from twisted.internet import reactor

            reactor.callFromThread(log_file.rotate)  # type: ignore[attr-defined]

        signal.signal(signal.SIGUSR1, rotate)
    return log_file


def log_file_opener(
    runner_options: Any, log_format: str, level: str = "info"
) -> Optional[Callable[[], IO[Any]]]:
    """
    Where ``twistd ivr`` logs, for the program that parsed its options.

    :param runner_options: the parent options.  Those of ``twist`` (``python
        -m twisted``) get a file observer factory, which twist gives the file
        it opened.  For twistd's: unless ``--logger`` or ``--syslog`` was
        given, the opener of the file twistd would log to
        (:func:`twistd_log_file`), for the service to offer twistd an
        observer of that file in ``log_format`` (as the application's log
        observer; twistd's ``--logger`` still wins).
    :param level: the least severe events twist's observer writes
    :return: that opener, or ``None`` to leave logging to the program
    """
    if runner_options is None:
        return None
    if "fileLogObserverFactory" in runner_options:  # twist
        runner_options["fileLogObserverFactory"] = lambda out: file_observer(out, log_format, level)
        return None
    if "logger" not in runner_options or "logfile" not in runner_options:
        return None
    if runner_options["logger"] is not None or runner_options.get("syslog"):
        return None
    return lambda: twistd_log_file(runner_options)


__all__ = [
    "event_as_json",
    "file_observer",
    "log_file_opener",
    "is_operator_event",
    "json_observer",
    "quiet",
    "rfc3339",
    "twistd_log_file",
]
