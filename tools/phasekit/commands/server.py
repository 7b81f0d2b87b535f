"""``phasekit server``: run, check and look after the operations server (phaseserver.cli does the work).

The verbs are the server's own (``python -m phaseserver VERB`` is the same
command): ``run --config FILE``, ``check FILE``, ``migrate``, ``dead-letters``,
``stats``, ``backup``, ``restore``, and those the server's other areas add.
"""

from __future__ import annotations

import argparse
from typing import Any

EXAMPLES = """examples:
  phasekit server check /etc/phasekit/server.toml
  phasekit server run --config /etc/phasekit/server.toml
  phasekit server dead-letters --config /etc/phasekit/server.toml
"""


def register(sub: Any) -> None:
    from phaseserver import cli

    p = sub.add_parser(
        "server",
        help="run, check and look after the operations server",
        description=__doc__.split("\n\n")[0],
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    cli.add_verbs(p)
    p.set_defaults(prog_name="phasekit server")
