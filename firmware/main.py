"""The node's entry point, run after boot.py: load the board and config, start the node application."""

from phasenode import startup

startup.main()
