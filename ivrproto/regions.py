"""
Genesys Cloud regions: one ``region`` setting picks both the API host
(``api.<domain>``) and the login host (``login.<domain>``).
"""

from __future__ import annotations

from typing import Mapping, Tuple

#: Region name -> domain.  AWS-style names, as Genesys documents them.
REGIONS: Mapping[str, str] = {
    "us-east-1": "mypurecloud.com",
    "us-east-2": "use2.us-gov-pure.cloud",
    "us-west-2": "usw2.pure.cloud",
    "ca-central-1": "cac1.pure.cloud",
    "sa-east-1": "sae1.pure.cloud",
    "eu-west-1": "mypurecloud.ie",
    "eu-west-2": "euw2.pure.cloud",
    "eu-central-1": "mypurecloud.de",
    "eu-central-2": "euc2.pure.cloud",
    "me-central-1": "mec1.pure.cloud",
    "ap-south-1": "aps1.pure.cloud",
    "ap-northeast-1": "mypurecloud.jp",
    "ap-northeast-2": "apne2.pure.cloud",
    "ap-northeast-3": "apne3.pure.cloud",
    "ap-southeast-2": "mypurecloud.com.au",
}

#: Short names of the ``*.pure.cloud`` regions (``usw2``), as aliases.
ALIASES: Mapping[str, str] = {
    domain.split(".", 1)[0]: name
    for name, domain in REGIONS.items()
    if domain.endswith(".pure.cloud")
}


_SHORT = {name: short for short, name in ALIASES.items()}


def known_regions() -> str:
    """
    Every accepted region name, for error messages.
    """
    return ", ".join(f"{n} ({_SHORT[n]})" if n in _SHORT else n for n in REGIONS)


def region_urls(region: str) -> Tuple[str, str]:
    """
    The API and login base URLs of a region.

    :param region: a region name (``eu-west-1``) or the short name of a
        ``*.pure.cloud`` region (``euw2``)
    :raises KeyError: for an unknown region
    """
    name = ALIASES.get(region, region)
    domain = REGIONS[name]
    return f"https://api.{domain}", f"https://login.{domain}"
