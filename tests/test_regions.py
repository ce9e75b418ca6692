"""
Regions: one setting picks both hosts; explicit URLs override it.
"""

from __future__ import annotations

import sys

from twisted.trial.unittest import SynchronousTestCase

from ivrproto.config import Config, parse_config
from ivrproto.errors import ConfigError
from ivrproto.regions import REGIONS, known_regions, region_urls

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

MENU = """
[menu]
operator = "op"
[menu.targets]
op = "ext:transfer_operator"
[[menu.options]]
key = "0"
prompt = "general_operator.mp3"
action = "op"
[[menu.default]]
key = "0"
prompt = "general_operator.mp3"
action = "op"
"""
ENV = {"CLIENT_ID": "id", "CLIENT_SECRET": "secret"}


def load(platform: str, environ: dict[str, str] | None = None, extra: str = "") -> Config:
    text = "[platform]\n" + platform + "\n" + extra + MENU
    return parse_config(tomllib.loads(text), environ={**ENV, **(environ or {})})


class RegionTableTests(SynchronousTestCase):
    def test_documented_regions(self) -> None:
        """The regions Genesys documents map to their domains."""
        self.assertEqual(region_urls("us-east-1"), ("https://api.mypurecloud.com", "https://login.mypurecloud.com"))
        self.assertEqual(region_urls("eu-west-1")[0], "https://api.mypurecloud.ie")
        self.assertEqual(region_urls("eu-central-1")[0], "https://api.mypurecloud.de")
        self.assertEqual(region_urls("ap-northeast-1")[0], "https://api.mypurecloud.jp")
        self.assertEqual(region_urls("ap-southeast-2")[0], "https://api.mypurecloud.com.au")
        for short in ("usw2", "cac1", "euw2", "aps1", "apne2", "sae1", "mec1"):
            api, login = region_urls(short)
            self.assertEqual(api, f"https://api.{short}.pure.cloud")
            self.assertEqual(login, f"https://login.{short}.pure.cloud")

    def test_unknown(self) -> None:
        """An unknown region is a KeyError here, a ConfigError in config."""
        self.assertRaises(KeyError, region_urls, "mars-1")

    def test_known_regions_lists_all(self) -> None:
        """The error text lists every region and the short names."""
        text = known_regions()
        for name in REGIONS:
            self.assertIn(name, text)
        self.assertIn("usw2", text)


class RegionConfigTests(SynchronousTestCase):
    def test_region_sets_both_hosts(self) -> None:
        """region picks api.<domain> and login.<domain>."""
        config = load('region = "euw2"')
        self.assertEqual(config.platform.api_url, "https://api.euw2.pure.cloud")
        self.assertEqual(config.platform.token_url, "https://login.euw2.pure.cloud/oauth/token")
        self.assertEqual(
            config.platform.websocket_url, "wss://api.euw2.pure.cloud/api/v2/callcontrol/websocket"
        )

    def test_explicit_urls_win(self) -> None:
        """Explicit api_url and login_url override the region."""
        config = load('region = "eu-west-1"\napi_url = "https://api.example.com"\nlogin_url = "https://login.example.com"')
        self.assertEqual(config.platform.api_url, "https://api.example.com")
        self.assertEqual(config.platform.login_url, "https://login.example.com")

    def test_environment_wins(self) -> None:
        """GENESYS_BASE_URL overrides the region, and login follows it."""
        config = load('region = "eu-west-1"', {"GENESYS_BASE_URL": "http://127.0.0.1:9"})
        self.assertEqual(config.platform.api_url, "http://127.0.0.1:9")
        self.assertEqual(config.platform.login_url, "http://127.0.0.1:9")

    def test_unknown_region_lists_known(self) -> None:
        """An unknown region is a config error naming the key and the known regions."""
        e = self.assertRaises(ConfigError, load, 'region = "mars-1"')
        self.assertEqual(e.key, "platform.region")
        self.assertIn("eu-west-1", str(e))
        self.assertIn("usw2", str(e))


class ProfilesConfigTests(SynchronousTestCase):
    def test_defaults(self) -> None:
        """Profiles come from the Profiles API, cached, 200 requests a minute."""
        config = load('region = "us-east-1"')
        self.assertEqual(config.profiles.source, "profiles")
        self.assertEqual(config.profiles.rate_per_minute, 200.0)

    def test_bad_source(self) -> None:
        """An unknown profile source names the key and the choices."""
        e = self.assertRaises(
            ConfigError, load, 'region = "us-east-1"', extra='[profiles]\nsource = "crm"\n'
        )
        self.assertEqual(e.key, "profiles.source")
        self.assertIn("external-contacts", str(e))
