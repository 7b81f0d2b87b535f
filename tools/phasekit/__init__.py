"""phasekit: the command-line tools (flash, deploy, provision, gateway, bench, demo)."""

__version__ = "0.1.0"
