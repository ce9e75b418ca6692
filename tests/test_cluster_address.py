"""
Tests for :mod:`ivrproto.cluster.address`: reading the Redis URL.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from ivrproto.cluster.address import (
    PASSWORD_VARIABLE,
    RedisAddress,
    RedisAddressError,
    parse_redis_url,
)


class ParseTests(SynchronousTestCase):
    def test_defaults(self) -> None:
        "Port 6379 and database 0 when the URL leaves them out."
        self.assertEqual(
            parse_redis_url("redis://127.0.0.1", {}),
            RedisAddress(host="127.0.0.1", port=6379, db=0, tls=False),
        )

    def test_full(self) -> None:
        "User, password, port and database are read; TLS from rediss://."
        a = parse_redis_url("rediss://ivr:p%40ss@redis.example.com:6380/3", {})
        self.assertEqual(
            (a.host, a.port, a.db, a.tls, a.username, a.password),
            ("redis.example.com", 6380, 3, True, "ivr", "p@ss"),
        )

    def test_password_from_environment(self) -> None:
        "A URL without a password takes the one in IVR_REDIS_PASSWORD."
        a = parse_redis_url("redis://localhost:6379/0", {PASSWORD_VARIABLE: "envpw"})
        self.assertEqual(a.password, "envpw")
        b = parse_redis_url("redis://:urlpw@localhost/0", {PASSWORD_VARIABLE: "envpw"})
        self.assertEqual(b.password, "urlpw")

    def test_plain_only_on_loopback(self) -> None:
        "redis:// to another host is refused; rediss:// is accepted."
        for host in ("127.0.0.1", "127.5.6.7", "[::1]", "localhost"):
            parse_redis_url(f"redis://{host}:6379/0", {})
        with self.assertRaises(RedisAddressError) as e:
            parse_redis_url("redis://:secret@10.0.0.5:6379/0", {})
        self.assertIn("rediss://", str(e.exception))
        self.assertNotIn("secret", str(e.exception))
        self.assertTrue(parse_redis_url("rediss://10.0.0.5:6379/0", {}).tls)

    def test_refused(self) -> None:
        "Other schemes, bad ports and databases, queries: refused, URL not quoted."
        for url in (
            "http://127.0.0.1:6379",
            "redis://127.0.0.1:notaport",
            "redis://127.0.0.1:6379/zero",
            "redis://127.0.0.1:6379/0?db=1",
            "redis://",
        ):
            with self.assertRaises(RedisAddressError, msg=url) as e:
                parse_redis_url(url, {})
            self.assertNotIn(url, str(e.exception))

    def test_password_never_shown(self) -> None:
        "Neither repr nor describe() carries the password."
        a = parse_redis_url("rediss://:hunter2@redis.example.com/1", {})
        self.assertNotIn("hunter2", repr(a))
        self.assertEqual(a.describe(), "rediss://redis.example.com:6379/1")
