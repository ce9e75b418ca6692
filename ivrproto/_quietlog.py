"""
The logger ivrproto gives Autobahn's protocols in place of their own.

Autobahn logs the raw upgrade request at debug level, ``Authorization``
header (the bearer token) included, and builds many debug messages per frame
even when nobody reads them.  This logger drops debug, trace and info before
any formatting happens, and passes warnings and errors on to a Twisted
:class:`~twisted.logger.Logger`.
"""

from __future__ import annotations

from typing import Any

from twisted.logger import Logger


class QuietAutobahnLog:
    """
    A txaio-shaped logger that keeps only warnings, errors and failures.
    """

    def __init__(self, log: Logger) -> None:
        self._log = log

    def debug(self, *args: Any, **kwargs: Any) -> None:
        pass

    trace = debug
    info = debug

    def warn(self, format: str = "", **kwargs: Any) -> None:
        self._log.warn(format, **kwargs)

    def error(self, format: str = "", **kwargs: Any) -> None:
        self._log.error(format, **kwargs)

    critical = error

    def failure(self, format: str = "", failure: Any = None, **kwargs: Any) -> None:
        self._log.failure(format, failure, **kwargs)
