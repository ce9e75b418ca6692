"""
``python -m ivrproto`` and the ``ivr`` console script: see :mod:`ivrproto.cli`.
"""

from __future__ import annotations

import sys

from ivrproto.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
