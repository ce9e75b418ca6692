"""
The [timing] token settings and the [profiles] cache and rate-limit
settings: read, defaulted and checked.
"""

from __future__ import annotations

from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from ivrproto.config import ProfilesConfig, Timing, parse_config
from ivrproto.errors import ConfigError

from .test_config import CREDENTIALS, MENU

try:
    import tomllib
except ImportError:  # pragma: no cover - Python < 3.11
    import tomli as tomllib  # type: ignore[no-redef]


def parse(text: str) -> Any:
    """
    The config of ``text`` plus the smallest menu.
    """
    return parse_config(tomllib.loads(text + MENU), environ=CREDENTIALS)


class ClientSettingsTests(SynchronousTestCase):
    """
    Each new bound is a setting with a default.
    """

    def test_defaults(self) -> None:
        """Without the settings, the defaults hold."""
        config = parse("")
        self.assertEqual(
            (
                config.timing.token_cooldown,
                config.timing.token_cooldown_cap,
                config.timing.token_invalidate_interval,
                config.timing.token_max_lifetime,
            ),
            (1.0, 10.0, 5.0, 86400.0),
        )
        self.assertEqual(
            (
                config.profiles.cache_max_bytes,
                config.profiles.cache_max_entry_bytes,
                config.profiles.max_pause,
            ),
            (64 * 1024 * 1024, 1024 * 1024, 60.0),
        )
        self.assertEqual(config.timing, Timing())
        self.assertEqual(config.profiles, ProfilesConfig())

    def test_read(self) -> None:
        """Given values are used."""
        config = parse(
            "[timing]\ntoken_cooldown = 0\ntoken_cooldown_cap = 30\n"
            "token_invalidate_interval = 2.5\ntoken_max_lifetime = 7200\n"
            "[profiles]\ncache_max_bytes = 1000\ncache_max_entry_bytes = 100\n"
            "max_pause = 5\nrate_per_minute = 1\n"
        )
        self.assertEqual(config.timing.token_cooldown, 0.0)
        self.assertEqual(config.timing.token_cooldown_cap, 30.0)
        self.assertEqual(config.timing.token_invalidate_interval, 2.5)
        self.assertEqual(config.timing.token_max_lifetime, 7200.0)
        self.assertEqual(config.profiles.cache_max_bytes, 1000)
        self.assertEqual(config.profiles.cache_max_entry_bytes, 100)
        self.assertEqual(config.profiles.max_pause, 5.0)

    def test_refused(self) -> None:
        """Nonsense values name the setting."""
        for text, key in (
            ("[timing]\ntoken_cooldown = 20\n", "timing.token_cooldown"),
            ("[timing]\ntoken_cooldown_cap = 0\n", "timing.token_cooldown_cap"),
            ("[timing]\ntoken_max_lifetime = inf\n", "timing.token_max_lifetime"),
            ("[profiles]\ncache_max_bytes = -1\n", "profiles.cache_max_bytes"),
            ("[profiles]\ncache_max_entry_bytes = 1.5\n", "profiles.cache_max_entry_bytes"),
            ("[profiles]\nrate_per_minute = 0.5\n", "profiles.rate_per_minute"),
            ("[profiles]\nmax_pause = -1\n", "profiles.max_pause"),
        ):
            with self.assertRaises(ConfigError) as caught:
                parse(text)
            self.assertEqual(caught.exception.key, key, text)
