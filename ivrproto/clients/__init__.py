"""
The clients of the platform's REST side, below the session: the OAuth token
(:mod:`~ivrproto.clients.oauth`), the profile and External Contacts requests
(:mod:`~ivrproto.clients.profiles`), and the per-call profile lookup with its
cache, single flight and budget (:mod:`~ivrproto.clients.lookup`).  What they
share: when to try again (``_retry``), how one request is sent and its body
read (``_http``), cancellation (``_cancel``) and the limits they keep
(:mod:`~ivrproto.clients.limits`).
"""
