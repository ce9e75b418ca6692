"""
``GET /v1/calls/<callControlId>`` (:class:`CallResource`), served by the
intake and the admin site: a call this instance knows, or, with shared
state, one that ended on another instance (its outcome read from Redis);
and :func:`finish_later`, for an answer given after ``render`` returned.
"""

from __future__ import annotations

from typing import Any

from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from ivrproto.intake._body import json_answer
from ivrproto.session.registry import CallRegistry

__all__ = ["CallResource", "finish_later"]


def finish_later(request: Request, body: bytes) -> None:
    """
    Send the answer of a request rendered later (``NOT_DONE_YET``), with
    its length (as a direct answer has it, rather than chunks), unless the
    client went away meanwhile.
    """
    if request.finished or getattr(request, "_disconnected", False):
        return
    request.setHeader(b"content-length", b"%d" % len(body))
    request.write(body)
    request.finish()


class CallResource(Resource):
    """
    ``/v1/calls/<callControlId>``: one call's state, or its outcome.
    """

    isLeaf = True

    def __init__(self, registry: CallRegistry, call_control_id: str) -> None:
        super().__init__()
        self.registry = registry
        self.call_control_id = call_control_id

    def render_GET(self, request: Request) -> Any:
        view = self.registry.describe(self.call_control_id)
        if view is not None:
            return json_answer(request, 200, view)
        store = self.registry.outcome_store
        if store is None:
            return json_answer(request, 404, {"error": "no such call"})

        # Ended on another instance, maybe: its outcome is on the shared state.
        def answer(outcome: Any) -> None:
            if outcome is None:
                finish_later(request, json_answer(request, 404, {"error": "no such call"}))
            else:
                finish_later(request, json_answer(request, 200, outcome))

        store.outcome(self.call_control_id).addCallback(answer)
        return NOT_DONE_YET
