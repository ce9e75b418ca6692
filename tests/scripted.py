"""
A scripted HTTP server for the client tests (token source, profile
clients): answers requests from a list, records what it saw, and can hang.
"""

from __future__ import annotations

import json
from typing import Any, Callable, Optional, Union

import attrs
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

#: Answer that never comes: the request hangs.
HANG = object()

Answer = Union[tuple[int, dict[bytes, bytes], bytes], object, Callable[[Request], Any]]


@attrs.frozen
class Seen:
    """
    One request as the fake server saw it.
    """

    method: bytes
    path: bytes
    headers: dict[bytes, list[bytes]]
    body: bytes = b""


class ScriptedResource(Resource):
    """
    Answers requests in order from a script; an exhausted script answers
    with ``default`` if given, else 599.
    """

    isLeaf = True

    def __init__(self, answers: list[Answer], default: Optional[Callable[[], Answer]] = None) -> None:
        super().__init__()
        self.answers = list(answers)
        self.default = default
        self.seen: list[Seen] = []
        self.hanging: list[Request] = []

    def render(self, request: Request) -> Any:
        self.seen.append(
            Seen(
                request.method,
                request.uri,
                dict(request.requestHeaders.getAllRawHeaders()),
                request.content.read(),
            )
        )
        if self.answers:
            answer = self.answers.pop(0)
        elif self.default is not None:
            answer = self.default()
        else:
            answer = (599, {}, b"script exhausted")
        if answer is HANG:
            self.hanging.append(request)
            return NOT_DONE_YET
        if callable(answer):
            return answer(request)
        code, headers, body = answer  # type: ignore[misc]
        request.setResponseCode(code)
        for name, value in headers.items():
            request.setHeader(name, value)
        return body


def json_answer(code: int, body: Any, headers: Optional[dict[bytes, bytes]] = None) -> Answer:
    """
    An answer with a JSON body.
    """
    all_headers = {b"content-type": b"application/json"}
    all_headers.update(headers or {})
    return (code, all_headers, json.dumps(body).encode())


def capture_logs(case: SynchronousTestCase) -> list[dict[str, Any]]:
    """
    Collect every log event emitted during the test.
    """
    events: list[dict[str, Any]] = []
    observer = events.append
    globalLogPublisher.addObserver(observer)
    case.addCleanup(globalLogPublisher.removeObserver, observer)
    return events


def event_text(events: list[dict[str, Any]]) -> str:
    """
    Everything the log events would show, formatted and raw.
    """
    return "\n".join(f"{formatEvent(e)} {e!r}" for e in events)
