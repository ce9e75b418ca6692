"""
``[shared]``: read from the file and the environment, refused with one
line naming the key, documented in docs/configuration.md with its
defaults, and shown by ``ivr check``.
"""

from __future__ import annotations

from typing import Any

import attrs
from twisted.trial.unittest import TestCase

from ivrproto.cli.check import describe_config
from ivrproto.config import REDIS_URL_ENV, SharedConfig, parse_config
from ivrproto.errors import ConfigError

from .test_docs import DOCS, _seed_data, documented_settings, toml_default


def _parse(shared: Any = None, environ: Any = None) -> Any:
    data = _seed_data()
    if shared is not None:
        data["shared"] = shared
    return parse_config(data, environ=environ or {})


class SharedConfigTests(TestCase):
    def test_off_by_default(self) -> None:
        """Without a Redis URL shared state is off, and nothing else changes."""
        config = _parse()
        self.assertFalse(config.shared.enabled)
        self.assertEqual(config.shared, SharedConfig())

    def test_url_from_the_file_and_the_environment(self) -> None:
        """[shared] redis turns it on; IVR_REDIS_URL wins over the file."""
        config = _parse({"redis": "redis://127.0.0.1:6390/2"})
        self.assertEqual((config.shared.address.port, config.shared.address.db), (6390, 2))
        config = _parse({"redis": "redis://127.0.0.1:6390/2"},
                        {REDIS_URL_ENV: "redis://localhost:7000/0"})
        self.assertEqual(config.shared.address.port, 7000)

    def test_secrets_from_the_environment_only(self) -> None:
        """The password and the salt come from the environment, and are in no repr."""
        config = _parse(
            {"redis": "redis://127.0.0.1:6390/0", "key_salt_env": "MY_SALT"},
            {"IVR_REDIS_PASSWORD": "pa55word", "MY_SALT": "salty"},
        )
        self.assertEqual(config.shared.address.password, "pa55word")
        self.assertEqual(config.shared.key_salt, b"salty")
        self.assertNotIn("pa55word", repr(config))
        self.assertNotIn("salty", repr(config))
        self.assertNotIn("pa55word", config.shared.describe())

    def test_errors_name_the_key(self) -> None:
        """Bad values are one ConfigError naming the key; the URL's password is never quoted."""
        cases = [
            ({"redis": "redis://10.1.2.3:6379/0"}, {}, "shared.redis", "rediss://"),
            ({"redis": "http://127.0.0.1/"}, {}, "shared.redis", "redis://"),
            ({}, {REDIS_URL_ENV: "redis://:secretpw@10.0.0.1/0"}, "shared.redis", REDIS_URL_ENV),
            ({"timeout": 0}, {}, "shared.timeout", "greater than zero"),
            ({"timeout": 1.5}, {}, "shared.timeout", "under a second"),
            ({"poolsize": 0}, {}, "shared.poolsize", "at least 1"),
            ({"key_prefix": "has space"}, {}, "shared.key_prefix", "printable"),
            ({"redis_url": "x"}, {}, "shared.redis_url", "did you mean redis?"),
        ]
        for shared, environ, key, text in cases:
            error = self.assertRaises(ConfigError, _parse, shared, environ)
            self.assertEqual(error.key, key, shared)
            self.assertIn(text, str(error))
            self.assertNotIn("secretpw", str(error))

    def test_documented_with_defaults(self) -> None:
        """docs/configuration.md lists every [shared] key, with the default the parser uses."""
        table = documented_settings()["[shared]"]
        fields = {f.name for f in attrs.fields(SharedConfig)}
        # The address is `redis`; the salt comes from the variable key_salt_env names.
        self.assertEqual(set(table), fields - {"address", "key_salt"} | {"redis", "key_salt_env"})
        for key, cell in table.items():
            value = toml_default(cell)
            if value is None:
                continue
            self.assertEqual(_parse({key: value}), _parse(), key)
        self.assertIn(f"| `{REDIS_URL_ENV}` | `[shared] redis` |",
                      (DOCS / "configuration.md").read_text())

    def test_check_says_whether_on(self) -> None:
        """ivr check prints one line about shared state."""
        off = [line for line in describe_config(_parse()) if line.startswith("shared state")]
        self.assertEqual(off, ["shared state: off (each instance keeps its own state)"])
        config = _parse({"redis": "redis://127.0.0.1:6390/0", "key_prefix": "dep1:"})
        on = [line for line in describe_config(config) if line.startswith("shared state")]
        self.assertEqual(on, ["shared state: on, redis://127.0.0.1:6390/0 (keys dep1:*)"])
