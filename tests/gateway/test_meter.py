"""The 3-phase meter: register maps as data, decoded checks, and pymodbus as the meter."""

import asyncio
import json
import struct

import pytest
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.constants import ExcCodes

from phasegate.meter import MeterError, MeterProfile, MeterProfileError, ModbusMeter, decode
from phasekit.sim.meter import MeterSim, tcp_server
from phasekit.testing.broker import free_port


def f32(v):
    return list(struct.unpack(">HH", struct.pack(">f", v)))


def sdm_blocks(currents=(10.0, 20.0, 30.0), freq=50.0, nan_at=None):
    regs = [0] * 36
    for i, v in enumerate((230.0, 231.0, 229.0)):
        regs[2 * i : 2 * i + 2] = f32(v)
    for i, v in enumerate(currents):
        regs[6 + 2 * i : 8 + 2 * i] = f32(v)
    for i in range(3):
        regs[30 + 2 * i : 32 + 2 * i] = f32(0.9)
    if nan_at is not None:
        regs[nan_at : nan_at + 2] = [0x7FC0, 0]
    return {0: regs, 70: f32(freq), 224: f32(1.5)}


def test_shipped_profiles_load_and_decode_float32_high_word_first():
    for name in ("sdm630", "rish-master-3430"):
        r = decode(MeterProfile.load(name), sdm_blocks())
        assert r.currents == (10.0, 20.0, 30.0)
        assert r.voltages == (230.0, 231.0, 229.0)
        assert r.frequency == 50.0 and r.current_n == 1.5


def test_int32_little_word_order_with_scale_from_data(tmp_path):
    p = tmp_path / "m.json"
    fields = {"voltage_%s" % ph: {"addr": i * 2, "scale": 0.1} for i, ph in enumerate("abc")}
    fields.update({"current_%s" % ph: {"addr": 6 + i * 2, "scale": 0.001} for i, ph in enumerate("abc")})
    p.write_text(
        json.dumps(
            {"name": "t", "function": 3, "type": "int32", "word_order": "little", "blocks": [[0, 12]], "fields": fields}
        )
    )
    prof = MeterProfile.load(p)
    regs = []
    for raw in (2300, 2310, 2290, 12345, 0, 99999):
        hi, lo = struct.unpack(">HH", struct.pack(">i", raw))
        regs += [lo, hi]
    r = decode(prof, {0: regs})
    assert r.voltages == pytest.approx((230.0, 231.0, 229.0))
    assert r.currents == pytest.approx((12.345, 0.0, 99.999))


def test_implausible_values_are_meter_errors():
    prof = MeterProfile.load("sdm630")
    with pytest.raises(MeterError, match="implausible current nan"):
        decode(prof, sdm_blocks(nan_at=6))
    with pytest.raises(MeterError, match="implausible current -5"):
        decode(prof, sdm_blocks(currents=(-5.0, 1.0, 1.0)))
    with pytest.raises(MeterError, match="implausible frequency 80"):
        decode(prof, sdm_blocks(freq=80.0))


def test_bad_profiles_name_the_problem(tmp_path):
    with pytest.raises(MeterProfileError, match="not found .*sdm630"):
        MeterProfile.load("no-such-meter")
    p = tmp_path / "bad.json"
    p.write_text(
        json.dumps(
            {
                "name": "x",
                "function": 4,
                "blocks": [[0, 4]],
                "fields": {k: {"addr": 0} for k in ("voltage_a", "voltage_b", "voltage_c", "current_a", "current_b")},
            }
        )
    )
    with pytest.raises(MeterProfileError, match="fields missing: current_c"):
        MeterProfile.load(p)
    p.write_text(
        json.dumps(
            {
                "name": "x",
                "function": 4,
                "type": "float32",
                "blocks": [[0, 4]],
                "fields": {
                    k: {"addr": 10}
                    for k in ("voltage_a", "voltage_b", "voltage_c", "current_a", "current_b", "current_c")
                },
            }
        )
    )
    with pytest.raises(MeterProfileError, match="not inside a read block"):
        MeterProfile.load(p)


async def with_sim(profile_name, body, **sim_kw):
    prof = MeterProfile.load(profile_name)
    sim = MeterSim(prof, unit=7)
    port = free_port()
    srv = tcp_server([sim], port=port)
    task = asyncio.create_task(srv.serve_forever())
    await asyncio.sleep(0.2)
    client = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=1, retries=0)
    await client.connect()
    try:
        return await body(ModbusMeter(prof, client, unit=7), sim)
    finally:
        client.close()
        await srv.shutdown()
        task.cancel()


@pytest.mark.parametrize("profile", ["sdm630", "rish-master-3430"])
def test_reads_the_pymodbus_meter_over_tcp(profile):
    async def body(meter, sim):
        sim.set(currents=(120.5, 80.25, 60.0), pfs=(0.95, 0.9, 0.99), powers=(26000, -1500, 13000), frequency=49.9)
        r = await meter.read()
        assert r.currents == (120.5, 80.25, 60.0)
        assert r.powers == (26000.0, -1500.0, 13000.0)
        assert r.frequency == pytest.approx(49.9, abs=1e-4)
        sim.set(currents=(1.0, 2.0, 3.0))
        assert (await meter.read()).currents == (1.0, 2.0, 3.0)
        return meter.reads

    assert asyncio.run(with_sim(profile, body)) == 2


def test_exception_reply_and_nan_from_the_meter_are_meter_errors():
    async def body(meter, sim):
        sim.fail_with = ExcCodes.DEVICE_BUSY
        with pytest.raises(MeterError, match="refused block"):
            await meter.read()
        sim.fail_with = None
        sim.garbage = True
        with pytest.raises(MeterError, match="implausible"):
            await meter.read()
        return meter.failures

    assert asyncio.run(with_sim("sdm630", body)) == 2
