"""
Every import path the README and the docs give still works: a library user's
code names these, so moving a module must leave them importable (as klein
pins its public names).
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

ROOT = Path(__file__).resolve().parent.parent

#: The public names the documentation promises, as a user imports them.
DOCUMENTED = (
    "ivrproto.protocol",
    "ivrproto.protocol.connect_call_control",
    "ivrproto.protocol.CallControlListener",
    "ivrproto.protocol.CallControlProtocol",
    "ivrproto.session",
    "ivrproto.session.new_session",
    "ivrproto.session.CallPort",
    "ivrproto.emulator.Platform",
    "ivrproto.testing",
    "ivrproto.testing.connect_in_memory",
    "ivrproto.testing.RecordingListener",
    "ivrproto.testing.ScriptedPlatformFactory",
    "ivrproto.logs.json_observer",
    "ivrproto.audioconnector",
)

#: A dotted ``ivrproto`` name in prose or code, not part of a file name
#: (``deploy/grafana/ivrproto.json``, ``ivrproto.service`` in a path).
_DOTTED = re.compile(r"(?<![\w/.-])ivrproto(?:\.[A-Za-z_]\w*)+")
_FROM_IMPORT = re.compile(r"^\s*from (ivrproto(?:\.\w+)*) import ([\w, ]+)$", re.MULTILINE)


def resolve(dotted: str) -> Any:
    """
    The object a dotted name gives: the longest prefix that imports as a
    module, then attributes.

    :raises ImportError: when no prefix imports
    :raises AttributeError: when an attribute is missing
    """
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for name in parts[cut:]:
            obj = getattr(obj, name)
        return obj
    raise ImportError(dotted)


def documented_names() -> set[str]:
    """
    The dotted ``ivrproto`` names that README.md and docs/*.md mention.
    """
    names: set[str] = set()
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        text = path.read_text(encoding="utf-8")
        for match in _DOTTED.finditer(text):
            name = match.group(0)
            if path.name == "README.md" and name.endswith((".json", ".service", ".py")):
                continue
            names.add(name)
        for module, imported in _FROM_IMPORT.findall(text):
            names.update(f"{module}.{n.strip()}" for n in imported.split(",") if n.strip())
    return names


class ExportsTests(SynchronousTestCase):
    """
    The documented import paths resolve.
    """

    def test_documented_names_resolve(self) -> None:
        """Each pinned public name imports and is not None."""
        for name in DOCUMENTED:
            with self.subTest(name=name):
                self.assertIsNotNone(resolve(name))

    def test_testing_all(self) -> None:
        """Every name ivrproto.testing lists in __all__ exists."""
        testing = importlib.import_module("ivrproto.testing")
        for name in testing.__all__:
            with self.subTest(name=name):
                self.assertTrue(hasattr(testing, name))

    def test_docs_mention_only_pinned_names(self) -> None:
        """Every ivrproto name the README and docs mention resolves and is pinned here."""
        found = documented_names()
        # The five paths issue 12 names are among those the docs give.
        for name in (
            "ivrproto.protocol.connect_call_control",
            "ivrproto.session.new_session",
            "ivrproto.emulator.Platform",
            "ivrproto.testing",
            "ivrproto.logs.json_observer",
        ):
            self.assertIn(name, found)
        for name in sorted(found):
            with self.subTest(name=name):
                resolve(name)
                self.assertIn(
                    name,
                    DOCUMENTED,
                    f"{name} is in the docs, so it is public: add it to DOCUMENTED",
                )

    def test_resolve_refuses_missing(self) -> None:
        """resolve() fails for a name that does not exist, so the tests above can fail."""
        self.assertRaises(AttributeError, resolve, "ivrproto.protocol.no_such_name")
        self.assertRaises(ImportError, resolve, "no_such_package.x")
