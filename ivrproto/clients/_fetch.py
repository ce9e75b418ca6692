"""
One profile lookup in progress, as plain callbacks (:class:`Fetch`): the
token, the request, the retry after a refused token, the retry waits, and
the cancellation of whichever of them is in progress.

This is the loop of :meth:`RestProfileClient.fetch
<ivrproto.clients.rest.RestProfileClient.fetch>`; what each answer means
and whether a retry is allowed are the client's (``_judge``,
``_check_retry``, ``_take_for_retry``).  It runs for every call, so it
makes one Deferred of its own, where a coroutine per lookup and per attempt
made several.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Optional

from twisted.internet.defer import CancelledError, Deferred
from twisted.python.failure import Failure

from ivrproto.clients._cancel import Cancelled, sleep
from ivrproto.clients._http import ask, read_answer
from ivrproto.clients._retry import RetryLater
from ivrproto.clients.profiles import TOKEN_REFUSED, WINDOW_FULL, Profile
from ivrproto.errors import ProfileError, TokenError

if TYPE_CHECKING:
    from ivrproto.clients.rest import Request, RestProfileClient

__all__ = ["Fetch", "Refused"]


class Refused(Exception):
    """
    Internal: the token was refused (401).
    """


class Fetch:
    """
    One lookup of ``client``: :attr:`result` fires with the profile, with
    ``None`` (404), or fails (:class:`ProfileError`, or
    :class:`CancelledError` once cancelled, however the step in progress
    ends).

    :ivar result: the lookup's Deferred; cancelling it cancels the token
        wait, the request or the retry wait in progress
    """

    __slots__ = (
        "_client", "_request", "_external_id", "_deadline", "_cancelled", "_waiting",
        "_attempt", "_token", "_refused", "_retry_refused", "_retry_error", "result",
    )

    def __init__(
        self,
        client: "RestProfileClient",
        request: Callable[[str], "Request"],
        external_id: str,
        deadline: Optional[float],
    ) -> None:
        self._client = client
        self._request = request
        self._external_id = external_id
        self._deadline = deadline
        self._cancelled = Cancelled()
        self._waiting: Optional[Deferred[Any]] = None
        self._attempt = 0
        self._token = ""
        # The token refused with a 401, once one was; and whether the retry
        # it calls for is still to be sent.
        self._refused: Optional[str] = None
        self._retry_refused = False
        self._retry_error: Optional[ProfileError] = None
        self.result: Deferred[Optional[Profile]] = Deferred(self._cancel)

    def start(self) -> "Deferred[Optional[Profile]]":
        """
        Ask for a token, then send the first request.
        """
        self._client._budget.record_attempt()
        self._ask_token()
        return self.result

    # The steps, each run by _step when what it waits for fires

    def _ask_token(self) -> None:
        self._wait(self._client._tokens.get_token(), self._got_token)

    def _got_token(self, token: Any) -> None:
        client = self._client
        if isinstance(token, Failure):
            if token.check(TokenError):
                raise ProfileError(
                    client.endpoint, None, f"no access token: {token.value.reason}"
                )
            self._finish(token)
            return
        if self._retry_refused:
            self._retry_refused = False
            if token == self._refused:
                # The token source kept it (it drops a refused token at
                # most once per interval): asking again with it would be
                # refused again.
                raise ProfileError(client.endpoint, 401, TOKEN_REFUSED)
            client._take_for_retry(ProfileError(client.endpoint, 401, WINDOW_FULL))
        self._token = token
        request = self._request(token)
        client.stats.requests += 1
        attempt = self._attempt
        self._wait(
            ask(
                client._http,
                client._reactor,
                self._cancelled,
                request.method,
                request.url,
                headers=request.headers,
                data=request.data,
                timeout=client._timeout,
                failed=client._failed,
                backoff=lambda: client._retry.backoff(attempt),
            ),
            self._responded,
        )

    def _responded(self, response: Any) -> None:
        if isinstance(response, Failure):
            self._answered(response)
            return
        client = self._client
        self._wait(
            read_answer(client._reactor, response, client._timeout, client._max_body),
            self._answered,
        )

    def _answered(self, answer: Any) -> None:
        if isinstance(answer, Failure):
            if answer.check(RetryLater):
                self._retry_later(answer.value)
            else:
                self._finish(answer)
            return
        try:
            self._finish(self._client._judge(answer, self._external_id, self._attempt))
        except Refused:
            self._token_refused()
        except RetryLater as retry:
            self._retry_later(retry)

    def _token_refused(self) -> None:
        client = self._client
        client._tokens.invalidate(self._token)
        if self._refused is not None:
            raise ProfileError(
                client.endpoint, 401, "access token refused again after getting a new one"
            )
        self._refused = self._token
        self._retry_refused = True
        client.stats.retries += 1
        client.log.info("access token refused; retrying once with a new one")
        self._ask_token()

    def _retry_later(self, retry: "RetryLater[ProfileError]") -> None:
        if self._cancelled:
            # The cancellation surfaced as a request failure.
            raise CancelledError()
        self._attempt += 1
        self._client._check_retry(retry, self._attempt, self._deadline)
        self._retry_error = retry.error
        self._wait(sleep(self._client._reactor, retry.delay), self._slept)

    def _slept(self, result: Any) -> None:
        if isinstance(result, Failure):
            self._finish(result)
            return
        assert self._retry_error is not None
        self._client._take_for_retry(self._retry_error)
        self._ask_token()

    # The machinery

    def _wait(self, d: "Deferred[Any]", step: Callable[[Any], None]) -> None:
        self._waiting = d
        d.addBoth(self._step, step)
        if self._cancelled and self._waiting is d:
            d.cancel()

    def _step(self, result: Any, step: Callable[[Any], None]) -> None:
        self._waiting = None
        if self.result.called:
            return None  # cancelled: what came after is dropped
        try:
            step(result)
        except BaseException:
            self._finish(Failure())
        return None

    def _finish(self, result: Any) -> None:
        if self.result.called:
            return
        if self._cancelled and not (
            isinstance(result, Failure) and result.check(CancelledError)
        ):
            result = Failure(CancelledError())
        if isinstance(result, Failure):
            self.result.errback(result)
        else:
            self.result.callback(result)

    def _cancel(self, d: "Deferred[Optional[Profile]]") -> None:
        self._cancelled.cancelled = True
        if self._waiting is not None:
            self._waiting.cancel()
