"""
Logs as one JSON object per line.

Use it with twistd's own option, ``twistd --logger ivrproto.logs.json_observer
ivr ...``, or with ``--log-format json`` on ``twistd ivr`` (or ``[logging]
format = "json"`` in the config), which sets it as the application's log
observer.

Each line carries the time, level, namespace and the formatted message, and
the call's correlation id (``call_control_id``) when the event has one.  No
other event field is copied, so that nothing logged by accident (a request
object, a header) reaches the output; the messages themselves never hold a
secret, a token, a raw caller id or a profile attribute value.
"""

from __future__ import annotations

import json
import sys
from typing import IO, Any, Mapping, Optional

from twisted.logger import FileLogObserver, ILogObserver, formatEvent
from twisted.python.failure import Failure


def event_as_json(event: Mapping[str, Any]) -> Optional[str]:
    """
    One log event as a line of JSON.
    """
    record: dict[str, Any] = {
        "time": round(event.get("log_time", 0.0), 6),
        "level": getattr(event.get("log_level"), "name", "info"),
        "namespace": event.get("log_namespace", "-"),
        "message": formatEvent(dict(event)),
    }
    call_control_id = event.get("call_control_id")
    if isinstance(call_control_id, str):
        record["call_control_id"] = call_control_id
    failure = event.get("log_failure")
    if isinstance(failure, Failure):
        record["error"] = failure.getErrorMessage()
        record["error_type"] = failure.type.__name__
        record["traceback"] = failure.getTraceback()
    return json.dumps(record, ensure_ascii=False) + "\n"


def json_observer(out: Optional[IO[str]] = None) -> ILogObserver:
    """
    A log observer writing one JSON object per line (to standard output).
    """
    return FileLogObserver(out if out is not None else sys.stdout, event_as_json)
