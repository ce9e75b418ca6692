"""
The intake: how a call reaches ivrproto over HTTP.

``POST /v1/calls`` hands a call over (:mod:`~ivrproto.intake.resources`),
signed when it comes from beyond loopback (:mod:`~ivrproto.intake.signing`),
admitted only while the process keeps up (:mod:`~ivrproto.intake.overload`)
and while it has connections and descriptors to spare
(:mod:`~ivrproto.intake.guard`).
"""
