"""
The docs/ pages stay true to the code: the session diagram is generated
from the machine and must match it, the call-flow diagram names real
states and paths, every configuration key is documented, the repository
points at nothing outside itself, and CI runs the README's test command.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol

import attrs
from automat import TypeMachineBuilder
from twisted.trial.unittest import SkipTest, SynchronousTestCase

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"


def load_diagrams() -> ModuleType:
    """
    scripts/diagrams.py as a module (scripts/ is not a package).
    """
    spec = importlib.util.spec_from_file_location("diagrams", ROOT / "scripts" / "diagrams.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def readme_blocks() -> list[str]:
    """
    The ``sh`` code blocks of README.md, in order.
    """
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    return [b.strip() for b in re.findall(r"```sh\n(.*?)```", text, re.DOTALL)]


class _Door(Protocol):
    def open(self) -> None: ...

    def close(self) -> None: ...

    def knock(self) -> None: ...


class _Core:
    pass


def _door_machine() -> Any:
    builder = TypeMachineBuilder(_Door, _Core)
    shut = builder.state("shut")
    opened = builder.state("opened")

    @shut.upon(_Door.open).to(opened)
    def _open(door: _Door, core: _Core) -> None:
        pass

    @opened.upon(_Door.close).to(shut)
    def _close(door: _Door, core: _Core) -> None:
        pass

    @opened.upon(_Door.knock).loop()
    def _answer(door: _Door, core: _Core) -> None:
        pass

    shut.upon(_Door.close).loop().returns(None)
    shut.upon(_Door.knock).loop().returns(None)
    opened.upon(_Door.open).loop().returns(None)
    return builder.build()


class SessionDiagramTests(SynchronousTestCase):
    """
    docs/session-machine.md is the session machine, drawn by scripts/diagrams.py.
    """

    def test_current(self) -> None:
        """The committed page is what the script draws from ivrproto.session today."""
        expected = load_diagrams().session_machine_markdown()
        current = (DOCS / "session-machine.md").read_text(encoding="utf-8")
        self.assertTrue(
            current == expected,
            "docs/session-machine.md is out of date: run `python scripts/diagrams.py`",
        )

    def test_draws_transitions(self) -> None:
        """Moves and acting self-loops are arrows; do-nothing inputs are listed, not drawn."""
        text = load_diagrams().session_machine_markdown(_door_machine())
        diagram = text[text.index("```mermaid") : text.index("```", text.index("```mermaid") + 3)]
        self.assertIn("[*] --> shut", diagram)
        self.assertIn("shut --> opened : open", diagram)
        self.assertIn("opened --> shut : close", diagram)
        self.assertIn("opened --> opened : knock", diagram)
        self.assertNotIn("shut --> shut", diagram)
        self.assertNotIn("opened --> opened : open", diagram)
        self.assertIn("| `shut` | `close`, `knock` |", text)
        self.assertIn("| `opened` | `open` |", text)
        self.assertIn("| `opened` | `knock` | `opened` | `_answer` |", text)

    def test_every_state_drawn(self) -> None:
        """Every state of the session machine appears in the diagram."""
        machine = load_diagrams().session_machine()
        states = machine.__automat_automaton__.states()
        self.assertGreater(len(states), 5)
        text = (DOCS / "session-machine.md").read_text(encoding="utf-8")
        for state in states:
            self.assertIn(f"    {state.name} --> ", text)

    def test_finds_the_session_machine(self) -> None:
        """The script draws the machine that the sessions of new_session run."""
        from twisted.internet.task import Clock

        from ivrproto.config import parse_config
        from ivrproto.session.machine import new_session

        config = parse_config(_seed_data())
        session, _ = new_session("call-1", config.menu, config.timing, Clock(), object())  # type: ignore[arg-type]
        machine = load_diagrams().session_machine()
        self.assertIs(type(session), machine.__automat_type__)

    def test_check_option(self) -> None:
        """`diagrams.py --check` says whether the page is current, and writes nothing."""
        diagrams = load_diagrams()
        page = DOCS / "session-machine.md"
        before = page.read_text(encoding="utf-8")
        self.assertEqual(diagrams.main(["--check"]), 0)
        folder = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, folder)
        stale = Path(folder) / "session-machine.md"
        stale.write_text("stale\n", encoding="utf-8")
        setattr(diagrams, "SESSION_MACHINE", stale)
        self.assertEqual(diagrams.main(["--check"]), 1)
        self.assertEqual(stale.read_text(encoding="utf-8"), "stale\n")
        self.assertEqual(page.read_text(encoding="utf-8"), before)


class CallFlowTests(SynchronousTestCase):
    """
    docs/call-flow.md's sequence diagram names what the code does.
    """

    def setUp(self) -> None:
        self.text = (DOCS / "call-flow.md").read_text(encoding="utf-8")

    def test_is_a_sequence_diagram(self) -> None:
        """The page holds a Mermaid sequence diagram."""
        self.assertIn("```mermaid\nsequenceDiagram\n", self.text)

    def test_states_are_the_machines(self) -> None:
        """Each state the diagram names (after an arrow) is one of the session machine's."""
        automaton = load_diagrams().session_machine().__automat_automaton__
        names = {state.name for state in automaton.states()}
        named = re.findall(r"→ (\w+)", self.text)
        self.assertTrue(named)
        self.assertEqual(set(named) - names, set())

    def test_paths_are_the_codes(self) -> None:
        """The token, profile and WebSocket paths are those the service requests."""
        from ivrproto.config import PlatformConfig
        from ivrproto.clients.profiles import profile_url

        platform = PlatformConfig(
            api_url="https://api.example",
            login_url="https://login.example",
            client_id="id",
            client_secret="secret",
            audio_base_url="https://audio.example/",
        )
        self.assertIn(platform.token_url.removeprefix("https://login.example"), self.text)
        self.assertIn(platform.websocket_url.removeprefix("wss://api.example"), self.text)
        profile_path = profile_url("https://api.example", "EXTERNAL_ID")
        self.assertIn(profile_path.removeprefix("https://api.example"), self.text)


class SelfContainedTests(SynchronousTestCase):
    """
    Nothing tracked points at folders a clone of the repository does not have.
    """

    def test_no_outside_references(self) -> None:
        """No tracked file outside .ci names the sibling shared folder or its contract."""
        if shutil.which("git") is None or not (ROOT / ".git").exists():
            raise SkipTest("not a git checkout")
        # Built here so that this file does not match itself.
        patterns = ["../" + "shared", "shared/" + "contract", "/work/" + "shared"]
        args = ["git", "grep", "-n", "-I", "-F"]
        for pattern in patterns:
            args += ["-e", pattern]
        result = subprocess.run(
            args + ["--", ".", ":(exclude).ci"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        self.assertEqual(result.returncode, 1, "files name a folder outside the repository:\n" + result.stdout)

    def test_no_copied_client(self) -> None:
        """The copied Node.js client and its tests are gone."""
        self.assertFalse((ROOT / "tests" / "node").exists())
        self.assertFalse((ROOT / "tests" / "test_seed_client.py").exists())


class CITests(SynchronousTestCase):
    """
    .ci/run runs the README's test command, which needs nothing but Python.
    """

    def test_runs_readme_second_command(self) -> None:
        """The last line of .ci/run is the README's second command, verbatim."""
        second = readme_blocks()[1]
        lines = (ROOT / ".ci" / "run").read_text(encoding="utf-8").strip().splitlines()
        self.assertEqual(lines[-1], second)

    def test_no_node(self) -> None:
        """The test command installs and runs nothing of Node.js."""
        second = readme_blocks()[1]
        self.assertNotIn("npm", second)
        self.assertNotIn("tests/node", second)
        self.assertTrue(second.endswith(".venv/bin/python -m pytest tests"))


def documented_settings() -> dict[str, dict[str, str]]:
    """
    docs/configuration.md's tables: for each ``## [section]`` (or ``###``)
    heading, each key and its default cell.
    """
    tables: dict[str, dict[str, str]] = {}
    heading: str | None = None
    for line in (DOCS / "configuration.md").read_text(encoding="utf-8").splitlines():
        match = re.match(r"^#{2,3} (\[.*)$", line)
        if match:
            heading = match.group(1)
            tables[heading] = {}
            continue
        if line.startswith("## "):
            heading = None
            continue
        row = re.match(r"^\| `(\w+)` \| [^|]* \| ([^|]*) \|", line)
        if row and heading is not None:
            tables[heading][row.group(1)] = row.group(2).strip()
    return tables


def toml_default(cell: str) -> Any:
    """
    The value of a default cell written as a TOML literal (`` `300.0` ``),
    or ``None`` for one that is not (``—``).
    """
    if not (cell.startswith("`") and cell.endswith("`")):
        return None
    return tomllib.loads(f"v = {cell[1:-1]}")["v"]


#: What the parser calls the settings whose config field has another name.
_RENAMED = {
    "[platform]": ({"region"}, set()),
    "[intake]": ({"secret_env"}, {"secret"}),
    "[logging]": ({"hash_key_env"}, {"hash_key"}),
}


def _seed_data() -> dict[str, Any]:
    data = tomllib.loads((ROOT / "examples" / "seed.toml").read_text(encoding="utf-8"))
    data["platform"]["client_id"] = "id"
    data["platform"]["client_secret"] = "secret"
    return data


class ConfigurationDocsTests(SynchronousTestCase):
    """
    docs/configuration.md lists every key the parser takes, and only those,
    with the parser's defaults.
    """

    def setUp(self) -> None:
        self.tables = documented_settings()

    def test_core_sections(self) -> None:
        """Each of [platform] [intake] [timing] [profiles] [logging] [admin] documents exactly its config fields."""
        from ivrproto import config

        classes = {
            "[platform]": config.PlatformConfig,
            "[intake]": config.IntakeConfig,
            "[timing]": config.Timing,
            "[profiles]": config.ProfilesConfig,
            "[logging]": config.LoggingConfig,
            "[admin]": config.AdminConfig,
        }
        for heading, cls in classes.items():
            added, removed = _RENAMED.get(heading, (set(), set()))
            # Fields left out of comparisons (eq=False) are filled in by the
            # service (what set a value, the log file opened), not settings.
            settings = {f.name for f in attrs.fields(cls) if f.eq}
            accepted = (settings - removed) | added
            self.assertEqual(set(self.tables[heading]), accepted, heading)

    def test_documented_keys_accepted_with_their_defaults(self) -> None:
        """Setting any documented key to its documented default loads the same configuration as leaving it out."""
        from ivrproto.config import parse_config

        environ = {"IVR_INTAKE_SECRET": "s3cret", "IVR_LOG_KEY": "k3y"}
        checked = 0
        for heading in ("[platform]", "[intake]", "[timing]", "[profiles]", "[logging]", "[menu]"):
            section = heading.strip("[]")
            for key, cell in self.tables[heading].items():
                if heading == "[menu]" and key in ("invalid_prompt", "no_input_prompt"):
                    continue  # in [menu] these set the start menu's own prompt too
                value = toml_default(cell)
                without = _seed_data()
                without.setdefault(section, {}).pop(key, None)
                with_default = _seed_data()
                with_default.setdefault(section, {}).pop(key, None)
                if value is None:
                    continue
                with_default[section][key] = value
                self.assertEqual(
                    parse_config(with_default, environ=environ),
                    parse_config(without, environ=environ),
                    f"{section}.{key}",
                )
                checked += 1
        self.assertGreater(checked, 40)

    def test_unknown_key_refused(self) -> None:
        """A key that is not documented is refused, so that accepting the documented ones means something."""
        from ivrproto.config import parse_config
        from ivrproto.errors import ConfigError

        data = _seed_data()
        data["intake"]["not_a_setting"] = 1
        error = self.assertRaises(ConfigError, parse_config, data)
        self.assertEqual(error.key, "intake.not_a_setting")

    def test_environment(self) -> None:
        """Every environment variable that overrides the file is documented."""
        from ivrproto.config import ENVIRONMENT, SECRET_ENV

        text = (DOCS / "configuration.md").read_text(encoding="utf-8")
        for variable, name in ENVIRONMENT.items():
            self.assertIn(f"| `{variable}` | `[platform] {name}` |", text)
        self.assertIn(f"`{SECRET_ENV}`", text)

    def test_menu(self) -> None:
        """The [menu] tables list the keys the menu loader takes, with the defaults of a collection."""
        from ivrproto.menu import load as menu

        loader = menu._Loader({}, "menu")
        self.assertEqual(set(self.tables["[menu]"]), loader.extra_keys("menu"))
        self.assertEqual(set(self.tables["[menu] menus"]), menu._MENU_KEYS)
        self.assertEqual(set(self.tables["[menu] options"]), menu._OPTION_KEYS)
        self.assertEqual(set(self.tables["[menu] collect"]), menu._COLLECT_KEYS)
        defaults = {f.name: f.default for f in attrs.fields(menu.Collect)}
        for key, cell in self.tables["[menu] collect"].items():
            value = toml_default(cell)
            if value is not None:
                self.assertEqual(value, defaults[key], key)

    def test_emulator(self) -> None:
        """The [emulator] and [[calls]] tables list the keys the scenario loader takes, with its defaults."""
        from ivrproto.emulator import scenario

        embedded = {"enabled", "exit_when_done"}
        self.assertEqual(set(self.tables["[emulator]"]), scenario._EMULATOR_KEYS | embedded)
        self.assertEqual(set(self.tables["[[calls]]"]), scenario._CALL_KEYS)
        for table, cls in (("[emulator]", scenario.Scenario), ("[[calls]]", scenario.CallSpec)):
            fields = {f.name: f.default for f in attrs.fields(cls)}
            for key, cell in self.tables[table].items():
                value = toml_default(cell)
                if value is not None and key not in embedded:
                    expected = fields[key]
                    self.assertEqual(list(expected) if key == "script" else expected, value, key)


class IntakeDocsTests(SynchronousTestCase):
    """
    docs/intake.md's signing scheme is the one the service checks.
    """

    def setUp(self) -> None:
        self.text = (DOCS / "intake.md").read_text(encoding="utf-8")

    def test_python_example_signs_as_the_service(self) -> None:
        """The page's Python example computes the signature the service accepts."""
        from ivrproto.intake.signing import SignatureCheck

        [example] = re.findall(r"```python\n(.*?)```", self.text, re.DOTALL)
        secret, body, now = b"shared-s3cret", b'{"callControlId": "c-1", "externalId": "X"}', 1795770924
        namespace: dict[str, Any] = {
            "secret": secret,
            "body": body,
            "time": type("FakeTime", (), {"time": staticmethod(lambda: now + 0.25)}),
            "hmac": __import__("hmac"),
            "hashlib": __import__("hashlib"),
        }
        exec(example, namespace)
        check = SignatureCheck(secret, 300.0)
        self.assertIsNone(
            check.problem(
                namespace["timestamp"].encode(), namespace["signature"].encode(), body, float(now)
            )
        )

    def test_refusals_named(self) -> None:
        """Each reason the service gives for refusing a signature is on the page."""
        from ivrproto.intake.signing import SignatureCheck, sign

        check = SignatureCheck(b"k", 300.0)
        problems = {
            check.problem(None, None, b"", 1000.0),
            check.problem(b"1e3", b"v1=00", b"", 1000.0),
            check.problem(b"1", b"v1=00", b"", 1000.0),
            check.problem(b"1000", b"v1=00", b"", 1000.0),
        }
        self.assertNotIn(None, problems)
        self.assertEqual(len(problems), 4)
        flat = self.text.replace("\n   ", " ").replace("\n", " ")
        for problem in problems:
            self.assertTrue(f"(else `{problem}`)" in flat, f"docs/intake.md does not name {problem!r}")
        self.assertIn(sign(b"k", 1, b"").split("=")[0] + "=", self.text)


class LayoutTableTests(SynchronousTestCase):
    """
    The README's layout table names every module of the package, so a reader
    who follows it from top to bottom meets all of them.
    """

    def rows(self) -> list[str]:
        text = (ROOT / "README.md").read_text(encoding="utf-8")
        table = text.split("## Layout", 1)[1].split("\n## ", 1)[0]
        return [line for line in table.splitlines() if line.startswith("| `")]

    def named(self) -> set[str]:
        """Each path in the first column, relative to ``ivrproto/``."""
        return {part for row in self.rows() for part in re.findall(r"`([^`]+)`", row.split("|")[1])}

    def test_every_module_named(self) -> None:
        """Every .py file under ivrproto/ is in the table, or its package is (``emulator/``)."""
        named = self.named()
        missing = []
        for module in sorted((ROOT / "ivrproto").rglob("*.py")):
            relative = module.relative_to(ROOT / "ivrproto").as_posix()
            package = relative.rsplit("/", 1)[0] + "/" if "/" in relative else None
            if module.name == "__init__.py" or relative in named or package in named:
                continue
            missing.append(relative)
        self.assertEqual(missing, [])

    def test_only_real_modules(self) -> None:
        """Nothing in the table is a module that no longer exists."""
        for name in self.named():
            self.assertTrue((ROOT / "ivrproto" / name).exists(), name)
