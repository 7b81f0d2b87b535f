"""The typed errors of the phasekit tools: one base, ``PhasekitError``, and what the CLI does with each.

The ``phasekit`` command turns a ``UsageError`` into its message and exit
status 2 (a bad argument, file or configuration: nothing ran); a command
that ran and failed (a device refused, a target was missed) returns 1 and
says why. Library modules raise these, never ``SystemExit``.
"""

__all__ = ("PhasekitError", "UsageError")


class PhasekitError(Exception):
    """Base class of every error the phasekit tools raise on purpose."""


class UsageError(PhasekitError):
    """A bad argument, input file or configuration: printed without a traceback, exit 2."""
