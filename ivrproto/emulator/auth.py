"""
Authorization on the emulated platform (contract section 1): the issued
tokens (:class:`TokenStore`), the token endpoint ``POST /oauth/token``
(client credentials, :class:`TokenResource`) and the bearer and scope check
that the other endpoints share (:func:`require_scope`).
"""

from __future__ import annotations

import base64
import binascii
import secrets
from typing import Any, Iterable, Iterator, Mapping, Optional, Protocol, Sequence, Union
from urllib.parse import parse_qsl, unquote

import attrs
from twisted.internet.interfaces import IReactorTime
from twisted.web.server import Request

from ivrproto.emulator.endpoint import (
    PlatformResource,
    PlatformView,
    api_error,
    bearer_of,
    json_answer,
    read_body,
)

__all__ = ["ALL_SCOPES", "TokenResource", "TokenStore", "checked_client_scopes", "require_scope"]

#: Every scope the platform knows, and what a client gets by default.
ALL_SCOPES = ("profile:read", "callcontrol:inbound", "callcontrol:media")


def checked_client_scopes(client_scopes: Mapping[str, Sequence[str]]) -> dict[str, frozenset[str]]:
    """
    :return: client id -> the scopes it may have
    :raises TypeError: a client's scopes are one string
    """
    checked = {}
    for client_id, scopes in client_scopes.items():
        if isinstance(scopes, str):
            raise TypeError("client_scopes values are sequences of scopes")
        checked[client_id] = frozenset(scopes)
    return checked


@attrs.frozen
class _Token:
    client_id: str
    scopes: frozenset[str]
    expires_at: float


class TokenStore:
    """
    The tokens the platform issued and has not forgotten.  Iterating gives
    the tokens themselves.

    :param clock: when tokens expire
    """

    def __init__(self, clock: IReactorTime) -> None:
        self._clock = clock
        self._tokens: dict[str, _Token] = {}
        self._prune_at = 1024  # forget expired tokens when there are this many

    def __iter__(self) -> Iterator[str]:
        return iter(self._tokens)

    def __len__(self) -> int:
        return len(self._tokens)

    def issue(self, client_id: str, scopes: frozenset[str], lifetime: float) -> str:
        """
        :return: a new token for ``client_id`` with ``scopes``, valid for
            ``lifetime`` seconds
        """
        now = self._clock.seconds()
        if len(self._tokens) >= self._prune_at:
            self._tokens = {t: v for t, v in self._tokens.items() if v.expires_at > now}
            self._prune_at = max(1024, 2 * len(self._tokens))
        token = secrets.token_urlsafe(32)
        self._tokens[token] = _Token(client_id, scopes, now + lifetime)
        return token

    def check(self, token: Optional[str], required: Sequence[str]) -> Optional[int]:
        """
        :return: ``None`` when ``token`` is valid and has every scope in
            ``required``, 401 when it is missing, unknown or expired, 403
            when it lacks a scope
        """
        if token is None:
            return 401
        known = self._tokens.get(token)
        if known is None:
            return 401
        if known.expires_at <= self._clock.seconds():
            del self._tokens[token]
            return 401
        for scope in required:
            if scope not in known.scopes:
                return 403
        return None

    def clear(self) -> None:
        """
        Forget every token.
        """
        self._tokens.clear()


class BearerChecker(Protocol):
    """
    What :func:`require_scope` needs of the platform.
    """

    def check_bearer(self, token: Optional[str], required: Sequence[str]) -> Optional[int]:
        """As :meth:`TokenStore.check`."""


def require_scope(request: Request, platform: BearerChecker, scope: str) -> Optional[bytes]:
    """
    Check the request's bearer token for ``scope``.

    :return: ``None`` when it passes, else the 401 (missing, unknown or
        expired token) or 403 (the scope is missing) answer
    """
    status = platform.check_bearer(bearer_of(request), (scope,))
    if status == 401:
        request.setHeader(b"WWW-Authenticate", b'Bearer error="invalid_token"')
        return api_error(request, 401, "missing, unknown or expired token")
    if status == 403:
        return api_error(request, 403, f"the token lacks the {scope} scope")
    return None


class TokenIssuer(PlatformView, Protocol):
    """
    What the token endpoint needs of the platform.
    """

    token_ttl: int

    def authenticate_client(self, client_id: str, client_secret: str) -> bool:
        """Whether the client exists and this is its secret."""

    def scopes_of(self, client_id: str) -> frozenset[str]:
        """The scopes the client may have."""

    def issue_token(
        self, client_id: str, scopes: Optional[Iterable[str]] = None, ttl: Optional[float] = None
    ) -> str:
        """A new token for the client, with these scopes."""


class _Refused(Exception):
    """
    A token request is refused with an OAuth error answer.
    """

    def __init__(self, status: int, error: str, description: str) -> None:
        super().__init__(description)
        self.status = status
        self.error = error
        self.description = description


def _oauth_error(request: Request, refused: _Refused) -> bytes:
    if refused.status == 401:
        request.setHeader(b"WWW-Authenticate", b'Basic realm="ivrproto-emulator"')
    return json_answer(
        request,
        refused.status,
        {"error": refused.error, "error_description": refused.description},
    )


class TokenResource(PlatformResource):
    """
    ``POST /oauth/token``: the client credentials grant (RFC 6749 section
    4.4), with the client authenticated by HTTP Basic or in the form body.
    """

    counter = "token_requests"
    fault_kind = "token"
    _platform: TokenIssuer

    def __init__(self, platform: TokenIssuer) -> None:
        super().__init__(platform)

    def _answer(self, request: Request) -> bytes:
        try:
            form = _form(request)
            client_id = self._client(request, form)
            _grant_type(form)
            requested, granted = self._scopes(client_id, form)
        except _Refused as refused:
            return _oauth_error(request, refused)
        platform = self._platform
        token = platform.issue_token(client_id, granted)
        request.setHeader(b"Cache-Control", b"no-store")
        request.setHeader(b"Pragma", b"no-cache")
        body: dict[str, Any] = {
            "access_token": token,
            "token_type": "bearer",
            "expires_in": platform.token_ttl,
        }
        if requested and granted != requested:
            body["scope"] = " ".join(sorted(granted))
        return json_answer(request, 200, body)

    def _client(self, request: Request, form: Mapping[str, str]) -> str:
        """
        :return: the authenticated client's id
        :raises _Refused: no, malformed or wrong client credentials
        """
        credentials = _client_credentials(request, form)
        if isinstance(credentials, str):
            raise _Refused(400, "invalid_request", credentials)
        if credentials is None:
            raise _Refused(401, "invalid_client", "no client authentication")
        client_id, client_secret = credentials
        if not self._platform.authenticate_client(client_id, client_secret):
            raise _Refused(401, "invalid_client", "client authentication failed")
        return client_id

    def _scopes(
        self, client_id: str, form: Mapping[str, str]
    ) -> tuple[frozenset[str], frozenset[str]]:
        """
        RFC 6749 section 3.3: the server may grant fewer scopes than asked
        for, and then says which.  Scopes that do not exist, or a request
        of which nothing can be granted, are invalid_scope.

        :return: the scopes requested, and those granted
        :raises _Refused: invalid_scope
        """
        allowed = self._platform.scopes_of(client_id)
        requested = frozenset(form.get("scope", "").split())
        unknown = requested - frozenset(ALL_SCOPES)
        if unknown:
            raise _Refused(
                400, "invalid_scope", "unknown scope: " + " ".join(sorted(unknown))
            )
        granted = (requested & allowed) if requested else allowed
        if not granted:
            raise _Refused(400, "invalid_scope", "none of the scopes is allowed")
        return requested, granted


def _form(request: Request) -> dict[str, str]:
    """
    :return: the form body, each parameter once
    :raises _Refused: not a form, too large, malformed, or a parameter
        repeated
    """
    raw = read_body(request, b"application/x-www-form-urlencoded")
    if isinstance(raw, str):
        raise _Refused(400, "invalid_request", raw)
    try:
        pairs = parse_qsl(raw.decode("utf-8"), keep_blank_values=True)
    except (UnicodeDecodeError, ValueError):
        raise _Refused(400, "invalid_request", "malformed form body") from None
    form: dict[str, str] = {}
    for name, value in pairs:
        if name in form:
            raise _Refused(400, "invalid_request", f"parameter {name} repeated")
        form[name] = value
    return form


def _grant_type(form: Mapping[str, str]) -> None:
    """
    :raises _Refused: the grant type is missing or not client_credentials
    """
    grant_type = form.get("grant_type")
    if not grant_type:
        raise _Refused(400, "invalid_request", "grant_type missing")
    if grant_type != "client_credentials":
        raise _Refused(
            400, "unsupported_grant_type", "only client_credentials is supported"
        )


def _client_credentials(
    request: Request, form: Mapping[str, str]
) -> Union[None, str, tuple[str, str]]:
    """
    :return: ``(client_id, client_secret)`` from HTTP Basic or the form
        body, ``None`` when there are none or they cannot be decoded, or a
        string saying why the request is malformed
    """
    body_id = form.get("client_id")
    body_secret = form.get("client_secret")
    header = request.getHeader(b"authorization")
    if header:
        scheme, _, encoded = header.strip().partition(b" ")
        if scheme.lower() == b"basic":
            try:
                decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError):
                return None
            user, colon, password = decoded.partition(":")
            if not colon:
                return None
            # RFC 6749 section 2.3.1: both are form-encoded before Basic.
            client_id, client_secret = unquote(user.replace("+", " ")), unquote(
                password.replace("+", " ")
            )
            if (body_id is not None and body_id != client_id) or (
                body_secret is not None and body_secret != client_secret
            ):
                return "client credentials given twice, differently"
            return (client_id, client_secret)
    if body_id is None or body_secret is None:
        return None
    return (body_id, body_secret)
