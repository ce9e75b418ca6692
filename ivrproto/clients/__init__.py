"""
The clients of the platform's REST side, below the session: the OAuth token
(:mod:`~ivrproto.clients.oauth`, with ``_token_endpoint`` and
``_token_policy``), the profile value (:mod:`~ivrproto.clients.profiles`),
the profile and External Contacts clients (:mod:`~ivrproto.clients.sources`,
on :mod:`~ivrproto.clients.rest`), and the per-call profile lookup with its
cache, single flight and budget (:mod:`~ivrproto.clients.lookup`, with
``_cache``).  What they share: when to try again (``_retry``), how one
request is sent and its body read (``_http``), cancellation (``_cancel``)
and the limits they keep (:mod:`~ivrproto.clients.limits`); all of them as
one child service (:mod:`~ivrproto.clients.service`).  The roles they
are given (HTTP client, token provider, profile source) are named in
:mod:`ivrproto._types`.
"""
