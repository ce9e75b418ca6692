"""
A real ``redis-server`` for the tests of :mod:`ivrproto.cluster`: started
on a free loopback port with no persistence, and stopped, paused
(``SIGSTOP``), resumed and restarted on the same port by the tests.

Readiness is read from the server's own log ("Ready to accept
connections"), not polled for.
"""

from __future__ import annotations

import os
import select
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from typing import List, Optional, Tuple

__all__ = ["RedisServer", "REDIS_SERVER", "SKIP_REASON"]

REDIS_SERVER = shutil.which("redis-server")
SKIP_REASON = (
    None
    if REDIS_SERVER
    else "redis-server is not installed (Debian package redis-server; .ci/run installs it)"
)

#: The longest wait for a server to say it is ready, in seconds.
START_BOUND = 15.0


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """
    One ``redis-server`` process on 127.0.0.1.

    :param options: more command-line options (``--requirepass``, ...)
    :param tls: a certificate and its key (PEM): the port then speaks TLS
        only
    :ivar port: its port (kept across :meth:`restart`)
    """

    def __init__(self, *options: str, tls: Optional[Tuple[bytes, bytes]] = None) -> None:
        if REDIS_SERVER is None:
            raise RuntimeError(SKIP_REASON)
        self._options = list(options)
        self._tls = tls
        self._dir = tempfile.mkdtemp(prefix="ivr-redis-")
        self._process: Optional[subprocess.Popen[bytes]] = None
        self.port = 0

    @property
    def pid(self) -> Optional[int]:
        "The server's process id while it runs."
        return None if self._process is None else self._process.pid

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        "Start on a free port (another if the first was taken meanwhile)."
        for _ in range(3):
            self.port = _free_port()
            if self._spawn():
                return
        raise RuntimeError("redis-server did not start")

    def _listen(self) -> List[str]:
        if self._tls is None:
            return ["--port", str(self.port)]
        cert, key = (os.path.join(self._dir, name) for name in ("server.crt", "server.key"))
        for path, data in ((cert, self._tls[0]), (key, self._tls[1])):
            with open(path, "wb") as f:
                f.write(data)
        return [
            "--port", "0",
            "--tls-port", str(self.port),
            "--tls-cert-file", cert,
            "--tls-key-file", key,
            "--tls-auth-clients", "no",
        ]

    def _spawn(self) -> bool:
        assert REDIS_SERVER is not None
        self._process = subprocess.Popen(
            [
                REDIS_SERVER,
                *self._listen(),
                "--bind", "127.0.0.1",
                "--save", "",
                "--appendonly", "no",
                "--dir", self._dir,
                "--daemonize", "no",
                "--loglevel", "notice",
                "--logfile", "",
                *self._options,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        if self._wait_ready():
            return True
        self._kill()
        return False

    def _wait_ready(self) -> bool:
        "Read the server's log until it is ready, it exits, or the bound."
        assert self._process is not None and self._process.stdout is not None
        out = self._process.stdout
        deadline = time.monotonic() + START_BOUND
        seen = b""
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            ready, _, _ = select.select([out], [], [], left)
            if not ready:
                return False
            chunk = os.read(out.fileno(), 4096)
            if not chunk:
                return False
            seen = (seen + chunk)[-4096:]
            if b"Ready to accept connections" in seen:
                # Nobody reads the log from now on; the few lines the server
                # writes after startup (on shutdown) fit in the pipe.
                return True

    def stop(self) -> None:
        "Stop the server (it is resumed first if paused)."
        if self._process is None:
            return
        self.resume()
        self._process.terminate()
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._kill()
        self._close_pipe()
        self._process = None

    def _kill(self) -> None:
        if self._process is not None:
            self._process.kill()
            self._process.wait()
            self._close_pipe()
            self._process = None

    def _close_pipe(self) -> None:
        if self._process is not None and self._process.stdout is not None:
            self._process.stdout.close()

    def restart(self) -> None:
        "Start again on the same port."
        self.stop()
        if not self._spawn():
            raise RuntimeError("redis-server did not restart on its port")

    def pause(self) -> None:
        "Stop the process (``SIGSTOP``): connections stay open, nothing answers."
        assert self._process is not None
        self._process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        "Let a paused server go on (``SIGCONT``)."
        if self._process is not None:
            self._process.send_signal(signal.SIGCONT)

    def cleanup(self) -> None:
        "Stop the server and remove its directory."
        self.stop()
        shutil.rmtree(self._dir, ignore_errors=True)
