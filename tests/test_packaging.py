"""
Packaging: the metadata in ``pyproject.toml``, the declared dependencies
against what the code imports and what the tests run with, one version for
the package and both commands, and the wheel's contents.
"""

from __future__ import annotations

import ast
import configparser
import importlib.metadata
import io
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any, Dict

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version
from twisted.trial.unittest import SynchronousTestCase

import ivrproto
from ivrproto import cli, tap

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent


def _pyproject() -> Dict[str, Any]:
    with open(ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)


def _requirements() -> Dict[str, Requirement]:
    """
    The declared run-time dependencies, by canonical name.
    """
    requirements = [Requirement(line) for line in _pyproject()["project"]["dependencies"]]
    return {canonicalize_name(r.name): r for r in requirements}


def _imported_modules() -> set[str]:
    """
    The top-level third-party modules that ``ivrproto/`` imports.
    """
    modules: set[str] = set()
    for path in (ROOT / "ivrproto").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                modules.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules.add(node.module.split(".")[0])
    return modules - set(sys.stdlib_module_names) - {"ivrproto", "__future__"}


class MetadataTests(SynchronousTestCase):
    """
    PEP 621 metadata in ``pyproject.toml``, and nowhere else.
    """

    def test_project_table(self) -> None:
        """pyproject.toml's [project] names the package, its scripts, license and extras."""
        project = _pyproject()["project"]
        self.assertEqual(project["name"], "ivrproto")
        self.assertEqual(project["dynamic"], ["version"])
        self.assertEqual(project["readme"], "README.md")
        self.assertEqual(project["requires-python"], ">=3.10")
        self.assertEqual(project["license"], "MIT")
        self.assertEqual(project["license-files"], ["LICENSE"])
        self.assertEqual(project["scripts"], {"ivr": "ivrproto.__main__:main"})
        self.assertIn("test", project["optional-dependencies"])

    def test_no_metadata_left_in_setup_cfg(self) -> None:
        """setup.cfg holds tool settings only: a dependency added there would be ignored."""
        parser = configparser.ConfigParser()
        parser.read(ROOT / "setup.cfg")
        self.assertEqual(
            [s for s in parser.sections() if s == "metadata" or s.startswith("options")], []
        )

    def test_one_source_for_the_version(self) -> None:
        """The version is read from ivrproto.__version__, and written nowhere else."""
        pyproject = _pyproject()
        self.assertNotIn("version", pyproject["project"])
        self.assertEqual(
            pyproject["tool"]["setuptools"]["dynamic"]["version"],
            {"attr": "ivrproto.__version__"},
        )
        Version(ivrproto.__version__)  # a valid version

    def test_license_file(self) -> None:
        """LICENSE is the MIT license, for the ivrproto authors."""
        text = (ROOT / "LICENSE").read_text()
        self.assertTrue(text.startswith("MIT License"))
        self.assertIn("the ivrproto authors", text)
        self.assertIn("WITHOUT WARRANTY OF ANY KIND", text)

    def test_changelog_has_this_version(self) -> None:
        """CHANGELOG.md has a section for the current version, and one for what is unreleased."""
        headings = [
            line for line in (ROOT / "CHANGELOG.md").read_text().splitlines()
            if line.startswith("## ")
        ]
        self.assertEqual(headings[0], "## [Unreleased]")
        self.assertTrue(
            any(h.startswith(f"## [{ivrproto.__version__}] - ") for h in headings), headings
        )


class DependencyTests(SynchronousTestCase):
    """
    The declared dependencies cover what the code imports, and the ranges
    hold the releases it needs and the ones it is tested with.
    """

    def test_every_import_is_declared(self) -> None:
        """Every third-party package that ivrproto imports is a declared dependency."""
        declared = set(_requirements())
        modules = _imported_modules()
        self.assertIn("automat", modules)
        by_module = importlib.metadata.packages_distributions()
        undeclared = []
        for module in sorted(modules):
            # twisted/plugins/ is shared: ivrproto itself is one of its distributions.
            names = {canonicalize_name(d) for d in by_module.get(module, [module])}
            if not (names - {"ivrproto"}) & declared:
                undeclared.append(module)
        self.assertEqual(undeclared, [])

    def test_automat_has_the_typed_builder(self) -> None:
        """The declared automat range excludes releases without TypeMachineBuilder (22.10)."""
        automat = _requirements()["automat"].specifier
        self.assertFalse(automat.contains("22.10.0"))
        self.assertTrue(automat.contains("24.8.1"))

    def test_autobahn_capped(self) -> None:
        """Autobahn is held below its next major release: ivrproto uses a private hook of it."""
        autobahn = _requirements()["autobahn"].specifier
        self.assertTrue(any(spec.operator == "<" for spec in autobahn), str(autobahn))
        self.assertFalse(autobahn.contains("27.1.1"))

    def test_tested_versions_in_range(self) -> None:
        """The installed releases that these tests run with satisfy the declared ranges."""
        for name, requirement in _requirements().items():
            if requirement.marker is not None and not requirement.marker.evaluate():
                continue
            installed = importlib.metadata.version(name)
            self.assertTrue(
                requirement.specifier.contains(installed, prereleases=True),
                f"{name} {installed} is not in {requirement.specifier}",
            )


class VersionTests(SynchronousTestCase):
    """
    ``ivr --version`` and ``twistd ivr --version`` print ivrproto's version.
    """

    def test_ivr_version(self) -> None:
        """ivr --version prints the package version and exits 0."""
        out, err = io.StringIO(), io.StringIO()
        self.assertEqual(cli.main(["--version"], stdout=out, stderr=err), 0)
        self.assertEqual(out.getvalue(), f"ivr (ivrproto) {ivrproto.__version__}\n")

    def test_twistd_options_version(self) -> None:
        """The plugin's --version prints ivrproto's version, not only Twisted's, without --config."""
        out = io.StringIO()
        with redirect_stdout(out), self.assertRaises(SystemExit) as stop:
            tap.Options().parseOptions(["--version"])
        self.assertEqual(stop.exception.code, 0)
        self.assertTrue(out.getvalue().startswith(f"ivrproto {ivrproto.__version__} "))

    def test_twistd_ivr_version_command(self) -> None:
        """twistd ivr --version, run as a command, prints ivrproto's version."""
        env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        result = subprocess.run(
            [sys.executable, "-c", "from twisted.scripts.twistd import run; run()",
             "ivr", "--version"],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn(f"ivrproto {ivrproto.__version__}", result.stdout)


class WheelTests(SynchronousTestCase):
    """
    The wheel that ``pip install .`` builds carries the plugins, the
    emulator's data, the type marker, the license and the metadata.
    """

    def test_wheel_contents(self) -> None:
        """A wheel built from a copy of the tree has every file an installation needs."""
        with tempfile.TemporaryDirectory() as tmp:
            source = Path(tmp) / "src"
            shutil.copytree(
                ROOT, source,
                ignore=shutil.ignore_patterns(
                    ".git", ".venv", "venv", "__pycache__", "node_modules", "build", "dist",
                    "*.egg-info", "_trial_temp*", ".mypy_cache", ".hypothesis", "dropin.cache",
                ),
            )
            result = subprocess.run(
                [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                 "--quiet", "--wheel-dir", str(Path(tmp) / "dist"), str(source)],
                capture_output=True, text=True, timeout=300,
            )
            self.assertEqual(result.returncode, 0, result.stderr)
            [wheel] = (Path(tmp) / "dist").glob("ivrproto-*.whl")
            self.assertTrue(wheel.name.startswith(f"ivrproto-{ivrproto.__version__}-"))
            with zipfile.ZipFile(wheel) as archive:
                names = set(archive.namelist())
                info = f"ivrproto-{ivrproto.__version__}.dist-info"
                metadata = archive.read(f"{info}/METADATA").decode()
                entry_points = archive.read(f"{info}/entry_points.txt").decode()
        for name in (
            "twisted/plugins/ivr_plugin.py",
            "twisted/plugins/ivr_emulator_plugin.py",
            "ivrproto/emulator/profiles.json",
            "ivrproto/py.typed",
            f"{info}/licenses/LICENSE",
        ):
            self.assertIn(name, names)
        # Every module of every subpackage ships, not only the top level.
        for module in sorted((ROOT / "ivrproto").rglob("*.py")):
            self.assertIn(module.relative_to(ROOT).as_posix(), names)
        # twisted/plugins is a namespace shared with Twisted: never an __init__.
        self.assertNotIn("twisted/plugins/__init__.py", names)
        self.assertNotIn("twisted/__init__.py", names)
        self.assertFalse([n for n in names if n.startswith(("tests/", "benchmarks/"))])
        self.assertIn(f"Version: {ivrproto.__version__}", metadata)
        self.assertIn("License-Expression: MIT", metadata)
        self.assertIn("Requires-Dist: automat>=24.8", metadata)
        self.assertIn("ivr = ivrproto.__main__:main", entry_points)
