"""The typed errors of phasegate, one base class for the transformer Pi and the LoRa gateway.

Every error phasegate raises on purpose is a ``GatewayError``, in one of five
kinds, as ``phasecore.errors`` is the core's hierarchy. The one thing to
know: each kind also keeps the built-in base its classes always had, so an
``except ValueError`` or ``except OSError`` written before this hierarchy
still catches what it caught.

- ``ConfigError`` (also a ValueError): the configuration, i.e. the gateway
  TOML (``phasegate.config``), settings given to the bus, controller, uplink
  and LoRa gateway routes; ``MeterProfileError`` (``phasegate.meter``): a
  meter's register map.
- ``LinkError`` (also an OSError): the links to the nodes; ``BusError``
  (``phasegate.bus``): the RS-485 serial port.
- ``DeviceError``: a device the Pi drives; ``MeterError``
  (``phasegate.meter``): the transformer meter; ``RadioError``
  (``phasegate.lora.radio``): the radio HAT, also the driver's
  ``phaseradio.sx127x.RadioError`` (an OSError).
- ``StorageError``: the store-and-forward buffer; ``StoreError``
  (``phasegate.store``).
- ``ProtocolError``: what the Pi refuses or cannot complete; ``RegistryError``
  with ``CounterLostError`` and ``CommandError`` (``phasegate.registry``), and
  ``OperatorRefused`` (``phasegate.operator``, also a ValueError).

Bad uplink input has its own errors in ``phaseuplink.errors`` (``RecordError``),
and bad wire bytes in ``phasecore.errors``: those are the shared packages'
contract, not the gateway's.
"""

__all__ = ("GatewayError", "ConfigError", "LinkError", "DeviceError", "StorageError", "ProtocolError")


class GatewayError(Exception):
    """Base class of every error phasegate raises on purpose."""


class ConfigError(GatewayError, ValueError):
    """The configuration is missing, unreadable or wrong; the message names the file, line and key."""


class LinkError(GatewayError, OSError):
    """A link to the nodes (RS-485 bus, LoRa radio) cannot be opened or has failed."""


class DeviceError(GatewayError):
    """A device (the transformer meter, a radio chip) is absent, refuses, or reports implausible values."""


class StorageError(GatewayError):
    """The store-and-forward buffer cannot be opened or written, or was given a row it cannot hold."""


class ProtocolError(GatewayError):
    """The Pi refuses a message or command, or a command cannot be completed (registry, commands, operator gate)."""
