"""
The exit codes of ``ivr``, its command-line error, and the one-line form of a
configuration error that both subcommands print.
"""


from __future__ import annotations

from ivrproto.errors import ConfigError

__all__ = [
    "EXIT_OK",
    "EXIT_CONFIG",
    "EXIT_USAGE",
    "EXIT_CALL_FAILED",
    "CommandLineError",
    "config_error_line",
    "PLATFORM_VARIABLES",
    "CREDENTIAL_VARIABLES",
]


#: Exit codes.
EXIT_OK = 0


EXIT_CONFIG = 1


EXIT_USAGE = 2


EXIT_CALL_FAILED = 3


#: The environment variables that would point the simulation elsewhere.
PLATFORM_VARIABLES = ("GENESYS_BASE_URL", "GENESYS_LOGIN_URL", "CLIENT_ID", "CLIENT_SECRET")


CREDENTIAL_VARIABLES = {"platform.client_id": "CLIENT_ID", "platform.client_secret": "CLIENT_SECRET"}


class CommandLineError(Exception):
    """
    A command-line argument is wrong (exit code 2).  (Not named
    ``UsageError``, which would shadow Twisted's ``usage.UsageError``.)
    """


def config_error_line(error: ConfigError, path: str) -> str:
    """
    The one line ``error: <file>: <key>: <reason>`` for a bad configuration.
    """
    key = "(file)" if error.key == "--config" else error.key
    reason = " ".join(str(error.reason).split())
    return f"error: {error.source or path}: {key}: {reason}"
