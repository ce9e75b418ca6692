"""
Calls placed by hand: ``POST /emulator/calls`` on the emulator's port, so
that a person trying the service can place a call with ``curl`` as the
platform would, and ``GET /emulator/calls/<callControlId>`` to see what the
emulator saw of a call.

``POST /emulator/calls`` takes a JSON object:

- ``externalId`` (required): the caller's external id (its profile comes
  from the emulator's profiles; an unknown one gets a 404 lookup);
- ``callControlId``: the call's id (default: ``hand-1``, ``hand-2``...);
- ``keys``: what the caller does, as ``ivr simulate --keys`` takes it: a
  string ``"7,timeout,0"`` or a list ``["7", "timeout", "0"]``; each item
  waits for the service's next prompts, then presses its keys (a run such as
  ``"12345678#"`` is pressed one key after the other), waits through a
  no-input timeout (``timeout``) or hangs up (``hangup``); after the last
  item the caller stays silent;
- ``script``: instead of ``keys``, a caller script as ``[[calls]]`` takes
  it (``["menu", "press:1"]``);
- ``announce`` (default ``true``): announce the call to the service's
  intake (``POST /v1/calls``), as scripted calls are; with ``false`` the
  emulator only expects the call, and you announce it yourself.

The answer is ``202`` (expected and being announced) or ``201`` (expected
only: announcing was not asked for, or the emulator has no intake to
announce to) with ``{"callControlId", "script", "announcedTo", "status"}``;
``400`` names a bad field; ``409`` when a call with that id is in progress.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Sequence, Union
from urllib.parse import quote, unquote_to_bytes

from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import Request

from .callcontrol import DTMF_KEYS, CallRecord, parse_script

if TYPE_CHECKING:
    from .platform import Platform

__all__ = ["CALLS_PATH", "REACTION", "HandCallsResource", "keys_script"]

#: Where calls are placed by hand, and (with ``/<id>``) looked at.
CALLS_PATH = b"/emulator/calls"
#: Seconds without a new prompt after which the caller acts (its reaction).
REACTION = 0.5
#: The largest request body accepted.
MAX_BODY = 16 * 1024

_FIELDS = ("externalId", "callControlId", "keys", "script", "announce")

_log = Logger()


def keys_script(keys: Union[str, Sequence[str]], reaction: float = REACTION) -> list[str]:
    """
    The caller script for ``keys`` (see the module's description).

    :raises ValueError: naming the bad item
    """
    if isinstance(keys, str):
        items = [item.strip() for item in keys.split(",")] if keys.strip() else []
    elif isinstance(keys, Sequence) and all(isinstance(item, str) for item in keys):
        items = [item.strip() for item in keys]
    else:
        raise ValueError("keys: must be a string such as \"7,timeout,0\" or a list of strings")
    script: list[str] = []
    for position, item in enumerate(items):
        token = item.lower()
        if script and script[-1] == "hangup":
            raise ValueError("keys: nothing can follow 'hangup'")
        script.append(f"prompts:{reaction!r}")
        if token == "hangup":
            script.append("hangup")
        elif token != "timeout":
            if not item or any(key not in DTMF_KEYS for key in item):
                raise ValueError(
                    f"keys[{position}]: {item!r} is neither keys (0-9, * and #), "
                    "'timeout' nor 'hangup'"
                )
            script.extend(f"press:{key}" for key in item)
    return script


def _error(request: Request, status: int, message: str) -> bytes:
    request.setResponseCode(status)
    request.setHeader(b"Content-Type", b"application/json")
    return json.dumps({"status": status, "message": message}).encode("utf-8")


def _answer(request: Request, status: int, body: Any) -> bytes:
    request.setResponseCode(status)
    request.setHeader(b"Content-Type", b"application/json")
    return json.dumps(body).encode("utf-8")


def describe_record(record: CallRecord) -> dict[str, Any]:
    """
    What ``GET /emulator/calls/<id>`` answers: what the emulator saw of a
    call (no external id).
    """
    return {
        "callControlId": record.call_id,
        "connected": record.connected,
        "finished": record.finished,
        "outcome": record.outcome,
        "transferTarget": record.transfer_target,
        "plays": list(record.plays),
        "keysPressed": list(record.keys_pressed),
        "closeCode": record.close_code,
        "violations": list(record.violations),
    }


class HandCallsResource(Resource):
    """
    ``POST /emulator/calls`` and ``GET /emulator/calls/<callControlId>``.
    """

    isLeaf = True

    def __init__(self, platform: Platform) -> None:
        super().__init__()
        self._platform = platform

    def render(self, request: Request) -> bytes:
        path = request.path
        if path in (CALLS_PATH, CALLS_PATH + b"/"):
            if request.method != b"POST":
                request.setHeader(b"Allow", b"POST")
                return _error(request, 405, "POST a call here; GET /emulator/calls/<id>")
            return self._place(request)
        if request.method not in (b"GET", b"HEAD"):
            request.setHeader(b"Allow", b"GET, HEAD")
            return _error(request, 405, "method not allowed")
        segment = path[len(CALLS_PATH) + 1 :]
        try:
            call_id = unquote_to_bytes(segment).decode("utf-8")
        except UnicodeDecodeError:
            call_id = ""
        record = self._platform.calls.get(call_id) if call_id and b"/" not in segment else None
        if record is None:
            return _error(request, 404, "no call with that id")
        return _answer(request, 200, describe_record(record))

    def _place(self, request: Request) -> bytes:
        assert request.content is not None
        request.content.seek(0)
        raw = request.content.read(MAX_BODY + 1)
        if len(raw) > MAX_BODY:
            return _error(request, 413, f"body larger than {MAX_BODY} bytes")
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError, RecursionError):
            return _error(request, 400, "the body is not JSON")
        if not isinstance(body, dict):
            return _error(request, 400, "the body must be a JSON object")
        for name in body:
            if name not in _FIELDS:
                return _error(
                    request, 400, f"unknown field {name!r} (known: {', '.join(_FIELDS)})"
                )
        external_id = body.get("externalId")
        if not isinstance(external_id, str) or not external_id:
            return _error(request, 400, "externalId: must be a non-empty string")
        call_id = body.get("callControlId")
        if call_id is not None and (not isinstance(call_id, str) or not call_id):
            return _error(request, 400, "callControlId: must be a non-empty string")
        announce = body.get("announce", True)
        if not isinstance(announce, bool):
            return _error(request, 400, "announce: must be true or false")
        if "keys" in body and "script" in body:
            return _error(request, 400, "give keys or script, not both")
        try:
            if "script" in body:
                script = body["script"]
                if not isinstance(script, list):
                    raise ValueError("script: must be a list of steps")
                parse_script(script)
            else:
                script = keys_script(body.get("keys", ""))
        except ValueError as e:
            return _error(request, 400, str(e))
        platform = self._platform
        try:
            record, announced_to = platform.place_call(
                external_id, script, call_id=call_id, announce=announce
            )
        except ValueError as e:
            return _error(request, 409, str(e))
        quoted = json.dumps(record.call_id)
        return _answer(
            request,
            202 if announced_to is not None else 201,
            {
                "callControlId": record.call_id,
                "script": list(record.script),
                "announcedTo": announced_to,
                "status": f"{CALLS_PATH.decode('ascii')}/{quote(record.call_id, safe='')}",
                "next": (
                    "the emulator announces the call to the service's intake"
                    if announced_to is not None
                    else "announce it yourself: POST "
                    f'{{"callControlId": {quoted}, "externalId": ...}} to the service\'s /v1/calls'
                ),
            },
        )
