"""
Whether a host or a Twisted endpoint description stays on this machine.

The config checks and the Call Control client both ask this, so it lives
below both of them.
"""


from __future__ import annotations

import ipaddress
import re
from typing import Optional


__all__ = [
    "is_loopback_host",
    "endpoint_is_loopback",
]




def is_loopback_host(host: Optional[str]) -> bool:
    """
    Whether ``host`` names this machine (``localhost``, 127.0.0.0/8, ``::1``).
    """
    if not host:
        return False
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def endpoint_is_loopback(description: str) -> bool:
    """
    Whether a Twisted server endpoint description listens on loopback only
    (``tcp:8080:interface=127.0.0.1``) or on a UNIX socket.  A ``tcp``
    endpoint without ``interface=`` listens on every address.
    """
    kind, _, rest = description.partition(":")
    if kind == "unix":
        return True
    for part in re.split(r"(?<!\\):", rest):
        name, equals, value = part.partition("=")
        if equals and name == "interface":
            return is_loopback_host(value.replace("\\", ""))
    return False
