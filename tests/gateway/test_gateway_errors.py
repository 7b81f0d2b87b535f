"""The gateway's error hierarchy: one base, five kinds, and every old ``except`` still catching what it caught."""

import asyncio
import importlib
import inspect
import pkgutil

import pytest

import phasegate
from phasegate import errors
from phasegate.bus import BusError
from phasegate.config import ConfigError
from phasegate.lora.radio import RadioError, SX127xRadio
from phasegate.meter import MeterError, MeterProfileError
from phasegate.operator import OperatorRefused
from phasegate.registry import CommandError, CounterLostError, RegistryError
from phasegate.store import Store, StoreError
from phaseradio import sx127x

# class -> (its kind, the built-in base it had before the hierarchy, which callers may still catch)
KINDS = {
    ConfigError: (errors.ConfigError, ValueError),
    MeterProfileError: (errors.ConfigError, ValueError),
    BusError: (errors.LinkError, OSError),
    MeterError: (errors.DeviceError, Exception),
    RadioError: (errors.DeviceError, OSError),
    StoreError: (errors.StorageError, Exception),
    RegistryError: (errors.ProtocolError, Exception),
    CounterLostError: (errors.ProtocolError, Exception),
    CommandError: (errors.ProtocolError, Exception),
    OperatorRefused: (errors.ProtocolError, ValueError),
}


def gateway_modules():
    for info in pkgutil.walk_packages(phasegate.__path__, "phasegate."):
        yield importlib.import_module(info.name)


def test_each_gateway_error_is_of_its_kind_and_keeps_its_old_base():
    for cls, (kind, builtin) in KINDS.items():
        assert issubclass(cls, kind) and issubclass(cls, errors.GatewayError), cls
        assert issubclass(cls, builtin), cls
    assert issubclass(RadioError, sx127x.RadioError)  # what the driver raises, as the name always was
    assert str(OperatorRefused("replay", "seq 4")) == "operator command refused (replay): seq 4"


def test_every_exception_class_the_gateway_defines_is_a_gateway_error():
    found = {}
    for mod in gateway_modules():
        for name, obj in vars(mod).items():
            if inspect.isclass(obj) and issubclass(obj, BaseException) and obj.__module__ == mod.__name__:
                found[obj.__module__ + "." + name] = obj
    assert len(found) >= len(KINDS) + 5, sorted(found)  # the walk really reached the modules
    outside = [name for name, cls in found.items() if not issubclass(cls, errors.GatewayError)]
    assert outside == [], outside
    # One ConfigError in the whole gateway (phasenode.persist has the node's own, for the node's config.json).
    config_errors = {cls for name, cls in found.items() if name.endswith(".ConfigError")}
    assert config_errors == {errors.ConfigError}
    for mod in gateway_modules():
        assert getattr(mod, "ConfigError", errors.ConfigError) is errors.ConfigError, mod.__name__


def test_a_radio_that_does_not_answer_is_a_gateway_radio_error_and_still_the_drivers():
    class NoChip:
        def transfer(self, buf):
            return bytes(len(buf))

    radio = SX127xRadio(sx127x.SX127x(NoChip()))
    with pytest.raises(RadioError, match="no SX127x on the SPI bus") as e:
        asyncio.run(radio.start())
    assert isinstance(e.value, sx127x.RadioError) and isinstance(e.value, OSError)
    assert isinstance(e.value.__cause__, sx127x.RadioError)


def test_a_buffer_that_cannot_be_opened_is_a_storage_error(tmp_path):
    bad = tmp_path / "buf.db"
    bad.write_bytes(b"not a database, " * 512)
    with pytest.raises(errors.StorageError, match="cannot open buffer"):
        Store(bad)
