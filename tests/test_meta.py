"""
Every test method asserts something, or is marked why not.

A test that only runs code passes whatever the code does, short of raising:
it claims more than it checks.  This reads every module under ``tests/``
(without importing it) and names each ``test*`` function whose body calls
nothing that can fail it.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Iterator, Union

from twisted.trial.unittest import SynchronousTestCase

TESTS = Path(__file__).resolve().parent

_Function = Union[ast.FunctionDef, ast.AsyncFunctionDef]

#: Calls that fail a test: ``assert*``, ``fail*``, ``expect*`` and these.
_FAILING_PREFIXES = ("assert", "fail", "expect")
_FAILING_NAMES = frozenset({"successResultOf", "failureResultOf", "raises", "skipTest", "xfail"})

#: Decorators that mark a test as expected to fail or skipped.
_MARKS = ("skip", "expectedFailure", "xfail")

#: Tests known to assert nothing, each with why it is still here.  Remove an
#: entry when its test gains the assertion it meant.
WITHOUT_ASSERTIONS: dict[str, str] = {}


def _called(node: ast.AST) -> Iterator[str]:
    """
    The names of the functions and methods that ``node`` calls.
    """
    for child in ast.walk(node):
        if isinstance(child, ast.Call):
            if isinstance(child.func, ast.Attribute):
                yield child.func.attr
            elif isinstance(child.func, ast.Name):
                yield child.func.id


def _fails_directly(function: _Function) -> bool:
    """
    Whether ``function`` has an ``assert``, a ``raise`` or a failing call.
    """
    if any(isinstance(child, (ast.Assert, ast.Raise)) for child in ast.walk(function)):
        return True
    return any(
        name.startswith(_FAILING_PREFIXES) or name in _FAILING_NAMES for name in _called(function)
    )


def _marked(function: _Function) -> bool:
    return any(
        any(mark in ast.unparse(decorator) for mark in _MARKS)
        for decorator in function.decorator_list
    )


def _functions(tree: ast.AST) -> Iterator[_Function]:
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node


def _failing_helpers(trees: list[ast.Module]) -> set[str]:
    """
    The names of the functions, anywhere in ``trees``, that fail directly
    or call one that does.  By name only: a helper is trusted if any
    function of that name asserts.
    """
    by_name: dict[str, list[_Function]] = {}
    for tree in trees:
        for function in _functions(tree):
            by_name.setdefault(function.name, []).append(function)
    failing = {name for name, fs in by_name.items() if any(_fails_directly(f) for f in fs)}
    grew = True
    while grew:
        grew = False
        for name, fs in by_name.items():
            if name not in failing and any(c in failing for f in fs for c in _called(f)):
                failing.add(name)
                grew = True
    return failing


def unasserted_tests(sources: dict[str, str]) -> list[str]:
    """
    The tests in ``sources`` (file name: text) that assert nothing, as
    ``file::Class::test_name`` (``file::::test_name`` at module level).
    """
    trees = {name: ast.parse(text) for name, text in sources.items()}
    failing = _failing_helpers(list(trees.values()))
    found: list[str] = []
    for name, tree in sorted(trees.items()):
        scopes: list[tuple[str, list[ast.stmt]]] = [("", tree.body)]
        scopes += [(n.name, n.body) for n in tree.body if isinstance(n, ast.ClassDef)]
        for scope, body in scopes:
            for node in body:
                if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    continue
                if not node.name.startswith("test") or _marked(node):
                    continue
                if _fails_directly(node) or any(c in failing for c in _called(node)):
                    continue
                found.append(f"{name}::{scope}::{node.name}")
    return found


def _sources() -> dict[str, str]:
    return {path.name: path.read_text(encoding="utf-8") for path in sorted(TESTS.glob("*.py"))}


class EveryTestAssertsTests(SynchronousTestCase):
    def test_every_test_asserts(self) -> None:
        """Every test under tests/ asserts something, or is listed with why not."""
        found = set(unasserted_tests(_sources()))
        self.assertEqual(sorted(found - set(WITHOUT_ASSERTIONS)), [])

    def test_list_is_current(self) -> None:
        """Every test listed as asserting nothing still exists and still asserts nothing."""
        found = set(unasserted_tests(_sources()))
        self.assertEqual(sorted(set(WITHOUT_ASSERTIONS) - found), [])


class ScanTests(SynchronousTestCase):
    """
    What the scan counts as an assertion.
    """

    def scan(self, text: str) -> list[str]:
        return unasserted_tests({"test_x.py": text})

    def test_no_assertion(self) -> None:
        """A test that only calls code is found."""
        text = "class T:\n    def test_a(self):\n        run()\n"
        self.assertEqual(self.scan(text), ["test_x.py::T::test_a"])

    def test_assert_methods_and_statements(self) -> None:
        """assert*, fail*, an assert statement and successResultOf all count."""
        text = (
            "class T:\n"
            "    def test_a(self):\n        self.assertEqual(1, 1)\n"
            "    def test_b(self):\n        self.fail('x')\n"
            "    def test_c(self):\n        assert run()\n"
            "    def test_d(self):\n        self.successResultOf(run())\n"
            "def test_e():\n    assert run()\n"
        )
        self.assertEqual(self.scan(text), [])

    def test_helper_that_asserts(self) -> None:
        """A call to a helper that asserts (at any depth) counts."""
        text = (
            "def check(x):\n    assert x\n"
            "def outer(x):\n    check(x)\n"
            "class T:\n    def test_a(self):\n        outer(1)\n"
        )
        self.assertEqual(self.scan(text), [])

    def test_marked(self) -> None:
        """A skipped test or an expected failure need not assert."""
        text = (
            "class T:\n"
            "    @skipIf(True, 'why')\n    def test_a(self):\n        run()\n"
            "    @expectedFailure\n    def test_b(self):\n        run()\n"
        )
        self.assertEqual(self.scan(text), [])

    def test_module_level(self) -> None:
        """A module-level test is found too."""
        self.assertEqual(self.scan("def test_a():\n    run()\n"), ["test_x.py::::test_a"])
