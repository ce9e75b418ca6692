"""
The emergency closure: an override an operator switches on by creating a
flag file and off by removing it, with no edit of the configuration and no
restart.  While it is on, every new call hears the closure message and goes
to the closure's target (or is hung up); calls in progress keep their menu.

The file is looked at (one ``stat``) at most once per ``check_interval`` on
the injected clock, when a call arrives and on a timer, so a change reaches
new calls within that interval.  The file may hold a JSON object such as
``{"reason": "flooding at the site", "by": "duty manager"}``; the change is
logged with it, or with "flag file created" / "flag file removed".
"""

from __future__ import annotations

import os
from typing import Any, Dict, Optional

import attrs
import orjson
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from ivrproto.errors import ConfigError
from ivrproto.logthrottle import LogThrottle

__all__ = ["ClosureConfig", "ClosureSwitch", "Notice", "parse_closure"]

#: At most this much of the flag file is read.
MAX_FLAG_BYTES = 4096
#: Longest reason or name kept from the flag file.
MAX_TEXT = 200


@attrs.frozen
class ClosureConfig:
    """
    The ``[closure]`` table.

    :ivar flag_file: the file whose presence means closed
    :ivar prompt: the message played to callers
    :ivar target: the transfer target's action name, or ``None`` to hang up
    :ivar wait: seconds after the message starts before the call is
        transferred or hung up (a key press does it at once)
    :ivar check_interval: the longest a change takes to reach new calls
    """

    flag_file: str
    prompt: str
    target: Optional[str] = None
    wait: float = 10.0
    check_interval: float = 1.0


@attrs.frozen
class Notice:
    """
    An emergency closure in force: why, and who said so.
    """

    reason: str = ""
    by: str = "flag file created"

    def to_json(self) -> Dict[str, str]:
        return {"reason": self.reason, "by": self.by}


def _clean(value: Any) -> str:
    text = value if isinstance(value, str) else ""
    text = "".join(c if c.isprintable() else " " for c in text).strip()
    return text[:MAX_TEXT]


def read_notice(content: bytes) -> Notice:
    """
    What a flag file says: a JSON object with ``reason`` and ``by`` (or
    ``who``), or plain text taken as the reason.
    """
    try:
        data = orjson.loads(content)
    except orjson.JSONDecodeError:
        return Notice(_clean(content.decode("utf-8", "replace")))
    if not isinstance(data, dict):
        return Notice(_clean(str(data)))
    by = _clean(data.get("by", data.get("who")))
    return Notice(_clean(data.get("reason")), by or "flag file created")


class ClosureSwitch:
    """
    Watches the flag file on ``clock``.
    """

    log = Logger()

    def __init__(self, clock: IReactorTime, config: ClosureConfig) -> None:
        self.clock = clock
        self.config = config
        self.notice: Optional[Notice] = None
        self._checked_at: Optional[float] = None
        self._seen: Optional[tuple[int, int, int]] = None
        self._throttle = LogThrottle(clock, self.log, 1, 60.0)
        self._loop: Optional[LoopingCall] = None
        self.changes = 0

    def current(self) -> Optional[Notice]:
        """
        The closure in force now, looking at the file if it was not looked
        at within ``check_interval``.
        """
        now = self.clock.seconds()
        if self._checked_at is None or now - self._checked_at >= self.config.check_interval:
            self.check()
        return self.notice

    def check(self) -> None:
        """
        Look at the flag file now, and log a change.
        """
        self._checked_at = self.clock.seconds()
        path = self.config.flag_file
        try:
            st = os.stat(path)
        except FileNotFoundError:
            if self.notice is not None:
                self.notice, self._seen = None, None
                self.changes += 1
                self.log.warn("emergency closure off: flag file removed ({path})", path=path)
            return
        except OSError as e:
            # Cannot tell: keep the state as it was.
            self._throttle.warn(
                "closure-stat",
                "emergency closure: cannot look at {path}: {error}",
                path=path,
                error=e.strerror,
            )
            return
        seen = (st.st_ino, st.st_mtime_ns, st.st_size)
        if seen == self._seen:
            return
        self._seen = seen
        try:
            with open(path, "rb") as f:
                notice = read_notice(f.read(MAX_FLAG_BYTES))
        except OSError:
            notice = Notice()
        if notice == self.notice:
            return
        was = self.notice
        self.notice = notice
        self.changes += 1
        self.log.warn(
            "emergency closure {how} by {by}: {reason} ({path})",
            how="on" if was is None else "changed",
            by=notice.by,
            reason=notice.reason or "no reason given",
            path=path,
        )

    def start(self) -> None:
        """
        Look at the file every ``check_interval`` even when no call comes,
        so a change is logged when it is made.
        """
        if self._loop is None:
            self._loop = LoopingCall(self.check)
            self._loop.clock = self.clock
            self._loop.start(self.config.check_interval, now=True)

    def stop(self) -> None:
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None


def parse_closure(data: Any, targets: Any, prompt_ok: Any, where: str = "closure") -> Optional[ClosureConfig]:
    """
    Load the ``[closure]`` table.

    :param targets: the transfer targets' action names
    :param prompt_ok: tells whether a prompt has a file
    :raises ConfigError: naming the place in the file that is wrong
    """
    if data is None:
        return None
    if not isinstance(data, dict):
        raise ConfigError(where, "must be a table")
    known = {"flag_file", "prompt", "target", "hangup", "wait", "check_interval"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"{where}.{unknown[0]}", "unknown setting")
    for key in ("flag_file", "prompt"):
        if not isinstance(data.get(key), str) or not data[key]:
            raise ConfigError(f"{where}.{key}", "must be a non-empty string")
    if not prompt_ok(data["prompt"]):
        raise ConfigError(f"{where}.prompt", f"prompt {data['prompt']!r} has no file")
    target = data.get("target")
    hangup = data.get("hangup", False)
    if hangup not in (True, False):
        raise ConfigError(f"{where}.hangup", "must be true or false")
    if (target is None) == (not hangup):
        raise ConfigError(where, "needs exactly one of: target, hangup = true")
    if target is not None and target not in targets:
        raise ConfigError(f"{where}.target", f"{target!r} is not a configured transfer target")
    numbers = {}
    for key, default in (("wait", 10.0), ("check_interval", 1.0)):
        value = data.get(key, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 3600:
            raise ConfigError(f"{where}.{key}", "must be a number of seconds, above 0 and below 3600")
        numbers[key] = float(value)
    return ClosureConfig(data["flag_file"], data["prompt"], target, **numbers)
