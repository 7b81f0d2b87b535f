"""``python -m phaseserver VERB``: the server's command line (``phaseserver.cli``), the same as ``phasekit server``."""

import sys

from phaseserver.cli import main

if __name__ == "__main__":
    sys.exit(main(prog="python -m phaseserver"))
