"""
Tests for :mod:`ivrproto.config`: the TOML file, the contract's environment
variables, and one clear :class:`ConfigError` per problem.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any, Mapping

from twisted.trial.unittest import SynchronousTestCase

from ivrproto.config import (
    DEFAULT_API_URL,
    DEFAULT_SCOPE,
    Config,
    IntakeConfig,
    PlatformConfig,
    Timing,
    load_config,
    parse_config,
)
from ivrproto._net import is_loopback_host
from ivrproto.config.audio_connector import parse_audio_connector
from ivrproto.errors import ConfigError

SEED = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples", "seed.toml")

SECRET = "s3cr3t-Zq9-never-shown"
CREDENTIALS = {"CLIENT_ID": "ivr-client", "CLIENT_SECRET": SECRET}

#: The smallest valid menu, as TOML.
MENU = """
[menu.targets]
transfer_operator = "ext:transfer_operator"

[[menu.options]]
key = "0"
prompt = "general_operator.mp3"
action = "transfer_operator"

[[menu.default]]
key = "0"
prompt = "general_operator.mp3"
action = "transfer_operator"
"""


class _ConfigFiles:
    """
    Mixin writing configuration files to temporary paths.
    """

    def temp_path(self) -> str:
        """
        A new path from ``mktemp``, removed after the test: under pytest,
        ``mktemp`` works in the current directory, not in ``_trial_temp``.
        """
        path: str = self.mktemp()  # type: ignore[attr-defined]
        directory = os.path.dirname(path)

        def remove() -> None:
            shutil.rmtree(directory, ignore_errors=True)
            try:
                os.removedirs(os.path.dirname(directory))
            except OSError:
                pass  # not empty: another test's files are still there

        self.addCleanup(remove)  # type: ignore[attr-defined]
        return path

    def write(self, text: str, menu: bool = True) -> str:
        path = self.temp_path()
        Path(path).write_text(text + (MENU if menu else ""), encoding="utf-8")
        return path

    def load(self, text: str, environ: Mapping[str, str] = CREDENTIALS, menu: bool = True) -> Config:
        return load_config(self.write(text, menu), environ)

    def assertConfigError(
        self, text: str, key: str, environ: Mapping[str, str] = CREDENTIALS, menu: bool = True
    ) -> ConfigError:
        """
        Assert that loading ``text`` fails with one ConfigError naming ``key``
        and not showing the secret.
        """
        path = self.write(text, menu)
        try:
            load_config(path, environ)
        except ConfigError as e:
            error = e
        else:
            raise self.failureException(f"no ConfigError for {key}")  # type: ignore[attr-defined]
        self.assertEqual(error.key, key)  # type: ignore[attr-defined]
        self.assertIn(key, str(error))  # type: ignore[attr-defined]
        self.assertIn(path, str(error))  # type: ignore[attr-defined]
        self.assertNotIn(SECRET, str(error))  # type: ignore[attr-defined]
        self.assertIsNone(error.__cause__)  # type: ignore[attr-defined]
        self.assertTrue(error.__suppress_context__ or error.__context__ is None)  # type: ignore[attr-defined]
        return error


class DefaultsTests(_ConfigFiles, SynchronousTestCase):
    """
    What a minimal file gives.
    """

    def test_defaults(self) -> None:
        """A file with only a menu gets every default."""
        config = self.load("")
        self.assertEqual(
            config.platform,
            PlatformConfig(
                api_url=DEFAULT_API_URL,
                login_url=DEFAULT_API_URL,
                client_id="ivr-client",
                client_secret=SECRET,
                audio_base_url="https://example.com/ivr/audio/",
                scope=DEFAULT_SCOPE,
            ),
        )
        self.assertEqual(config.intake, IntakeConfig())
        self.assertEqual(config.timing, Timing())
        self.assertIsNone(config.emulator)
        self.assertEqual(config.menu.menu_for(None).keys, ("0",))

    def test_default_values(self) -> None:
        """The defaults are the seed's and the contract's."""
        self.assertEqual(DEFAULT_API_URL, "https://api.us-east-1.mypurecloud.com")
        self.assertEqual(DEFAULT_SCOPE, "profile:read callcontrol:inbound callcontrol:media")
        timing = Timing()
        self.assertEqual(timing.handshake_timeout, 10.0)
        self.assertEqual(timing.no_input_timeout, 10.0)
        self.assertEqual(timing.menu_repeats, 2)
        self.assertLess(timing.profile_budget, 5.0)
        self.assertTrue(1.5 <= timing.confirm_delay <= 2.0)
        self.assertIn("127.0.0.1", IntakeConfig().listen)

    def test_source_and_base_dir(self) -> None:
        """The config remembers its file and directory."""
        path = self.write("")
        config = load_config(path, CREDENTIALS)
        self.assertEqual(config.source, path)
        self.assertEqual(config.base_dir, Path(path).resolve().parent)

    def test_urls(self) -> None:
        """The token and WebSocket URLs derive from the two base URLs."""
        platform = self.load("").platform
        self.assertEqual(platform.token_url, DEFAULT_API_URL + "/oauth/token")
        self.assertEqual(
            platform.websocket_url,
            "wss://api.us-east-1.mypurecloud.com/api/v2/callcontrol/websocket",
        )

    def test_seed(self) -> None:
        """The seed file loads with the seed's settings."""
        config = load_config(SEED, CREDENTIALS)
        self.assertEqual(config.platform.api_url, DEFAULT_API_URL)
        self.assertEqual(config.platform.audio_base_url, "https://example.com/ivr/audio/")
        self.assertEqual(config.intake.listen, "tcp:8080:interface=127.0.0.1")
        self.assertEqual(config.timing.handshake_timeout, 10.0)
        self.assertEqual(config.timing.confirm_delay, 1.5)
        self.assertEqual(config.timing.menu_repeats, 2)
        self.assertEqual(config.menu.operator_target, "ext:transfer_operator")

    def test_every_setting(self) -> None:
        """Every setting of every section is read."""
        config = self.load(
            """
[platform]
api_url = "https://api.example.com/"
login_url = "https://login.example.com"
client_id = "file-id"
client_secret = "file-secret"
audio_base_url = "http://127.0.0.1:9000/audio/"
scope = "profile:read"

[intake]
listen = "tcp:9090"
max_body = 4096
max_active_calls = 7
outcome_retention = 0

[timing]
request_timeout = 2
handshake_timeout = 3.5
profile_budget = 0.5
no_input_timeout = 8
menu_repeats = 0
confirm_delay = 0
max_invalid = 1
token_refresh_margin = 30
""",
            environ={},
        )
        self.assertEqual(
            config.platform,
            PlatformConfig(
                api_url="https://api.example.com",
                login_url="https://login.example.com",
                client_id="file-id",
                client_secret="file-secret",
                audio_base_url="http://127.0.0.1:9000/audio/",
                scope="profile:read",
            ),
        )
        self.assertEqual(config.platform.token_url, "https://login.example.com/oauth/token")
        self.assertEqual(config.intake, IntakeConfig("tcp:9090", 4096, 7, 0.0))
        self.assertEqual(config.timing, Timing(2.0, 3.5, 0.5, 8.0, 0, 0.0, 1, 30.0))
        self.assertIsInstance(config.timing.request_timeout, float)
        self.assertEqual(config.menu.menu_for(None).prompt_urls, ("http://127.0.0.1:9000/audio/general_operator.mp3",))


class EnvironmentTests(_ConfigFiles, SynchronousTestCase):
    """
    The contract's environment variables override the file.
    """

    FILE = """
[platform]
api_url = "https://api.file.example"
login_url = "https://login.file.example"
client_id = "file-id"
client_secret = "file-secret"
audio_base_url = "https://audio.file.example/"
"""

    def test_file_alone(self) -> None:
        """Without the environment, the file's values are used."""
        platform = self.load(self.FILE, environ={}).platform
        self.assertEqual(platform.api_url, "https://api.file.example")
        self.assertEqual(platform.client_id, "file-id")

    def test_each_variable(self) -> None:
        """Each variable overrides its setting."""
        cases = {
            "GENESYS_BASE_URL": ("api_url", "https://api.env.example"),
            "GENESYS_LOGIN_URL": ("login_url", "https://login.env.example"),
            "CLIENT_ID": ("client_id", "env-id"),
            "CLIENT_SECRET": ("client_secret", "env-secret"),
            "AUDIO_BASE_URL": ("audio_base_url", "https://audio.env.example/p/"),
        }
        for variable, (name, value) in cases.items():
            with self.subTest(variable=variable):
                platform = self.load(self.FILE, environ={variable: value}).platform
                self.assertEqual(getattr(platform, name), value)
                for other, (other_name, _) in cases.items():
                    if other != variable:
                        self.assertIn("file", getattr(platform, other_name))

    def test_base_url_moves_login_and_websocket(self) -> None:
        """GENESYS_BASE_URL alone moves the token and WebSocket URLs too."""
        platform = self.load("", environ={**CREDENTIALS, "GENESYS_BASE_URL": "http://127.0.0.1:8123"}).platform
        self.assertEqual(platform.login_url, "http://127.0.0.1:8123")
        self.assertEqual(platform.token_url, "http://127.0.0.1:8123/oauth/token")
        self.assertEqual(platform.websocket_url, "ws://127.0.0.1:8123/api/v2/callcontrol/websocket")

    def test_empty_variable_ignored(self) -> None:
        """An empty variable does not override the file."""
        platform = self.load(self.FILE, environ={"CLIENT_ID": "", "GENESYS_BASE_URL": ""}).platform
        self.assertEqual(platform.client_id, "file-id")
        self.assertEqual(platform.api_url, "https://api.file.example")

    def test_audio_url_into_menu(self) -> None:
        """AUDIO_BASE_URL sets the prompts' URLs."""
        config = self.load("", environ={**CREDENTIALS, "AUDIO_BASE_URL": "https://cdn.example/x/"})
        self.assertEqual(config.menu.confirm_url(), "https://cdn.example/x/selection_confirmed.mp3")

    def test_unrelated_variables(self) -> None:
        """Other variables are not read."""
        config = self.load("", environ={**CREDENTIALS, "API_URL": "http://evil.example", "SCOPE": "x"})
        self.assertEqual(config.platform.api_url, DEFAULT_API_URL)
        self.assertEqual(config.platform.scope, DEFAULT_SCOPE)

    def test_bad_variable(self) -> None:
        """A bad URL from the environment is refused like one in the file."""
        self.assertConfigError(
            "", "platform.api_url", environ={**CREDENTIALS, "GENESYS_BASE_URL": "http://api.example.com"}
        )
        self.assertConfigError(
            "", "platform.login_url", environ={**CREDENTIALS, "GENESYS_LOGIN_URL": "ftp://x"}
        )
        self.assertConfigError(
            "", "platform.audio_base_url", environ={**CREDENTIALS, "AUDIO_BASE_URL": "/audio/"}
        )


class UrlTests(_ConfigFiles, SynchronousTestCase):
    """
    URLs: the WebSocket derivation, and TLS for every host but loopback.
    """

    def platform(self, api_url: str) -> PlatformConfig:
        return self.load(f'[platform]\napi_url = "{api_url}"\n').platform

    def test_websocket_url(self) -> None:
        """https becomes wss and http becomes ws, keeping host, port and path."""
        cases = {
            "https://api.example.com": "wss://api.example.com/api/v2/callcontrol/websocket",
            "https://api.example.com:8443/": "wss://api.example.com:8443/api/v2/callcontrol/websocket",
            "https://gw.example.com/genesys/": "wss://gw.example.com/genesys/api/v2/callcontrol/websocket",
            "http://127.0.0.1:8080": "ws://127.0.0.1:8080/api/v2/callcontrol/websocket",
            "http://localhost:1/base": "ws://localhost:1/base/api/v2/callcontrol/websocket",
            "http://[::1]:9": "ws://[::1]:9/api/v2/callcontrol/websocket",
        }
        for api_url, expected in cases.items():
            with self.subTest(api_url=api_url):
                self.assertEqual(self.platform(api_url).websocket_url, expected)

    def test_trailing_slash(self) -> None:
        """Trailing slashes are dropped from the base URLs."""
        platform = self.platform("https://api.example.com/")
        self.assertEqual(platform.api_url, "https://api.example.com")
        self.assertEqual(platform.token_url, "https://api.example.com/oauth/token")

    def test_loopback_http_allowed(self) -> None:
        """Plain http is allowed for 127.0.0.1, localhost and [::1]."""
        for url in ("http://127.0.0.1:8080", "http://localhost:8080", "http://[::1]:8080", "http://LOCALHOST", "http://127.0.0.2"):
            with self.subTest(url=url):
                self.assertEqual(self.platform(url).api_url, url)

    def test_plain_http_refused(self) -> None:
        """Plain http to any other host is refused, for both base URLs."""
        for url in (
            "http://api.example.com",
            "http://10.0.0.1:8080",
            "http://localhost.example.com",
            "http://127.0.0.1.example.com",
            "http://127.0.0.1@example.com",
            "http://[::2]",
            "http://0.0.0.0:80",
        ):
            with self.subTest(url=url):
                e = self.assertConfigError(f'[platform]\napi_url = "{url}"\n', "platform.api_url")
                self.assertIn("https", e.reason)
                self.assertConfigError(
                    f'[platform]\nlogin_url = "{url}"\n', "platform.login_url"
                )

    def test_not_http(self) -> None:
        """A base URL must be an absolute http(s) URL."""
        for url in ("api.example.com", "wss://api.example.com", "ftp://x", "https://", "/api", "http://[::1", "https://[zz]/"):
            with self.subTest(url=url):
                self.assertConfigError(f'[platform]\napi_url = "{url}"\n', "platform.api_url")

    def test_empty_is_default(self) -> None:
        """An empty base URL in the file means the default, as an empty variable does."""
        self.assertEqual(self.platform("").api_url, DEFAULT_API_URL)

    def test_audio_http_allowed(self) -> None:
        """Prompts may be served over plain http from any host."""
        config = self.load('[platform]\naudio_base_url = "http://media.example.com/a/"\n')
        self.assertEqual(config.platform.audio_base_url, "http://media.example.com/a/")

    def test_audio_not_url(self) -> None:
        """The audio base URL must be absolute http(s)."""
        self.assertConfigError('[platform]\naudio_base_url = "audio/"\n', "platform.audio_base_url")
        self.assertConfigError('[platform]\naudio_base_url = "http://[::1/"\n', "platform.audio_base_url")

    def test_is_loopback_host(self) -> None:
        """Loopback hosts are localhost, 127.0.0.0/8 and ::1."""
        for host in ("localhost", "LocalHost", "127.0.0.1", "127.255.0.9", "::1", "[::1]"):
            self.assertTrue(is_loopback_host(host), host)
        for host in (None, "", "example.com", "10.0.0.1", "::2", "0.0.0.0", "localhost.example"):
            self.assertFalse(is_loopback_host(host), host)


class CredentialTests(_ConfigFiles, SynchronousTestCase):
    """
    The client id and secret: required, and never shown.
    """

    def test_missing_client_id(self) -> None:
        """A missing client id names the setting and CLIENT_ID."""
        e = self.assertConfigError("", "platform.client_id", environ={"CLIENT_SECRET": SECRET})
        self.assertIn("CLIENT_ID", str(e))

    def test_missing_client_secret(self) -> None:
        """A missing client secret names the setting and CLIENT_SECRET."""
        e = self.assertConfigError("", "platform.client_secret", environ={"CLIENT_ID": "id"})
        self.assertIn("CLIENT_SECRET", str(e))

    def test_empty_in_file(self) -> None:
        """An empty string in the file counts as missing."""
        self.assertConfigError('[platform]\nclient_id = ""\n', "platform.client_id", environ={"CLIENT_SECRET": SECRET})

    def test_secret_not_in_repr(self) -> None:
        """The secret is in neither the config's repr nor its str."""
        config = self.load("")
        self.assertEqual(config.platform.client_secret, SECRET)
        for text in (repr(config), str(config), repr(config.platform)):
            self.assertNotIn(SECRET, text)
        self.assertIn("ivr-client", repr(config.platform))

    def test_secret_from_file_not_in_repr(self) -> None:
        """A secret written in the file is not in the repr either."""
        config = self.load(f'[platform]\nclient_id = "id"\nclient_secret = "{SECRET}"\n', environ={})
        self.assertNotIn(SECRET, repr(config))

    def test_secret_not_in_errors(self) -> None:
        """No error about another setting shows the secret."""
        for text in (
            f'[platform]\nclient_secret = "{SECRET}"\napi_url = "http://example.com"\n',
            f'[platform]\nclient_secret = "{SECRET}"\nclient_id = 5\n',
            f'[platform]\nclient_secret = "{SECRET}"\nsecret = "{SECRET}"\n',
            f'[timing]\nrequest_timeout = "{SECRET}"\n',
        ):
            path = self.write(text)
            e = self.assertRaises(ConfigError, load_config, path, {})
            self.assertNotIn(SECRET, str(e))
            self.assertNotIn(SECRET, e.reason)

    def test_secret_not_in_toml_error(self) -> None:
        """A TOML error near the secret does not show it."""
        path = self.write(f'[platform]\nclient_secret = "{SECRET}\n', menu=False)
        e = self.assertRaises(ConfigError, load_config, path, {})
        self.assertNotIn(SECRET, str(e))


class ConfigErrorTests(_ConfigFiles, SynchronousTestCase):
    """
    Every problem is one ConfigError naming the bad key.
    """

    def test_unknown_section(self) -> None:
        """An unknown section is named."""
        self.assertConfigError("[tracing]\nlevel = 1\n", "tracing")
        self.assertConfigError("[logging]\nlevel = 1\n", "logging.level")
        self.assertConfigError("title = 'x'\n", "title")

    def test_unknown_setting(self) -> None:
        """An unknown setting in each section is named."""
        self.assertConfigError('[platform]\nbase_url = "https://x"\n', "platform.base_url")
        self.assertConfigError("[intake]\nport = 8080\n", "intake.port")
        self.assertConfigError("[timing]\ntimeout = 1\n", "timing.timeout")

    def test_section_not_a_table(self) -> None:
        """A section given as a value is named."""
        self.assertConfigError("platform = 1\n", "platform")
        self.assertConfigError('intake = "tcp:80"\n', "intake")
        self.assertConfigError("timing = [1]\n", "timing")

    def test_wrong_types(self) -> None:
        """A value of the wrong type is named."""
        cases = [
            ("[platform]\napi_url = 1\n", "platform.api_url"),
            ("[platform]\nclient_id = 5\n", "platform.client_id"),
            ("[platform]\nscope = [\"a\"]\n", "platform.scope"),
            ("[intake]\nlisten = 8080\n", "intake.listen"),
            ('[intake]\nmax_body = "16k"\n', "intake.max_body"),
            ("[intake]\nmax_body = 1024.0\n", "intake.max_body"),
            ("[intake]\nmax_active_calls = true\n", "intake.max_active_calls"),
            ('[timing]\nrequest_timeout = "5"\n', "timing.request_timeout"),
            ("[timing]\nhandshake_timeout = true\n", "timing.handshake_timeout"),
            ("[timing]\nmenu_repeats = true\n", "timing.menu_repeats"),
            ("[timing]\nmenu_repeats = 2.0\n", "timing.menu_repeats"),
            ('[timing]\nmax_invalid = "3"\n', "timing.max_invalid"),
            ("[timing]\nconfirm_delay = 1979-05-27\n", "timing.confirm_delay"),
        ]
        for text, key in cases:
            with self.subTest(key=key, text=text):
                self.assertConfigError(text, key)

    def test_negative_timings(self) -> None:
        """Negative delays are refused, and zero where it makes no sense."""
        for name in (
            "request_timeout",
            "handshake_timeout",
            "profile_budget",
            "no_input_timeout",
            "confirm_delay",
            "token_refresh_margin",
        ):
            with self.subTest(name=name):
                self.assertConfigError(f"[timing]\n{name} = -1\n", f"timing.{name}")
                self.assertConfigError(f"[timing]\n{name} = -0.5\n", f"timing.{name}")
        for name in ("request_timeout", "handshake_timeout", "profile_budget", "no_input_timeout"):
            self.assertConfigError(f"[timing]\n{name} = 0\n", f"timing.{name}")
        self.assertConfigError("[timing]\nmenu_repeats = -1\n", "timing.menu_repeats")
        self.assertConfigError("[timing]\nmax_invalid = -1\n", "timing.max_invalid")
        self.assertConfigError("[intake]\noutcome_retention = -1\n", "intake.outcome_retention")
        self.assertConfigError("[intake]\nmax_body = 10\n", "intake.max_body")
        self.assertConfigError("[intake]\nmax_active_calls = 0\n", "intake.max_active_calls")

    def test_not_finite_timings(self) -> None:
        """nan and inf are not delays."""
        for value in ("nan", "inf", "+inf", "-inf"):
            for name in ("request_timeout", "no_input_timeout", "confirm_delay", "profile_budget"):
                with self.subTest(name=name, value=value):
                    self.assertConfigError(f"[timing]\n{name} = {value}\n", f"timing.{name}")
        self.assertConfigError("[intake]\noutcome_retention = nan\n", "intake.outcome_retention")

    def test_profile_budget(self) -> None:
        """The profile budget must stay well under 5 seconds."""
        for value in ("5", "5.0", "7.5", "60"):
            self.assertConfigError(f"[timing]\nprofile_budget = {value}\n", "timing.profile_budget")
        self.assertEqual(self.load("[timing]\nprofile_budget = 4\n").timing.profile_budget, 4.0)

    def test_menu_errors_carry_source(self) -> None:
        """A menu error names the menu key and the file."""
        text = """
[menu.targets]
transfer_operator = "ext:op"

[[menu.options]]
key = "0"
prompt = "op.mp3"
action = "transfer_operator"

[[menu.options]]
key = "A"
prompt = "a.mp3"
action = "transfer_operator"

[[menu.default]]
key = "0"
prompt = "op.mp3"
action = "transfer_operator"
"""
        self.assertConfigError(text, "menu.options[1].key", menu=False)

    def test_missing_menu(self) -> None:
        """A file without a menu names the menu."""
        self.assertConfigError("", "menu", menu=False)

    def test_unreadable_file(self) -> None:
        """A file that cannot be read is one ConfigError naming --config."""
        missing = self.temp_path()
        e = self.assertRaises(ConfigError, load_config, missing, CREDENTIALS)
        self.assertEqual(e.key, "--config")
        self.assertIn(missing, str(e))
        directory = self.temp_path()
        os.mkdir(directory)
        e = self.assertRaises(ConfigError, load_config, directory, CREDENTIALS)
        self.assertEqual(e.key, "--config")

    def test_invalid_toml(self) -> None:
        """A file that is not TOML is one ConfigError naming the file."""
        for text in ("[platform\n", "a = \n", "a = 1\na = 2\n", "x = " + "[" * 5000):
            with self.subTest(text=text[:20]):
                path = self.write(text, menu=False)
                e = self.assertRaises(ConfigError, load_config, path, CREDENTIALS)
                self.assertIn("TOML", str(e))
                self.assertIn(path, str(e))

    def test_not_utf8(self) -> None:
        """A file that is not UTF-8 is one ConfigError."""
        path = self.temp_path()
        Path(path).write_bytes(b'[platform]\nclient_id = "\xff"\n')
        e = self.assertRaises(ConfigError, load_config, path, CREDENTIALS)
        self.assertIn(path, str(e))

    def test_parse_config_source(self) -> None:
        """parse_config names the source it is given."""
        e = self.assertRaises(ConfigError, parse_config, {"nope": {}}, source="here.toml")
        self.assertEqual(str(e), "here.toml: nope: unknown section")


class EmulatorTests(_ConfigFiles, SynchronousTestCase):
    """
    The ``[emulator]`` table: the embedded local platform.
    """

    def test_defaults(self) -> None:
        """With the emulator enabled, URLs and credentials need not be set."""
        config = self.load("[emulator]\n", environ={})
        self.assertEqual(config.platform.api_url, "http://127.0.0.1:0")
        self.assertEqual(config.platform.login_url, "http://127.0.0.1:0")
        self.assertEqual(config.platform.client_id, "ivrproto-local")
        self.assertEqual(config.platform.client_secret, "local-secret")
        self.assertEqual(config.emulator, {"emulator": {}, "calls": []})

    def test_credentials_from_table(self) -> None:
        """The emulator table's credentials are the client's."""
        config = self.load(
            f'[emulator]\nclient_id = "emu-id"\nclient_secret = "{SECRET}"\n', environ={}
        )
        self.assertEqual(config.platform.client_id, "emu-id")
        self.assertEqual(config.platform.client_secret, SECRET)
        self.assertNotIn(SECRET, repr(config))

    def test_environment_wins(self) -> None:
        """The environment still overrides, with the emulator enabled."""
        config = self.load(
            '[emulator]\nclient_id = "emu-id"\n',
            environ={"CLIENT_ID": "env-id", "GENESYS_BASE_URL": "http://localhost:7000"},
        )
        self.assertEqual(config.platform.client_id, "env-id")
        self.assertEqual(config.platform.api_url, "http://localhost:7000")

    def test_file_wins(self) -> None:
        """Platform settings in the file override the emulator's defaults."""
        config = self.load(
            '[emulator]\n[platform]\napi_url = "http://127.0.0.1:5555"\nclient_id = "f"\n', environ={}
        )
        self.assertEqual(config.platform.api_url, "http://127.0.0.1:5555")
        self.assertEqual(config.platform.client_id, "f")
        self.assertEqual(config.platform.client_secret, "local-secret")

    def test_calls_kept(self) -> None:
        """Scripted calls and other emulator settings are kept for the emulator."""
        config = self.load(
            '[emulator]\ntoken_ttl = 60\n\n[[calls]]\ncallControlId = "c1"\n', environ={}
        )
        assert config.emulator is not None
        self.assertEqual(config.emulator["emulator"], {"token_ttl": 60})
        self.assertEqual(config.emulator["calls"], [{"callControlId": "c1"}])

    def test_disabled(self) -> None:
        """A disabled emulator is as if absent: credentials are required."""
        config = self.load("[emulator]\nenabled = false\n")
        self.assertIsNone(config.emulator)
        self.assertEqual(config.platform.api_url, DEFAULT_API_URL)
        self.assertConfigError("[emulator]\nenabled = false\n", "platform.client_id", environ={})

    def test_enabled_must_be_bool(self) -> None:
        """enabled is true or false."""
        self.assertConfigError('[emulator]\nenabled = "yes"\n', "emulator.enabled")

    def test_not_a_table(self) -> None:
        """The emulator section must be a table."""
        self.assertConfigError("emulator = true\n", "emulator")

    def test_calls_without_emulator(self) -> None:
        """Scripted calls without an [emulator] section are refused."""
        self.assertConfigError('[[calls]]\ncallControlId = "c1"\n', "calls")

    def test_bad_credentials(self) -> None:
        """Emulator credentials of the wrong type are named."""
        self.assertConfigError("[emulator]\nclient_id = 5\n", "emulator.client_id", environ={})
        self.assertConfigError("[emulator]\nclient_secret = 0\n", "emulator.client_secret", environ={})
        self.assertConfigError('[emulator]\nclient_secret = ""\n', "emulator.client_secret", environ={})

    def test_remote_http_refused(self) -> None:
        """The emulator does not relax the TLS rule for remote hosts."""
        self.assertConfigError(
            '[emulator]\n[platform]\napi_url = "http://api.example.com"\n', "platform.api_url", environ={}
        )


class ValuesTests(SynchronousTestCase):
    """
    The config values are immutable.
    """

    def test_frozen(self) -> None:
        """Config values cannot be changed in place."""
        with self.assertRaises(Exception):
            Timing().profile_budget = 9.0  # type: ignore[misc]
        with self.assertRaises(Exception):
            IntakeConfig().listen = "tcp:1"  # type: ignore[misc]

    def test_parse_config_defaults(self) -> None:
        """parse_config takes parsed TOML directly."""
        config = parse_config(
            {
                "platform": {"client_id": "a", "client_secret": "b"},
                "menu": {
                    "targets": {"transfer_operator": "ext:op"},
                    "options": [{"key": "0", "prompt": "p.mp3", "action": "transfer_operator"}],
                    "default": [{"key": "0", "prompt": "p.mp3", "action": "transfer_operator"}],
                },
            }
        )
        self.assertEqual(config.source, "<config>")
        self.assertEqual(config.base_dir, Path("."))
        self.assertEqual(config.platform.client_id, "a")


class SharedConstantsTests(SynchronousTestCase):
    """
    The settings' defaults and allowed values are the clients' own, not copies.
    """

    def test_scope_and_lookup_types(self) -> None:
        """DEFAULT_SCOPE is the token client's; LOOKUP_TYPES the External Contacts client's."""
        from ivrproto import config
        from ivrproto.clients import oauth, profiles

        self.assertIs(config.DEFAULT_SCOPE, oauth.DEFAULT_SCOPE)
        self.assertIs(config.LOOKUP_TYPES, profiles.CONTACT_LOOKUP_TYPES)
        self.assertEqual(config.PlatformConfig("a", "b", "c", "d", "e").scope, oauth.DEFAULT_SCOPE)

    def test_audio_connector_digits(self) -> None:
        """[audio_connector] digits takes the Call Control keys and A-D, nothing else."""
        from ivrproto.messages import VALID_DIGITS

        def digits(keys: str) -> Any:
            return parse_audio_connector({"digits": keys}, "<config>", Path("."), {})

        config = digits("".join(sorted(VALID_DIGITS)) + "ABCD")
        self.assertEqual(dict(config.session)["digits"], VALID_DIGITS | frozenset("ABCD"))
        error = self.assertRaises(ConfigError, digits, "12E")
        self.assertEqual(error.key, "audio_connector.digits")


class SuggestionTests(_ConfigFiles, SynchronousTestCase):
    """
    A misspelt section or key is answered with the nearest known one.
    """

    def test_misspelt_key(self) -> None:
        """A misspelt key names the key it is nearest to (and a name near nothing, none)."""
        error = self.assertConfigError("[timing]\nconfrim_delay = 1\n", "timing.confrim_delay")
        self.assertIn("unknown setting; did you mean confirm_delay?", str(error))
        error = self.assertConfigError("[intake]\nmax_conections = 5\n", "intake.max_conections")
        self.assertIn("did you mean max_connections?", str(error))
        # A name near nothing known gets no suggestion.
        error = self.assertConfigError("[timing]\nzzz = 1\n", "timing.zzz")
        self.assertNotIn("did you mean", str(error))

    def test_misspelt_section(self) -> None:
        """A misspelt section names the section it is nearest to."""
        error = self.assertConfigError("[timng]\nconfirm_delay = 1\n", "timng")
        self.assertIn("unknown section; did you mean timing?", str(error))


class DeploymentEnvironmentTests(_ConfigFiles, SynchronousTestCase):
    """
    IVR_INTAKE_LISTEN and IVR_LOG_FORMAT override the file, and an error in
    a value from the environment names the variable.
    """

    def test_intake_listen(self) -> None:
        """IVR_INTAKE_LISTEN wins over [intake] listen."""
        text = '[intake]\nlisten = "tcp:9090:interface=127.0.0.1"\n'
        self.assertEqual(self.load(text).intake.listen, "tcp:9090:interface=127.0.0.1")
        config = self.load(text, {**CREDENTIALS, "IVR_INTAKE_LISTEN": "unix:/run/ivr.sock"})
        self.assertEqual(config.intake.listen, "unix:/run/ivr.sock")

    def test_intake_listen_named_in_errors(self) -> None:
        """An open intake set by IVR_INTAKE_LISTEN names the variable; one from the file does not."""
        from ivrproto.config import check_intake_protection

        config = self.load("", {**CREDENTIALS, "IVR_INTAKE_LISTEN": "tcp:8080"})
        e = self.assertRaises(ConfigError, check_intake_protection, config, config.intake.listen)
        self.assertEqual(e.key, "intake.listen")
        self.assertIn("(set by the environment variable IVR_INTAKE_LISTEN)", str(e))
        config = self.load('[intake]\nlisten = "tcp:8080"\n')
        e = self.assertRaises(ConfigError, check_intake_protection, config, config.intake.listen)
        self.assertNotIn("set by", str(e))
        e = self.assertRaises(
            ConfigError, check_intake_protection, config, "tcp:8081", "--intake"
        )
        self.assertIn("(set by --intake)", str(e))

    def test_log_format(self) -> None:
        """IVR_LOG_FORMAT wins over [logging] format; a bad one names the variable."""
        text = '[logging]\nformat = "text"\n'
        self.assertEqual(self.load(text).logging.format, "text")
        config = self.load(text, {**CREDENTIALS, "IVR_LOG_FORMAT": "json"})
        self.assertEqual(config.logging.format, "json")
        error = self.assertConfigError(
            text, "logging.format", environ={**CREDENTIALS, "IVR_LOG_FORMAT": "xml"}
        )
        self.assertIn("(set by the environment variable IVR_LOG_FORMAT)", str(error))
        error = self.assertConfigError('[logging]\nformat = "xml"\n', "logging.format")
        self.assertNotIn("set by", str(error))

    def test_log_level(self) -> None:
        """[logging] level is info by default; only known level names pass."""
        self.assertEqual(self.load("").logging.level, "info")
        self.assertEqual(self.load('[logging]\nlevel = "debug"\n').logging.level, "debug")
        self.assertConfigError('[logging]\nlevel = "verbose"\n', "logging.level")

    def test_platform_variable_named(self) -> None:
        """A bad URL from the environment names its variable; one from the file does not."""
        for variable, key, value in [
            ("GENESYS_BASE_URL", "platform.api_url", "http://api.example.com"),
            ("GENESYS_LOGIN_URL", "platform.login_url", "ftp://x"),
            ("AUDIO_BASE_URL", "platform.audio_base_url", "/audio/"),
        ]:
            with self.subTest(variable=variable):
                error = self.assertConfigError("", key, environ={**CREDENTIALS, variable: value})
                self.assertIn(f"(set by the environment variable {variable})", str(error))
        error = self.assertConfigError('[platform]\napi_url = "http://api.example.com"\n', "platform.api_url")
        self.assertNotIn("set by", str(error))


class CheckCommandEnvironmentTests(SynchronousTestCase):
    """
    ``ivr check`` reads IVR_CONFIG without CONFIG, and the deployment's
    variables like the service does.
    """

    def run_check(self, argv: list[str], environ: Mapping[str, str]) -> tuple[int, str, str]:
        import io

        from ivrproto.cli.main import main

        out, err = io.StringIO(), io.StringIO()
        code = main(argv, stdout=out, stderr=err, environ=environ)
        return code, out.getvalue(), err.getvalue()

    def test_config_from_environment(self) -> None:
        """Without CONFIG, ivr check loads IVR_CONFIG; without either, it says so."""
        code, out, err = self.run_check(["check"], {**CREDENTIALS, "IVR_CONFIG": SEED})
        self.assertEqual((code, err), (0, ""))
        self.assertIn("transfer_premium", out)
        code, out, err = self.run_check(["check"], CREDENTIALS)
        self.assertEqual(code, 2)
        self.assertIn("IVR_CONFIG", err)

    def test_intake_from_environment(self) -> None:
        """An open intake from IVR_INTAKE_LISTEN is refused, naming the variable."""
        code, out, err = self.run_check(
            ["check", SEED], {**CREDENTIALS, "IVR_INTAKE_LISTEN": "tcp:8080"}
        )
        self.assertEqual(code, 1)
        self.assertEqual(err.count("\n"), 1, err)
        self.assertIn("intake.listen", err)
        self.assertIn("IVR_INTAKE_LISTEN", err)
