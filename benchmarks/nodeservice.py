"""
The ``seed-node`` benchmark service: ``benchmarks/seed_node/server.js``, the
seed's call logic written in its shape (plain Node ``http`` for the token
and the profile, the ``ws`` package for Call Control), many calls in one
Node.js process.

``run.py --service seed-node`` starts it with :func:`argv`, which installs
``ws`` into ``benchmarks/seed_node/node_modules`` on first use (``npm ci``
from the committed ``package-lock.json``).  :func:`available` says whether
it can run without installing anything (the smoke test uses it to skip).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Optional

HERE = Path(__file__).resolve().parent
SEED_DIR = HERE / "seed_node"
SERVER = SEED_DIR / "server.js"
WS_PACKAGE = SEED_DIR / "node_modules" / "ws" / "package.json"
MIN_NODE = 18


class Unavailable(Exception):
    """
    Node.js, npm or the ``ws`` package is missing; the message says what to do.
    """


def node_version(node: str) -> Optional[int]:
    """
    The major version of ``node``, or None if it does not run.
    """
    try:
        out = subprocess.run([node, "--version"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    text = out.stdout.strip().lstrip("v")
    try:
        return int(text.split(".", 1)[0])
    except ValueError:
        return None


def find_node() -> str:
    node = shutil.which("node")
    if node is None:
        raise Unavailable("seed-node needs Node.js (node >= 18 on PATH); none found")
    major = node_version(node)
    if major is None or major < MIN_NODE:
        raise Unavailable(f"seed-node needs Node.js >= {MIN_NODE}; {node} is {major or 'unusable'}")
    return node


def available() -> Optional[str]:
    """
    None when seed-node can run as it is (node and the installed ``ws``),
    else why not.  Installs nothing.
    """
    try:
        find_node()
    except Unavailable as e:
        return str(e)
    if not WS_PACKAGE.exists():
        return (f"the ws package is not installed in {SEED_DIR.relative_to(HERE.parent)}"
                "/node_modules (run `npm ci` there, or any run.py --service seed-node)")
    return None


def install(log: Optional[callable] = print) -> None:  # type: ignore[valid-type]
    """
    ``npm ci`` in benchmarks/seed_node, unless ``ws`` is there already.
    """
    if WS_PACKAGE.exists():
        return
    npm = shutil.which("npm")
    if npm is None:
        raise Unavailable(
            "seed-node needs the ws package, and npm is not on PATH to install it: install "
            f"npm, or copy a node_modules with ws into {SEED_DIR}"
        )
    if log:
        log(f"seed-node: first use, installing ws into {SEED_DIR / 'node_modules'} (npm ci)")
    try:
        done = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund", "--omit=dev"],
            cwd=str(SEED_DIR), capture_output=True, text=True, timeout=300,
        )
    except (OSError, subprocess.SubprocessError) as e:
        raise Unavailable(f"npm ci in {SEED_DIR} failed: {e}") from None
    if done.returncode != 0 or not WS_PACKAGE.exists():
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-10:])
        raise Unavailable(f"npm ci in {SEED_DIR} failed (exit {done.returncode}):\n{tail}")


def argv(port: int) -> list[str]:
    """
    The command line of the service, installing ``ws`` first if needed.
    """
    node = find_node()
    install()
    return [node, str(SERVER), str(port)]


def pin_threads(pid: int, cores: Optional[set[int]]) -> None:
    """
    Pin every thread of ``pid`` to ``cores``: ``sched_setaffinity`` on a pid
    pins its main thread only, and Node starts its V8 platform threads (GC
    helpers, compiler) before run.py can pin the process.
    """
    if not cores:
        return
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return
    for tid in tids:
        try:
            os.sched_setaffinity(int(tid), cores)
        except (OSError, ValueError):
            pass
