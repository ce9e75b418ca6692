"""
The emergency closure: an override an operator switches on and off with no
edit of the configuration and no restart, in either of two ways: by creating
(and removing) a flag file, or through the admin listener's ``/v1/closure``
(:mod:`ivrproto.intake.admin`).  While either is on, every new call hears the
closure message and goes to the closure's target (or is hung up); calls in
progress keep their menu.  When both are on, the endpoint's message and
target serve (it names them), and switching it off leaves the flag file's
closure in force.

The file is looked at (one ``stat``) at most once per ``check_interval`` on
the injected clock, when a call arrives and on a timer, so a change reaches
new calls within that interval.  The file may hold a JSON object such as
``{"reason": "flooding at the site", "by": "duty manager"}``; the change is
logged with it, or with "flag file created" / "flag file removed".  The
endpoint's changes take effect at once and are logged with who made them,
from where, and the state before and after.
"""

from __future__ import annotations

import os
from datetime import datetime, timezone
from typing import Any, Dict, Optional

import attrs
import orjson
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from ivrproto.errors import ConfigError
from ivrproto.logthrottle import LogThrottle

__all__ = ["ADMIN", "FLAG_FILE", "ClosureConfig", "ClosureSwitch", "Notice", "admin_by", "admin_notice",
           "closure_stats", "parse_closure"]

#: Where a closure comes from: the flag file, or the admin endpoint.
FLAG_FILE = "flag-file"
ADMIN = "admin"

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
    An emergency closure in force: why, who said so, and (for the admin
    endpoint's) what callers hear and where they go.

    :ivar source: :data:`FLAG_FILE` or :data:`ADMIN`
    :ivar prompt: the message; ``None``: the ``[closure]`` prompt
    :ivar target: the transfer target's action name; ``None``: the
        ``[closure]``'s target (or hangup), unless ``hangup``
    :ivar hangup: hang up after the message
    :ivar since: when the switch saw it, in seconds after the epoch on its
        clock (not part of equality)
    """

    reason: str = ""
    by: str = "flag file created"
    source: str = FLAG_FILE
    prompt: Optional[str] = None
    target: Optional[str] = None
    hangup: bool = False
    since: Optional[float] = attrs.field(default=None, eq=False)

    def to_json(self) -> Dict[str, Any]:
        """
        What a call's record says about the closure that served it: the
        reason and who, and for the endpoint's its source, prompt and target.
        """
        data: Dict[str, Any] = {"reason": self.reason, "by": self.by}
        if self.source != FLAG_FILE:
            data.update(source=self.source, prompt=self.prompt, target=self.target)
        return data


def iso_time(seconds: Optional[float]) -> Optional[str]:
    """``seconds`` after the epoch as an ISO 8601 UTC time, to the second."""
    if seconds is None:
        return None
    moment = datetime.fromtimestamp(seconds, timezone.utc)
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


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
    Watches the flag file on ``clock``, and holds the admin endpoint's
    closure.

    :param admin: the admin endpoint's closure, kept from the switch this
        one replaces (a reload keeps it)
    """

    log = Logger()

    def __init__(
        self, clock: IReactorTime, config: ClosureConfig, admin: Optional[Notice] = None
    ) -> None:
        self.clock = clock
        self.config = config
        #: the flag file's closure
        self.notice: Optional[Notice] = None
        #: the admin endpoint's closure
        self.admin = admin
        self._checked_at: Optional[float] = None
        self._seen: Optional[tuple[int, int, int]] = None
        self._throttle = LogThrottle(clock, self.log, 1, 60.0)
        self._loop: Optional[LoopingCall] = None
        self.changes = 0

    def current(self) -> Optional[Notice]:
        """
        The closure in force now: the admin endpoint's if it is on, else the
        flag file's, looking at the file if it was not looked at within
        ``check_interval``.
        """
        now = self.clock.seconds()
        if self._checked_at is None or now - self._checked_at >= self.config.check_interval:
            self.check()
        return self.admin if self.admin is not None else self.notice

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
        self.notice = notice = attrs.evolve(notice, since=self.clock.seconds())
        self.changes += 1
        self.log.warn(
            "emergency closure {how} by {by}: {reason} ({path})",
            how="on" if was is None else "changed",
            by=notice.by,
            reason=notice.reason or "no reason given",
            path=path,
        )

    def switch_on(self, notice: Notice, peer: str) -> bool:
        """
        Put the admin endpoint's closure ``notice`` in force at once, and log
        the change with who, from where, and the state before and after.

        :return: ``False`` when it was already in force as it is
        """
        was = self.admin
        if was == notice:
            return False
        self.admin = attrs.evolve(notice, since=self.clock.seconds())
        self.changes += 1
        self._log_admin("on" if was is None else "changed", notice.by, peer, was)
        return True

    def switch_off(self, by: str, peer: str) -> bool:
        """
        End the admin endpoint's closure (the flag file's, if it is there,
        stays in force), and log it.

        :return: ``False`` when it was not on
        """
        was = self.admin
        if was is None:
            return False
        self.admin = None
        self.changes += 1
        self._log_admin("off", by, peer, was)
        return True

    def _log_admin(self, how: str, by: str, peer: str, was: Optional[Notice]) -> None:
        self.log.warn(
            "emergency closure {how} by {by} from {peer} (admin endpoint): was {old}, now {new}",
            how=how,
            by=by,
            peer=peer,
            old=_describe(was),
            new=_describe(self.admin),
        )

    def stats(self) -> Dict[str, int]:
        """Whether each source says closed, as 0 or 1, for the metrics."""
        self.current()
        return {"flag_file": int(self.notice is not None), "admin": int(self.admin is not None)}

    def state(self) -> Dict[str, Any]:
        """
        What ``GET /v1/closure`` answers: the closure in force (``state``
        ``on`` or ``off``, its ``source``, ``prompt``, ``target``, ``since``,
        ``by`` and ``reason``), and each source's own state.
        """
        serving = self.current()
        sources = {
            FLAG_FILE: self._view(self.notice, self.notice is not None),
            ADMIN: self._view(self.admin, self.admin is not None),
        }
        sources[FLAG_FILE]["path"] = self.config.flag_file
        if serving is None:
            return {"state": "off", "source": None, "sources": sources}
        return dict(self._view(serving, True), source=serving.source, sources=sources)

    def _view(self, notice: Optional[Notice], on: bool) -> Dict[str, Any]:
        if notice is None or not on:
            return {"state": "off"}
        hangup = notice.hangup or (notice.target is None and self.config.target is None)
        return {
            "state": "on",
            "prompt": notice.prompt or self.config.prompt,
            "target": None if hangup else notice.target or self.config.target,
            "hangup": hangup,
            "since": iso_time(notice.since),
            "by": notice.by,
            "reason": notice.reason,
        }

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


def closure_stats(switch: Optional[ClosureSwitch]) -> Dict[str, int]:
    """Whether each source says closed, as 0 or 1 (all 0 without ``[closure]``)."""
    return {"flag_file": 0, "admin": 0} if switch is None else switch.stats()


def _describe(notice: Optional[Notice]) -> str:
    if notice is None:
        return "off"
    then = "hang up" if notice.hangup else f"target {notice.target}"
    return f"on (prompt {notice.prompt}, {then}, reason {notice.reason or 'none given'!r})"


def admin_notice(data: Any, config: ClosureConfig, targets: Any, prompt_ok: Any) -> Notice:
    """
    The admin endpoint's closure from a ``PUT /v1/closure`` body: ``by``
    (required), and optionally ``prompt`` (a prompt with a file), ``target``
    (a configured transfer target's action name) or ``hangup: true``, and
    ``reason``; what is left out is the ``[closure]``'s.

    :param targets: the configured transfer targets' action names
    :param prompt_ok: tells whether a prompt has a file
    :raises ValueError: with a message for the operator
    """
    if not isinstance(data, dict):
        raise ValueError("the body must be a JSON object")
    unknown = sorted(set(data) - {"prompt", "target", "hangup", "by", "reason"})
    if unknown:
        raise ValueError(f"unknown field {unknown[0]!r} (known: by, prompt, target, hangup, reason)")
    by = _admin_text(data, "by", required=True)
    assert by is not None
    prompt = _admin_text(data, "prompt") or config.prompt
    if not prompt_ok(prompt):
        raise ValueError(f"prompt {prompt!r} has no file")
    hangup = data.get("hangup", False)
    if hangup not in (True, False):
        raise ValueError("hangup must be true or false")
    target = _admin_text(data, "target")
    if target is not None and hangup:
        raise ValueError("give target or hangup = true, not both")
    if target is not None and target not in targets:
        known = ", ".join(sorted(targets))
        raise ValueError(f"target {target!r} is not a configured transfer target (known: {known})")
    if target is None and not hangup:
        target, hangup = config.target, config.target is None
    reason = _admin_text(data, "reason") or ""
    return Notice(reason, by, ADMIN, prompt, target, bool(hangup))


def admin_by(data: Any) -> str:
    """
    Who, from a ``DELETE /v1/closure`` body (``{"by": ...}``).

    :raises ValueError: with a message for the operator
    """
    if not isinstance(data, dict):
        raise ValueError("the body must be a JSON object")
    unknown = sorted(set(data) - {"by"})
    if unknown:
        raise ValueError(f"unknown field {unknown[0]!r} (known: by)")
    by = _admin_text(data, "by", required=True)
    assert by is not None
    return by


def _admin_text(data: Dict[str, Any], key: str, required: bool = False) -> Optional[str]:
    value = data.get(key)
    if value is None and not required:
        return None
    text = _clean(value)
    if not text or not isinstance(value, str):
        raise ValueError(f"{key} must be a non-empty string")
    return text


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
