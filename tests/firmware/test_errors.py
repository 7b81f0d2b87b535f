"""The node's errors (both interpreters): one base, ``NodeError``, under the core's.

Every error the firmware raises on its own is a ``phasenode.errors.NodeError``
and still a ``PhasecoreError`` and a ``ValueError``, so the catches written
against those keep working; the test's fault injection (``PowerCut``) is not
one, so no firmware catch can swallow it.
"""

from phasecore.errors import PhasecoreError
from phasenode import errors
from phasenode.app import AppError
from phasenode.board import BoardError
from phasenode.checks import LimitError
from phasenode.drivers.modbus_rtu import (
    ModbusCRCError,
    ModbusEchoError,
    ModbusError,
    ModbusExceptionResponse,
    ModbusFrameError,
    ModbusLengthError,
    ModbusTimeout,
    ModbusTrailingBytes,
    ModbusTruncated,
    ModbusUnexpectedFunction,
    ModbusUnexpectedSlave,
)
from phasenode.drivers.pzem import ImplausibleReading
from phasenode.errors import ConfigError, CorruptStateError, NodeError, PersistError, SequenceLostError
from phasenode.hal import HalError, MissingCapability
from phasenode.hal.pin_host import PowerCut
from phasenode.relay import RelayRefused, RuleError


def test_every_node_error_is_a_node_error_a_phasecore_error_and_a_value_error():
    classes = (
        AppError,
        BoardError,
        LimitError,
        ModbusError,
        ModbusCRCError,
        ModbusExceptionResponse,
        ModbusFrameError,
        ModbusUnexpectedSlave,
        ModbusUnexpectedFunction,
        ModbusLengthError,
        ModbusTrailingBytes,
        ModbusTruncated,
        ModbusEchoError,
        ModbusTimeout,
        ImplausibleReading,
        PersistError,
        ConfigError,
        CorruptStateError,
        SequenceLostError,
        HalError,
        MissingCapability,
        RelayRefused,
        RuleError,
    )
    for cls in classes:
        assert issubclass(cls, NodeError), cls
        assert issubclass(cls, PhasecoreError) and issubclass(cls, ValueError), cls
    assert issubclass(NodeError, PhasecoreError) and not issubclass(PowerCut, NodeError)


def test_file_errors_keep_their_file_and_key_and_are_the_ones_persist_and_settings_name():
    from phasenode import persist, settings

    e = ConfigError("config.json", "node.id", "must be a string")
    assert (e.file, e.key, e.msg) == ("config.json", "node.id", "must be a string")
    assert str(e) == "config.json: node.id: must be a string"
    assert str(CorruptStateError("relay.json", None, "not valid JSON")) == "relay.json: not valid JSON"
    assert persist.PersistError is errors.PersistError and persist.ConfigError is settings.ConfigError
    assert persist.CorruptStateError is CorruptStateError and persist.SequenceLostError is SequenceLostError
