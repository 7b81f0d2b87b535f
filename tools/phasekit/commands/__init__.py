"""The verbs of ``phasekit``: one module each, exposing ``register(sub)`` (``phasekit.cli`` lists them).

A verb's module imports what its handler needs inside the handler, so ``phasekit --help`` stays instant.
"""

import argparse
from collections.abc import Callable
from typing import TypeAlias

__all__ = ("Handler", "Subparsers")

# What ``ArgumentParser.add_subparsers`` returns; argparse names the class privately.
Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"
# A verb's handler (``set_defaults(func=...)``): the parsed arguments in, the exit status out.
Handler: TypeAlias = Callable[[argparse.Namespace], int]
