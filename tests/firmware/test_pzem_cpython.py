"""The PZEM-004T driver against pymodbus acting as the meter, over a pseudo-terminal (CPython).

The real driver (``phasenode.drivers.pzem``) talks through pyserial
(``phasenode.hal.uart_host``) to ``phasekit.sim.pzem``: a pymodbus RTU server
with the PZEM register map, paced like a 9600-baud line.
"""

import asyncio
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from phasekit.sim.pzem import PzemMeter, PzemSim
from phasenode.drivers import modbus_rtu as rtu
from phasenode.drivers.pzem import BusLock, ImplausibleReading, Measurement, Pzem, decode_measurement
from phasenode.hal.uart_host import HostUART


def run_on_bus(meters, body, pace=True):
    """Start a simulated bus with ``meters``, open the driver's UART, run ``await body(sim, uart)``."""

    async def main():
        async with PzemSim(meters, pace=pace) as sim:
            with HostUART(sim.port) as uart:
                return await body(sim, uart)

    return asyncio.run(main())


def test_reads_all_measurements_set_in_the_sim():
    async def body(sim, uart):
        sim.meters[0].set(voltage=231.7, current=12.345, power_factor=0.87, energy=1234567, frequency=49.9)
        return await Pzem(uart, address=1, timeout_ms=300).read()

    m = run_on_bus([PzemMeter(address=1)], body)
    assert (m.voltage_dv, m.current_ma, m.energy_wh, m.frequency_dhz, m.pf_centi) == (2317, 12345, 1234567, 499, 87)
    assert m.power_dw == round(231.7 * 12.345 * 0.87 * 10)  # 32-bit, low word first on the wire
    assert m.alarm is True  # 2488.5 W is above the default 2300 W threshold


def test_two_meters_at_addresses_1_and_2_on_one_bus():
    async def body(sim, uart):
        sim.meters[0].set(voltage=229.0, current=1.0)
        sim.meters[1].set(voltage=241.0, current=2.0)
        lock = BusLock()
        m1 = Pzem(uart, address=1, timeout_ms=300, lock=lock)
        m2 = Pzem(uart, address=2, timeout_ms=300, lock=lock)
        got = await asyncio.gather(m1.read(), m2.read(), m1.read(), m2.read())
        return got, [m.requests for m in sim.meters]

    got, requests = run_on_bus([PzemMeter(address=1), PzemMeter(address=2)], body)
    assert [m.voltage_dv for m in got] == [2290, 2410, 2290, 2410]
    assert [m.current_ma for m in got] == [1000, 2000, 1000, 2000]
    assert requests == [2, 2]


def test_set_address_moves_the_meter():
    async def body(sim, uart):
        meter = Pzem(uart, address=1, timeout_ms=150, retries=0)
        await meter.set_address(7)
        assert meter.address == 7 and sim.meters[0].address == 7
        assert await meter.read_address() == 7
        with pytest.raises(rtu.ModbusTimeout):
            await Pzem(uart, address=1, timeout_ms=150, retries=0).read()
        return (await meter.read()).voltage_dv

    assert run_on_bus([PzemMeter(address=1)], body) == 2300


def test_general_address_reaches_a_single_meter_only():
    async def body(sim, uart):
        assert await Pzem(uart, timeout_ms=150).read_address() == 5
        sim.meters.append(PzemMeter(address=6))
        with pytest.raises(rtu.ModbusTimeout):
            await Pzem(uart, timeout_ms=150, retries=0).read()

    run_on_bus([PzemMeter(address=5)], body)


def test_reset_energy():
    async def body(sim, uart):
        sim.meters[0].set(energy=98765)
        meter = Pzem(uart, address=3, timeout_ms=300)
        before = (await meter.read()).energy_wh
        await meter.reset_energy()
        return before, sim.meters[0].energy, (await meter.read()).energy_wh

    assert run_on_bus([PzemMeter(address=3)], body) == (98765, 0, 0)


def test_alarm_threshold_read_set_and_alarm_flag():
    async def body(sim, uart):
        sim.meters[0].set(voltage=230.0, current=4.0, power_factor=1.0)  # 920 W
        meter = Pzem(uart, address=1, timeout_ms=300)
        default = await meter.read_alarm_threshold()
        quiet = (await meter.read()).alarm
        await meter.set_alarm_threshold(500)
        return (
            default,
            quiet,
            await meter.read_alarm_threshold(),
            sim.meters[0].alarm_threshold,
            (await meter.read()).alarm,
        )

    assert run_on_bus([PzemMeter(address=1)], body) == (2300, False, 500, 500, True)


def test_timeout_when_the_address_does_not_exist():
    async def body(sim, uart):
        meter = Pzem(uart, address=9, timeout_ms=100, retries=1)
        t0 = time.monotonic()
        with pytest.raises(rtu.ModbusTimeout):
            await meter.read()
        return time.monotonic() - t0, sim.meters[0].requests

    elapsed, requests = run_on_bus([PzemMeter(address=1)], body)
    assert 0.2 <= elapsed < 1.0 and requests == 0


def test_retries_recover_from_a_silent_meter():
    async def body(sim, uart):
        m = sim.meters[0]
        m.mute = 2
        v = (await Pzem(uart, address=1, timeout_ms=100, retries=2).read()).voltage_dv
        m.mute = 3
        with pytest.raises(rtu.ModbusTimeout):
            await Pzem(uart, address=1, timeout_ms=100, retries=2).read()
        return v, m.requests, m.mute

    assert run_on_bus([PzemMeter(address=1)], body) == (2300, 1, 0)


def test_exception_responses_for_bad_register_and_failing_meter():
    async def body(sim, uart):
        meter = Pzem(uart, address=1, timeout_ms=300, retries=2)
        with pytest.raises(rtu.ModbusExceptionResponse) as bad_reg:
            await meter.read_registers(rtu.READ_HOLDING, 5, 1)
        sim.meters[0].fail_with = 4
        before = sim.meters[0].requests
        with pytest.raises(rtu.ModbusExceptionResponse) as failing:
            await meter.read()
        with pytest.raises(rtu.ModbusExceptionResponse) as reset:
            await meter.reset_energy()
        return bad_reg.value, failing.value, reset.value, sim.meters[0].requests - before

    bad_reg, failing, reset, attempts = run_on_bus([PzemMeter(address=1)], body)
    assert (bad_reg.code, bad_reg.name, bad_reg.function) == (2, "ILLEGAL DATA ADDRESS", 3)
    assert (failing.code, failing.function) == (4, 4)
    assert (reset.code, reset.function) == (4, 0x42)
    assert attempts == 2  # one read, one reset: exception replies are not retried


def test_implausible_reading_from_the_meter_is_an_error():
    async def body(sim, uart):
        sim.meters[0].set(frequency=0.0)
        with pytest.raises(ImplausibleReading) as e:
            await Pzem(uart, address=1, timeout_ms=200, retries=1).read()
        return e.value.field, sim.meters[0].requests

    assert run_on_bus([PzemMeter(address=1)], body) == ("frequency", 2)


@settings(max_examples=25, deadline=None)
@given(
    voltage=st.integers(800, 2600),
    current=st.integers(0, 100000),
    pf=st.integers(0, 100),
    energy=st.integers(0, 9999999),
    freq=st.integers(450, 650),
)
def test_sim_encoding_and_driver_decoding_agree(voltage, current, pf, energy, freq):
    async def body(sim, uart):
        sim.meters[0].set(
            voltage=voltage / 10, current=current / 1000, power_factor=pf / 100, energy=energy, frequency=freq / 10
        )
        return await Pzem(uart, address=1, timeout_ms=300, retries=0).read()

    m = run_on_bus([PzemMeter(address=1)], body, pace=False)
    assert (m.voltage_dv, m.current_ma, m.pf_centi, m.energy_wh, m.frequency_dhz) == (
        voltage,
        current,
        pf,
        energy,
        freq,
    )


@settings(max_examples=400, deadline=None)
@given(st.lists(st.integers(0, 0xFFFF), min_size=10, max_size=10))
def test_decode_of_any_registers_is_a_reading_or_a_typed_error(regs):
    try:
        m = decode_measurement(regs)
    except ImplausibleReading as e:
        assert e.field in ("voltage", "current", "power", "energy", "frequency", "power_factor", "alarm")
        return
    assert isinstance(m, Measurement) and m.pf_centi <= 100 and m.voltage_dv <= 3000
    assert m.power <= m.voltage * m.current * 1.03 + 2.0 + 1e-6


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=40))
def test_parser_on_arbitrary_bytes_gives_typed_errors_only(data):
    p = rtu.ResponseParser()
    p.start(rtu.read_request(1, 4, 0, 10))
    try:
        if p.feed(data):
            decode_measurement(p.buf, 3)
    except (rtu.ModbusError, ImplausibleReading):
        pass
