"""The node firmware's errors: ``NodeError``, the one base of every error phasenode raises itself.

The one thing to know: a ``NodeError`` is a ``phasecore.errors.PhasecoreError``
and so a ``ValueError``; code that catches either keeps catching everything
the node raises on bad input, a bad peer or a refused action, and code that
wants only the node's own errors catches ``NodeError``.

Each module keeps its errors beside the code that raises them: ``AppError``
(app), ``BoardError`` (board), ``LimitError`` (checks), ``HalError`` and
``MissingCapability`` (hal), ``ModbusError`` and its family (drivers.modbus_rtu),
``ImplausibleReading`` (drivers.pzem), ``RelayRefused`` and ``RuleError``
(relay), all ``NodeError`` subclasses. The errors about the node's files live
here because two modules raise them (``persist`` reads and writes the files,
``settings`` validates config.json): ``PersistError`` (``.file``, ``.key``,
``.msg``) and its ``ConfigError``, ``CorruptStateError`` and
``SequenceLostError``; both modules re-export them.

Not ``NodeError``: ``phasenode.hal.pin_host.PowerCut``, a test's fault
injection that the firmware must not catch, and the radio driver's
``RadioError``, an ``OSError`` like the SPI errors it stands beside.
"""

from phasecore.errors import PhasecoreError


class NodeError(PhasecoreError):
    """Base class of the errors the node firmware raises (bad input, a bad peer, a refused action)."""


class PersistError(NodeError):
    """A persisted file is missing, unreadable or invalid; ``.file`` and ``.key`` say where."""

    def __init__(self, file, key, msg):
        self.file = file
        self.key = key
        self.msg = msg
        super().__init__("%s: %s%s" % (file, (key + ": ") if key else "", msg))


class ConfigError(PersistError):
    """config.json (or the key file it names) is missing or invalid."""


class CorruptStateError(PersistError):
    """A state file the node wrote cannot be read back; the caller uses a safe default."""


class SequenceLostError(PersistError):
    """Both copies of a sequence bound are unreadable: sealing must stop until rekeyed."""
