"""
``ivr``: the command line.  :func:`~ivrproto.cli.main.main` parses the
arguments and runs ``ivr check`` (:mod:`~ivrproto.cli.check`) or ``ivr
simulate`` (:mod:`~ivrproto.cli.simulate`).
"""

from ivrproto.cli.main import main

__all__ = ["main"]
